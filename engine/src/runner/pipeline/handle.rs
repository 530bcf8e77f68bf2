//! Where a handler is called: one run of an entity over the messages queued for it.
//!
//! A run activates the entity if it is not in memory (snapshot + later events), then
//! handles its messages one after another, in offset order. Every message ends here with
//! its outcome or a failure reply naming the cause:
//!
//! | what happens                         | the message gets                          | the entity |
//! |--------------------------------------|-------------------------------------------|------------|
//! | the handler returns                  | its events, reply and outgoing messages   | kept       |
//! | the handler rejects                  | the rejection as its reply                | kept       |
//! | the handler panics                   | retried `max_attempts` times, then failed | kept       |
//! | the handler exceeds `handler_timeout`| a failure ("handler timed out")           | kept       |
//! | a payload exceeds the journal limit  | a failure (`PayloadTooLarge`, sizes)      | kept       |
//! | `apply` panics on a new event        | a failure; later messages of the run too  | dropped    |
//! | activation fails or panics           | a failure naming the cause                | not loaded |
//! | the database is unreachable          | nothing: handed back to be retried        | —          |
//!
//! Runs are tasks of their own, so a slow or hanging handler holds only its entity.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, EntityKey, Entry, Journal, JournalError, Processed, Shard, Timestamp,
};
use futures_util::FutureExt;
use tracing::Instrument;

use tokio::task::JoinSet;

use super::commit::poisoned;
use super::instances::Slot;
use super::mailbox::trouble;
use super::{FIRST_BACKOFF, MAX_BACKOFF, Pipeline};
use crate::codec;
use crate::config::Config;
use crate::error::EngineError;
use crate::failure_kind::FailureKind;
use crate::instance::{HandleArgs, Handled};
use crate::metrics as m;
use crate::panics::panic_message;
use crate::registry::Registry;

/// What a run needs besides its entity.
pub(crate) struct Env {
    pub journal: AnyJournal,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub max_payload: usize,
}

/// What a run came to.
pub(crate) struct RunDone {
    pub key: EntityKey,
    pub shard: Shard,
    /// The shard's generation when the run started: a reset shard discards older runs.
    pub generation: u64,
    /// The instance to keep; `None` if it could not be loaded or its state was lost.
    pub slot: Option<Slot>,
    /// Handled messages, in offset order.
    pub processed: Vec<Processed>,
    /// Messages not handled because the database could not be reached (activation), in
    /// order: queued again after a back-off.
    pub retry: Vec<Entry>,
    /// Why `retry` is not empty.
    pub retry_cause: Option<String>,
}

/// Handles `entries` (one entity's, in offset order) on `slot`, activating it if `None`.
pub(crate) async fn run(
    env: Arc<Env>,
    key: EntityKey,
    shard: Shard,
    generation: u64,
    slot: Option<Slot>,
    entries: Vec<Entry>,
) -> RunDone {
    let mut done = RunDone {
        key,
        shard,
        generation,
        slot: None,
        processed: Vec::with_capacity(entries.len()),
        retry: Vec::new(),
        retry_cause: None,
    };
    let Some(kind) = env.registry.get(done.key.entity_type()).cloned() else {
        let reason = format!("entity type {} is not registered", done.key.entity_type());
        done.processed = entries
            .iter()
            .map(|e| failed(e, 1, FailureKind::Unregistered, reason.clone()))
            .collect();
        return done;
    };
    let reply_version = kind.reply_version();
    let mut slot = match slot {
        Some(s) => s,
        None => {
            let span = tracing::warn_span!("activate", entity = %done.key, shard);
            let activated = AssertUnwindSafe(kind.activate(&env.journal, done.key.clone()))
                .catch_unwind()
                .instrument(span)
                .await;
            match activated {
                Ok(Ok(instance)) => Slot {
                    instance,
                    shard,
                    last_used: Instant::now(),
                },
                Ok(Err(EngineError::Journal(JournalError::Persistence(e)))) => {
                    // Not the entity's fault: hand its messages back to be tried again.
                    done.retry_cause = Some(format!("activation: {e}"));
                    done.retry = entries;
                    return done;
                }
                Ok(Err(e)) => {
                    // The entity's history cannot be read back (a checksum failure, an event
                    // that does not decode): its messages fail, naming the cause.
                    let reason = format!("activation failed: {e}");
                    done.processed = entries
                        .iter()
                        .map(|e| failed(e, reply_version, FailureKind::Activation, reason.clone()))
                        .collect();
                    return done;
                }
                Err(panic) => {
                    let reason = format!(
                        "activation failed: apply panicked while replaying: {}",
                        panic_message(panic.as_ref())
                    );
                    done.processed = entries
                        .iter()
                        .map(|e| failed(e, reply_version, FailureKind::Activation, reason.clone()))
                        .collect();
                    return done;
                }
            }
        }
    };
    slot.last_used = Instant::now();
    let mut lost = false;
    for entry in entries {
        if lost {
            done.processed.push(failed(
                &entry,
                reply_version,
                FailureKind::StateLost,
                "not handled: an earlier message broke the entity's state".into(),
            ));
            continue;
        }
        // Everything logged while the message is handled, by the engine or by the
        // handler, carries the message's place. At warn level, so that a subscriber that
        // shows only warnings and errors (the examples') still shows which message.
        let span = tracing::warn_span!(
            "handle",
            entity = %entry.entity,
            message_id = %entry.message_id,
            shard = entry.shard,
            offset = entry.offset,
            trace = tracing::field::Empty,
        );
        // The sender's trace context (a W3C `traceparent` header), carried from runner to
        // runner by what handlers send: one trace names every step of a request.
        if let Some(trace) = entry.headers.get(crate::TRACE_HEADER) {
            span.record("trace", tracing::field::display(trace));
        }
        #[cfg(feature = "opentelemetry")]
        crate::otel::join(&span, &entry.headers);
        let (outcome, attempts) = handle_one(&env, &mut slot, &entry).instrument(span).await;
        record_latency(&entry, env.journal.now());
        match outcome {
            Handled::Done {
                events,
                reply,
                outgoing,
            } => done.processed.push(Processed {
                entity: done.key.clone(),
                message_id: entry.message_id,
                offset: entry.offset,
                events,
                reply,
                outgoing,
            }),
            Handled::Panicked(reason) => done.processed.push(failed(
                &entry,
                reply_version,
                FailureKind::Panicked,
                format!("handler panicked {attempts} times: {reason}"),
            )),
            Handled::Broken {
                kind,
                reason,
                state_lost,
            } => {
                done.processed
                    .push(failed(&entry, reply_version, kind, reason));
                lost |= state_lost;
            }
        }
    }
    slot.last_used = Instant::now();
    done.slot = (!lost).then_some(slot);
    done
}

/// Handles one message: retries a panicking handler with back-off, bounds each attempt by
/// the handler timeout. Returns the outcome and the attempts made.
async fn handle_one(env: &Env, slot: &mut Slot, entry: &Entry) -> (Handled, u32) {
    let policy = slot.instance.policy();
    let timeout = env.config.handler_timeout;
    let mut attempt = 1;
    loop {
        let handled = tokio::time::timeout(
            timeout,
            slot.instance.handle(
                &entry.payload,
                HandleArgs {
                    headers: &entry.headers,
                    shards: env.journal.shard_map(),
                    max_payload: env.max_payload,
                    now: env.journal.now(),
                },
            ),
        )
        .await;
        match handled {
            Err(_) => {
                tracing::error!(entity = %entry.entity, offset = entry.offset, ?timeout, "handler timed out");
                return (
                    Handled::Broken {
                        kind: FailureKind::Timeout,
                        reason: format!("handler timed out after {timeout:?}"),
                        state_lost: false,
                    },
                    attempt,
                );
            }
            Ok(Handled::Panicked(reason))
                if attempt < policy.max_attempts.unwrap_or(env.config.max_attempts) =>
            {
                tracing::warn!(entity = %entry.entity, offset = entry.offset, attempt, %reason, "handler panicked; retrying");
                let base = policy.retry_backoff.unwrap_or(env.config.retry_backoff);
                tokio::time::sleep(backoff(base, attempt)).await;
                attempt += 1;
            }
            Ok(other) => return (other, attempt),
        }
    }
}

/// `base` doubled per attempt already made, with up to 50% random jitter added, so that
/// many messages failing together do not retry in lock step.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    let jitter = (uuid::Uuid::now_v7().as_u128() as u64 % 1000) as f64 / 2000.0;
    exp.mul_f64(1.0 + jitter)
}

/// Records the time from a message's send (or due time) to its handling.
fn record_latency(entry: &Entry, now: Timestamp) {
    let since = entry
        .deliver_at
        .map_or(entry.created_at, |due| due.max(entry.created_at));
    let latency = now.since(since);
    metrics::histogram!(m::PROCESSING_LATENCY).record(latency.as_secs_f64());
}

/// A message's failure: a stored failure reply naming the cause, and nothing else.
fn failed(entry: &Entry, reply_version: u32, kind: FailureKind, reason: String) -> Processed {
    failure(
        &entry.entity,
        entry.message_id,
        entry.offset,
        reply_version,
        kind,
        reason,
    )
}

/// The outcome of a failed message: its failure reply, no events, no outgoing messages.
pub(crate) fn failure(
    entity: &EntityKey,
    message_id: uuid::Uuid,
    offset: u64,
    reply_version: u32,
    kind: FailureKind,
    reason: String,
) -> Processed {
    metrics::counter!(m::MESSAGES_FAILED, "kind" => kind.label()).increment(1);
    tracing::error!(%entity, offset, kind = kind.label(), %reason, "message failed");
    let reply = codec::failure(entity.entity_type(), reply_version, reason).unwrap_or_else(|_| {
        entlog_journal::Payload {
            type_tag: "entlog.failure".into(),
            version: 1,
            bytes: Vec::new(),
        }
    });
    Processed {
        entity: entity.clone(),
        message_id,
        offset,
        events: Vec::new(),
        reply,
        outgoing: Vec::new(),
    }
}

// ---- the run stage of the pipeline ---------------------------------------------------

impl Pipeline {
    pub(super) fn start_runs(&mut self, runs: &mut JoinSet<RunDone>) {
        if !self.delayed.is_empty() {
            let now = Instant::now();
            let due: Vec<EntityKey> = self
                .delayed
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                self.delayed.remove(&k);
                self.candidates.push(k);
            }
        }
        for key in std::mem::take(&mut self.candidates) {
            if self.running.contains(&key) || self.delayed.contains_key(&key) {
                continue;
            }
            let Some(queue) = self.pending.get_mut(&key) else {
                continue;
            };
            let Some(shard) = queue.front().map(|e| e.shard) else {
                self.pending.remove(&key);
                continue;
            };
            let Some(mb) = self.mailboxes.get(&shard) else {
                self.pending.remove(&key);
                continue;
            };
            let slot = self.instances.take(&key);
            if slot.is_none() && self.instances.uncommitted(&key) > 0 {
                // Its last events are still on their way to the journal: activating it
                // now would read a history without them. It runs after that commit.
                continue;
            }
            let entries: Vec<Entry> = queue.drain(..).collect();
            self.pending.remove(&key);
            self.running.insert(key.clone());
            runs.spawn(run(
                self.env.clone(),
                key,
                shard,
                mb.generation,
                slot,
                entries,
            ));
        }
    }

    pub(super) fn on_run(&mut self, done: RunDone) {
        let RunDone {
            key,
            shard,
            generation,
            slot,
            mut processed,
            retry,
            retry_cause,
        } = done;
        self.running.remove(&key);
        self.candidates.push(key.clone());
        let Some(mb) = self.mailboxes.get_mut(&shard) else {
            return;
        };
        if mb.generation != generation {
            return; // the shard was reset meanwhile: its messages are read again
        }
        if let Some(slot) = slot {
            self.instances.put(key.clone(), slot);
        }
        if !retry.is_empty() {
            let cause = retry_cause.unwrap_or_default();
            tracing::warn!(entity = %key, %cause, "entity cannot be activated now; retrying");
            metrics::counter!(m::SHARD_RETRIES).increment(1);
            let queue = self.pending.entry(key.clone()).or_default();
            for e in retry.into_iter().rev() {
                queue.push_front(e);
            }
            mb.failures += 1;
            trouble(&self.troubles, shard, mb, Some(&cause));
            self.delayed.insert(
                key.clone(),
                Instant::now() + backoff(FIRST_BACKOFF, mb.failures).min(MAX_BACKOFF),
            );
        }
        for p in &mut processed {
            if let Some(reason) = mb.poison.get(&p.offset) {
                let entry_like = poisoned(p, reason, &self.env.registry);
                *p = entry_like;
            }
        }
        self.instances.handled(&key, shard, processed.len());
        self.ready
            .extend(processed.into_iter().map(|p| (shard, generation, p)));
    }
}
