//! One entity in memory: activated from its latest snapshot and the events after it
//! ([`activate`]), and where its handler is called ([`Instance::handle`]): the outcome is
//! encoded, every payload checked against the journal's limit, and the events applied.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use entlog_journal::{
    AnyJournal, EntityKey, Headers, JournalError, NewEvent, NewMessage, NewSnapshot, Payload,
    ShardMap, Timestamp,
};
use futures_util::FutureExt;

use crate::codec::{self, StoredOutcome};
use crate::entity::{Context, Entity};
use crate::error::EngineError;
use crate::failure_kind::FailureKind;
use crate::metrics as m;
use crate::panics::panic_message;

/// A boxed future, for the object-safe traits of entity types and instances.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An entity type's own retry and passivation settings, `None` where `Config` applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub max_attempts: Option<u32>,
    pub retry_backoff: Option<std::time::Duration>,
    pub passivate_after: Option<std::time::Duration>,
}

/// What handling one message came to.
pub(crate) enum Handled {
    /// Events (already applied to the in-memory state), reply and outgoing messages.
    Done {
        events: Vec<NewEvent>,
        reply: Payload,
        outgoing: Vec<NewMessage>,
    },
    /// The handler panicked; the state is untouched, so the message may be retried.
    Panicked(String),
    /// The message cannot succeed (undecodable command, unencodable outcome); it gets a
    /// failure reply at once. `state_lost` means the in-memory state may be damaged and
    /// the instance must be dropped.
    Broken {
        kind: FailureKind,
        reason: String,
        state_lost: bool,
    },
}

/// What [`Instance::handle`] needs besides the command, given afresh for each call.
#[derive(Clone, Copy)]
pub(crate) struct HandleArgs<'a> {
    /// The message's headers, which the handler reads from its context.
    pub headers: &'a Headers,
    /// The journal's shard map, to route the types the handler sends to.
    pub shards: &'a ShardMap,
    /// The largest payload the journal stores, in bytes.
    pub max_payload: usize,
    /// The journal's clock, from which the handler's timers count.
    pub now: Timestamp,
}

/// One entity in memory.
pub(crate) trait Instance: Send + Sync {
    /// Handles one command: decides, encodes the outcome, checks every payload against
    /// `args.max_payload` bytes (an oversized event, reply or outgoing message fails the
    /// message and leaves the state untouched), routes the types it sent to by their shard
    /// groups in `args.shards`, then applies the events in memory.
    fn handle<'a>(
        &'a mut self,
        command: &'a Payload,
        args: HandleArgs<'a>,
    ) -> BoxFuture<'a, Handled>;
    /// Events applied since the last snapshot.
    fn since_snapshot(&self) -> u64;
    /// The current state as a snapshot to save.
    fn snapshot(&self) -> Result<NewSnapshot, JournalError>;
    /// Records that a snapshot at the current seq was saved.
    fn snapshotted(&mut self);
    /// The type's own settings ([`Entity::MAX_ATTEMPTS`] and the like).
    fn policy(&self) -> Policy;
}

/// Loads `key`'s latest valid snapshot and replays the later events: the entity in
/// memory, ready to handle its next message.
pub(crate) async fn activate<E: Entity>(
    entity: Arc<E>,
    journal: &AnyJournal,
    key: EntityKey,
) -> Result<Box<dyn Instance>, EngineError> {
    let crate::state::Folded {
        state,
        seq,
        snapshot_seq,
        replayed,
    } = crate::state::fold::<E>(journal, &key).await?;
    metrics::counter!(m::EVENTS_REPLAYED).increment(replayed);
    Ok(Box::new(Live::<E> {
        entity,
        key,
        state,
        seq,
        snapshot_seq,
    }))
}

struct Live<E: Entity> {
    entity: Arc<E>,
    key: EntityKey,
    state: E::State,
    seq: u64,
    snapshot_seq: u64,
}

impl<E: Entity> Live<E> {
    async fn handle_inner(&mut self, command: &Payload, args: HandleArgs<'_>) -> Handled {
        let HandleArgs {
            headers,
            shards,
            max_payload,
            now,
        } = args;
        let broken = |kind: FailureKind, reason: String| Handled::Broken {
            kind,
            reason,
            state_lost: false,
        };
        let cmd = match codec::command_from_payload::<E>(command) {
            Ok(c) => c,
            Err(e) => {
                return broken(
                    FailureKind::Undecodable,
                    format!("undecodable command: {e}"),
                );
            }
        };
        let mut ctx = Context {
            entity: Some(self.key.clone()),
            now,
            headers: headers.clone(),
            ..Context::default()
        };
        let decided = AssertUnwindSafe(self.entity.handle(&self.state, cmd, &mut ctx))
            .catch_unwind()
            .await;
        let outcome = match decided {
            Err(p) => return Handled::Panicked(panic_message(p.as_ref())),
            Ok(Err(rejection)) => {
                return match codec::reply::<E>(&StoredOutcome::Rejected(rejection.reason)) {
                    Ok(reply) => Handled::Done {
                        events: Vec::new(),
                        reply,
                        outgoing: Vec::new(),
                    },
                    Err(e) => broken(
                        FailureKind::Unencodable,
                        format!("unencodable rejection: {e}"),
                    ),
                };
            }
            Ok(Ok(outcome)) => outcome,
        };
        let routed = ctx
            .groups
            .iter()
            .try_for_each(|(t, g)| shards.declare(t, g));
        if let Some(e) = ctx.error.or(routed.err().map(EngineError::from)) {
            return broken(
                FailureKind::Unencodable,
                format!("bad outgoing message: {e}"),
            );
        }
        let mut events = Vec::with_capacity(outcome.events.len());
        for (i, ev) in outcome.events.iter().enumerate() {
            match codec::event::<E>(ev) {
                Ok(payload) => events.push(NewEvent {
                    seq: self.seq + 1 + i as u64,
                    payload,
                }),
                Err(e) => {
                    return broken(FailureKind::Unencodable, format!("unencodable event: {e}"));
                }
            }
        }
        let reply = match codec::reply::<E>(&StoredOutcome::Replied(outcome.reply)) {
            Ok(r) => r,
            Err(e) => return broken(FailureKind::Unencodable, format!("unencodable reply: {e}")),
        };
        if let Some(reason) = oversized(&events, &reply, &ctx.outgoing, max_payload) {
            return broken(FailureKind::TooLarge, reason);
        }
        let state = &mut self.state;
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
            for ev in &outcome.events {
                E::apply(state, ev);
            }
        }));
        if let Err(p) = applied {
            return Handled::Broken {
                kind: FailureKind::ApplyPanicked,
                reason: format!("apply panicked: {}", panic_message(p.as_ref())),
                state_lost: true,
            };
        }
        self.seq += events.len() as u64;
        Handled::Done {
            events,
            reply,
            outgoing: ctx.outgoing,
        }
    }
}

/// Names the first payload of a handled message that the journal would refuse, with its
/// size and the limit: the message fails alone instead of failing its batch's commit.
fn oversized(
    events: &[NewEvent],
    reply: &Payload,
    outgoing: &[NewMessage],
    limit: usize,
) -> Option<String> {
    let too_large = |what: String, size: usize| {
        Some(format!(
            "PayloadTooLarge: {what} is {size} bytes, the limit is {limit}"
        ))
    };
    for (i, ev) in events.iter().enumerate() {
        if ev.payload.bytes.len() > limit {
            return too_large(
                format!("event {} of {}", i + 1, events.len()),
                ev.payload.bytes.len(),
            );
        }
    }
    if reply.bytes.len() > limit {
        return too_large("the reply".into(), reply.bytes.len());
    }
    for m in outgoing {
        if m.payload.bytes.len() > limit {
            return too_large(
                format!("the message to {}", m.entity),
                m.payload.bytes.len(),
            );
        }
    }
    None
}

impl<E: Entity> Instance for Live<E> {
    fn handle<'a>(
        &'a mut self,
        command: &'a Payload,
        args: HandleArgs<'a>,
    ) -> BoxFuture<'a, Handled> {
        Box::pin(self.handle_inner(command, args))
    }

    fn since_snapshot(&self) -> u64 {
        self.seq - self.snapshot_seq
    }

    fn snapshot(&self) -> Result<NewSnapshot, JournalError> {
        Ok(NewSnapshot {
            entity: self.key.clone(),
            seq: self.seq,
            state: codec::state::<E>(&self.state)?,
        })
    }

    fn snapshotted(&mut self) {
        self.snapshot_seq = self.seq;
    }

    fn policy(&self) -> Policy {
        Policy {
            max_attempts: E::MAX_ATTEMPTS,
            retry_backoff: E::RETRY_BACKOFF,
            passivate_after: E::PASSIVATE_AFTER,
        }
    }
}
