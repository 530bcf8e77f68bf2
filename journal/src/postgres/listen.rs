//! LISTEN side of wake-ups: notifications from any process become per-shard wake-ups.
//!
//! `append_entries` sends `NOTIFY <channel>, '<shard>'` once per shard per transaction
//! (PostgreSQL folds identical notifications of one transaction), and `'s<shard>'` for a
//! shard that got a scheduled message, so that its owner reads the shard's next due time
//! again. `commit_batch` sends `'r<shard>'` when it stored replies of a shard, which wakes
//! the askers waiting for them. A lost listener connection may have dropped
//! notifications, so every shard is woken (its tailers and reply waiters, and its
//! schedule flagged) when it is noticed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::shard::Shard;
use crate::wakeup::Wakeups;

/// The background task forwarding notifications; stopped when dropped.
pub(super) struct ListenerTask {
    handle: JoinHandle<()>,
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl ListenerTask {
    pub(super) async fn start(
        pool: PgPool,
        channel: String,
        wakeups: Arc<Wakeups>,
    ) -> Result<Self> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&channel).await?;
        let handle = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => dispatch(&wakeups, n.payload()),
                    Ok(None) => wakeups.wake_all(),
                    Err(e) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "notification listener failed; retrying");
                        wakeups.wake_all();
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(ListenerTask { handle })
    }
}

/// Turns one notification payload into its wake-up: `'<shard>'` new entries, `'s<shard>'`
/// a scheduled message, `'r<shard>'` replies committed. Anything unreadable wakes every
/// shard (a spurious wake-up costs a read; a missed one a poll interval).
fn dispatch(wakeups: &Wakeups, payload: &str) {
    let (wake, shard): (fn(&Wakeups, Shard), &str) = match payload.as_bytes().first() {
        Some(b's') => (Wakeups::scheduled, &payload[1..]),
        Some(b'r') => (Wakeups::replied, &payload[1..]),
        _ => (Wakeups::wake, payload),
    };
    match shard.parse::<Shard>() {
        Ok(shard) => wake(wakeups, shard),
        Err(_) => wakeups.wake_all(),
    }
}
