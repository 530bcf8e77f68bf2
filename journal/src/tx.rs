//! Transactions for writes that must commit together with a journal checkpoint, such as
//! a projection's read-model rows.

use sqlx::{Postgres, Sqlite, Transaction};

use crate::any::AnyJournal;
use crate::error::{Field, JournalError, Result};
use crate::shard::Shard;
use crate::sql::{Row, Sql, sql};

/// An open transaction on the journal's database (on SQLite, on its single writer
/// connection: keep it short). Dropped without [`commit`](AnyTx::commit), it rolls back.
pub enum AnyTx {
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
    /// SQLite.
    Sqlite(Transaction<'static, Sqlite>),
}

impl std::fmt::Debug for AnyTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnyTx::Postgres(_) => "AnyTx::Postgres",
            AnyTx::Sqlite(_) => "AnyTx::Sqlite",
        })
    }
}

impl AnyTx {
    /// Runs a statement in this transaction; returns the rows it changed.
    pub async fn execute(&mut self, q: Sql<'_>) -> Result<u64> {
        Ok(match self {
            AnyTx::Postgres(tx) => q.pg().execute(&mut **tx).await?.rows_affected(),
            AnyTx::Sqlite(tx) => q.sqlite().execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs a query in this transaction; returns every row.
    pub async fn fetch_all(&mut self, q: Sql<'_>) -> Result<Vec<Row>> {
        Ok(match self {
            AnyTx::Postgres(tx) => q
                .pg()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            AnyTx::Sqlite(tx) => q
                .sqlite()
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        })
    }
}

impl AnyJournal {
    /// Begins a transaction on the journal's database.
    pub async fn begin(&self) -> Result<AnyTx> {
        Ok(match self {
            AnyJournal::Postgres(j) => AnyTx::Postgres(j.pool().begin().await?),
            AnyJournal::Sqlite(j) => AnyTx::Sqlite(j.writer().begin().await?),
        })
    }
}

impl AnyJournal {
    /// Commits a shard's processed batch inside `tx`, so that other writes in `tx` (an
    /// inline projection's) commit or roll back with it. Nothing is visible until the
    /// caller commits `tx`; then call [`AnyJournal::wake_after`].
    pub async fn commit_in(
        &self,
        tx: &mut AnyTx,
        batch: crate::records::ProcessedBatch,
    ) -> Result<crate::records::CommitReceipt> {
        match (self, tx) {
            (AnyJournal::Postgres(j), AnyTx::Postgres(tx)) => j.commit_on(tx, batch).await,
            (AnyJournal::Sqlite(j), AnyTx::Sqlite(tx)) => j.commit_on(tx, batch).await,
            _ => Err(JournalError::Internal(
                "a transaction of one backend used with the other".into(),
            )),
        }
    }

    /// Wakes, in this process, the tailers of the shards a committed batch wrote to.
    pub fn wake_after(&self, shard: Shard, receipt: &crate::records::CommitReceipt) {
        match self {
            AnyJournal::Postgres(j) => j.wake_after(shard, receipt),
            AnyJournal::Sqlite(j) => j.wake_after(shard, receipt),
        }
    }
}

impl AnyTx {
    /// Makes sure a checkpoint row exists (at 0) for (consumer, shard).
    pub async fn ensure_checkpoint(&mut self, consumer: &str, shard: Shard) -> Result<()> {
        crate::names::check_name(Field::Consumer, consumer)?;
        self.execute(
            sql(
                r#"INSERT INTO cursors (consumer, shard, "offset") VALUES ($1, $2, 0)
                   ON CONFLICT (consumer, shard) DO NOTHING"#,
            )
            .bind(consumer)
            .bind(shard as i32),
        )
        .await?;
        Ok(())
    }

    /// Moves a checkpoint from `from` to `to` in this transaction, or fails with
    /// [`JournalError::CheckpointMoved`] if it is no longer at `from` — another writer
    /// got there first, and this transaction must roll back. This compare-and-set makes
    /// checkpointed writes exactly-once even if two writers briefly overlap.
    pub async fn move_checkpoint(
        &mut self,
        consumer: &str,
        shard: Shard,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let moved = self
            .execute(
                sql(r#"UPDATE cursors SET "offset" = $4
                       WHERE consumer = $1 AND shard = $2 AND "offset" = $3"#)
                .bind(consumer)
                .bind(shard as i32)
                .bind(from as i64)
                .bind(to as i64),
            )
            .await?;
        if moved == 1 {
            Ok(())
        } else {
            Err(JournalError::CheckpointMoved {
                consumer: consumer.to_owned(),
                shard,
                expected: from,
            })
        }
    }

    /// Sets a checkpoint unconditionally (for resets and rebuilds).
    pub async fn set_checkpoint(&mut self, consumer: &str, shard: Shard, to: u64) -> Result<()> {
        self.execute(
            sql(
                r#"INSERT INTO cursors (consumer, shard, "offset") VALUES ($1, $2, $3)
                   ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = excluded."offset""#,
            )
            .bind(consumer)
            .bind(shard as i32)
            .bind(to as i64),
        )
        .await?;
        Ok(())
    }

    /// Locks the head rows of `shards` for the rest of the transaction, in shard order, and
    /// returns each one's current epoch. A transaction that commits into several shards
    /// takes its locks here first, so two such transactions never wait on each other in a
    /// cycle, and a lease whose epoch differs is known to be fenced before anything is
    /// written. (SQLite has one writer: its transaction holds every shard already.)
    pub async fn lock_shards(&mut self, shards: &[Shard]) -> Result<Vec<(Shard, u64)>> {
        let mut sorted: Vec<i32> = shards.iter().map(|&s| s as i32).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let rows: Vec<(i32, i64)> = match self {
            AnyTx::Postgres(tx) => sqlx::query_as(
                "SELECT shard, epoch FROM shards WHERE shard = ANY($1) ORDER BY shard FOR UPDATE",
            )
            .bind(&sorted)
            .fetch_all(&mut **tx)
            .await?,
            AnyTx::Sqlite(tx) => {
                let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                    "SELECT shard, epoch FROM shards WHERE shard IN (",
                );
                let mut list = q.separated(", ");
                for s in &sorted {
                    list.push_bind(*s);
                }
                q.push(") ORDER BY shard");
                q.build_query_as().fetch_all(&mut **tx).await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(s, e)| (s as Shard, e.max(0) as u64))
            .collect())
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        match self {
            AnyTx::Postgres(tx) => tx.commit().await?,
            AnyTx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<()> {
        match self {
            AnyTx::Postgres(tx) => tx.rollback().await?,
            AnyTx::Sqlite(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}
