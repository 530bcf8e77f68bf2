//! A shard worker: tails one owned shard and delivers its messages.
//!
//! ```text
//!   read messages after the cursor (a batch)  ──►  group by entity, handle each entity's
//!        ▲                                          messages in offset order (entities
//!        │                                          of the batch run concurrently)
//!        └── advance, resolve waiters  ◄──  commit events + replies + outgoing + cursor
//!                                            in ONE transaction, fenced by the lease
//! ```
//!
//! Everything at or below the cursor is done; the cursor moves only with a committed
//! batch, so a crash at any point redelivers exactly the uncommitted messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, EntityKey, Entry, EntryKind, Journal, JournalError, Lease, Processed,
    ProcessedBatch, Timestamp,
};
use tokio::sync::watch;

use super::inline::Inline;
use crate::codec;
use crate::config::Config;
use crate::error::EngineError;
use crate::metrics as m;
use crate::registry::{Handled, Instance, Registry};
use crate::waiters::Waiters;

/// The consumer name of the entities' mailbox cursor.
pub const MAILBOX: &str = "mailbox";

/// The shard's timer for scheduled messages: the owner sleeps exactly until the earliest
/// due time (not a coarse poll), then promotes what is due into the partition.
///
/// `next_due` is read from the journal when the worker starts, after every promotion,
/// when the journal reports that a message was scheduled on the shard (an append or
/// commit in this process, or a `NOTIFY` from another), and otherwise every
/// `poll_interval`, the fallback for an announcement lost with its sender.
#[derive(Debug, Default)]
struct Timer {
    /// When the shard's earliest scheduled message is due, as last read.
    next_due: Option<Timestamp>,
    /// When `next_due` was read; `None`: read it before going on.
    checked: Option<Instant>,
}

impl Timer {
    /// How long an idle worker may wait for a wake-up: until the next due time, or until
    /// the schedule is to be read again, whichever comes first. Tokio rounds a sleep up
    /// to its next millisecond tick, so the worker wakes at or just after the due time.
    fn wait(&self, poll_interval: Duration) -> Duration {
        let recheck = self.checked.map_or(Duration::ZERO, |t| {
            poll_interval.saturating_sub(t.elapsed())
        });
        match self.next_due {
            Some(due) => recheck.min(due.since(Timestamp::now())),
            None => recheck,
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Asked to stop; its instances were snapshotted.
    Stopped,
    /// Another owner took the shard (fenced commit): it must not write again.
    Fenced,
}

pub(crate) struct ShardWorker {
    pub shard: u32,
    pub lease: Lease,
    pub journal: AnyJournal,
    pub registry: Arc<Registry>,
    pub waiters: Arc<Waiters>,
    pub config: Arc<Config>,
    pub stop: watch::Receiver<bool>,
    inline: Inline,
    instances: HashMap<EntityKey, Slot>,
    last_sweep: Instant,
}

struct Slot {
    instance: Box<dyn Instance>,
    last_used: Instant,
}

impl ShardWorker {
    pub(crate) fn new(
        lease: Lease,
        journal: AnyJournal,
        registry: Arc<Registry>,
        waiters: Arc<Waiters>,
        config: Arc<Config>,
        stop: watch::Receiver<bool>,
        inline: Inline,
    ) -> Self {
        ShardWorker {
            inline,
            shard: lease.shard,
            lease,
            journal,
            registry,
            waiters,
            config,
            stop,
            instances: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self) -> Exit {
        while !self.inline.is_empty() {
            match self
                .inline
                .catch_up(&self.journal, self.config.batch_size)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "inline projections cannot catch up; retrying");
                    if self.sleep_or_stop(Duration::from_millis(500)).await {
                        return Exit::Stopped;
                    }
                }
            }
        }
        let mut cursor = loop {
            match self.journal.cursor(MAILBOX, self.shard).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "cannot read cursor; retrying");
                    if self.sleep_or_stop(Duration::from_millis(200)).await {
                        return Exit::Stopped;
                    }
                }
            }
        };
        let mut timer = Timer::default();
        loop {
            if *self.stop.borrow() {
                self.snapshot_all().await;
                return Exit::Stopped;
            }
            if self.journal.take_schedule_changed(self.shard) {
                timer.checked = None;
            }
            if timer
                .checked
                .is_none_or(|t| t.elapsed() >= self.config.poll_interval)
            {
                match self.journal.next_due(self.shard).await {
                    Ok(due) => timer.next_due = due,
                    Err(e) => {
                        tracing::warn!(shard = self.shard, error = %e, "cannot read the schedule")
                    }
                }
                timer.checked = Some(Instant::now());
            }
            if timer.next_due.is_some_and(|t| t <= Timestamp::now()) {
                match self.journal.promote_due(self.shard, Timestamp::now()).await {
                    // Deliver what was promoted first; read the next due time after.
                    Ok(_) => timer.checked = None,
                    Err(e) => {
                        tracing::warn!(shard = self.shard, error = %e, "promoting due messages failed");
                        if self.sleep_or_stop(Duration::from_millis(200)).await {
                            return Exit::Stopped;
                        }
                        continue;
                    }
                }
            }

            let batch = match self
                .journal
                .read_shard(
                    self.shard,
                    cursor,
                    self.config.batch_size,
                    Some(EntryKind::Message),
                )
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(shard = self.shard, error = %e, "cannot read shard");
                    if self.sleep_or_stop(Duration::from_millis(500)).await {
                        return Exit::Stopped;
                    }
                    continue;
                }
            };
            let Some(last) = batch.last().map(|e| e.offset) else {
                self.sweep().await;
                let wait = timer.wait(self.config.poll_interval);
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = self.journal.wait_for_entries(self.shard, wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let count = batch.len();
            match self.process(batch, last).await {
                Ok(()) => cursor = last,
                Err(EngineError::Journal(
                    JournalError::Fenced { .. } | JournalError::SeqConflict { .. },
                )) => {
                    tracing::warn!(shard = self.shard, "fenced: the shard has another owner");
                    return Exit::Fenced;
                }
                Err(e) => {
                    // The commit may or may not have landed: drop what memory holds, and
                    // go on from the cursor as stored.
                    tracing::error!(shard = self.shard, error = %e, "commit failed; redelivering");
                    self.instances.clear();
                    metrics::counter!(m::MESSAGES_REDELIVERED).increment(count as u64);
                    if self.sleep_or_stop(Duration::from_millis(100)).await {
                        return Exit::Stopped;
                    }
                    if let Ok(c) = self.journal.cursor(MAILBOX, self.shard).await {
                        cursor = c;
                    }
                }
            }
        }
    }

    /// Sleeps, or returns `true` early if asked to stop.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
        *self.stop.borrow()
    }

    /// Handles a batch and commits it with the cursor advance to `last`.
    async fn process(&mut self, batch: Vec<Entry>, last: u64) -> Result<(), EngineError> {
        // Group by entity, keeping each entity's messages in offset order.
        let mut order: Vec<EntityKey> = Vec::new();
        let mut groups: HashMap<EntityKey, Vec<Entry>> = HashMap::new();
        for entry in batch {
            let list = groups.entry(entry.entity.clone()).or_insert_with(|| {
                order.push(entry.entity.clone());
                Vec::new()
            });
            list.push(entry);
        }
        let work = order.into_iter().map(|key| {
            let slot = self.instances.remove(&key);
            let entries = groups.remove(&key).unwrap_or_default();
            let journal = &self.journal;
            let registry = &self.registry;
            let config = &self.config;
            async move { handle_entity(journal, registry, config, key, slot, entries).await }
        });
        let results = futures_util::future::join_all(work).await;

        let mut processed: Vec<Processed> = Vec::new();
        let mut kept = Vec::new();
        for result in results {
            let (key, slot, done) = result?;
            processed.extend(done);
            if let Some(slot) = slot {
                kept.push((key, slot));
            }
        }
        processed.sort_by_key(|p| p.offset);
        let created: Vec<(EntityKey, uuid::Uuid, entlog_journal::Payload)> = processed
            .iter()
            .map(|p| (p.entity.clone(), p.message_id, p.reply.clone()))
            .collect();
        let n = processed.len();
        let batch = ProcessedBatch {
            shard: self.shard,
            lease: Some(self.lease),
            cursor: Some((MAILBOX.to_owned(), last)),
            messages: processed,
        };
        if self.inline.is_empty() {
            self.journal.commit(batch).await?;
        } else {
            self.inline.commit(&self.journal, batch).await?;
        }
        metrics::counter!(m::MESSAGES_PROCESSED).increment(n as u64);
        for (key, id, reply) in created {
            self.waiters.resolve(&key, id, reply);
        }
        for (key, mut slot) in kept {
            if slot.instance.since_snapshot() >= self.config.snapshot_every {
                self.save_snapshot(&mut slot).await;
            }
            self.instances.insert(key, slot);
        }
        metrics::gauge!(m::ENTITIES_ACTIVE, "shard" => self.shard.to_string())
            .set(self.instances.len() as f64);
        Ok(())
    }

    async fn save_snapshot(&self, slot: &mut Slot) {
        match slot.instance.snapshot() {
            Ok(snap) => match self.journal.save_snapshot(snap).await {
                Ok(()) => {
                    slot.instance.snapshotted();
                    metrics::counter!(m::SNAPSHOTS_WRITTEN).increment(1);
                }
                Err(e) => tracing::warn!(shard = self.shard, error = %e, "snapshot failed"),
            },
            Err(e) => tracing::warn!(shard = self.shard, error = %e, "state not encodable"),
        }
    }

    /// Passivates instances idle for longer than `passivate_after`.
    async fn sweep(&mut self) {
        let every = self.config.passivate_after / 4;
        if self.last_sweep.elapsed() < every {
            return;
        }
        self.last_sweep = Instant::now();
        let idle: Vec<EntityKey> = self
            .instances
            .iter()
            .filter(|(_, s)| s.last_used.elapsed() >= self.config.passivate_after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            if let Some(mut slot) = self.instances.remove(&key)
                && slot.instance.since_snapshot() > 0
            {
                self.save_snapshot(&mut slot).await;
            }
        }
        metrics::gauge!(m::ENTITIES_ACTIVE, "shard" => self.shard.to_string())
            .set(self.instances.len() as f64);
    }

    async fn snapshot_all(&mut self) {
        let keys: Vec<EntityKey> = self.instances.keys().cloned().collect();
        for key in keys {
            if let Some(mut slot) = self.instances.remove(&key)
                && slot.instance.since_snapshot() > 0
            {
                self.save_snapshot(&mut slot).await;
            }
        }
        metrics::gauge!(m::ENTITIES_ACTIVE, "shard" => self.shard.to_string()).set(0.0);
    }
}

/// Handles one entity's messages of a batch, in order. Returns the instance to keep (none
/// if it could not be activated or its state was lost) and the processed messages.
async fn handle_entity(
    journal: &AnyJournal,
    registry: &Registry,
    config: &Config,
    key: EntityKey,
    slot: Option<Slot>,
    entries: Vec<Entry>,
) -> Result<(EntityKey, Option<Slot>, Vec<Processed>), JournalError> {
    let mut done = Vec::with_capacity(entries.len());
    let Some(kind) = registry.get(key.entity_type()) else {
        for e in entries {
            done.push(failed(
                &e,
                1,
                format!("entity type {} is not registered", key.entity_type()),
            ));
        }
        return Ok((key, None, done));
    };
    let mut slot = match slot {
        Some(s) => s,
        None => match kind.activate(journal, key.clone()).await {
            Ok(instance) => Slot {
                instance,
                last_used: Instant::now(),
            },
            Err(crate::EngineError::Journal(JournalError::Persistence(e))) => {
                // The database is unavailable: nothing of this batch may commit.
                return Err(JournalError::Persistence(e));
            }
            Err(e) => {
                // The entity's history cannot be read back (a checksum failure, an event
                // that does not decode). Its messages get failure replies naming the
                // cause, so the shard moves on and the damage is visible.
                tracing::error!(entity = %key, error = %e, "activation failed");
                for entry in entries {
                    done.push(failed(
                        &entry,
                        kind.reply_version(),
                        format!("activation failed: {e}"),
                    ));
                }
                return Ok((key, None, done));
            }
        },
    };
    slot.last_used = Instant::now();
    let mut lost = false;
    for entry in entries {
        if lost {
            done.push(failed(
                &entry,
                kind.reply_version(),
                "not handled: an earlier message of this batch broke the entity's state".into(),
            ));
            continue;
        }
        let mut attempt = 1;
        let outcome = loop {
            match slot.instance.handle(&entry.payload).await {
                Handled::Panicked(reason) if attempt < config.max_attempts => {
                    tracing::warn!(entity = %key, offset = entry.offset, attempt, %reason, "handler panicked; retrying");
                    tokio::time::sleep(config.retry_backoff * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        // A scheduled message counts from its due time, not from when it was sent.
        let since = entry
            .deliver_at
            .map_or(entry.created_at, |due| due.max(entry.created_at));
        let latency = Timestamp::now().since(since);
        metrics::histogram!(m::PROCESSING_LATENCY).record(latency.as_secs_f64());
        match outcome {
            Handled::Done {
                events,
                reply,
                outgoing,
            } => done.push(Processed {
                entity: key.clone(),
                message_id: entry.message_id,
                offset: entry.offset,
                events,
                reply,
                outgoing,
            }),
            Handled::Panicked(reason) => {
                done.push(failed(
                    &entry,
                    kind.reply_version(),
                    format!("handler panicked {attempt} times: {reason}"),
                ));
            }
            Handled::Broken { reason, state_lost } => {
                done.push(failed(&entry, kind.reply_version(), reason));
                lost |= state_lost;
            }
        }
    }
    Ok((key, (!lost).then_some(slot), done))
}

fn failed(entry: &Entry, reply_version: u32, reason: String) -> Processed {
    metrics::counter!(m::MESSAGES_FAILED).increment(1);
    tracing::error!(entity = %entry.entity, offset = entry.offset, %reason, "message failed");
    let reply =
        codec::failure(entry.entity.entity_type(), reply_version, reason).unwrap_or_else(|_| {
            entlog_journal::Payload {
                type_tag: "entlog.failure".into(),
                version: 1,
                bytes: Vec::new(),
            }
        });
    Processed {
        entity: entry.entity.clone(),
        message_id: entry.message_id,
        offset: entry.offset,
        events: Vec::new(),
        reply,
        outgoing: Vec::new(),
    }
}
