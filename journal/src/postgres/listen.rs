//! LISTEN side of wake-ups: notifications from any process become per-shard wake-ups.
//!
//! Notifications are coalesced per transaction (`notify_shards`, migration 0010): one
//! payload lists the shards of one kind, `'3,7,12'`. `append_entries` sends
//! `'<shards>'` for shards that got messages, and `'s<shards>'` for shards that got a
//! scheduled message, so that their owners read the next due time again;
//! `commit_batches` sends `'r<shards>'` for shards whose replies it stored, which wakes
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

/// Turns one notification payload into its wake-ups: `'<shards>'` new entries,
/// `'s<shards>'` a scheduled message, `'r<shards>'` replies committed, where `<shards>` is
/// one shard or several separated by commas. Anything unreadable wakes every shard (a
/// spurious wake-up costs a read; a missed one a poll interval).
fn dispatch(wakeups: &Wakeups, payload: &str) {
    let (wake, list): (fn(&Wakeups, Shard), &str) = match payload.as_bytes().first() {
        Some(b's') => (Wakeups::scheduled, &payload[1..]),
        Some(b'r') => (Wakeups::replied, &payload[1..]),
        _ => (Wakeups::wake, payload),
    };
    let shards: Result<Vec<Shard>, _> = list.split(',').map(str::parse::<Shard>).collect();
    match shards {
        Ok(shards) => {
            for shard in shards {
                wake(wakeups, shard);
            }
        }
        Err(_) => wakeups.wake_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_wakes_every_shard_it_lists() {
        let w = Wakeups::new(16);
        dispatch(&w, "3,7,12");
        let woken: Vec<Shard> = (0..16).filter(|&s| w.count(s) == 1).collect();
        assert_eq!(woken, [3, 7, 12]);

        dispatch(&w, "s1,2");
        assert!(w.take_scheduled(1) && w.take_scheduled(2));
        assert!(!w.take_scheduled(3));

        // One shard, as every payload read before they were coalesced.
        dispatch(&w, "5");
        assert_eq!(w.count(5), 1);
    }

    #[test]
    fn an_unreadable_payload_wakes_every_shard() {
        let w = Wakeups::new(4);
        dispatch(&w, "1,x");
        assert!((0..4).all(|s| w.count(s) >= 1));
    }
}
