//! One owned shard's delivery state in the pipeline: its cursor, read position and
//! outstanding offsets, its timer for scheduled messages, its back-off and its trouble.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use entlog_journal::{EntityKey, Lease, Shard, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::Exit;
use crate::config::Config;
use crate::runner::inline::Inline;

/// One owned shard's delivery state.
pub(super) struct Mailbox {
    pub(super) lease: Lease,
    pub(super) generation: u64,
    pub(super) exit: Option<oneshot::Sender<Exit>>,
    /// The inline projections; `None` while an intake or a commit holds them.
    pub(super) inline: Option<Inline>,
    /// The committed cursor; `None` until loaded (after acquisition or a reset).
    pub(super) cursor: Option<u64>,
    /// Everything up to here was read and dispatched.
    pub(super) read_to: u64,
    /// Read, not committed.
    pub(super) outstanding: BTreeSet<u64>,
    /// Woken (or polled) since the last read: read it.
    pub(super) dirty: bool,
    pub(super) seen_wakes: u64,
    pub(super) last_read: Instant,
    /// Back-off after a failure: nothing is read or committed before then.
    pub(super) not_before: Option<Instant>,
    /// Consecutive failed rounds (reads or commits), for the back-off.
    pub(super) failures: u32,
    /// Consecutive commits refused for something other than an unreachable database.
    pub(super) refused: u32,
    /// Messages the journal refused alone: their failure reply replaces their outcome.
    pub(super) poison: HashMap<u64, String>,
    pub(super) next_due: Option<Timestamp>,
    pub(super) due_checked: Option<Instant>,
    pub(super) stopping: bool,
    pub(super) in_intake: bool,
    pub(super) in_commit: bool,
    /// The trouble recorded on the shard's row, while its reads or commits fail.
    pub(super) trouble: Option<String>,
}

impl Mailbox {
    /// The cursor a commit may move to once `committing` commits too.
    pub(super) fn target(&self, committing: &BTreeSet<u64>) -> u64 {
        self.outstanding
            .iter()
            .find(|o| !committing.contains(o))
            .map_or(self.read_to, |o| o - 1)
    }

    pub(super) fn ready_in(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// Whether the pipeline should read this mailbox now (`now` on the journal's clock).
    pub(super) fn wants_intake(&self, config: &Config, now: Timestamp) -> bool {
        if self.stopping || self.in_intake || !self.ready_in() {
            return false;
        }
        if self.cursor.is_none() {
            return self.inline.is_some() && !self.in_commit;
        }
        self.dirty
            || self.promote_due(now)
            || self.due_stale(config)
            || self.last_read.elapsed() >= config.poll_interval
    }

    pub(super) fn promote_due(&self, now: Timestamp) -> bool {
        self.next_due.is_some_and(|t| t <= now)
    }

    pub(super) fn due_stale(&self, config: &Config) -> bool {
        self.due_checked
            .is_none_or(|t| t.elapsed() >= config.poll_interval)
    }

    /// When this mailbox next needs the pipeline without a wake-up.
    pub(super) fn deadline(&self, config: &Config, now: Timestamp) -> Instant {
        let mut at = self.last_read + config.poll_interval;
        if let Some(t) = self.due_checked {
            at = at.min(t + config.poll_interval);
        }
        if let Some(due) = self.next_due {
            at = at.min(Instant::now() + due.since(now));
        }
        if let Some(t) = self.not_before {
            at = at.max(t);
        }
        at
    }
}
/// A commit in flight: what each shard's part will settle.
pub(super) struct InFlight {
    /// Per shard: the cursor it moves to, the offsets it commits, its generation.
    pub(super) shards: HashMap<Shard, (u64, BTreeSet<u64>, u64)>,
    /// Handled messages per entity it carries.
    pub(super) entities: HashMap<EntityKey, usize>,
    /// The replies to release once committed: (shard, entity, message id, reply). Only
    /// these are kept, not the messages' events and outgoing messages.
    pub(super) replies: Vec<(Shard, EntityKey, uuid::Uuid, entlog_journal::Payload)>,
}
/// Records a shard's trouble (`Some(cause)`) or its end (`None`) when that changes.
pub(super) fn trouble(
    troubles: &mpsc::UnboundedSender<(Shard, Option<(String, Timestamp)>)>,
    shard: Shard,
    mb: &mut Mailbox,
    cause: Option<&str>,
) {
    if mb.trouble.as_deref() == cause {
        return;
    }
    mb.trouble = cause.map(str::to_owned);
    let _ = troubles.send((shard, cause.map(|c| (c.to_owned(), Timestamp::now()))));
}
