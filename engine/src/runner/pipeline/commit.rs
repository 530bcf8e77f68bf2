//! The runner's group commit: what every shard handled, in one call of the journal.
//!
//! ```text
//!   commit_many(every plain shard's batch)   one transaction (commit_batches on
//!                                            PostgreSQL): each lease's fence checked
//!                                            first, a fenced shard named and left out
//!   per shard with inline projections:       commit_open(batch) + the projections'
//!                                            writes + commit, a transaction of its own
//!   then (inside the journal): wake the shards written to
//! ```
//!
//! The pipeline starts a commit whenever none is in flight and something is ready: every
//! handled message of every shard, each shard's cursor moved to just below its lowest
//! message still outstanding. When the commit ends, replies are released and the
//! shards' cursors move; a shard whose part failed is reset (see [`Pipeline::reset`]).
//!
//! The shards of one commit succeed or fail together, except a fenced shard, which is
//! left out before anything is written, so the others commit once. A shard with inline
//! projections commits in a transaction of its own (its projections' writes join it): a
//! failing projection then holds back only its own shard.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use entlog_journal::{
    AnyJournal, Askers, CommitReceipt, Journal, JournalError, Lease, Processed, ProcessedBatch,
    Shard,
};
use tokio::task::JoinHandle;

use super::super::inline::Inline;
use super::mailbox::{InFlight, trouble};
use super::{
    Exit, FIRST_BACKOFF, ISOLATE_AFTER, MAILBOX, MAX_BACKOFF, Pipeline, handle, save_snapshots,
};
use crate::error::EngineError;
use crate::metrics as m;
use crate::registry::Registry;

/// One shard's part of a commit.
pub(crate) struct Part {
    pub lease: Lease,
    /// Commit in a transaction of its own (its shard is looking for a refused message).
    pub alone: bool,
    pub batch: ProcessedBatch,
    /// The shard's inline projections, moved in for the commit and handed back.
    pub inline: Option<Inline>,
}

/// How one shard's part ended.
pub(crate) struct PartDone {
    pub shard: Shard,
    pub result: Result<CommitReceipt, Failure>,
    pub inline: Option<Inline>,
}

/// Why a part did not commit.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The shard was acquired again by another runner: this one must not write to it.
    Fenced,
    /// The transaction failed; `transient` when the database could not be reached (it may
    /// pass), otherwise something in the batch or an inline projection was refused.
    Failed { reason: String, transient: bool },
}

/// Commits `parts` (at most one per shard): together in one call, but for those with
/// inline projections or committing alone, which commit one by one. `askers`: where the
/// askers of their messages wait.
pub(crate) async fn commit(journal: AnyJournal, parts: Vec<Part>, askers: Askers) -> Vec<PartDone> {
    let started = Instant::now();
    let (own, mut plain): (Vec<Part>, Vec<Part>) =
        parts.into_iter().partition(|p| p.alone || has_inline(p));
    let mut done = match plain.len() {
        0 => Vec::new(),
        1 => vec![alone(&journal, plain.remove(0), askers).await],
        _ => {
            plain.sort_by_key(|p| p.lease.shard);
            in_one_call(&journal, plain, askers).await
        }
    };
    for part in own {
        done.push(if has_inline(&part) {
            with_inline(&journal, part).await
        } else {
            alone(&journal, part, askers).await
        });
    }
    metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    done
}

fn has_inline(p: &Part) -> bool {
    p.inline.as_ref().is_some_and(|i| !i.is_empty())
}

/// The part's batch, leaving an empty one in its place.
fn take_batch(part: &mut Part) -> ProcessedBatch {
    std::mem::replace(
        &mut part.batch,
        ProcessedBatch {
            shard: part.lease.shard,
            lease: None,
            cursor: None,
            messages: Vec::new(),
        },
    )
}

/// What a journal error means for the part that met it.
fn failure(e: &JournalError) -> Failure {
    match e {
        JournalError::Fenced { .. } => Failure::Fenced,
        e => Failure::Failed {
            transient: is_transient(e),
            reason: e.to_string(),
        },
    }
}

/// One shard's part with no inline projections: one call, committed by itself (on
/// PostgreSQL one round trip; the journal checks the lease's fence inside it).
async fn alone(journal: &AnyJournal, mut part: Part, askers: Askers) -> PartDone {
    let batch = take_batch(&mut part);
    let result = match journal.commit_many(vec![batch], askers).await {
        Ok(mut receipts) => receipts.pop().ok_or_else(|| Failure::Failed {
            reason: "a commit of one batch returned no receipt".into(),
            transient: false,
        }),
        Err(e) => Err(failure(&e)),
    };
    PartDone {
        shard: part.lease.shard,
        result,
        inline: part.inline,
    }
}

/// A part with inline projections: its batch and their writes in one transaction, through
/// the journal's open commit (which wakes the shards once it committed).
async fn with_inline(journal: &AnyJournal, mut part: Part) -> PartDone {
    let batch = take_batch(&mut part);
    let result = match part.inline.as_mut() {
        Some(inline) => match inline.commit_open(journal, batch).await {
            Ok(open) => match open.commit().await {
                Ok(receipt) => {
                    inline.committed();
                    Ok(receipt)
                }
                Err(e) => Err(failure(&e)),
            },
            Err(EngineError::Journal(e)) => Err(failure(&e)),
            Err(e) => Err(Failure::Failed {
                reason: e.to_string(),
                transient: false,
            }),
        },
        None => journal.commit(batch).await.map_err(|e| failure(&e)),
    };
    PartDone {
        shard: part.lease.shard,
        result,
        inline: part.inline,
    }
}

/// Parts without inline projections: one call for all of them. A fenced part is named by
/// the failed call, left out, and the call made again without it.
async fn in_one_call(journal: &AnyJournal, mut parts: Vec<Part>, askers: Askers) -> Vec<PartDone> {
    let mut done = Vec::with_capacity(parts.len());
    loop {
        let batches: Vec<ProcessedBatch> = parts.iter().map(|p| p.batch.clone()).collect();
        match journal.commit_many(batches, askers).await {
            Ok(receipts) => {
                done.extend(parts.into_iter().zip(receipts).map(|(p, r)| PartDone {
                    shard: p.lease.shard,
                    result: Ok(r),
                    inline: p.inline,
                }));
                return done;
            }
            Err(JournalError::Fenced { shard, .. })
                if parts.iter().any(|p| p.lease.shard == shard) =>
            {
                let (fenced, rest): (Vec<Part>, Vec<Part>) =
                    parts.into_iter().partition(|p| p.lease.shard == shard);
                done.extend(fenced.into_iter().map(|p| PartDone {
                    shard: p.lease.shard,
                    result: Err(Failure::Fenced),
                    inline: p.inline,
                }));
                parts = rest;
                if parts.is_empty() {
                    return done;
                }
            }
            Err(e) => {
                let failure = Failure::Failed {
                    transient: is_transient(&e),
                    reason: e.to_string(),
                };
                done.extend(parts.into_iter().map(|p| PartDone {
                    shard: p.lease.shard,
                    result: Err(failure.clone()),
                    inline: p.inline,
                }));
                return done;
            }
        }
    }
}

/// Whether a commit error may pass by itself: [`JournalError::is_transient`], or an
/// inline projection's checkpoint moved by a rebuild (the shard's reset catches the
/// projection up again). Anything else is a refusal that repeating the same commit would
/// meet again.
pub(crate) fn is_transient(e: &JournalError) -> bool {
    matches!(e, JournalError::CheckpointMoved { .. }) || e.is_transient()
}

// ---- the commit stage of the pipeline ------------------------------------------------

impl Pipeline {
    pub(super) fn start_commit(&mut self) -> Option<JoinHandle<Vec<PartDone>>> {
        let mut by_shard: BTreeMap<Shard, Vec<Processed>> = BTreeMap::new();
        let mut kept = Vec::new();
        for (shard, generation, p) in std::mem::take(&mut self.ready) {
            match self.mailboxes.get(&shard) {
                Some(mb) if mb.generation == generation => {
                    if mb.in_commit || !mb.ready_in() {
                        kept.push((shard, generation, p));
                    } else {
                        by_shard.entry(shard).or_default().push(p);
                    }
                }
                _ => {} // a reset or departed shard: dropped
            }
        }
        let mut parts = Vec::new();
        let mut in_flight = InFlight {
            shards: HashMap::new(),
            entities: HashMap::new(),
            replies: Vec::new(),
        };
        for (shard, mb) in &mut self.mailboxes {
            if mb.in_commit || !mb.ready_in() {
                continue;
            }
            let Some(cursor) = mb.cursor else { continue };
            let mut messages = by_shard.remove(shard).unwrap_or_default();
            messages.sort_by_key(|p| p.offset);
            if mb.refused >= ISOLATE_AFTER && messages.len() > 1 {
                // Find the message the journal refuses: one at a time.
                for p in messages.drain(1..) {
                    kept.push((*shard, mb.generation, p));
                }
            }
            let offsets: BTreeSet<u64> = messages.iter().map(|p| p.offset).collect();
            let target = mb.target(&offsets).max(cursor);
            // A cursor move alone waits until nothing is outstanding: until then the
            // next commit of a handled message carries it at no cost.
            if messages.is_empty() && (target == cursor || !mb.outstanding.is_empty()) {
                continue;
            }
            let Some(inline) = mb.inline.take() else {
                // The inline projections are busy in an intake: commit next round.
                kept.extend(messages.into_iter().map(|p| (*shard, mb.generation, p)));
                continue;
            };
            mb.in_commit = true;
            for p in &messages {
                *in_flight.entities.entry(p.entity.clone()).or_default() += 1;
            }
            in_flight
                .shards
                .insert(*shard, (target, offsets, mb.generation));
            in_flight.replies.extend(
                messages
                    .iter()
                    .map(|p| (*shard, p.entity.clone(), p.message_id, p.reply.clone())),
            );
            parts.push(Part {
                lease: mb.lease,
                alone: mb.refused >= ISOLATE_AFTER,
                batch: ProcessedBatch {
                    shard: *shard,
                    lease: Some(mb.lease),
                    cursor: Some((MAILBOX.to_owned(), target)),
                    messages,
                },
                inline: Some(inline),
            });
        }
        self.ready = kept;
        if parts.is_empty() {
            return None;
        }
        // Asks of this process get their replies from it directly: a commit whose every
        // message is asked here has nothing to announce.
        let askers = if self.waiters.all_waited_for(
            in_flight
                .replies
                .iter()
                .map(|(_, entity, id, _)| (entity, *id)),
        ) {
            Askers::Here
        } else {
            Askers::Anywhere
        };
        self.in_flight = Some(in_flight);
        Some(tokio::spawn(commit(
            self.env.journal.clone(),
            parts,
            askers,
        )))
    }

    pub(super) fn on_commit(&mut self, done: Result<Vec<PartDone>, tokio::task::JoinError>) {
        let in_flight = self.in_flight.take();
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                // Cannot happen short of a bug. Its shards' inline projections went down
                // with it: let go of the shards, so that the runner takes them up afresh.
                tracing::error!(error = %e, "the commit task ended abnormally; its shards are given up");
                let shards: Vec<Shard> = in_flight
                    .as_ref()
                    .map(|f| f.shards.keys().copied().collect())
                    .unwrap_or_default();
                for shard in shards {
                    self.remove(shard, Exit::Dropped);
                }
                return;
            }
        };
        let Some(in_flight) = in_flight else { return };
        let mut committed: HashSet<Shard> = HashSet::new();
        for PartDone {
            shard,
            result,
            inline,
        } in done
        {
            let Some(mb) = self.mailboxes.get_mut(&shard) else {
                continue;
            };
            mb.in_commit = false;
            if mb.inline.is_none() {
                mb.inline = inline;
            }
            let Some((target, offsets, generation)) = in_flight.shards.get(&shard) else {
                continue;
            };
            if mb.generation != *generation {
                continue;
            }
            match result {
                Ok(_) => {
                    mb.cursor = Some(mb.cursor.map_or(*target, |c| c.max(*target)));
                    for o in offsets {
                        mb.outstanding.remove(o);
                        mb.poison.remove(o);
                    }
                    if !offsets.is_empty() {
                        mb.refused = 0;
                    }
                    mb.failures = 0;
                    trouble(&self.troubles, shard, mb, None);
                    committed.insert(shard);
                }
                Err(Failure::Fenced) => {
                    tracing::warn!(shard, "fenced: the shard has another owner");
                    self.remove(shard, Exit::Fenced);
                }
                Err(Failure::Failed { reason, transient }) => {
                    let single = (offsets.len() == 1)
                        .then(|| offsets.iter().next().copied())
                        .flatten();
                    self.reset(shard, &reason, transient, single);
                }
            }
        }
        let mut released = 0u64;
        for (shard, entity, message_id, reply) in in_flight.replies {
            if committed.contains(&shard) {
                released += 1;
                self.waiters.resolve(&entity, message_id, reply);
            }
        }
        metrics::counter!(m::MESSAGES_PROCESSED).increment(released);
        if !committed.is_empty() {
            metrics::histogram!(m::MESSAGES_PER_COMMIT).record(released as f64);
        }
        let mut snapshots = Vec::new();
        for (key, n) in in_flight.entities {
            let shard = self.env.journal.shard_of(&key);
            if committed.contains(&shard) {
                self.instances.settled(&key, n);
                if let Some(s) = self
                    .instances
                    .snapshot_due(&key, self.env.config.snapshot_every)
                {
                    snapshots.push(s);
                }
                if self.pending.contains_key(&key) {
                    self.candidates.push(key);
                }
            }
        }
        save_snapshots(&self.env.journal, snapshots);
    }

    /// A shard's commit failed: forget what it handled, read again from the stored cursor
    /// after a back-off. `single`: the failed commit carried this one message alone.
    pub(super) fn reset(
        &mut self,
        shard: Shard,
        reason: &str,
        transient: bool,
        single: Option<u64>,
    ) {
        let generation = self.generation();
        let Some(mb) = self.mailboxes.get_mut(&shard) else {
            return;
        };
        let redelivered = mb.outstanding.len();
        mb.generation = generation;
        mb.cursor = None;
        mb.read_to = 0;
        mb.outstanding.clear();
        mb.failures += 1;
        if !transient {
            mb.refused += 1;
            if let (Some(offset), true) = (single, mb.refused > ISOLATE_AFTER) {
                // Refused alone: this message is the one. It gets a failure reply.
                tracing::error!(shard, offset, %reason, "the journal refuses a handled message");
                mb.poison.insert(offset, reason.to_owned());
            }
        }
        mb.not_before =
            Some(Instant::now() + handle::backoff(FIRST_BACKOFF, mb.failures).min(MAX_BACKOFF));
        trouble(
            &self.troubles,
            shard,
            mb,
            Some(&format!("commit failed: {reason}")),
        );
        tracing::warn!(shard, %reason, transient, redelivered, "commit failed; the shard reads again from its cursor");
        metrics::counter!(m::MESSAGES_REDELIVERED).increment(redelivered as u64);
        metrics::counter!(m::SHARD_RETRIES).increment(1);
        self.ready.retain(|(s, _, _)| *s != shard);
        self.pending
            .retain(|_, q| q.front().is_none_or(|e| e.shard != shard));
        self.instances.forget_shard(shard);
    }
}

/// The failure reply that replaces a handled message's outcome when the journal refused
/// to store that outcome.
pub(super) fn poisoned(p: &Processed, reason: &str, registry: &Registry) -> Processed {
    let version = registry
        .get(p.entity.entity_type())
        .map_or(1, |k| k.reply_version());
    handle::failure(
        &p.entity,
        p.message_id,
        p.offset,
        version,
        crate::failure_kind::FailureKind::Refused,
        format!("the journal refused its outcome: {reason}"),
    )
}
