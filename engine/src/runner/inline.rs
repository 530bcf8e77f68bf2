//! Inline projections: read-model writes committed in the same transaction as the
//! entity's events, so a read right after an ask sees them.
//!
//! The shard's worker is the only writer of its events, so it can hand each committed
//! batch's events straight to the inline projections. Before processing, it brings each
//! inline projection up to the shard's head (a projection added later catches up first).
//! A failing inline projection fails the batch's commit: the batch is retried, and its
//! messages wait — that is the price of reads that always see the write.

use std::sync::Arc;
use std::time::Duration;

use entlog_journal::{
    AnyJournal, CommitReceipt, Entry, EntryKind, Journal, JournalError, ProcessedBatch, Shard,
    Timestamp,
};
use entlog_projections::{DynProjection, Projector, Step, checkpoint_name};

use crate::error::EngineError;

/// The inline projections of one shard, with their checkpoints.
pub(crate) struct Inline {
    shard: Shard,
    projections: Vec<(Arc<dyn DynProjection>, u64)>,
}

impl Inline {
    pub(crate) fn new(shard: Shard, projections: &[Arc<dyn DynProjection>]) -> Self {
        Inline {
            shard,
            projections: projections.iter().map(|p| (p.clone(), 0)).collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.projections.is_empty()
    }

    /// Brings every inline projection up to the shard's head; retries a failing event
    /// with back-off until it succeeds.
    pub(crate) async fn catch_up(
        &mut self,
        journal: &AnyJournal,
        batch: usize,
    ) -> Result<(), JournalError> {
        for (p, checkpoint) in &mut self.projections {
            let mut projector = Projector::new(journal.clone(), p.clone(), self.shard, batch);
            projector.init().await?;
            let mut backoff = Duration::from_millis(100);
            loop {
                match projector.step().await? {
                    Step::Idle => break,
                    Step::Applied { .. } | Step::Raced => {}
                    Step::Failed { .. } => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            *checkpoint = journal
                .cursor(&checkpoint_name(p.name()), self.shard)
                .await?;
        }
        Ok(())
    }

    /// Commits `batch` and the inline projections' writes for its events together.
    pub(crate) async fn commit(
        &mut self,
        journal: &AnyJournal,
        batch: ProcessedBatch,
    ) -> Result<CommitReceipt, EngineError> {
        let shard = batch.shard;
        let events: Vec<_> = batch
            .messages
            .iter()
            .map(|p| (p.entity.clone(), p.message_id, p.events.clone()))
            .collect();
        let mut tx = journal.begin().await?;
        let receipt = journal.commit_in(&mut tx, batch).await?;
        let now = Timestamp::now();
        let mut entries = Vec::new();
        for ((entity, message_id, evs), offsets) in events.into_iter().zip(&receipt.event_offsets) {
            for (ev, &offset) in evs.into_iter().zip(offsets) {
                entries.push(Entry {
                    shard,
                    offset,
                    kind: EntryKind::Event,
                    entity: entity.clone(),
                    seq: Some(ev.seq),
                    message_id,
                    payload: ev.payload,
                    deliver_at: None,
                    created_at: now,
                });
            }
        }
        entries.sort_by_key(|e| e.offset);
        let mut moved = Vec::new();
        if let Some(last) = entries.last().map(|e| e.offset) {
            for (p, checkpoint) in &self.projections {
                let wanted: Vec<Entry> = entries
                    .iter()
                    .filter(|e| p.wants(e.entity.entity_type()))
                    .cloned()
                    .collect();
                if !wanted.is_empty() {
                    p.apply(&mut tx, &wanted).await?;
                }
                tx.move_checkpoint(&checkpoint_name(p.name()), shard, *checkpoint, last)
                    .await?;
                moved.push(last);
            }
        }
        tx.commit().await?;
        for ((_, checkpoint), last) in self.projections.iter_mut().zip(moved) {
            *checkpoint = last;
        }
        journal.wake_after(shard, &receipt);
        Ok(receipt)
    }
}
