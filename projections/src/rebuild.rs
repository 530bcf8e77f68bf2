//! Rebuilding a projection from the start of the journal.
//!
//! # What readers see during a rebuild
//!
//! A rebuild empties the read model and resets every checkpoint in one transaction, then
//! replays the journal. **The read model is incomplete until the rebuild catches up**: it
//! does not keep serving the old contents meanwhile. Live projectors in running runners
//! keep working during a rebuild and share the replay with it (the checkpoint's
//! compare-and-set keeps every event applied once).

use std::sync::Arc;

use entlog_journal::{AnyJournal, Journal};

use crate::projection::{DynProjection, ProjectionError, checkpoint_name};
use crate::projector::{Projector, Step};

/// Progress of a rebuild: events applied of the journal entries to scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Journal entries behind the checkpoints so far (all shards).
    pub done: u64,
    /// Journal entries to get through (all shards, heads when the rebuild started).
    pub total: u64,
}

/// Empties the projection's read model, resets its checkpoints, and replays every shard up
/// to its head at the start, calling `progress` after each batch.
///
/// Stops with an error at the first event the projection fails on.
pub async fn rebuild(
    journal: &AnyJournal,
    projection: Arc<dyn DynProjection>,
    batch: usize,
    mut progress: impl FnMut(Progress),
) -> Result<(), ProjectionError> {
    let consumer = checkpoint_name(projection.name());
    let shards = journal.shard_count();
    crate::projection::set_up(journal, projection.as_ref()).await?;
    // Checkpoints first: a live projector's transaction moves its checkpoint before it
    // writes, so taking every checkpoint row waits for those in flight to commit and
    // makes later ones find the checkpoint moved. The reset then sees (and removes)
    // everything any projector committed.
    let mut tx = journal.begin().await?;
    for shard in 0..shards {
        tx.set_checkpoint(&consumer, shard, 0).await?;
    }
    projection.reset(&mut tx).await?;
    tx.commit().await?;

    let mut targets = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        targets.push(journal.head(shard).await?);
    }
    let total = targets.iter().sum();
    let mut done = 0;
    progress(Progress { done, total });
    for shard in 0..shards {
        let target = targets[shard as usize];
        let mut projector = Projector::new(journal.clone(), projection.clone(), shard, batch);
        let mut at = journal.cursor(&consumer, shard).await?;
        while at < target {
            match projector.step().await? {
                Step::Idle => break,
                Step::Applied { .. } | Step::Raced => {}
                Step::Failed { offset, error } => {
                    return Err(ProjectionError::Handler(format!(
                        "rebuild stopped at shard {shard}, offset {offset}: {error}"
                    )));
                }
            }
            let now = journal.cursor(&consumer, shard).await?.min(target);
            done += now.saturating_sub(at);
            at = now;
            progress(Progress { done, total });
        }
        done += target.saturating_sub(at);
    }
    progress(Progress { done: total, total });
    Ok(())
}
