//! The PostgreSQL journal: the cluster mode.
//!
//! All tables live in one schema per journal (`entlog` by default), so several journals
//! (and parallel tests) can share a database. Appends and batch commits are single calls
//! of SQL functions (`append_entries` in `append.rs`, `commit_batch` and `commit_batches`
//! in `commit.rs`): one round trip each, atomic in autocommit. Shard ownership is held on
//! dedicated connections ([`PgLocks`], `locks.rs`).

/// SQL: a granted two-key advisory lock in this journal's namespace (`$1`) whose second
/// key is `$key2` exists right now. Two-key advisory locks show in `pg_locks` as
/// `classid` = key 1, `objid` = key 2, `objsubid` = 2.
macro_rules! advisory_lock_held {
    ($key2:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_locks l
                      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid::BIGINT = ($1::BIGINT & 4294967295)
                        AND l.objid::BIGINT = ",
            $key2,
            ")"
        )
    };
}

mod append;
mod clock;
mod commit;
mod held_here;
mod listen;
mod locks;
mod open;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use tokio::sync::OnceCell;
use uuid::Uuid;

pub use locks::PgLocks;
pub use open::PgOptions;

use crate::common::Common;
use crate::damaged::Delivery;
use crate::envelope::{EntityKey, EntryKind};
use crate::error::Result;
use crate::journal::Journal;
use crate::ownership::RunnerInfo;
use crate::pool::Pool;
use crate::read;
use crate::records::{CommitReceipt, ProcessedBatch, StoredReply};
use crate::rows::{delivery_from_row, keyed_reply_from_row, runner_from_row};
use crate::shard::Shard;
use crate::time::Timestamp;

/// SQLSTATE raised by `append_entries` when a lease's epoch is stale.
const FENCED_SQLSTATE: &str = "EL001";

/// A journal stored in a PostgreSQL schema.
#[derive(Clone)]
pub struct PgJournal {
    inner: Arc<Inner>,
}

struct Inner {
    /// Transactions, the application's statements, and what is not on the hot path: every
    /// connection is checked on release (see `open::released_outside_transaction`).
    pool: PgPool,
    /// The journal's own single statements (appends, commits, reads): each runs in its
    /// own implicit transaction, so no connection of this pool can come back inside one,
    /// and it skips the release check's round trip — a sixth of the throughput under load.
    statements: PgPool,
    options: PgOptions,
    /// The shard count and map, the payload limit and the wake-ups.
    common: Common,
    lock_namespace: i32,
    channel: String,
    /// Shards this journal's lock sessions hold: appends to them send no NOTIFY.
    held_here: Arc<held_here::HeldHere>,
    listener: OnceCell<listen::ListenerTask>,
    clock: Arc<clock::ServerClock>,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("schema", &self.inner.options.schema)
            .field("shard_count", &self.inner.common.shard_count)
            .finish()
    }
}

impl PgJournal {
    /// Opens (creating or migrating as needed) the journal described by `options`.
    pub async fn open(options: PgOptions) -> Result<Self> {
        open::open(options).await
    }

    /// Opens an existing, fully migrated journal with its stored shard count (ignoring
    /// `options.shard_count`), creating and migrating nothing: for tools that must not
    /// change a database they only look at.
    pub async fn open_existing(options: PgOptions) -> Result<Self> {
        open::open_existing(options).await
    }

    /// The connection pool, for the application's own read-model tables.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding this journal's tables.
    pub fn schema(&self) -> &str {
        &self.inner.options.schema
    }

    /// Tests only: moves this handle's clock `micros` away from the server's and stops
    /// measuring it, as if this member's clock were wrong — to show that every time a
    /// member stamps or compares comes from [`Journal::now`].
    #[cfg(feature = "testing")]
    pub fn shift_clock(&self, micros: i64) {
        self.inner.clock.shift(micros);
    }

    /// Closes the pools and the listener.
    pub async fn close(&self) {
        self.inner.statements.close().await;
        self.inner.pool.close().await;
    }

    /// A receiver that changes after every wake-up of any shard (see
    /// [`AnyJournal::watch_wakeups`](crate::AnyJournal::watch_wakeups)).
    pub(crate) async fn watch_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        // A listener started here may have missed what committed before it: the caller
        // reads every shard it takes up anyway.
        let _ = self.listen().await;
        self.inner.common.wakeups.watch()
    }

    /// How many wake-ups `shard` has had in this process.
    pub(crate) fn wake_count(&self, shard: Shard) -> u64 {
        self.inner.common.wakeups.count(shard)
    }

    /// The liveness bounds of this journal's lock sessions.
    pub fn liveness(&self) -> crate::Liveness {
        self.inner.options.liveness
    }

    /// The largest payload this journal stores, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.inner.common.max_payload_bytes
    }

    /// Where the journal's own single statements run (see `Inner::statements`).
    fn reads(&self) -> Pool<'_> {
        Pool::Postgres(&self.inner.statements)
    }

    /// Where its bookkeeping writes run: single statements too.
    pub(crate) fn writes(&self) -> Pool<'_> {
        self.reads()
    }

    fn channel(&self) -> Option<&str> {
        self.inner
            .options
            .notify
            .then_some(self.inner.channel.as_str())
    }

    /// Wakes, in this process, the shards a committed batch wrote to.
    pub(crate) fn wake_after(&self, shard: Shard, receipt: &CommitReceipt) {
        self.inner.common.wake_after_commit(shard, receipt);
    }

    /// Starts the notification listener if notifications are on and it is not running
    /// yet. `true` if this call started it: anything committed before it listened went
    /// unheard, so the caller should look (a spurious wake-up) instead of waiting.
    async fn listen(&self) -> bool {
        if !self.inner.options.notify || self.inner.listener.initialized() {
            return false;
        }
        let mut started_here = false;
        let started = self
            .inner
            .listener
            .get_or_try_init(|| {
                started_here = true;
                listen::ListenerTask::start(
                    self.inner.pool.clone(),
                    self.inner.channel.clone(),
                    self.inner.common.wakeups.clone(),
                )
            })
            .await;
        match started {
            Ok(_) => started_here,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN failed; falling back to polling");
                false
            }
        }
    }

    /// [`Journal::read_mailboxes`] after its checks: one statement for every shard.
    async fn read_mailboxes_of(
        &self,
        cursors: &[(Shard, u64)],
        limit_per_shard: usize,
    ) -> Result<Vec<Delivery>> {
        let shards: Vec<i32> = cursors.iter().map(|&(s, _)| s as i32).collect();
        let afters: Vec<i64> = cursors
            .iter()
            .map(|&(_, a)| i64::try_from(a).unwrap_or(i64::MAX))
            .collect();
        // One statement for every shard: each (shard, after) pair walks its partition's
        // primary key from the cursor for at most `limit` rows. `kind <> event` rather than
        // `kind = message`, so that a row whose kind was damaged is delivered as damaged
        // instead of vanishing from the mailbox. A message with a stored reply is done
        // (it committed above its shard's cursor) and is left out.
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            r#" FROM unnest($1::INTEGER[], $2::BIGINT[]) AS s(s_shard, s_after)
                CROSS JOIN LATERAL (
                    SELECT j.* FROM journal j
                     WHERE j.shard = s.s_shard AND j."offset" > s.s_after AND j.kind <> $4
                       AND NOT EXISTS (SELECT 1 FROM replies r
                                        WHERE r.entity_type = j.entity_type
                                          AND r.entity_id = j.entity_id
                                          AND r.message_id = j.message_id)
                     ORDER BY j."offset" LIMIT $3) AS m
                ORDER BY shard, "offset""#
        ))
        .bind(&shards)
        .bind(&afters)
        .bind(i64::try_from(limit_per_shard).unwrap_or(i64::MAX))
        .bind(EntryKind::Event.code())
        .fetch_all(&self.inner.statements)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }
}

impl Journal for PgJournal {
    type Locks = PgLocks;

    // The shard count and map, append, read_mailboxes, record_damaged, save_snapshot,
    // advance_cursor, the reads of `read.rs` and take_schedule_changed.
    crate::same_on_both::same_on_both_backends!();

    fn now(&self) -> Timestamp {
        self.inner.clock.now(&self.inner.pool)
    }

    async fn commit(&self, batch: ProcessedBatch) -> Result<CommitReceipt> {
        let shard = batch.shard;
        let mut conn = self.inner.statements.acquire().await?;
        let receipt = self.commit_on(&mut conn, batch).await?;
        self.wake_after(shard, &receipt);
        Ok(receipt)
    }

    async fn replies(&self, wanted: &[(EntityKey, Uuid)]) -> Result<Vec<(EntityKey, StoredReply)>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = wanted.iter().map(|(k, _)| k.entity_type()).collect();
        let ids: Vec<&str> = wanted.iter().map(|(k, _)| k.entity_id()).collect();
        let messages: Vec<Uuid> = wanted.iter().map(|(_, m)| *m).collect();
        let rows = sqlx::query(
            r#"SELECT r.message_id, r."offset", r.type_tag, r.schema_version, r.payload, r.crc,
                      r.created_at, r.entity_type, r.entity_id
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::UUID[]) AS w(entity_type, entity_id, message_id)
                 JOIN replies r ON r.entity_type = w.entity_type AND r.entity_id = w.entity_id
                               AND r.message_id = w.message_id"#,
        )
        .bind(&types)
        .bind(&ids)
        .bind(&messages)
        .fetch_all(&self.inner.statements)
        .await?;
        rows.iter().map(keyed_reply_from_row).collect()
    }

    async fn promote_due(&self, shard: Shard, now: Timestamp) -> Result<usize> {
        self.inner.common.check_shard(shard)?;
        let moved: i64 = sqlx::query_scalar("SELECT promote_due($1, $2, $3)")
            .bind(shard as i32)
            .bind(now.as_micros())
            .bind(self.channel())
            .fetch_one(&self.inner.statements)
            .await?;
        if moved > 0 {
            self.inner.common.wakeups.wake(shard);
        }
        Ok(moved as usize)
    }

    async fn cancel_scheduled(&self, entity: &EntityKey, message_id: Uuid) -> Result<bool> {
        // `promote_due` deletes the rows it moves in the same statement that inserts them
        // into the partition. Whichever DELETE reaches the row first wins; the other waits
        // for its row lock and then finds the row gone (READ COMMITTED re-checks it), so a
        // message is either cancelled or promoted, never both.
        read::cancel_scheduled(self.reads(), entity, message_id).await
    }

    async fn wait_for_entries(&self, shard: Shard, timeout: Duration) -> bool {
        if self.listen().await {
            return true;
        }
        self.inner.common.wakeups.wait(shard, timeout).await
    }

    async fn wait_for_replies(&self, shard: Shard, timeout: Duration) -> bool {
        if self.listen().await {
            return true;
        }
        self.inner.common.wakeups.wait_replies(shard, timeout).await
    }

    async fn shard_owner(&self, shard: Shard) -> Result<Option<String>> {
        self.inner.common.check_shard(shard)?;
        // Owned = the shard's advisory lock is held right now (see `live_runners`).
        let owner: Option<Option<String>> = sqlx::query_scalar(concat!(
            "SELECT s.owner FROM shards s WHERE s.shard = $2 AND ",
            advisory_lock_held!("s.shard::BIGINT")
        ))
        .bind(self.inner.lock_namespace)
        .bind(shard as i32)
        .fetch_optional(&self.inner.statements)
        .await?;
        Ok(owner.flatten())
    }

    async fn live_runners(&self) -> Result<Vec<RunnerInfo>> {
        // Live = its liveness lock is held right now.
        let rows = sqlx::query(concat!(
            "SELECT r.runner, r.started_at, r.heartbeat_at, r.groups FROM runners r WHERE ",
            advisory_lock_held!("(r.lock_key::BIGINT & 4294967295)"),
            " ORDER BY r.runner"
        ))
        .bind(self.inner.lock_namespace)
        .fetch_all(&self.inner.statements)
        .await?;
        rows.iter().map(runner_from_row).collect()
    }

    async fn lock_session_hosting(
        &self,
        runner: &str,
        groups: Option<&[String]>,
    ) -> Result<PgLocks> {
        PgLocks::connect(
            &self.inner.options,
            self.inner.lock_namespace,
            self.inner.common.shard_count,
            runner,
            groups,
            self.inner.held_here.clone(),
        )
        .await
    }
}
