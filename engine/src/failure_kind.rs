//! Why a message got a failure reply, as a short label: the `kind` of
//! `entlog_messages_failed_total`, so a dashboard tells a panicking handler from an
//! oversized event or an unreadable history.

/// The cause of a message's failure reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No entity type of that name is registered with the runner.
    Unregistered,
    /// The entity's history could not be read back (or `apply` panicked replaying it).
    Activation,
    /// An earlier message of the batch broke the entity's in-memory state.
    StateLost,
    /// The handler panicked on every attempt.
    Panicked,
    /// The handler did not return within `Config::handler_timeout`.
    Timeout,
    /// An event, the reply or an outgoing message is over the payload limit.
    TooLarge,
    /// The command does not decode as the entity's command type.
    Undecodable,
    /// The outcome does not encode, or an outgoing message is invalid.
    Unencodable,
    /// `apply` panicked on the handler's new events.
    ApplyPanicked,
    /// The journal refused to store the outcome.
    Refused,
}

impl FailureKind {
    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureKind::Unregistered => "unregistered",
            FailureKind::Activation => "activation",
            FailureKind::StateLost => "state_lost",
            FailureKind::Panicked => "panicked",
            FailureKind::Timeout => "timeout",
            FailureKind::TooLarge => "too_large",
            FailureKind::Undecodable => "undecodable",
            FailureKind::Unencodable => "unencodable",
            FailureKind::ApplyPanicked => "apply_panicked",
            FailureKind::Refused => "refused",
        }
    }
}
