//! The engine's error type, matched by variant.

use std::net::SocketAddr;

use entlog_journal::JournalError;
use uuid::Uuid;

/// Everything a cluster operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The handler rejected the command (its stored reply says why).
    #[error("rejected: {reason}")]
    Rejected {
        /// The handler's reason.
        reason: String,
    },
    /// The message failed on every attempt and was given a failure reply (poison).
    #[error("message failed after its retries: {reason}")]
    Failed {
        /// The last failure.
        reason: String,
    },
    /// No reply within the ask timeout. The message is journaled and will still be
    /// processed; ask again with the same id to get its reply.
    #[error("no reply to message {message_id} within the timeout")]
    Timeout {
        /// The message's id, for `ask_with_id`.
        message_id: Uuid,
    },
    /// No live runner held the entity's shard when the ask had waited
    /// `Config::unavailable_after`: nobody is running, or every runner lost the shard.
    /// The message is journaled and is processed once a runner owns the shard; ask again
    /// with the same id to get its reply.
    #[error(
        "no runner owns shard {shard}: message {message_id} waits in the journal (waited {waited:?})"
    )]
    RunnerUnavailable {
        /// The entity's shard.
        shard: u32,
        /// The message's id, for `ask_with_id`.
        message_id: Uuid,
        /// How long the ask waited.
        waited: std::time::Duration,
    },
    /// The entity already has its mailbox capacity of unanswered messages: the message was
    /// not sent. Worth sending again once the entity caught up.
    #[error("the mailbox of {entity} is full: {capacity} messages wait for an answer")]
    MailboxFull {
        /// The entity, as `type/id`.
        entity: String,
        /// Its capacity (`Entity::MAILBOX_CAPACITY` or `Config::mailbox_capacity`).
        capacity: u32,
    },
    /// The stored reply to an ask has another entity type's tag than the asked entity's:
    /// it is not decoded (a reply of one type is never read as another's).
    #[error("reply to message {message_id} is a {found}, not a {expected}")]
    ReplyType {
        /// The message asked.
        message_id: Uuid,
        /// The tag of the asked entity type's replies.
        expected: String,
        /// The stored reply's tag.
        found: String,
    },
    /// The cluster is shutting down or was shut down.
    #[error("the cluster is shut down")]
    ShutDown,
    /// Configuration that cannot work.
    #[error("configuration error: {0}")]
    Config(String),
    /// The Prometheus endpoint of `Config::metrics_addr` could not start: the address is
    /// taken or invalid, or another metrics recorder is already installed in this process.
    #[error("cannot serve metrics on http://{addr}/metrics: {reason}")]
    Metrics {
        /// The configured `metrics_addr`.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// A cron schedule that cannot be used: a bad expression or name.
    #[error("cron schedule {name:?} ({expression:?}): {reason}")]
    InvalidSchedule {
        /// The schedule's name.
        name: String,
        /// Its cron expression.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored event or command has a schema version this build cannot read: older than
    /// the current one with no upcaster for it ([`Entity::upcast_event`],
    /// [`Entity::upcast_command`]), or newer (written by a newer build).
    ///
    /// [`Entity::upcast_event`]: crate::Entity::upcast_event
    /// [`Entity::upcast_command`]: crate::Entity::upcast_command
    #[error(
        "{type_tag} version {version} at shard {shard}, offset {offset} cannot be read: this build reads version {current} and has no upcaster from {version}"
    )]
    NoUpcaster {
        /// The stored type tag (`"account.event"`).
        type_tag: String,
        /// The stored schema version.
        version: u32,
        /// The version this build reads and writes.
        current: u32,
        /// Shard of the entry.
        shard: u32,
        /// Offset of the entry in its shard.
        offset: u64,
    },
    /// A stored event or command does not decode as the type its version names (or its
    /// upcaster failed).
    #[error(
        "{type_tag} version {version} at shard {shard}, offset {offset} does not decode: {source}"
    )]
    Undecodable {
        /// The stored type tag.
        type_tag: String,
        /// The stored schema version.
        version: u32,
        /// Shard of the entry.
        shard: u32,
        /// Offset of the entry in its shard.
        offset: u64,
        /// The codec's error.
        source: JournalError,
    },
    /// A stored value does not decode as the type it should have (a `StateProjection`'s
    /// JSON written by another version of the state type).
    #[error("{what} does not decode: {reason}")]
    Decode {
        /// What was read.
        what: String,
        /// Why it does not decode.
        reason: String,
    },
    /// An inline projection failed, so the batch it belongs to did not commit.
    #[error("inline projection failed: {0}")]
    Projection(#[from] entlog_projections::ProjectionError),
    /// The journal failed (storage, codec, validation).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl EngineError {
    /// Whether the same call is worth making again, after a pause: a send refused by a
    /// full mailbox, an ask that timed out or found no live runner (ask again with the same id, `ask_with_id`, to get its
    /// reply without executing it twice), or a journal error that may pass by itself
    /// ([`JournalError::is_transient`]: the database unreachable or busy). Rejections,
    /// failures, bad input and configuration errors are met again.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Timeout { .. }
            | EngineError::RunnerUnavailable { .. }
            | EngineError::MailboxFull { .. } => true,
            EngineError::Journal(e) => e.is_transient(),
            EngineError::Projection(entlog_projections::ProjectionError::Journal(e)) => {
                e.is_transient()
            }
            _ => false,
        }
    }
}

/// For application projections: `decode_event::<E>(entry)?` inside `Projection::apply`.
/// Journal and projection errors keep their variant; the others become
/// [`ProjectionError::Handler`](entlog_projections::ProjectionError::Handler) with their
/// message (which names the type tag, version, shard and offset for a decode failure).
impl From<EngineError> for entlog_projections::ProjectionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Journal(e) => entlog_projections::ProjectionError::Journal(e),
            EngineError::Projection(e) => e,
            other => entlog_projections::ProjectionError::Handler(other.to_string()),
        }
    }
}
