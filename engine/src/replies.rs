//! Reply fetchers: how asks learn replies committed by another process's runner.
//!
//! One fetcher task runs per shard that has asks waiting in this process (started by the
//! first, ending when none is left). While another process owns the shard, it waits for
//! the shard's "replies committed" wake-up ([`Journal::wait_for_replies`], fed on
//! PostgreSQL by the `'r<shard>'` notification of each commit) and then reads the replies
//! of EVERY ask of that shard in ONE [`Journal::replies`] query: 256 concurrent asks cost
//! one query per wake-up, not 256.
//!
//! A notification can be lost (a listener reconnecting, notifications off), so the fetcher
//! also looks every [`FALLBACK_POLL`] without one. While this process owns the shard, its
//! runner resolves the asks directly and the fetcher only looks, at that slow pace, for
//! asks older than [`FALLBACK_POLL`] — those whose shard moved while they waited.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog_journal::{AnyJournal, Journal, Shard};

use crate::owned::Owned;
use crate::waiters::Waiters;

/// How long a fetcher waits for a wake-up before it looks anyway. A lost notification
/// costs at most this much latency; at this pace a fallback look is cheap.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Pause after a failed reply query, before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a fetcher needs; cloned into each fetcher task.
#[derive(Clone)]
pub(crate) struct ReplyFetch {
    pub journal: AnyJournal,
    pub waiters: Arc<Waiters>,
    pub owned: Owned,
    /// Reply queries made, for [`crate::Cluster::reply_queries`].
    pub queries: Arc<AtomicU64>,
}

impl ReplyFetch {
    fn is_local(&self, shard: Shard) -> bool {
        self.owned
            .read()
            .map(|o| o.contains(&shard))
            .unwrap_or(false)
    }

    /// Starts the fetcher of `shard` (the caller was told to by `Waiters::register`).
    pub(crate) fn spawn(&self, shard: Shard) {
        tokio::spawn(self.clone().run(shard));
    }

    async fn run(self, shard: Shard) {
        loop {
            let registered_before = if self.is_local(shard) {
                tokio::time::sleep(FALLBACK_POLL).await;
                Instant::now().checked_sub(FALLBACK_POLL)
            } else {
                self.journal.wait_for_replies(shard, FALLBACK_POLL).await;
                None
            };
            let wanted = self.waiters.wanted(shard, registered_before);
            if !wanted.is_empty() {
                self.queries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::REPLY_QUERIES).increment(1);
                match self.journal.replies(&wanted).await {
                    Ok(found) => {
                        for (entity, reply) in found {
                            self.waiters
                                .resolve(&entity, reply.message_id, reply.payload);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "reading replies failed; retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            if self.waiters.fetcher_may_stop(shard) {
                return;
            }
        }
    }
}
