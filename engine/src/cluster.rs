//! The cluster handle: build it with the entity types a process hosts, then send.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entlog_journal::{
    AnyJournal, AppendOutcome, EntityKey, Journal, NewMessage, PgJournal, PgOptions, SqliteJournal,
    SqliteOptions, Timestamp,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::appender::Appender;
use crate::codec;
use crate::config::Config;
use crate::entity::Entity;
use crate::error::EngineError;
use crate::exporter;
use crate::metrics as m;
use crate::owner_check::OwnerChecks;
use crate::registry::Registry;
use crate::replies::ReplyFetch;
use crate::runner::pipeline::MAILBOX;
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
/// let config = Config { shard_count: 8, ..Config::default() };
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
    inner: Arc<Inner>,
}

struct Inner {
    journal: AnyJournal,
    config: Arc<Config>,
    runner_id: String,
    waiters: Arc<Waiters>,
    /// Starts the reply fetchers of shards owned elsewhere.
    fetch: ReplyFetch,
    appender: Appender,
    owned: Owned,
    /// Answers "does this shard have a live owner?" for asks that waited long.
    owner_checks: OwnerChecks,
    in_memory: InMemory,
    shutdown: watch::Sender<bool>,
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
        EntityRef {
            cluster: self.clone(),
            id: id.to_owned(),
            _entity: PhantomData,
        }
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
            Some(Target::Sqlite(path)) => {
                SqliteJournal::open(SqliteOptions::new(path).shard_count(config.shard_count))
                    .await?
                    .into()
            }
            Some(Target::Postgres { url, schema }) => PgJournal::open(
                PgOptions::new(url)
                    .schema(schema)
                    .shard_count(config.shard_count),
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

/// A handle on one entity: `ask`, `tell` and their idempotent forms, `state` without a
/// message. Cheap to clone.
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
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let cluster = entlog_engine::Cluster::builder().sqlite(dir.join("app.db"))
/// #     .entity(Counter).start().await?;
/// use std::time::Duration;
/// use entlog_engine::EngineError;
///
/// let counter = cluster.entity::<Counter>("c-1");
/// assert_eq!(counter.ask(5).await?, 5);
///
/// // The same id twice: executed once, the second send gets the stored reply.
/// let id = uuid::Uuid::now_v7();
/// assert_eq!(counter.ask_with_id(id, 10).await?, 15);
/// assert_eq!(counter.ask_with_id(id, 10).await?, 15);
///
/// counter.tell(1).await?;                                 // durable, no reply awaited
/// counter.tell_after(Duration::from_secs(3600), 1).await?; // a durable timer
///
/// // The state read from the journal, with no message journaled.
/// let answered = counter.ask(0).await?;
/// let (seq, state) = counter.state().await?;
/// assert_eq!((seq, state), (4, answered));
///
/// // What to retry: a timeout, no runner, a full mailbox, a passing database error.
/// match counter.ask(1).await {
///     Err(e) if e.is_retryable() => { /* try again later, with ask_with_id */ }
///     Err(e) => return Err(e),
///     Ok(n) => assert_eq!(n, 17),
/// }
/// # cluster.shutdown().await?;
/// # Ok::<_, EngineError>(())
/// # })?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct EntityRef<E: Entity> {
    cluster: Cluster,
    id: String,
    _entity: PhantomData<fn() -> E>,
}

impl<E: Entity> Clone for EntityRef<E> {
    fn clone(&self) -> Self {
        EntityRef {
            cluster: self.cluster.clone(),
            id: self.id.clone(),
            _entity: PhantomData,
        }
    }
}

impl<E: Entity> EntityRef<E> {
    /// The entity's address; an empty or oversized id is a typed journal error.
    pub(crate) fn key(&self) -> Result<EntityKey, EngineError> {
        Ok(EntityKey::new(E::TYPE, self.id.as_str())?)
    }

    /// The cluster this reference sends through.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn message(
        &self,
        id: Uuid,
        command: &E::Command,
        at: Option<Timestamp>,
    ) -> Result<NewMessage, EngineError> {
        Ok(NewMessage {
            entity: self.key()?,
            message_id: id,
            payload: codec::command::<E>(command)?,
            deliver_at: at,
        })
    }

    async fn append(&self, message: NewMessage) -> Result<AppendOutcome, EngineError> {
        if *self.cluster.inner.shutdown.borrow() {
            return Err(EngineError::ShutDown);
        }
        self.check_mailbox(&message.entity).await?;
        let outcome = self.cluster.inner.appender.append(message).await?;
        match &outcome {
            AppendOutcome::Duplicate { .. } => {
                metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1)
            }
            _ => metrics::counter!(m::MESSAGES_APPENDED).increment(1),
        }
        Ok(outcome)
    }

    /// Refuses a send to an entity with its capacity of unanswered messages (when one is
    /// set: `Entity::MAILBOX_CAPACITY`, else `Config::mailbox_capacity`).
    async fn check_mailbox(&self, entity: &EntityKey) -> Result<(), EngineError> {
        let inner = &self.cluster.inner;
        let Some(capacity) = E::MAILBOX_CAPACITY.or(inner.config.mailbox_capacity) else {
            return Ok(());
        };
        let waiting = inner
            .journal
            .unanswered(entity, MAILBOX, u64::from(capacity))
            .await?;
        if waiting < u64::from(capacity) {
            return Ok(());
        }
        metrics::counter!(m::MAILBOX_FULL).increment(1);
        Err(EngineError::MailboxFull {
            entity: entity.to_string(),
            capacity,
        })
    }

    /// Sends a command and waits for the reply (at most `ask_timeout`).
    pub async fn ask(&self, command: E::Command) -> Result<E::Reply, EngineError> {
        self.ask_with_id(Uuid::now_v7(), command).await
    }

    /// Sends a command under a caller-chosen id: sending the same id again never
    /// executes it twice, and returns the stored reply (waiting for it if needed).
    ///
    /// The reply is matched by this entity and `id` (the same id asked of another entity
    /// at the same time gets that entity's reply), and its type tag is checked before it
    /// is decoded ([`EngineError::ReplyType`]). When this member's runner owns the entity's
    /// shard, the reply comes from it directly; otherwise from the replies table, read when
    /// the shard announces committed replies (see `replies.rs`), never by polling per ask.
    /// Dropping the returned future unregisters the wait.
    pub async fn ask_with_id(
        &self,
        id: Uuid,
        command: E::Command,
    ) -> Result<E::Reply, EngineError> {
        let message = self.message(id, &command, None)?;
        let span = tracing::info_span!("ask", entity = %message.entity, message_id = %id);
        self.ask_message(id, message).instrument(span).await
    }

    /// Appends `message` and waits for its reply (the body of [`ask_with_id`]).
    ///
    /// [`ask_with_id`]: Self::ask_with_id
    async fn ask_message(&self, id: Uuid, message: NewMessage) -> Result<E::Reply, EngineError> {
        let inner = &self.cluster.inner;
        let shard = inner.journal.shard_of(&message.entity);
        // Registered before the append, so that no reply can commit unseen in between.
        let (mut wait, start_fetcher) = inner.waiters.register(message.entity.clone(), id, shard);
        if start_fetcher {
            inner.fetch.spawn(shard);
        }
        match self.append(message).await? {
            AppendOutcome::Duplicate {
                reply: Some(reply), ..
            } => return codec::decode_reply::<E>(id, &reply.payload),
            AppendOutcome::Appended { .. }
            | AppendOutcome::Scheduled { .. }
            | AppendOutcome::Duplicate { .. } => {}
        }
        let start = tokio::time::Instant::now();
        let deadline = start + inner.config.ask_timeout;
        let mut check = start + inner.config.unavailable_after;
        let reply = wait.reply();
        tokio::pin!(reply);
        loop {
            tokio::select! {
                got = &mut reply => return match got {
                    Some(reply) => codec::decode_reply::<E>(id, &reply),
                    None => Err(EngineError::ShutDown),
                },
                _ = tokio::time::sleep_until(deadline.min(check)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Timeout { message_id: id });
            }
            // Slow, or nobody there? Only a shard no live runner holds fails early; a
            // check that cannot be made (the database is unreachable) leaves the ask
            // waiting for its reply or its timeout, as before.
            let owned = inner.owner_checks.has_owner(&inner.journal, shard).await;
            if let Err(e) = &owned {
                tracing::debug!(shard, error = %e, "cannot check the shard's owner; still waiting");
            }
            if owned.is_ok_and(|owned| !owned) {
                metrics::counter!(m::RUNNER_UNAVAILABLE).increment(1);
                return Err(EngineError::RunnerUnavailable {
                    shard,
                    message_id: id,
                    waited: start.elapsed(),
                });
            }
            check += inner.config.unavailable_after;
        }
    }

    /// Sends a command durably without waiting for its reply; returns its id.
    pub async fn tell(&self, command: E::Command) -> Result<Uuid, EngineError> {
        let id = Uuid::now_v7();
        self.append(self.message(id, &command, None)?).await?;
        Ok(id)
    }

    /// Sends a command to be delivered at `at` (at once if `at` is not in the future);
    /// returns its id. The message is durable on return, survives restarts and failover,
    /// and is delivered once, not before `at`.
    pub async fn tell_at(&self, at: Timestamp, command: E::Command) -> Result<Uuid, EngineError> {
        let id = Uuid::now_v7();
        self.tell_at_with_id(id, at, command).await?;
        Ok(id)
    }

    /// Sends a command to be delivered `after` from now; returns its id.
    pub async fn tell_after(
        &self,
        after: Duration,
        command: E::Command,
    ) -> Result<Uuid, EngineError> {
        let at = self.cluster.journal().now().after(after);
        self.tell_at(at, command).await
    }

    /// [`tell_at`](Self::tell_at) under a caller-chosen id: re-sending an id that is
    /// scheduled, or was delivered, writes nothing (`Duplicate`). An id that was cancelled
    /// is forgotten, so sending it again schedules it anew (cancel + re-send moves a timer).
    pub async fn tell_at_with_id(
        &self,
        id: Uuid,
        at: Timestamp,
        command: E::Command,
    ) -> Result<AppendOutcome, EngineError> {
        self.append(self.message(id, &command, Some(at))?).await
    }

    /// Cancels a scheduled message. `Ok(true)`: it was still scheduled and will never be
    /// delivered. `Ok(false)`: the entity has no scheduled message with this id — unknown,
    /// cancelled already, or already due and moved to the entity's mailbox, in which case
    /// it is delivered once as usual.
    pub async fn cancel(&self, message_id: Uuid) -> Result<bool, EngineError> {
        if *self.cluster.inner.shutdown.borrow() {
            return Err(EngineError::ShutDown);
        }
        let key = self.key()?;
        Ok(self
            .cluster
            .inner
            .journal
            .cancel_scheduled(&key, message_id)
            .await?)
    }

    /// The stored reply to an earlier message, if it was processed.
    pub async fn reply_to(&self, id: Uuid) -> Result<Option<E::Reply>, EngineError> {
        let key = self.key()?;
        match self.cluster.inner.journal.reply(&key, id).await? {
            Some(r) => codec::decode_reply::<E>(id, &r.payload).map(Some),
            None => Ok(None),
        }
    }
}
