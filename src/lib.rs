//! entlog: event-sourced entities on an append-only SQL journal, sharded across runners.
//!
//! This facade re-exports the crates an application uses: the engine ([`engine`]: entity
//! types, the cluster, asks and tells), the projections ([`projections`]: read models
//! folded from the journal) and the journal ([`journal`]: the storage layer with
//! its PostgreSQL and SQLite backends). With the feature `cli`, [`cli`] builds an
//! application's own command line (the plain `entlog` binary is the `entlog-cli` package).

/// The command line, for an application's own binary (feature `cli`).
#[cfg(feature = "cli")]
pub use entlog_cli as cli;
pub use entlog_engine as engine;
pub use entlog_journal as journal;
pub use entlog_projections as projections;

pub use entlog_engine::{
    Cluster, ClusterBuilder, Config, Context, CronSchedule, EngineError, Entity, EntityRef,
    Outcome, Rejection, SingletonContext, StateProjection, projected_state,
};
pub use entlog_journal::{
    AnyJournal, EntityKey, Entry, EntryKind, Journal, JournalError, NewMessage, Payload, PgJournal,
    PgOptions, SqliteJournal, SqliteOptions,
};
