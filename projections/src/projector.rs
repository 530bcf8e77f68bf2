//! The projector: folds one shard's events into one projection, checkpointed.
//!
//! ```text
//!   read events after the checkpoint ──► in one transaction: move the checkpoint
//!   (compare-and-set) ──► apply the wanted events ──► commit
//! ```
//!
//! The read-model writes and the checkpoint move commit together, and the checkpoint
//! only moves from where this projector read it, so an event is applied exactly once
//! even if two projectors of a shard overlap for a moment (after a failover): the second
//! commit finds the checkpoint moved and rolls back. A failing `apply` is narrowed down to
//! the one event that fails; the projector stops there, records the error, and retries
//! with back-off — it never skips.

use std::sync::Arc;
use std::time::Duration;

use entlog_journal::{AnyJournal, Entry, EntryKind, Journal, JournalError, Shard};
use tokio::sync::watch;

use crate::errors;
use crate::projection::{DynProjection, ProjectionError, checkpoint_name};

/// What one step of a projector did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Nothing new past the checkpoint.
    Idle,
    /// The checkpoint moved to `to`, applying `events` events.
    Applied {
        /// The new checkpoint.
        to: u64,
        /// Events applied.
        events: usize,
    },
    /// Another projector moved the checkpoint first; nothing was applied by this one.
    Raced,
    /// The event at `offset` failed; everything before it is applied.
    Failed {
        /// The failing event's offset.
        offset: u64,
        /// Why.
        error: String,
    },
}

/// Folds one shard into one projection.
pub struct Projector {
    journal: AnyJournal,
    projection: Arc<dyn DynProjection>,
    shard: Shard,
    batch: usize,
    consumer: String,
    failing: bool,
}

enum Attempt {
    Done,
    Raced,
    Failed(ProjectionError),
}

impl Projector {
    /// A projector of `projection` over `shard`, reading `batch` entries at a time.
    pub fn new(
        journal: AnyJournal,
        projection: Arc<dyn DynProjection>,
        shard: Shard,
        batch: usize,
    ) -> Self {
        let consumer = checkpoint_name(projection.name());
        Projector {
            journal,
            projection,
            shard,
            batch: batch.max(1),
            consumer,
            // A failure may have been recorded by an earlier projector of this shard:
            // the first success clears it.
            failing: true,
        }
    }

    /// Makes sure the checkpoint row exists (at 0).
    pub async fn init(&self) -> Result<(), JournalError> {
        let mut tx = self.journal.begin().await?;
        tx.ensure_checkpoint(&self.consumer, self.shard).await?;
        tx.commit().await
    }

    /// Applies the next batch of events past the checkpoint.
    pub async fn step(&mut self) -> Result<Step, JournalError> {
        let from = self.journal.cursor(&self.consumer, self.shard).await?;
        let entries = self
            .journal
            .read_shard(self.shard, from, self.batch, Some(EntryKind::Event))
            .await?;
        let Some(last) = entries.last().map(|e| e.offset) else {
            return Ok(Step::Idle);
        };
        let wanted: Vec<Entry> = entries
            .into_iter()
            .filter(|e| self.projection.wants(e.entity.entity_type()))
            .collect();
        match self.attempt(from, last, &wanted).await? {
            Attempt::Done => {
                self.recovered().await;
                return Ok(Step::Applied {
                    to: last,
                    events: wanted.len(),
                });
            }
            Attempt::Raced => return Ok(Step::Raced),
            Attempt::Failed(_) if wanted.len() > 1 => {}
            Attempt::Failed(e) => {
                let offset = wanted.first().map_or(last, |e| e.offset);
                return self.failed(offset, e).await;
            }
        }
        // The batch failed: apply event by event to find the one that fails.
        let mut at = from;
        for event in &wanted {
            match self
                .attempt(at, event.offset, std::slice::from_ref(event))
                .await?
            {
                Attempt::Done => at = event.offset,
                Attempt::Raced => return Ok(Step::Raced),
                Attempt::Failed(e) => return self.failed(event.offset, e).await,
            }
        }
        Ok(Step::Applied {
            to: at,
            events: wanted.len(),
        })
    }

    /// One transaction: move the checkpoint from `from` to `to`, apply `events`.
    ///
    /// The checkpoint moves first: its row lock is then taken before any read-model row,
    /// in the same order as `rebuild`, so the two wait for each other
    /// instead of deadlocking, and a rebuild that reset the checkpoint meanwhile is seen
    /// before anything is applied.
    async fn attempt(&self, from: u64, to: u64, events: &[Entry]) -> Result<Attempt, JournalError> {
        let mut tx = self.journal.begin().await?;
        match tx
            .move_checkpoint(&self.consumer, self.shard, from, to)
            .await
        {
            Ok(()) => {}
            Err(JournalError::CheckpointMoved { .. }) => {
                tx.rollback().await?;
                return Ok(Attempt::Raced);
            }
            Err(e) => return Err(e),
        }
        if !events.is_empty()
            && let Err(e) = self.projection.apply(&mut tx, events).await
        {
            tx.rollback().await?;
            return Ok(Attempt::Failed(e));
        }
        tx.commit().await?;
        Ok(Attempt::Done)
    }

    async fn failed(&mut self, offset: u64, e: ProjectionError) -> Result<Step, JournalError> {
        let error = e.to_string();
        tracing::error!(projection = self.projection.name(), shard = self.shard, offset, %error, "projection stopped at an event");
        metrics::counter!(crate::metrics::PROJECTION_FAILURES, "projection" => self.projection.name().to_owned())
            .increment(1);
        errors::record(
            &self.journal,
            self.projection.name(),
            self.shard,
            offset,
            &error,
        )
        .await?;
        self.failing = true;
        Ok(Step::Failed { offset, error })
    }

    async fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            if let Err(e) = errors::clear(&self.journal, self.projection.name(), self.shard).await {
                tracing::warn!(error = %e, "could not clear a projection's recorded failure");
            }
        }
    }

    /// Runs until `stop` turns true: steps while there is work, waits for wake-ups (or
    /// `poll`) when idle, backs off while an event fails.
    ///
    /// # Stopping
    ///
    /// Stop it by sending `true` on the channel, not by aborting its task: a task aborted
    /// inside a transaction may return its pooled connection to the pool before the
    /// rollback is sent, so that another caller's statements run in the abandoned
    /// transaction. (A crashed process is different: its connections close with it and
    /// the server rolls back.)
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, poll: Duration) {
        let mut backoff = Duration::from_millis(100);
        let mut initialised = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let pause = if !initialised {
                match self.init().await {
                    Ok(()) => {
                        initialised = true;
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "projection checkpoint init failed");
                        Some(backoff)
                    }
                }
            } else {
                match self.step().await {
                    Ok(Step::Applied { to, .. }) => {
                        backoff = Duration::from_millis(100);
                        self.report_lag(to).await;
                        None
                    }
                    Ok(Step::Raced) => None,
                    Ok(Step::Idle) => {
                        self.report_lag_zero();
                        let mut s = stop.clone();
                        tokio::select! {
                            _ = self.journal.wait_for_entries(self.shard, poll) => {}
                            _ = s.changed() => {}
                        }
                        None
                    }
                    Ok(Step::Failed { .. }) => {
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        Some(backoff)
                    }
                    Err(e) => {
                        tracing::warn!(projection = self.projection.name(), shard = self.shard, error = %e, "projector step failed");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        Some(backoff)
                    }
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn report_lag(&self, checkpoint: u64) {
        if let Ok(head) = self.journal.head(self.shard).await {
            metrics::gauge!(crate::metrics::PROJECTION_LAG, "projection" => self.projection.name().to_owned(), "shard" => self.shard.to_string())
                .set(head.saturating_sub(checkpoint) as f64);
        }
    }

    fn report_lag_zero(&self) {
        metrics::gauge!(crate::metrics::PROJECTION_LAG, "projection" => self.projection.name().to_owned(), "shard" => self.shard.to_string())
            .set(0.0);
    }
}

/// How far one shard of a projection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStatus {
    /// The shard.
    pub shard: Shard,
    /// The projection's checkpoint in it.
    pub checkpoint: u64,
    /// The shard's head.
    pub head: u64,
    /// Events past the checkpoint.
    pub lag_events: u64,
    /// Age of the oldest event past the checkpoint.
    pub lag: Duration,
    /// The event the projection is stopped at, and why.
    pub error: Option<(u64, String)>,
}

/// Status of a projection on every shard: checkpoint, lag, and any failure.
pub async fn status(
    journal: &AnyJournal,
    projection: &str,
) -> Result<Vec<ShardStatus>, JournalError> {
    let consumer = checkpoint_name(projection);
    let failures = errors::list(journal, projection).await?;
    let mut out = Vec::new();
    for shard in 0..journal.shard_count() {
        let checkpoint = journal.cursor(&consumer, shard).await?;
        let head = journal.head(shard).await?;
        let lag_events = errors::events_after(journal, shard, checkpoint).await?;
        let oldest = journal
            .read_shard(shard, checkpoint, 1, Some(EntryKind::Event))
            .await?;
        let lag = oldest
            .first()
            .map(|e| journal.now().since(e.created_at))
            .unwrap_or_default();
        out.push(ShardStatus {
            shard,
            checkpoint,
            head,
            lag_events,
            lag,
            error: failures
                .iter()
                .find(|f| f.0 == shard)
                .map(|f| (f.1, f.2.clone())),
        });
    }
    Ok(out)
}
