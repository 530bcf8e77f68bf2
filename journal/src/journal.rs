//! The `Journal` trait: the storage contract every backend keeps.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, TryStreamExt as _};
use uuid::Uuid;

use crate::damaged::{DamagedEntry, Delivery};
use crate::envelope::{EntityKey, Entry, EntryKind, NewMessage};
use crate::error::{JournalError, Result};
use crate::ownership::{RunnerInfo, ShardLocks};
use crate::records::NewSnapshot;
use crate::records::{AppendOutcome, CommitReceipt, ProcessedBatch, Snapshot, StoredReply};
use crate::shard::Shard;
use crate::shard_groups::ShardMap;
use crate::time::Timestamp;

/// Entries fetched per round trip by [`Journal::events`].
pub const EVENT_PAGE: usize = 1_000;

/// `ShardOutOfRange` unless `shard` is below `shard_count`.
pub(crate) fn check_shard(shard: Shard, shard_count: u32) -> Result<()> {
    if shard >= shard_count {
        return Err(JournalError::ShardOutOfRange { shard, shard_count });
    }
    Ok(())
}

/// The cursors of a mailbox read with each shard once, at the lower of its cursors if it
/// is listed twice (reading more never skips), in shard order; or `ShardOutOfRange`.
pub(crate) fn mailbox_cursors(
    from: &[(Shard, u64)],
    shard_count: u32,
) -> Result<Vec<(Shard, u64)>> {
    let mut cursors = std::collections::BTreeMap::new();
    for &(shard, after) in from {
        check_shard(shard, shard_count)?;
        cursors
            .entry(shard)
            .and_modify(|a: &mut u64| *a = (*a).min(after))
            .or_insert(after);
    }
    Ok(cursors.into_iter().collect())
}

/// An append-only journal partitioned into shards.
///
/// # Offsets
///
/// Each shard is a partition whose entries (messages and events) have offsets
/// `1, 2, 3, …`. Within a shard:
///
/// ```text
///   committed:  1 2 3 4 5 6 7 8          head = 8 (next append takes 9)
///   cursor c:         ^ 4                 reads after c return 5, 6, 7, 8
/// ```
///
/// - Offsets MUST be dense (no gaps, even after failed or rolled-back appends) and MUST
///   agree with commit order: once a reader has seen offset `n`, no entry with an offset
///   `<= n` can appear later. A tailer that remembers the last offset it saw therefore
///   never skips an entry. Both backends allocate offsets under a per-shard lock held until
///   commit.
/// - A *cursor* (or checkpoint) is the last offset a consumer is done with; reads return
///   offsets strictly greater than the cursor. Cursors only move forward.
///
/// # Atomicity and durability
///
/// - [`append`](Journal::append) returns `Ok` only after its transaction committed; a
///   batch of messages commits all together or not at all.
/// - [`commit`](Journal::commit) writes a shard's processed batch — every message's
///   events, reply and outgoing messages, and the cursor advance — in ONE transaction. A
///   reader never sees part of it.
/// - Dedup: messages are unique per (entity, message id); appending a known id writes
///   nothing and returns [`AppendOutcome::Duplicate`] with the original offset and, once
///   processed, the stored reply.
/// - Fencing: events are unique per (entity, seq) and replies per (entity, message id);
///   a batch that collides fails whole with `SeqConflict`. A batch carrying a lease fails
///   with `Fenced` once the shard was acquired again by anyone.
///
/// # Scheduled messages
///
/// A message whose `deliver_at` is in the future is held in the shard's schedule and
/// enters the partition (at the then-next offset) only when
/// [`promote_due`](Journal::promote_due) runs at or after its due time. The partition thus
/// holds only due entries, and a far-future message never holds a cursor back.
///
/// - Promotion MUST move each scheduled message exactly once, in (`deliver_at`,
///   `created_at`, message id) order, and never before its `deliver_at`: `promote_due(s, t)`
///   moves exactly those with `deliver_at <= t`.
/// - [`cancel_scheduled`](Journal::cancel_scheduled) and promotion MUST NOT both win: a
///   message that cancel reports removed (`true`) never enters the partition; one it reports
///   not found (`false`) was either never scheduled or already promoted (and is then
///   delivered as usual).
/// - A cancelled id is forgotten, not tombstoned: appending the same (entity, message id)
///   again schedules it anew. Cancel then re-send is how a timer is moved.
/// - The times are wall-clock microseconds of the appending process and of the promoting
///   caller: clocks of different machines should agree to well under the lateness a
///   caller can tolerate.
///
/// # What a reader never sees
///
/// Uncommitted entries, entries of a rolled-back batch, and entries whose checksum fails:
/// those are returned as [`JournalError::Checksum`](crate::JournalError::Checksum), never
/// skipped — except by the mailbox read, which delivers them as damaged (below).
///
/// # Damaged entries in the mailbox
///
/// The mailbox read, [`read_mailboxes`](Journal::read_mailboxes), is the one read that does
/// not fail on a damaged entry: one flipped byte must not stop its shard (invariant 10).
/// An entry that fails its checksum or does not decode comes back as
/// [`Delivery::Damaged`] naming only its place (shard, offset) and the cause, in its
/// place in offset order — never skipped, never trusted. Its owner records it with
/// [`record_damaged`](Journal::record_damaged) before moving its cursor past it, so the
/// record outlives the entry's passing.
pub trait Journal: Send + Sync + 'static {
    /// The backend's shard-lock session.
    type Locks: ShardLocks;

    /// Number of shards, fixed when the journal was created.
    fn shard_count(&self) -> u32;

    /// The shards' groups and the group of each entity type known here (see
    /// [`crate::shard_groups`]).
    fn shard_map(&self) -> &ShardMap;

    /// The shard of an entity: by its id, within its type's shard group (see
    /// [`crate::shard`] and [`crate::shard_groups`]).
    fn shard_of(&self, entity: &EntityKey) -> Shard {
        self.shard_map().shard_of(entity)
    }

    /// The journal's clock: the time rows are stamped with and timers fall due by. Every
    /// member of a cluster reads the same clock (PostgreSQL's), whatever its host's says.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// Appends messages (any shards) in one transaction; outcomes in input order.
    fn append(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>>> + Send;

    /// Entries of a shard with offsets `> after`, in offset order, at most `limit`,
    /// optionally only of one kind. Every checksum is verified.
    fn read_shard(
        &self,
        shard: Shard,
        after: u64,
        limit: usize,
        kind: Option<EntryKind>,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// Due messages of several shards in ONE query: for each `(shard, after)` pair, the
    /// messages with offset `> after`, in offset order, at most `limit_per_shard` per shard;
    /// the result is ordered by (shard, offset).
    ///
    /// - An entry whose checksum fails or whose row does not decode MUST come back as
    ///   [`Delivery::Damaged`] naming shard, offset and the cause: it never fails the read
    ///   and is never skipped. Only its place is trusted.
    /// - Events are not delivered. An entry whose stored kind is neither message nor event
    ///   is delivered as damaged (it may have been a message).
    /// - A shard outside `0..shard_count` fails the whole call with
    ///   [`JournalError::ShardOutOfRange`] before anything is read. A shard listed twice is
    ///   read once, after the lower of its cursors. An empty `from` or a zero limit reads
    ///   nothing.
    /// - Damaged items count against `limit_per_shard` like messages.
    /// - A message that already has a stored reply is done — a runner commits messages of
    ///   other entities past a slow one, above the shard's cursor — and MUST be left out, so
    ///   that a redelivery from the cursor never handles it twice.
    fn read_mailboxes(
        &self,
        from: &[(Shard, u64)],
        limit_per_shard: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>>> + Send;

    /// Records damaged entries durably, by place. Idempotent: recording an entry that is
    /// already recorded keeps the first record (reason and time). Returns `Ok` only after
    /// the records committed; a shard out of range fails the call with nothing written.
    fn record_damaged(&self, entries: &[DamagedEntry]) -> impl Future<Output = Result<()>> + Send;

    /// An entity's events with `seq >= from_seq`, in seq order, at most `limit`.
    fn read_events(
        &self,
        entity: &EntityKey,
        from_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// Commits a shard's processed batch atomically (see the trait docs).
    fn commit(&self, batch: ProcessedBatch) -> impl Future<Output = Result<CommitReceipt>> + Send;

    /// The stored reply to a message, if it was processed.
    fn reply(
        &self,
        entity: &EntityKey,
        message_id: Uuid,
    ) -> impl Future<Output = Result<Option<StoredReply>>> + Send;

    /// The stored replies of many messages, read in one query (a few for very long
    /// lists): for each `(entity, message id)` of `wanted` that was processed, its entity
    /// and reply, in no particular order. Unprocessed ones are left out; a duplicate in
    /// `wanted` may appear once or twice. Every checksum is verified.
    fn replies(
        &self,
        wanted: &[(EntityKey, Uuid)],
    ) -> impl Future<Output = Result<Vec<(EntityKey, StoredReply)>>> + Send;

    /// Saves a snapshot, replacing an older one of the entity (a newer one is kept).
    fn save_snapshot(&self, snapshot: NewSnapshot) -> impl Future<Output = Result<()>> + Send;

    /// The entity's latest snapshot if its checksum holds and its state version is
    /// `state_version`; otherwise `None` (and a warning), so the caller replays in full.
    fn load_snapshot(
        &self,
        entity: &EntityKey,
        state_version: u32,
    ) -> impl Future<Output = Result<Option<Snapshot>>> + Send;

    /// A consumer's cursor on a shard: the last offset it is done with (0 if none).
    fn cursor(&self, consumer: &str, shard: Shard) -> impl Future<Output = Result<u64>> + Send;

    /// Moves a consumer's cursor forward to `offset` (never backwards).
    fn advance_cursor(
        &self,
        consumer: &str,
        shard: Shard,
        offset: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The shard's head: the highest committed offset (0 when empty).
    fn head(&self, shard: Shard) -> impl Future<Output = Result<u64>> + Send;

    /// Moves the shard's scheduled messages due at `now` into its partition; returns how many.
    fn promote_due(
        &self,
        shard: Shard,
        now: Timestamp,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// When the shard's earliest scheduled message is due, if it has one.
    fn next_due(&self, shard: Shard) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// [`next_due`](Journal::next_due) of each of `shards`, in their order, in one query: a
    /// runner looks at the schedules of all its shards without a round trip per shard.
    fn next_due_many(
        &self,
        shards: &[Shard],
    ) -> impl Future<Output = Result<Vec<Option<Timestamp>>>> + Send;

    /// Removes a message that is still scheduled. `true` if it was in the schedule and is now
    /// gone for good; `false` if the entity has no scheduled message with this id (never
    /// sent, sent due at once, already promoted, or already cancelled). Atomic with respect
    /// to [`promote_due`](Journal::promote_due): see the trait docs.
    fn cancel_scheduled(
        &self,
        entity: &EntityKey,
        message_id: Uuid,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Whether a message was scheduled on the shard since the last call — by an append or
    /// commit of this process, or, on PostgreSQL with notifications on, of any process (a
    /// lost notification connection reports every shard). The shard's owner calls it to
    /// learn when to read [`next_due`](Journal::next_due) again instead of polling it: a
    /// newly scheduled message may be due before the one its timer waits for. Such a
    /// message also wakes [`wait_for_entries`](Journal::wait_for_entries). A hint, for one
    /// consumer per shard: a cross-process announcement can be lost with its process, so
    /// the owner still reads `next_due` now and then.
    fn take_schedule_changed(&self, shard: Shard) -> bool;

    /// Waits until new entries may have been committed to the shard, or `timeout` passed.
    /// Returns `true` on a wake-up. Wake-ups may be spurious; a caller still reads to see.
    fn wait_for_entries(
        &self,
        shard: Shard,
        timeout: Duration,
    ) -> impl Future<Output = bool> + Send;

    /// Waits until replies of messages of the shard may have been committed — by this
    /// process, or on PostgreSQL with notifications on, by any process (a lost notification
    /// connection wakes every shard) — or `timeout` passed. Returns `true` on a wake-up.
    /// Wake-ups may be spurious, and one that comes while nobody waits is kept for the
    /// next waiter; a caller reads [`replies`](Journal::replies) to see. An asker whose
    /// message's shard is owned by another process waits here rather than polling.
    fn wait_for_replies(
        &self,
        shard: Shard,
        timeout: Duration,
    ) -> impl Future<Output = bool> + Send;

    /// Opens a lock session for a runner (a dedicated connection on PostgreSQL) and
    /// registers the runner as live while the session lasts. A runner id already live
    /// elsewhere is refused with [`JournalError::RunnerInUse`].
    fn lock_session(&self, runner: &str) -> impl Future<Output = Result<Self::Locks>> + Send {
        self.lock_session_hosting(runner, None)
    }

    /// Like [`lock_session`](Journal::lock_session), registering the shard groups the
    /// runner hosts (`None`: every group), which [`live_runners`](Journal::live_runners)
    /// reports so that no runner is given a shard of a group it cannot run.
    fn lock_session_hosting(
        &self,
        runner: &str,
        groups: Option<&[String]>,
    ) -> impl Future<Output = Result<Self::Locks>> + Send;

    /// Runners whose lock sessions are alive, ordered by id.
    fn live_runners(&self) -> impl Future<Output = Result<Vec<RunnerInfo>>> + Send;

    /// The runner that holds the shard's lock right now, if any: `None` when no live lock
    /// session owns it (nobody runs, or it is moving between runners).
    fn shard_owner(&self, shard: Shard) -> impl Future<Output = Result<Option<String>>> + Send;

    /// An entity's events from `from_seq` on, fetched in pages of [`EVENT_PAGE`], so that a
    /// long history never sits in memory at once.
    fn events<'a>(
        &'a self,
        entity: &'a EntityKey,
        from_seq: u64,
    ) -> impl Stream<Item = Result<Entry>> + Send + 'a
    where
        Self: Sized,
    {
        futures_util::stream::try_unfold((from_seq, false), move |(next, done)| async move {
            if done {
                return Ok::<_, JournalError>(None);
            }
            let page = self.read_events(entity, next, EVENT_PAGE).await?;
            let last = page.last().and_then(|e| e.seq);
            let done = page.len() < EVENT_PAGE;
            let next = last.map_or(next, |s| s + 1);
            Ok(Some((
                futures_util::stream::iter(page.into_iter().map(Ok)),
                (next, done),
            )))
        })
        .try_flatten()
    }
}
