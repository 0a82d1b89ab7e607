//! `vbs admin status`, `vbs admin backups list`, `vbs admin volumes list`: what the
//! catalog says, for an operator at a terminal (aligned columns) or a script
//! (`--json`). They read the catalog only; any node's configuration will do.

use anyhow::Context as _;
use serde_json::{Value, json};
use vbs_catalog::{Catalog, VolumeQuery, ts};

use crate::config::Config;

/// Rows as aligned text columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

async fn open(config: &Config) -> anyhow::Result<Catalog> {
    Catalog::open(&config.catalog_options())
        .await
        .context("opening the catalog")
}

/// `vbs admin status`: live nodes, the queue, running jobs.
pub async fn status(config: &Config, as_json: bool) -> anyhow::Result<()> {
    let catalog = open(config).await?;
    let nodes = catalog.all_live_nodes().await?;
    let queue = catalog.queue_stats().await?;
    let running = catalog.running_jobs().await?;
    let now = ts::now_micros();
    #[allow(clippy::cast_precision_loss)]
    let secs = |micros: i64| micros as f64 / 1e6;
    if as_json {
        let doc = json!({
            "nodes": nodes.iter().map(|n| json!({
                "name": n.name, "roles": n.roles, "instance": n.instance,
                "started_at": ts::format_api(n.started_at),
                "lease_seconds_left": secs(n.lease_until - now),
            })).collect::<Vec<_>>(),
            "queue": {"queued": queue.queued, "running": queue.running,
                      "oldest_queued_seconds": secs(queue.oldest_queued_micros)},
            "running": running.iter().map(|(j, worker)| json!({
                "job_id": j.id, "kind": j.kind.as_str(), "project_id": j.project_id,
                "backup_id": j.backup_id, "worker": worker,
                "running_seconds": secs(now - j.created_at),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("Nodes ({} live)", nodes.len());
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.roles.clone(),
                    ts::format_api(n.started_at),
                    format!("{:.0}s", secs(n.lease_until - now)),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["NAME", "ROLES", "STARTED", "LEASE LEFT"], &rows)
        );
        println!(
            "\nQueue: {} queued (oldest {:.0}s), {} running",
            queue.queued,
            secs(queue.oldest_queued_micros),
            queue.running
        );
        if !running.is_empty() {
            let rows: Vec<Vec<String>> = running
                .iter()
                .map(|(j, worker)| {
                    vec![
                        j.kind.as_str().to_owned(),
                        or_dash(
                            Some(&j.backup_id)
                                .filter(|b| !b.is_empty())
                                .map(String::as_str),
                        ),
                        or_dash(j.project_id.as_deref()),
                        worker.clone(),
                        format!("{:.0}s", secs(now - j.created_at)),
                    ]
                })
                .collect();
            println!(
                "\n{}",
                table(&["KIND", "BACKUP", "PROJECT", "WORKER", "AGE"], &rows)
            );
        }
    }
    catalog.close().await;
    Ok(())
}

/// `vbs admin backups list`.
pub async fn backups(
    config: &Config,
    project: Option<&str>,
    limit: u64,
    as_json: bool,
) -> anyhow::Result<()> {
    let catalog = open(config).await?;
    let list = catalog.admin_backups(project, limit).await?;
    if as_json {
        let items: Vec<Value> = list
            .iter()
            .map(|b| {
                json!({
                    "id": b.id, "project_id": b.project_id, "volume_id": b.volume_id,
                    "name": b.display_name, "status": b.status, "size": b.size,
                    "parent_id": b.parent_id, "created_at": ts::format_api(b.created_at),
                    "fail_reason": b.fail_reason,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|b| {
                vec![
                    b.id.clone(),
                    b.project_id.clone(),
                    or_dash(b.display_name.as_deref()),
                    b.status.clone(),
                    format!("{}G", b.size),
                    if b.parent_id.is_some() {
                        "incremental"
                    } else {
                        "full"
                    }
                    .into(),
                    ts::format_api(b.created_at),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &["ID", "PROJECT", "NAME", "STATUS", "SIZE", "TYPE", "CREATED"],
                &rows
            )
        );
    }
    catalog.close().await;
    Ok(())
}

/// `vbs admin volumes list`.
pub async fn volumes(
    config: &Config,
    project: Option<&str>,
    limit: u64,
    as_json: bool,
) -> anyhow::Result<()> {
    let catalog = open(config).await?;
    let list = catalog
        .list_volumes(&VolumeQuery {
            project_id: project.map(str::to_owned),
            name: None,
            status: None,
            marker: None,
            offset: 0,
            limit,
        })
        .await?;
    if as_json {
        let items: Vec<Value> = list
            .iter()
            .map(|v| {
                json!({
                    "id": v.id, "project_id": v.project_id, "name": v.display_name,
                    "status": v.status, "size": v.size, "managed": v.managed,
                    "location": v.provider_location,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| {
                vec![
                    v.id.clone(),
                    v.project_id.clone(),
                    or_dash(v.display_name.as_deref()),
                    v.status.clone(),
                    format!("{}G", v.size),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["ID", "PROJECT", "NAME", "STATUS", "SIZE"], &rows)
        );
    }
    catalog.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let t = super::table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }
}
