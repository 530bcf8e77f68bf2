//! Entities in memory: a bounded cache of live instances, least recently used first out.
//!
//! An instance is *idle* here while no run holds it. Only idle instances whose handled
//! messages have all committed may be passivated: state that runs ahead of the journal
//! must never be snapshotted, and an entity must not be activated again from the journal
//! while its last events are still on their way there (the pipeline checks
//! [`Instances::uncommitted`] before it activates).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use entlog_journal::{EntityKey, NewSnapshot, Shard};

use crate::instance::Instance;

/// One entity in memory.
pub(crate) struct Slot {
    pub instance: Box<dyn Instance>,
    pub shard: Shard,
    pub last_used: Instant,
}

/// The runner's entities in memory, and per entity the messages handled but not committed.
#[derive(Default)]
pub(crate) struct Instances {
    idle: HashMap<EntityKey, Slot>,
    /// Handled messages per entity that are not committed yet (in `ready` or in the
    /// commit in flight). Kept apart from the slots: it outlives a dropped instance.
    uncommitted: HashMap<EntityKey, (Shard, usize)>,
}

impl Instances {
    /// Takes an entity's instance for a run.
    pub(crate) fn take(&mut self, key: &EntityKey) -> Option<Slot> {
        self.idle.remove(key)
    }

    /// Returns an instance after its run.
    pub(crate) fn put(&mut self, key: EntityKey, slot: Slot) {
        self.idle.insert(key, slot);
    }

    /// Instances held idle.
    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    /// Handled messages of `key` not yet committed.
    pub(crate) fn uncommitted(&self, key: &EntityKey) -> usize {
        self.uncommitted.get(key).map_or(0, |(_, n)| *n)
    }

    /// Counts `n` handled messages of `key` on their way to a commit.
    pub(crate) fn handled(&mut self, key: &EntityKey, shard: Shard, n: usize) {
        if n > 0 {
            self.uncommitted.entry(key.clone()).or_insert((shard, 0)).1 += n;
        }
    }

    /// `n` handled messages of `key` committed, or were dropped with their shard's reset.
    pub(crate) fn settled(&mut self, key: &EntityKey, n: usize) {
        if let Some((_, c)) = self.uncommitted.get_mut(key) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.uncommitted.remove(key);
            }
        }
    }

    /// Drops every instance and count of `shard` (its messages are redelivered or it moved).
    pub(crate) fn forget_shard(&mut self, shard: Shard) {
        self.idle.retain(|_, s| s.shard != shard);
        self.uncommitted.retain(|_, (s, _)| *s != shard);
    }

    /// A snapshot of `key` if it is idle, fully committed and `every` events behind.
    pub(crate) fn snapshot_due(&mut self, key: &EntityKey, every: u64) -> Option<NewSnapshot> {
        if self.uncommitted(key) > 0 {
            return None;
        }
        let slot = self.idle.get_mut(key)?;
        if slot.instance.since_snapshot() < every {
            return None;
        }
        take_snapshot(key, slot)
    }

    /// Removes idle instances unused for `idle_for`, and then the least recently used
    /// until at most `cap` remain (`running` more are held by runs). Returns the snapshots
    /// to save for those with events since their last one.
    pub(crate) fn passivate(
        &mut self,
        idle_for: Duration,
        cap: usize,
        running: usize,
    ) -> Vec<NewSnapshot> {
        let now = Instant::now();
        // Stale ones (idle past their type's time, or `idle_for`) sort first, then the
        // least recently used: evicting the first n takes every stale one, then makes room.
        let mut evict: Vec<(bool, Instant, EntityKey)> = self
            .idle
            .iter()
            .filter(|(k, _)| !self.uncommitted.contains_key(*k))
            .map(|(k, s)| {
                let limit = s.instance.policy().passivate_after.unwrap_or(idle_for);
                let stale = now.saturating_duration_since(s.last_used) >= limit;
                (!stale, s.last_used, k.clone())
            })
            .collect();
        let over = (self.idle.len() + running).saturating_sub(cap);
        let stale = evict.iter().filter(|(fresh, _, _)| !fresh).count();
        let n = over.max(stale).min(evict.len());
        if n == 0 {
            return Vec::new();
        }
        if n < evict.len() {
            evict.select_nth_unstable_by_key(n - 1, |(fresh, t, _)| (*fresh, *t));
            evict.truncate(n);
        }
        let mut snapshots = Vec::new();
        for (_, _, key) in evict {
            if let Some(mut slot) = self.idle.remove(&key)
                && let Some(s) = take_snapshot(&key, &mut slot)
            {
                snapshots.push(s);
            }
        }
        snapshots
    }

    /// Removes every idle instance of `shard`, returning the snapshots to save.
    pub(crate) fn drain_shard(&mut self, shard: Shard) -> Vec<NewSnapshot> {
        let keys: Vec<EntityKey> = self
            .idle
            .iter()
            .filter(|(_, s)| s.shard == shard)
            .map(|(k, _)| k.clone())
            .collect();
        let mut snapshots = Vec::new();
        for key in keys {
            if let Some(mut slot) = self.idle.remove(&key)
                && let Some(s) = take_snapshot(&key, &mut slot)
            {
                snapshots.push(s);
            }
        }
        snapshots
    }
}

/// The slot's state as a snapshot, if it has events since its last one; marks it saved.
fn take_snapshot(key: &EntityKey, slot: &mut Slot) -> Option<NewSnapshot> {
    if slot.instance.since_snapshot() == 0 {
        return None;
    }
    match slot.instance.snapshot() {
        Ok(s) => {
            slot.instance.snapshotted();
            Some(s)
        }
        Err(e) => {
            tracing::warn!(entity = %key, error = %e, "state not encodable; no snapshot");
            None
        }
    }
}
