//! Commits on PostgreSQL: a processed batch on a connection or inside a caller's
//! transaction ([`commit_on`], one call of `commit_batch`), and the batches of several
//! shards in one call of `commit_batches` ([`commit_many`], the runner's group commit);
//! both SQL functions are defined last in migrations/postgres/0012_headers.sql. And the
//! mapping of their errors to the journal's.
//!
//! [`commit_on`]: PgJournal::commit_on
//! [`commit_many`]: PgJournal::commit_many

use sqlx::Row;
use sqlx::postgres::{PgDatabaseError, PgRow};

use super::{FENCED_SQLSTATE, PgJournal};
use crate::columns::{EntryColumns, ManyPart, Placed, ReplyColumns};
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::outcomes::{receipt, receipts};
use crate::records::{Askers, CommitReceipt, ProcessedBatch};
use crate::shard::Shard;

impl PgJournal {
    /// Commits a processed batch on `conn` — the pool, or an open transaction whose
    /// other writes must commit with it (inline projections). On a transaction, nothing
    /// is visible (nor are other shards woken) until the caller commits it.
    pub(crate) async fn commit_on(
        &self,
        conn: &mut sqlx::PgConnection,
        mut batch: ProcessedBatch,
    ) -> Result<CommitReceipt> {
        let now = self.now();
        let cols = self.inner.common.batch_columns(&mut batch, now)?;
        let (consumer, cursor) = match batch.cursor {
            Some((c, o)) => (Some(c), Some(o as i64)),
            None => (None, None),
        };
        let epoch = batch.lease.map(|l| l.epoch);
        let e = &cols.entries;
        let r = &cols.replies;
        let rows = sqlx::query(
            "SELECT * FROM commit_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)",
        )
        .bind(now.as_micros())
        .bind(self.channel())
        .bind(batch.lease.map(|l| l.shard as i32))
        .bind(epoch.map(|e| e as i64))
        .bind_entries(e)
        .bind(batch.shard as i32)
        .bind_replies(r)
        .bind(consumer)
        .bind(cursor)
        .fetch_all(conn)
        .await
        .map_err(|err| classify(err, batch.shard, epoch))?;
        let rows = append_rows(rows)?;
        receipt(self, &cols, &rows).await
    }

    /// Commits the processed batches of several shards (at most one batch per shard) in
    /// one call of `commit_batches` (migrations/postgres/0012_headers.sql), which
    /// locks every shard involved in shard order and checks each batch's lease. All commit
    /// or none; a stale lease fails the call with [`JournalError::Fenced`] naming its shard
    /// before anything is written. Receipts in batch order; the shards are woken after.
    ///
    /// With [`Askers::Here`], the commit sends no notification when its outgoing messages
    /// (if any) go only to shards this journal's lock sessions hold: no other process
    /// waits for what it wrote.
    pub async fn commit_many(
        &self,
        batches: Vec<ProcessedBatch>,
        askers: Askers,
    ) -> Result<Vec<CommitReceipt>> {
        let now = self.now();
        let many = self.inner.common.many_columns(batches, now)?;
        let f_shard: Vec<i32> = many.parts.iter().map(|p| p.shard as i32).collect();
        let f_epoch: Vec<Option<i64>> = many
            .parts
            .iter()
            .map(|p| p.lease.map(|l| l.epoch as i64))
            .collect();
        let cursors: Vec<(&str, i32, i64)> = many
            .parts
            .iter()
            .filter_map(|p| {
                p.cursor
                    .as_ref()
                    .map(|(c, o)| (c.as_str(), p.shard as i32, *o as i64))
            })
            .collect();
        let consumer = cursors.first().map(|c| c.0);
        let c_shard: Vec<i32> = cursors.iter().map(|c| c.1).collect();
        let c_offset: Vec<i64> = cursors.iter().map(|c| c.2).collect();
        let r_shard: Vec<i32> = many.reply_shards.iter().map(|&s| s as i32).collect();
        let sent_to: Vec<i32> = (0..many.entries.len())
            .filter(|&i| many.entries.kind[i] == 1)
            .map(|i| many.entries.shard[i])
            .collect();
        let channel = match askers {
            Askers::Here if self.inner.held_here.all(&sent_to) => None,
            _ => self.channel(),
        };
        let e = &many.entries;
        let r = &many.replies;
        let rows = sqlx::query(
            "SELECT * FROM commit_batches($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)",
        )
        .bind(now.as_micros())
        .bind(channel)
        .bind(&f_shard)
        .bind(&f_epoch)
        .bind_entries(e)
        .bind(&r_shard)
        .bind_replies(r)
        .bind(consumer)
        .bind(&c_shard)
        .bind(&c_offset)
        .fetch_all(&self.inner.statements)
        .await
        .map_err(|err| classify_many(err, &many.parts))?;
        let placed = append_rows(rows)?;
        let receipts = receipts(self, &many, &placed).await?;
        for (part, receipt) in many.parts.iter().zip(&receipts) {
            self.wake_after(part.shard, receipt);
        }
        Ok(receipts)
    }
}

/// Decodes `append_entries`, `commit_batch` and `commit_batches` rows (already in input
/// order).
pub(super) fn append_rows(rows: Vec<PgRow>) -> Result<Vec<Placed>> {
    rows.iter()
        .map(|r| {
            Ok(Placed {
                offset: r.try_get::<Option<i64>, _>(1)?.map(|o| o as u64),
                duplicate: r.try_get(2)?,
                scheduled: r.try_get(3)?,
            })
        })
        .collect()
}

/// Maps database errors that carry a meaning to the journal's variants.
fn classify(err: sqlx::Error, shard: Shard, epoch: Option<u64>) -> JournalError {
    if let sqlx::Error::Database(db) = &err
        && let Some(pg) = db.try_downcast_ref::<PgDatabaseError>()
    {
        if pg.code() == FENCED_SQLSTATE {
            return JournalError::Fenced {
                shard,
                epoch: epoch.unwrap_or(0),
            };
        }
        if pg.code() == "23505"
            && matches!(pg.constraint(), Some("journal_event_seq" | "replies_pkey"))
        {
            return JournalError::SeqConflict {
                shard,
                detail: pg.detail().unwrap_or(pg.message()).to_owned(),
            };
        }
    }
    JournalError::Persistence(err)
}

/// Binds the entry columns, in the order every journal function takes them
/// (`p_shard` … `p_headers`), and the reply columns, in the order the commit functions
/// take them (`r_entity_type` … `r_crc`).
pub(super) trait BindEntries<'q> {
    fn bind_entries(self, e: &'q EntryColumns) -> Self;
    fn bind_replies(self, r: &'q ReplyColumns) -> Self;
}

impl<'q> BindEntries<'q> for sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_entries(self, e: &'q EntryColumns) -> Self {
        self.bind(&e.shard)
            .bind(&e.kind)
            .bind(&e.entity_type)
            .bind(&e.entity_id)
            .bind(&e.seq)
            .bind(&e.message_id)
            .bind(&e.type_tag)
            .bind(&e.schema_version)
            .bind(&e.payload)
            .bind(&e.crc)
            .bind(&e.deliver_at)
            .bind(&e.created_at)
            .bind(&e.headers)
    }

    fn bind_replies(self, r: &'q ReplyColumns) -> Self {
        self.bind(&r.entity_type)
            .bind(&r.entity_id)
            .bind(&r.message_id)
            .bind(&r.offset)
            .bind(&r.type_tag)
            .bind(&r.schema_version)
            .bind(&r.payload)
            .bind(&r.crc)
    }
}

/// Maps the errors of a many-shard commit: `Fenced` names the shard the database named.
pub(super) fn classify_many(err: sqlx::Error, parts: &[ManyPart]) -> JournalError {
    let fenced = match &err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .filter(|pg| pg.code() == FENCED_SQLSTATE)
            .and_then(|pg| pg.hint())
            .and_then(|h| h.parse::<Shard>().ok()),
        _ => None,
    };
    match fenced {
        Some(shard) => JournalError::Fenced {
            shard,
            epoch: parts
                .iter()
                .find(|p| p.shard == shard)
                .and_then(|p| p.lease.map(|l| l.epoch))
                .unwrap_or(0),
        },
        None => {
            let shard = parts.first().map_or(0, |p| p.shard);
            classify(err, shard, None)
        }
    }
}
