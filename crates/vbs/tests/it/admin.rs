//! Operator-facing behaviour: bulk import, configuration, start-up and shutdown.

use std::io::Write as _;

use serde_json::json;

use crate::both;
use crate::support::*;

fn write_lines(path: &std::path::Path, rows: &[serde_json::Value], extra: &[&str]) {
    let mut f = std::fs::File::create(path).unwrap();
    for r in rows {
        writeln!(f, "{r}").unwrap();
    }
    for l in extra {
        writeln!(f, "{l}").unwrap();
    }
}

fn import(dir: &std::path::Path, catalog: &str, file: &std::path::Path) -> std::process::Output {
    vbs()
        .args(["admin", "import-backups", "--data-dir"])
        .arg(dir)
        .args(["--catalog", catalog])
        .arg(file)
        .output()
        .unwrap()
}

async fn count_b(s: &Server) -> serde_json::Value {
    let url = format!("/v3/{PB}/backups?with_count=true&limit=0");
    s.get(&url, Some(&token("userb", PB)), Some("3.45")).await.2
}

async fn import_is_all_or_nothing(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let (dir, catalog) = (
        std::env::temp_dir().join(format!("vbs-imp-{}", uuid::Uuid::new_v4().simple())),
        s.catalog.clone(),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let rows: Vec<_> = dataset()
        .into_iter()
        .filter(|r| r["project_id"] == PB)
        .collect();
    let file = dir.join("in.jsonl");

    // A bad record names its line and leaves the catalog untouched.
    write_lines(
        &file,
        &rows,
        &[
            r#"{"id": "not-a-uuid", "volume_id": "x", "project_id": "p", "status": "available", "created_at": "2025-01-01 00:00:00"}"#,
        ],
    );
    let out = import(&dir, &catalog, &file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 6:") && err.contains("not a UUID"),
        "{err}"
    );
    assert_eq!(count_b(&s).await, json!({"backups": [], "count": 0}));
    write_lines(&file, &rows, &["{not json"]);
    let err = String::from_utf8_lossy(&import(&dir, &catalog, &file).stderr).into_owned();
    assert!(err.contains("line 6:"), "{err}");
    let mut dup = rows.clone();
    dup.push(rows[0].clone());
    write_lines(&file, &dup, &[]);
    let err = String::from_utf8_lossy(&import(&dir, &catalog, &file).stderr).into_owned();
    assert!(
        err.contains("line 6:") && err.contains("appears twice"),
        "{err}"
    );
    assert_eq!(count_b(&s).await["count"], 0);

    // A good file goes in whole; importing it again is refused, naming the first line.
    write_lines(&file, &rows, &[]);
    let out = import(&dir, &catalog, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("imported 5 backups"));
    assert_eq!(count_b(&s).await["count"], 5);
    let err = String::from_utf8_lossy(&import(&dir, &catalog, &file).stderr).into_owned();
    assert!(
        err.contains("line 1:") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(count_b(&s).await["count"], 5);
    let _ = std::fs::remove_dir_all(&dir);
}
both!(import_is_all_or_nothing);

/// A bulk import (indexes dropped and rebuilt) answers exactly like row-by-row loading.
async fn bulk_import_keeps_indexes(b: Backend) {
    let mut rows = dataset();
    for i in 0..10_000 {
        let mut r = rows[0].clone();
        r["id"] = json!(backup_id(9, i));
        r["project_id"] = json!("dddddddd000000000000000000000004");
        r["display_name"] = json!(format!("many-{i}"));
        rows.push(r);
    }
    let s = Server::start_with(b, &rows, &[]);
    let (_, body) = s
        .list("?name~=Alpha%25&with_count=true", Some("3.45"))
        .await;
    assert_eq!(body["count"], 1);
    let (_, body) = s
        .list("?status~=err&with_count=true&limit=0", Some("3.45"))
        .await;
    let want = expected(PA)
        .iter()
        .filter(|r| r["status"].as_str().unwrap().contains("err"))
        .count();
    assert_eq!(body["count"], want);
    let p = "dddddddd000000000000000000000004";
    let (_, _, body) = s
        .get(
            &format!("/v3/{p}/backups?name~=ny-999&with_count=true&limit=0"),
            Some(&token("u", p)),
            Some("3.45"),
        )
        .await;
    assert_eq!(body["count"], 11, "many-999 and many-9990..9999");
}
both!(bulk_import_keeps_indexes);

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut s = Server::start_with(Backend::Sqlite, &[], &[]);
    let (st, _, _) = s.get("/healthcheck", None, None).await;
    assert_eq!(st, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = s.wait();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn noauth_stays_on_loopback_and_config_layers() {
    let dir = std::env::temp_dir().join(format!("vbs-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = vbs()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    // An unknown key in the file is refused, naming it.
    let cfg = dir.join("vbs.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n").unwrap();
    let out = vbs()
        .args(["--config"])
        .arg(&cfg)
        .args(["serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("colour"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `vbs serve` on loopback with these flags is refused; what it said.
    let refused = |flags: &[&str]| {
        let out = vbs()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(flags)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Roles are checked, and a repository URL that carries a secret is refused
    // without echoing it.
    let err = refused(&["--role", "api,bogus"]);
    assert!(err.contains("unknown role \"bogus\""), "{err}");
    let err = refused(&[
        "--role",
        "worker",
        "--repository",
        "swift+tempauth://test:s3cr3t@127.0.0.1:1/c",
    ]);
    assert!(err.contains("opening repository"), "{err}");
    assert!(!err.contains("s3cr3t"), "the secret is echoed: {err}");
    // keystone mode needs its section.
    let err = refused(&["--auth", "keystone"]);
    assert!(err.contains("[keystone]"), "{err}");
    // File < environment < flags.
    std::fs::write(
        &cfg,
        "listen = \"10.255.255.1:1\"\nauth = \"noauth\"\nallow_insecure_noauth = true\n",
    )
    .unwrap();
    let first_line = |env_listen: &str, flag: Option<&str>| {
        let mut cmd = vbs();
        cmd.args(["--config"])
            .arg(&cfg)
            .arg("serve")
            .arg("--data-dir")
            .arg(&dir);
        if let Some(f) = flag {
            cmd.args(["--listen", f]);
        }
        let mut child = cmd
            .env("VBS_LISTEN", env_listen)
            .env("VBS_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (line, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (line, err) = first_line("127.0.0.1:0", None);
    assert!(
        line.starts_with("listening on 127.0.0.1:"),
        "the environment overrides the file: {line} {err}"
    );
    let (line, err) = first_line("10.255.255.2:2", Some("127.0.0.1:0"));
    assert!(
        line.starts_with("listening on 127.0.0.1:"),
        "flags override the environment: {line} {err}"
    );
    let (line, err) = first_line("10.255.255.2:2", None);
    assert!(
        line.is_empty() && err.contains("10.255.255.2:2"),
        "the environment was read: {line} {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn volumes_list_for_clients(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/volumes/detail"),
            Some(&token("usera", PA)),
            Some("3.71"),
        )
        .await;
    assert_eq!((st.as_u16(), body), (200, json!({"volumes": []})));
}
both!(volumes_list_for_clients);

/// A bulk import whose file holds a backup the catalog already has, deep inside: on
/// SQLite the unique index is rebuilt after the load, and the error still names the line;
/// nothing goes in.
async fn bulk_import_names_an_existing_backup(b: Backend) {
    let s = Server::start(b);
    let p = "eeeeeeee000000000000000000000005";
    let mut rows = Vec::new();
    let first = dataset()[0].clone();
    for i in 0..10_500 {
        let mut r = first.clone();
        r["id"] = json!(backup_id(10, i));
        r["project_id"] = json!(p);
        rows.push(r);
    }
    // Line 7,001 repeats a backup of project B that the catalog holds.
    rows[7_000] = dataset()
        .into_iter()
        .find(|r| r["project_id"] == PB)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("vbs-imp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.jsonl");
    write_lines(&file, &rows, &[]);
    let out = import(&dir, &s.catalog, &file);
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("line 7001:") && err.contains("already exists"),
        "{err}"
    );
    let (_, _, body) = s
        .get(
            &format!("/v3/{p}/backups?with_count=true&limit=0"),
            Some(&token("u", p)),
            Some("3.45"),
        )
        .await;
    assert_eq!(body["count"], 0, "{body}");
}
both!(bulk_import_names_an_existing_backup);

/// `vbs admin status`, `backups list`, `volumes list` (issue 14): what the catalog says,
/// as columns or `--json`, from another process beside a running node.
#[tokio::test]
async fn status_and_lists_for_operators() {
    let s = Server::start_with(Backend::Sqlite, &[], &[]);
    let t = token("usera", PA);
    let (st, v) = s
        .call(
            reqwest::Method::POST,
            &format!("/v3/{PA}/volumes"),
            Some(&t),
            None,
            Some(&serde_json::json!({"volume": {"size": 1, "name": "op-vol"}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let vid = v["volume"]["id"].as_str().unwrap().to_owned();
    let (st, b) = s
        .call(
            reqwest::Method::POST,
            &format!("/v3/{PA}/backups"),
            Some(&t),
            None,
            Some(&serde_json::json!({"backup": {"volume_id": vid, "name": "op-bk"}})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let bid = b["backup"]["id"].as_str().unwrap().to_owned();
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{bid}"),
        &t,
        "backup",
        "available",
    )
    .await;
    let admin = |args: &[&str]| {
        let out = vbs()
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(s.dir())
            .args(["--catalog", &s.catalog])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&admin(&["status", "--json"])).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(
        status["nodes"][0]["roles"], "api,worker,scheduler",
        "{status}"
    );
    assert_eq!(status["queue"]["queued"], 0, "{status}");
    let text = admin(&["status"]);
    assert!(text.starts_with("Nodes (1 live)\nNAME"), "{text}");
    let backups: serde_json::Value =
        serde_json::from_str(&admin(&["backups", "list", "--json", "--project", PA])).unwrap();
    assert_eq!(backups.as_array().unwrap().len(), 1);
    assert_eq!(
        (&backups[0]["id"], &backups[0]["status"]),
        (&serde_json::json!(bid), &serde_json::json!("available"))
    );
    let text = admin(&["backups", "list", "--project", PB]);
    assert_eq!(
        text.trim(),
        "ID  PROJECT  NAME  STATUS  SIZE  TYPE  CREATED"
    );
    let volumes: serde_json::Value =
        serde_json::from_str(&admin(&["volumes", "list", "--json"])).unwrap();
    assert_eq!(volumes[0]["name"], "op-vol", "{volumes}");
    assert!(admin(&["volumes", "list"]).contains("op-vol"));
}

/// Progress of long admin commands (issue 14): plain lines when stderr is not a
/// terminal, a bar on a terminal (run under `script`, which gives it a pty), and the
/// result alone on stdout either way.
#[tokio::test]
async fn engine_commands_show_progress() {
    let dir = std::env::temp_dir().join(format!("vbs-progress-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let volume = dir.join("vol.img");
    crate::support::image::sparse(&volume, 64 << 20);
    crate::support::image::random(&volume, 0, 8 << 20, 9);
    let repo = dir.join("repo");
    let run = |args: &[&str]| {
        let out = vbs()
            .args(["admin", "engine"])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (stdout, stderr) = run(&[
        "backup",
        "--repository",
        repo.to_str().unwrap(),
        "--id",
        "bk-1",
        "--volume",
        volume.to_str().unwrap(),
    ]);
    let stats: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(stats["bytes_read"], 8 << 20, "{stdout}");
    assert!(
        stderr.lines().any(|l| l.starts_with("backup: done in ")),
        "{stderr}"
    );
    let (_, stderr) = run(&["verify", "--repository", repo.to_str().unwrap()]);
    assert!(stderr.contains("verify: bk-1\n"), "{stderr}");
    assert!(
        stderr.contains("verify: 1 checked, 0 damaged in "),
        "{stderr}"
    );
    let (_, stderr) = run(&["gc", "--repository", repo.to_str().unwrap()]);
    assert!(stderr.starts_with("gc: started\ngc: swept in "), "{stderr}");
    // On a terminal: a bar, then the same closing line.
    let target = dir.join("restored.img");
    let cmd = format!(
        "{} admin engine restore --repository {} --backup bk-1 --target {} 2>&1 >/dev/null",
        env!("CARGO_BIN_EXE_vbs"),
        repo.display(),
        target.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("script (util-linux) gives the command a terminal");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("restore: done in "), "{shown}");
    crate::support::image::assert_same(&volume, &target, 64 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}
