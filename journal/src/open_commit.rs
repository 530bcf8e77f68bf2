//! The door for a commit that other writes join: a processed batch written inside an open
//! transaction, so that an inline projection's read-model rows commit or roll back with
//! it, and the shards it wrote to woken once — and only once — it commits.
//!
//! ```text
//!   journal.commit_open(batch)   BEGIN; lock the shards written to, in shard order;
//!                                write the batch (its lease's fence checked)
//!   open.tx()                    the application's writes, in the same transaction
//!   open.commit()                COMMIT; wake the shards written to
//! ```
//!
//! Dropped without [`OpenCommit::commit`], the transaction rolls back and nothing is
//! woken. (A batch that no other write joins goes through [`Journal::commit`] or
//! `commit_many`, which commit and wake in one call.)

use sqlx::Sqlite;

use crate::any::AnyJournal;
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::records::{CommitReceipt, ProcessedBatch};
use crate::shard::Shard;
use crate::tx::AnyTx;

/// A processed batch written in an open transaction, not yet committed.
#[derive(Debug)]
pub struct OpenCommit {
    journal: AnyJournal,
    tx: AnyTx,
    shard: Shard,
    receipt: CommitReceipt,
}

impl AnyJournal {
    /// Begins a transaction and writes `batch` in it (events, replies, outgoing messages,
    /// cursor). Fails with [`JournalError::Fenced`] when the batch's lease is stale,
    /// before anything is written.
    pub async fn commit_open(&self, batch: ProcessedBatch) -> Result<OpenCommit> {
        let shard = batch.shard;
        let mut shards = vec![shard];
        for m in &batch.messages {
            shards.extend(m.outgoing.iter().map(|o| self.shard_of(&o.entity)));
        }
        let mut tx = self.begin().await?;
        // Every shard the batch writes to, locked first and in order: two transactions
        // that write to several shards never wait on each other in a cycle.
        tx.lock_shards(&shards).await?;
        let receipt = match (self, &mut tx) {
            (AnyJournal::Postgres(j), AnyTx::Postgres(tx)) => j.commit_on(tx, batch).await?,
            (AnyJournal::Sqlite(j), AnyTx::Sqlite(tx)) => j.commit_on(tx, batch).await?,
            _ => {
                return Err(JournalError::Internal(
                    "a transaction of one backend used with the other".into(),
                ));
            }
        };
        Ok(OpenCommit {
            journal: self.clone(),
            tx,
            shard,
            receipt,
        })
    }
}

impl OpenCommit {
    /// Where the batch's events and outgoing messages went (valid once committed).
    pub fn receipt(&self) -> &CommitReceipt {
        &self.receipt
    }

    /// The open transaction, for writes that must commit with the batch.
    pub fn tx(&mut self) -> &mut AnyTx {
        &mut self.tx
    }

    /// Commits, then wakes in this process the shards the batch wrote to.
    pub async fn commit(self) -> Result<CommitReceipt> {
        self.tx.commit().await?;
        match &self.journal {
            AnyJournal::Postgres(j) => j.wake_after(self.shard, &self.receipt),
            AnyJournal::Sqlite(j) => j.wake_after(self.shard, &self.receipt),
        }
        Ok(self.receipt)
    }
}

impl AnyTx {
    /// Locks the head rows of `shards` for the rest of the transaction, in shard order, and
    /// returns each one's current epoch. A transaction that commits into several shards
    /// takes its locks here first, so two such transactions never wait on each other in a
    /// cycle, and a lease whose epoch differs is known to be fenced before anything is
    /// written. (SQLite has one writer: its transaction holds every shard already.)
    async fn lock_shards(&mut self, shards: &[Shard]) -> Result<Vec<(Shard, u64)>> {
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
}
