//! What an operator scrapes (`GET /metrics`, Prometheus text format 0.0.4): requests by
//! route, method and status with their latency; jobs started and finished; the bytes
//! backups read, found new, deduplicated and stored; and, read from the catalog at
//! each scrape, the work queue, the catalog's pool and the live nodes. One registry
//! per process, cheap to clone.

use std::sync::Arc;

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use vbs_catalog::Catalog;

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    started: IntCounterVec,
    finished: IntCounterVec,
    backup_bytes: IntCounterVec,
    list_pages: IntCounterVec,
    queue: IntGaugeVec,
    oldest_queued: Gauge,
    pool: IntGaugeVec,
    nodes: IntGaugeVec,
    repo_objects: IntGaugeVec,
    repo_bytes: IntGaugeVec,
    repo_scanned: Gauge,
}

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` with the registry; names and labels are ours and valid, so a
/// failure is a programming error caught by the tests (the metric then goes unlisted).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "registering a metric");
    }
    metric
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let opts = Opts::new(name, help).namespace("vbs");
    register(
        registry,
        IntCounterVec::new(opts, labels).unwrap_or_else(|_| unreachable!("valid metric {name}")),
    )
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let opts = Opts::new(name, help).namespace("vbs");
    register(
        registry,
        IntGaugeVec::new(opts, labels).unwrap_or_else(|_| unreachable!("valid metric {name}")),
    )
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counters(
            &registry,
            "http_requests_total",
            "API requests answered, by route template, method and status.",
            &["route", "method", "status"],
        );
        let latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from a request's arrival to its answer.",
                )
                .namespace("vbs")
                // 1 ms to about 16 s.
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).unwrap_or_default()),
                &["route", "method"],
            )
            .unwrap_or_else(|_| unreachable!("valid histogram")),
        );
        let started = counters(
            &registry,
            "jobs_started_total",
            "Jobs a worker of this node started, by kind.",
            &["kind"],
        );
        let finished = counters(
            &registry,
            "jobs_finished_total",
            "Jobs a worker of this node finished, by kind and outcome.",
            &["kind", "outcome"],
        );
        let backup_bytes = counters(
            &registry,
            "backup_bytes_total",
            "Bytes of the backups this node wrote: read from volumes, new to the repository, \
             deduplicated (found in the parent or repeated), and stored after compression.",
            &["stage"],
        );
        let list_pages = counters(
            &registry,
            "list_pages_total",
            "Pages of the founding list (GET /backups) that kept pages served: \
             `kept` (unchanged since rendered, or rendered by a request it waited for) or \
             `rendered` (read from the catalog).",
            &["outcome"],
        );
        let queue = gauges(
            &registry,
            "job_queue",
            "Jobs in the catalog's queue, by state.",
            &["state"],
        );
        let oldest_queued = register(
            &registry,
            Gauge::with_opts(
                Opts::new(
                    "job_queue_oldest_age_seconds",
                    "Age of the oldest job waiting for a worker.",
                )
                .namespace("vbs"),
            )
            .unwrap_or_else(|_| unreachable!("valid gauge")),
        );
        let pool = gauges(
            &registry,
            "catalog_pool_connections",
            "Connections of this node's catalog pool, idle or in use.",
            &["state"],
        );
        let nodes = gauges(
            &registry,
            "node_up",
            "Nodes whose presence in the catalog is current, by name and roles.",
            &["node", "roles"],
        );
        let repo_objects = gauges(
            &registry,
            "repository_objects",
            "Objects in the backup repository by kind (packs, manifests), as this node's \
             last listing found them.",
            &["kind"],
        );
        let repo_bytes = gauges(
            &registry,
            "repository_bytes",
            "Bytes stored in the backup repository by kind (packs, manifests), as this \
             node's last listing found them.",
            &["kind"],
        );
        let repo_scanned = register(
            &registry,
            Gauge::with_opts(
                Opts::new(
                    "repository_scan_timestamp_seconds",
                    "When this node last listed the repository (Unix time; 0: not yet).",
                )
                .namespace("vbs"),
            )
            .unwrap_or_else(|_| unreachable!("valid gauge")),
        );
        Self(Arc::new(Inner {
            registry,
            requests,
            latency,
            started,
            finished,
            backup_bytes,
            list_pages,
            queue,
            oldest_queued,
            pool,
            nodes,
            repo_objects,
            repo_bytes,
            repo_scanned,
        }))
    }

    /// An answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.0
            .requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.0
            .latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    pub(crate) fn job_started(&self, kind: &str) {
        self.0.started.with_label_values(&[kind]).inc();
    }

    pub(crate) fn job_finished(&self, kind: &str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.0.finished.with_label_values(&[kind, outcome]).inc();
    }

    pub(crate) fn backup_bytes(&self, read: u64, new: u64, deduplicated: u64, stored: u64) {
        for (stage, n) in [
            ("read", read),
            ("new", new),
            ("deduplicated", deduplicated),
            ("stored", stored),
        ] {
            self.0.backup_bytes.with_label_values(&[stage]).inc_by(n);
        }
    }

    pub(crate) fn list_page(&self, rendered: bool) {
        let outcome = if rendered { "rendered" } else { "kept" };
        self.0.list_pages.with_label_values(&[outcome]).inc();
    }

    /// A listing of the repository: `(kind, objects, bytes)` for each kind.
    pub(crate) fn repository(&self, totals: &[(&str, u64, u64)]) {
        for (kind, objects, bytes) in totals {
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.0
                .repo_objects
                .with_label_values(&[kind])
                .set(clamp(*objects));
            self.0
                .repo_bytes
                .with_label_values(&[kind])
                .set(clamp(*bytes));
        }
        #[allow(clippy::cast_precision_loss)]
        self.0
            .repo_scanned
            .set(vbs_catalog::ts::now_micros() as f64 / 1e6);
    }

    /// The text a scrape gets, with the catalog's gauges read now.
    pub async fn render(&self, catalog: &Catalog) -> String {
        match catalog.queue_stats().await {
            Ok(q) => {
                self.0.queue.with_label_values(&["queued"]).set(q.queued);
                self.0.queue.with_label_values(&["running"]).set(q.running);
                #[allow(clippy::cast_precision_loss)]
                self.0
                    .oldest_queued
                    .set(q.oldest_queued_micros as f64 / 1e6);
            }
            Err(e) => tracing::warn!(error = %e, "reading the job queue for metrics"),
        }
        let (size, idle) = catalog.pool_stats();
        self.0
            .pool
            .with_label_values(&["idle"])
            .set(i64::from(idle));
        self.0
            .pool
            .with_label_values(&["in_use"])
            .set(i64::from(size.saturating_sub(idle)));
        match catalog.all_live_nodes().await {
            Ok(nodes) => {
                self.0.nodes.reset();
                for n in nodes {
                    self.0.nodes.with_label_values(&[&n.name, &n.roles]).set(1);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the nodes for metrics"),
        }
        TextEncoder::new()
            .encode_to_string(&self.0.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "encoding metrics");
                String::new()
            })
    }
}
