//! One journal type for either backend, so that code above the journal (the engine, the
//! CLI) is not generic over it.

use std::time::Duration;

use uuid::Uuid;

use crate::damaged::{DamagedEntry, Delivery};
use crate::envelope::{EntityKey, Entry, EntryKind, NewMessage};
use crate::error::Result;
use crate::journal::Journal;
use crate::ownership::{Lease, RunnerInfo, ShardLocks};
use crate::postgres::{PgJournal, PgLocks};
use crate::records::{
    AppendOutcome, Askers, CommitReceipt, NewSnapshot, ProcessedBatch, Snapshot, StoredReply,
};
use crate::shard::Shard;
use crate::sql::{Row, Sql};
use crate::sqlite::{SqliteJournal, SqliteLocks};
use crate::time::Timestamp;

/// A PostgreSQL or SQLite journal. Non-exhaustive: another backend may be added, so a
/// `match` outside this crate needs a wildcard arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyJournal {
    /// Cluster mode.
    Postgres(PgJournal),
    /// Embedded mode.
    Sqlite(SqliteJournal),
}

/// The lock session of an [`AnyJournal`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyLocks {
    /// PostgreSQL advisory locks on a dedicated connection.
    Postgres(PgLocks),
    /// The SQLite file owner's trivial locks.
    Sqlite(SqliteLocks),
}

impl From<PgJournal> for AnyJournal {
    fn from(j: PgJournal) -> Self {
        AnyJournal::Postgres(j)
    }
}

impl From<SqliteJournal> for AnyJournal {
    fn from(j: SqliteJournal) -> Self {
        AnyJournal::Sqlite(j)
    }
}

impl AnyJournal {
    /// Closes the backend's connections.
    pub async fn close(&self) {
        match self {
            AnyJournal::Postgres(j) => j.close().await,
            AnyJournal::Sqlite(j) => j.close().await,
        }
    }
}

/// Wake-ups for a tailer of many shards (a runner's message pipeline).
impl AnyJournal {
    /// A receiver that changes after every wake-up of any shard in this process (an
    /// append or commit here, or on PostgreSQL another process's notification). Compare
    /// [`wake_count`](Self::wake_count) per shard to learn which shards woke.
    pub async fn watch_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            AnyJournal::Postgres(j) => j.watch_wakeups().await,
            AnyJournal::Sqlite(j) => j.watch_wakeups(),
        }
    }

    /// How many wake-ups `shard` has had; it only grows.
    pub fn wake_count(&self, shard: Shard) -> u64 {
        match self {
            AnyJournal::Postgres(j) => j.wake_count(shard),
            AnyJournal::Sqlite(j) => j.wake_count(shard),
        }
    }

    /// Commits the processed batches of several shards at once: all or none, a stale lease
    /// failing the whole call with `Fenced` naming its shard (see
    /// [`PgJournal::commit_many`] and [`SqliteJournal::commit_many`]). `askers` says
    /// whether the replies must be announced to other processes.
    pub async fn commit_many(
        &self,
        batches: Vec<ProcessedBatch>,
        askers: Askers,
    ) -> Result<Vec<CommitReceipt>> {
        match self {
            AnyJournal::Postgres(j) => j.commit_many(batches, askers).await,
            AnyJournal::Sqlite(j) => j.commit_many(batches).await,
        }
    }

    /// How soon a runner that stopped answering loses its shards (lock sessions exist on
    /// PostgreSQL only; SQLite's one process owns every shard and reports the defaults).
    pub fn liveness(&self) -> crate::Liveness {
        match self {
            AnyJournal::Postgres(j) => j.liveness(),
            AnyJournal::Sqlite(_) => crate::Liveness::default(),
        }
    }

    /// The largest payload (command, event, reply, state) the journal stores, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        match self {
            AnyJournal::Postgres(j) => j.max_payload_bytes(),
            AnyJournal::Sqlite(j) => j.max_payload_bytes(),
        }
    }
}

/// Calls the same method on whichever backend is inside.
macro_rules! both {
    ($self:expr, $j:ident => $call:expr) => {
        match $self {
            AnyJournal::Postgres($j) => $call,
            AnyJournal::Sqlite($j) => $call,
        }
    };
}

impl Journal for AnyJournal {
    type Locks = AnyLocks;

    fn shard_count(&self) -> u32 {
        both!(self, j => j.shard_count())
    }

    fn shard_map(&self) -> &crate::shard_groups::ShardMap {
        both!(self, j => j.shard_map())
    }

    fn now(&self) -> Timestamp {
        both!(self, j => j.now())
    }

    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<AppendOutcome>> {
        both!(self, j => j.append(messages).await)
    }

    async fn read_shard(
        &self,
        shard: Shard,
        after: u64,
        limit: usize,
        kind: Option<EntryKind>,
    ) -> Result<Vec<Entry>> {
        both!(self, j => j.read_shard(shard, after, limit, kind).await)
    }

    async fn read_mailboxes(
        &self,
        from: &[(Shard, u64)],
        limit_per_shard: usize,
    ) -> Result<Vec<Delivery>> {
        both!(self, j => j.read_mailboxes(from, limit_per_shard).await)
    }

    async fn record_damaged(&self, entries: &[DamagedEntry]) -> Result<()> {
        both!(self, j => j.record_damaged(entries).await)
    }

    async fn read_events(
        &self,
        entity: &EntityKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        both!(self, j => j.read_events(entity, from_seq, limit).await)
    }

    async fn commit(&self, batch: ProcessedBatch) -> Result<CommitReceipt> {
        both!(self, j => j.commit(batch).await)
    }

    async fn reply(&self, entity: &EntityKey, message_id: Uuid) -> Result<Option<StoredReply>> {
        both!(self, j => j.reply(entity, message_id).await)
    }

    async fn replies(&self, wanted: &[(EntityKey, Uuid)]) -> Result<Vec<(EntityKey, StoredReply)>> {
        both!(self, j => j.replies(wanted).await)
    }

    async fn save_snapshot(&self, snapshot: NewSnapshot) -> Result<()> {
        both!(self, j => j.save_snapshot(snapshot).await)
    }

    async fn load_snapshot(
        &self,
        entity: &EntityKey,
        state_version: u32,
    ) -> Result<Option<Snapshot>> {
        both!(self, j => j.load_snapshot(entity, state_version).await)
    }

    async fn cursor(&self, consumer: &str, shard: Shard) -> Result<u64> {
        both!(self, j => j.cursor(consumer, shard).await)
    }

    async fn advance_cursor(&self, consumer: &str, shard: Shard, offset: u64) -> Result<()> {
        both!(self, j => j.advance_cursor(consumer, shard, offset).await)
    }

    async fn head(&self, shard: Shard) -> Result<u64> {
        both!(self, j => j.head(shard).await)
    }

    async fn promote_due(&self, shard: Shard, now: Timestamp) -> Result<usize> {
        both!(self, j => j.promote_due(shard, now).await)
    }

    async fn next_due(&self, shard: Shard) -> Result<Option<Timestamp>> {
        both!(self, j => j.next_due(shard).await)
    }

    async fn next_due_many(&self, shards: &[Shard]) -> Result<Vec<Option<Timestamp>>> {
        both!(self, j => j.next_due_many(shards).await)
    }

    async fn cancel_scheduled(&self, entity: &EntityKey, message_id: Uuid) -> Result<bool> {
        both!(self, j => j.cancel_scheduled(entity, message_id).await)
    }

    fn take_schedule_changed(&self, shard: Shard) -> bool {
        both!(self, j => j.take_schedule_changed(shard))
    }

    async fn wait_for_entries(&self, shard: Shard, timeout: Duration) -> bool {
        both!(self, j => j.wait_for_entries(shard, timeout).await)
    }

    async fn wait_for_replies(&self, shard: Shard, timeout: Duration) -> bool {
        both!(self, j => j.wait_for_replies(shard, timeout).await)
    }

    async fn lock_session_hosting(
        &self,
        runner: &str,
        groups: Option<&[String]>,
    ) -> Result<AnyLocks> {
        Ok(match self {
            AnyJournal::Postgres(j) => {
                AnyLocks::Postgres(j.lock_session_hosting(runner, groups).await?)
            }
            AnyJournal::Sqlite(j) => {
                AnyLocks::Sqlite(j.lock_session_hosting(runner, groups).await?)
            }
        })
    }

    async fn shard_owner(&self, shard: Shard) -> Result<Option<String>> {
        both!(self, j => j.shard_owner(shard).await)
    }

    async fn live_runners(&self) -> Result<Vec<RunnerInfo>> {
        both!(self, j => j.live_runners().await)
    }
}

macro_rules! both_locks {
    ($self:expr, $l:ident => $call:expr) => {
        match $self {
            AnyLocks::Postgres($l) => $call,
            AnyLocks::Sqlite($l) => $call,
        }
    };
}

impl ShardLocks for AnyLocks {
    async fn try_acquire(&self, shard: Shard) -> Result<Option<Lease>> {
        both_locks!(self, l => l.try_acquire(shard).await)
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        both_locks!(self, l => l.release(lease).await)
    }

    fn is_alive(&self) -> bool {
        both_locks!(self, l => l.is_alive())
    }

    async fn lost(&self) {
        both_locks!(self, l => l.lost().await)
    }

    async fn close(self) -> Result<()> {
        both_locks!(self, l => l.close().await)
    }
}

impl AnyJournal {
    /// Runs a statement outside any transaction (the application's tables: creating
    /// them, for example); returns the rows it changed.
    pub async fn execute(&self, q: Sql<'_>) -> Result<u64> {
        Ok(match self {
            AnyJournal::Postgres(j) => q.pg().execute(j.pool()).await?.rows_affected(),
            AnyJournal::Sqlite(j) => q.sqlite().execute(j.writer()).await?.rows_affected(),
        })
    }

    /// Runs a query (reading the application's tables, on SQLite from a reader
    /// connection); returns every row.
    pub async fn fetch_all(&self, q: Sql<'_>) -> Result<Vec<Row>> {
        Ok(match self {
            AnyJournal::Postgres(j) => q
                .pg()
                .fetch_all(j.pool())
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            AnyJournal::Sqlite(j) => q
                .sqlite()
                .fetch_all(j.reader())
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }

    /// Like [`fetch_all`](Self::fetch_all), for at most one row.
    pub async fn fetch_optional(&self, q: Sql<'_>) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }
}
