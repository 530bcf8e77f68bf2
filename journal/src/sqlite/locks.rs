//! Shard ownership on SQLite, beside PostgreSQL's `postgres/locks.rs`: the process that
//! holds the file (see `owner.rs`) owns every shard, and a runner's lock session lives as
//! long as its [`SqliteLocks`]. Each acquisition still bumps the shard's epoch, so
//! fencing behaves as on PostgreSQL.

use sqlx::Row;

use super::SqliteJournal;
use crate::error::{Field, JournalError, Result};
use crate::journal::Journal;
use crate::ownership::{Lease, RunnerInfo, ShardLocks, encode_hosted};
use crate::rows::runner_from_row;
use crate::shard::Shard;

/// Opens `runner`'s lock session; one per runner id in this process.
pub(super) async fn open_session(
    j: &SqliteJournal,
    runner: &str,
    groups: Option<&[String]>,
) -> Result<SqliteLocks> {
    crate::names::check_name(Field::Consumer, runner)?;
    let groups = encode_hosted(groups)?;
    let fresh = j
        .inner
        .live
        .lock()
        .map(|mut live| live.insert(runner.to_owned()))
        .unwrap_or(false);
    if !fresh {
        return Err(JournalError::RunnerInUse {
            runner: runner.to_owned(),
        });
    }
    let locks = SqliteLocks {
        journal: j.clone(),
        runner: runner.to_owned(),
    };
    let now = j.now().as_micros();
    sqlx::query(
        "INSERT INTO runners (runner, lock_key, started_at, heartbeat_at, groups) VALUES (?1, 0, ?2, ?2, ?3)
         ON CONFLICT (runner) DO UPDATE SET started_at = ?2, heartbeat_at = ?2, groups = ?3",
    )
    .bind(runner)
    .bind(now)
    .bind(groups)
    .execute(&j.inner.writer)
    .await?;
    Ok(locks)
}

/// The runner owning `shard`, if its lock session in this process is open.
pub(super) async fn shard_owner(j: &SqliteJournal, shard: Shard) -> Result<Option<String>> {
    j.inner.common.check_shard(shard)?;
    let owner: Option<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM shards WHERE shard = ?1")
            .bind(shard as i64)
            .fetch_optional(&j.inner.reader)
            .await?;
    // Owned only while the owner's lock session in this process is open.
    let live = |r: &String| j.inner.live.lock().is_ok_and(|l| l.contains(r));
    Ok(owner.flatten().filter(live))
}

/// The runners with an open lock session in this process: the only live ones.
pub(super) async fn live_runners(j: &SqliteJournal) -> Result<Vec<RunnerInfo>> {
    let live: Vec<String> = j
        .inner
        .live
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    let rows =
        sqlx::query("SELECT runner, started_at, heartbeat_at, groups FROM runners ORDER BY runner")
            .fetch_all(&j.inner.reader)
            .await?;
    let mut out = Vec::new();
    for r in &rows {
        let runner: String = r.try_get(0)?;
        if live.contains(&runner) {
            out.push(runner_from_row(r)?);
        }
    }
    Ok(out)
}

/// Shard ownership on SQLite: the process that holds the file owns every shard. Each
/// acquisition still bumps the shard's epoch, so fencing behaves as on PostgreSQL.
#[derive(Debug)]
pub struct SqliteLocks {
    journal: SqliteJournal,
    runner: String,
}

impl ShardLocks for SqliteLocks {
    async fn try_acquire(&self, shard: Shard) -> Result<Option<Lease>> {
        self.journal.inner.common.check_shard(shard)?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE shards SET epoch = epoch + 1, owner = ?2 WHERE shard = ?1 RETURNING epoch",
        )
        .bind(shard as i64)
        .bind(&self.runner)
        .fetch_one(&self.journal.inner.writer)
        .await?;
        Ok(Some(Lease {
            shard,
            epoch: epoch as u64,
        }))
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        sqlx::query("UPDATE shards SET owner = NULL WHERE shard = ?1 AND epoch = ?2")
            .bind(lease.shard as i64)
            .bind(lease.epoch as i64)
            .execute(&self.journal.inner.writer)
            .await?;
        Ok(())
    }

    fn is_alive(&self) -> bool {
        true
    }

    async fn lost(&self) {
        std::future::pending::<()>().await
    }

    async fn close(self) -> Result<()> {
        sqlx::query("UPDATE shards SET owner = NULL WHERE owner = ?1")
            .bind(&self.runner)
            .execute(&self.journal.inner.writer)
            .await?;
        sqlx::query("DELETE FROM runners WHERE runner = ?1")
            .bind(&self.runner)
            .execute(&self.journal.inner.writer)
            .await?;
        Ok(())
    }
}

impl Drop for SqliteLocks {
    fn drop(&mut self) {
        if let Ok(mut live) = self.journal.inner.live.lock() {
            live.remove(&self.runner);
        }
    }
}
