//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
//! commit copies the WAL's pages into the database file and syncs it before it returns,
//! and the writer connection — every append and commit of the process — waits. Instead,
//! a task checkpoints every [`EVERY`] on a reader connection (`PASSIVE`: it copies what it
//! can without waiting for the writer or readers), so the writer only appends to the WAL.
//! The writer's own automatic checkpoint stays as a backstop at [`BACKSTOP_PAGES`], should
//! the task fall behind.

use std::sync::Weak;
use std::time::Duration;

use super::Inner;

/// How often the WAL is checkpointed.
pub(super) const EVERY: Duration = Duration::from_millis(100);

/// WAL pages after which a committing connection checkpoints by itself (SQLite's
/// `wal_autocheckpoint`; its default is 1,000).
pub(super) const BACKSTOP_PAGES: u32 = 20_000;

/// Starts the checkpoint task; it ends when the journal is dropped or closed.
pub(super) fn start(inner: Weak<Inner>) {
    tokio::spawn(async move {
        // Whether the last checkpoint failed: a run of failures is logged once, at its start.
        let mut failing = false;
        loop {
            tokio::time::sleep(EVERY).await;
            let Some(inner) = inner.upgrade() else { return };
            if inner.reader.is_closed() {
                return;
            }
            let done = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_optional(&inner.reader)
                .await;
            match done {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints by itself past the backstop until it works again");
                }
                Err(_) => {}
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("WAL checkpoints work again");
                }
                Ok(_) => {}
            }
        }
    });
}
