//! Transactions for writes that must commit together with a journal checkpoint, such as
//! a projection's read-model rows.

use sqlx::{Postgres, Sqlite, Transaction};

use crate::any::AnyJournal;
use crate::error::{Field, JournalError, Result};
use crate::shard::Shard;
use crate::sql::{Row, Sql, sql};

/// An open transaction on the journal's database (on SQLite, on its single writer
/// connection: keep it short). Dropped without [`commit`](AnyTx::commit), it rolls back.
#[non_exhaustive]
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
