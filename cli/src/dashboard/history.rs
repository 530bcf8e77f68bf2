//! Throughput and backlog over the last minutes: the journal's totals sampled at a fixed
//! interval while the dashboard runs, kept in a ring.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

/// How often the totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Samples kept: ten minutes' worth.
const KEPT: usize = 300;

/// One reading of the journal's totals.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the Unix epoch, on the journal's clock.
    at: f64,
    /// Messages and events committed, over all shards.
    entries: u64,
    /// Messages not yet handled, over all shards.
    backlog: u64,
    /// Events not yet applied, over all projections.
    projection_lag: u64,
}

/// The samples of the last minutes, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds the totals read from a `status` report.
    pub(crate) fn record(&mut self, at: f64, status: &Value) {
        let sum = |list: &str, field: &str| -> u64 {
            status[list]
                .as_array()
                .map_or(0, |l| l.iter().filter_map(|x| x[field].as_u64()).sum())
        };
        if self.samples.len() == KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at,
            entries: sum("shards", "head"),
            backlog: sum("shards", "backlog"),
            projection_lag: sum("projections", "lag_events"),
        });
    }

    /// The samples as JSON, each with the entries committed per second since the one
    /// before.
    pub(crate) fn to_json(&self) -> Value {
        let mut previous: Option<&Sample> = None;
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                let rate = previous.filter(|p| s.at > p.at).map_or(0.0, |p| {
                    s.entries.saturating_sub(p.entries) as f64 / (s.at - p.at)
                });
                previous = Some(s);
                json!({
                    "at": s.at,
                    "entries": s.entries,
                    "entries_per_second": rate,
                    "backlog": s.backlog,
                    "projection_lag": s.projection_lag,
                })
            })
            .collect();
        json!({
            "interval_seconds": SAMPLE_EVERY.as_secs_f64(),
            "samples": samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_heads_and_the_ring_keeps_ten_minutes() {
        let mut h = History::default();
        let status = |heads: &[u64], backlog: u64| {
            json!({
                "shards": heads.iter().map(|h| json!({"head": h, "backlog": backlog})).collect::<Vec<_>>(),
                "projections": [{"lag_events": 3}, {"lag_events": 4}],
            })
        };
        h.record(100.0, &status(&[10, 20], 1));
        h.record(102.0, &status(&[30, 40], 0));
        let j = h.to_json();
        let s = j["samples"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["entries_per_second"], 0.0);
        assert_eq!(s[1]["entries"], 70);
        assert_eq!(s[1]["entries_per_second"], 20.0);
        assert_eq!(s[0]["backlog"], 2);
        assert_eq!(s[1]["projection_lag"], 7);
        for i in 0..KEPT as u64 + 5 {
            h.record(200.0 + i as f64, &status(&[i], 0));
        }
        assert_eq!(h.samples.len(), KEPT);
        assert_eq!(h.samples.front().map(|s| s.entries), Some(5));
    }
}
