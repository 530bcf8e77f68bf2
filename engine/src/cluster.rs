//! The cluster handle: build it with the entity types a process hosts, then send.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use entlog_journal::{AnyJournal, Journal, PgJournal, PgOptions, SqliteJournal, SqliteOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::appender::Appender;
use crate::config::Config;
use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::error::EngineError;
use crate::exporter;
use crate::metrics as m;
use crate::owner_check::OwnerChecks;
use crate::registry::Registry;
use crate::replies::ReplyFetch;
use crate::runner::{Hosted, InMemory, Owned, Runner};
use crate::singleton::{SingletonHost, Singletons};
use crate::waiters::Waiters;

/// A running cluster member: a client, and (unless client-only) a runner hosting entities.
///
/// ```
/// # use entlog_engine::{Context, Entity, Outcome, Rejection};
/// # struct Counter;
/// # impl Entity for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = u64; type Reply = u64; type State = u64;
/// #     async fn handle(&self, n: &u64, add: u64, _: &mut Context)
/// #         -> Result<Outcome<Self>, Rejection> { Ok(Outcome::new(vec![add], n + add)) }
/// #     fn apply(n: &mut u64, add: &u64) { *n += add; }
/// # }
/// # fn main() -> Result<(), entlog_engine::EngineError> {
/// # let dir = std::env::temp_dir().join(format!("entlog-doc-{}", uuid::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("app.db");
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use entlog_engine::{Cluster, Config};
///
/// // SQLite, one process; `.postgres(url)` for a cluster of runners.
/// let config = Config::default().shard_count(8);
/// let cluster = Cluster::builder()
///     .sqlite(&path)
///     .config(config.clone())
///     .entity(Counter)
///     .start()
///     .await?;
/// assert_eq!(cluster.entity::<Counter>("visits").ask(3).await?, 3);
/// // Finishes what is in flight, snapshots, releases its shards.
/// cluster.shutdown().await?;
///
/// // Started again (a journal keeps its shard count: the same config), the counter is
/// // rebuilt from the journal.
/// let cluster = Cluster::builder().sqlite(&path).config(config).entity(Counter).start().await?;
/// assert_eq!(cluster.entity::<Counter>("visits").ask(1).await?, 4);
/// cluster.shutdown().await?;
/// # Ok::<_, entlog_engine::EngineError>(())
/// # })?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

/// The member's parts, shared by its handles.
pub(crate) struct Inner {
    pub(crate) journal: AnyJournal,
    pub(crate) config: Arc<Config>,
    runner_id: String,
    pub(crate) waiters: Arc<Waiters>,
    /// Starts the reply fetchers of shards owned elsewhere.
    pub(crate) fetch: ReplyFetch,
    pub(crate) appender: Appender,
    owned: Owned,
    /// Answers "does this shard have a live owner?" for asks that waited long.
    pub(crate) owner_checks: OwnerChecks,
    in_memory: InMemory,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The runner task and the appender tasks, joined at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

enum Target {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
    Journal(AnyJournal),
}

/// Builds a [`Cluster`]: where the journal is, which entity types this process hosts.
pub struct ClusterBuilder {
    target: Option<Target>,
    config: Config,
    registry: Registry,
    projections: Vec<Arc<dyn entlog_projections::DynProjection>>,
    inline: Vec<Arc<dyn entlog_projections::DynProjection>>,
    /// Singletons and cron drivers (registered by `singleton.rs` and `cron.rs`).
    pub(crate) singletons: Singletons,
}

/// A cluster handle that does not keep the member alive: what its own runner holds, so
/// that dropping every [`Cluster`] still shuts the member down.
#[derive(Clone)]
pub(crate) struct WeakCluster(std::sync::Weak<Inner>);

impl WeakCluster {
    /// The member, if it still exists.
    pub(crate) fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(|inner| Cluster { inner })
    }
}

impl Cluster {
    /// Starts building a cluster member.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            target: None,
            config: Config::default(),
            registry: Registry::default(),
            projections: Vec::new(),
            inline: Vec::new(),
            singletons: Singletons::default(),
        }
    }

    /// A handle to send messages to entity `id` of type `E`.
    pub fn entity<E: Entity>(&self, id: &str) -> EntityRef<E> {
        EntityRef::new(self.clone(), id)
    }

    /// The journal underneath, for tools and queries.
    pub fn journal(&self) -> &AnyJournal {
        &self.inner.journal
    }

    /// This member's runner id.
    pub fn runner_id(&self) -> &str {
        &self.inner.runner_id
    }

    /// Shards this member's runner owns right now.
    pub fn owned_shards(&self) -> Vec<u32> {
        self.inner
            .owned
            .read()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Entities this member's runner holds in memory now (at most
    /// `Config::max_active_entities`, plus those being handled at this moment).
    pub fn entities_in_memory(&self) -> usize {
        self.inner
            .in_memory
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks of this member waiting for their replies right now. An ask that returned —
    /// replied, failed, timed out — or whose future was dropped is not counted.
    pub fn pending_asks(&self) -> usize {
        self.inner.waiters.len()
    }

    /// Reply queries this member made for asks whose shard another process owns, since it
    /// started. Each reads the replies of every such ask of one shard at once, after that
    /// shard's "replies committed" wake-up (or, lacking one, every second); local asks get
    /// their replies from this member's runner and cost none.
    pub fn reply_queries(&self) -> u64 {
        self.inner.fetch.queries.load(Ordering::Relaxed)
    }

    /// Graceful shutdown: stop taking work, finish in-flight batches, snapshot, release
    /// every shard so that other runners take over at once, and close the journal.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.journal.close().await;
        Ok(())
    }

    /// Waits for Ctrl-C or SIGTERM, then shuts down gracefully (for runner programs).
    pub async fn run_until_signal(&self) -> Result<(), EngineError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())
                .map_err(|e| EngineError::Config(format!("cannot watch SIGTERM: {e}")))?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        self.shutdown().await
    }
}

impl ClusterBuilder {
    /// An embedded journal in a SQLite file (one process owns it).
    pub fn sqlite(mut self, path: impl Into<PathBuf>) -> Self {
        self.target = Some(Target::Sqlite(path.into()));
        self
    }

    /// A PostgreSQL journal in the default schema `entlog`.
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Postgres {
            url: url.into(),
            schema: "entlog".into(),
        });
        self
    }

    /// A PostgreSQL journal in the given schema.
    pub fn postgres_schema(mut self, url: impl Into<String>, schema: impl Into<String>) -> Self {
        self.target = Some(Target::Postgres {
            url: url.into(),
            schema: schema.into(),
        });
        self
    }

    /// An already opened journal.
    pub fn journal(mut self, journal: impl Into<AnyJournal>) -> Self {
        self.target = Some(Target::Journal(journal.into()));
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Registers an entity type this member hosts.
    pub fn entity<E: Entity>(mut self, entity: E) -> Self {
        self.registry.register(entity);
        self
    }

    /// Registers a projection this member runs on the shards it owns.
    pub fn projection(mut self, projection: impl entlog_projections::Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    /// Registers an inline projection: its writes commit in the same transaction as the
    /// events they fold, so a read right after an ask sees them. A failing inline
    /// projection holds its shard's messages back until it succeeds.
    pub fn inline_projection(mut self, projection: impl entlog_projections::Projection) -> Self {
        self.inline.push(Arc::new(projection));
        self
    }

    /// Sends only: hosts no entities and owns no shards.
    pub fn client_only(mut self) -> Self {
        self.config.host_entities = false;
        self
    }

    /// Opens the journal and starts the runner.
    ///
    /// entlog reports trouble (a lost lock session, a retrying shard, a stopped
    /// projection) through `tracing`. With no subscriber installed in the process, it says
    /// so once on stderr, since those reports would otherwise reach nobody.
    pub async fn start(mut self) -> Result<Cluster, EngineError> {
        self.singletons.check()?;
        if !tracing::dispatcher::has_been_set() {
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| {
                eprintln!(
                    "entlog: no tracing subscriber is installed, so its warnings and errors are not logged \
                     (install one, e.g. tracing_subscriber::fmt().init())"
                );
            });
        }
        let config = self.config;
        let opened_here = !matches!(self.target, Some(Target::Journal(_)));
        let journal = match self.target {
            None => {
                return Err(EngineError::Config(
                    "no journal: call .sqlite(..) or .postgres(..)".into(),
                ));
            }
            Some(Target::Journal(j)) => j,
            Some(Target::Sqlite(path)) => SqliteJournal::open(
                SqliteOptions::new(path)
                    .shard_count(config.shard_count)
                    .shard_groups(config.shard_groups.clone()),
            )
            .await?
            .into(),
            Some(Target::Postgres { url, schema }) => PgJournal::open(
                PgOptions::new(url)
                    .schema(schema)
                    .shard_count(config.shard_count)
                    .shard_groups(config.shard_groups.clone()),
            )
            .await?
            .into(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Install the recorder (if any) first, so the descriptions below reach it.
        let exporter = match config.metrics_addr {
            Some(addr) => match exporter::serve(addr, shutdown_rx.clone()) {
                Ok(task) => Some(task),
                Err(e) => {
                    if opened_here {
                        journal.close().await;
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        m::describe();
        entlog_projections::metrics::describe();
        // Each type's shard group, checked against (and recorded in) the journal before
        // anything is sent or owned.
        for (entity_type, group) in self.registry.groups() {
            if let Err(e) = journal.record_group(entity_type, group).await {
                if opened_here {
                    journal.close().await;
                }
                return Err(e.into());
            }
        }
        let groups = self.registry.hosted_groups(journal.shard_map().layout());
        // The read models' tables, before any event is applied to them.
        for p in self.projections.iter().chain(&self.inline) {
            if let Err(e) = entlog_projections::set_up(&journal, p.as_ref()).await {
                if opened_here {
                    journal.close().await;
                }
                return Err(e.into());
            }
        }
        let runner_id = config
            .runner_id
            .clone()
            .unwrap_or_else(|| format!("runner-{}", Uuid::now_v7().simple()));
        let config = Arc::new(config);
        let waiters = Arc::new(Waiters::default());
        let owned: Owned = Arc::default();
        let in_memory: InMemory = Arc::default();
        // The runner's singletons get the cluster handle once it exists (below).
        let (member_tx, member_rx) = watch::channel(None);
        let runner = config.host_entities.then(|| {
            let runner = Runner::new(
                runner_id.clone(),
                journal.clone(),
                Hosted {
                    groups,
                    registry: Arc::new(self.registry),
                    projections: self.projections,
                    inline: self.inline,
                    singletons: SingletonHost::new(self.singletons, member_rx),
                },
                waiters.clone(),
                config.clone(),
                owned.clone(),
                in_memory.clone(),
            );
            tokio::spawn(runner.run(shutdown_rx.clone()))
        });
        let (appender, mut tasks) =
            Appender::start(journal.clone(), config.append_batch, shutdown_rx);
        tasks.extend(runner);
        tasks.extend(exporter);
        let fetch = ReplyFetch {
            journal: journal.clone(),
            waiters: waiters.clone(),
            owned: owned.clone(),
            queries: Arc::new(AtomicU64::new(0)),
        };
        let cluster = Cluster {
            inner: Arc::new(Inner {
                appender,
                journal,
                config,
                runner_id,
                waiters,
                fetch,
                owned,
                owner_checks: OwnerChecks::default(),
                in_memory,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        };
        member_tx.send_replace(Some(WeakCluster(Arc::downgrade(&cluster.inner))));
        Ok(cluster)
    }
}
