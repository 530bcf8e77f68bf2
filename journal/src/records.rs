//! Records the journal stores beside entries: replies, snapshots, and what appends return.

use uuid::Uuid;

use crate::envelope::{EntityKey, NewEvent, NewMessage, Payload};
use crate::ownership::Lease;
use crate::shard::Shard;
use crate::time::Timestamp;

/// What [`Journal::append`](crate::Journal::append) did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendOutcome {
    /// Committed at this offset of its shard.
    Appended {
        /// The shard.
        shard: Shard,
        /// The new entry's offset.
        offset: u64,
    },
    /// Committed to the shard's schedule; it enters the partition when due.
    Scheduled {
        /// The shard.
        shard: Shard,
    },
    /// A message with this id was already journaled for this entity; nothing was written.
    Duplicate {
        /// The shard.
        shard: Shard,
        /// Offset of the original entry, `None` while it is still scheduled.
        offset: Option<u64>,
        /// The stored reply, once the original has been processed.
        reply: Option<StoredReply>,
    },
}

/// The first byte of a stored reply that records a failure (a poison message): the
/// journal indexes such replies (`replies_failed`, migration 0011) so that tools list them
/// without reading every reply. The engine's encoding of a failed outcome starts with it.
pub const FAILED_REPLY_BYTE: u8 = 2;

/// A reply stored when its message was processed; a re-sent message gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// The message it answers.
    pub message_id: Uuid,
    /// Offset of that message in its shard.
    pub offset: u64,
    /// The reply.
    pub payload: Payload,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// One handled message: everything its processing produced.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The entity that handled it.
    pub entity: EntityKey,
    /// The handled message's id.
    pub message_id: Uuid,
    /// The handled message's offset in its shard.
    pub offset: u64,
    /// Events decided, at consecutive seqs after the entity's last.
    pub events: Vec<NewEvent>,
    /// The reply to store.
    pub reply: Payload,
    /// Messages to other entities, journaled in the same transaction (the outbox).
    pub outgoing: Vec<NewMessage>,
}

/// Handled messages of one shard, committed in one transaction with the cursor advance.
#[derive(Debug, Clone)]
pub struct ProcessedBatch {
    /// The shard the messages came from.
    pub shard: Shard,
    /// The lease under which they were processed; `None` commits unfenced.
    pub lease: Option<Lease>,
    /// Cursor to advance (`consumer`, new offset); it never moves backwards.
    pub cursor: Option<(String, u64)>,
    /// The handled messages.
    pub messages: Vec<Processed>,
}

/// Where the askers of a commit's handled messages wait, which says whether the commit
/// must announce its replies to other processes (on PostgreSQL, `NOTIFY 'r<shard>'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Askers {
    /// Anywhere, or not known: the replies are announced.
    Anywhere,
    /// Every asker waits in this process, which hands them their replies itself: nothing
    /// is announced (unless outgoing messages go to shards held elsewhere).
    Here,
}

/// Offsets assigned by a committed batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReceipt {
    /// For each handled message in batch order, the offsets of its events.
    pub event_offsets: Vec<Vec<u64>>,
    /// For each handled message in batch order, the outcome of each outgoing message.
    pub outgoing: Vec<Vec<AppendOutcome>>,
    /// The `created_at` stored on the batch's rows.
    pub created_at: Timestamp,
}

impl CommitReceipt {
    /// Shards the batch's outgoing messages went to.
    pub fn shards(&self) -> impl Iterator<Item = Shard> + '_ {
        self.outgoing.iter().flatten().map(|o| match o {
            AppendOutcome::Appended { shard, .. }
            | AppendOutcome::Scheduled { shard }
            | AppendOutcome::Duplicate { shard, .. } => *shard,
        })
    }
}

/// A snapshot to save: an entity's state after the event at `seq`.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    /// The entity.
    pub entity: EntityKey,
    /// Seq of the last event folded into the state.
    pub seq: u64,
    /// The state; its `version` is the state schema version.
    pub state: Payload,
}

/// A snapshot read back, its checksum verified and its state version current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Seq of the last event folded into the state.
    pub seq: u64,
    /// The state.
    pub state: Payload,
    /// When it was saved.
    pub created_at: Timestamp,
}
