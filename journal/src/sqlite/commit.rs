//! Commits on SQLite: a processed batch inside a caller's transaction ([`commit_on`],
//! used with inline projections), the batches of several shards in one transaction
//! ([`commit_many`], the runner's group commit). The rows themselves are
//! placed by `place.rs`, as for appends.
//!
//! [`commit_on`]: SqliteJournal::commit_on
//! [`commit_many`]: SqliteJournal::commit_many

use super::SqliteJournal;
use super::place::{self, Dedup};
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::outcomes::{receipt, receipts};
use crate::ownership::Lease;
use crate::records::{CommitReceipt, ProcessedBatch};
use crate::shard::Shard;
use crate::writes::ADVANCE_CURSOR;

impl SqliteJournal {
    /// Commits a processed batch inside the open transaction `tx` (the caller commits).
    pub(crate) async fn commit_on(
        &self,
        tx: &mut sqlx::SqliteConnection,
        mut batch: ProcessedBatch,
    ) -> Result<CommitReceipt> {
        let now = self.now();
        let cols = self.inner.common.batch_columns(&mut batch, now)?;
        let shard = batch.shard;
        let fence: Vec<Lease> = batch.lease.into_iter().collect();
        let placed = place::place(&mut *tx, &cols.entries, now, &fence, Dedup::Lookup)
            .await
            .map_err(|e| match e {
                JournalError::Persistence(err) => classify(err, shard),
                other => other,
            })?
            .ok_or_else(|| {
                JournalError::Internal("placement with lookups cannot conflict".into())
            })?;
        let shards = vec![shard; cols.replies.message_id.len()];
        place::insert_replies(&mut *tx, &shards, &cols.replies, now)
            .await
            .map_err(|e| classify(e, shard))?;
        if let Some((consumer, offset)) = &batch.cursor {
            sqlx::query(ADVANCE_CURSOR)
                .bind(consumer)
                .bind(shard as i32)
                .bind(i64::try_from(*offset).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
        }
        receipt(self, &cols, &placed).await
    }

    /// Commits the processed batches of several shards (at most one batch per shard) in
    /// one transaction of a few statements: one placement of every event and outgoing
    /// message, one insert of every reply, the cursors. All commit or none; a stale lease
    /// fails it with [`JournalError::Fenced`] naming its shard before anything is written.
    /// Receipts in batch order; the shards are woken after.
    pub async fn commit_many(&self, batches: Vec<ProcessedBatch>) -> Result<Vec<CommitReceipt>> {
        let now = self.now();
        let many = self.inner.common.many_columns(batches, now)?;
        let mut tx = self.inner.writer.begin().await?;
        // Every lease's fence, checked with the heads (one statement).
        let leases: Vec<Lease> = many.parts.iter().filter_map(|p| p.lease).collect();
        let first = many.parts.first().map_or(0, |p| p.shard);
        let placed = place::place(&mut tx, &many.entries, now, &leases, Dedup::Lookup)
            .await
            .map_err(|e| match e {
                JournalError::Persistence(err) => classify(err, first),
                other => other,
            })?
            .ok_or_else(|| {
                JournalError::Internal("placement with lookups cannot conflict".into())
            })?;
        place::insert_replies(&mut tx, &many.reply_shards, &many.replies, now)
            .await
            .map_err(|e| classify(e, first))?;
        // Every cursor in one statement.
        let cursors: Vec<(Shard, &str, u64)> = many
            .parts
            .iter()
            .filter_map(|p| p.cursor.as_ref().map(|(n, o)| (p.shard, n.as_str(), *o)))
            .collect();
        if !cursors.is_empty() {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                r#"INSERT INTO cursors (consumer, shard, "offset") "#,
            );
            q.push_values(&cursors, |mut b, (shard, consumer, offset)| {
                b.push_bind(*consumer)
                    .push_bind(*shard as i64)
                    .push_bind(*offset as i64);
            });
            q.push(
                r#" ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = max(cursors."offset", excluded."offset")"#,
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let receipts = receipts(self, &many, &placed).await?;
        for (part, receipt) in many.parts.iter().zip(&receipts) {
            self.wake_after(part.shard, receipt);
        }
        Ok(receipts)
    }
}

/// Maps unique violations of the fencing indexes to `SeqConflict`.
fn classify(err: sqlx::Error, shard: Shard) -> JournalError {
    if let sqlx::Error::Database(db) = &err {
        let msg = db.message();
        if db.is_unique_violation() && (msg.contains("journal.seq") || msg.contains("replies.")) {
            return JournalError::SeqConflict {
                shard,
                detail: msg.to_owned(),
            };
        }
    }
    JournalError::Persistence(err)
}
