//! `GET /metrics`: rowseal's metrics in the Prometheus text format.
//!
//! rowseal records through the `metrics` facade (key-provider calls by
//! operation and outcome, key-cache hits, misses and evictions, rows sealed
//! and opened, decryption failures by kind, operation durations: see
//! `docs/observability.md`); this module installs the Prometheus recorder as
//! the process's recorder, once, when the router is built, and renders it
//! on each scrape. Right before rendering, the key hierarchy publishes its
//! cache counters ([`KeyHierarchy::export_metrics`](rowseal::KeyHierarchy::export_metrics)),
//! so that every figure is exact to the scrape.
//!
//! No label holds a tenant id or a value, so the endpoint needs no tenant
//! and shows nothing of any clinic's data. It does show the app's workload:
//! expose it to the scraper only (here it is on the API's port, for the
//! example's sake).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Buckets of the duration histograms (`*_seconds`): from half a
/// millisecond (a cached key, a small row) to ten seconds (a KMS outage's
/// retries).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder: installed by the first call; `None` if another
/// `metrics` recorder was installed before (then this app serves no
/// metrics, and says so).
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder
/// (once: later calls, from a second router in the same process for
/// instance, return the same handle). `None` if the process already had
/// another recorder.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Fixed buckets, so that durations aggregate across instances
            // (the default is a summary per instance). Refused only for an
            // empty list.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            builder.install_recorder().ok()
        })
        .as_ref()
}

/// `GET /metrics`: every metric of the process, Prometheus text format
/// (503 if the process has another recorder than this module's).
pub async fn serve(State(st): State<AppState>) -> Response {
    let Some(handle) = install() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics: another recorder was installed in this process\n",
        )
            .into_response();
    };
    // The key caches' counters, up to this moment (a background sweep also
    // publishes them, about once a second).
    st.rowseal.keys().export_metrics();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
