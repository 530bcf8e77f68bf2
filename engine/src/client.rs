//! [`Client`]: the sending half of a cluster member — its appender, journal, config, the
//! asks waiting for replies and their reply fetchers, the shards its runner owns, the
//! owner checks of long asks, and the shutdown flag sends check.
//!
//! A [`Cluster`](crate::Cluster) holds one, next to what only the member owns (its tasks,
//! its shutdown sender, its runner id). [`EntityRef`](crate::EntityRef) sends through a
//! client; [`Client::entity`] is written next to it, in `entity_ref.rs`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use entlog_journal::AnyJournal;
use tokio::sync::watch;

use crate::appender::Appender;
use crate::config::Config;
use crate::owned::Owned;
use crate::owner_check::OwnerChecks;
use crate::replies::ReplyFetch;
use crate::waiters::Waiters;

/// The sending half of a cluster member: sends messages and waits for replies. Cheap to
/// clone.
///
/// A client taken from a [`Cluster`](crate::Cluster) (with
/// [`Cluster::client`](crate::Cluster::client), or inside an [`EntityRef`](crate::EntityRef))
/// keeps the member running as a `Cluster` handle does. The one a singleton gets
/// ([`SingletonContext::client`](crate::SingletonContext::client)) does not: dropping
/// every handle still shuts the member down, its singletons included.
#[derive(Clone)]
pub struct Client {
    pub(crate) parts: Arc<Parts>,
    /// The member this client keeps running; `None` for the runner's own client.
    _member: Option<Arc<dyn Any + Send + Sync>>,
}

/// What a client sends and waits with, shared by its clones.
pub(crate) struct Parts {
    pub(crate) journal: AnyJournal,
    pub(crate) config: Arc<Config>,
    pub(crate) waiters: Arc<Waiters>,
    /// Starts the reply fetchers of shards owned elsewhere.
    pub(crate) fetch: ReplyFetch,
    pub(crate) appender: Appender,
    pub(crate) owned: Owned,
    /// Answers "does this shard have a live owner?" for asks that waited long.
    pub(crate) owner_checks: OwnerChecks,
    /// Turns true when the member shuts down (its sender is gone when it was dropped).
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Client {
    /// A client that keeps no member running (the runner's own, for its singletons).
    pub(crate) fn new(parts: Parts) -> Self {
        Client {
            parts: Arc::new(parts),
            _member: None,
        }
    }

    /// This client, keeping `member` running while it (or a clone) exists.
    pub(crate) fn keeping(&self, member: Arc<dyn Any + Send + Sync>) -> Self {
        Client {
            parts: self.parts.clone(),
            _member: Some(member),
        }
    }

    /// Whether the member shut down (or was dropped): sends fail with `ShutDown`.
    pub(crate) fn is_shut_down(&self) -> bool {
        *self.parts.shutdown.borrow() || self.parts.shutdown.has_changed().is_err()
    }

    /// The journal underneath, for tools and queries.
    pub fn journal(&self) -> &AnyJournal {
        &self.parts.journal
    }

    /// Shards this member's runner owns right now.
    pub fn owned_shards(&self) -> Vec<u32> {
        self.parts
            .owned
            .read()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Asks of this member waiting for their replies right now. An ask that returned —
    /// replied, failed, timed out — or whose future was dropped is not counted.
    pub fn pending_asks(&self) -> usize {
        self.parts.waiters.len()
    }

    /// Reply queries this member made for asks whose shard another process owns, since it
    /// started. Each reads the replies of every such ask of one shard at once, after that
    /// shard's "replies committed" wake-up (or, lacking one, every second); local asks get
    /// their replies from this member's runner and cost none.
    pub fn reply_queries(&self) -> u64 {
        self.parts.fetch.queries.load(Ordering::Relaxed)
    }
}
