//! The services the cluster fault campaign disturbs, of its own so that no other test
//! is: a `PostgreSQL` cluster it restarts and a Swift proxy it kills mid-upload.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `PostgreSQL` cluster of the test's own (initdb, `pg_ctl`, as user `postgres`) on a
/// free port, so that restarting it disturbs no other test.
pub(super) struct PrivatePostgres {
    pub(super) dir: PathBuf,
    pub(super) port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")])
        .args(args)
        .output()
        .expect("runuser (PostgreSQL tests need it; they are never skipped)");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivatePostgres {
    pub(super) fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("vbs-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success());
        let data = dir.join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    pub(super) fn up(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// A crash and a restart: stopped in immediate mode (no checkpoint, every client
    /// cut off), started again, recovering from its WAL.
    pub(super) fn restart(&self) {
        let data = self.dir.join("data");
        as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
        self.up();
    }

    pub(super) fn root(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Swift proxy of the test's own on a free port, on the rings, servers and memcached
/// of the all-in-one that `scripts/swift-aio.sh start` runs (`SWIFT_AIO_DIR`, default
/// `/tmp/vbs-swift`): killing it disturbs no other test. One process (`workers = 0`),
/// so that SIGKILL stops all of it.
pub(super) struct Proxy {
    pub(super) child: Option<Child>,
    conf: PathBuf,
    pub(super) port: u16,
}

impl Proxy {
    pub(super) fn start() -> Self {
        let aio = std::env::var("SWIFT_AIO_DIR").unwrap_or_else(|_| "/tmp/vbs-swift".into());
        let base = std::fs::read_to_string(format!("{aio}/etc/proxy-server.conf"))
            .expect("the Swift all-in-one (scripts/swift-aio.sh start); never skipped");
        let port = free_port();
        let conf: String = base
            .lines()
            .map(|l| {
                if l.starts_with("bind_port") {
                    format!("bind_port = {port}")
                } else if l.starts_with("workers") {
                    "workers = 0".to_owned()
                } else if l.starts_with("log_name") {
                    "log_name = proxy-faults".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = std::env::temp_dir().join(format!("vbs-proxy-{port}.conf"));
        std::fs::write(&path, conf + "\n").unwrap();
        let mut p = Self {
            child: None,
            conf: path,
            port,
        };
        p.up();
        p
    }

    pub(super) fn up(&mut self) {
        let aio = std::env::var("SWIFT_AIO_DIR").unwrap_or_else(|_| "/tmp/vbs-swift".into());
        let child = Command::new("/usr/bin/python3")
            .arg(format!("{aio}/bin/aio-launch.py"))
            .arg(format!("{aio}/etc"))
            .arg("/usr/bin/swift-proxy-server")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_mins(1);
        let url = format!("127.0.0.1:{}", self.port);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&url) {
                use std::io::{Read as _, Write as _};
                let _ = s.write_all(b"GET /healthcheck HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.ends_with(b"200") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the test's Swift proxy never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.conf);
    }
}
