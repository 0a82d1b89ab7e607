//! What the network backends share: one HTTP client per store (used for our own auth
//! calls and, as `OpenDAL`'s transport, for every object request), the retry and timeout
//! layers, and a small retry loop for the requests `OpenDAL` does not make.

use std::sync::Once;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{HttpTransporter, OperationContext, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use crate::StoreError;

/// Time allowed for one whole object request (an 18 MiB pack at a few hundred kB/s).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_mins(2);
/// Time allowed for one read or write of a body piece without progress.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts after the first for a request that failed in a way a retry may cure
/// (5xx, timeout, connection error): with backoff 0.2, 0.4, 0.8, 1.6, 3.2 s (jittered),
/// about 6 s in all before the error is reported.
pub(crate) const RETRIES: usize = 5;
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Installs ring as rustls's process-wide provider (unless the binary installed one
/// already) and `OpenDAL`'s default reqwest transport; both once per process.
pub(crate) fn init_tls() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
    });
}

/// The HTTP client of one store.
pub(crate) fn client() -> Result<reqwest::Client, StoreError> {
    init_tls();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_mins(1))
        .user_agent(concat!("vbs-repository/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// `op` sending through `client`, each request bounded by a timeout and retried with
/// exponential backoff when the error is temporary. The retry layer sits outside the
/// timeout layer, so a request that timed out is retried too.
pub(crate) fn layered(op: Operator, client: &reqwest::Client) -> Operator {
    let transport = HttpTransporter::new(ReqwestTransport::new(client.clone()));
    op.with_context(OperationContext::new().with_http_transport(transport))
        .layer(
            TimeoutLayer::new()
                .with_timeout(REQUEST_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        )
        .layer(
            RetryLayer::new()
                .with_max_times(RETRIES)
                .with_min_delay(MIN_BACKOFF)
                .with_max_delay(MAX_BACKOFF)
                .with_factor(2.0)
                .with_jitter(),
        )
}

/// Sends the request `build` makes, again after a backoff when it could not be sent,
/// timed out or got a 5xx, up to [`RETRIES`] more times. `what` names the request in
/// errors (never with credentials).
pub(crate) async fn send(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, StoreError> {
    let mut delay = MIN_BACKOFF;
    let mut attempt = 0;
    loop {
        let result = build().timeout(REQUEST_TIMEOUT).send().await;
        let retry = match &result {
            Ok(resp) => resp.status().is_server_error(),
            Err(e) => e.is_connect() || e.is_timeout() || e.is_request(),
        };
        if !retry || attempt == RETRIES {
            return match result {
                Ok(resp) => Ok(resp),
                Err(e) => Err(StoreError::Remote {
                    message: format!("{what}: {}", chain(&e)),
                    retryable: true,
                }),
            };
        }
        attempt += 1;
        tracing::debug!(what, attempt, "retrying after a failed request");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// An error and its sources on one line ("a: b: c").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
