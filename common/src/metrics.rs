//! The Prometheus `/metrics` endpoint.
//!
//! [`install_prometheus_with_labels`] installs the process-wide `metrics`
//! recorder (exporter built without its HTTP listener and push gateway,
//! which would pull in aws-lc-rs); the binaries serve [`render`] from their
//! own axum router (or mount [`router`]) and must run [`spawn_upkeep`].
//!
//! Histograms whose name ends in `_seconds` are rendered as real Prometheus
//! histograms with [`SECONDS_BUCKETS`]; other histograms render as
//! summaries.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Gauge: connections a listener holds now (TLS handshakes included).
/// Label [`LISTENER`].
pub const LISTENER_CONNECTIONS: &str = "tcf_listener_connections";
/// Gauge: a listener's effective connection cap (its default clamped to the
/// process's open-file budget). Label [`LISTENER`].
pub const LISTENER_CAP: &str = "tcf_listener_connection_cap";
/// Counter: connections accepted and closed at once because the listener
/// held its cap. Label [`LISTENER`].
pub const LISTENER_REFUSED: &str = "tcf_listener_refused_total";
/// Counter: connections dropped by a timeout. Labels [`LISTENER`] and
/// [`KIND`]: `handshake` (TLS), `header` (request head, or an idle
/// keep-alive connection), `body` (request body).
pub const LISTENER_TIMEOUTS: &str = "tcf_listener_timeouts_total";
/// Counter: failed `accept` calls (e.g. `EMFILE`: out of file descriptors),
/// each followed by a short backoff. Label [`LISTENER`].
pub const LISTENER_ACCEPT_ERRORS: &str = "tcf_listener_accept_errors_total";
/// Label: which listener, `http` or `grpc`.
pub const LISTENER: &str = "listener";
/// Label: what kind (of timeout).
pub const KIND: &str = "kind";

/// The Prometheus text format content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Bucket bounds (seconds) for every histogram named `*_seconds`: 1 ms to
/// 5 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often [`spawn_upkeep`] runs the recorder's upkeep.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Building or installing failed, e.g. another (non-tcf) recorder is
    /// already installed in this process.
    #[error("cannot install the Prometheus recorder: {0}")]
    Install(#[from] BuildError),
}

static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// [`install_prometheus_with_labels`] without global labels.
pub fn install_prometheus() -> Result<PrometheusHandle, MetricsError> {
    install_prometheus_with_labels(&BTreeMap::new())
}

/// Installs the process-wide Prometheus recorder with `labels` (the config's
/// `metrics_labels`, e.g. `{dc: msk}`) added to every metric, and returns
/// its handle. Spawns nothing.
///
/// Installing happens once per process: later calls return a handle to the
/// recorder already installed (their `labels` are ignored).
pub fn install_prometheus_with_labels(
    labels: &BTreeMap<String, String>,
) -> Result<PrometheusHandle, MetricsError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?;
    for (k, v) in labels {
        builder = builder.add_global_label(k, v);
    }
    let handle = builder.install_recorder()?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// Spawns a tokio task that runs `handle.run_upkeep()` every
/// [`UPKEEP_INTERVAL`] (drains histogram buffers; required when the
/// exporter's own listener is not used). Must be called inside a tokio
/// runtime; abort the returned task to stop it.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// The scrape response: status 200, [`CONTENT_TYPE`], the rendered metrics.
pub fn render(handle: &PrometheusHandle) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        handle.render(),
    )
        .into_response()
}

/// A router serving `GET /metrics` with [`render`], to merge into a
/// binary's HTTP router.
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route("/metrics", get(move || async move { render(&handle) }))
}
