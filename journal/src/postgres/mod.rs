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
#[cfg(feature = "testing")]
mod tamper;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use tokio::sync::OnceCell;
use uuid::Uuid;

pub use locks::PgLocks;
pub use open::PgOptions;

use crate::columns::{EntryColumns, Placed};
use crate::damaged::{DamagedEntry, Delivery};
use crate::envelope::{CrcDomain, EntityKey, EntryKind, NewMessage, checksum};
use crate::error::{Field, Result};
use crate::journal::{Journal, check_shard, mailbox_cursors};
use crate::ownership::RunnerInfo;
use crate::read;
use crate::records::NewSnapshot;
use crate::records::{AppendOutcome, CommitReceipt, ProcessedBatch, StoredReply};
use crate::rows::{delivery_from_row, keyed_reply_from_row, runner_from_row};
use crate::shard::Shard;
use crate::time::Timestamp;
use crate::wakeup::Wakeups;

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
    shard_count: u32,
    /// Routes entities to shards by their type's group.
    shard_map: Arc<crate::shard_groups::ShardMap>,
    lock_namespace: i32,
    channel: String,
    wakeups: Arc<Wakeups>,
    /// Shards this journal's lock sessions hold: appends to them send no NOTIFY.
    held_here: Arc<held_here::HeldHere>,
    listener: OnceCell<listen::ListenerTask>,
    clock: Arc<clock::ServerClock>,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("schema", &self.inner.options.schema)
            .field("shard_count", &self.inner.shard_count)
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
        self.inner.wakeups.watch()
    }

    /// How many wake-ups `shard` has had in this process.
    pub(crate) fn wake_count(&self, shard: Shard) -> u64 {
        self.inner.wakeups.count(shard)
    }

    /// The liveness bounds of this journal's lock sessions.
    pub fn liveness(&self) -> crate::Liveness {
        self.inner.options.liveness
    }

    /// The largest payload this journal stores, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.inner.options.max_payload_bytes
    }

    fn check_shard(&self, shard: Shard) -> Result<()> {
        check_shard(shard, self.inner.shard_count)
    }

    /// Where the journal's own single statements run (see `Inner::statements`).
    fn reads(&self) -> read::Pool<'_> {
        read::Pool::Postgres(&self.inner.statements)
    }

    fn channel(&self) -> Option<&str> {
        self.inner
            .options
            .notify
            .then_some(self.inner.channel.as_str())
    }

    /// Wakes, in this process, the shards a committed batch wrote to.
    pub(crate) fn wake_after(&self, shard: Shard, receipt: &CommitReceipt) {
        self.inner.wakeups.after_commit(shard, receipt);
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
                    self.inner.wakeups.clone(),
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

    fn wake(&self, entries: &EntryColumns, placed: &[Placed]) {
        self.inner.wakeups.after_append(entries, placed);
    }
}

impl Journal for PgJournal {
    type Locks = PgLocks;

    // The shard count and map, read_shard, read_events, reply, load_snapshot, cursor,
    // head, next_due and take_schedule_changed.
    read::same_on_both_backends!();

    fn now(&self) -> Timestamp {
        self.inner.clock.now(&self.inner.pool)
    }

    async fn append(&self, messages: Vec<NewMessage>) -> Result<Vec<AppendOutcome>> {
        self.append_messages(messages).await
    }

    async fn read_mailboxes(
        &self,
        from: &[(Shard, u64)],
        limit_per_shard: usize,
    ) -> Result<Vec<Delivery>> {
        let cursors = mailbox_cursors(from, self.inner.shard_count)?;
        if cursors.is_empty() || limit_per_shard == 0 {
            return Ok(Vec::new());
        }
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

    async fn record_damaged(&self, entries: &[DamagedEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            self.check_shard(e.shard)?;
        }
        let shards: Vec<i32> = entries.iter().map(|e| e.shard as i32).collect();
        let offsets: Vec<i64> = entries
            .iter()
            .map(|e| i64::try_from(e.offset).unwrap_or(i64::MAX))
            .collect();
        let reasons: Vec<&str> = entries.iter().map(|e| e.reason.as_str()).collect();
        sqlx::query(
            r#"INSERT INTO damaged_entries (shard, "offset", reason, recorded_at)
               SELECT shard, "offset", reason, $4
                 FROM unnest($1::INTEGER[], $2::BIGINT[], $3::TEXT[]) AS d(shard, "offset", reason)
               ON CONFLICT (shard, "offset") DO NOTHING"#,
        )
        .bind(&shards)
        .bind(&offsets)
        .bind(&reasons)
        .bind(self.now().as_micros())
        .execute(&self.inner.statements)
        .await?;
        Ok(())
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

    async fn save_snapshot(&self, snapshot: NewSnapshot) -> Result<()> {
        snapshot.state.check(self.inner.options.max_payload_bytes)?;
        let crc = checksum(
            CrcDomain::Snapshot,
            &snapshot.entity,
            Some(snapshot.seq),
            &Uuid::nil(),
            &snapshot.state,
        );
        sqlx::query(
            "INSERT INTO snapshots AS s (entity_type, entity_id, seq, type_tag, state_version, payload, crc, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (entity_type, entity_id) DO UPDATE
                SET seq = EXCLUDED.seq, type_tag = EXCLUDED.type_tag,
                    state_version = EXCLUDED.state_version, payload = EXCLUDED.payload,
                    crc = EXCLUDED.crc, created_at = EXCLUDED.created_at
              WHERE s.seq <= EXCLUDED.seq",
        )
        .bind(snapshot.entity.entity_type())
        .bind(snapshot.entity.entity_id())
        .bind(snapshot.seq as i64)
        .bind(&snapshot.state.type_tag)
        .bind(snapshot.state.version as i32)
        .bind(&snapshot.state.bytes)
        .bind(i64::from(crc))
        .bind(self.now().as_micros())
        .execute(&self.inner.statements)
        .await?;
        Ok(())
    }

    async fn advance_cursor(&self, consumer: &str, shard: Shard, offset: u64) -> Result<()> {
        self.check_shard(shard)?;
        crate::names::check_name(Field::Consumer, consumer)?;
        sqlx::query(
            r#"INSERT INTO cursors AS c (consumer, shard, "offset") VALUES ($1, $2, $3)
               ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = GREATEST(c."offset", EXCLUDED."offset")"#,
        )
        .bind(consumer)
        .bind(shard as i32)
        .bind(offset as i64)
        .execute(&self.inner.statements)
        .await?;
        Ok(())
    }

    async fn promote_due(&self, shard: Shard, now: Timestamp) -> Result<usize> {
        self.check_shard(shard)?;
        let moved: i64 = sqlx::query_scalar("SELECT promote_due($1, $2, $3)")
            .bind(shard as i32)
            .bind(now.as_micros())
            .bind(self.channel())
            .fetch_one(&self.inner.statements)
            .await?;
        if moved > 0 {
            self.inner.wakeups.wake(shard);
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
        self.inner.wakeups.wait(shard, timeout).await
    }

    async fn wait_for_replies(&self, shard: Shard, timeout: Duration) -> bool {
        if self.listen().await {
            return true;
        }
        self.inner.wakeups.wait_replies(shard, timeout).await
    }

    async fn shard_owner(&self, shard: Shard) -> Result<Option<String>> {
        self.check_shard(shard)?;
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
            self.inner.shard_count,
            runner,
            groups,
            self.inner.held_here.clone(),
        )
        .await
    }
}
