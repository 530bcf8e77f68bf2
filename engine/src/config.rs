//! Every knob of a cluster, with its default and why.

use std::net::SocketAddr;
use std::time::Duration;

/// Cluster configuration. `Config::default()` is a good start; each field says what it
/// trades.
///
/// ```
/// use std::time::Duration;
/// use entlog_engine::Config;
///
/// let config = Config::default()
///     .shard_count(16)                         // a small cluster: bigger commit batches
///     .handler_timeout(Duration::from_secs(2)) // a slow handler fails its message, not its shard
///     .mailbox_capacity(1_000)                 // MailboxFull instead of an ever longer queue
///     .metrics_addr("127.0.0.1:9100".parse().unwrap());
/// assert_eq!(config.batch_size, 256);
/// ```
///
/// The type is `#[non_exhaustive]` so that new knobs are not a breaking change: build it
/// from `Config::default()` with the setters below (each consumes and returns the config),
/// and read or assign its fields directly.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Shards of a journal created by this cluster (fixed at creation; an existing journal
    /// of another count is refused). Default 0: an existing journal's count, and for a new
    /// one 64 on PostgreSQL (enough to spread over a few dozen runners) and 8 on SQLite
    /// (one process owns them all). Fewer shards mean bigger commit batches.
    pub shard_count: u32,
    /// Named shard groups of a journal created by this cluster, taken from the end of its
    /// `shard_count` shards (the default group keeps the rest); fixed at creation like the
    /// count. An entity type names its group (`Entity::SHARD_GROUP`), and a runner owns
    /// shards only of the groups of the types it registers — so a runner never takes a
    /// shard whose entities it cannot run. Default none: every shard in the default group.
    pub shard_groups: Vec<entlog_journal::ShardGroup>,
    /// Messages read per shard at a time, and each shard's mailbox: a runner reads no more
    /// of a shard while this many of its messages are read but not yet committed (the
    /// journal holds the backlog). The runner commits what every shard handled in one
    /// transaction, so a commit can carry many batches. Default 256.
    pub batch_size: usize,
    /// An entity unused this long is dropped from memory (snapshotted first if it has
    /// events since its last snapshot), checked on a timer under any load. Default 5 minutes.
    pub passivate_after: Duration,
    /// Most entities a runner keeps in memory; past it, the least recently used are
    /// passivated. Bounds a runner's memory whatever the number of distinct entities.
    /// Default 100,000.
    pub max_active_entities: usize,
    /// How long a handler may take for one message before the message fails with a
    /// stored failure reply ("handler timed out"); the entity keeps its state and goes on
    /// with its next message. Only the entity waits meanwhile: other entities of the
    /// shard commit without it. Default 10 s.
    pub handler_timeout: Duration,
    /// A snapshot is saved when this many events were applied since the last one.
    /// Default 100.
    pub snapshot_every: u64,
    /// How long a shard waits for a wake-up before reading anyway (the fallback when a
    /// notification is lost). Default 1 s.
    pub poll_interval: Duration,
    /// How often a runner checks live runners and its shard assignment. Default 250 ms.
    /// With liveness taken from lock connections, this bounds failover latency.
    pub rebalance_interval: Duration,
    /// How long `ask` waits for a reply. Default 30 s.
    pub ask_timeout: Duration,
    /// How long `ask` waits before checking that some live runner owns the entity's shard;
    /// if none does, it fails with `EngineError::RunnerUnavailable` instead of waiting out
    /// `ask_timeout` (checked again every as long while the ask waits). Default 5 s:
    /// longer than a silent runner's failover (about 3.3 s), so a moving shard is not
    /// mistaken for an abandoned one.
    pub unavailable_after: Duration,
    /// How long graceful shutdown waits for shards to finish. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Attempts of a message whose handler panics before it gets a failure reply.
    /// Default 3.
    pub max_attempts: u32,
    /// Back-off before the first retry of a panicking handler; doubles each attempt.
    /// Default 20 ms.
    pub retry_backoff: Duration,
    /// Most unanswered messages one entity may have: a send (`ask`, `tell`, `tell_at`)
    /// to an entity that already has this many fails with `EngineError::MailboxFull`
    /// instead of queueing behind them. Checked at send by one indexed query over the
    /// shard's backlog, so concurrent sends can pass it together (the bound is exceeded by
    /// at most the sends in flight); messages a handler sends (`ctx.send`) are journaled
    /// with its events and never refused. Per entity type: `Entity::MAILBOX_CAPACITY`.
    /// Default `None`: unbounded, and no query.
    pub mailbox_capacity: Option<u32>,
    /// Most messages a client appends in one transaction when many sends are in flight.
    /// Default 512.
    pub append_batch: usize,
    /// This runner's id; a fresh uuid when `None`. Ids must be unique among live runners.
    pub runner_id: Option<String>,
    /// Host entities (a runner) or only send to them (a client). Default true.
    pub host_entities: bool,
    /// Where to serve the metrics in the Prometheus text format, at `http://ADDR/metrics`.
    /// Default `None`: no endpoint. At most one member per process can serve it.
    pub metrics_addr: Option<SocketAddr>,
    /// How long a singleton may take to return after its stop signal (its shard moves, or
    /// the runner shuts down) before it is aborted. Default 5 s.
    pub singleton_stop_timeout: Duration,
    /// Pause before restarting a singleton that returned or panicked while its shard is
    /// still owned; doubles on each consecutive failure up to 1 minute, and starts over
    /// after a run of a minute or more. Default 1 s.
    pub singleton_restart_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shard_count: 0,
            shard_groups: Vec::new(),
            batch_size: 256,
            passivate_after: Duration::from_secs(300),
            max_active_entities: 100_000,
            handler_timeout: Duration::from_secs(10),
            snapshot_every: 100,
            poll_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_millis(250),
            ask_timeout: Duration::from_secs(30),
            unavailable_after: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(20),
            append_batch: 512,
            mailbox_capacity: None,
            runner_id: None,
            host_entities: true,
            metrics_addr: None,
            singleton_stop_timeout: Duration::from_secs(5),
            singleton_restart_backoff: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Sets [`Config::shard_count`]: shards of a journal this cluster creates (0: the
    /// existing journal's count, or the backend's default for a new one).
    pub fn shard_count(mut self, n: u32) -> Self {
        self.shard_count = n;
        self
    }

    /// Sets [`Config::shard_groups`]: named shard groups of a journal this cluster creates.
    pub fn shard_groups(mut self, groups: Vec<entlog_journal::ShardGroup>) -> Self {
        self.shard_groups = groups;
        self
    }

    /// Sets [`Config::batch_size`]: messages read per shard at a time, and each shard's mailbox.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets [`Config::passivate_after`]: how long an unused entity stays in memory.
    pub fn passivate_after(mut self, after: Duration) -> Self {
        self.passivate_after = after;
        self
    }

    /// Sets [`Config::max_active_entities`]: most entities a runner keeps in memory.
    pub fn max_active_entities(mut self, n: usize) -> Self {
        self.max_active_entities = n;
        self
    }

    /// Sets [`Config::handler_timeout`]: how long a handler may take for one message.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Sets [`Config::snapshot_every`]: events applied between two snapshots.
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = n;
        self
    }

    /// Sets [`Config::poll_interval`]: how long a shard waits for a wake-up before reading anyway.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`Config::rebalance_interval`]: how often a runner checks its shard assignment.
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// Sets [`Config::ask_timeout`]: how long `ask` waits for a reply.
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// Sets [`Config::unavailable_after`]: when `ask` checks that the shard has an owner.
    pub fn unavailable_after(mut self, after: Duration) -> Self {
        self.unavailable_after = after;
        self
    }

    /// Sets [`Config::shutdown_timeout`]: how long graceful shutdown waits for shards.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets [`Config::max_attempts`]: attempts of a panicking handler before a failure reply.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`Config::retry_backoff`]: back-off before the first retry of a panicking handler.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Bounds each entity's unanswered messages ([`Config::mailbox_capacity`]).
    pub fn mailbox_capacity(mut self, capacity: u32) -> Self {
        self.mailbox_capacity = Some(capacity);
        self
    }

    /// Sets [`Config::append_batch`]: most messages a client appends in one transaction.
    pub fn append_batch(mut self, n: usize) -> Self {
        self.append_batch = n;
        self
    }

    /// Names this runner ([`Config::runner_id`]) instead of a fresh uuid.
    pub fn runner_id(mut self, id: impl Into<String>) -> Self {
        self.runner_id = Some(id.into());
        self
    }

    /// Sets [`Config::host_entities`]: a runner (`true`) or a client that only sends (`false`).
    pub fn host_entities(mut self, host: bool) -> Self {
        self.host_entities = host;
        self
    }

    /// Serves the Prometheus metrics at `http://ADDR/metrics` ([`Config::metrics_addr`]).
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Sets [`Config::singleton_stop_timeout`]: how long a stopped singleton may take to return.
    pub fn singleton_stop_timeout(mut self, timeout: Duration) -> Self {
        self.singleton_stop_timeout = timeout;
        self
    }

    /// Sets [`Config::singleton_restart_backoff`]: pause before restarting a failed singleton.
    pub fn singleton_restart_backoff(mut self, backoff: Duration) -> Self {
        self.singleton_restart_backoff = backoff;
        self
    }
}
