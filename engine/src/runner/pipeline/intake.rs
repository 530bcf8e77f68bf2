//! The pipeline's intake: what it does with the database before handling.
//!
//! One intake round covers every shard that wants something: a newly owned (or reset)
//! shard loads its cursor and brings its inline projections up to date; a shard whose
//! scheduled messages are due promotes them; the shards whose schedule changed read their
//! next due times in one query; then ONE read fetches the due messages of all of them,
//! after each shard's read position. Damaged entries are recorded durably before the read
//! returns them.

use std::sync::Arc;

use entlog_journal::{AnyJournal, Delivery, Journal, Shard, Timestamp};

use std::time::Instant;

use tokio::task::JoinHandle;

use super::handle::Env;
use super::mailbox::trouble;
use super::{FIRST_BACKOFF, MAILBOX, MAX_BACKOFF, Pipeline, handle};
use crate::metrics as m;
use crate::runner::inline::Inline;

/// What one shard wants of an intake round.
pub(crate) struct Want {
    pub shard: Shard,
    pub generation: u64,
    /// Where to read from; `None`: load the cursor first (and catch up `inline`).
    pub after: Option<u64>,
    pub inline: Option<Inline>,
    pub promote: bool,
    pub refresh_due: bool,
}

/// What an intake round brought for one shard.
pub(crate) struct Got {
    pub shard: Shard,
    pub generation: u64,
    /// The mailbox cursor, when it was loaded.
    pub loaded: Option<u64>,
    /// Where the read started; `None` if the shard was not read.
    pub from: Option<u64>,
    pub inline: Option<Inline>,
    /// Whether to read the next due time (read for the whole round at once).
    refresh_due: bool,
    /// The next due time, when it was read.
    pub next_due: Option<Option<Timestamp>>,
    /// Messages and damaged entries read, in offset order (empty if not read).
    pub deliveries: Vec<Delivery>,
    /// Whether it was read, and the read was full (more may be waiting).
    pub read: bool,
    pub full: bool,
    /// Why something failed (the shard backs off and tries again).
    pub error: Option<String>,
}

/// Runs one intake round.
pub(crate) async fn intake(env: Arc<Env>, wants: Vec<Want>, limit: usize) -> Vec<Got> {
    let journal = &env.journal;
    let mut got = Vec::with_capacity(wants.len());
    for w in wants {
        got.push(prepare(journal, w, env.config.batch_size).await);
    }
    refresh_due(journal, &mut got).await;
    let from: Vec<(Shard, u64)> = got
        .iter()
        .filter(|g| g.error.is_none())
        .filter_map(|g| g.from.map(|c| (g.shard, c)))
        .collect();
    if from.is_empty() {
        return got;
    }
    let started = Instant::now();
    let read = journal.read_mailboxes(&from, limit).await;
    metrics::histogram!(m::READ_SECONDS).record(started.elapsed().as_secs_f64());
    match read {
        Ok(deliveries) => {
            let damaged: Vec<_> = deliveries
                .iter()
                .filter_map(|d| match d {
                    Delivery::Damaged(d) => Some(d.clone()),
                    Delivery::Message(_) => None,
                })
                .collect();
            if !damaged.is_empty() {
                if let Err(e) = journal.record_damaged(&damaged).await {
                    let reason = format!("cannot record damaged entries: {e}");
                    for g in got.iter_mut().filter(|g| g.from.is_some()) {
                        g.error.get_or_insert_with(|| reason.clone());
                    }
                    return got;
                }
                for d in &damaged {
                    tracing::error!(shard = d.shard, offset = d.offset, reason = %d.reason, "damaged entry passed");
                }
                metrics::counter!(m::ENTRIES_DAMAGED).increment(damaged.len() as u64);
            }
            for d in deliveries {
                let shard = d.shard();
                if let Some(g) = got.iter_mut().find(|g| g.shard == shard) {
                    g.deliveries.push(d);
                }
            }
            for g in got
                .iter_mut()
                .filter(|g| g.error.is_none() && g.from.is_some())
            {
                g.read = true;
                g.full = g.deliveries.len() >= limit;
            }
        }
        Err(e) => {
            let reason = format!("cannot read: {e}");
            for g in got.iter_mut().filter(|g| g.from.is_some()) {
                g.error.get_or_insert_with(|| reason.clone());
            }
        }
    }
    got
}

/// The per-shard steps before the read. On return, `from` is where to read from (the
/// loaded cursor or the caller's read position), `None` if the shard is not to be read.
async fn prepare(journal: &AnyJournal, w: Want, batch: usize) -> Got {
    let mut got = Got {
        shard: w.shard,
        generation: w.generation,
        loaded: None,
        from: None,
        inline: w.inline,
        refresh_due: false,
        next_due: None,
        deliveries: Vec::new(),
        read: false,
        full: false,
        error: None,
    };
    let fail = |got: &mut Got, what: &str, e: &dyn std::fmt::Display| {
        got.error = Some(format!("{what}: {e}"));
    };
    let after = match w.after {
        Some(a) => a,
        None => {
            if let Some(inline) = got.inline.as_mut() {
                match inline.catch_up(journal, batch).await {
                    Ok(true) => {}
                    Ok(false) => {
                        got.error = Some("an inline projection failed; see its status".into());
                        return got;
                    }
                    Err(e) => {
                        fail(&mut got, "inline projections cannot catch up", &e);
                        return got;
                    }
                }
            }
            match journal.cursor(MAILBOX, w.shard).await {
                Ok(c) => {
                    got.loaded = Some(c);
                    c
                }
                Err(e) => {
                    fail(&mut got, "cannot read the cursor", &e);
                    return got;
                }
            }
        }
    };
    if w.promote
        && let Err(e) = journal.promote_due(w.shard, journal.now()).await
    {
        fail(&mut got, "cannot promote due messages", &e);
        return got;
    }
    got.refresh_due = w.refresh_due || w.promote;
    got.from = Some(after);
    got
}

/// Reads the next due time of every shard of the round that wants it, in one query.
async fn refresh_due(journal: &AnyJournal, got: &mut [Got]) {
    let wanted: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].refresh_due && got[i].error.is_none())
        .collect();
    if wanted.is_empty() {
        return;
    }
    let shards: Vec<Shard> = wanted.iter().map(|&i| got[i].shard).collect();
    match journal.next_due_many(&shards).await {
        Ok(due) => {
            for (&i, due) in wanted.iter().zip(due) {
                got[i].next_due = Some(due);
            }
        }
        Err(e) => {
            let reason = format!("cannot read the schedule: {e}");
            for &i in &wanted {
                got[i].error = Some(reason.clone());
            }
        }
    }
}

// ---- the intake stage of the pipeline ------------------------------------------------

impl Pipeline {
    pub(super) fn start_intake(&mut self) -> Option<JoinHandle<Vec<Got>>> {
        let batch = self.config().batch_size;
        let now = self.env.journal.now();
        let mut wants = Vec::new();
        for (shard, mb) in &mut self.mailboxes {
            if !mb.wants_intake(&self.env.config, now) {
                continue;
            }
            let init = mb.cursor.is_none();
            if !init && mb.outstanding.len() >= batch {
                continue; // the mailbox is full: the journal holds the rest
            }
            mb.in_intake = true;
            mb.dirty = false;
            mb.last_read = Instant::now();
            let promote = mb.promote_due(now);
            let refresh_due = init || mb.due_stale(&self.env.config);
            if refresh_due {
                mb.due_checked = Some(Instant::now());
            }
            wants.push(Want {
                shard: *shard,
                generation: mb.generation,
                after: (!init).then_some(mb.read_to),
                inline: if init { mb.inline.take() } else { None },
                promote,
                refresh_due,
            });
        }
        if wants.is_empty() {
            return None;
        }
        Some(tokio::spawn(intake(self.env.clone(), wants, batch)))
    }

    pub(super) fn on_intake(&mut self, got: Result<Vec<Got>, tokio::task::JoinError>) {
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "the intake ended abnormally");
                for mb in self.mailboxes.values_mut() {
                    mb.in_intake = false;
                }
                return;
            }
        };
        for g in got {
            let Some(mb) = self.mailboxes.get_mut(&g.shard) else {
                continue;
            };
            mb.in_intake = false;
            if g.inline.is_some() && mb.inline.is_none() {
                mb.inline = g.inline;
            }
            if mb.generation != g.generation {
                continue;
            }
            if let Some(due) = g.next_due {
                mb.next_due = due;
            }
            if let Some(reason) = g.error {
                tracing::warn!(shard = g.shard, %reason, "shard intake failed; retrying");
                trouble(&self.troubles, g.shard, mb, Some(&reason));
                mb.failures += 1;
                mb.not_before = Some(
                    Instant::now() + handle::backoff(FIRST_BACKOFF, mb.failures).min(MAX_BACKOFF),
                );
                metrics::counter!(m::SHARD_RETRIES).increment(1);
                continue;
            }
            if let Some(c) = g.loaded {
                mb.cursor = Some(c);
                mb.read_to = c;
            }
            if !g.read {
                continue;
            }
            mb.failures = 0;
            trouble(&self.troubles, g.shard, mb, None);
            mb.dirty |= g.full;
            for d in g.deliveries {
                match d {
                    Delivery::Message(entry) => {
                        if entry.offset <= mb.read_to {
                            continue;
                        }
                        mb.read_to = entry.offset;
                        mb.outstanding.insert(entry.offset);
                        let key = entry.entity.clone();
                        let queue = self.pending.entry(key.clone()).or_default();
                        if queue.is_empty() {
                            self.candidates.push(key);
                        }
                        queue.push_back(entry);
                    }
                    Delivery::Damaged(d) => {
                        // Recorded by the intake; its identity cannot be trusted, so it is
                        // passed: the cursor may move over it.
                        mb.read_to = mb.read_to.max(d.offset);
                    }
                }
            }
        }
    }
}
