//! The application's types, so that tools can decode postcard payloads and replay state.
//!
//! postcard bytes do not describe themselves: only the Rust type that wrote them can read
//! them. An application lists its entity types (and projections) in a [`Registry`] and
//! hands it to [`crate::Cli`]; the plain `entlog` binary has an empty registry and shows
//! metadata and raw bytes instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use entlog_engine::{Entity, StoredOutcome, command_from_payload, event_from_payload};
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

    /// The registered entity types, in name order.
    pub(crate) fn entity_types(&self) -> Vec<&'static str> {
        self.entities.keys().copied().collect()
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

/// Decodes `payload` as `T` after checking its schema version (replies and states, which
/// have no upcasters; commands and events are read by the engine's versioned codec).
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
            "command" => to_json(&command_from_payload::<E>(payload).map_err(|e| e.to_string())?),
            "event" => to_json(&event_from_payload::<E>(payload).map_err(|e| e.to_string())?),
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
            let event = event_from_payload::<E>(&entry.payload).map_err(|e| ReplayFailure {
                entry: Some((entry.shard, entry.offset, entry.payload.type_tag.clone())),
                reason: e.to_string(),
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

#[cfg(test)]
mod tests {
    //! A journal written by version 1 of `account`, read by version 2 (an event that
    //! gained a field, with an upcaster from version 1) and by a version 2 without one.
    #![allow(clippy::unwrap_used)]

    use entlog_engine::{Context, Outcome, Rejection};
    use entlog_journal::{EntityKey, EntryKind, JournalError, Timestamp};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Serialize, Deserialize)]
    enum EventV1 {
        Deposited(u64),
    }

    #[derive(Serialize, Deserialize)]
    enum Event {
        Deposited { cents: u64, memo: String },
    }

    #[derive(Default, Serialize, Deserialize)]
    struct State {
        cents: u64,
        memos: Vec<String>,
    }

    struct Account;
    struct Forgetful;

    fn apply(state: &mut State, event: &Event) {
        let Event::Deposited { cents, memo } = event;
        state.cents += cents;
        state.memos.push(memo.clone());
    }

    macro_rules! account_v2 {
        ($ty:ty $(, $upcast:item)?) => {
            impl Entity for $ty {
                const TYPE: &'static str = "account";
                const EVENT_VERSION: u32 = 2;
                type Command = u64;
                type Event = Event;
                type Reply = u64;
                type State = State;

                async fn handle(
                    &self,
                    _: &State,
                    _: u64,
                    _: &mut Context,
                ) -> Result<Outcome<Self>, Rejection> {
                    Err(Rejection::new("read only"))
                }

                fn apply(state: &mut State, event: &Event) {
                    apply(state, event)
                }

                $($upcast)?
            }
        };
    }

    account_v2!(
        Account,
        fn upcast_event(payload: &Payload) -> Option<Result<Event, JournalError>> {
            (payload.version == 1).then(|| {
                payload
                    .decode::<EventV1>()
                    .map(|EventV1::Deposited(cents)| Event::Deposited {
                        cents,
                        memo: "v1".into(),
                    })
            })
        }
    );
    account_v2!(Forgetful);

    fn entry(offset: u64, payload: Payload) -> Entry {
        Entry {
            shard: 3,
            offset,
            kind: EntryKind::Event,
            entity: EntityKey::new("account", "alice").unwrap(),
            seq: Some(offset),
            message_id: uuid::Uuid::nil(),
            payload,
            deliver_at: None,
            created_at: Timestamp(0),
            headers: Default::default(),
        }
    }

    fn history() -> Vec<Entry> {
        vec![
            entry(
                1,
                Payload::encode("account.event", 1, &EventV1::Deposited(100)).unwrap(),
            ),
            entry(
                2,
                Payload::encode(
                    "account.event",
                    2,
                    &Event::Deposited {
                        cents: 5,
                        memo: "tip".into(),
                    },
                )
                .unwrap(),
            ),
        ]
    }

    #[test]
    fn replay_and_decode_upcast_older_events() {
        let registry = Registry::new().entity::<Account>();
        let codec = registry.codec("account").unwrap();
        let events = history();
        let replayed = codec.replay(None, &events).map_err(|f| f.reason).unwrap();
        assert_eq!(replayed.start, json!({"cents": 0, "memos": []}));
        assert_eq!(
            replayed.after,
            [
                json!({"cents": 100, "memos": ["v1"]}),
                json!({"cents": 105, "memos": ["v1", "tip"]}),
            ]
        );
        assert_eq!(
            registry
                .decode("account", &events[0].payload)
                .unwrap()
                .unwrap(),
            json!({"Deposited": {"cents": 100, "memo": "v1"}})
        );
    }

    #[test]
    fn without_upcaster_replay_names_the_entry_and_version() {
        let registry = Registry::new().entity::<Forgetful>();
        let codec = registry.codec("account").unwrap();
        let Err(failure) = codec.replay(None, &history()) else {
            panic!("a v1 event without upcaster must not replay");
        };
        assert_eq!(failure.entry, Some((3, 1, "account.event".to_owned())));
        assert!(failure.reason.contains("version 1"), "{}", failure.reason);
        assert!(
            failure.reason.contains("reads version 2"),
            "{}",
            failure.reason
        );
        let shown = registry.decode("account", &history()[0].payload).unwrap();
        assert!(shown.unwrap_err().contains("no upcaster"));
    }
}
