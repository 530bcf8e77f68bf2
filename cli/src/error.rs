//! What can go wrong running a command, as an enum callers (and tests) can match.

use entlog_journal::JournalError;
use entlog_projections::ProjectionError;

/// A command's failure. Printed as `error: <message>` with exit status 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The journal failed, is missing, or holds a bad row.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A projection failed while rebuilding.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// No `--db` and no default: nowhere to look.
    #[error("no journal given: pass --db <URL or file> or set ENTLOG_DB")]
    NoDatabase,
    /// An entity address that is not `TYPE/ID`.
    #[error("{0:?} is not an entity address; write it as TYPE/ID, e.g. account/alice")]
    BadAddress(String),
    /// The journal has nothing for this entity.
    #[error("the journal holds no messages, events or snapshot for {0}")]
    UnknownEntity(String),
    /// The command needs the entity type's Rust code, which this binary does not have.
    #[error(
        "entity type {entity_type:?} is not registered in this binary, and {needed_for} needs its code; run the application's own CLI (entlog::cli with its registry)"
    )]
    Unregistered {
        /// The entity type.
        entity_type: String,
        /// What needs it.
        needed_for: &'static str,
    },
    /// A projection name this binary has no code for.
    #[error("projection {0:?} is not registered in this binary; rebuilding needs its code")]
    UnknownProjection(String),
    /// A stored payload could not be decoded with the registered type.
    #[error("cannot decode {what} at shard {shard}, offset {offset}: {reason}")]
    Decode {
        /// The type tag and version.
        what: String,
        /// Shard of the entry.
        shard: u32,
        /// Offset of the entry.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A time or duration argument that does not parse.
    #[error("bad {what} {value:?}: {reason}")]
    BadArgument {
        /// Which argument.
        what: &'static str,
        /// What was given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// `replay --from-snapshot` found the stored snapshot differing from a full replay.
    #[error(
        "the snapshot of {entity} at seq {seq} differs from a full replay in {differences} place(s)"
    )]
    SnapshotMismatch {
        /// The entity.
        entity: String,
        /// The snapshot's seq.
        seq: u64,
        /// How many values differ.
        differences: usize,
    },
    /// `status` found something stuck (listed in its output).
    #[error("{count} thing(s) stuck: see the list above")]
    Stuck {
        /// How many.
        count: usize,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
