//! The runner's message pipeline: one task over every shard the runner owns.
//!
//! ```text
//!   intake ──► runs (one task per entity with messages) ──► ready ──► commit
//!   one read of      handle in offset order; a slow          one transaction for
//!   all due shards   entity holds only itself                every shard's handled
//!        ▲                                                   messages and cursors
//!        └──────────── while commit k is in flight, batch k+1 is read and handled ─┘
//! ```
//!
//! Per shard the pipeline keeps the committed *cursor* (everything at or below it is
//! done), the *read position* (everything up to it was read and dispatched) and the
//! offsets in between that are not committed yet. A commit moves the cursor to just below
//! the lowest offset still outstanding, so messages of other entities commit past a slow
//! one without the cursor ever passing a message that is not done; a redelivery after a
//! crash re-reads the rest, and the mailbox read leaves out messages that already have a
//! reply, so nothing runs twice.
//!
//! Replies are released only after their commit. When a shard's commit fails, the shard
//! is reset: its instances are dropped, its handled-but-uncommitted messages forgotten,
//! and it reads again from the cursor as stored, after a jittered back-off; a shard
//! whose commits are refused again and again commits one message at a time, and the
//! message the journal refuses alone gets a failure reply naming the refusal. Every
//! message thus ends, with its outcome or a stored failure.
//!
//! Shards come and go by [`Control`] messages from the runner. The pipeline is never
//! aborted: a stopped shard finishes what it read, snapshots its entities and reports
//! [`Exit::Stopped`]; a shard whose lock is lost is forgotten at once ([`Exit::Dropped`]).

mod commit;
mod handle;
mod instances;
mod intake;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, Delivery, EntityKey, Entry, Journal, Lease, NewSnapshot, Processed, ProcessedBatch,
    Shard, Timestamp,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::inline::Inline;
use crate::config::Config;
use crate::metrics as m;
use crate::registry::Registry;
use crate::waiters::Waiters;
use commit::{Failure, Part, PartDone};
use handle::{Env, RunDone};
use instances::Instances;
use intake::{Got, Want};

/// The consumer name of the entities' mailbox cursor.
pub const MAILBOX: &str = "mailbox";

/// Consecutive refused commits of a shard after which it commits one message at a time,
/// to find the message the journal refuses.
const ISOLATE_AFTER: u32 = 2;

/// Longest back-off between attempts of a shard whose commits or reads fail.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First back-off of a failing shard; doubles with each consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Why a shard left the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Asked to stop: what it had read is committed and its entities were snapshotted.
    Stopped,
    /// Another owner took the shard (fenced commit): it must not write again.
    Fenced,
    /// Its lock was lost: forgotten at once, nothing more written.
    Dropped,
}

/// What the runner tells its pipeline.
pub(crate) enum Control {
    /// Deliver a newly acquired shard's messages; `exit` learns when it leaves.
    Add {
        lease: Lease,
        inline: Inline,
        exit: oneshot::Sender<Exit>,
    },
    /// Finish the shard's read messages, snapshot its entities, then leave.
    Stop(Shard),
    /// Forget the shard now: its lock is lost.
    Drop(Shard),
}

/// The runner's handle on its pipeline task.
pub(crate) struct PipelineHandle {
    tx: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

impl PipelineHandle {
    /// Starts the pipeline task.
    pub(crate) fn start(
        journal: AnyJournal,
        registry: Arc<Registry>,
        waiters: Arc<Waiters>,
        config: Arc<Config>,
        in_memory: super::InMemory,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let env = Arc::new(Env {
            max_payload: journal.max_payload_bytes(),
            journal,
            registry,
            config,
        });
        let task = tokio::spawn(Pipeline::new(env, waiters, in_memory).run(rx));
        PipelineHandle { tx, task }
    }

    /// Sends a control message (lost only if the pipeline ended, which it does only when
    /// this handle is dropped).
    pub(crate) fn send(&self, c: Control) {
        let _ = self.tx.send(c);
    }

    /// Closes the control channel and waits for the pipeline to finish its shards.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// One owned shard's delivery state.
struct Mailbox {
    lease: Lease,
    generation: u64,
    exit: Option<oneshot::Sender<Exit>>,
    /// The inline projections; `None` while an intake or a commit holds them.
    inline: Option<Inline>,
    /// The committed cursor; `None` until loaded (after acquisition or a reset).
    cursor: Option<u64>,
    /// Everything up to here was read and dispatched.
    read_to: u64,
    /// Read, not committed.
    outstanding: BTreeSet<u64>,
    /// Woken (or polled) since the last read: read it.
    dirty: bool,
    seen_wakes: u64,
    last_read: Instant,
    /// Back-off after a failure: nothing is read or committed before then.
    not_before: Option<Instant>,
    /// Consecutive failed rounds (reads or commits), for the back-off.
    failures: u32,
    /// Consecutive commits refused for something other than an unreachable database.
    refused: u32,
    /// Messages the journal refused alone: their failure reply replaces their outcome.
    poison: HashMap<u64, String>,
    next_due: Option<Timestamp>,
    due_checked: Option<Instant>,
    stopping: bool,
    in_intake: bool,
    in_commit: bool,
    /// The trouble recorded on the shard's row, while its reads or commits fail.
    trouble: Option<String>,
}

impl Mailbox {
    /// The cursor a commit may move to once `committing` commits too.
    fn target(&self, committing: &BTreeSet<u64>) -> u64 {
        self.outstanding
            .iter()
            .find(|o| !committing.contains(o))
            .map_or(self.read_to, |o| o - 1)
    }

    fn ready_in(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn wants_intake(&self, config: &Config) -> bool {
        if self.stopping || self.in_intake || !self.ready_in() {
            return false;
        }
        if self.cursor.is_none() {
            return self.inline.is_some() && !self.in_commit;
        }
        self.dirty
            || self.promote_due()
            || self.due_stale(config)
            || self.last_read.elapsed() >= config.poll_interval
    }

    fn promote_due(&self) -> bool {
        self.next_due.is_some_and(|t| t <= Timestamp::now())
    }

    fn due_stale(&self, config: &Config) -> bool {
        self.due_checked
            .is_none_or(|t| t.elapsed() >= config.poll_interval)
    }

    /// When this mailbox next needs the pipeline without a wake-up.
    fn deadline(&self, config: &Config) -> Instant {
        let mut at = self.last_read + config.poll_interval;
        if let Some(t) = self.due_checked {
            at = at.min(t + config.poll_interval);
        }
        if let Some(due) = self.next_due {
            at = at.min(Instant::now() + due.since(Timestamp::now()));
        }
        if let Some(t) = self.not_before {
            at = at.max(t);
        }
        at
    }
}

/// A commit in flight: what each shard's part will settle.
struct InFlight {
    /// Per shard: the cursor it moves to, the offsets it commits, its generation.
    shards: HashMap<Shard, (u64, BTreeSet<u64>, u64)>,
    /// Handled messages per entity it carries.
    entities: HashMap<EntityKey, usize>,
    /// The replies to release, by message.
    replies: Vec<Processed>,
}

/// The pipeline task's state.
struct Pipeline {
    env: Arc<Env>,
    /// Records and clears shards' trouble on their rows, in order (see `trouble.rs` of
    /// the journal).
    troubles: mpsc::UnboundedSender<(Shard, Option<(String, Timestamp)>)>,
    waiters: Arc<Waiters>,
    in_memory: super::InMemory,
    mailboxes: BTreeMap<Shard, Mailbox>,
    next_generation: u64,
    instances: Instances,
    /// Messages read and not yet handed to a run, per entity, in offset order.
    pending: HashMap<EntityKey, VecDeque<Entry>>,
    /// Entities whose run is in flight (a run of a reset shard still counts).
    running: HashSet<EntityKey>,
    /// Entities to look at for a new run.
    candidates: Vec<EntityKey>,
    /// Entities waiting out a back-off before their next run.
    delayed: HashMap<EntityKey, Instant>,
    /// Handled messages waiting for the next commit: (shard, generation, outcome).
    ready: Vec<(Shard, u64, Processed)>,
    in_flight: Option<InFlight>,
    last_sweep: Instant,
}

impl Pipeline {
    fn new(env: Arc<Env>, waiters: Arc<Waiters>, in_memory: super::InMemory) -> Self {
        let (troubles, mut rx) = mpsc::unbounded_channel();
        let journal = env.journal.clone();
        tokio::spawn(async move {
            while let Some((shard, trouble)) = rx.recv().await {
                let trouble: Option<(String, Timestamp)> = trouble;
                let t = trouble.as_ref().map(|(c, at)| (c.as_str(), *at));
                if let Err(e) = journal.set_trouble(shard, t).await {
                    tracing::debug!(shard, error = %e, "cannot record the shard's trouble");
                }
            }
        });
        Pipeline {
            troubles,
            env,
            waiters,
            in_memory,
            mailboxes: BTreeMap::new(),
            next_generation: 1,
            instances: Instances::default(),
            pending: HashMap::new(),
            running: HashSet::new(),
            candidates: Vec::new(),
            delayed: HashMap::new(),
            ready: Vec::new(),
            in_flight: None,
            last_sweep: Instant::now(),
        }
    }

    fn config(&self) -> &Config {
        &self.env.config
    }

    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut wakeups = self.env.journal.watch_wakeups().await;
        let mut runs: JoinSet<RunDone> = JoinSet::new();
        let mut intake: Option<JoinHandle<Vec<Got>>> = None;
        let mut committing: Option<JoinHandle<Vec<PartDone>>> = None;
        let mut open = true;
        let mut woken = true;
        loop {
            self.look_at_wakeups();
            self.start_runs(&mut runs);
            if intake.is_none() {
                intake = self.start_intake();
            }
            if committing.is_none() {
                committing = self.start_commit();
            }
            self.finish_stopped();
            self.sweep();
            self.in_memory.store(
                self.instances.len() + self.running.len(),
                std::sync::atomic::Ordering::Relaxed,
            );
            if !open
                && self.mailboxes.is_empty()
                && runs.is_empty()
                && intake.is_none()
                && committing.is_none()
            {
                return;
            }
            let deadline = self.deadline();
            tokio::select! {
                c = control.recv(), if open => match c {
                    Some(c) => self.on_control(c),
                    None => {
                        open = false;
                        for mb in self.mailboxes.values_mut() {
                            mb.stopping = true;
                        }
                    }
                },
                Some(done) = runs.join_next(), if !runs.is_empty() => match done {
                    Ok(done) => self.on_run(done),
                    Err(e) => tracing::error!(error = %e, "an entity run ended abnormally"),
                },
                got = join(&mut intake) => {
                    intake = None;
                    self.on_intake(got);
                }
                done = join(&mut committing) => {
                    committing = None;
                    self.on_commit(done);
                }
                r = wakeups.changed(), if woken => woken = r.is_ok(),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Add {
                lease,
                inline,
                exit,
            } => {
                let generation = self.generation();
                let seen_wakes = self.env.journal.wake_count(lease.shard);
                self.mailboxes.insert(
                    lease.shard,
                    Mailbox {
                        lease,
                        generation,
                        exit: Some(exit),
                        inline: Some(inline),
                        cursor: None,
                        read_to: 0,
                        outstanding: BTreeSet::new(),
                        dirty: true,
                        seen_wakes,
                        last_read: Instant::now(),
                        not_before: None,
                        failures: 0,
                        refused: 0,
                        poison: HashMap::new(),
                        next_due: None,
                        due_checked: None,
                        stopping: false,
                        in_intake: false,
                        in_commit: false,
                        trouble: None,
                    },
                );
            }
            Control::Stop(shard) => {
                if let Some(mb) = self.mailboxes.get_mut(&shard) {
                    mb.stopping = true;
                }
            }
            Control::Drop(shard) => self.remove(shard, Exit::Dropped),
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Marks the shards woken since they were last read.
    fn look_at_wakeups(&mut self) {
        for (shard, mb) in &mut self.mailboxes {
            let n = self.env.journal.wake_count(*shard);
            if n != mb.seen_wakes {
                mb.seen_wakes = n;
                mb.dirty = true;
            }
            if self.env.journal.take_schedule_changed(*shard) {
                mb.due_checked = None;
            }
        }
    }

    /// The next time the pipeline must look without being woken.
    fn deadline(&self) -> Instant {
        let config = self.config();
        let mut at = self.last_sweep + sweep_every(config);
        for mb in self.mailboxes.values() {
            if !mb.in_intake && !mb.stopping {
                at = at.min(mb.deadline(config));
            }
        }
        for t in self.delayed.values() {
            at = at.min(*t);
        }
        at.max(Instant::now() + Duration::from_micros(200))
    }

    // ---- intake ---------------------------------------------------------------------

    fn start_intake(&mut self) -> Option<JoinHandle<Vec<Got>>> {
        let batch = self.config().batch_size;
        let mut wants = Vec::new();
        for (shard, mb) in &mut self.mailboxes {
            if !mb.wants_intake(&self.env.config) {
                continue;
            }
            let init = mb.cursor.is_none();
            if !init && mb.outstanding.len() >= batch {
                continue; // the mailbox is full: the journal holds the rest
            }
            mb.in_intake = true;
            mb.dirty = false;
            mb.last_read = Instant::now();
            let promote = mb.promote_due();
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
        Some(tokio::spawn(intake::intake(self.env.clone(), wants, batch)))
    }

    fn on_intake(&mut self, got: Result<Vec<Got>, tokio::task::JoinError>) {
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

    // ---- runs -----------------------------------------------------------------------

    fn start_runs(&mut self, runs: &mut JoinSet<RunDone>) {
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
            runs.spawn(handle::run(
                self.env.clone(),
                key,
                shard,
                mb.generation,
                slot,
                entries,
            ));
        }
    }

    fn on_run(&mut self, done: RunDone) {
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
                Instant::now() + handle::backoff(FIRST_BACKOFF, mb.failures).min(MAX_BACKOFF),
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

    // ---- commit ---------------------------------------------------------------------

    fn start_commit(&mut self) -> Option<JoinHandle<Vec<PartDone>>> {
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
            if messages.is_empty() && target == cursor {
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
            in_flight.replies.extend(messages.iter().cloned());
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
        self.in_flight = Some(in_flight);
        Some(tokio::spawn(commit::commit(
            self.env.journal.clone(),
            parts,
        )))
    }

    fn on_commit(&mut self, done: Result<Vec<PartDone>, tokio::task::JoinError>) {
        let in_flight = self.in_flight.take();
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                // Cannot happen short of a bug: treat every shard of it as failed.
                tracing::error!(error = %e, "the commit task ended abnormally");
                let shards: Vec<Shard> = in_flight
                    .as_ref()
                    .map(|f| f.shards.keys().copied().collect())
                    .unwrap_or_default();
                for shard in shards {
                    if let Some(mb) = self.mailboxes.get_mut(&shard) {
                        mb.in_commit = false;
                    }
                    self.reset(shard, "the commit task ended abnormally", false, None);
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
        for p in in_flight.replies {
            let shard = self.env.journal.shard_of(&p.entity);
            if committed.contains(&shard) {
                released += 1;
                self.waiters.resolve(&p.entity, p.message_id, p.reply);
            }
        }
        metrics::counter!(m::MESSAGES_PROCESSED).increment(released);
        if released > 0 {
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
    fn reset(&mut self, shard: Shard, reason: &str, transient: bool, single: Option<u64>) {
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

    /// Takes a shard out of the pipeline and tells the runner why.
    fn remove(&mut self, shard: Shard, why: Exit) {
        let Some(mut mb) = self.mailboxes.remove(&shard) else {
            return;
        };
        self.ready.retain(|(s, _, _)| *s != shard);
        self.pending
            .retain(|_, q| q.front().is_none_or(|e| e.shard != shard));
        let snapshots = if why == Exit::Stopped {
            self.instances.drain_shard(shard)
        } else {
            Vec::new()
        };
        self.instances.forget_shard(shard);
        let journal = self.env.journal.clone();
        let exit = mb.exit.take();
        tokio::spawn(async move {
            for s in snapshots {
                save_snapshot(&journal, s).await;
            }
            if let Some(exit) = exit {
                let _ = exit.send(why);
            }
        });
    }

    /// Stopping shards whose read messages are all committed leave.
    fn finish_stopped(&mut self) {
        let done: Vec<Shard> = self
            .mailboxes
            .iter()
            .filter(|(_, mb)| {
                mb.stopping && mb.outstanding.is_empty() && !mb.in_commit && !mb.in_intake
            })
            .map(|(s, _)| *s)
            .collect();
        for shard in done {
            let busy = self
                .running
                .iter()
                .any(|k| self.env.journal.shard_of(k) == shard);
            if !busy {
                self.remove(shard, Exit::Stopped);
            }
        }
    }

    /// Passivates idle entities (on a timer, under any load) and keeps the cache under
    /// its cap.
    fn sweep(&mut self) {
        let config = &self.env.config;
        let cap = config.max_active_entities.max(1);
        let over = self.instances.len() + self.running.len() > cap;
        if !over && self.last_sweep.elapsed() < sweep_every(config) {
            return;
        }
        self.last_sweep = Instant::now();
        // Over the cap, make room for a while at once rather than one entity at a time.
        let room = if over { cap - cap / 20 } else { cap };
        let snapshots = self
            .instances
            .passivate(config.passivate_after, room, self.running.len());
        save_snapshots(&self.env.journal, snapshots);
        metrics::gauge!(m::ENTITIES_ACTIVE).set((self.instances.len() + self.running.len()) as f64);
    }
}

/// Records a shard's trouble (`Some(cause)`) or its end (`None`) when that changes.
fn trouble(
    troubles: &mpsc::UnboundedSender<(Shard, Option<(String, Timestamp)>)>,
    shard: Shard,
    mb: &mut Mailbox,
    cause: Option<&str>,
) {
    if mb.trouble.as_deref() == cause {
        return;
    }
    mb.trouble = cause.map(str::to_owned);
    let _ = troubles.send((shard, cause.map(|c| (c.to_owned(), Timestamp::now()))));
}

/// How often idle entities are looked for.
fn sweep_every(config: &Config) -> Duration {
    (config.passivate_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(10))
}

/// Awaits an optional task; pending forever when there is none.
async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// The failure reply that replaces a handled message's outcome when the journal refused
/// to store that outcome.
fn poisoned(p: &Processed, reason: &str, registry: &Registry) -> Processed {
    let version = registry
        .get(p.entity.entity_type())
        .map_or(1, |k| k.reply_version());
    handle::failure(
        &p.entity,
        p.message_id,
        p.offset,
        version,
        format!("the journal refused its outcome: {reason}"),
    )
}

fn save_snapshots(journal: &AnyJournal, snapshots: Vec<NewSnapshot>) {
    if snapshots.is_empty() {
        return;
    }
    let journal = journal.clone();
    tokio::spawn(async move {
        for s in snapshots {
            save_snapshot(&journal, s).await;
        }
    });
}

async fn save_snapshot(journal: &AnyJournal, s: NewSnapshot) {
    let entity = s.entity.clone();
    match journal.save_snapshot(s).await {
        Ok(()) => metrics::counter!(m::SNAPSHOTS_WRITTEN).increment(1),
        Err(e) => tracing::warn!(%entity, error = %e, "snapshot failed"),
    }
}
