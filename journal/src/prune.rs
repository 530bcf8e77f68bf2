//! Retention: deleting processed messages and their replies past an age, in windows of a
//! few thousand offsets per transaction, beside live runners.

use sqlx::Row;
use uuid::Uuid;

use crate::any::AnyJournal;
use crate::error::Result;
use crate::journal::Journal;
use crate::shard::Shard;
use crate::time::Timestamp;

/// What [`AnyJournal::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Processed messages removed from the journal.
    pub messages: u64,
    /// Their stored replies.
    pub replies: u64,
}

/// Journal rows read per statement while pruning.
const PRUNE_WINDOW: u64 = 5_000;

impl AnyJournal {
    /// Retention: deletes processed messages whose reply was stored before `before`,
    /// together with those replies. Never touches events, scheduled messages, or any
    /// message at or past `consumer`'s cursor (unprocessed). Works in windows of a few
    /// thousand offsets per transaction, so it can run beside live runners.
    ///
    /// The dedup window that results: a message id is recognised for as long as its
    /// reply is kept, so at least `now - before` after it was processed; a send of the
    /// same id after that is a new message.
    pub async fn prune(&self, consumer: &str, before: Timestamp) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for shard in 0..self.shard_count() {
            let cursor = self.cursor(consumer, shard).await?;
            let mut lo = 0;
            while lo < cursor {
                let hi = (lo + PRUNE_WINDOW).min(cursor);
                let (messages, replies) = self.prune_window(shard, lo, hi, before).await?;
                report.messages += messages;
                report.replies += replies;
                lo = hi;
            }
        }
        Ok(report)
    }

    /// One pruning transaction: messages of `shard` in offsets `(lo, hi]`.
    async fn prune_window(
        &self,
        shard: Shard,
        lo: u64,
        hi: u64,
        before: Timestamp,
    ) -> Result<(u64, u64)> {
        let (lo, hi) = (lo as i64, hi as i64);
        macro_rules! window {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                let gone = sqlx::query(
                    r#"DELETE FROM journal
                        WHERE shard = $1 AND "offset" > $2 AND "offset" <= $3 AND kind = 1
                          AND EXISTS (SELECT 1 FROM replies r
                                       WHERE r.entity_type = journal.entity_type
                                         AND r.entity_id = journal.entity_id
                                         AND r.message_id = journal.message_id
                                         AND r.created_at < $4)
                    RETURNING entity_type, entity_id, message_id"#,
                )
                .bind(shard as i32)
                .bind(lo)
                .bind(hi)
                .bind(before.0)
                .fetch_all(&mut *tx)
                .await?;
                let mut replies = 0;
                for r in &gone {
                    let t: String = r.try_get(0)?;
                    let id: String = r.try_get(1)?;
                    let m: Uuid = r.try_get(2)?;
                    replies += sqlx::query(
                        "DELETE FROM replies WHERE entity_type = $1 AND entity_id = $2 AND message_id = $3",
                    )
                    .bind(t)
                    .bind(id)
                    .bind(m)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok((gone.len() as u64, replies))
            }};
        }
        match self {
            AnyJournal::Postgres(j) => window!(j.pool()),
            AnyJournal::Sqlite(j) => window!(j.writer()),
        }
    }
}
