//! An entity's state rebuilt from the journal: the latest readable snapshot, then every
//! later event in seq order. The runner activates instances with it, and
//! [`EntityRef::state`] reads a state with it without sending a message.

use std::panic::AssertUnwindSafe;

use entlog_journal::{AnyJournal, EntityKey, Journal, JournalError};
use futures_util::{FutureExt, TryStreamExt};

use crate::codec;
use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::error::EngineError;
use crate::registry::panic_message;

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

impl<E: Entity> EntityRef<E> {
    /// The entity's current state and the seq of its last event (0: it has none), read
    /// from the journal — its latest snapshot and every later committed event — without
    /// sending a message and whoever owns it. It reflects every event committed before
    /// the call; a message being handled meanwhile is not in it.
    ///
    /// An `apply` that panics while folding is [`EngineError::Failed`].
    pub async fn state(&self) -> Result<(u64, E::State), EngineError> {
        let key = self.key()?;
        let journal = self.client().journal();
        match AssertUnwindSafe(fold::<E>(journal, &key))
            .catch_unwind()
            .await
        {
            Ok(folded) => folded.map(|f| (f.seq, f.state)),
            Err(panic) => Err(EngineError::Failed {
                reason: format!(
                    "apply panicked while replaying {key}: {}",
                    panic_message(panic.as_ref())
                ),
            }),
        }
    }

    /// The runner that owns this entity's shard now, if a live one does.
    pub async fn owner(&self) -> Result<Option<String>, EngineError> {
        let key = self.key()?;
        let journal = self.client().journal();
        Ok(journal.shard_owner(journal.shard_of(&key)).await?)
    }

    /// Whether this member's runner owns the entity's shard now (its asks are answered in
    /// this process).
    pub fn is_local(&self) -> Result<bool, EngineError> {
        let key = self.key()?;
        let shard = self.client().journal().shard_of(&key);
        Ok(self.client().owned_shards().contains(&shard))
    }
}
