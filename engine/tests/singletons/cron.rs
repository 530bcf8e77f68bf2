//! The cron tests' every-second schedule, the message each tick sends to a counter (the
//! tick's whole second as its tag), and the ticks read back from the counter's history.

use entlog_engine::{Cluster, CronSchedule};
use entlog_journal::Timestamp;

use crate::common::{Cmd, check_history};

/// Ticks (whole seconds) applied to counter `id`, checking each was applied once.
pub(crate) async fn ticks(cluster: &Cluster, id: &str) -> Vec<u64> {
    check_history(cluster.journal(), id)
        .await
        .into_iter()
        .map(|e| e.tag)
        .collect()
}

pub(crate) fn every_second(name: &str) -> CronSchedule {
    CronSchedule::new(name, "* * * * * *").unwrap()
}

pub(crate) fn tick_message(t: Timestamp) -> Cmd {
    Cmd::Add {
        n: 1,
        tag: (t.as_micros() / 1_000_000) as u64,
    }
}
