//! The journal conformance suite: public async test functions that every backend passes
//! unchanged. A backend's test file implements [`Backend`] and calls each function (see
//! `journal/tests/`); each call gets a fresh journal, so the tests run in parallel.
//!
//! | file | holds |
//! |---|---|
//! | `durability.rs` | invariants 1, 7, 8: durable appends, checked bytes and snapshots; paging, cursors |
//! | `dedup.rs` | invariant 4: a message id is journaled once |
//! | `commits.rs` | invariant 3: a batch commits whole or not at all (alone, cancelled, many shards, joined by other writes) |
//! | `fencing.rs` | invariant 5: racing writers and stale leases cannot fork a history |
//! | `tailing.rs` | invariant 6: a tailer sees every entry once, in order; wake-ups |
//! | `input.rs` | bad input and a mismatched journal: typed errors, nothing changed |
//! | `scheduled.rs` | scheduled messages: promotion, cancel, cancel racing promotion |
//! | `runners.rs` | lock sessions register their runners as live |
//! | `mailbox.rs` | the mailbox read, damaged entries in it (invariant 10), its bad input |
//! | `replies.rs` | invariant 12 at the journal: replies by (entity, message id), batched |

mod commits;
mod dedup;
mod durability;
mod fencing;
mod headers;
mod input;
mod mailbox;
mod replies;
mod runners;
mod scheduled;
mod tailing;

pub use commits::*;
pub use dedup::*;
pub use durability::*;
pub use fencing::*;
pub use headers::*;
pub use input::*;
pub use mailbox::*;
pub use replies::*;
pub use runners::*;
pub use scheduled::*;
pub use tailing::*;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::{
    AnyJournal, AppendOutcome, DamagedEntry, Delivery, EntityKey, Entry, EntryKind, Field, Journal,
    JournalError, Lease, NewEvent, NewMessage, NewSnapshot, Payload, Processed, ProcessedBatch,
    ShardLocks, Timestamp, shard_of,
};

/// What the suite needs from a backend besides the [`Journal`] trait.
pub trait Backend: Send + Sync + 'static {
    /// The journal under test.
    type J: Journal + Tamper + Clone + std::fmt::Debug + Into<crate::AnyJournal>;

    /// A fresh, empty journal with `shards` shards, on storage no other test uses.
    fn fresh(&self, shards: u32) -> impl Future<Output = Self::J> + Send;

    /// Closes `journal` and opens its storage again with `shards` shards.
    fn reopen(
        &self,
        journal: Self::J,
        shards: u32,
    ) -> impl Future<Output = crate::Result<Self::J>> + Send;
}

/// Ways to damage a journal's storage behind its back, as disks, bugs and operators do.
pub trait Tamper {
    /// Flips one bit of the payload stored at (shard, offset).
    fn flip_payload_bit(&self, shard: u32, offset: u64) -> impl Future<Output = ()> + Send;
    /// Rewrites the entity id stored at (shard, offset), leaving the checksum as it was.
    fn rewrite_entity_id(
        &self,
        shard: u32,
        offset: u64,
        id: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Replaces the headers stored at (shard, offset), leaving the checksum as it was.
    fn rewrite_headers(
        &self,
        shard: u32,
        offset: u64,
        headers: Option<Vec<u8>>,
    ) -> impl Future<Output = ()> + Send;
    /// Sets the kind code stored at (shard, offset).
    fn set_kind_code(&self, shard: u32, offset: u64, code: i16) -> impl Future<Output = ()> + Send;
    /// Flips one bit of an entity's stored snapshot.
    fn flip_snapshot_bit(&self, entity: &EntityKey) -> impl Future<Output = ()> + Send;
    /// Stores another format version in the journal's metadata.
    fn set_format_version(&self, version: u32) -> impl Future<Output = ()> + Send;
}

/// The command payload the suite sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cmd {
    /// Which sender.
    pub sender: u32,
    /// Its n-th message.
    pub n: u32,
}

/// Asserts that `err` is the checksum failure of the entry at (`shard`, `offset`).
fn assert_checksum_at(err: &JournalError, shard: u32, offset: u64) {
    assert!(
        matches!(err, JournalError::Checksum { shard: s, offset: o } if (*s, *o) == (shard, offset)),
        "expected a checksum failure at {shard}/{offset}, got {err:?}"
    );
}

fn key(id: &str) -> EntityKey {
    EntityKey::new("counter", id).expect("valid key")
}

fn msg(id: &str, sender: u32, n: u32) -> NewMessage {
    NewMessage::new(
        key(id),
        Payload::encode("test.Cmd", 1, &Cmd { sender, n }).expect("encode"),
    )
}

fn event(seq: u64, value: i64) -> NewEvent {
    NewEvent {
        seq,
        payload: Payload::encode("test.Added", 1, &value).expect("encode"),
    }
}

fn reply(value: i64) -> Payload {
    Payload::encode("test.Reply", 1, &value).expect("encode")
}

fn appended(o: &AppendOutcome) -> (u32, u64) {
    match o {
        AppendOutcome::Appended { shard, offset } => (*shard, *offset),
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// An id whose entity lives in `shard` of a journal with `shards` shards.
pub fn id_in_shard(prefix: &str, shard: u32, shards: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| shard_of(id, shards) == shard)
        .expect("some id maps to every shard")
}

fn processed(entity: &EntityKey, offset: u64, message_id: Uuid, seqs: &[u64]) -> Processed {
    Processed {
        entity: entity.clone(),
        message_id,
        offset,
        events: seqs.iter().map(|&s| event(s, s as i64)).collect(),
        reply: reply(seqs.len() as i64),
        outgoing: vec![],
    }
}
