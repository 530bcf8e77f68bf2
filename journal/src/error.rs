//! The journal's error type: one enum, matched by variant, carrying the facts in fields.

use std::path::PathBuf;

use uuid::Uuid;

use crate::shard::Shard;

/// Which identifying field of an entry failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The entity type name (`"account"`).
    EntityType,
    /// The application-chosen entity id.
    EntityId,
    /// The payload's type tag.
    TypeTag,
    /// The name of a cursor's consumer.
    Consumer,
    /// The name of a message header.
    HeaderName,
    /// A message's headers, all together.
    Headers,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::EntityType => "entity type",
            Field::EntityId => "entity id",
            Field::TypeTag => "type tag",
            Field::Consumer => "consumer name",
            Field::HeaderName => "header name",
            Field::Headers => "headers",
        })
    }
}

/// Everything a journal operation can fail with.
///
/// Validation errors (`Empty`, `TooLong`, `PayloadTooLarge`, `ShardOutOfRange`) are raised
/// before anything is written, so a rejected call changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An identifying field was empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: Field,
    },
    /// An identifying field was longer than the journal accepts.
    #[error("{field} is {len} bytes, over the limit of {limit}")]
    TooLong {
        /// The field.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A payload was larger than the journal's configured maximum.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An event with seq 0: seqs start at 1.
    #[error("event of {entity} has seq 0; seqs start at 1")]
    InvalidSeq {
        /// The entity, as `type/id`.
        entity: String,
    },
    /// A shard number outside `0..shard_count`.
    #[error("shard {shard} is out of range (the journal has {shard_count} shards)")]
    ShardOutOfRange {
        /// The shard asked for.
        shard: Shard,
        /// The journal's shard count.
        shard_count: u32,
    },
    /// A stored entry failed its crc32 check.
    #[error("checksum mismatch in the entry at shard {shard}, offset {offset}")]
    Checksum {
        /// Shard of the entry.
        shard: Shard,
        /// Offset of the entry in its shard.
        offset: u64,
    },
    /// A stored reply failed its crc32 check.
    #[error("checksum mismatch in the stored reply to message {message_id}")]
    ReplyChecksum {
        /// The message the reply answers.
        message_id: Uuid,
    },
    /// A stored row holds a value no writer of this format produces.
    #[error("corrupt entry at shard {shard}, offset {offset}: {reason}")]
    Corrupt {
        /// Shard of the entry.
        shard: Shard,
        /// Offset of the entry in its shard.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal was created with another shard count than the one asked for.
    #[error(
        "the journal has {stored} shards, but {requested} were configured; the count is fixed when a journal is created: configure {stored} (or 0 to adopt it)"
    )]
    ShardCountMismatch {
        /// Shard count stored in the journal.
        stored: u32,
        /// Shard count asked for at open.
        requested: u32,
    },
    /// The journal's shard groups differ from the configured ones (they are fixed when the
    /// journal is created, like the shard count).
    #[error(
        "the journal's shard groups are {stored:?}, but {requested:?} were configured; groups are fixed when a journal is created: configure {stored:?} (or none, with a shard count of 0, to adopt them)"
    )]
    ShardGroupsMismatch {
        /// The stored named groups, as `name:shards,…` (empty for none).
        stored: String,
        /// The configured ones, the same way.
        requested: String,
    },
    /// An entity type names a shard group the journal does not have.
    #[error("shard group {group:?} is not in this journal (it has {groups:?})")]
    UnknownShardGroup {
        /// The group named.
        group: String,
        /// The journal's groups.
        groups: Vec<String>,
    },
    /// An entity type was registered in another shard group before: its entities' history
    /// lives in that group's shards, so it cannot move.
    #[error(
        "entity type {entity_type:?} belongs to shard group {stored:?} in this journal, not {requested:?}; a type cannot change groups (its entities' history would be stranded)"
    )]
    GroupMismatch {
        /// The entity type.
        entity_type: String,
        /// The group recorded for it.
        stored: String,
        /// The group asked for.
        requested: String,
    },
    /// The database holds a journal format this build does not understand.
    #[error(
        "journal format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat {
        /// Version found in the database.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// An event seq or a reply was already written by another writer: this writer is stale.
    #[error("conflicting write in shard {shard}: {detail}")]
    SeqConflict {
        /// Shard whose batch was refused.
        shard: Shard,
        /// What collided, as the database reported it.
        detail: String,
    },
    /// The shard has been acquired by another owner since this writer's lease was granted.
    #[error("shard {shard} is no longer held at epoch {epoch}")]
    Fenced {
        /// The shard.
        shard: Shard,
        /// The epoch of the stale lease.
        epoch: u64,
    },
    /// A checkpoint was not where this writer expected it: another writer moved it.
    #[error("checkpoint {consumer}/{shard} is no longer at offset {expected}")]
    CheckpointMoved {
        /// The checkpoint's consumer.
        consumer: String,
        /// Its shard.
        shard: Shard,
        /// Where this writer expected it.
        expected: u64,
    },
    /// Another process holds the SQLite journal file.
    #[error("the journal {path} is in use by another process")]
    Locked {
        /// The journal's database file.
        path: PathBuf,
    },
    /// The SQLite journal file has more than one name (hard links). SQLite names its
    /// write-ahead log after the name a file is opened by, so commits made through one
    /// name and not yet checkpointed are missing through another.
    #[error("the journal {path} has {links} names (hard links); remove all but one")]
    HardLinked {
        /// The journal's database file, as given.
        path: PathBuf,
        /// How many names it has.
        links: u64,
    },
    /// A runner with this id already holds a live lock session.
    #[error("runner {runner} is already live")]
    RunnerInUse {
        /// The runner id.
        runner: String,
    },
    /// The dedicated shard-lock connection died: every lease it held is gone.
    #[error("the shard-lock connection was lost; no shard is owned any more")]
    LockConnectionLost,
    /// A payload could not be encoded or decoded with postcard.
    #[error("payload codec error for type {type_tag}: {source}")]
    Codec {
        /// The payload's type tag.
        type_tag: String,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// There is no entlog journal where one was expected (a tool never creates one).
    #[error(
        "no entlog journal at {location}; create it with `entlog migrate` or by starting a cluster on it"
    )]
    NotFound {
        /// The database file or PostgreSQL schema looked at.
        location: String,
    },
    /// The database holds something that is not an entlog journal (other tables, or a
    /// file that is not SQLite at all): entlog does not add its tables to it.
    #[error("{location} is not an entlog journal ({found}); use an empty database or a new file")]
    NotAJournal {
        /// The database file or PostgreSQL schema.
        location: String,
        /// What is there instead.
        found: String,
    },
    /// The journal's schema is older than this build: pending migrations must be applied.
    #[error(
        "the journal at {location} has {applied} of {expected} migrations applied; run `entlog migrate`"
    )]
    Outdated {
        /// The database file or PostgreSQL schema.
        location: String,
        /// Migrations applied in the database.
        applied: u64,
        /// Migrations this build knows.
        expected: u64,
    },
    /// The configuration or a URL is unusable.
    #[error("configuration error: {0}")]
    Config(String),
    /// The database did not answer in time: nothing listens there, a firewall drops the
    /// packets, or the network is down. Worth trying again.
    #[error("no answer from {location} within {waited:?}")]
    Unreachable {
        /// Where (host and port, without credentials).
        location: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// An internal invariant broke: a bug in entlog, not in the caller's input or setup.
    #[error("internal error (please report): {0}")]
    Internal(String),
    /// Applying the schema failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Persistence(#[from] sqlx::Error),
    /// A file-system operation around the journal failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// Whether the error may pass by itself, so that the same operation is worth trying
    /// again: the database unreachable or busy, a dropped connection, a deadlock or
    /// serialization failure. Anything else (bad input, a fence, corruption) is met again.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            JournalError::Persistence(e) => e,
            JournalError::Unreachable { .. } => return true,
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: connection exceptions (08), serialization failure and
                // deadlock (40001, 40P01), insufficient resources (53), operator
                // intervention (57, which includes statement and lock time-outs).
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                code.starts_with("08")
                    || code == "40001"
                    || code == "40P01"
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code == "55P03"
                    || matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
            }
            _ => false,
        }
    }
}

/// Result alias for journal operations.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;
