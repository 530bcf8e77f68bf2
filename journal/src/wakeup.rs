//! Per-shard wake-ups: how a tailer learns that its shard may have new entries.
//!
//! Appends in this process wake the shard directly; on PostgreSQL a listener also turns
//! other processes' notifications into wake-ups. A wake-up is a hint: a permit is stored if
//! nobody waits, so a tailer that reads and then waits never misses one; a spurious
//! wake-up only costs a read.

use std::time::Duration;

use tokio::sync::Notify;

use crate::shard::Shard;

/// One `Notify` per shard.
#[derive(Debug)]
pub(crate) struct Wakeups {
    shards: Vec<Notify>,
}

impl Wakeups {
    pub(crate) fn new(shard_count: u32) -> Self {
        Wakeups {
            shards: (0..shard_count).map(|_| Notify::new()).collect(),
        }
    }

    /// Wakes the tailer of one shard.
    pub(crate) fn wake(&self, shard: Shard) {
        if let Some(n) = self.shards.get(shard as usize) {
            n.notify_one();
        }
    }

    /// Wakes every shard's tailer (after a lost notification connection).
    pub(crate) fn wake_all(&self) {
        for n in &self.shards {
            n.notify_one();
        }
    }

    /// Waits for a wake-up of `shard`, at most `timeout`; `true` if woken.
    pub(crate) async fn wait(&self, shard: Shard, timeout: Duration) -> bool {
        match self.shards.get(shard as usize) {
            Some(n) => tokio::time::timeout(timeout, n.notified()).await.is_ok(),
            None => {
                tokio::time::sleep(timeout).await;
                false
            }
        }
    }
}
