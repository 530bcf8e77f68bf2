//! Per-shard wake-ups: how a tailer learns that its shard may have new entries.
//!
//! Appends in this process wake the shard directly; on PostgreSQL a listener also turns
//! other processes' notifications into wake-ups. A wake-up is a hint: a permit is stored if
//! nobody waits, so a tailer that reads and then waits never misses one; a spurious
//! wake-up only costs a read.
//!
//! # Several waiters per shard
//!
//! A shard has more than one tailer in a runner: its worker and a projector per
//! projection. A wake-up reaches every task waiting at that moment, and also stores one
//! permit for the next to wait. (Waking only one waiter would let a projector swallow the
//! wake-up of a newly appended or scheduled message, leaving the worker asleep until its
//! poll interval.)
//!
//! # Replies committed
//!
//! Apart from its entries, a shard has a second wake-up: "replies of this shard were
//! committed". Askers waiting for replies from a shard owned elsewhere wait on it (on
//! PostgreSQL it is fed by the `'r<shard>'` notification of `commit_batch`), then read
//! every reply they wait for in one query. Like the other, it is a hint that may be
//! spurious, and a lost notification connection fires it for every shard.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::columns::{EntryColumns, Placed};
use crate::records::{AppendOutcome, CommitReceipt};
use crate::shard::Shard;

/// One `Notify` per shard, and per shard a flag saying its schedule changed.
#[derive(Debug)]
pub(crate) struct Wakeups {
    shards: Vec<Notify>,
    /// Woken when replies of the shard were committed.
    replies: Vec<Notify>,
    /// Set when a message was scheduled on the shard; taken by its owner, which then reads
    /// the shard's next due time again.
    scheduled: Vec<AtomicBool>,
    /// Per shard, how many times new messages were announced: a runner-wide mailbox
    /// reader compares them with the counts it last saw to learn which shards to read.
    counts: Vec<AtomicU64>,
    /// Bumped after every wake-up of any shard; each runner-wide tailer holds a receiver.
    any: watch::Sender<u64>,
}

impl Wakeups {
    pub(crate) fn new(shard_count: u32) -> Self {
        Wakeups {
            shards: (0..shard_count).map(|_| Notify::new()).collect(),
            replies: (0..shard_count).map(|_| Notify::new()).collect(),
            scheduled: (0..shard_count).map(|_| AtomicBool::new(false)).collect(),
            counts: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            any: watch::Sender::new(0),
        }
    }

    /// A message was scheduled on `shard`: flags its schedule and wakes its tailers.
    pub(crate) fn scheduled(&self, shard: Shard) {
        if let Some(f) = self.scheduled.get(shard as usize) {
            f.store(true, Ordering::Release);
        }
        self.wake(shard);
    }

    /// Wakes the shards an append wrote to, flagging those that got a scheduled message.
    pub(crate) fn after_append(&self, entries: &EntryColumns, placed: &[Placed]) {
        let mut shards: Vec<(i32, bool)> = entries
            .shard
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, placed.get(i).is_some_and(|p| p.scheduled)))
            .collect();
        // Per shard, a scheduled row sorts last and is the one kept.
        shards.sort_unstable();
        shards.reverse();
        shards.dedup_by_key(|(s, _)| *s);
        for (s, scheduled) in shards {
            if scheduled {
                self.scheduled(s as Shard);
            } else {
                self.wake(s as Shard);
            }
        }
    }

    /// Wakes the shard of a committed batch (its projectors and, if the batch handled
    /// messages, the askers of their replies) and those its outgoing messages went to,
    /// flagging those that got a scheduled message. The batch's own shard got events,
    /// not messages: its mailbox reader, which committed them, is not woken to read it
    /// again.
    pub(crate) fn after_commit(&self, shard: Shard, receipt: &CommitReceipt) {
        self.notify_tailers(shard);
        // One entry per handled message, each of which stored a reply.
        if !receipt.event_offsets.is_empty() {
            self.replied(shard);
        }
        for o in receipt.outgoing.iter().flatten() {
            match o {
                AppendOutcome::Scheduled { shard } => self.scheduled(*shard),
                AppendOutcome::Appended { shard, .. } | AppendOutcome::Duplicate { shard, .. } => {
                    self.wake(*shard)
                }
            }
        }
    }

    /// Whether a message was scheduled on `shard` since the last call.
    pub(crate) fn take_scheduled(&self, shard: Shard) -> bool {
        self.scheduled
            .get(shard as usize)
            .is_some_and(|f| f.swap(false, Ordering::AcqRel))
    }

    /// Wakes the tailers of one shard (all that wait now, and the next to wait) and the
    /// runner-wide mailbox reader: the shard has new messages.
    pub(crate) fn wake(&self, shard: Shard) {
        self.notify_tailers(shard);
        if let Some(c) = self.counts.get(shard as usize) {
            c.fetch_add(1, Ordering::AcqRel);
            self.any.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes the tailers waiting in [`wait`](Self::wait) on `shard` (projectors), and
    /// the next to wait: the shard has new entries.
    fn notify_tailers(&self, shard: Shard) {
        if let Some(n) = self.shards.get(shard as usize) {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// Replies of `shard` were committed: wakes its reply waiters (all that wait now, and
    /// the next to wait).
    pub(crate) fn replied(&self, shard: Shard) {
        if let Some(n) = self.replies.get(shard as usize) {
            n.notify_waiters();
            n.notify_one();
        }
    }

    /// Wakes every shard's tailers and reply waiters and flags every schedule (after a
    /// lost notification connection, which may have dropped any announcement).
    pub(crate) fn wake_all(&self) {
        for f in &self.scheduled {
            f.store(true, Ordering::Release);
        }
        for n in self.shards.iter().chain(&self.replies) {
            n.notify_waiters();
            n.notify_one();
        }
        for c in &self.counts {
            c.fetch_add(1, Ordering::AcqRel);
        }
        self.any.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many wake-ups `shard` has had (a tailer reads it when it wakes and again before
    /// it reads the shard: a change means new entries may be there).
    pub(crate) fn count(&self, shard: Shard) -> u64 {
        self.counts
            .get(shard as usize)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// A receiver that changes after every wake-up of any shard.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Waits for a wake-up of `shard`, at most `timeout`; `true` if woken.
    pub(crate) async fn wait(&self, shard: Shard, timeout: Duration) -> bool {
        Self::wait_on(&self.shards, shard, timeout).await
    }

    /// Waits until replies of `shard` may have been committed, at most `timeout`; `true`
    /// if woken.
    pub(crate) async fn wait_replies(&self, shard: Shard, timeout: Duration) -> bool {
        Self::wait_on(&self.replies, shard, timeout).await
    }

    async fn wait_on(notifies: &[Notify], shard: Shard, timeout: Duration) -> bool {
        match notifies.get(shard as usize) {
            Some(n) => tokio::time::timeout(timeout, n.notified()).await.is_ok(),
            None => {
                tokio::time::sleep(timeout).await;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn receipt(outgoing: Vec<AppendOutcome>) -> CommitReceipt {
        CommitReceipt {
            event_offsets: vec![vec![7]],
            outgoing: vec![outgoing],
            created_at: Timestamp::now(),
        }
    }

    /// A commit's own shard got events: its projectors are woken, its mailbox reader is
    /// not (it committed them). The shards its outgoing messages went to get both.
    #[tokio::test]
    async fn a_commit_wakes_the_mailbox_reader_only_for_its_outgoing_messages() {
        let w = Wakeups::new(4);
        w.after_commit(1, &receipt(vec![]));
        assert_eq!(w.count(1), 0);
        assert!(w.wait(1, Duration::from_secs(5)).await, "projectors woken");
        assert!(w.wait_replies(1, Duration::from_secs(5)).await);

        let to_self = AppendOutcome::Appended {
            shard: 1,
            offset: 9,
        };
        let elsewhere = AppendOutcome::Appended {
            shard: 3,
            offset: 2,
        };
        w.after_commit(1, &receipt(vec![to_self, elsewhere]));
        assert_eq!((w.count(1), w.count(2), w.count(3)), (1, 0, 1));

        w.after_commit(1, &receipt(vec![AppendOutcome::Scheduled { shard: 2 }]));
        assert_eq!(w.count(2), 1);
        assert!(w.take_scheduled(2));
        assert!(!w.take_scheduled(1));
    }

    /// An append wakes the mailbox reader of every shard it wrote to.
    #[test]
    fn wake_counts_each_announcement() {
        let w = Wakeups::new(2);
        let rx = w.watch();
        w.wake(0);
        w.wake(0);
        assert_eq!((w.count(0), w.count(1)), (2, 0));
        assert!(rx.has_changed().unwrap_or(false));
    }
}
