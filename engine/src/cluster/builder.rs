//! [`ClusterBuilder`]: where the journal is, what the member hosts (entity types,
//! projections, singletons, cron schedules, whose drivers `cron.rs` makes), and `start`,
//! which opens the journal and starts the member's tasks.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use entlog_journal::{
    AnyJournal, Journal, PgJournal, PgOptions, SqliteJournal, SqliteOptions, Timestamp,
};
use tokio::sync::watch;
use uuid::Uuid;

use super::Cluster;
use crate::appender::Appender;
use crate::client::{Client, Parts};
use crate::codec;
use crate::config::Config;
use crate::cron::{self, CronSchedule};
use crate::entity::Entity;
use crate::error::EngineError;
use crate::exporter;
use crate::metrics as m;
use crate::owned::Owned;
use crate::owner_check::OwnerChecks;
use crate::registry::Registry;
use crate::replies::ReplyFetch;
use crate::runner::{Hosted, InMemory, Runner};
use crate::singleton::{SingletonContext, SingletonHost, Singletons, TaskFn};
use crate::waiters::Waiters;

/// Where the journal is.
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
    /// Singletons and cron drivers.
    singletons: Singletons,
}

impl ClusterBuilder {
    /// A builder with nothing registered and the default configuration.
    pub(super) fn new() -> Self {
        ClusterBuilder {
            target: None,
            config: Config::default(),
            registry: Registry::default(),
            projections: Vec::new(),
            inline: Vec::new(),
            singletons: Singletons::default(),
        }
    }

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

    /// Registers a singleton: `task` runs on exactly one runner at a time, the owner of
    /// the shard of `name`, and is stopped, restarted and moved with that shard (see
    /// [`SingletonContext`] and the guarantees in the crate's README). Register it on
    /// every runner. Names must be unique and 1 to 255 bytes; `start` reports a bad one.
    pub fn singleton<F, Fut>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: Fn(SingletonContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task: TaskFn = Arc::new(move |ctx| Box::pin(task(ctx)));
        self.singletons.add(name.into(), task);
        self
    }

    /// Sends `command` to entity `id` of type `E` at every tick of `schedule`, once per
    /// tick (see the module docs of `cron`). Register it on every runner.
    pub fn cron_message<E: Entity>(
        self,
        schedule: CronSchedule,
        id: impl Into<String>,
        command: E::Command,
    ) -> Self {
        let driver = codec::command::<E>(&command)
            .map_err(EngineError::from)
            .and_then(|payload| {
                cron::message_driver::<E>(
                    schedule,
                    id.into(),
                    Box::new(move |_| Ok(payload.clone())),
                )
            });
        self.cron(driver)
    }

    /// Like [`cron_message`](Self::cron_message), with the command made from the tick's
    /// time (for example to tell the entity which period to close).
    pub fn cron_message_with<E, F>(
        self,
        schedule: CronSchedule,
        id: impl Into<String>,
        make: F,
    ) -> Self
    where
        E: Entity,
        F: Fn(Timestamp) -> E::Command + Send + Sync + 'static,
    {
        self.cron(cron::message_driver::<E>(
            schedule,
            id.into(),
            Box::new(move |tick| codec::command::<E>(&make(tick))),
        ))
    }

    /// Runs `task` at every tick of `schedule`, at most once per tick, on the runner that
    /// drives the schedule; it gets the tick's time. Ticks that come while it runs are
    /// coalesced into one run after it (runs never overlap). Register it on every runner.
    pub fn cron_task<F, Fut>(self, schedule: CronSchedule, task: F) -> Self
    where
        F: Fn(SingletonContext, Timestamp) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.cron(Ok(cron::task_driver(
            schedule,
            Box::new(move |ctx, tick| Box::pin(task(ctx, tick))),
        )))
    }

    /// Registers a schedule's driver, or the error that `start` reports.
    fn cron(mut self, driver: Result<(String, TaskFn), EngineError>) -> Self {
        match driver {
            Ok((name, task)) => self.singletons.add(name, task),
            Err(e) => self.singletons.error(e),
        }
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
        let (appender, mut tasks) =
            Appender::start(journal.clone(), config.append_batch, shutdown_rx.clone());
        let fetch = ReplyFetch {
            journal: journal.clone(),
            waiters: waiters.clone(),
            owned: owned.clone(),
            queries: Arc::new(AtomicU64::new(0)),
        };
        // The runner's own client (for its singletons) does not keep the member running.
        let client = Client::new(Parts {
            journal: journal.clone(),
            config: config.clone(),
            waiters: waiters.clone(),
            fetch,
            appender,
            owned: owned.clone(),
            owner_checks: OwnerChecks::default(),
            shutdown: shutdown_rx.clone(),
        });
        let runner = config.host_entities.then(|| {
            let runner = Runner::new(
                runner_id.clone(),
                journal,
                Hosted {
                    groups,
                    registry: Arc::new(self.registry),
                    projections: self.projections,
                    inline: self.inline,
                    singletons: SingletonHost::new(self.singletons, client.clone()),
                },
                waiters,
                config,
                owned,
                in_memory.clone(),
            );
            tokio::spawn(runner.run(shutdown_rx))
        });
        tasks.extend(runner);
        tasks.extend(exporter);
        Ok(Cluster::new(client, runner_id, in_memory, shutdown, tasks))
    }
}
