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
//! `PgConnection::connect` (at `PgOptions::lock_url` when set) and never enters a pool.
//!
//! # Liveness
//!
//! The session runs a heartbeat every `ping_interval` ([`Liveness`]); one that does not
//! finish within `ping_timeout` — counting the wait for the connection, which an acquire
//! may hold — marks the session lost, and every lease it held is void from then on. The
//! server ends a session that sent nothing for `session_timeout` (`idle_session_timeout`),
//! which frees its locks when the runner stalls or its network goes silent. Statements
//! wait at most `Liveness::lock_wait` for a row lock (`lock_timeout`): an acquire that
//! meets a locked shard row gives the shard up for now instead of blocking the session.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};

use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::PgOptions;
use super::held_here::HeldHere;
use crate::error::{JournalError, Result};
use crate::liveness::Liveness;
use crate::ownership::{Lease, ShardLocks, runner_lock_key};
use crate::shard::Shard;

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
    /// The journal's record of the shards its sessions hold; kept equal to `held`.
    here: Arc<HeldHere>,
}

impl std::fmt::Debug for PgLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocks")
            .field("runner", &self.inner.runner)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Drop for LockConn {
    fn drop(&mut self) {
        // The connection closes with it, and its locks with the connection.
        self.let_go_all();
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
        groups: Option<&[String]>,
        here: Arc<HeldHere>,
    ) -> Result<Self> {
        crate::names::check_name(crate::error::Field::Consumer, runner)?;
        let groups = crate::ownership::encode_hosted(groups)?;
        let liveness = options.liveness;
        // A connect that hangs (a host or route that swallows packets) gives up like a
        // heartbeat would: the runner tries again rather than waiting forever.
        let connect_options = options.lock_connect_options()?;
        let connect = PgConnection::connect_with(&connect_options);
        let mut conn = tokio::time::timeout(liveness.session_timeout, connect)
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the lock session could not connect within {:?}",
                        liveness.session_timeout
                    ),
                ))
            })??;
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
        // Times from the server's clock: one clock for every runner.
        sqlx::query(
            "INSERT INTO runners (runner, lock_key, started_at, heartbeat_at, groups)
             SELECT $1, $2, t, t, $3 FROM (SELECT (extract(epoch from clock_timestamp()) * 1000000)::BIGINT) n(t)
             ON CONFLICT (runner) DO UPDATE SET lock_key = $2, started_at = excluded.started_at,
                                                heartbeat_at = excluded.heartbeat_at,
                                                groups = excluded.groups",
        )
        .bind(runner)
        .bind(key)
        .bind(groups)
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
            here,
        });
        let pinger = tokio::spawn(ping(inner.clone(), liveness));
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
    /// Records a lease taken.
    fn hold(&self, shard: Shard) {
        if let Ok(mut h) = self.held.lock()
            && h.insert(shard)
        {
            self.here.hold(shard);
        }
    }

    /// Forgets a lease; whether it was held.
    fn let_go(&self, shard: Shard) -> bool {
        let was = self
            .held
            .lock()
            .map(|mut h| h.remove(&shard))
            .unwrap_or(false);
        if was {
            self.here.let_go(shard);
        }
        was
    }

    /// Forgets every lease.
    fn let_go_all(&self) {
        if let Ok(mut h) = self.held.lock() {
            for shard in h.drain() {
                self.here.let_go(shard);
            }
        }
    }

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
        self.let_go_all();
        self.alive.send_replace(false);
        JournalError::LockConnectionLost
    }
}

async fn ping(inner: Arc<LockConn>, liveness: Liveness) {
    loop {
        tokio::time::sleep(liveness.ping_interval).await;
        // The wait for the connection counts: an acquire stuck behind a row lock must not
        // keep the heartbeat from noticing a dead session.
        let beat = async {
            let mut guard = inner.conn.lock().await;
            let Some(conn) = guard.as_mut() else {
                return (guard, None);
            };
            // The ping is the heartbeat: one round trip proves the connection (and with it
            // every lock) alive and refreshes what `status` shows.
            let result = sqlx::query(
                "UPDATE runners SET heartbeat_at = (extract(epoch from clock_timestamp()) * 1000000)::BIGINT
                  WHERE runner = $1",
            )
            .bind(&inner.runner)
            .execute(&mut *conn)
            .await
            .map(|_| ());
            (guard, Some(result))
        };
        match tokio::time::timeout(liveness.ping_timeout, beat).await {
            Ok((_, None)) => {}
            Ok((_, Some(Ok(())))) => continue,
            Ok((mut guard, Some(Err(e)))) => {
                inner.fail(&mut guard, e);
            }
            Err(_) => {
                // The connection may be held by a statement that will never return; the
                // session is lost either way. Forget the leases now, and drop the
                // connection (which frees its locks) once it can be had.
                inner.lost(sqlx::Error::Protocol(format!(
                    "heartbeat took longer than {:?}",
                    liveness.ping_timeout
                )));
                let inner = inner.clone();
                tokio::spawn(async move {
                    inner.conn.lock().await.take();
                });
            }
        }
        return;
    }
}

/// Whether a lock-session statement gave up waiting (`lock_timeout`, `statement_timeout`)
/// rather than failing: the session is still fine.
fn gave_up_waiting(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03" || c == "57014")
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
            Err(e) if gave_up_waiting(&e) => {
                // The shard's row is locked (a stalled owner's transaction, until the
                // server ends it). A session lock taken by the failed statement stays
                // taken (session locks ignore rollback): give it back, and try again at
                // the next rebalance.
                tracing::info!(shard, error = %e, "shard row busy; acquiring later");
                let unlock = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                    .bind(self.inner.namespace)
                    .bind(shard as i32)
                    .execute(&mut *conn)
                    .await;
                return match unlock {
                    Ok(_) => Ok(None),
                    Err(e) => Err(self.inner.fail(&mut guard, e)),
                };
            }
            Err(e) => return Err(self.inner.fail(&mut guard, e)),
        };
        Ok(epoch.map(|epoch| {
            self.inner.hold(shard);
            Lease {
                shard,
                epoch: epoch as u64,
            }
        }))
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        let mut guard = self.inner.conn.lock().await;
        let conn = guard.as_mut().ok_or(JournalError::LockConnectionLost)?;
        if !self.inner.let_go(lease.shard) {
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
        self.inner.let_go_all();
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
