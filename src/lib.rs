//! entlog: event-sourced entities on an append-only SQL journal, sharded across runners.
//!
//! This facade re-exports the crates an application uses. Today that is the journal
//! ([`journal`]): the storage layer with its PostgreSQL (cluster) and SQLite (embedded)
//! backends.

pub use entlog_journal as journal;
pub use entlog_journal::{
    EntityKey, Entry, EntryKind, Journal, JournalError, NewMessage, Payload, PgJournal, PgOptions,
    SqliteJournal, SqliteOptions,
};
