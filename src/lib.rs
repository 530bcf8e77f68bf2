//! entlog: event-sourced entities on an append-only SQL journal, sharded across runners.
//!
//! This facade re-exports the crates an application uses: the engine ([`engine`]: entity
//! types, the cluster, asks and tells), the projections ([`projections`]: read models
//! folded from the journal) and the journal ([`journal`]: the storage layer with
//! its PostgreSQL and SQLite backends). With the feature `cli`, [`cli`] builds an
//! application's own command line (the plain `entlog` binary is the `entlog-cli` package).
#![warn(missing_docs)]

/// The command line, for an application's own binary (feature `cli`).
#[cfg(feature = "cli")]
pub use entlog_cli as cli;
pub use entlog_engine as engine;
pub use entlog_journal as journal;
pub use entlog_projections as projections;

pub use entlog_engine::{
    Cluster, ClusterBuilder, Config, Context, CronSchedule, EngineError, Entity, EntityRef,
    Outcome, Rejection, SingletonContext, StateProjection, decode_event, projected_state,
};
pub use entlog_journal::{
    AnyJournal, AnyTx, EntityKey, Entry, EntryKind, Journal, JournalError, NewMessage, Payload,
    PgJournal, PgOptions, Row, Sql, SqliteJournal, SqliteOptions, Timestamp, sql,
};
pub use entlog_projections::{Projection, ProjectionError};
/// Message ids (`ask_with_id`, `tell_at_with_id`, `cancel`) are UUIDs.
pub use uuid::Uuid;

/// What application code uses most, in one `use entlog::prelude::*;`: entity types,
/// the cluster, projections with their backend-neutral SQL, and the ids and times they
/// carry.
pub mod prelude {
    pub use crate::{
        AnyTx, Cluster, Config, Context, EngineError, Entity, EntityRef, Entry, Journal as _,
        JournalError, Outcome, Projection, ProjectionError, Rejection, Row, Timestamp, Uuid,
        decode_event, sql,
    };
}
