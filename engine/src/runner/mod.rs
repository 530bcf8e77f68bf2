//! A runner: owns shards through the journal's lock session and delivers their messages
//! through one pipeline.
//!
//! Every `rebalance_interval` the runner reads the live runners (those whose lock
//! connections are alive), computes its shards by rendezvous hashing, stops the shards it
//! should no longer own (the pipeline finishes what it read of them and snapshots, then
//! the lease is released so the new owner starts at once), and tries to acquire the
//! shards it should own. When the lock connection dies, the pipeline forgets every shard
//! at once — the runner no longer owns anything — and a new lock session is opened.
//! Nothing is aborted inside a transaction: the pipeline is told, never killed.

mod assign;
mod inline;
pub(crate) mod pipeline;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use entlog_journal::{AnyJournal, AnyLocks, Journal, Lease, ShardLocks};
use entlog_projections::{DynProjection, Projector};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics as m;
use crate::owned::Owned;
use crate::registry::Registry;
use crate::waiters::Waiters;
use pipeline::{Control, Exit, PipelineHandle};

/// How many entities this process's runner holds in memory, as last counted.
pub(crate) type InMemory = Arc<std::sync::atomic::AtomicUsize>;

/// What a runner hosts: entity types and projections (async and inline).
pub(crate) struct Hosted {
    /// The shard groups this runner may own shards of; `None`: every group.
    pub groups: Option<Vec<String>>,
    pub registry: Arc<Registry>,
    pub projections: Vec<Arc<dyn DynProjection>>,
    pub inline: Vec<Arc<dyn DynProjection>>,
    /// Singletons (and cron drivers), started on the shard their name falls in.
    pub singletons: crate::singleton::SingletonHost,
}

struct Worker {
    lease: Lease,
    /// Told to the shard's projectors and singletons.
    stop: watch::Sender<bool>,
    /// Whether the pipeline was told to stop the shard.
    stopping: bool,
    /// Learns when the pipeline has let go of the shard, and why.
    exit: oneshot::Receiver<Exit>,
    exited: Option<Exit>,
    /// One projector per registered projection, stopped with the shard.
    projectors: Vec<JoinHandle<()>>,
    /// Supervisors of the singletons on this shard: told to stop with the shard; the
    /// lease is released only once they have finished (no overlap on a graceful move).
    singletons: Vec<JoinHandle<()>>,
}

/// What ends one turn of a lock session's loop.
enum Next {
    Rebalance,
    Lost,
    Shutdown,
}

pub(crate) struct Runner {
    pub id: String,
    pub journal: AnyJournal,
    pub hosted: Hosted,
    pub waiters: Arc<Waiters>,
    pub config: Arc<Config>,
    pub owned: Owned,
    pub in_memory: InMemory,
    workers: HashMap<u32, Worker>,
    pipeline: Option<PipelineHandle>,
}

impl Runner {
    pub(crate) fn new(
        id: String,
        journal: AnyJournal,
        hosted: Hosted,
        waiters: Arc<Waiters>,
        config: Arc<Config>,
        owned: Owned,
        in_memory: InMemory,
    ) -> Self {
        Runner {
            id,
            journal,
            hosted,
            waiters,
            config,
            owned,
            in_memory,
            workers: HashMap::new(),
            pipeline: None,
        }
    }

    /// Says which entity types of the groups this runner hosts it cannot run: the journal
    /// records them (another runner registered them), so their messages may reach this
    /// runner's shards and fail as not registered.
    fn warn_unrunnable(&self) {
        let Some(groups) = &self.hosted.groups else {
            return;
        };
        let map = self.journal.shard_map();
        for group in groups {
            let missing: Vec<String> = map
                .types_in(group)
                .into_iter()
                .filter(|t| self.hosted.registry.get(t).is_none())
                .collect();
            if !missing.is_empty() {
                tracing::warn!(runner = %self.id, group, ?missing, "this runner hosts a shard group with entity types it does not register; their messages on its shards will fail as not registered");
            }
        }
    }

    /// Runs until `shutdown` turns true, then hands every shard over gracefully.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.warn_unrunnable();
        self.pipeline = Some(PipelineHandle::start(
            self.journal.clone(),
            self.hosted.registry.clone(),
            self.waiters.clone(),
            self.config.clone(),
            self.in_memory.clone(),
        ));
        self.run_sessions(&mut shutdown).await;
        if let Some(p) = self.pipeline.take() {
            p.finish().await;
        }
    }

    async fn run_sessions(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let open = metrics::gauge!(m::LOCK_SESSION_OPEN);
        let mut failures = 0u64;
        loop {
            open.set(0.0);
            if *shutdown.borrow() {
                return;
            }
            let hosting = self.hosted.groups.as_deref();
            let locks = match self.journal.lock_session_hosting(&self.id, hosting).await {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    metrics::counter!(m::LOCK_SESSION_FAILURES).increment(1);
                    // Every attempt at first, then every 20th (10 s): a runner that owns
                    // nothing must say so, without filling the log.
                    if failures <= 3 || failures.is_multiple_of(20) {
                        tracing::error!(runner = %self.id, error = %e, failures, "cannot open a lock session: this runner owns no shard; retrying every 500 ms");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            tracing::info!(runner = %self.id, after_failures = failures, "lock session open");
            failures = 0;
            open.set(1.0);
            loop {
                // Loss detection and shutdown never wait behind a rebalance: a rebalance
                // cut short leaves nothing behind that the session's end does not free.
                let next = tokio::select! {
                    biased;
                    _ = locks.lost() => Next::Lost,
                    _ = shutdown.changed() => Next::Shutdown,
                    _ = async {
                        self.rebalance(&locks).await;
                        tokio::time::sleep(self.config.rebalance_interval).await;
                    } => Next::Rebalance,
                };
                match next {
                    Next::Rebalance => {}
                    Next::Lost => {
                        tracing::warn!(runner = %self.id, "lock session lost: stopping every shard");
                        metrics::counter!(m::LOCK_SESSIONS_LOST).increment(1);
                        self.drop_all();
                        break;
                    }
                    Next::Shutdown => {
                        self.hand_over(locks).await;
                        return;
                    }
                }
            }
        }
    }

    fn publish_owned(&self) {
        if let Ok(mut o) = self.owned.write() {
            *o = self.workers.keys().copied().collect();
        }
        metrics::gauge!(m::SHARDS_OWNED).set(self.workers.len() as f64);
    }

    fn control(&self, c: Control) {
        if let Some(p) = &self.pipeline {
            p.send(c);
        }
    }

    /// The lock is lost: every shard is forgotten at once, nothing more is written.
    fn drop_all(&mut self) {
        let shards: Vec<u32> = self.workers.keys().copied().collect();
        for shard in shards {
            self.control(Control::Drop(shard));
        }
        for (_, w) in self.workers.drain() {
            // The shard is no longer ours: its singletons are aborted now, without a grace.
            for s in &w.singletons {
                s.abort();
            }
            // Projectors are told to stop, not aborted: a projector cut off inside a
            // transaction can hand its pooled connection back mid-transaction, where the
            // next user's statements would silently join it. A stale projector finishing
            // its step is harmless — its checkpoint compare-and-set fails.
            let _ = w.stop.send(true);
            drop(w.projectors);
        }
        self.publish_owned();
    }

    async fn rebalance(&mut self, locks: &AnyLocks) {
        // Reap shards the pipeline let go of: release their leases so others may take them.
        for w in self.workers.values_mut() {
            if w.exited.is_none() {
                match w.exit.try_recv() {
                    Ok(exit) => w.exited = Some(exit),
                    Err(oneshot::error::TryRecvError::Closed) => w.exited = Some(Exit::Dropped),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
            }
        }
        let finished: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.exited.is_some())
            .map(|(s, _)| *s)
            .collect();
        for shard in finished {
            if let Some(w) = self.workers.get(&shard) {
                // Singletons stop with the shard and may take up to their stop timeout:
                // keep the lease until they are done, without blocking this loop.
                let _ = w.stop.send(true);
                if !w.singletons.iter().all(|s| s.is_finished()) {
                    continue;
                }
            }
            if let Some(w) = self.workers.remove(&shard) {
                let _ = w.stop.send(true);
                for p in w.projectors {
                    let _ = p.await;
                }
                tracing::info!(runner = %self.id, shard, exit = ?w.exited, "shard left the pipeline");
                if let Err(e) = locks.release(w.lease).await {
                    tracing::warn!(runner = %self.id, shard, error = %e, "release failed");
                }
            }
        }

        let live = match self.journal.live_runners().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(runner = %self.id, error = %e, "cannot list live runners");
                return;
            }
        };
        metrics::gauge!(m::RUNNERS_LIVE).set(live.len() as f64);
        if !live.iter().any(|r| r.runner == self.id) {
            // Our registration is not visible yet (or was lost): own nothing new.
            self.publish_owned();
            return;
        }
        let journal = self.journal.clone();
        let candidates = assign::Candidates::new(&live, journal.shard_map().layout());
        for shard in 0..journal.shard_count() {
            let mine = candidates.owner(shard) == Some(self.id.as_str());
            match (mine, self.workers.get_mut(&shard)) {
                (false, Some(w)) if !w.stopping => {
                    w.stopping = true;
                    if let Some(p) = &self.pipeline {
                        p.send(Control::Stop(shard));
                    }
                }
                (true, None) => match locks.try_acquire(shard).await {
                    Ok(Some(lease)) => self.spawn(lease),
                    Ok(None) => {} // the previous owner has not released it yet
                    Err(e) => {
                        tracing::warn!(runner = %self.id, shard, error = %e, "acquire failed");
                        break;
                    }
                },
                _ => {}
            }
        }
        self.publish_owned();
    }

    fn spawn(&mut self, lease: Lease) {
        let (stop, _) = watch::channel(false);
        let (exit_tx, exit) = oneshot::channel();
        self.control(Control::Add {
            lease,
            inline: inline::Inline::new(lease.shard, &self.hosted.inline),
            exit: exit_tx,
        });
        let projectors = self
            .hosted
            .projections
            .iter()
            .map(|p| {
                let projector = Projector::new(
                    self.journal.clone(),
                    p.clone(),
                    lease.shard,
                    self.config.batch_size,
                );
                tokio::spawn(projector.run(stop.subscribe(), self.config.poll_interval))
            })
            .collect();
        let singletons =
            self.hosted
                .singletons
                .start(lease.shard, &self.id, &self.journal, &self.config, &stop);
        self.workers.insert(
            lease.shard,
            Worker {
                lease,
                stop,
                stopping: false,
                exit,
                exited: None,
                projectors,
                singletons,
            },
        );
    }

    /// Graceful shutdown: stop intake, let each shard finish its batch and snapshot,
    /// release every lease and close the session.
    async fn hand_over(&mut self, locks: AnyLocks) {
        for (shard, w) in &mut self.workers {
            let _ = w.stop.send(true);
            if !w.stopping {
                w.stopping = true;
                if let Some(p) = &self.pipeline {
                    p.send(Control::Stop(*shard));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        // Singletons first (each aborts its task after its own stop timeout), and at once
        // if the lock session is lost meanwhile: another runner may own them already.
        let singletons: Vec<_> = self
            .workers
            .values_mut()
            .flat_map(|w| w.singletons.drain(..))
            .collect();
        let aborts: Vec<_> = singletons.iter().map(|s| s.abort_handle()).collect();
        tokio::select! {
            _ = futures_util::future::join_all(singletons) => {}
            _ = locks.lost() => aborts.iter().for_each(|a| a.abort()),
            _ = tokio::time::sleep_until(deadline) => aborts.iter().for_each(|a| a.abort()),
        }
        let workers: Vec<(u32, Worker)> = self.workers.drain().collect();
        for (shard, w) in workers {
            for p in w.projectors {
                let abort = p.abort_handle();
                if tokio::time::timeout_at(deadline, p).await.is_err() {
                    abort.abort();
                }
            }
            let exit = match w.exited {
                Some(exit) => Ok(Ok(exit)),
                None => tokio::time::timeout_at(deadline, w.exit).await,
            };
            match exit {
                Ok(Ok(exit)) => {
                    tracing::info!(runner = %self.id, shard, ?exit, "shard handed over")
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    // Its lease is released below all the same: a late commit of this
                    // runner is then fenced by the next owner's epoch.
                    self.control(Control::Drop(shard));
                    tracing::warn!(runner = %self.id, shard, "shard did not stop in time; dropped");
                }
            }
        }
        self.publish_owned();
        if let Err(e) = locks.close().await {
            tracing::warn!(runner = %self.id, error = %e, "closing the lock session failed");
        }
    }
}
