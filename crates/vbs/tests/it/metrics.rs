//! What an operator sees (issue 14): `/metrics` after a real backup and restore, its
//! counters moved by the right amounts and the text accepted by `promtool check
//! metrics` (Debian's `prometheus` package; its absence fails the test); the scrape
//! listener without a token and the API's `/metrics` for admins only; and JSON logs,
//! one object a line, an access line per request with its id, project, user, route and
//! duration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::doc_markdown,
    clippy::float_cmp,
    clippy::many_single_char_names
)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::image::{self, MIB};
use crate::support::*;

/// The value of the sample `name{labels}` (labels sorted by name, as the exporter writes
/// them).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_real_work_and_pass_promtool() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::env::temp_dir().join(format!(
        "vbs-metrics-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &config,
        format!("log_format = \"json\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let s = Server::start_logging(
        Backend::Sqlite,
        &[],
        &["--config", config.to_str().unwrap()],
        "info",
    );
    let t = token("usera", PA);
    let call = |method: Method, path: String, body: Option<Value>| {
        let (s, t) = (&s, t.clone());
        async move {
            s.call(method, &path, Some(&t), Some("3.71"), body.as_ref())
                .await
        }
    };
    let (st, v) = call(
        Method::POST,
        format!("/v3/{PA}/volumes"),
        Some(json!({"volume": {"size": 1}})),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let vid = v["volume"]["id"].as_str().unwrap().to_owned();
    image::random(
        &s.dir().join("volumes").join(format!("{vid}.img")),
        0,
        4 * MIB,
        3,
    );
    let (st, b) = call(
        Method::POST,
        format!("/v3/{PA}/backups"),
        Some(json!({"backup": {"volume_id": vid}})),
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
    let (st, r) = call(
        Method::POST,
        format!("/v3/{PA}/backups/{bid}/restore"),
        Some(json!({"restore": {}})),
    )
    .await;
    assert_eq!(st, 202, "{r}");
    let rv = r["restore"]["volume_id"].as_str().unwrap().to_owned();
    wait_status(
        &s,
        &format!("/v3/{PA}/volumes/{rv}"),
        &t,
        "volume",
        "available",
    )
    .await;
    wait_status(
        &s,
        &format!("/v3/{PA}/backups/{bid}"),
        &t,
        "backup",
        "available",
    )
    .await;

    // The founding list three times once the work has settled: a page rendered, then
    // kept.
    for _ in 0..3 {
        let (st, l) = call(Method::GET, format!("/v3/{PA}/backups"), None).await;
        assert_eq!(st, 200, "{l}");
        assert_eq!(l["backups"][0]["id"], bid.as_str());
    }

    // The scrape listener asks no token; the API's /metrics is for admins. The
    // repository's size comes from a listing a few seconds after the backup.
    let mut text = String::new();
    for _ in 0..100 {
        let scraped = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        assert_eq!(scraped.status(), 200);
        assert!(
            scraped.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        text = scraped.text().await.unwrap();
        if sample(&text, "vbs_repository_objects{kind=\"manifests\"}") == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (st, _) = s.call(Method::GET, "/metrics", Some(&t), None, None).await;
    assert_eq!(st, 403);
    let (st, _) = s.call(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(st, 401);
    let (st, _, via_api) = s.get("/metrics", Some(&token("admin", PA)), None).await;
    assert_eq!(st, 200);
    assert!(via_api.as_str().unwrap().contains("vbs_jobs_started_total"));

    // The counters moved by what happened: one backup and one restore, 4 MiB read, all
    // of it new (random data), stored no larger than read (plus framing).
    assert_eq!(
        sample(&text, "vbs_jobs_started_total{kind=\"backup\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vbs_jobs_finished_total{kind=\"backup\",outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "vbs_jobs_started_total{kind=\"restore\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vbs_jobs_finished_total{kind=\"restore\",outcome=\"success\"}"
        ),
        1.0
    );
    let mib = 4.0 * 1_048_576.0;
    assert_eq!(sample(&text, "vbs_backup_bytes_total{stage=\"read\"}"), mib);
    assert_eq!(sample(&text, "vbs_backup_bytes_total{stage=\"new\"}"), mib);
    assert_eq!(
        sample(&text, "vbs_backup_bytes_total{stage=\"deduplicated\"}"),
        0.0
    );
    let stored = sample(&text, "vbs_backup_bytes_total{stage=\"stored\"}");
    assert!(stored > 0.9 * mib && stored < 1.1 * mib, "{stored}");
    assert_eq!(
        sample(
            &text,
            "vbs_http_requests_total{method=\"POST\",route=\"/v3/{project_id}/backups\",status=\"202\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "vbs_http_request_duration_seconds_count{method=\"POST\",route=\"/v3/{project_id}/backups\"}"
        ),
        1.0
    );
    // What the repository holds: the one manifest, and packs of about what was stored.
    assert_eq!(
        sample(&text, "vbs_repository_objects{kind=\"manifests\"}"),
        1.0
    );
    let pack_bytes = sample(&text, "vbs_repository_bytes{kind=\"packs\"}");
    assert!(
        pack_bytes >= stored && pack_bytes < 1.1 * mib,
        "{pack_bytes} bytes of packs, {stored} stored"
    );
    assert!(sample(&text, "vbs_repository_scan_timestamp_seconds") > 1.7e9);
    assert_eq!(sample(&text, "vbs_job_queue{state=\"queued\"}"), 0.0);
    // (A write that lands between two of them, such as a late progress reset, makes
    // one more page rendered.)
    let rendered = sample(&text, "vbs_list_pages_total{outcome=\"rendered\"}");
    let kept = sample(&text, "vbs_list_pages_total{outcome=\"kept\"}");
    assert!(
        rendered >= 1.0 && kept >= 1.0 && rendered + kept == 3.0,
        "{rendered} {kept}"
    );
    assert!(text.contains("vbs_node_up{node="), "{text}");
    assert!(
        text.contains("vbs_catalog_pool_connections{state=\"idle\"}"),
        "{text}"
    );

    // Prometheus' own linter on the scrape.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; the tests never skip it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // JSON logs: every line an object; the backup's POST as an access line.
    let log = std::fs::read_to_string(s.dir().join("server.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "served"
                && l["fields"]["method"] == "POST"
                && l["span"]["route"] == "/v3/{project_id}/backups"
        })
        .unwrap_or_else(|| panic!("no access line for the backup's POST:\n{log}"));
    assert_eq!(access["span"]["project"], PA, "{access}");
    assert_eq!(access["span"]["user"], "usera", "{access}");
    assert!(
        access["span"]["id"].as_str().unwrap().starts_with("req-"),
        "{access}"
    );
    assert_eq!(access["fields"]["status"], 202, "{access}");
    assert!(
        access["fields"]["duration_ms"].as_f64().is_some(),
        "{access}"
    );
    assert!(!log.contains("usera:"), "no token in the logs");
    let _ = std::fs::remove_file(config);
}
