//! The SQLite journal: the embedded default, for one process.
//!
//! One writer connection allocates offsets and commits, so commit order is offset order by
//! construction; readers use their own connections (WAL lets them read while the writer
//! writes). One process owns the file: [`SqliteJournal::open`] takes an exclusive lock on
//! the database file (see `owner.rs`), and a second opener — by any path to the file —
//! gets [`JournalError::Locked`] instead of a split brain.

mod append;
mod checkpoint;
mod commit;
mod locks;
mod open;
mod owner;
mod place;

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use uuid::Uuid;

pub use locks::SqliteLocks;
pub use open::{Access, Durability, SqliteOptions};

use crate::common::Common;
use crate::damaged::Delivery;
use crate::envelope::{EntityKey, EntryKind};
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::ownership::RunnerInfo;
use crate::pool::Pool;
use crate::read;
use crate::records::{CommitReceipt, ProcessedBatch, StoredReply};
use crate::rows::{delivery_from_row, keyed_reply_from_row};
use crate::shard::Shard;
use crate::time::Timestamp;

/// Wanted replies per query of [`Journal::replies`]: three parameters each, well under
/// SQLite's limit on bound parameters (32 766 since 3.32).
const REPLIES_PER_QUERY: usize = 500;

/// A journal in one SQLite file, owned by this process.
#[derive(Clone)]
pub struct SqliteJournal {
    inner: Arc<Inner>,
}

struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    options: SqliteOptions,
    /// The shard count and map, the payload limit and the wake-ups.
    common: Common,
    /// Runners with an open lock session in this process: the only live ones.
    live: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The exclusive lock on the file, held until the journal is closed or dropped.
    owner: std::sync::Mutex<Option<owner::OwnerLock>>,
    /// Looks whether another handle owns the file (for handles without `owner`).
    probe: owner::OwnerProbe,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.inner.options.path)
            .field("shard_count", &self.inner.common.shard_count)
            .finish()
    }
}

impl SqliteJournal {
    /// Opens (creating or migrating as needed) the journal file described by `options`.
    pub async fn open(options: SqliteOptions) -> Result<Self> {
        open::open(options).await
    }

    /// Opens an existing, fully migrated journal file with its stored shard count
    /// (ignoring `options.shard_count`), creating and migrating nothing. With
    /// [`Access::ReadOnly`] it takes no owner lock, so tools can look at a journal while
    /// its process runs.
    pub async fn open_existing(options: SqliteOptions, access: Access) -> Result<Self> {
        open::open_existing(options, access).await
    }

    /// The journal's database file.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.options.path
    }

    /// The writer pool (one connection), for read-model writes that must commit with
    /// journal writes.
    pub fn writer(&self) -> &SqlitePool {
        &self.inner.writer
    }

    /// Whether some process (this one or another) holds the file's owner lock now.
    pub async fn owner_alive(&self) -> Result<bool> {
        if self
            .inner
            .owner
            .lock()
            .map(|o| o.is_some())
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.probe.owned())
            .await
            .map_err(|e| JournalError::Internal(format!("owner-lock probe failed: {e}")))?
    }

    /// The reader pool, for queries.
    pub fn reader(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// Closes both pools and releases the file to other openers. Every clone of this
    /// journal is unusable afterwards.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
        if let Ok(mut owner) = self.inner.owner.lock() {
            owner.take();
        }
    }

    /// A receiver that changes after every wake-up of any shard.
    pub(crate) fn watch_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.common.wakeups.watch()
    }

    /// How many wake-ups `shard` has had.
    pub(crate) fn wake_count(&self, shard: Shard) -> u64 {
        self.inner.common.wakeups.count(shard)
    }

    /// The largest payload this journal stores, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.inner.common.max_payload_bytes
    }

    /// Where reads run: the reader connections.
    fn reads(&self) -> Pool<'_> {
        Pool::Sqlite(&self.inner.reader)
    }

    /// Where bookkeeping writes run: the writer connection.
    pub(crate) fn writes(&self) -> Pool<'_> {
        Pool::Sqlite(&self.inner.writer)
    }

    /// Wakes the shards a committed batch wrote to.
    pub(crate) fn wake_after(&self, shard: Shard, receipt: &CommitReceipt) {
        self.inner.common.wake_after_commit(shard, receipt);
    }

    /// [`Journal::read_mailboxes`] after its checks: one statement for every shard.
    async fn read_mailboxes_of(
        &self,
        cursors: &[(Shard, u64)],
        limit_per_shard: usize,
    ) -> Result<Vec<Delivery>> {
        // The pairs go in as one JSON array of integers, so the statement is the same for
        // any number of shards.
        let pairs: Vec<String> = cursors
            .iter()
            .map(|&(s, a)| format!("[{s},{}]", i64::try_from(a).unwrap_or(i64::MAX)))
            .collect();
        let pairs = format!("[{}]", pairs.join(","));
        // SQLite has no LATERAL join: each shard's window is bounded instead by the offset of
        // its `limit`-th mailbox entry after the cursor (or unbounded when it has fewer),
        // found once per shard on the primary key (MATERIALIZED keeps it from being
        // recomputed per row). `kind <> event` rather than `kind = message`, so that a row
        // whose kind was damaged is delivered as damaged instead of vanishing. A message
        // with a stored reply is done (it committed above its shard's cursor): left out.
        let rows = sqlx::query(concat!(
            r#"WITH s(s_shard, s_after) AS (
                    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)),
                b(b_shard, b_after, b_upto) AS MATERIALIZED (
                    SELECT s_shard, s_after, coalesce(
                        (SELECT k."offset" FROM journal k
                          WHERE k.shard = s.s_shard AND k."offset" > s.s_after AND k.kind <> ?3
                            AND NOT EXISTS (SELECT 1 FROM replies r
                                             WHERE r.entity_type = k.entity_type
                                               AND r.entity_id = k.entity_id
                                               AND r.message_id = k.message_id)
                          ORDER BY k."offset" LIMIT 1 OFFSET ?2),
                        9223372036854775807)
                      FROM s)
               SELECT "#,
            entry_columns!(),
            r#" FROM b JOIN journal j
                  ON j.shard = b.b_shard AND j."offset" > b.b_after AND j."offset" <= b.b_upto
                 AND j.kind <> ?3
                 AND NOT EXISTS (SELECT 1 FROM replies r
                                  WHERE r.entity_type = j.entity_type
                                    AND r.entity_id = j.entity_id
                                    AND r.message_id = j.message_id)
               ORDER BY j.shard, j."offset""#
        ))
        .bind(pairs)
        .bind(i64::try_from(limit_per_shard - 1).unwrap_or(i64::MAX))
        .bind(EntryKind::Event.code())
        .fetch_all(&self.inner.reader)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }
}

impl Journal for SqliteJournal {
    type Locks = SqliteLocks;

    // The shard count and map, append, read_mailboxes, record_damaged, save_snapshot,
    // advance_cursor, the reads of `read.rs` and take_schedule_changed.
    crate::same_on_both::same_on_both_backends!();

    async fn commit(&self, batch: ProcessedBatch) -> Result<CommitReceipt> {
        let shard = batch.shard;
        let mut tx = self.inner.writer.begin().await?;
        let receipt = self.commit_on(&mut tx, batch).await?;
        tx.commit().await?;
        self.wake_after(shard, &receipt);
        Ok(receipt)
    }

    async fn replies(&self, wanted: &[(EntityKey, Uuid)]) -> Result<Vec<(EntityKey, StoredReply)>> {
        let mut found = Vec::new();
        for chunk in wanted.chunks(REPLIES_PER_QUERY) {
            let values = (0..chunk.len())
                .map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                r#"WITH w(entity_type, entity_id, message_id) AS (VALUES {values})
                   SELECT r.message_id, r."offset", r.type_tag, r.schema_version, r.payload, r.crc,
                          r.created_at, r.entity_type, r.entity_id
                     FROM w JOIN replies r ON r.entity_type = w.entity_type
                      AND r.entity_id = w.entity_id AND r.message_id = w.message_id"#
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (entity, message_id) in chunk {
                query = query
                    .bind(entity.entity_type())
                    .bind(entity.entity_id())
                    .bind(*message_id);
            }
            for row in query.fetch_all(&self.inner.reader).await? {
                found.push(keyed_reply_from_row(&row)?);
            }
        }
        Ok(found)
    }

    async fn promote_due(&self, shard: Shard, now: Timestamp) -> Result<usize> {
        self.inner.common.check_shard(shard)?;
        let mut tx = self.inner.writer.begin().await?;
        let moved = place::promote_due(&mut tx, shard, now).await?;
        tx.commit().await?;
        if moved > 0 {
            self.inner.common.wakeups.wake(shard);
        }
        Ok(moved)
    }

    async fn cancel_scheduled(&self, entity: &EntityKey, message_id: Uuid) -> Result<bool> {
        // On the single writer connection, so it is serialized with promotion.
        read::cancel_scheduled(Pool::Sqlite(&self.inner.writer), entity, message_id).await
    }

    async fn wait_for_entries(&self, shard: Shard, timeout: Duration) -> bool {
        self.inner.common.wakeups.wait(shard, timeout).await
    }

    async fn wait_for_replies(&self, shard: Shard, timeout: Duration) -> bool {
        self.inner.common.wakeups.wait_replies(shard, timeout).await
    }

    async fn lock_session_hosting(
        &self,
        runner: &str,
        groups: Option<&[String]>,
    ) -> Result<SqliteLocks> {
        locks::open_session(self, runner, groups).await
    }

    async fn shard_owner(&self, shard: Shard) -> Result<Option<String>> {
        locks::shard_owner(self, shard).await
    }

    async fn live_runners(&self) -> Result<Vec<RunnerInfo>> {
        locks::live_runners(self).await
    }
}
