//! How an entity's values are stored: type tags and versions per value kind.
//!
//! Tags are `"<TYPE>.command"`, `"<TYPE>.event"`, `"<TYPE>.reply"` and `"<TYPE>.state"`;
//! the version comes from the entity's `*_VERSION` constants. A stored reply is a
//! [`StoredOutcome`], so a rejection or a failure is remembered like an answer.

use entlog_journal::{Payload, Result};
use serde::{Deserialize, Serialize};

use crate::entity::Entity;

/// A reply as stored: the handler's answer, its rejection, or the failure that ended
/// the message's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredOutcome<R> {
    /// The handler replied.
    Replied(R),
    /// The handler rejected the command.
    Rejected(String),
    /// Handling failed on every attempt (a poison message); no events were written.
    Failed(String),
}

pub(crate) fn command<E: Entity>(c: &E::Command) -> Result<Payload> {
    Payload::encode(&format!("{}.command", E::TYPE), E::COMMAND_VERSION, c)
}

pub(crate) fn event<E: Entity>(e: &E::Event) -> Result<Payload> {
    Payload::encode(&format!("{}.event", E::TYPE), E::EVENT_VERSION, e)
}

pub(crate) fn state<E: Entity>(s: &E::State) -> Result<Payload> {
    Payload::encode(&format!("{}.state", E::TYPE), E::STATE_VERSION, s)
}

pub(crate) fn reply<E: Entity>(r: &StoredOutcome<E::Reply>) -> Result<Payload> {
    Payload::encode(&format!("{}.reply", E::TYPE), E::REPLY_VERSION, r)
}

/// A stored failure, encoded without knowing the reply type (the variant is what counts).
pub(crate) fn failure(entity_type: &str, version: u32, reason: String) -> Result<Payload> {
    Payload::encode(
        &format!("{entity_type}.reply"),
        version,
        &StoredOutcome::<()>::Failed(reason),
    )
}
