//! Node identity (issue 16): a node name is one live process's. A second node started
//! with a live node's explicit `node_name` refuses to start and says who holds it; a
//! node killed with SIGKILL is replaced at once by a new process of the same host; two
//! nodes with the default name on one host are two nodes, so an API node still sees
//! its worker (before, they overwrote each other's row and the API answered 503).
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::{Backend, PA, Server, spawn_node, token, vbs, wait_status};

fn node_config(dir: &std::path::Path, name: Option<&str>) -> std::path::PathBuf {
    let path = dir.join(format!("{}.toml", name.unwrap_or("default")));
    let line = name
        .map(|n| format!("node_name = \"{n}\"\n"))
        .unwrap_or_default();
    std::fs::write(&path, format!("{line}job_lease_secs = 30\n")).unwrap();
    path
}

fn worker(s: &Server, config: &std::path::Path) -> std::process::Command {
    let mut cmd = vbs();
    cmd.args(["serve", "--role", "worker", "--data-dir"])
        .arg(s.dir())
        .args(["--catalog", &s.catalog, "--config"])
        .arg(config);
    cmd
}

#[tokio::test]
async fn a_live_nodes_name_is_its_own() {
    let s = Server::start_with(Backend::Postgres, &[], &["--role", "api"]);
    let dir = s.dir().join("nodes");
    std::fs::create_dir_all(&dir).unwrap();
    let config = node_config(&dir, Some("w-same"));
    let mut first = spawn_node(
        worker(&s, &config),
        &dir.join("first.log"),
        "node w-same ready (worker)",
    );

    // A second process with the same name refuses, naming the holder.
    let out = worker(&s, &config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second node started: {stderr}");
    assert!(
        stderr.contains("node name \"w-same\" is held by a live node")
            && stderr.contains(&format!(":{}:", first.id())),
        "{stderr}"
    );
    // The first one still serves: a backup runs.
    backup_runs(&s).await;

    // Killed, its name is taken over at once by a new process of this host (no wait
    // for its 30-second lease).
    first.kill().unwrap();
    first.wait().unwrap();
    let started = std::time::Instant::now();
    let mut second = spawn_node(
        worker(&s, &config),
        &dir.join("second.log"),
        "node w-same ready (worker)",
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn default_names_are_unique_per_process() {
    // An API node and a worker node on one host, both with the default name.
    let s = Server::start_with(Backend::Postgres, &[], &["--role", "api"]);
    let dir = s.dir().join("nodes");
    std::fs::create_dir_all(&dir).unwrap();
    let config = node_config(&dir, None);
    let mut cmd = worker(&s, &config);
    cmd.env_remove("VBS_NODE_NAME");
    let log = dir.join("worker.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        line.trim(),
        format!("node {}-{} ready (worker)", host.trim(), child.id()),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The API node sees the worker: work is accepted and done.
    backup_runs(&s).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A volume is backed up through the API node, so some worker node runs it.
async fn backup_runs(s: &Server) {
    let t = token("usera", PA);
    let (st, v) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/volumes"),
            Some(&t),
            None,
            Some(&json!({"volume": {"size": 1}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let vid = v["volume"]["id"].as_str().unwrap();
    let (st, b) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/backups"),
            Some(&t),
            None,
            Some(&json!({"backup": {"volume_id": vid}})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let bid = b["backup"]["id"].as_str().unwrap();
    wait_status(
        s,
        &format!("/v3/{PA}/backups/{bid}"),
        &t,
        "backup",
        "available",
    )
    .await;
}

/// The jobs run on threads of their own at `worker_nice` (10 by default), the API's at
/// the process's priority: when backups keep the CPU busy, requests are served first.
#[tokio::test]
async fn job_threads_run_at_a_lower_cpu_priority_than_the_api() {
    let s = Server::start(Backend::Sqlite);
    // (thread name, nice) of every thread of the server.
    let threads: Vec<(String, i64)> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the command (which may hold spaces), counted from `state` (3).
            let rest = &stat[stat.rfind(')')? + 2..];
            let nice = rest.split(' ').nth(16)?.parse().ok()?;
            Some((name.trim().to_owned(), nice))
        })
        .collect();
    let jobs: Vec<i64> = threads
        .iter()
        .filter(|(n, _)| n == "vbs-jobs")
        .map(|(_, nice)| *nice)
        .collect();
    let api: Vec<i64> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("tokio-rt"))
        .map(|(_, nice)| *nice)
        .collect();
    assert!(!jobs.is_empty() && !api.is_empty(), "{threads:?}");
    assert!(jobs.iter().all(|n| *n == 10), "{threads:?}");
    assert!(api.iter().all(|n| *n == 0), "{threads:?}");
}
