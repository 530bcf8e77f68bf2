//! Shard ownership: leases on shards, held by a runner's lock session.
//!
//! On PostgreSQL a lock session is one dedicated connection (never a pooled one) holding
//! session-level advisory locks, one per owned shard. If that connection dies the server
//! frees every lock at once, so the session must be treated as lost the moment it is
//! noticed. Safety does not rest on the lock alone: each acquisition bumps the shard's
//! epoch, and a batch committed under an older epoch fails with
//! [`JournalError::Fenced`](crate::JournalError::Fenced); event seqs are fenced by a unique
//! constraint besides.

use std::future::Future;

use crate::error::Result;
use crate::shard::Shard;

/// The right to process one shard, at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The shard.
    pub shard: Shard,
    /// Incremented by every acquisition; commits carry it so a stale owner is refused.
    pub epoch: u64,
}

/// A runner's set of shard locks, held on one dedicated connection.
pub trait ShardLocks: Send + Sync + 'static {
    /// Tries to take the shard's lock; `None` if another session holds it.
    fn try_acquire(&self, shard: Shard) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Releases a lease taken by this session; releasing a lease not held is a no-op.
    fn release(&self, lease: Lease) -> impl Future<Output = Result<()>> + Send;

    /// Whether the lock connection is known to be alive.
    fn is_alive(&self) -> bool;

    /// Resolves once the lock connection is lost (at once if it already is).
    fn lost(&self) -> impl Future<Output = ()> + Send;
}
