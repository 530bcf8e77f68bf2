//! The shards a lock session of this journal holds: an append whose messages all go to
//! them needs no `NOTIFY`.
//!
//! A `NOTIFY` tells other processes that a shard has new messages. When this process's
//! own runner holds the shard, the append's in-process wake-up reaches it already, and the
//! notification would only cost the sending transaction PostgreSQL's notify-queue lock,
//! which every notifying transaction of the database holds in turn through its commit's
//! sync. So an append to held shards sends none.
//!
//! A lease can end while such an append is in flight (released, or the session lost). The
//! new owner reads everything after its cursor when it takes the shard; a message that
//! commits after that read reaches it at its next poll (`poll_interval`, 1 s by default)
//! if no other wake-up comes first. Nothing is lost; a message can be late by that bound
//! while its shard moves.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::shard::Shard;

/// Per shard, how many lock sessions of this journal hold it (0 or 1 but for overlaps
/// while a shard moves between two sessions of one process).
#[derive(Debug)]
pub(super) struct HeldHere {
    counts: Vec<AtomicU32>,
}

impl HeldHere {
    pub(super) fn new(shard_count: u32) -> Self {
        HeldHere {
            counts: (0..shard_count).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A session of this journal took `shard`.
    pub(super) fn hold(&self, shard: Shard) {
        if let Some(c) = self.counts.get(shard as usize) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A session of this journal let go of `shard`.
    pub(super) fn let_go(&self, shard: Shard) {
        if let Some(c) = self.counts.get(shard as usize) {
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Whether every one of `shards` is held by a session of this journal.
    pub(super) fn all(&self, shards: &[i32]) -> bool {
        shards.iter().all(|&s| {
            usize::try_from(s)
                .ok()
                .and_then(|s| self.counts.get(s))
                .is_some_and(|c| c.load(Ordering::Acquire) > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_per_shard() {
        let h = HeldHere::new(4);
        assert!(!h.all(&[1]));
        assert!(h.all(&[]), "no shard at all is trivially held");
        h.hold(1);
        h.hold(2);
        assert!(h.all(&[1, 2, 1]));
        assert!(!h.all(&[1, 3]));
        h.hold(1);
        h.let_go(1);
        assert!(h.all(&[1]), "a second session still holds it");
        h.let_go(1);
        h.let_go(1);
        assert!(!h.all(&[1]), "never below zero, and no longer held");
        assert!(!h.all(&[-1, 9]), "out of range is not held");
    }
}
