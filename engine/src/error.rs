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
    /// The entity type was never registered with this cluster.
    #[error("entity type {0} is not registered")]
    UnknownEntityType(String),
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
    /// An inline projection failed, so the batch it belongs to did not commit.
    #[error("inline projection failed: {0}")]
    Projection(#[from] entlog_projections::ProjectionError),
    /// The journal failed (storage, codec, validation).
    #[error(transparent)]
    Journal(#[from] JournalError),
}
