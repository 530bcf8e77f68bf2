//! Shard ownership: leases on shards, held by a runner's lock session.
//!
//! On PostgreSQL a lock session is one dedicated connection (never a pooled one) holding
//! session-level advisory locks, one per owned shard. If that connection dies the server
//! frees every lock at once, so the session must be treated as lost the moment it is
//! noticed. Safety does not rest on the lock alone: each acquisition bumps the shard's
//! epoch, and a batch committed under an older epoch fails with
//! [`JournalError::Fenced`](crate::JournalError::Fenced); event seqs are fenced by a unique
//! constraint besides.
//!
//! Opening a lock session also registers the runner: it holds a liveness lock of its own
//! on the same connection, so [`Journal::live_runners`](crate::Journal::live_runners)
//! lists exactly the runners whose lock connections are alive — a runner that crashed
//! disappears from the list as soon as the server notices its connection is gone, with no
//! heartbeat timeout to wait for.

use std::future::Future;

use crate::error::Result;
use crate::shard::Shard;
use crate::time::Timestamp;

/// A runner that holds a live lock session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    /// The runner's id.
    pub runner: String,
    /// When its current lock session started.
    pub started_at: Timestamp,
    /// Its lock connection's last successful ping.
    pub heartbeat_at: Timestamp,
    /// The shard groups it hosts; `None`: every group.
    pub groups: Option<Vec<String>>,
}

impl RunnerInfo {
    /// Whether the runner may own shards of `group`.
    pub fn hosts(&self, group: &str) -> bool {
        self.groups
            .as_ref()
            .is_none_or(|g| g.iter().any(|h| h == group))
    }
}

/// The `runners.groups` column of hosted groups: comma-separated, NULL for every group.
pub(crate) fn encode_hosted(groups: Option<&[String]>) -> Result<Option<String>> {
    let Some(groups) = groups else {
        return Ok(None);
    };
    for g in groups {
        crate::shard_groups::check_group_name(g)?;
    }
    Ok(Some(groups.join(",")))
}

/// Reads the `runners.groups` column.
pub(crate) fn decode_hosted(column: Option<String>) -> Option<Vec<String>> {
    column.map(|c| {
        c.split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// The advisory-lock key of a runner's liveness lock: negative, so it never collides with
/// a shard's key (shards are `0..shard_count`). Part of the format: do not change.
pub(crate) fn runner_lock_key(runner: &str) -> i32 {
    -1 - (crc32fast::hash(runner.as_bytes()) & 0x3fff_ffff) as i32
}

/// The right to process one shard, at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The shard.
    pub shard: Shard,
    /// Incremented by every acquisition; commits carry it so a stale owner is refused.
    pub epoch: u64,
}

/// A runner's set of shard locks, held on one dedicated connection.
pub trait ShardLocks: Send + Sync + std::fmt::Debug + 'static {
    /// Tries to take the shard's lock; `None` if another session holds it.
    fn try_acquire(&self, shard: Shard) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Releases a lease taken by this session; releasing a lease not held is a no-op.
    fn release(&self, lease: Lease) -> impl Future<Output = Result<()>> + Send;

    /// Whether the lock connection is known to be alive.
    fn is_alive(&self) -> bool;

    /// Resolves once the lock connection is lost (at once if it already is).
    fn lost(&self) -> impl Future<Output = ()> + Send;

    /// Releases every lease and the runner's registration, and closes the session: other
    /// runners may take the shards at once.
    fn close(self) -> impl Future<Output = Result<()>> + Send;
}
