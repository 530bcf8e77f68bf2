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
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the task's loop, shards coming and going, passivation |
//! | `mailbox.rs` | one shard's delivery state |
//! | `intake.rs` | the intake round (cursors, schedule, one mailbox read) and its stage |
//! | `handle.rs` | a run of one entity — where handlers are called — and its stage |
//! | `commit.rs` | the group commit and its stage (cursors, replies, resets) |
//! | `instances.rs` | entities in memory, under a cap |

mod commit;
mod handle;
mod instances;
mod intake;
mod mailbox;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, EntityKey, Entry, Journal, Lease, NewSnapshot, Processed, Shard, Timestamp,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::inline::Inline;
use crate::config::Config;
use crate::metrics as m;
use crate::registry::Registry;
use crate::waiters::Waiters;
use commit::PartDone;
use handle::{Env, RunDone};
use instances::Instances;
use intake::Got;
use mailbox::{InFlight, Mailbox};

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
        let now = self.env.journal.now();
        let shortest = self
            .env
            .registry
            .shortest_passivation(config.passivate_after);
        let mut at = self.last_sweep + sweep_every(shortest);
        for mb in self.mailboxes.values() {
            if !mb.in_intake && !mb.stopping {
                at = at.min(mb.deadline(config, now));
            }
        }
        for t in self.delayed.values() {
            at = at.min(*t);
        }
        at.max(Instant::now() + Duration::from_micros(200))
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
        let shortest = self
            .env
            .registry
            .shortest_passivation(config.passivate_after);
        if !over && self.last_sweep.elapsed() < sweep_every(shortest) {
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

/// How often idle entities are looked for, given the shortest idle time of any type.
fn sweep_every(passivate_after: Duration) -> Duration {
    (passivate_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(10))
}

/// Awaits an optional task; pending forever when there is none.
async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
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
