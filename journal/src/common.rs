//! What both backends hold and do alike around their own SQL: the shard count and map, the
//! payload limit, the in-process wake-ups, and the laying out of a write's columns — so
//! that `postgres/` and `sqlite/` keep only what really differs.

use std::sync::Arc;

use crate::columns::{BatchColumns, EntryColumns, ManyColumns, Placed, Source, append_columns};
use crate::envelope::NewMessage;
use crate::error::Result;
use crate::journal::check_shard;
use crate::records::{CommitReceipt, ProcessedBatch};
use crate::shard::Shard;
use crate::shard_groups::ShardMap;
use crate::time::Timestamp;
use crate::wakeup::Wakeups;

/// The part of a journal handle that both backends share.
pub(crate) struct Common {
    /// The journal's shard count, fixed when it was created.
    pub(crate) shard_count: u32,
    /// Routes entities to shards by their type's group.
    pub(crate) shard_map: Arc<ShardMap>,
    /// Wakes this process's tailers of a shard after a write to it.
    pub(crate) wakeups: Arc<Wakeups>,
    /// The largest payload stored, in bytes.
    pub(crate) max_payload_bytes: usize,
}

impl Common {
    /// The shared part of a journal of `shard_map`'s shards.
    pub(crate) fn new(shard_map: Arc<ShardMap>, max_payload_bytes: usize) -> Self {
        let shard_count = shard_map.layout().shard_count();
        Common {
            shard_count,
            shard_map,
            wakeups: Arc::new(Wakeups::new(shard_count)),
            max_payload_bytes,
        }
    }

    /// `Ok` if `shard` is one of the journal's shards.
    pub(crate) fn check_shard(&self, shard: Shard) -> Result<()> {
        check_shard(shard, self.shard_count)
    }

    /// Validates appended messages and lays them out as columns, with where each came from.
    pub(crate) fn append_columns(
        &self,
        messages: Vec<NewMessage>,
        now: Timestamp,
    ) -> Result<(EntryColumns, Vec<Source>)> {
        append_columns(messages, &self.shard_map, self.max_payload_bytes, now)
    }

    /// Validates a processed batch and lays it out as columns (see [`BatchColumns`]).
    pub(crate) fn batch_columns(
        &self,
        batch: &mut ProcessedBatch,
        now: Timestamp,
    ) -> Result<BatchColumns> {
        BatchColumns::prepare(batch, &self.shard_map, self.max_payload_bytes, now)
    }

    /// Validates the batches of several shards and lays them out (see [`ManyColumns`]).
    pub(crate) fn many_columns(
        &self,
        batches: Vec<ProcessedBatch>,
        now: Timestamp,
    ) -> Result<ManyColumns> {
        ManyColumns::prepare(batches, &self.shard_map, self.max_payload_bytes, now)
    }

    /// Wakes the shards an append placed entries in.
    pub(crate) fn wake_after_append(&self, entries: &EntryColumns, placed: &[Placed]) {
        self.wakeups.after_append(entries, placed);
    }

    /// Wakes the shards a committed batch of `shard` wrote to.
    pub(crate) fn wake_after_commit(&self, shard: Shard, receipt: &CommitReceipt) {
        self.wakeups.after_commit(shard, receipt);
    }
}
