//! The Prometheus endpoint of a cluster member, turned on by `Config::metrics_addr`.
//!
//! The endpoint answers every `GET` (by convention `http://ADDR/metrics`) with the
//! Prometheus text format of every metric in [`crate::metrics`] and
//! `entlog_projections::metrics`. It runs as a task on the cluster's tokio runtime and
//! stops with [`Cluster::shutdown`](crate::Cluster::shutdown), which frees the address.
//!
//! # One recorder per process
//!
//! The `metrics` facade has a single global recorder that can never be removed. The first
//! member started with a `metrics_addr` installs it; a second one in the same process,
//! even after the first shut down, gets [`EngineError::Metrics`]. Members without a
//! `metrics_addr` record into whatever recorder is installed, so several members of one
//! process can share the endpoint of the one that has it.
//!
//! # Tasks that outlive shutdown
//!
//! Building the exporter spawns the crate's upkeep task (it drains histogram samples
//! every few seconds) with no handle to stop it. It keeps running after shutdown, as it
//! must while the global recorder lives; if the build fails after spawning it (address
//! taken), that small task idles until the runtime ends.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::EngineError;
use crate::metrics as m;

/// Bucket bounds (seconds) of `entlog_processing_latency_seconds`, so it is exported as
/// a Prometheus histogram (aggregatable across runners) rather than a summary. From half
/// a millisecond (an in-memory handler on SQLite) to the default ask timeout of 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `entlog_messages_per_commit` and `entlog_messages_per_append`: one message
/// up to a runner's worth of full batches.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0,
];

/// Bucket bounds (seconds) of the pipeline's stages (`entlog_append_seconds`,
/// `entlog_read_seconds`, `entlog_commit_seconds`): from a tenth of a millisecond (a small
/// SQLite transaction) to seconds (a commit waiting on locks or a slow disk).
const STAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The histograms exported with buckets, and theirs.
const BUCKETS: &[(&str, &[f64])] = &[
    (m::PROCESSING_LATENCY, LATENCY_BUCKETS),
    (m::MESSAGES_PER_COMMIT, BATCH_SIZE_BUCKETS),
    (m::MESSAGES_PER_APPEND, BATCH_SIZE_BUCKETS),
    (m::APPEND_SECONDS, STAGE_BUCKETS),
    (m::READ_SECONDS, STAGE_BUCKETS),
    (m::COMMIT_SECONDS, STAGE_BUCKETS),
];

/// Installs the Prometheus recorder as the process's global recorder and serves it on
/// `addr` until `shutdown` turns true. Binds before installing, so a taken address
/// leaves no recorder behind.
pub(crate) fn serve(
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, EngineError> {
    let fail = |reason: String| EngineError::Metrics { addr, reason };
    let (recorder, exporter) = BUCKETS
        .iter()
        .try_fold(
            PrometheusBuilder::new().with_http_listener(addr),
            |b, (name, buckets)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            },
        )
        .and_then(PrometheusBuilder::build)
        .map_err(|e| fail(e.to_string()))?;
    // On failure the recorder and the exporter (with its bound socket) are dropped here.
    metrics::set_global_recorder(recorder)
        .map_err(|_| fail("a metrics recorder is already installed in this process".into()))?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            result = exporter => {
                if let Err(e) = result {
                    tracing::error!(%addr, error = ?e, "the metrics endpoint stopped");
                }
            }
            // Dropping the exporter closes its listener.
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }))
}
