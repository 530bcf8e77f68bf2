//! entlog's journal: an append-only log of messages and events, partitioned by shard.
//!
//! Every message an entity receives and every event it decides is an [`Entry`] in its
//! shard's partition, at a dense offset that agrees with commit order. Beside the entries
//! the journal keeps stored replies (dedup), snapshots, cursors, and shard ownership.
//! The [`Journal`] trait states the contract; [`PgJournal`] (cluster mode) and
//! [`SqliteJournal`] (embedded, one process) keep it, and the conformance suite in
//! [`testing`] (feature `testing`) proves it on both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), entlog_journal::JournalError> {
//! use entlog_journal::{EntityKey, Journal, NewMessage, Payload, SqliteJournal, SqliteOptions};
//!
//! let journal = SqliteJournal::open(SqliteOptions::new("app.db")).await?;
//! let to = EntityKey::new("counter", "c-1")?;
//! let cmd = Payload::encode("counter.Add", 1, &5i64)?;
//! journal.append(vec![NewMessage::new(to.clone(), cmd)]).await?;
//! let shard = journal.shard_of(&to);
//! for entry in journal.read_shard(shard, 0, 100, None).await? {
//!     println!("{} {} {:?}", entry.offset, entry.entity, entry.payload.decode::<i64>()?);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

// First: its `entry_columns!` macro is used by the modules below.
#[macro_use]
mod rows;

mod any;
mod columns;
mod common;
mod damaged;
mod entity_state;
mod envelope;
mod error;
mod headers;
mod inspect;
mod journal;
mod liveness;
mod meta;
mod names;
mod open_commit;
mod outcomes;
mod ownership;
mod pending;
mod pool;
mod postgres;
mod prune;
mod read;
mod records;
mod same_on_both;
pub mod shard;
pub mod shard_groups;
mod snapshot;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
mod tamper;
mod time;
mod trouble;
mod tx;
mod type_groups;
mod wakeup;
mod writes;

#[cfg(feature = "testing")]
pub mod testing;

pub use any::{AnyJournal, AnyLocks};
pub use damaged::{DamagedEntry, Delivery};
pub use envelope::{
    DEFAULT_MAX_PAYLOAD_BYTES, EntityKey, Entry, EntryKind, NewEvent, NewMessage, Payload,
};
pub use error::{Field, JournalError, Result};
pub use headers::{Headers, MAX_HEADER_BYTES};
pub use inspect::{
    CursorInfo, EntityPage, EntityRecords, RunnerRow, ScheduledMessage, ShardInfo, StoredSnapshot,
};
pub use journal::{EVENT_PAGE, Journal};
pub use liveness::Liveness;
pub use meta::FORMAT_VERSION;
pub use names::{MAX_NAME_BYTES, check_name};
pub use open_commit::OpenCommit;
pub use ownership::{Lease, RunnerInfo, ShardLocks};
pub use postgres::{PgJournal, PgLocks, PgOptions};
pub use prune::PruneReport;
pub use records::{
    AppendOutcome, Askers, CommitReceipt, FAILED_REPLY_BYTE, NewSnapshot, Processed,
    ProcessedBatch, Snapshot, StoredReply,
};
pub use shard::{Shard, shard_of};
pub use shard_groups::{DEFAULT_GROUP, ShardGroup, ShardLayout, ShardMap};
pub use sql::{Column, FromValue, Row, Sql, Value, sql};
pub use sqlite::{Access, Durability, SqliteJournal, SqliteLocks, SqliteOptions};
pub use time::Timestamp;
pub use tx::AnyTx;
