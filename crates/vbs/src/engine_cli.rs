//! `vbs admin engine …`: the backup engine on its own, without the catalog or the API,
//! for benchmarks (bench/engine) and for operators inspecting a repository. Every
//! command prints one JSON object on stdout. An encrypted repository opens with the
//! master key in `VBS_REPOSITORY_KEY` (64 hex digits); with that set, a new repository
//! is encrypted, without it plaintext.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use vbs_engine::{BackupOptions, Engine, EngineOptions, Progress, RestoreOptions};
use vbs_repository::{Credentials, Store};

#[derive(Subcommand)]
pub enum EngineCommand {
    /// Back up a volume file or block device into a repository directory.
    Backup {
        #[arg(long)]
        /// Repository URL or directory (`docs/repository.md`, "Backends and URLs").
        repository: String,
        #[arg(long)]
        volume: PathBuf,
        /// Store only what this earlier backup does not already have.
        #[arg(long)]
        parent: Option<String>,
        /// Backup id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
    },
    /// Restore a backup onto a file (created if missing) or block device.
    Restore {
        #[arg(long)]
        /// Repository URL or directory (`docs/repository.md`, "Backends and URLs").
        repository: String,
        #[arg(long)]
        backup: String,
        #[arg(long)]
        target: PathBuf,
    },
    /// Re-read and re-hash stored backups (all when none is named).
    Verify {
        #[arg(long)]
        /// Repository URL or directory (`docs/repository.md`, "Backends and URLs").
        repository: String,
        backups: Vec<String>,
    },
    /// Remove a backup's manifest (its data goes at the next gc).
    Delete {
        #[arg(long)]
        /// Repository URL or directory (`docs/repository.md`, "Backends and URLs").
        repository: String,
        backup: String,
    },
    /// Delete packs no backup references.
    Gc {
        #[arg(long)]
        /// Repository URL or directory (`docs/repository.md`, "Backends and URLs").
        repository: String,
    },
}

/// Where the engine's master key comes from.
pub enum Keys<'a> {
    /// The service's configuration (its key file or `VBS_REPOSITORY_KEY`); never
    /// creates keys.
    Config(&'a crate::config::Config),
    /// `VBS_REPOSITORY_KEY`, or none: plaintext.
    Env,
}

async fn engine(repository: &str, creds: &Credentials, keys: &Keys<'_>) -> anyhow::Result<Engine> {
    let store = Store::open(repository, creds).await.with_context(|| {
        format!(
            "opening repository {}",
            crate::config::redact_url(repository)
        )
    })?;
    let options = EngineOptions::for_store(&store);
    let encryption = match keys {
        Keys::Config(config) => config.encryption(&store, false).await?,
        Keys::Env => match std::env::var("VBS_REPOSITORY_KEY") {
            Ok(hex) => vbs_engine::Encryption::Key(
                vbs_engine::MasterKey::from_hex(&hex)
                    .map_err(|e| anyhow::anyhow!("VBS_REPOSITORY_KEY: {e}"))?,
            ),
            Err(_) => vbs_engine::Encryption::Off,
        },
    };
    Ok(Engine::open(store, options, &encryption).await?)
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Runs one command; credentials for a network repository come from `creds`, then the
/// environment.
pub async fn run(command: EngineCommand, creds: Credentials, keys: Keys<'_>) -> anyhow::Result<()> {
    let creds = creds.with_env();
    match command {
        EngineCommand::Backup {
            repository,
            volume,
            parent,
            id,
        } => {
            let progress = Arc::new(Progress::default());
            let shown = crate::progress::bytes("backup", progress.clone());
            let result = engine(&repository, &creds, &keys)
                .await?
                .backup(BackupOptions {
                    backup_id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    source: volume,
                    parent,
                    progress,
                    cancel: Arc::default(),
                })
                .await;
            shown.finish(if result.is_ok() { "done" } else { "failed" });
            print(&result?)
        }
        EngineCommand::Restore {
            repository,
            backup,
            target,
        } => {
            let progress = Arc::new(Progress::default());
            let shown = crate::progress::bytes("restore", progress.clone());
            let result = engine(&repository, &creds, &keys)
                .await?
                .restore(RestoreOptions {
                    backup_id: backup,
                    target,
                    progress,
                    cancel: Arc::default(),
                })
                .await;
            shown.finish(if result.is_ok() { "done" } else { "failed" });
            print(&result?)
        }
        EngineCommand::Verify {
            repository,
            mut backups,
        } => {
            let engine = engine(&repository, &creds, &keys).await?;
            if backups.is_empty() {
                backups = engine.backups().await?;
                backups.sort();
            }
            let mut damaged = Vec::new();
            let mut reports = Vec::new();
            let shown = crate::progress::items("verify", backups.len() as u64);
            for id in backups {
                shown.step(&id);
                let report = match engine.verify(&id).await {
                    Ok(r) => r,
                    Err(vbs_engine::EngineError::NotFound(_)) => vbs_engine::VerifyReport {
                        id: id.clone(),
                        damage: vec!["not in the repository".into()],
                        ..vbs_engine::VerifyReport::default()
                    },
                    Err(e) => return Err(e.into()),
                };
                if !report.is_intact() {
                    damaged.push(id.clone());
                }
                reports.push(report);
            }
            shown.finish(&format!(
                "{} checked, {} damaged",
                reports.len(),
                damaged.len()
            ));
            print(&serde_json::json!({"damaged": damaged, "reports": reports}))?;
            if damaged.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("damaged backups: {}", damaged.join(", "))
            }
        }
        EngineCommand::Delete { repository, backup } => {
            engine(&repository, &creds, &keys)
                .await?
                .delete_backup(&backup)
                .await?;
            print(&serde_json::json!({"deleted": backup}))
        }
        EngineCommand::Gc { repository } => {
            let engine = engine(&repository, &creds, &keys).await?;
            let shown = crate::progress::spinner("gc");
            let result = engine.gc().await;
            shown.finish(if result.is_ok() { "swept" } else { "failed" });
            print(&result?)
        }
    }
}
