//! Singletons: one long-running task per cluster, run by the runner that owns its shard.
//!
//! A singleton is a named task registered on every runner with
//! [`ClusterBuilder::singleton`](crate::ClusterBuilder::singleton) (like an entity type: a runner that did not register it
//! does not run it, even when it owns its shard). Its name picks a shard of the default
//! shard group (see [`entlog_journal::shard_groups`]; with no named group,
//! [`shard_of`](entlog_journal::shard_of)`(name, shard_count)`), and the runner that owns
//! that shard runs it:
//!
//! - **Start.** When a runner acquires the shard, it starts the task with a
//!   [`SingletonContext`]: a stop signal, and a [`Client`] to send messages with.
//! - **Graceful stop.** When the shard moves to another runner (one joined) or the runner
//!   shuts down, the task gets its stop signal and has `Config::singleton_stop_timeout`
//!   (5 s) to return; then it is aborted. The run is recorded as stopped cleanly, and only
//!   then is the shard's lock released: the next owner starts it at once, and the two
//!   never overlap.
//! - **Restart.** A task that returns or panics while its shard is still owned is started
//!   again after `Config::singleton_restart_backoff` (1 s, doubling up to a minute).
//! - **Failover.** When a runner dies, the server frees its locks, another runner acquires
//!   the shard within `rebalance_interval` and starts the task.
//!
//! # At most one owner, and when two copies can overlap
//!
//! The owner is whoever holds the shard's advisory lock, so there is at most one owner at
//! a time. A *task* can still outlive its ownership for a moment: when a runner's lock
//! connection dies, the server frees its locks, while the runner notices at its next
//! heartbeat — at once when the connection was closed, or within the journal's
//! `Liveness::self_detection` (1.75 s by default) when it went silent — and then aborts
//! its singletons without waiting. To cover that window, a new owner that finds the
//! previous run not stopped cleanly (it records starts and clean stops in the
//! `singletons` table) waits `Liveness::takeover_grace` (1.5 × the detection time,
//! 2.6 s by default) before starting. A runner that merely stalls or is cut off keeps its
//! locks until the server ends its silent session (`Liveness::session_timeout`, 3 s), by
//! which time it has stopped writing on its own side. Copies overlap only if the old
//! runner takes longer than the grace to notice and abort — a process stalled between
//! its last heartbeat and its next `.await`, or a task that never reaches an `.await`
//! (abort takes effect there). A task whose side effects must never be doubled
//! needs its own fencing on top — deterministic message ids (the journal drops a repeated
//! id, which is how [cron](crate::CronSchedule) fires once per tick), or a
//! compare-and-set on a row.
//!
//! Failover takes the time the server needs to notice the runner is gone (at once when
//! the process died or the connection was closed; `session_timeout`, 3 s, when it went
//! silent), then up to `rebalance_interval` (250 ms), then the takeover grace (2.6 s).
//! On SQLite one process owns every shard and runs every singleton.
//!
//! ```no_run
//! # async fn demo() -> Result<(), entlog_engine::EngineError> {
//! use entlog_engine::Cluster;
//! use std::time::Duration;
//!
//! let cluster = Cluster::builder()
//!     .postgres("postgres://app@db/app")
//!     .singleton("reaper", |ctx| async move {
//!         // Runs on one runner at a time until told to stop.
//!         while !ctx.sleep(Duration::from_secs(10)).await {
//!             // ... look for expired carts and tell them to close ...
//!         }
//!     })
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{AnyJournal, DEFAULT_GROUP, Journal, JournalError, MAX_NAME_BYTES, sql};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::client::Client;
use crate::config::Config;
use crate::error::EngineError;

/// A boxed, sendable future of a singleton's run.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A singleton's task, as registered.
pub(crate) type TaskFn = Arc<dyn Fn(SingletonContext) -> BoxFuture + Send + Sync>;

/// Longest pause between restarts of a singleton that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A run at least this long counts as healthy: the next failure starts the back-off over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a running singleton is given: its name, a client to send with, the runner it
/// runs on and its stop signal.
///
/// The task should return soon after [`stopped`](Self::stopped) resolves (or
/// [`is_stopping`](Self::is_stopping) turns true); it is aborted after
/// `Config::singleton_stop_timeout`. The [`Client`] does not keep the member alive:
/// dropping every [`Cluster`](crate::Cluster) handle shuts the member down, and stops its
/// singletons, as [`Cluster::shutdown`](crate::Cluster::shutdown) does.
#[derive(Clone)]
pub struct SingletonContext {
    name: Arc<str>,
    client: Client,
    runner: Arc<str>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for SingletonContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonContext")
            .field("name", &self.name)
            .field("runner", &self.runner)
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

impl SingletonContext {
    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client of the member running the singleton, to send messages to entities.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The id of the runner running the singleton.
    pub fn runner_id(&self) -> &str {
        &self.runner
    }

    /// Whether the singleton was asked to stop (its shard moves, or the runner stops).
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the singleton is asked to stop.
    pub async fn stopped(&self) {
        stopped(self.stop.clone()).await
    }

    /// Sleeps for `d`, or less if asked to stop first; returns whether it was asked to stop.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_stopping(),
            _ = self.stopped() => true,
        }
    }

    /// A receiver of the stop signal (true once asked to stop), to pass to other tasks.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }
}

/// One registered singleton.
pub(crate) struct Spec {
    pub name: String,
    pub task: TaskFn,
}

/// The singletons registered with a builder, and any registration error (reported by
/// `start`).
#[derive(Default)]
pub(crate) struct Singletons {
    specs: Vec<Arc<Spec>>,
    errors: Vec<EngineError>,
}

impl Singletons {
    /// Registers a singleton (`ClusterBuilder::singleton`, and cron's drivers).
    pub(crate) fn add(&mut self, name: String, task: TaskFn) {
        self.specs.push(Arc::new(Spec { name, task }));
    }

    /// Records a registration error, for `start` to report.
    pub(crate) fn error(&mut self, e: EngineError) {
        self.errors.push(e);
    }

    /// The first registration error: a bad or repeated name, or one recorded by `error`.
    pub(crate) fn check(&mut self) -> Result<(), EngineError> {
        if !self.errors.is_empty() {
            return Err(self.errors.remove(0));
        }
        let mut seen = HashSet::new();
        for spec in &self.specs {
            if spec.name.is_empty() || spec.name.len() > MAX_NAME_BYTES {
                return Err(EngineError::Config(format!(
                    "singleton name {:?} must be 1 to {MAX_NAME_BYTES} bytes",
                    spec.name
                )));
            }
            if !seen.insert(spec.name.as_str()) {
                return Err(EngineError::Config(format!(
                    "singleton {:?} is registered twice",
                    spec.name
                )));
            }
        }
        Ok(())
    }
}

/// The runner's side: starts the singletons of each shard it acquires.
pub(crate) struct SingletonHost {
    specs: Vec<Arc<Spec>>,
    /// The member's client, which does not keep it alive.
    client: Client,
}

impl SingletonHost {
    /// A host for `singletons`, which send through `client`.
    pub(crate) fn new(singletons: Singletons, client: Client) -> Self {
        SingletonHost {
            specs: singletons.specs,
            client,
        }
    }

    /// Starts a supervisor for each singleton whose name falls in `shard`. Each one stops
    /// (gracefully) when `stop` turns true, and aborts its task when it is aborted itself.
    pub(crate) fn start(
        &self,
        shard: u32,
        runner: &str,
        journal: &AnyJournal,
        config: &Arc<Config>,
        stop: &watch::Sender<bool>,
    ) -> Vec<JoinHandle<()>> {
        let layout = journal.shard_map().layout();
        self.specs
            .iter()
            .filter(|s| layout.shard_in(DEFAULT_GROUP, &s.name) == shard)
            .map(|spec| {
                let supervisor = Supervisor {
                    spec: spec.clone(),
                    runner: runner.to_owned(),
                    journal: journal.clone(),
                    config: config.clone(),
                    client: self.client.clone(),
                    stop: stop.subscribe(),
                };
                tokio::spawn(supervisor.run())
            })
            .collect()
    }
}

/// Aborts a task when dropped: a supervisor aborted by its runner takes its task along.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one singleton on one owned shard: waits out an unclean previous run, starts the
/// task, restarts it after failures, stops it when told to.
struct Supervisor {
    spec: Arc<Spec>,
    runner: String,
    journal: AnyJournal,
    config: Arc<Config>,
    client: Client,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    async fn run(self) {
        let name = self.spec.name.clone();
        // The previous run must be over before this one starts. A run that was not
        // stopped cleanly may still be going on a runner that has not yet noticed it lost
        // its lock: give it the grace to notice.
        let unclean = match previous_run(&self.journal, &name).await {
            Ok(Some((runner, running))) => running && runner != self.runner,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(singleton = %name, error = %e, "cannot read the previous run; assuming it did not stop cleanly");
                true
            }
        };
        if unclean {
            let grace = self.journal.liveness().takeover_grace();
            tracing::info!(singleton = %name, ?grace,
                "previous run did not stop cleanly; waiting out the takeover grace");
            if self.sleep_or_stop(grace).await {
                return;
            }
        }
        if *self.stop.borrow() {
            return;
        }
        if let Err(e) = mark_started(&self.journal, &name, &self.runner).await {
            tracing::warn!(singleton = %name, error = %e, "cannot record the start");
        }
        tracing::info!(singleton = %name, runner = %self.runner, "singleton started");
        let running =
            metrics::gauge!(crate::metrics::SINGLETON_RUNNING, "singleton" => name.clone());
        running.set(1.0);
        let base = self.config.singleton_restart_backoff;
        let mut backoff = base;
        loop {
            let ctx = SingletonContext {
                name: Arc::from(name.as_str()),
                client: self.client.clone(),
                runner: Arc::from(self.runner.as_str()),
                stop: self.stop.clone(),
            };
            let began = Instant::now();
            let mut task = tokio::spawn((self.spec.task)(ctx));
            let _abort = AbortOnDrop(task.abort_handle());
            tokio::select! {
                ended = &mut task => {
                    if *self.stop.borrow() {
                        break;
                    }
                    if began.elapsed() >= HEALTHY_RUN {
                        backoff = base;
                    }
                    match ended {
                        Ok(()) => tracing::warn!(singleton = %name, ?backoff,
                            "singleton returned while its shard is still owned; restarting"),
                        Err(e) => tracing::error!(singleton = %name, error = %e, ?backoff,
                            "singleton failed; restarting"),
                    }
                    if self.sleep_or_stop(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF).max(base);
                }
                _ = stopped(self.stop.clone()) => {
                    let abort = task.abort_handle();
                    if tokio::time::timeout(self.config.singleton_stop_timeout, &mut task)
                        .await
                        .is_err()
                    {
                        abort.abort();
                        tracing::warn!(singleton = %name, "singleton did not stop in time; aborted");
                    }
                    break;
                }
            }
        }
        running.set(0.0);
        if let Err(e) = mark_stopped(&self.journal, &name, &self.runner).await {
            tracing::warn!(singleton = %name, error = %e, "cannot record the clean stop");
        }
        tracing::info!(singleton = %name, runner = %self.runner, "singleton stopped");
    }

    /// Sleeps, or returns `true` early if asked to stop.
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.stop.borrow(),
            _ = stopped(self.stop.clone()) => true,
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone, which is a stop too).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The runner that last started singleton `name`, and whether that run is still marked
/// running (not stopped cleanly).
async fn previous_run(
    journal: &AnyJournal,
    name: &str,
) -> Result<Option<(String, bool)>, JournalError> {
    journal
        .fetch_optional(sql("SELECT runner, running FROM singletons WHERE name = $1").bind(name))
        .await?
        .map(|r| Ok((r.get(0)?, r.get(1)?)))
        .transpose()
}

async fn mark_started(journal: &AnyJournal, name: &str, runner: &str) -> Result<(), JournalError> {
    journal
        .execute(
            sql("INSERT INTO singletons (name, runner, running, started_at) VALUES ($1, $2, TRUE, $3)
                 ON CONFLICT (name) DO UPDATE
                   SET runner = $2, running = TRUE, started_at = $3, stopped_at = NULL")
            .bind(name)
            .bind(runner)
            .bind(journal.now().as_micros()),
        )
        .await?;
    Ok(())
}

/// Marks this runner's run stopped cleanly; a later run by another runner is left alone.
async fn mark_stopped(journal: &AnyJournal, name: &str, runner: &str) -> Result<(), JournalError> {
    journal
        .execute(
            sql("UPDATE singletons SET running = FALSE, stopped_at = $3 WHERE name = $1 AND runner = $2")
                .bind(name)
                .bind(runner)
                .bind(journal.now().as_micros()),
        )
        .await?;
    Ok(())
}
