//! The application's types, so that tools can decode postcard payloads and replay state.
//!
//! postcard bytes do not describe themselves: only the Rust type that wrote them can read
//! them. An application lists its entity types (and projections) in a [`Registry`] and
//! hands it to [`crate::Cli`]; the plain `entlog` binary has an empty registry and shows
//! metadata and raw bytes instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use entlog_engine::{Entity, StoredOutcome};
use entlog_journal::{Entry, Payload};
use entlog_projections::{DynProjection, Projection};
use serde::Serialize;
use serde_json::Value;

/// Entity and projection types an application registers for its CLI.
#[derive(Default, Clone)]
pub struct Registry {
    entities: BTreeMap<&'static str, Arc<dyn TypeCodec>>,
    projections: Vec<Arc<dyn DynProjection>>,
}

impl Registry {
    /// An empty registry: commands show raw payloads and cannot replay.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers entity type `E`: its commands, events, replies and state decode, and its
    /// history replays.
    pub fn entity<E: Entity>(mut self) -> Self {
        self.entities
            .insert(E::TYPE, Arc::new(Codec::<E>(std::marker::PhantomData)));
        self
    }

    /// Registers a projection, so `projections rebuild` can run it.
    pub fn projection(mut self, projection: impl Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    /// The codec of an entity type, if registered.
    pub(crate) fn codec(&self, entity_type: &str) -> Option<&Arc<dyn TypeCodec>> {
        self.entities.get(entity_type)
    }

    /// A registered projection by name.
    pub(crate) fn projection_named(&self, name: &str) -> Option<Arc<dyn DynProjection>> {
        self.projections.iter().find(|p| p.name() == name).cloned()
    }

    /// Decodes a payload of `entity_type` to JSON: `None` when the type is unregistered,
    /// `Some(Err)` when the registered type cannot read it.
    pub(crate) fn decode(
        &self,
        entity_type: &str,
        payload: &Payload,
    ) -> Option<Result<Value, String>> {
        self.codec(entity_type).map(|c| c.decode(payload))
    }
}

/// States of an entity along a replay.
pub(crate) struct Replayed {
    /// The state replay started from (default, or a snapshot's).
    pub start: Value,
    /// The state after each event, in order.
    pub after: Vec<Value>,
}

/// An entity type with its Rust types erased.
pub(crate) trait TypeCodec: Send + Sync {
    /// Decodes a command, event, reply or state payload (told apart by its type tag).
    fn decode(&self, payload: &Payload) -> Result<Value, String>;
    /// Folds `events` into `start` (a state payload) or the default state.
    fn replay(&self, start: Option<&Payload>, events: &[Entry]) -> Result<Replayed, ReplayFailure>;
    /// The state schema version this build writes.
    fn state_version(&self) -> u32;
}

/// Why a replay stopped: the entry it could not read, if any, and the reason.
pub(crate) struct ReplayFailure {
    /// The undecodable event (`None`: the starting state).
    pub entry: Option<(u32, u64, String)>,
    /// What went wrong.
    pub reason: String,
}

struct Codec<E>(std::marker::PhantomData<fn() -> E>);

fn to_json<T: Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("not representable as JSON: {e}"))
}

/// Decodes `payload` as `T` after checking its schema version.
fn read<T: serde::de::DeserializeOwned>(payload: &Payload, version: u32) -> Result<T, String> {
    if payload.version != version {
        return Err(format!(
            "{} is version {}, and this binary reads version {version}",
            payload.type_tag, payload.version
        ));
    }
    payload.decode::<T>().map_err(|e| e.to_string())
}

impl<E: Entity> TypeCodec for Codec<E> {
    fn decode(&self, payload: &Payload) -> Result<Value, String> {
        let kind = payload
            .type_tag
            .strip_prefix(E::TYPE)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or("");
        match kind {
            "command" => to_json(&read::<E::Command>(payload, E::COMMAND_VERSION)?),
            "event" => to_json(&read::<E::Event>(payload, E::EVENT_VERSION)?),
            "reply" => to_json(&read::<StoredOutcome<E::Reply>>(payload, E::REPLY_VERSION)?),
            "state" => to_json(&read::<E::State>(payload, E::STATE_VERSION)?),
            _ => Err(format!(
                "type tag {:?} is not one of {}'s",
                payload.type_tag,
                E::TYPE
            )),
        }
    }

    fn replay(&self, start: Option<&Payload>, events: &[Entry]) -> Result<Replayed, ReplayFailure> {
        let mut state = match start {
            Some(p) => read::<E::State>(p, E::STATE_VERSION).map_err(|reason| ReplayFailure {
                entry: None,
                reason,
            })?,
            None => E::State::default(),
        };
        let json = |state: &E::State, entry: Option<&Entry>| {
            to_json(state).map_err(|reason| ReplayFailure {
                entry: entry.map(|e| (e.shard, e.offset, e.payload.type_tag.clone())),
                reason,
            })
        };
        let start = json(&state, None)?;
        let mut after = Vec::with_capacity(events.len());
        for entry in events {
            let event: E::Event =
                read(&entry.payload, E::EVENT_VERSION).map_err(|reason| ReplayFailure {
                    entry: Some((entry.shard, entry.offset, entry.payload.type_tag.clone())),
                    reason,
                })?;
            E::apply(&mut state, &event);
            after.push(json(&state, Some(entry))?);
        }
        Ok(Replayed { start, after })
    }

    fn state_version(&self) -> u32 {
        E::STATE_VERSION
    }
}
