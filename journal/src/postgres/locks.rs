//! Shard locks on PostgreSQL: session advisory locks on one dedicated connection.
//!
//! # Key space
//!
//! Locks use the two-key form `pg_try_advisory_lock(namespace, shard)`. `namespace` is a
//! random 31-bit number stored in the journal's `meta` at creation, so two journals in one
//! database (two schemas) never contend, and the one-key (bigint) space that tools such as
//! sqlx's migrator use is never touched. Advisory locks are per database.
//!
//! # Why a dedicated connection
//!
//! A session lock belongs to the server backend that took it. A pooled connection may be
//! recycled, or shared by a transaction-mode pooler, which would hand the lock to a
//! stranger or drop it silently; the lock connection is therefore opened with
//! `PgConnection::connect` and never enters a pool. It is pinged every
//! `lock_ping_interval`; the first failure marks the session lost, and every lease it held
//! is void from then on (the server freed the locks when the backend went away).

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::PgOptions;
use crate::error::{JournalError, Result};
use crate::ownership::{Lease, ShardLocks, runner_lock_key};
use crate::shard::Shard;
use crate::time::Timestamp;

/// A runner's shard locks, held on one connection outside the pool.
pub struct PgLocks {
    inner: Arc<LockConn>,
    pinger: JoinHandle<()>,
}

struct LockConn {
    conn: Mutex<Option<PgConnection>>,
    alive: watch::Sender<bool>,
    namespace: i32,
    shard_count: u32,
    runner: String,
    held: StdMutex<HashSet<Shard>>,
}

impl std::fmt::Debug for PgLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocks")
            .field("runner", &self.inner.runner)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Drop for PgLocks {
    fn drop(&mut self) {
        self.pinger.abort();
    }
}

impl PgLocks {
    pub(super) async fn connect(
        options: &PgOptions,
        namespace: i32,
        shard_count: u32,
        runner: &str,
    ) -> Result<Self> {
        crate::envelope::check_name(crate::error::Field::Consumer, runner)?;
        let mut conn = PgConnection::connect_with(&options.connect_options()?).await?;
        sqlx::query("SET application_name = 'entlog-locks'")
            .execute(&mut conn)
            .await?;
        // The runner's liveness lock, then its registration row.
        let key = runner_lock_key(runner);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(namespace)
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            return Err(JournalError::RunnerInUse {
                runner: runner.to_owned(),
            });
        }
        let now = Timestamp::now().as_micros();
        sqlx::query(
            "INSERT INTO runners (runner, lock_key, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (runner) DO UPDATE SET lock_key = $2, started_at = $3, heartbeat_at = $3",
        )
        .bind(runner)
        .bind(key)
        .bind(now)
        .execute(&mut conn)
        .await?;
        let (alive, _) = watch::channel(true);
        let inner = Arc::new(LockConn {
            conn: Mutex::new(Some(conn)),
            alive,
            namespace,
            shard_count,
            runner: runner.to_owned(),
            held: StdMutex::new(HashSet::new()),
        });
        let pinger = tokio::spawn(ping(inner.clone(), options.lock_ping_interval));
        Ok(PgLocks { inner, pinger })
    }

    /// The server process id of the lock connection (for `pg_terminate_backend` in tests
    /// and for operators matching `pg_locks`).
    pub async fn backend_pid(&self) -> Result<i32> {
        let mut guard = self.inner.conn.lock().await;
        let conn = guard.as_mut().ok_or(JournalError::LockConnectionLost)?;
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await;
        pid.map_err(|e| self.inner.fail(&mut guard, e))
    }

    /// Shards currently leased by this session.
    pub fn held(&self) -> Vec<Shard> {
        let mut v: Vec<Shard> = self
            .inner
            .held
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

impl LockConn {
    /// Drops the failed connection (closing it frees any lock it still held) and marks
    /// the session lost.
    fn fail(&self, conn: &mut Option<PgConnection>, err: sqlx::Error) -> JournalError {
        conn.take();
        self.lost(err)
    }

    /// Marks the session lost after a failure on its connection.
    fn lost(&self, err: sqlx::Error) -> JournalError {
        tracing::warn!(runner = %self.runner, error = %err, "shard-lock connection lost");
        // Forget the leases before announcing the loss: whoever wakes on `lost()` must
        // already see an empty set.
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
        self.alive.send_replace(false);
        JournalError::LockConnectionLost
    }
}

async fn ping(inner: Arc<LockConn>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let mut guard = inner.conn.lock().await;
        let Some(conn) = guard.as_mut() else { return };
        // The ping is the heartbeat: one round trip proves the connection (and with it
        // every lock) alive and refreshes what `status` shows.
        let beat = sqlx::query("UPDATE runners SET heartbeat_at = $2 WHERE runner = $1")
            .bind(&inner.runner)
            .bind(Timestamp::now().as_micros())
            .execute(&mut *conn);
        let result = tokio::time::timeout(every.max(Duration::from_secs(2)), beat)
            .await
            .map(|r| r.map(|_| ()));
        let err = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => sqlx::Error::PoolTimedOut,
        };
        // Drop the connection: if it was merely slow, closing it frees its locks too, so
        // no shard stays locked by a session that has given up on it.
        inner.fail(&mut guard, err);
        return;
    }
}

impl ShardLocks for PgLocks {
    async fn try_acquire(&self, shard: Shard) -> Result<Option<Lease>> {
        if shard >= self.inner.shard_count {
            return Err(JournalError::ShardOutOfRange {
                shard,
                shard_count: self.inner.shard_count,
            });
        }
        let mut guard = self.inner.conn.lock().await;
        let conn = guard.as_mut().ok_or(JournalError::LockConnectionLost)?;
        if self.held().contains(&shard) {
            let epoch: i64 = match sqlx::query_scalar("SELECT epoch FROM shards WHERE shard = $1")
                .bind(shard as i32)
                .fetch_one(&mut *conn)
                .await
            {
                Ok(epoch) => epoch,
                Err(e) => return Err(self.inner.fail(&mut guard, e)),
            };
            return Ok(Some(Lease {
                shard,
                epoch: epoch as u64,
            }));
        }
        // Take the lock and bump the epoch in one statement: no lock is taken without the
        // epoch moving, so a previous owner's late commit is refused.
        let epoch: Option<i64> = match sqlx::query_scalar(
            "WITH l AS (SELECT pg_try_advisory_lock($1, $2) AS got)
             UPDATE shards SET epoch = epoch + 1, owner = $3 FROM l
              WHERE shard = $2 AND l.got RETURNING epoch",
        )
        .bind(self.inner.namespace)
        .bind(shard as i32)
        .bind(&self.inner.runner)
        .fetch_optional(&mut *conn)
        .await
        {
            Ok(epoch) => epoch,
            Err(e) => return Err(self.inner.fail(&mut guard, e)),
        };
        Ok(epoch.map(|epoch| {
            if let Ok(mut h) = self.inner.held.lock() {
                h.insert(shard);
            }
            Lease {
                shard,
                epoch: epoch as u64,
            }
        }))
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        let mut guard = self.inner.conn.lock().await;
        let conn = guard.as_mut().ok_or(JournalError::LockConnectionLost)?;
        let was_held = self
            .inner
            .held
            .lock()
            .map(|mut h| h.remove(&lease.shard))
            .unwrap_or(false);
        if !was_held {
            return Ok(());
        }
        let result = sqlx::query(
            "WITH u AS (UPDATE shards SET owner = NULL WHERE shard = $2 AND epoch = $3 RETURNING 1)
             SELECT pg_advisory_unlock($1, $2)",
        )
        .bind(self.inner.namespace)
        .bind(lease.shard as i32)
        .bind(lease.epoch as i64)
        .execute(&mut *conn)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(self.inner.fail(&mut guard, e)),
        }
    }

    fn is_alive(&self) -> bool {
        *self.inner.alive.borrow()
    }

    async fn close(self) -> Result<()> {
        self.pinger.abort();
        let mut guard = self.inner.conn.lock().await;
        let Some(mut conn) = guard.take() else {
            return Err(JournalError::LockConnectionLost);
        };
        if let Ok(mut h) = self.inner.held.lock() {
            h.clear();
        }
        let result = async {
            sqlx::query("UPDATE shards SET owner = NULL WHERE owner = $1")
                .bind(&self.inner.runner)
                .execute(&mut conn)
                .await?;
            sqlx::query("DELETE FROM runners WHERE runner = $1")
                .bind(&self.inner.runner)
                .execute(&mut conn)
                .await
        }
        .await;
        // Closing the connection releases every advisory lock it held, shards and runner.
        let closed = conn.close().await;
        self.inner.alive.send_replace(false);
        result?;
        closed?;
        Ok(())
    }

    async fn lost(&self) {
        let mut rx = self.inner.alive.subscribe();
        let _ = rx.wait_for(|alive| !alive).await;
    }
}
