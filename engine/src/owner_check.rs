//! Whether a shard has a live owner, as asked by asks that waited long: one query per
//! shard per period, shared by every ask waiting on that shard, and bounded in time.
//!
//! An ask waiting longer than `Config::unavailable_after` asks this; with no live owner
//! it fails with `EngineError::RunnerUnavailable`. Thousands of asks stuck behind one
//! backlog must not become thousands of `pg_locks` queries.

use std::collections::HashMap;
use std::time::Duration;

use entlog_journal::{AnyJournal, Journal, JournalError, Shard};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long one answer serves every ask waiting on the shard.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A check that takes longer than this counts as "cannot tell".
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an owner check gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal did not answer within the bound.
    #[error("the owner check took longer than {0:?}")]
    TimedOut(Duration),
}

/// Recent answers, by shard.
#[derive(Default)]
pub(crate) struct OwnerChecks {
    seen: Mutex<HashMap<Shard, (Instant, bool)>>,
}

impl OwnerChecks {
    /// Whether a live runner owns `shard` now (an answer at most [`FRESH_FOR`] old).
    pub(crate) async fn has_owner(
        &self,
        journal: &AnyJournal,
        shard: Shard,
    ) -> Result<bool, CheckError> {
        // Held across the query: asks arriving meanwhile wait for its answer instead of
        // asking again.
        let mut seen = self.seen.lock().await;
        if let Some(&(at, owned)) = seen.get(&shard)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(owned);
        }
        let owner = tokio::time::timeout(CHECK_TIMEOUT, journal.shard_owner(shard))
            .await
            .map_err(|_| CheckError::TimedOut(CHECK_TIMEOUT))??;
        let owned = owner.is_some();
        seen.insert(shard, (Instant::now(), owned));
        Ok(owned)
    }
}
