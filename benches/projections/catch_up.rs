//! Scenario 2, the catch-up: one real `Projector` of `Totals` per shard, all
//! concurrently, `init()` then `step()` until idle (`run_projectors`, with its
//! `ProjectorRun` figures).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use entlog_journal::{AnyJournal, Journal};
use entlog_projections::{DynProjection, Projector, Step};

use crate::totals::Totals;

/// A catch-up by the real `Projector`s.
pub(crate) struct ProjectorRun {
    pub(crate) elapsed: Duration,
    /// Sum over the shards' tasks of their run time.
    pub(crate) task_time: Duration,
    pub(crate) steps: u64,
    pub(crate) events: u64,
    pub(crate) prep: Duration,
    pub(crate) sql: Duration,
    pub(crate) rows: u64,
}

/// One `Projector` per shard, all concurrently: `init()`, then `step()` until idle.
pub(crate) async fn run_projectors(j: &AnyJournal, p: &Arc<Totals>, batch: usize) -> ProjectorRun {
    let start = Instant::now();
    let tasks: Vec<_> = (0..j.shard_count())
        .map(|shard| {
            let j = j.clone();
            let p: Arc<dyn DynProjection> = p.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut projector = Projector::new(j, p, shard, batch);
                projector.init().await.unwrap();
                let (mut steps, mut events) = (0u64, 0u64);
                loop {
                    match projector.step().await.unwrap() {
                        Step::Idle => break,
                        Step::Applied { events: n, .. } => {
                            steps += 1;
                            events += n as u64;
                        }
                        other => panic!("shard {shard}: unexpected step {other:?}"),
                    }
                }
                (steps, events, started.elapsed())
            })
        })
        .collect();
    let (mut steps, mut events, mut task_time) = (0, 0, Duration::ZERO);
    for t in tasks {
        let (s, e, d) = t.await.unwrap();
        steps += s;
        events += e;
        task_time += d;
    }
    ProjectorRun {
        elapsed: start.elapsed(),
        task_time,
        steps,
        events,
        prep: p.prep(),
        sql: p.sql(),
        rows: p.rows.load(Ordering::Relaxed),
    }
}
