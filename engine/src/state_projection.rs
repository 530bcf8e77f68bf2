//! The built-in state projection: the latest state of every entity of a type, as a row
//! of `entity_state` (type, id, seq, updated_at, state as JSON) for ad-hoc SQL.
//!
//! ```sql
//! -- PostgreSQL
//! SELECT entity_id, state->>'cents' FROM entlog.entity_state
//!  WHERE entity_type = 'account' AND (state->>'cents')::bigint > 1000;
//! -- SQLite
//! SELECT entity_id, json_extract(state, '$.cents') FROM entity_state WHERE entity_type = 'account';
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use entlog_journal::{AnyJournal, AnyTx, Entry, Timestamp, sql};
use entlog_projections::{Projection, ProjectionError};

use crate::entity::Entity;
use crate::error::EngineError;

/// Projects entity type `E` into `entity_state`. Register it with
/// [`ClusterBuilder::projection`](crate::ClusterBuilder::projection).
pub struct StateProjection<E> {
    name: String,
    _entity: PhantomData<fn() -> E>,
}

impl<E: Entity> Default for StateProjection<E> {
    fn default() -> Self {
        StateProjection {
            name: format!("state.{}", E::TYPE),
            _entity: PhantomData,
        }
    }
}

impl<E: Entity> StateProjection<E> {
    /// The state projection of `E`.
    pub fn new() -> Self {
        Self::default()
    }
}

fn to_json<S: serde::Serialize>(s: &S) -> Result<String, ProjectionError> {
    serde_json::to_string(s).map_err(|e| ProjectionError::Handler(format!("state to JSON: {e}")))
}

fn from_json<S: serde::de::DeserializeOwned>(text: &str) -> Result<S, ProjectionError> {
    serde_json::from_str(text)
        .map_err(|e| ProjectionError::Handler(format!("state from JSON: {e}")))
}

impl<E: Entity> Projection for StateProjection<E> {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == E::TYPE
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        let mut by_entity: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for e in events {
            by_entity.entry(e.entity.entity_id()).or_default().push(e);
        }
        let now = Timestamp::now().as_micros();
        for (id, list) in by_entity {
            let stored = tx.entity_state(E::TYPE, id).await?;
            let (mut seq, mut state) = match stored {
                Some((seq, text)) => (seq, from_json::<E::State>(&text)?),
                None => (0, E::State::default()),
            };
            for e in list {
                let at = e.seq.unwrap_or(0);
                if at <= seq {
                    continue;
                }
                let event = crate::codec::decode_event::<E>(e)?;
                E::apply(&mut state, &event);
                seq = at;
            }
            tx.store_entity_state(E::TYPE, id, seq, now, &to_json(&state)?)
                .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        tx.execute(sql("DELETE FROM entity_state WHERE entity_type = $1").bind(E::TYPE))
            .await?;
        Ok(())
    }
}

/// The projected state of entity `id` of type `E` and the seq it reflects, if projected.
pub async fn projected_state<E: Entity>(
    journal: &AnyJournal,
    id: &str,
) -> Result<Option<(u64, E::State)>, EngineError> {
    let row = journal.entity_state(E::TYPE, id).await?;
    match row {
        Some((seq, text)) => {
            let state = serde_json::from_str(&text).map_err(|e| EngineError::Decode {
                what: format!("the stored state of {}/{id}", E::TYPE),
                reason: e.to_string(),
            })?;
            Ok(Some((seq, state)))
        }
        None => Ok(None),
    }
}
