//! Shared pieces of the load benchmark: the `Counter` entity every scenario asks (its
//! replies say which runner handled the command, and when, on this process's `EPOCH`
//! clock), the run's `Settings` (quick or full), the results gathered into the `Report`
//! (`Lat`, `Load`, `FailoverRun`, `Activation`), and small helpers: the database URL and
//! schema names, SQL execution, cluster start-up, polling, RSS and number formatting.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use entlog_engine::{Cluster, Config, Context, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};

use crate::child::Strike;
use crate::{DEFAULT_URL, SHARDS};

// ---------------------------------------------------------------------------------------
// The entity

/// The instant every `handled_at` is measured from (one clock for the runners of this
/// process; the child runner process of the failover scenario has its own).
pub(crate) static EPOCH: OnceLock<Instant> = OnceLock::new();

pub(crate) fn micros_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_micros() as u64
}

/// A counter; its replies say which runner (`node`) handled the command, and when.
pub(crate) struct Counter {
    pub(crate) node: u8,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Cmd {
    Add(i64),
    Get,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Added(i64);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(crate) node: u8,
    pub(crate) total: i64,
    /// Microseconds since `EPOCH` when the handler ran.
    pub(crate) handled_at: u64,
}

impl Entity for Counter {
    const TYPE: &'static str = "counter";
    type Command = Cmd;
    type Event = Added;
    type Reply = Reply;
    type State = i64;

    async fn handle(
        &self,
        state: &i64,
        cmd: Cmd,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        let reply = |total| Reply {
            node: self.node,
            total,
            handled_at: micros_since_epoch(Instant::now()),
        };
        Ok(match cmd {
            Cmd::Add(n) => Outcome::new(vec![Added(n)], reply(state + n)),
            Cmd::Get => Outcome::reply(reply(*state)),
        })
    }

    fn apply(state: &mut i64, event: &Added) {
        *state += event.0;
    }
}

// ---------------------------------------------------------------------------------------
// Settings and results

pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) warm_up: Duration,
    pub(crate) measure: Duration,
    pub(crate) sqlite_measure: Duration,
    pub(crate) raw_measure: Duration,
    pub(crate) variant_warm_up: Duration,
    pub(crate) variant_measure: Duration,
    pub(crate) seq_warm_up: usize,
    pub(crate) seq_asks: usize,
    pub(crate) failover_runs: usize,
    pub(crate) failover_attempts: usize,
    pub(crate) activation_events: u64,
    pub(crate) activation_reps: usize,
    pub(crate) late_messages: usize,
    pub(crate) late_spread_ms: (u64, u64),
}

impl Settings {
    pub(crate) fn new() -> Self {
        let env_quick = std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
        // `cargo bench` passes `--bench`; `cargo test` runs this binary without it.
        let under_test = !std::env::args().any(|a| a == "--bench");
        if env_quick || under_test {
            Settings {
                quick: true,
                warm_up: Duration::from_millis(300),
                measure: Duration::from_secs(1),
                sqlite_measure: Duration::from_secs(1),
                raw_measure: Duration::from_secs(1),
                variant_warm_up: Duration::from_millis(300),
                variant_measure: Duration::from_millis(700),
                seq_warm_up: 20,
                seq_asks: 200,
                failover_runs: 1,
                failover_attempts: 3,
                activation_events: 1_000,
                activation_reps: 2,
                late_messages: 60,
                late_spread_ms: (50, 800),
            }
        } else {
            Settings {
                quick: false,
                warm_up: Duration::from_secs(2),
                measure: Duration::from_secs(10),
                sqlite_measure: Duration::from_secs(8),
                raw_measure: Duration::from_secs(5),
                variant_warm_up: Duration::from_secs(1),
                variant_measure: Duration::from_secs(5),
                seq_warm_up: 100,
                seq_asks: 2_000,
                failover_runs: 3,
                failover_attempts: 12,
                activation_events: 10_000,
                activation_reps: 5,
                late_messages: 200,
                late_spread_ms: (50, 2_000),
            }
        }
    }
}

/// Latencies, sorted.
pub(crate) struct Lat(pub(crate) Vec<Duration>);

impl Lat {
    pub(crate) fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Lat(v)
    }

    pub(crate) fn pct(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    pub(crate) fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

pub(crate) struct Load {
    /// Asks answered inside the measured window.
    pub(crate) measured: usize,
    pub(crate) window: Duration,
    pub(crate) lat: Lat,
    /// Asks answered successfully in all (warm-up included).
    pub(crate) ok_total: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// (machine CPU busy %, this process's share %) during the window.
    pub(crate) cpu: Option<(f64, f64)>,
    /// PostgreSQL transactions committed during the window (whole database).
    pub(crate) commits: Option<u64>,
    /// Where the window's time went, stage by stage (see `stages.rs`).
    pub(crate) stages: Option<String>,
}

impl Load {
    pub(crate) fn rate(&self) -> f64 {
        self.measured as f64 / self.window.as_secs_f64()
    }

    /// CPU and transaction figures of the window.
    pub(crate) fn costs(&self) -> String {
        let mut out = String::new();
        if let Some((busy, own)) = self.cpu {
            out.push_str(&format!(
                "machine CPU {busy:.0}% busy (this process {own:.0}% of it all)"
            ));
        }
        if let Some(c) = self.commits {
            let per_s = c as f64 / self.window.as_secs_f64();
            out.push_str(&format!(
                "; PostgreSQL transactions {}/s (autocommitted reads included), {:.2} asks per \
                 transaction",
                grouped(per_s),
                self.rate() / per_s.max(1.0)
            ));
        }
        out
    }

    /// Where the window's time went: each stage's calls, size, time and busy share.
    pub(crate) fn stages(&self) -> String {
        match &self.stages {
            Some(s) => format!("stages: {s}"),
            None => "stages: not recorded (another metrics recorder is installed)".into(),
        }
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "{} asks/s   p50 {}  p90 {}  p99 {}  max {}",
            grouped(self.rate()),
            ms(self.lat.pct(0.50)),
            ms(self.lat.pct(0.90)),
            ms(self.lat.pct(0.99)),
            ms(self.lat.max()),
        )
    }
}

pub(crate) struct FailoverRun {
    /// Since termination: A noticed (the shard left A's owned set).
    pub(crate) a_dropped: Option<Duration>,
    /// Since termination: B owned the shard.
    pub(crate) b_owned: Option<Duration>,
    /// Since termination: the first reply handled by B was received.
    pub(crate) b_reply: Option<Duration>,
    /// Since termination: when B's handler ran for that reply.
    pub(crate) b_handled: Option<Duration>,
    /// Since termination: A (with a new lock session) handled an ask again instead.
    pub(crate) a_again: Option<Duration>,
    /// The longest stretch, from the kill to the end of the run, in which no probe was
    /// handled (probes are sent every 5 ms): the entity's actual unavailability.
    pub(crate) gap: Duration,
    /// What went wrong with the probes.
    pub(crate) errors: Vec<String>,
}

pub(crate) struct Activation {
    pub(crate) events: u64,
    pub(crate) replayed: u64,
    pub(crate) snap_cold: Vec<Duration>,
    pub(crate) snap_hot: Vec<Duration>,
    pub(crate) full_cold: Vec<Duration>,
    pub(crate) full_hot: Vec<Duration>,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) pg_version: String,
    pub(crate) rss_start_kb: Option<u64>,
    pub(crate) rss_after_kb: Option<u64>,
    pub(crate) pg: Option<Load>,
    /// The same at 64 asks in flight.
    pub(crate) pg64: Option<Load>,
    pub(crate) raw: Option<f64>,
    /// Sequential asks on SQLite.
    pub(crate) seq_sqlite: Option<Lat>,
    /// Distinct entities asked, entities in memory and RSS (KiB) after each step.
    pub(crate) memory: Vec<(usize, usize, Option<u64>)>,
    pub(crate) sqlite: Option<Load>,
    pub(crate) seq: Option<Lat>,
    pub(crate) failover: Vec<FailoverRun>,
    pub(crate) failover_process: Vec<(Strike, FailoverRun)>,
    pub(crate) variants: Vec<(&'static str, Load)>,
    pub(crate) activation: Option<Activation>,
    /// Scheduled-message lateness per backend.
    pub(crate) lateness: Vec<(&'static str, Lat)>,
    pub(crate) anomalies: Vec<String>,
}

impl Report {
    pub(crate) fn anomaly(&mut self, what: String) {
        println!("  !! ANOMALY: {what}");
        self.anomalies.push(what);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

pub(crate) fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub(crate) fn schema_name(tag: &str) -> String {
    format!("bench_load_{}_{tag}", std::process::id())
}

pub(crate) async fn exec(pool: &PgPool, sql: String) {
    sqlx::query(AssertSqlSafe(sql.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub(crate) async fn drop_schema(pool: &PgPool, schema: &str) {
    exec(pool, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
}

/// The configuration of the clusters here: `SHARDS` shards, a long ask timeout.
pub(crate) fn config() -> Config {
    Config::default()
        .shard_count(SHARDS)
        .ask_timeout(Duration::from_secs(20))
}

/// [`config`] for a new SQLite journal: its default shard count.
pub(crate) fn sqlite_config() -> Config {
    config().shard_count(0)
}

pub(crate) async fn pg_cluster(url: &str, schema: &str, config: Config, node: u8) -> Cluster {
    Cluster::builder()
        .postgres_schema(url, schema)
        .config(config)
        .entity(Counter { node })
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a cluster on schema {schema}: {e}"))
}

/// Polls `f` every 5 ms until it holds (true) or `limit` passes (false).
pub(crate) async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `cluster` owns every shard, then lets its workers settle (LISTEN set up).
pub(crate) async fn ready(cluster: &Cluster, report: &mut Report, what: &str) {
    let shards = entlog::Journal::shard_count(cluster.journal()) as usize;
    if !wait_until(Duration::from_secs(15), || {
        cluster.owned_shards().len() == shards
    })
    .await
    {
        report.anomaly(format!(
            "{what}: the runner owns {} of {shards} shards after 15 s",
            cluster.owned_shards().len()
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

pub(crate) fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub(crate) fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub(crate) fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn list(v: &[Duration]) -> String {
    v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
}
