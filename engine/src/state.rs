//! An entity's state rebuilt from the journal: the latest readable snapshot, then every
//! later event in seq order. The runner activates instances with it, and
//! [`EntityRef::state`](crate::EntityRef::state) reads a state with it without sending a
//! message.

use entlog_journal::{AnyJournal, EntityKey, Journal, JournalError};
use futures_util::TryStreamExt;

use crate::codec;
use crate::entity::Entity;
use crate::error::EngineError;

/// A state folded from the journal.
pub(crate) struct Folded<S> {
    pub state: S,
    /// Seq of the last event folded in (0: none).
    pub seq: u64,
    /// Seq of the snapshot it started from (0: none).
    pub snapshot_seq: u64,
    /// Events replayed after the snapshot.
    pub replayed: u64,
}

/// Folds `key`'s state: its latest snapshot of the current state version (an undecodable
/// one is skipped with a warning), then the later events. A gap in the seqs is
/// [`JournalError::Corrupt`].
pub(crate) async fn fold<E: Entity>(
    journal: &AnyJournal,
    key: &EntityKey,
) -> Result<Folded<E::State>, EngineError> {
    let mut state = E::State::default();
    let mut seq = 0;
    if let Some(snap) = journal.load_snapshot(key, E::STATE_VERSION).await? {
        match snap.state.decode::<E::State>() {
            Ok(s) => {
                state = s;
                seq = snap.seq;
            }
            Err(e) => {
                tracing::warn!(entity = %key, error = %e, "undecodable snapshot; replaying in full")
            }
        }
    }
    let snapshot_seq = seq;
    let mut replayed = 0u64;
    let mut events = std::pin::pin!(journal.events(key, seq + 1));
    while let Some(entry) = events.try_next().await? {
        let at = entry.seq.unwrap_or(0);
        if at != seq + 1 {
            return Err(JournalError::Corrupt {
                shard: entry.shard,
                offset: entry.offset,
                reason: format!("{key} jumps from seq {seq} to {at}"),
            }
            .into());
        }
        let event = codec::decode_event::<E>(&entry)?;
        E::apply(&mut state, &event);
        seq = at;
        replayed += 1;
    }
    Ok(Folded {
        state,
        seq,
        snapshot_seq,
        replayed,
    })
}
