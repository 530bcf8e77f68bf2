//! Where a load's time goes: the pipeline's stages (the client's appends, the runner's
//! mailbox reads and commits) as the engine's own metrics record them, read from a
//! Prometheus recorder this process installs before any cluster starts.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use entlog_engine::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The stage histograms, with the size histogram that goes with each (if any).
const STAGES: &[(&str, &str, Option<&str>)] = &[
    ("append", m::APPEND_SECONDS, Some(m::MESSAGES_PER_APPEND)),
    ("read", m::READ_SECONDS, None),
    ("commit", m::COMMIT_SECONDS, Some(m::MESSAGES_PER_COMMIT)),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once; `None` if another one is installed already).
pub(crate) fn install() {
    HANDLE.get_or_init(|| {
        let names = STAGES
            .iter()
            .flat_map(|(_, seconds, size)| [Some(*seconds), *size])
            .flatten();
        // Histograms rather than summaries, so that `_sum` and `_count` only grow.
        let builder = names
            .into_iter()
            .try_fold(PrometheusBuilder::new(), |b, name| {
                b.set_buckets_for_metric(Matcher::Full(name.to_owned()), &[1.0])
            });
        builder.ok()?.install_recorder().ok()
    });
}

/// Every `_sum` and `_count` of the stage histograms, now.
#[derive(Default)]
pub(crate) struct Sample(HashMap<String, f64>);

impl Sample {
    pub(crate) fn now() -> Sample {
        let Some(Some(handle)) = HANDLE.get() else {
            return Sample::default();
        };
        let text = handle.render();
        Sample(
            text.lines()
                .filter(|l| l.starts_with("entlog_") && !l.contains('{'))
                .filter_map(|l| {
                    let (name, value) = l.split_once(' ')?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// Each stage between two samples `window` apart: calls per second, messages per call,
/// mean time per call, and the share of the window it was busy (over 100% when calls
/// overlap).
pub(crate) fn line(before: &Sample, after: &Sample, window: Duration) -> Option<String> {
    let secs = window.as_secs_f64();
    let parts: Vec<String> = STAGES
        .iter()
        .filter_map(|(stage, seconds, size)| {
            let calls =
                after.get(&format!("{seconds}_count")) - before.get(&format!("{seconds}_count"));
            if calls <= 0.0 {
                return None;
            }
            let busy = after.get(&format!("{seconds}_sum")) - before.get(&format!("{seconds}_sum"));
            let each = size
                .map(|size| {
                    let n = after.get(&format!("{size}_sum")) - before.get(&format!("{size}_sum"));
                    let c =
                        after.get(&format!("{size}_count")) - before.get(&format!("{size}_count"));
                    format!(" × {:.0} msgs", n / c.max(1.0))
                })
                .unwrap_or_default();
            Some(format!(
                "{stage} {:.0}/s{each}, {:.2} ms each, busy {:.0}%",
                calls / secs,
                busy / calls * 1e3,
                busy / secs * 100.0
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}
