//! Scenario 4, where a step's time goes: `run_phases`, a hand-rolled copy of
//! `Projector::step` with each phase timed (summed into `Phases`), and `run_read_only`,
//! the journal read alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{AnyJournal, Entry, EntryKind, Journal, Shard};
use entlog_projections::{Projection, checkpoint_name};

use crate::totals::Totals;

/// Time per phase of a step, summed over the shards.
#[derive(Default, Clone, Copy)]
pub(crate) struct Phases {
    pub(crate) cursor: Duration,
    pub(crate) read: Duration,
    pub(crate) begin: Duration,
    pub(crate) apply: Duration,
    pub(crate) checkpoint: Duration,
    pub(crate) commit: Duration,
    pub(crate) steps: u64,
    pub(crate) events: u64,
}

impl Phases {
    fn add(&mut self, o: &Phases) {
        self.cursor += o.cursor;
        self.read += o.read;
        self.begin += o.begin;
        self.apply += o.apply;
        self.checkpoint += o.checkpoint;
        self.commit += o.commit;
        self.steps += o.steps;
        self.events += o.events;
    }

    pub(crate) fn total(&self) -> Duration {
        self.cursor + self.read + self.begin + self.apply + self.checkpoint + self.commit
    }
}

/// A copy of `Projector::step`'s sequence built from the public API, each phase timed:
/// read the checkpoint, `read_shard`, begin, apply, compare-and-set the checkpoint, commit;
/// on `shards`, concurrently. With `reread` false the checkpoint is read once and then kept
/// in memory (the compare-and-set still guards it): what the per-step read costs.
pub(crate) async fn run_phases(
    j: &AnyJournal,
    p: &Arc<Totals>,
    batch: usize,
    shards: &[Shard],
    reread: bool,
) -> (Duration, Phases) {
    let start = Instant::now();
    let tasks: Vec<_> = shards
        .iter()
        .map(|&shard| {
            let (j, p) = (j.clone(), p.clone());
            tokio::spawn(async move {
                let consumer = checkpoint_name(&p.name);
                let mut tx = j.begin().await.unwrap();
                tx.ensure_checkpoint(&consumer, shard).await.unwrap();
                tx.commit().await.unwrap();
                let mut known: Option<u64> = None;
                let mut ph = Phases::default();
                loop {
                    let t0 = Instant::now();
                    let from = match known {
                        Some(at) if !reread => at,
                        _ => j.cursor(&consumer, shard).await.unwrap(),
                    };
                    let t1 = Instant::now();
                    let entries = j
                        .read_shard(shard, from, batch, Some(EntryKind::Event))
                        .await
                        .unwrap();
                    let t2 = Instant::now();
                    ph.cursor += t1 - t0;
                    ph.read += t2 - t1;
                    let Some(last) = entries.last().map(|e| e.offset) else {
                        break;
                    };
                    let wanted: Vec<Entry> = entries
                        .into_iter()
                        .filter(|e| Projection::wants(&*p, e.entity.entity_type()))
                        .collect();
                    let mut tx = j.begin().await.unwrap();
                    let t3 = Instant::now();
                    Projection::apply(&*p, &mut tx, &wanted).await.unwrap();
                    let t4 = Instant::now();
                    tx.move_checkpoint(&consumer, shard, from, last)
                        .await
                        .unwrap();
                    let t5 = Instant::now();
                    tx.commit().await.unwrap();
                    let t6 = Instant::now();
                    ph.begin += t3 - t2;
                    ph.apply += t4 - t3;
                    ph.checkpoint += t5 - t4;
                    ph.commit += t6 - t5;
                    known = Some(last);
                    ph.steps += 1;
                    ph.events += wanted.len() as u64;
                }
                ph
            })
        })
        .collect();
    let mut phases = Phases::default();
    for t in tasks {
        phases.add(&t.await.unwrap());
    }
    (start.elapsed(), phases)
}

/// The journal read alone: every shard read in pages of `batch` events, concurrently.
pub(crate) async fn run_read_only(j: &AnyJournal, batch: usize) -> (Duration, u64) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..j.shard_count())
        .map(|shard| {
            let j = j.clone();
            tokio::spawn(async move {
                let (mut after, mut n) = (0u64, 0u64);
                loop {
                    let page = j
                        .read_shard(shard, after, batch, Some(EntryKind::Event))
                        .await
                        .unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.offset;
                    n += page.len() as u64;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    (start.elapsed(), n)
}
