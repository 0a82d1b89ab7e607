//! Test support: a deterministic catalog, and the real `vbs` binary started on an
//! ephemeral port over SQLite or a fresh PostgreSQL database, stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const PA: &str = "aaaaaaaa000000000000000000000001";
pub const PB: &str = "bbbbbbbb000000000000000000000002";
pub const PC: &str = "cccccccc000000000000000000000003";
pub const VOLS: [&str; 3] = [
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "9c9c9c9c-3333-4333-8333-333333333333",
];
pub const STATUSES: [&str; 8] = [
    "available",
    "available",
    "error",
    "creating",
    "available",
    "error_deleting",
    "restoring",
    "deleting",
];
pub const BULK: usize = 1100;
pub const KEY: &str = "5e5e5e5e-0000-4000-8000-00000000c0de";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backup_id(project: usize, i: usize) -> String {
    format!("{project:08x}-0000-4000-8000-{i:012x}")
}

fn stamp(minutes: usize) -> String {
    let (h, m) = (minutes / 60, minutes % 60);
    format!(
        "2025-03-{:02} {:02}:{m:02}:00.{:06}",
        1 + h / 24,
        h % 24,
        minutes * 7 % 1_000_000
    )
}

/// One Cinder row as `import-backups` reads it.
pub fn row(project: &str, p: usize, i: usize, minute: usize, name: Option<String>) -> Value {
    json!({
        "id": backup_id(p, i),
        "project_id": project,
        "user_id": format!("user{p}"),
        "volume_id": VOLS[i % 3],
        "status": STATUSES[i % STATUSES.len()],
        "display_name": name,
        "display_description": format!("description {i}"),
        "size": i % 7 + 1,
        "object_count": i * 3,
        "availability_zone": "nova",
        "container": "volumebackups",
        "created_at": stamp(minute),
        "updated_at": stamp(minute + 5),
        "deleted": 0,
        "service_metadata": "{\"Type\": 0}",
    })
}

/// The catalog every test starts from:
/// * project A: 40 backups on three volumes, every status; names `alpha-NN` (even),
///   `Beta-NN` (odd), `Alpha%_5` (i = 5) and none (i % 10 == 9); rows 10 and 11 share
///   `created_at` (the id breaks the tie); 3 is an incremental child of 0; 4 has an
///   encryption key, 6 the all-zero key, 7 a snapshot; plus one soft-deleted row.
/// * project B: 5 backups; project C: 1,100 (`bulk-NNNN`).
pub fn dataset() -> Vec<Value> {
    let mut rows = Vec::new();
    for i in 0..40 {
        let name = match i {
            5 => Some("Alpha%_5".to_owned()),
            i if i % 10 == 9 => None,
            i if i % 2 == 0 => Some(format!("alpha-{i:02}")),
            i => Some(format!("Beta-{i:02}")),
        };
        let minute = if i == 11 { 10 } else { i };
        let mut r = row(PA, 1, i, minute, name);
        match i {
            0 => r["num_dependent_backups"] = json!(1),
            3 => r["parent_id"] = json!(backup_id(1, 0)),
            4 => r["encryption_key_id"] = json!(KEY),
            6 => r["encryption_key_id"] = json!("00000000-0000-0000-0000-000000000000"),
            7 => r["snapshot_id"] = json!("77777777-0000-4000-8000-000000000007"),
            _ => {}
        }
        rows.push(r);
    }
    let mut deleted = row(PA, 1, 99, 99, Some("alpha-deleted".into()));
    deleted["deleted"] = json!(1);
    deleted["deleted_at"] = json!(stamp(100));
    rows.push(deleted);
    for i in 0..5 {
        rows.push(row(PB, 2, i, 200 + i, Some(format!("bravo-{i}"))));
    }
    for i in 0..BULK {
        rows.push(row(PC, 3, i, 300 + i, Some(format!("bulk-{i:04}"))));
    }
    rows
}

/// Live rows of a project in the default order (created_at desc, id desc).
pub fn expected(project: &str) -> Vec<Value> {
    let mut rows: Vec<Value> = dataset()
        .into_iter()
        .filter(|r| r["project_id"] == project && r["deleted"] == 0)
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Value| {
            (
                r["created_at"].as_str().unwrap_or("").to_owned(),
                r["id"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(b).cmp(&key(a))
    });
    rows
}

pub fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub fn token(user: &str, project: &str) -> String {
    format!("{user}:{project}")
}

pub struct Server {
    child: Child,
    pub base: String,
    dir: PathBuf,
    /// A database made for this server: (server root, name), dropped with it.
    database: Option<(String, String)>,
    pub catalog: String,
    extra_args: Vec<String>,
    /// The server's `RUST_LOG` (`warn` unless a test reads its log).
    rust_log: String,
    /// Environment the next [`Server::restart`] starts it with (`VBS_STORE_FAULTS`…).
    pub envs: Vec<(String, String)>,
    /// Starts that exited before listening (a store fault while opening the repository).
    pub failed_starts: u64,
    http: reqwest::Client,
}

pub fn pg_root() -> String {
    std::env::var("VBS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs `sql` on the `PostgreSQL` server at `root` (`postgres://user@host:port`).
pub fn psql_at(root: &str, sql: &str) {
    let out = Command::new("psql")
        .args([
            &format!("{root}/postgres"),
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .expect("psql runs (PostgreSQL tests need it; they are never skipped)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn vbs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vbs"))
}

/// Starts a node that serves no API (`vbs serve --role worker…`, built by the caller)
/// with its log in `log`, and waits for its `node NAME ready (ROLES)` line.
pub fn spawn_node(mut cmd: Command, log: &std::path::Path, ready: &str) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut child = cmd
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .expect("start vbs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ready line");
    assert_eq!(
        line.trim(),
        ready,
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

impl Server {
    /// A data directory and catalog (a fresh database on the `PostgreSQL` server at
    /// `root`).
    fn prepare_at(backend: Backend, root: &str) -> (PathBuf, String, Option<(String, String)>) {
        let dir = std::env::temp_dir().join(format!("vbs-it-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.join("catalog.db").display());
                (dir, url, None)
            }
            Backend::Postgres => {
                let db = format!("vbs_it_{}", uuid::Uuid::new_v4().simple());
                psql_at(root, &format!("CREATE DATABASE {db}"));
                (dir, format!("{root}/{db}"), Some((root.to_owned(), db)))
            }
        }
    }

    pub fn start(backend: Backend) -> Server {
        Self::start_with(backend, &dataset(), &[])
    }

    pub fn start_with(backend: Backend, rows: &[Value], extra_args: &[&str]) -> Server {
        Self::start_logging(backend, rows, extra_args, "warn")
    }

    /// [`Server::start_with`], logging with the filter `rust_log` (to `server.log`).
    pub fn start_logging(
        backend: Backend,
        rows: &[Value],
        extra_args: &[&str],
        rust_log: &str,
    ) -> Server {
        Self::start_at(backend, &pg_root(), rows, extra_args, rust_log)
    }

    /// [`Server::start_logging`], on the `PostgreSQL` server at `pg_root` (a test's own).
    pub fn start_at(
        backend: Backend,
        pg_root: &str,
        rows: &[Value],
        extra_args: &[&str],
        rust_log: &str,
    ) -> Server {
        let (dir, catalog, database) = Self::prepare_at(backend, pg_root);
        if !rows.is_empty() {
            import_rows(&dir, &catalog, rows, "seed.jsonl");
        }
        let child = Self::spawn(&dir, &catalog, extra_args, rust_log, &[]);
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Owned from here on, so that a failing assertion still stops the process.
        let mut server = Server {
            child,
            base: String::new(),
            dir,
            database,
            catalog,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            rust_log: rust_log.to_owned(),
            envs: Vec::new(),
            failed_starts: 0,
            http: reqwest::Client::new(),
        };
        server.read_address();
        server
    }

    /// Kills the server with SIGKILL (nothing flushed, nothing cleaned up) and waits
    /// until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again (after [`Server::kill`]) on the same data directory,
    /// catalog and arguments, with [`Server::envs`]. With injected store faults a start
    /// may fail while it opens the repository (the process exits, as it should when
    /// its store fails): it is started again, as a supervisor would, a few times.
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let faulty = self.envs.iter().any(|(k, _)| k == "VBS_STORE_FAULTS");
        for _ in 0..20 {
            self.child = Self::spawn(&self.dir, &self.catalog, &extra, &self.rust_log, &self.envs);
            if !faulty {
                break;
            }
            match try_listening_at(&mut self.child) {
                Some(base) => {
                    self.base = base;
                    return;
                }
                None => {
                    let _ = self.child.wait();
                    self.failed_starts += 1;
                }
            }
        }
        self.read_address();
    }

    fn spawn(
        dir: &std::path::Path,
        catalog: &str,
        extra_args: &[&str],
        rust_log: &str,
        envs: &[(String, String)],
    ) -> Child {
        // The server's log goes to a file: an inherited pipe would keep the test
        // harness waiting if a server outlived its test. Restarts append to it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("log file");
        vbs()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--auth",
                "noauth",
                "--data-dir",
            ])
            .arg(dir)
            .args(["--catalog", catalog])
            .args(extra_args)
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start vbs")
    }

    /// Another API node on this server's data directory and catalog, with `extra_args`:
    /// its process and its base URL.
    pub fn another_node(&self, extra_args: &[&str]) -> (Child, String) {
        let mut child = Self::spawn(&self.dir, &self.catalog, extra_args, &self.rust_log, &[]);
        let base = listening_at(&self.dir, &mut child);
        (child, base)
    }

    /// The configuration file it was started with (`--config`), if any.
    pub fn config_file(&self) -> Option<PathBuf> {
        let i = self.extra_args.iter().position(|a| a == "--config")?;
        self.extra_args.get(i + 1).map(PathBuf::from)
    }

    /// Reads the `listening on ADDR` line of a freshly started server.
    fn read_address(&mut self) {
        self.base = listening_at(&self.dir, &mut self.child);
    }

    /// GET with an optional token and microversion; the body parsed as JSON (Null if empty).
    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        mv: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.get_with(path, token, mv, &[]).await
    }

    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        mv: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(v) = mv {
            req = req.header("OpenStack-API-Version", format!("volume {v}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text))
        };
        (status, headers, body)
    }

    /// A list of project A at the given version as member user A.
    pub async fn list(&self, query: &str, mv: Option<&str>) -> (StatusCode, Value) {
        let (s, _, b) = self
            .get(
                &format!("/v3/{PA}/backups{query}"),
                Some(&token("usera", PA)),
                mv,
            )
            .await;
        (s, b)
    }

    /// A request with a method, an optional token, microversion and JSON body; the
    /// answer's status and body (Null if empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        mv: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(v) = mv {
            req = req.header("OpenStack-API-Version", format!("volume {v}"));
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text))
        };
        (status, body)
    }

    /// The server's data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

/// The base URL a freshly started `vbs serve` announces on its first line, or `None`
/// when it exits first.
fn try_listening_at(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    let addr = line.trim().strip_prefix("listening on ")?;
    Some(format!("http://{addr}"))
}

/// The base URL a freshly started `vbs serve` announces on its first line (its log,
/// in `dir`, in the panic when the line is not that).
fn listening_at(dir: &std::path::Path, child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("unexpected first line {line:?}; log: {log}")
        });
    format!("http://{addr}")
}

/// Loads `rows` into `catalog` with `vbs admin import-backups` (through the file `name` in
/// `dir`), as an operator would, and asserts that it succeeded.
pub fn import_rows(dir: &std::path::Path, catalog: &str, rows: &[Value], name: &str) {
    let file = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).expect("rows file"));
    for r in rows {
        writeln!(f, "{r}").expect("write rows");
    }
    f.flush().expect("write rows");
    let out = vbs()
        .args(["admin", "import-backups", "--data-dir"])
        .arg(dir)
        .args(["--catalog", catalog])
        .arg(&file)
        .output()
        .expect("run import");
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a test is failing, in which case what it made is kept to look at (`what`
/// says where it is, printed).
pub fn kept_on_failure(what: std::fmt::Arguments) -> bool {
    let failing = std::thread::panicking();
    if failing {
        eprintln!("kept for inspection: {what}");
    }
    failing
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test leaves its data directory (logs, catalog, repository) and its
        // database to look at.
        if kept_on_failure(format_args!(
            "{} (catalog {})",
            self.dir.display(),
            self.catalog
        )) {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((root, db)) = &self.database {
            psql_at(root, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// Asserts a Cinder fault: status, fault key and message.
#[track_caller]
pub fn assert_fault(got: (StatusCode, Value), status: u16, fault: &str, message: &str) {
    let (s, body) = got;
    assert_eq!(s.as_u16(), status, "body: {body}");
    assert_eq!(
        body,
        json!({fault: {"code": status, "message": message}}),
        "status {s}"
    );
}

/// Runs one async check against both catalogs.
#[macro_export]
macro_rules! both {
    ($check:ident) => {
        mod $check {
            #[tokio::test]
            async fn sqlite() {
                super::$check($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$check($crate::support::Backend::Postgres).await;
            }
        }
    };
}

/// Polls `GET path` (as `token`, at 3.71) until `body[key]["status"]` is `want`, for at
/// most a minute; returns `body[key]`. An `error…` status not waited for, or the time
/// running out, panics with the last body.
pub async fn wait_status(s: &Server, path: &str, token: &str, key: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let (st, _, b) = s.get(path, Some(token), Some("3.71")).await;
        assert_eq!(st, 200, "GET {path}: {b}");
        let status = b[key]["status"].as_str().unwrap_or_default();
        if status == want {
            return b[key].clone();
        }
        // An error status nobody waits for ends the wait at once.
        assert!(
            !status.starts_with("error") || want.starts_with("error"),
            "{path} is {status}, not {want}: {b}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never became {want}: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Seeded volume contents: holes, zeros written as data, random and text-like bytes,
/// and copies at 4 KiB-aligned shifts (crates/engine/tests/it/image.rs, writing into
/// an existing image instead of creating one).
pub mod image {
    use std::fs::OpenOptions;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;

    pub const MIB: u64 = 1 << 20;

    /// xorshift64*: deterministic bytes without a dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// Random bytes, eight at a time (the test binary is not optimised).
        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n + 8);
            while out.len() < n {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
            out.truncate(n);
            out
        }
        pub fn text(&mut self, n: usize) -> Vec<u8> {
            const WORDS: &[&str] = &[
                "the", "volume", "backup", "of", "a", "block", "device", "is", "kept", "safe\n",
            ];
            let mut out = Vec::with_capacity(n + 16);
            while out.len() < n {
                out.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
            out.truncate(n);
            out
        }
    }

    /// Writes `mib` MiB from `start` into the existing image at `path`: per MiB a hole
    /// (left as it is), written zeros, random, text, or a copy of an earlier data MiB
    /// shifted by a 4 KiB multiple.
    pub fn fill(path: &Path, start: u64, mib: u64, seed: u64) {
        let mut rng = Rng::new(seed);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open image");
        let mut sources: Vec<u64> = Vec::new();
        for i in 0..mib {
            let off = start + i * MIB;
            match rng.below(5) {
                0 => {}
                1 => f
                    .write_all_at(&vec![0u8; MIB as usize], off)
                    .expect("write"),
                2 => {
                    f.write_all_at(&rng.bytes(MIB as usize), off)
                        .expect("write");
                    sources.push(off);
                }
                3 => {
                    f.write_all_at(&rng.text(MIB as usize), off).expect("write");
                    sources.push(off);
                }
                _ => {
                    if let Some(&src) = sources.get(rng.below(sources.len().max(1) as u64) as usize)
                    {
                        let shift = (1 + rng.below(255)) * 4096;
                        let mut buf = vec![0u8; (MIB - shift) as usize];
                        f.read_exact_at(&mut buf, src).expect("read");
                        f.write_all_at(&buf, off + shift).expect("write");
                    }
                }
            }
        }
        f.sync_all().expect("sync");
    }

    /// Writes `len` random bytes at `off`.
    pub fn random(path: &Path, off: u64, len: u64, seed: u64) {
        let mut rng = Rng::new(seed);
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open image");
        let mut done = 0;
        while done < len {
            let n = (len - done).min(4 * MIB);
            f.write_all_at(&rng.bytes(n as usize), off + done)
                .expect("write");
            done += n;
        }
        f.sync_all().expect("sync");
    }

    /// Overwrites `pages` random 4 KiB pages below `limit` with random bytes, as a
    /// running guest would.
    pub fn mutate(path: &Path, limit: u64, pages: u64, seed: u64) {
        let mut rng = Rng::new(seed);
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open image");
        for _ in 0..pages {
            let p = rng.below(limit / 4096);
            f.write_all_at(&rng.bytes(4096), p * 4096).expect("write");
        }
        f.sync_all().expect("sync");
    }

    /// A sparse file of `size` bytes (a reference to build expected contents in).
    pub fn sparse(path: &Path, size: u64) {
        let f = std::fs::File::create(path).expect("create");
        f.set_len(size).expect("set_len");
    }

    /// Bytes allocated on disk.
    pub fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    /// The data extents of the first `len` bytes of `f` (`SEEK_DATA`/`SEEK_HOLE`); the
    /// rest reads as zeros.
    fn data(f: &std::fs::File, len: u64) -> Vec<(u64, u64)> {
        use rustix::fs::{SeekFrom, seek};
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < len {
            let start = match seek(f, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => panic!("SEEK_DATA: {e}"),
            };
            let end = seek(f, SeekFrom::Hole(start)).expect("SEEK_HOLE");
            if start >= len {
                break;
            }
            out.push((start, end.min(len)));
            pos = end;
        }
        out
    }

    /// Asserts the first `len` bytes of two files are equal, reading only where either
    /// has data (holes read as zeros in both).
    #[track_caller]
    pub fn assert_same(left: &Path, right: &Path, len: u64) {
        let (fa, fb) = (
            std::fs::File::open(left).expect("open left"),
            std::fs::File::open(right).expect("open right"),
        );
        for (f, p) in [(&fa, left), (&fb, right)] {
            assert!(
                f.metadata().expect("stat").len() >= len,
                "{} is short",
                p.display()
            );
        }
        let (mut bl, mut br) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        let mut ranges = data(&fa, len);
        ranges.extend(data(&fb, len));
        for (start, end) in ranges {
            let mut off = start;
            while off < end {
                let n = (end - off).min(MIB) as usize;
                fa.read_exact_at(&mut bl[..n], off).expect("read left");
                fb.read_exact_at(&mut br[..n], off).expect("read right");
                if bl[..n] != br[..n] {
                    let first = bl[..n]
                        .iter()
                        .zip(&br[..n])
                        .position(|(p, q)| p != q)
                        .unwrap_or(0);
                    panic!(
                        "{} and {} differ at byte {}",
                        left.display(),
                        right.display(),
                        off + first as u64
                    );
                }
                off += n as u64;
            }
        }
    }
}

/// Runs the futures concurrently (no extra crate: one task each).
pub async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let futures: Vec<F> = futures.collect();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}
