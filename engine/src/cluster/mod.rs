//! The cluster member: its [`Client`] (the sending half) and what only the member owns —
//! its runner and appender tasks, its shutdown sender, its runner id, its in-memory count.
//! [`ClusterBuilder`] (in `builder.rs`) opens the journal and starts it.

mod builder;

use std::sync::{Arc, Mutex};

use entlog_journal::AnyJournal;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::error::EngineError;
use crate::runner::InMemory;

pub use builder::ClusterBuilder;

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
    /// The sending half; it keeps `member` alive.
    client: Client,
    member: Arc<Member>,
}

/// What only the member owns, shared by its handles. Dropping the last one drops the
/// shutdown sender, which stops the runner and the appenders as a shutdown does.
struct Member {
    runner_id: String,
    in_memory: InMemory,
    shutdown: watch::Sender<bool>,
    /// The runner task and the appender tasks, joined at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Starts building a cluster member.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The member made of `client`'s parts and `tasks`; its handles keep it running.
    fn new(
        client: Client,
        runner_id: String,
        in_memory: InMemory,
        shutdown: watch::Sender<bool>,
        tasks: Vec<JoinHandle<()>>,
    ) -> Self {
        let member = Arc::new(Member {
            runner_id,
            in_memory,
            shutdown,
            tasks: Mutex::new(tasks),
        });
        Cluster {
            client: client.keeping(member.clone()),
            member,
        }
    }

    /// The sending half of this member, to hand to code that only sends. Like this
    /// handle, it keeps the member running.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle to send messages to entity `id` of type `E`.
    pub fn entity<E: Entity>(&self, id: &str) -> EntityRef<E> {
        self.client.entity(id)
    }

    /// The journal underneath, for tools and queries.
    pub fn journal(&self) -> &AnyJournal {
        self.client.journal()
    }

    /// This member's runner id.
    pub fn runner_id(&self) -> &str {
        &self.member.runner_id
    }

    /// Shards this member's runner owns right now.
    pub fn owned_shards(&self) -> Vec<u32> {
        self.client.owned_shards()
    }

    /// Entities this member's runner holds in memory now (at most
    /// `Config::max_active_entities`, plus those being handled at this moment).
    pub fn entities_in_memory(&self) -> usize {
        self.member
            .in_memory
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks of this member waiting for their replies right now. An ask that returned —
    /// replied, failed, timed out — or whose future was dropped is not counted.
    pub fn pending_asks(&self) -> usize {
        self.client.pending_asks()
    }

    /// Reply queries this member made for asks whose shard another process owns, since it
    /// started. Each reads the replies of every such ask of one shard at once, after that
    /// shard's "replies committed" wake-up (or, lacking one, every second); local asks get
    /// their replies from this member's runner and cost none.
    pub fn reply_queries(&self) -> u64 {
        self.client.reply_queries()
    }

    /// Graceful shutdown: stop taking work, finish in-flight batches, snapshot, release
    /// every shard so that other runners take over at once, and close the journal.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.member.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = self
            .member
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        self.client.journal().close().await;
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
