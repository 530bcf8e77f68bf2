//! Asks waiting for their replies in this process.
//!
//! A wait is keyed by the asked entity and the message id — `(EntityKey, Uuid)` — so an id
//! asked of two entities at once reaches each asker with its own entity's reply
//! (invariant 12). Registering returns a [`Wait`] guard that unregisters when dropped: an
//! ask whose future is dropped (a timeout around it, a cancelled task) leaves nothing
//! behind.
//!
//! Replies arrive two ways. When this process's runner owns the message's shard, it calls
//! [`Waiters::resolve`] right after the batch commits. Otherwise a reply fetcher of the
//! shard (`replies.rs`) reads, on each "replies committed" wake-up of the shard, the
//! replies of every wait of that shard ([`Waiters::wanted`]) in one query, and resolves
//! those it found. The waits of each shard are indexed for that.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use entlog_journal::{EntityKey, Payload, Shard};
use tokio::sync::oneshot;
use uuid::Uuid;

/// What a wait is keyed by: the asked entity and the message id.
type AskKey = (EntityKey, Uuid);

/// Pending asks of this process; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    state: Mutex<State>,
    next: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Several asks may wait for one (entity, message id): each gets the reply.
    asks: HashMap<AskKey, Asks>,
    /// The keys waited for, per shard, for the shard's reply fetcher.
    by_shard: HashMap<Shard, HashSet<AskKey>>,
    /// Shards whose reply fetcher is running.
    fetching: HashSet<Shard>,
}

#[derive(Debug)]
struct Asks {
    shard: Shard,
    /// When the oldest of them registered.
    since: Instant,
    waiting: Vec<(u64, oneshot::Sender<Payload>)>,
}

/// One registered wait; dropping it unregisters it.
#[derive(Debug)]
pub(crate) struct Wait {
    waiters: Arc<Waiters>,
    key: AskKey,
    token: u64,
    reply: oneshot::Receiver<Payload>,
}

impl Wait {
    /// The reply; `None` only if the registry itself went away.
    pub(crate) async fn reply(&mut self) -> Option<Payload> {
        (&mut self.reply).await.ok()
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.waiters.forget(&self.key, self.token);
    }
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still consistent enough
        // (each operation is a few inserts/removes); keep serving rather than wedge.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a wait for the reply to `id` from `entity`, whose shard is `shard`.
    /// Returns the wait, and `true` if the shard has no reply fetcher yet and the caller
    /// must start one (it is marked running from now on).
    pub(crate) fn register(
        self: &Arc<Self>,
        entity: EntityKey,
        id: Uuid,
        shard: Shard,
    ) -> (Wait, bool) {
        let (tx, rx) = oneshot::channel();
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let key = (entity, id);
        let start_fetcher = {
            let mut s = self.lock();
            s.asks
                .entry(key.clone())
                .or_insert_with(|| Asks {
                    shard,
                    since: Instant::now(),
                    waiting: Vec::new(),
                })
                .waiting
                .push((token, tx));
            s.by_shard.entry(shard).or_default().insert(key.clone());
            s.fetching.insert(shard)
        };
        let wait = Wait {
            waiters: self.clone(),
            key,
            token,
            reply: rx,
        };
        (wait, start_fetcher)
    }

    fn forget(&self, key: &AskKey, token: u64) {
        let mut s = self.lock();
        let Some(asks) = s.asks.get_mut(key) else {
            return;
        };
        asks.waiting.retain(|(t, _)| *t != token);
        if asks.waiting.is_empty() {
            let shard = asks.shard;
            s.asks.remove(key);
            s.unindex(shard, key);
        }
    }

    /// Hands `reply` to every ask waiting for message `id` of `entity`; returns how many.
    /// The runner calls it after the batch holding the reply committed; the reply fetchers
    /// call it for the replies they read.
    pub(crate) fn resolve(&self, entity: &EntityKey, id: Uuid, reply: Payload) -> usize {
        let key = (entity.clone(), id);
        let asks = {
            let mut s = self.lock();
            let asks = s.asks.remove(&key);
            if let Some(a) = &asks {
                s.unindex(a.shard, &key);
            }
            asks
        };
        let mut sent = 0;
        for (_, tx) in asks.into_iter().flat_map(|a| a.waiting) {
            if tx.send(reply.clone()).is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// Whether an ask of this process waits for every one of these messages (a commit of
    /// them then need not announce its replies to other processes).
    pub(crate) fn all_waited_for<'a>(
        &self,
        mut keys: impl Iterator<Item = (&'a EntityKey, Uuid)>,
    ) -> bool {
        let s = self.lock();
        keys.all(|(entity, id)| s.asks.contains_key(&(entity.clone(), id)))
    }

    /// What the asks of `shard` wait for; with `registered_before`, only those waiting
    /// since before it.
    pub(crate) fn wanted(&self, shard: Shard, registered_before: Option<Instant>) -> Vec<AskKey> {
        let s = self.lock();
        let Some(keys) = s.by_shard.get(&shard) else {
            return Vec::new();
        };
        keys.iter()
            .filter(|k| match (registered_before, s.asks.get(*k)) {
                (Some(t), Some(a)) => a.since < t,
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// Called by the reply fetcher of `shard` between rounds: `true` (and the fetcher is
    /// marked stopped) if no ask waits on the shard any more, so the fetcher ends.
    pub(crate) fn fetcher_may_stop(&self, shard: Shard) -> bool {
        let mut s = self.lock();
        if s.by_shard.get(&shard).is_some_and(|k| !k.is_empty()) {
            return false;
        }
        s.fetching.remove(&shard);
        true
    }

    /// Asks waiting now.
    pub(crate) fn len(&self) -> usize {
        self.lock().asks.values().map(|a| a.waiting.len()).sum()
    }
}

impl State {
    fn unindex(&mut self, shard: Shard, key: &AskKey) {
        if let Some(keys) = self.by_shard.get_mut(&shard) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_shard.remove(&shard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(t: &str, id: &str) -> EntityKey {
        EntityKey::new(t, id).unwrap()
    }

    fn payload(tag: &str, v: u8) -> Payload {
        Payload::encode(tag, 1, &v).unwrap()
    }

    #[tokio::test]
    async fn one_id_asked_of_two_entities_reaches_each_asker() {
        let w = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let (mut counter, start) = w.register(key("counter", "a"), id, 3);
        assert!(start, "first wait of shard 3 starts its fetcher");
        let (mut echo, start) = w.register(key("echo", "b"), id, 5);
        assert!(start);
        let (mut counter2, start) = w.register(key("counter", "a"), id, 3);
        assert!(!start, "shard 3 has its fetcher");
        assert_eq!(
            w.resolve(&key("echo", "b"), id, payload("echo.reply", 2)),
            1
        );
        assert_eq!(
            w.resolve(&key("counter", "a"), id, payload("counter.reply", 1)),
            2
        );
        assert_eq!(echo.reply().await.unwrap().type_tag, "echo.reply");
        assert_eq!(counter.reply().await.unwrap().type_tag, "counter.reply");
        assert_eq!(counter2.reply().await.unwrap().type_tag, "counter.reply");
        assert_eq!(
            w.resolve(&key("counter", "b"), id, payload("counter.reply", 1)),
            0,
            "another entity's reply reaches nobody"
        );
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_nothing_behind() {
        let w = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let (a, _) = w.register(key("counter", "a"), id, 1);
        let (b, _) = w.register(key("counter", "a"), id, 1);
        let (c, _) = w.register(key("echo", "a"), Uuid::now_v7(), 1);
        assert_eq!(w.len(), 3);
        assert_eq!(w.wanted(1, None).len(), 2);
        assert!(!w.fetcher_may_stop(1));
        drop(a);
        assert_eq!(w.len(), 2);
        assert_eq!(w.wanted(1, None).len(), 2, "b still waits for that key");
        drop(b);
        drop(c);
        assert_eq!(w.len(), 0);
        assert!(w.wanted(1, None).is_empty());
        assert!(w.fetcher_may_stop(1));
        let (_d, start) = w.register(key("counter", "a"), id, 1);
        assert!(start, "a stopped fetcher is started again");
        // Dropped inside a future that never finished: the guard still unregisters.
        let w2 = w.clone();
        let pending = tokio::spawn(async move {
            let (mut wait, _) = w2.register(key("counter", "z"), Uuid::now_v7(), 2);
            wait.reply().await
        });
        tokio::task::yield_now().await;
        pending.abort();
        let _ = pending.await;
        assert_eq!(w.len(), 1);
        let young = w.wanted(1, Some(Instant::now() - std::time::Duration::from_secs(60)));
        assert!(young.is_empty(), "registered less than a minute ago");
    }
}
