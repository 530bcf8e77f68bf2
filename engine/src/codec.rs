//! How an entity's values are stored: type tags and versions per value kind.
//!
//! Tags are `"<TYPE>.command"`, `"<TYPE>.event"`, `"<TYPE>.reply"` and `"<TYPE>.state"`;
//! the version comes from the entity's `*_VERSION` constants. A stored reply is a
//! [`StoredOutcome`], so a rejection or a failure is remembered like an answer.
//!
//! # Reading older versions
//!
//! Every read of a stored event or command goes through [`decode_event`] /
//! [`decode_command`]: a payload of the current version decodes as the current type; an
//! older one is handed to the entity's upcaster ([`Entity::upcast_event`],
//! [`Entity::upcast_command`]); anything else is a typed error
//! ([`EngineError::NoUpcaster`]). Nothing is skipped and nothing is decoded as the wrong
//! shape. Snapshots are not upcast: one of another state version is ignored, and the
//! state is rebuilt by a full replay.

use entlog_journal::{Entry, JournalError, Payload, Result, Shard};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::entity::Entity;
use crate::error::EngineError;

/// A reply as stored: the handler's answer, its rejection, or the failure that ended
/// the message's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoredOutcome<R> {
    /// The handler replied.
    Replied(R),
    /// The handler rejected the command.
    Rejected(String),
    /// Handling failed on every attempt (a poison message); no events were written.
    Failed(String),
}

pub(crate) use crate::entity::encode_command as command;

pub(crate) fn event<E: Entity>(e: &E::Event) -> Result<Payload> {
    Payload::encode(&format!("{}.event", E::TYPE), E::EVENT_VERSION, e)
}

pub(crate) fn state<E: Entity>(s: &E::State) -> Result<Payload> {
    Payload::encode(&format!("{}.state", E::TYPE), E::STATE_VERSION, s)
}

pub(crate) fn reply<E: Entity>(r: &StoredOutcome<E::Reply>) -> Result<Payload> {
    Payload::encode(&reply_tag::<E>(), E::REPLY_VERSION, r)
}

/// The type tag of `E`'s replies.
pub(crate) fn reply_tag<E: Entity>() -> String {
    format!("{}.reply", E::TYPE)
}

/// Reads a stored reply to a message sent to `E`: its type tag is checked first, so a
/// reply of another entity type is [`EngineError::ReplyType`], never decoded as `E`'s;
/// then the stored outcome becomes the ask's result.
pub(crate) fn decode_reply<E: Entity>(
    message_id: uuid::Uuid,
    payload: &Payload,
) -> std::result::Result<E::Reply, EngineError> {
    let expected = reply_tag::<E>();
    if payload.type_tag != expected {
        return Err(EngineError::ReplyType {
            message_id,
            expected,
            found: payload.type_tag.clone(),
        });
    }
    match payload.decode::<StoredOutcome<E::Reply>>()? {
        StoredOutcome::Replied(r) => Ok(r),
        StoredOutcome::Rejected(reason) => Err(EngineError::Rejected { reason }),
        StoredOutcome::Failed(reason) => Err(EngineError::Failed { reason }),
    }
}

/// A stored failure, encoded without knowing the reply type (the variant is what counts).
pub(crate) fn failure(entity_type: &str, version: u32, reason: String) -> Result<Payload> {
    Payload::encode(
        &format!("{entity_type}.reply"),
        version,
        &StoredOutcome::<()>::Failed(reason),
    )
}

/// The first byte of every stored failure reply (postcard's index of
/// [`StoredOutcome::Failed`]): tools find poison messages by it without the reply type,
/// and the journal indexes replies that start with it
/// ([`entlog_journal::FAILED_REPLY_BYTE`]).
pub const FAILURE_PREFIX: [u8; 1] = [entlog_journal::FAILED_REPLY_BYTE];

/// The reason of a stored failure reply, whatever the entity's reply type; `None` for a
/// reply or a rejection.
pub fn failure_reason(payload: &Payload) -> Option<String> {
    if !payload.bytes.starts_with(&FAILURE_PREFIX) {
        return None;
    }
    match payload.decode::<StoredOutcome<()>>() {
        Ok(StoredOutcome::Failed(reason)) => Some(reason),
        _ => None,
    }
}

/// Why a stored payload cannot be read as the entity's current type (without its place
/// in the journal; [`decode_event`] and [`decode_command`] add it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload has another schema version than the current one and the entity has no
    /// upcaster for it (or it is newer than the current one: written by a newer build).
    #[error(
        "{type_tag} version {version} cannot be read: this build reads version {current} and has no upcaster from {version}"
    )]
    NoUpcaster {
        /// The stored type tag.
        type_tag: String,
        /// The stored schema version.
        version: u32,
        /// The version this build writes.
        current: u32,
    },
    /// The bytes do not decode as the type their version names (or the upcaster failed).
    #[error("{type_tag} version {version} does not decode: {source}")]
    Undecodable {
        /// The stored type tag.
        type_tag: String,
        /// The stored schema version.
        version: u32,
        /// The codec's error.
        source: JournalError,
    },
}

impl PayloadError {
    /// The engine error for this failure at `shard`/`offset`.
    fn at(self, shard: Shard, offset: u64) -> EngineError {
        match self {
            PayloadError::NoUpcaster {
                type_tag,
                version,
                current,
            } => EngineError::NoUpcaster {
                type_tag,
                version,
                current,
                shard,
                offset,
            },
            PayloadError::Undecodable {
                type_tag,
                version,
                source,
            } => EngineError::Undecodable {
                type_tag,
                version,
                shard,
                offset,
                source,
            },
        }
    }
}

/// The one versioned read: the current version decodes as `T`; an older one goes to the
/// upcaster; a missing upcaster or a newer version is an error, never a skip.
fn versioned<T: DeserializeOwned>(
    payload: &Payload,
    current: u32,
    upcast: impl FnOnce(&Payload) -> Option<Result<T>>,
) -> std::result::Result<T, PayloadError> {
    let undecodable = |source| PayloadError::Undecodable {
        type_tag: payload.type_tag.clone(),
        version: payload.version,
        source,
    };
    if payload.version == current {
        return payload.decode().map_err(undecodable);
    }
    let upcast = if payload.version < current {
        upcast(payload)
    } else {
        None
    };
    match upcast {
        Some(result) => result.map_err(undecodable),
        None => Err(PayloadError::NoUpcaster {
            type_tag: payload.type_tag.clone(),
            version: payload.version,
            current,
        }),
    }
}

/// Reads an event payload of `E` of any known version (see [`decode_event`]).
pub fn event_from_payload<E: Entity>(
    payload: &Payload,
) -> std::result::Result<E::Event, PayloadError> {
    versioned(payload, E::EVENT_VERSION, E::upcast_event)
}

/// Reads a command payload of `E` of any known version (see [`decode_command`]).
pub fn command_from_payload<E: Entity>(
    payload: &Payload,
) -> std::result::Result<E::Command, PayloadError> {
    versioned(payload, E::COMMAND_VERSION, E::upcast_command)
}

/// Reads a stored event of `E` as its current `Event` type, whatever version wrote it.
///
/// The version [`Entity::EVENT_VERSION`] decodes directly; an older one goes through
/// [`Entity::upcast_event`]. Without an upcaster for the stored version, or for a
/// version newer than this build's, the result is [`EngineError::NoUpcaster`] naming the
/// type tag, both versions, the shard and the offset. Application projections that read
/// an entity's events should decode them with this function too.
pub fn decode_event<E: Entity>(entry: &Entry) -> std::result::Result<E::Event, EngineError> {
    event_from_payload::<E>(&entry.payload).map_err(|e| e.at(entry.shard, entry.offset))
}

/// Reads a stored message to `E` as its current `Command` type, whatever version wrote
/// it (messages queued before a deploy); the rules of [`decode_event`] apply, with
/// [`Entity::COMMAND_VERSION`] and [`Entity::upcast_command`].
pub fn decode_command<E: Entity>(entry: &Entry) -> std::result::Result<E::Command, EngineError> {
    command_from_payload::<E>(&entry.payload).map_err(|e| e.at(entry.shard, entry.offset))
}

#[cfg(test)]
mod failure_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn failure_replies_are_found_by_their_prefix() {
        let failed = failure("account", 1, "poison".into()).unwrap();
        assert!(failed.bytes.starts_with(&FAILURE_PREFIX));
        assert_eq!(failure_reason(&failed).as_deref(), Some("poison"));
        let replied = Payload::encode("account.reply", 1, &StoredOutcome::Replied(2u8)).unwrap();
        let rejected = Payload::encode(
            "account.reply",
            1,
            &StoredOutcome::<u8>::Rejected("no".into()),
        )
        .unwrap();
        assert!(!replied.bytes.starts_with(&FAILURE_PREFIX));
        assert_eq!(failure_reason(&replied), None);
        assert_eq!(failure_reason(&rejected), None);
    }
}

#[cfg(test)]
mod reply_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::entity::{Context, Outcome, Rejection};

    struct Counter;

    impl Entity for Counter {
        const TYPE: &'static str = "counter";
        type Command = ();
        type Event = ();
        type Reply = i64;
        type State = ();

        async fn handle(
            &self,
            _: &(),
            _: (),
            _: &mut Context,
        ) -> std::result::Result<Outcome<Self>, Rejection> {
            Ok(Outcome::reply(0))
        }

        fn apply(_: &mut (), _: &()) {}
    }

    #[test]
    fn a_reply_of_another_type_is_an_error_not_a_misdecode() {
        let id = uuid::Uuid::now_v7();
        // Bytes that would decode as a counter reply: only the tag tells them apart.
        let echo = Payload::encode("echo.reply", 1, &StoredOutcome::Replied(7i64)).unwrap();
        match decode_reply::<Counter>(id, &echo) {
            Err(EngineError::ReplyType {
                message_id,
                expected,
                found,
            }) => {
                assert_eq!(message_id, id);
                assert_eq!(expected, "counter.reply");
                assert_eq!(found, "echo.reply");
            }
            other => panic!("expected ReplyType, got {other:?}"),
        }
        let own = reply::<Counter>(&StoredOutcome::Replied(7)).unwrap();
        assert_eq!(decode_reply::<Counter>(id, &own).unwrap(), 7);
    }
}
