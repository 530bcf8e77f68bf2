//! Inline projections: read-model writes committed in the same transaction as the
//! entity's events, so a read right after an ask sees them.
//!
//! The shard's owner is the only writer of its events, so it can hand each committed
//! batch's events straight to the inline projections. Before delivering a newly owned
//! shard, it brings each inline projection up to the shard's head (a projection added
//! later catches up first). A failing inline projection fails its shard's commit: the
//! shard's messages are redelivered after a back-off and wait — that is the price of
//! reads that always see the write. Other shards commit without it.

use std::sync::Arc;

use entlog_journal::{
    AnyJournal, Entry, EntryKind, Journal, JournalError, OpenCommit, ProcessedBatch, Shard,
};
use entlog_projections::{DynProjection, Projector, Step, checkpoint_name};

use crate::error::EngineError;

/// The inline projections of one shard, with their checkpoints.
pub(crate) struct Inline {
    shard: Shard,
    projections: Vec<(Arc<dyn DynProjection>, u64)>,
    /// Where the last `commit_in` moved every checkpoint, until its transaction commits.
    moved: Option<u64>,
}

impl Inline {
    pub(crate) fn new(shard: Shard, projections: &[Arc<dyn DynProjection>]) -> Self {
        Inline {
            shard,
            projections: projections.iter().map(|p| (p.clone(), 0)).collect(),
            moved: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.projections.is_empty()
    }

    /// Brings every inline projection up to the shard's head. `Ok(false)`: a projection
    /// failed on an event (recorded in its status); call again later.
    pub(crate) async fn catch_up(
        &mut self,
        journal: &AnyJournal,
        batch: usize,
    ) -> Result<bool, JournalError> {
        for (p, checkpoint) in &mut self.projections {
            let mut projector = Projector::new(journal.clone(), p.clone(), self.shard, batch);
            projector.init().await?;
            loop {
                match projector.step().await? {
                    Step::Idle => break,
                    Step::Applied { .. } | Step::Raced => {}
                    // A failure, or a step this engine does not know: try again later.
                    _ => return Ok(false),
                }
            }
            *checkpoint = journal
                .cursor(&checkpoint_name(p.name()), self.shard)
                .await?;
        }
        Ok(true)
    }

    /// Writes `batch` in an open commit, with the inline projections' writes for its
    /// events. The checkpoints they moved count once the caller committed it and called
    /// [`committed`](Self::committed).
    pub(crate) async fn commit_open(
        &mut self,
        journal: &AnyJournal,
        batch: ProcessedBatch,
    ) -> Result<OpenCommit, EngineError> {
        self.moved = None;
        let shard = batch.shard;
        let events: Vec<_> = batch
            .messages
            .iter()
            .map(|p| (p.entity.clone(), p.message_id, p.events.clone()))
            .collect();
        let mut open = journal.commit_open(batch).await?;
        let receipt = open.receipt();
        let now = receipt.created_at;
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
                    headers: Default::default(),
                });
            }
        }
        entries.sort_by_key(|e| e.offset);
        if let Some(last) = entries.last().map(|e| e.offset) {
            for (p, checkpoint) in &self.projections {
                let wanted: Vec<Entry> = entries
                    .iter()
                    .filter(|e| p.wants(e.entity.entity_type()))
                    .cloned()
                    .collect();
                // The checkpoint first, as the projector does (see `Projector`).
                open.tx()
                    .move_checkpoint(&checkpoint_name(p.name()), shard, *checkpoint, last)
                    .await?;
                if !wanted.is_empty() {
                    p.apply(open.tx(), &wanted).await?;
                }
            }
            self.moved = Some(last);
        }
        Ok(open)
    }

    /// The last [`commit_open`](Self::commit_open) committed.
    pub(crate) fn committed(&mut self) {
        if let Some(last) = self.moved.take() {
            for (_, checkpoint) in &mut self.projections {
                *checkpoint = last;
            }
        }
    }
}
