//! `vbs`: the volume backup service. `vbs serve` runs the API (and, as they arrive, the
//! workers and the scheduler); `vbs admin …` holds operator tools.

mod admin;
mod config;
mod engine_cli;
mod gc;
mod progress;
mod serve;

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{AuthMode, Config, Flags};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vbs",
    version,
    about = "Volume backup service (OpenStack Cinder v3 backups API)"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "VBS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API service.
    Serve {
        /// Address to listen on (default 127.0.0.1:8776; port 0 picks a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (default ./vbs-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Catalog URL: sqlite://PATH or postgres://… (default: SQLite in the data dir).
        #[arg(long)]
        catalog: Option<String>,
        /// How requests are authenticated.
        #[arg(long, value_enum)]
        auth: Option<AuthMode>,
        /// What this node does: api, worker, scheduler, comma-separated (default all).
        #[arg(long)]
        role: Option<String>,
        /// Backup repository: a directory or URL (file://, swift+tempauth://,
        /// swift+keystone://, s3://); credentials come from the configuration file or
        /// the environment, never from the command line.
        #[arg(long)]
        repository: Option<String>,
    },
    /// Operator tools.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// One project's (or every project's) records.
    List {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        catalog: Option<String>,
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// JSON instead of columns.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Import Cinder backup records (JSON lines) into the catalog, all or nothing.
    ImportBackups {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        catalog: Option<String>,
        /// JSON lines file, one Cinder `backups` row a line.
        file: PathBuf,
    },
    /// Re-read and re-hash stored backups (all when none is named); print what is
    /// damaged and exit non-zero if anything is.
    Verify {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The repository URL or directory (default: the configuration's).
        #[arg(long)]
        repository: Option<String>,
        backups: Vec<String>,
    },
    /// Sweep the repository of packs no backup needs, under the catalog's repository
    /// lock (safe while backups run on any node).
    Gc {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        catalog: Option<String>,
    },
    /// Rewrap the repository's data keys under a new master key (no data is
    /// rewritten). Afterwards every node must be given the new key (its key file or
    /// `VBS_REPOSITORY_KEY`); running nodes go on with the keys they hold.
    RotateKey {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new master key: a file of 64 hex digits.
        #[arg(long)]
        new_key_file: PathBuf,
        /// Create `NEW_KEY_FILE` with a new random key (mode 0600) first.
        #[arg(long)]
        generate: bool,
    },
    /// Live nodes, the work queue and running jobs, as the catalog says.
    Status {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        catalog: Option<String>,
        /// JSON instead of columns.
        #[arg(long)]
        json: bool,
    },
    /// Backups in the catalog, newest first.
    Backups {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Volumes in the catalog, newest first.
    Volumes {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// The backup engine on its own, on a repository directory (benchmarks, inspection).
    Engine {
        #[command(subcommand)]
        command: engine_cli::EngineCommand,
    },
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        config::LogFormat::Text => fmt.init(),
        // The request span's fields (id, project, user, route) ride on every line.
        config::LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The configuration of a command that reads the catalog; logs go to stderr (warnings
/// only unless `RUST_LOG` says otherwise), so stdout stays the command's output.
fn catalog_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    catalog: Option<String>,
) -> anyhow::Result<Config> {
    let flags = Flags {
        data_dir,
        catalog,
        ..Flags::default()
    };
    let mut config = Config::load(file, &flags)?;
    "warn".clone_into(&mut config.log);
    init_logging(&config);
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One TLS provider for every HTTPS client in the process (Keystone, object stores).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            catalog,
            auth,
            role,
            repository,
        } => {
            let flags = Flags {
                listen,
                data_dir,
                catalog,
                auth,
                role,
                repository,
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            init_logging(&config);
            let jobs = serve::jobs_runtime(config.worker_nice)?;
            let handle = jobs.handle().clone();
            let served = runtime.block_on(async {
                // Only API nodes listen.
                let listener = if config.roles()?.api {
                    Some(
                        tokio::net::TcpListener::bind(config.listen)
                            .await
                            .with_context(|| format!("binding {}", config.listen))?,
                    )
                } else {
                    None
                };
                serve::run(config, listener, handle, serve::shutdown_signal()).await
            });
            jobs.shutdown_timeout(std::time::Duration::from_secs(5));
            served
        }
        Command::Admin {
            command:
                AdminCommand::ImportBackups {
                    data_dir,
                    catalog,
                    file,
                },
        } => {
            let flags = Flags {
                data_dir,
                catalog,
                ..Flags::default()
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            init_logging(&config);
            runtime.block_on(import_backups(&config, &file))
        }
        Command::Admin {
            command:
                AdminCommand::Verify {
                    data_dir,
                    repository,
                    backups,
                },
        } => {
            let flags = Flags {
                data_dir,
                ..Flags::default()
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            init_logging(&config);
            let repository = repository.unwrap_or_else(|| config.repository_url());
            runtime.block_on(engine_cli::run(
                engine_cli::EngineCommand::Verify {
                    repository,
                    backups,
                },
                config.repository_credentials.clone().unwrap_or_default(),
                engine_cli::Keys::Config(&config),
            ))
        }
        Command::Admin {
            command:
                AdminCommand::Status {
                    data_dir,
                    catalog,
                    json,
                },
        } => {
            let config = catalog_config(cli.config.as_deref(), data_dir, catalog)?;
            runtime.block_on(admin::status(&config, json))
        }
        Command::Admin {
            command:
                AdminCommand::Backups {
                    command:
                        ListCommand::List {
                            data_dir,
                            catalog,
                            project,
                            limit,
                            json,
                        },
                },
        } => {
            let config = catalog_config(cli.config.as_deref(), data_dir, catalog)?;
            runtime.block_on(admin::backups(&config, project.as_deref(), limit, json))
        }
        Command::Admin {
            command:
                AdminCommand::Volumes {
                    command:
                        ListCommand::List {
                            data_dir,
                            catalog,
                            project,
                            limit,
                            json,
                        },
                },
        } => {
            let config = catalog_config(cli.config.as_deref(), data_dir, catalog)?;
            runtime.block_on(admin::volumes(&config, project.as_deref(), limit, json))
        }
        Command::Admin {
            command: AdminCommand::Gc { data_dir, catalog },
        } => {
            let flags = Flags {
                data_dir,
                catalog,
                ..Flags::default()
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            init_logging(&config);
            runtime.block_on(gc::run(&config))
        }
        Command::Admin {
            command:
                AdminCommand::RotateKey {
                    data_dir,
                    new_key_file,
                    generate,
                },
        } => {
            let flags = Flags {
                data_dir,
                ..Flags::default()
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            init_logging(&config);
            runtime.block_on(rotate_key(&config, &new_key_file, generate))
        }
        Command::Admin {
            command: AdminCommand::Engine { command },
        } => {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            runtime.block_on(engine_cli::run(
                command,
                vbs_repository::Credentials::default(),
                engine_cli::Keys::Env,
            ))
        }
    }
}

async fn rotate_key(config: &Config, file: &std::path::Path, generate: bool) -> anyhow::Result<()> {
    let new = if generate {
        let key = vbs_engine::MasterKey::generate();
        config::write_key_file(file, &key)?;
        key
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading key file {}", file.display()))?;
        vbs_engine::MasterKey::from_hex(&text)
            .map_err(|e| anyhow::anyhow!("key file {}: {e}", file.display()))?
    };
    let engine = config
        .open_engine(Some(vbs_engine::EngineOptions::default()), None)
        .await?;
    let location = engine.store().location();
    if !engine.is_encrypted() {
        anyhow::bail!("repository {location} is not encrypted: it has no keys to rewrap");
    }
    engine.rotate_master_key(&new).await?;
    // Read back: the repository now opens with the new key.
    vbs_engine::Engine::open(
        engine.store().clone(),
        vbs_engine::EngineOptions::default(),
        &vbs_engine::Encryption::Key(new.clone()),
    )
    .await?;
    println!(
        "repository {location}: keys rewrapped under the master key {} ({}); give every node \
         that key (repository_key_file or VBS_REPOSITORY_KEY) and keep a copy of it apart \
         from the repository",
        new.fingerprint(),
        file.display()
    );
    Ok(())
}

async fn import_backups(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let open = || std::fs::File::open(file).with_context(|| format!("opening {}", file.display()));
    // Counting lines first lets the catalog choose between row-by-row and bulk loading.
    let lines = {
        use std::io::BufRead as _;
        let mut n = 0u64;
        let mut reader = BufReader::with_capacity(1 << 20, open()?);
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
            let len = buf.len();
            reader.consume(len);
        }
        n
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let started = Instant::now();
    let shown = progress::spinner("import-backups");
    let result = vbs_catalog::Catalog::import_backups(
        &config.catalog_options(),
        BufReader::with_capacity(1 << 20, open()?),
        lines,
    )
    .await;
    shown.finish(if result.is_ok() { "done" } else { "failed" });
    let stats = result.with_context(|| format!("importing {}", file.display()))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} backups in {:.2} s ({:.0} records/s{})",
        stats.records,
        secs,
        stats.records as f64 / secs.max(1e-9),
        if stats.bulk { ", indexes rebuilt" } else { "" }
    );
    Ok(())
}
