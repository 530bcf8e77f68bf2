#![allow(clippy::unwrap_used)]
//! Load benchmark of the engine: persisted asks end to end (client, journal, runner),
//! on PostgreSQL (the cluster mode) and, for comparison, SQLite.
//!
//! ```text
//! cargo bench --bench load                        # full run (about 1-2 minutes)
//! ENTLOG_BENCH_QUICK=1 cargo bench --bench load   # smoke test
//! DATABASE_URL=postgres://user@host/db cargo bench --bench load
//! ENTLOG_LOAD_ONLY=failover,activation cargo bench --bench load   # some scenarios only
//! ```
//!
//! Scenario keys: throughput, variants, sequential, failover, activation, sqlite, lateness,
//! memory.
//!
//! Scenarios, each on a fresh PostgreSQL schema `bench_load_<pid>_<name>` (dropped after):
//!
//! 1. throughput: one runner, the same process as client, 1,000 counters, 256 asks in
//!    flight (256 closed-loop tasks), asks/s and latency percentiles, with the machine's
//!    CPU use and PostgreSQL's transaction rate over the window; 1b. the same with other
//!    journal options (pool size, shard count, NOTIFY off) to show what limits it (not in
//!    quick mode); 1'. the same on SQLite;
//! 2. sequential: one counter, one ask after another;
//! 3. failover: two runners in one process; runner A's lock connection is terminated by
//!    the server; time until an ask to an entity of one of A's shards is answered by B
//!    (or by A again: A notices the loss at its next ping and re-opens a lock session,
//!    so B takes over only if its rebalance sees A gone first); then the same with the
//!    runner in a child process killed with SIGKILL, stopped with SIGSTOP (every socket
//!    stays open: the server ends its silent lock session), and with its lock connection
//!    black-holed by a proxy that stops forwarding and closes nothing;
//! 4. activation: the first ask to a 10,000-event counter in a fresh cluster, from its
//!    snapshot (+50 events), and with no snapshot at all;
//! 5. memory: the process RSS after scenario 1;
//! 6. raw PostgreSQL baseline: the rows a persisted ask writes (message, event, reply),
//!    inserted with multi-row `INSERT … SELECT … FROM UNNEST` into plain copies of the
//!    journal's tables, 4 connections, 256 asks' worth per transaction;
//! 7. lateness: on an idle runner, 200 messages scheduled with `tell_at` at random times
//!    50–2,000 ms ahead (to 200 entities over the 64 shards); each handler records its wall
//!    clock minus the message's due time. p50/p99/max on PostgreSQL and SQLite; the target
//!    is a p99 under 50 ms, and a message handled early is an anomaly;
//! 8. memory: 200,000 distinct counters asked once each (256 in flight) by a runner that
//!    keeps at most 10,000 in memory; RSS after the first 10,000 and at the end.
//!
//! Run without `--bench` (that is, by `cargo test --all-targets`), it runs in quick mode.
//! Errors and timeouts are reported, not hidden: the program exits with status 1 after
//! the summary if any ask failed or a scenario hung.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use entlog_engine::{Cluster, Config, Context, Entity, Outcome, Rejection};
use entlog_journal::testing::BlackHoleProxy;
use entlog_journal::{PgJournal, PgOptions, Timestamp, shard_of};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::task::JoinHandle;
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const SHARDS: u32 = 64;
const ENTITIES: usize = 1_000;
const IN_FLIGHT: usize = 256;
const RAW_CONNECTIONS: usize = 4;
const RAW_BATCH: usize = 256;

// ---------------------------------------------------------------------------------------
// The entity

/// The instant every `handled_at` is measured from (one clock for the runners of this
/// process; the child runner process of the failover scenario has its own).
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn micros_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_micros() as u64
}

/// A counter; its replies say which runner (`node`) handled the command, and when.
struct Counter {
    node: u8,
}

#[derive(Serialize, Deserialize)]
enum Cmd {
    Add(i64),
    Get,
}

#[derive(Serialize, Deserialize)]
struct Added(i64);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Reply {
    node: u8,
    total: i64,
    /// Microseconds since `EPOCH` when the handler ran.
    handled_at: u64,
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

struct Settings {
    quick: bool,
    warm_up: Duration,
    measure: Duration,
    sqlite_measure: Duration,
    raw_measure: Duration,
    variant_warm_up: Duration,
    variant_measure: Duration,
    seq_warm_up: usize,
    seq_asks: usize,
    failover_runs: usize,
    failover_attempts: usize,
    activation_events: u64,
    activation_reps: usize,
    late_messages: usize,
    late_spread_ms: (u64, u64),
}

impl Settings {
    fn new() -> Self {
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
struct Lat(Vec<Duration>);

impl Lat {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Lat(v)
    }

    fn pct(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }

    fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
}

struct Load {
    /// Asks answered inside the measured window.
    measured: usize,
    window: Duration,
    lat: Lat,
    /// Asks answered successfully in all (warm-up included).
    ok_total: u64,
    errors: u64,
    first_error: Option<String>,
    /// (machine CPU busy %, this process's share %) during the window.
    cpu: Option<(f64, f64)>,
    /// PostgreSQL transactions committed during the window (whole database).
    commits: Option<u64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.measured as f64 / self.window.as_secs_f64()
    }

    /// CPU and transaction figures of the window.
    fn costs(&self) -> String {
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

    fn line(&self) -> String {
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

struct FailoverRun {
    /// Since termination: A noticed (the shard left A's owned set).
    a_dropped: Option<Duration>,
    /// Since termination: B owned the shard.
    b_owned: Option<Duration>,
    /// Since termination: the first reply handled by B was received.
    b_reply: Option<Duration>,
    /// Since termination: when B's handler ran for that reply.
    b_handled: Option<Duration>,
    /// Since termination: A (with a new lock session) handled an ask again instead.
    a_again: Option<Duration>,
    /// The longest stretch, from the kill to the end of the run, in which no probe was
    /// handled (probes are sent every 5 ms): the entity's actual unavailability.
    gap: Duration,
    /// What went wrong with the probes.
    errors: Vec<String>,
}

struct Activation {
    events: u64,
    replayed: u64,
    snap_cold: Vec<Duration>,
    snap_hot: Vec<Duration>,
    full_cold: Vec<Duration>,
    full_hot: Vec<Duration>,
}

#[derive(Default)]
struct Report {
    pg_version: String,
    rss_start_kb: Option<u64>,
    rss_after_kb: Option<u64>,
    pg: Option<Load>,
    /// The same at 64 asks in flight.
    pg64: Option<Load>,
    raw: Option<f64>,
    /// Sequential asks on SQLite.
    seq_sqlite: Option<Lat>,
    /// Distinct entities asked, entities in memory and RSS (KiB) after each step.
    memory: Vec<(usize, usize, Option<u64>)>,
    sqlite: Option<Load>,
    seq: Option<Lat>,
    failover: Vec<FailoverRun>,
    failover_process: Vec<(Strike, FailoverRun)>,
    variants: Vec<(&'static str, Load)>,
    activation: Option<Activation>,
    /// Scheduled-message lateness per backend.
    lateness: Vec<(&'static str, Lat)>,
    anomalies: Vec<String>,
}

impl Report {
    fn anomaly(&mut self, what: String) {
        println!("  !! ANOMALY: {what}");
        self.anomalies.push(what);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn schema_name(tag: &str) -> String {
    format!("bench_load_{}_{tag}", std::process::id())
}

async fn exec(pool: &PgPool, sql: String) {
    sqlx::query(AssertSqlSafe(sql.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn drop_schema(pool: &PgPool, schema: &str) {
    exec(pool, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await;
}

fn config() -> Config {
    Config {
        shard_count: SHARDS,
        ask_timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

async fn pg_cluster(url: &str, schema: &str, config: Config, node: u8) -> Cluster {
    Cluster::builder()
        .postgres_schema(url, schema)
        .config(config)
        .entity(Counter { node })
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a cluster on schema {schema}: {e}"))
}

/// Polls `f` every 5 ms until it holds (true) or `limit` passes (false).
async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
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
async fn ready(cluster: &Cluster, report: &mut Report, what: &str) {
    if !wait_until(Duration::from_secs(15), || {
        cluster.owned_shards().len() == SHARDS as usize
    })
    .await
    {
        report.anomaly(format!(
            "{what}: the runner owns {} of {SHARDS} shards after 15 s",
            cluster.owned_shards().len()
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn grouped(v: f64) -> String {
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

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn list(v: &[Duration]) -> String {
    v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------
// Closed-loop load

/// `in_flight` tasks, each asking `Add(1)` of the next counter (round robin over `ids`)
/// as soon as its previous ask is answered, for `warm_up + measure`. Counts and times
/// the asks answered inside the measured window.
async fn closed_loop(
    cluster: &Cluster,
    admin: Option<&PgPool>,
    ids: Arc<Vec<String>>,
    in_flight: usize,
    warm_up: Duration,
    measure: Duration,
) -> Load {
    let start = Instant::now();
    let window_start = start + warm_up;
    let end = window_start + measure;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<JoinHandle<_>> = (0..in_flight)
        .map(|_| {
            let cluster = cluster.clone();
            let ids = ids.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut ok = 0u64;
                let mut errors = 0u64;
                let mut first_error = None;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % ids.len();
                    let r = cluster.entity::<Counter>(&ids[i]).ask(Cmd::Add(1)).await;
                    let done = Instant::now();
                    match r {
                        Ok(_) => {
                            ok += 1;
                            if done >= window_start && done < end {
                                lat.push(done - sent);
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("ask to {}: {e}", ids[i]));
                        }
                    }
                }
                (lat, ok, errors, first_error)
            })
        })
        .collect();
    // What the measured window cost: CPU (the machine's, and this process's), and
    // PostgreSQL transactions committed (the whole database's).
    tokio::time::sleep_until(window_start.into()).await;
    let before = (Cpu::now(), xacts(admin).await);
    tokio::time::sleep_until(end.into()).await;
    let after = (Cpu::now(), xacts(admin).await);
    let cpu = before.0.zip(after.0).map(|(b, a)| b.usage(&a));
    let commits = before.1.zip(after.1).map(|(b, a)| a.saturating_sub(b));
    let mut all = Vec::new();
    let mut ok_total = 0;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (lat, ok, err, first) = t.await.unwrap();
        all.extend(lat);
        ok_total += ok;
        errors += err;
        if first_error.is_none() {
            first_error = first;
        }
    }
    Load {
        measured: all.len(),
        window: measure,
        lat: Lat::new(all),
        ok_total,
        errors,
        first_error,
        cpu,
        commits,
    }
}

/// CPU counters: the machine's busy and total jiffies, and this process's.
#[derive(Clone, Copy)]
struct Cpu {
    busy: u64,
    total: u64,
    process: u64,
}

impl Cpu {
    fn now() -> Option<Cpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th.
        let rest: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let process = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(Cpu {
            busy: total - idle,
            total,
            process,
        })
    }

    /// (machine busy %, this process's share of the machine %) from `self` to `later`.
    fn usage(&self, later: &Cpu) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        (
            100.0 * later.busy.saturating_sub(self.busy) as f64 / total,
            100.0 * later.process.saturating_sub(self.process) as f64 / total,
        )
    }
}

/// Transactions committed in the current database so far (PostgreSQL's statistics).
async fn xacts(admin: Option<&PgPool>) -> Option<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(admin?)
    .await
    .ok()?;
    Some(n as u64)
}

/// Asks `Add(1)` of counter `id` `n` times, `IN_FLIGHT` at a time.
async fn fill(cluster: &Cluster, id: &str, n: u64) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<JoinHandle<Result<(), String>>> = (0..IN_FLIGHT)
        .map(|_| {
            let counter = cluster.entity::<Counter>(id);
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    counter.ask(Cmd::Add(1)).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            result = Err(e);
        }
    }
    result
}

fn entity_ids() -> Arc<Vec<String>> {
    Arc::new((0..ENTITIES).map(|i| format!("c-{i:04}")).collect())
}

// ---------------------------------------------------------------------------------------
// Scenario 1 (+5, +6): throughput on PostgreSQL, RSS, raw baseline

async fn throughput_pg(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("tput");
    drop_schema(admin, &schema).await;
    let cluster = pg_cluster(url, &schema, config(), 1).await;
    ready(&cluster, report, "throughput").await;
    let load = closed_loop(
        &cluster,
        Some(admin),
        entity_ids(),
        IN_FLIGHT,
        s.warm_up,
        s.measure,
    )
    .await;
    report.rss_after_kb = rss_kb();
    let load64 = closed_loop(
        &cluster,
        Some(admin),
        entity_ids(),
        64,
        s.warm_up / 2,
        s.measure,
    )
    .await;
    println!("  postgres: {}", load.line());
    println!("            {}", load.costs());
    println!(
        "            {} asks answered in all (warm-up included), {} errors",
        grouped(load.ok_total as f64),
        load.errors
    );
    if let Some(e) = &load.first_error {
        report.anomaly(format!(
            "throughput (postgres): {} asks failed; first: {e}",
            load.errors
        ));
    }
    println!("  64 in flight: {}", load64.line());
    println!("            {}", load64.costs());
    if let Some(e) = &load64.first_error {
        report.anomaly(format!(
            "throughput (postgres, 64 in flight): {} asks failed; first: {e}",
            load64.errors
        ));
    }
    let answered = load.ok_total + load64.ok_total;
    report.pg64 = Some(load64);
    if let Some(kb) = report.rss_after_kb {
        println!(
            "  RSS with {ENTITIES} active counters: {:.1} MB",
            kb as f64 / 1024.0
        );
    }
    cluster.shutdown().await.unwrap();

    // Exactly one event per answered ask.
    let events: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".journal WHERE kind = 2"
    )))
    .fetch_one(admin)
    .await
    .unwrap();
    if events as u64 != answered {
        report.anomaly(format!(
            "throughput (postgres): {events} events journaled for {answered} answered asks"
        ));
    }
    report.pg = Some(load);

    match raw_baseline(url, admin, &schema, s).await {
        Ok(rate) => {
            println!(
                "  raw: {} asks/s-equivalent (3 rows per ask)",
                grouped(rate)
            );
            report.raw = Some(rate);
        }
        Err(e) => report.anomaly(format!("raw baseline failed: {e}")),
    }
    drop_schema(admin, &schema).await;
}

/// Scenario 1 again with other journal options, to see what limits it: a bigger pool
/// (default 10 connections for 64 shard workers, the appender and reply polling), fewer
/// shards (bigger commit batches) and NOTIFY off (a notifying transaction holds PostgreSQL's global notify-queue lock through
/// its commit, so notifying commits are serialized; client and runner share a process
/// here, so local wake-ups still work without it).
async fn throughput_variants(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let variants: [(&str, u32, bool, u32); 4] = [
        ("pool 40 connections", 40, true, SHARDS),
        ("NOTIFY off", 10, false, SHARDS),
        ("8 shards", 10, true, 8),
        ("8 shards + NOTIFY off", 10, false, 8),
    ];
    for (name, connections, notify, shards) in variants {
        let schema = schema_name("var");
        drop_schema(admin, &schema).await;
        let journal = PgJournal::open(
            PgOptions::new(url)
                .schema(&schema)
                .shard_count(shards)
                .max_connections(connections)
                .notify(notify),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot open a journal on schema {schema}: {e}"));
        let cluster = Cluster::builder()
            .journal(journal)
            .config(Config {
                shard_count: shards,
                ..config()
            })
            .entity(Counter { node: 1 })
            .start()
            .await
            .unwrap();
        if !wait_until(Duration::from_secs(15), || {
            cluster.owned_shards().len() == shards as usize
        })
        .await
        {
            report.anomaly(format!(
                "{name}: the runner does not own every shard after 15 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let load = closed_loop(
            &cluster,
            Some(admin),
            entity_ids(),
            IN_FLIGHT,
            s.variant_warm_up,
            s.variant_measure,
        )
        .await;
        println!("  {name:<22} {}", load.line());
        println!("  {:<22} {}", "", load.costs());
        if let Some(e) = &load.first_error {
            report.anomaly(format!(
                "throughput ({name}): {} asks failed; first: {e}",
                load.errors
            ));
        }
        cluster.shutdown().await.unwrap();
        report.variants.push((name, load));
        drop_schema(admin, &schema).await;
    }
}

/// One sample row's payload columns.
type Sample = (String, i32, Vec<u8>, i64);

async fn sample(admin: &PgPool, sql: String) -> Result<Sample, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(sql)).fetch_one(admin).await
}

/// Multi-row inserts of (message, event, reply) rows like the engine's, into plain copies
/// of the journal's `journal` and `replies` tables; returns asks' worth per second.
async fn raw_baseline(
    url: &str,
    admin: &PgPool,
    source: &str,
    s: &Settings,
) -> Result<f64, sqlx::Error> {
    let raw = schema_name("raw");
    drop_schema(admin, &raw).await;
    exec(admin, format!("CREATE SCHEMA \"{raw}\"")).await;
    exec(
        admin,
        format!("CREATE TABLE \"{raw}\".journal (LIKE \"{source}\".journal INCLUDING ALL)"),
    )
    .await;
    exec(
        admin,
        format!("CREATE TABLE \"{raw}\".replies (LIKE \"{source}\".replies INCLUDING ALL)"),
    )
    .await;
    // Real payloads from scenario 1, so that the rows have the engine's sizes.
    let cols = "type_tag, schema_version, payload, crc";
    let message = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".journal WHERE kind = 1 LIMIT 1"),
    )
    .await?;
    let event = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".journal WHERE kind = 2 LIMIT 1"),
    )
    .await?;
    let reply = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".replies LIMIT 1"),
    )
    .await?;
    let samples = Arc::new((message, event, reply));

    let insert_journal: Arc<str> = format!(
        r#"INSERT INTO "{raw}".journal
            (shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag,
             schema_version, payload, crc, deliver_at, created_at)
           SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::SMALLINT[], $4::TEXT[],
                                $5::TEXT[], $6::BIGINT[], $7::UUID[], $8::TEXT[],
                                $9::INTEGER[], $10::BYTEA[], $11::BIGINT[], $12::BIGINT[],
                                $13::BIGINT[])"#
    )
    .into();
    let insert_replies: Arc<str> = format!(
        r#"INSERT INTO "{raw}".replies
            (entity_type, entity_id, message_id, shard, "offset", type_tag, schema_version,
             payload, crc, created_at)
           SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::UUID[], $4::INTEGER[],
                                $5::BIGINT[], $6::TEXT[], $7::INTEGER[], $8::BYTEA[],
                                $9::BIGINT[], $10::BIGINT[])"#
    )
    .into();

    let pool = PgPoolOptions::new()
        .max_connections(RAW_CONNECTIONS as u32)
        .min_connections(RAW_CONNECTIONS as u32)
        .connect(url)
        .await?;
    let ids = entity_ids();
    let counter = Arc::new(AtomicI64::new(0));
    let warm_up = Duration::from_millis(if s.quick { 200 } else { 500 });
    let window_start = Instant::now() + warm_up;
    let end = window_start + s.raw_measure;
    let tasks: Vec<JoinHandle<Result<u64, sqlx::Error>>> = (0..RAW_CONNECTIONS)
        .map(|_| {
            let pool = pool.clone();
            let ids = ids.clone();
            let counter = counter.clone();
            let samples = samples.clone();
            let insert_journal = insert_journal.clone();
            let insert_replies = insert_replies.clone();
            tokio::spawn(async move {
                let (message, event, reply) = &*samples;
                let mut asks = 0u64;
                while Instant::now() < end {
                    let now = micros_since_epoch(Instant::now()) as i64;
                    let first = counter.fetch_add(RAW_BATCH as i64, Ordering::Relaxed);
                    // Journal rows: a message then an event per ask; a reply per ask.
                    let mut j_shard = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_offset = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_kind = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_type = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_id = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_seq = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_msg = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_tag = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_ver = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_payload = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_crc = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_due: Vec<Option<i64>> = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_at = Vec::with_capacity(2 * RAW_BATCH);
                    let mut r_type = Vec::with_capacity(RAW_BATCH);
                    let mut r_id = Vec::with_capacity(RAW_BATCH);
                    let mut r_msg = Vec::with_capacity(RAW_BATCH);
                    let mut r_shard = Vec::with_capacity(RAW_BATCH);
                    let mut r_offset = Vec::with_capacity(RAW_BATCH);
                    let mut r_tag = Vec::with_capacity(RAW_BATCH);
                    let mut r_ver = Vec::with_capacity(RAW_BATCH);
                    let mut r_payload = Vec::with_capacity(RAW_BATCH);
                    let mut r_crc = Vec::with_capacity(RAW_BATCH);
                    let mut r_at = Vec::with_capacity(RAW_BATCH);
                    for k in 0..RAW_BATCH as i64 {
                        let n = first + k;
                        let id = &ids[n as usize % ids.len()];
                        let shard = shard_of(id, SHARDS) as i32;
                        let message_id = Uuid::now_v7();
                        for (kind, seq, row, offset) in [
                            (1i16, None, message, 2 * n),
                            (2i16, Some(n), event, 2 * n + 1),
                        ] {
                            j_shard.push(shard);
                            j_offset.push(offset);
                            j_kind.push(kind);
                            j_type.push("counter");
                            j_id.push(id.as_str());
                            j_seq.push(seq);
                            j_msg.push(if kind == 1 {
                                message_id
                            } else {
                                Uuid::now_v7()
                            });
                            j_tag.push(row.0.as_str());
                            j_ver.push(row.1);
                            j_payload.push(row.2.as_slice());
                            j_crc.push(row.3);
                            j_due.push(None);
                            j_at.push(now);
                        }
                        r_type.push("counter");
                        r_id.push(id.as_str());
                        r_msg.push(message_id);
                        r_shard.push(shard);
                        r_offset.push(2 * n);
                        r_tag.push(reply.0.as_str());
                        r_ver.push(reply.1);
                        r_payload.push(reply.2.as_slice());
                        r_crc.push(reply.3);
                        r_at.push(now);
                    }
                    let mut tx = pool.begin().await?;
                    sqlx::query(AssertSqlSafe(insert_journal.clone()))
                        .bind(j_shard)
                        .bind(j_offset)
                        .bind(j_kind)
                        .bind(j_type)
                        .bind(j_id)
                        .bind(j_seq)
                        .bind(j_msg)
                        .bind(j_tag)
                        .bind(j_ver)
                        .bind(j_payload)
                        .bind(j_crc)
                        .bind(j_due)
                        .bind(j_at)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(insert_replies.clone()))
                        .bind(r_type)
                        .bind(r_id)
                        .bind(r_msg)
                        .bind(r_shard)
                        .bind(r_offset)
                        .bind(r_tag)
                        .bind(r_ver)
                        .bind(r_payload)
                        .bind(r_crc)
                        .bind(r_at)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    let done = Instant::now();
                    if done >= window_start && done < end {
                        asks += RAW_BATCH as u64;
                    }
                }
                Ok(asks)
            })
        })
        .collect();
    let mut asks = 0;
    let mut failure = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => asks += n,
            Err(e) => failure = Some(e),
        }
    }
    pool.close().await;
    drop_schema(admin, &raw).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(asks as f64 / s.raw_measure.as_secs_f64()),
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 1 on SQLite

async fn throughput_sqlite(s: &Settings, report: &mut Report) {
    let dir = std::env::temp_dir().join(format!(
        "entlog-load-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("load.db");
    let cluster = Cluster::builder()
        .sqlite(&path)
        .config(config())
        .entity(Counter { node: 1 })
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a SQLite cluster: {e}"));
    ready(&cluster, report, "throughput (sqlite)").await;
    let load = closed_loop(
        &cluster,
        None,
        entity_ids(),
        IN_FLIGHT,
        s.warm_up,
        s.sqlite_measure,
    )
    .await;
    println!("  sqlite:   {}", load.line());
    println!("            {}", load.costs());
    println!(
        "            {} asks answered in all (warm-up included), {} errors",
        grouped(load.ok_total as f64),
        load.errors
    );
    if let Some(e) = &load.first_error {
        report.anomaly(format!(
            "throughput (sqlite): {} asks failed; first: {e}",
            load.errors
        ));
    }
    report.sqlite = Some(load);
    report.seq_sqlite = Some(sequential_on(&cluster, s, report, "sqlite").await);
    cluster.shutdown().await.unwrap();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Scenario 2: sequential asks to one entity

async fn sequential(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("seq");
    drop_schema(admin, &schema).await;
    let cluster = pg_cluster(url, &schema, config(), 1).await;
    ready(&cluster, report, "sequential").await;
    report.seq = Some(sequential_on(&cluster, s, report, "postgres").await);
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}

/// Sequential asks to one counter of `cluster`; prints and returns their latencies.
async fn sequential_on(cluster: &Cluster, s: &Settings, report: &mut Report, what: &str) -> Lat {
    let counter = cluster.entity::<Counter>("seq-1");
    let mut lat = Vec::with_capacity(s.seq_asks);
    let mut failed = None;
    for i in 0..s.seq_warm_up + s.seq_asks {
        let t = Instant::now();
        match counter.ask(Cmd::Add(1)).await {
            Ok(_) if i >= s.seq_warm_up => lat.push(t.elapsed()),
            Ok(_) => {}
            Err(e) => {
                failed = Some(format!("ask {i}: {e}"));
                break;
            }
        }
    }
    if let Some(e) = failed {
        report.anomaly(format!("sequential ({what}): {e}"));
    }
    let lat = Lat::new(lat);
    println!(
        "  {} sequential asks ({what}): p50 {}  p90 {}  p99 {}  max {}",
        lat.0.len(),
        ms(lat.pct(0.5)),
        ms(lat.pct(0.9)),
        ms(lat.pct(0.99)),
        ms(lat.max())
    );
    lat
}

// ---------------------------------------------------------------------------------------
// Scenario 8: memory under many distinct entities

/// Entities kept in memory in the memory scenario (`Config::max_active_entities`).
const MEMORY_CAP: usize = 10_000;

/// Asks 200,000 distinct counters (10,000 in quick mode: 1,000), 256 in flight, with
/// `max_active_entities` at 10,000: RSS and entities in memory after the first 10,000 and
/// at the end. Bounded memory means the two RSS figures stay close.
async fn memory(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("mem");
    drop_schema(admin, &schema).await;
    let cap = if s.quick { 1_000 } else { MEMORY_CAP };
    let total = if s.quick { 10_000 } else { 200_000 };
    let cluster = pg_cluster(
        url,
        &schema,
        Config {
            max_active_entities: cap,
            ..config()
        },
        1,
    )
    .await;
    ready(&cluster, report, "memory").await;
    let next = Arc::new(AtomicU64::new(0));
    for step in [cap, total] {
        let tasks: Vec<JoinHandle<Result<(), String>>> = (0..IN_FLIGHT)
            .map(|_| {
                let cluster = cluster.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= step {
                            return Ok(());
                        }
                        cluster
                            .entity::<Counter>(&format!("m-{i}"))
                            .ask(Cmd::Add(1))
                            .await
                            .map_err(|e| format!("ask {i}: {e}"))?;
                    }
                })
            })
            .collect();
        for t in tasks {
            if let Ok(Err(e)) = t.await {
                report.anomaly(format!("memory: {e}"));
            }
        }
        next.store(step as u64, Ordering::Relaxed);
        let in_memory = cluster.entities_in_memory();
        let rss = rss_kb();
        println!(
            "  after {} distinct entities: {} in memory, RSS {:.1} MB",
            grouped(step as f64),
            grouped(in_memory as f64),
            rss.unwrap_or(0) as f64 / 1024.0
        );
        if in_memory > cap + IN_FLIGHT {
            report.anomaly(format!("memory: {in_memory} entities in memory, cap {cap}"));
        }
        report.memory.push((step, in_memory, rss));
    }
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}

// ---------------------------------------------------------------------------------------
// Scenario 3: failover

/// The server process of runner `runner`'s lock connection (its liveness lock).
async fn lock_backend(admin: &PgPool, schema: &str, runner: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT l.pid FROM pg_locks l JOIN \"{schema}\".runners r
            ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
           AND l.objid::BIGINT = (r.lock_key::BIGINT & 4294967295)
           AND l.classid::BIGINT = ((SELECT value::BIGINT FROM \"{schema}\".meta
                                      WHERE key = 'lock_namespace') & 4294967295)
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         WHERE r.runner = $1"
    )))
    .bind(runner)
    .fetch_one(admin)
    .await
}

/// The `shards` row of `shard`: (owner, epoch).
async fn shard_row(admin: &PgPool, schema: &str, shard: u32) -> Option<(Option<String>, i64)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT owner, epoch FROM \"{schema}\".shards WHERE shard = $1"
    )))
    .bind(shard as i32)
    .fetch_optional(admin)
    .await
    .ok()
    .flatten()
}

/// Waits until `a` and `b` are [`balanced`] with the same shards for a whole second
/// (`owned_shards()` still lists a shard being handed over until its worker is reaped, so
/// one balanced look can be a hand-over in progress). False after `limit`.
async fn settled(a: &Cluster, b: &Cluster, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut since: Option<(Instant, Vec<u32>)> = None;
    while Instant::now() < deadline {
        let now = (a.owned_shards(), balanced(a, b));
        match (&since, now) {
            (_, (_, false)) => since = None,
            (Some((t, sa)), (na, true)) if *sa == na => {
                if t.elapsed() >= Duration::from_secs(1) {
                    return true;
                }
            }
            (_, (na, true)) => since = Some((Instant::now(), na)),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Both runners own shards, and every shard is owned by exactly one of them.
fn balanced(a: &Cluster, b: &Cluster) -> bool {
    let (sa, sb) = (a.owned_shards(), b.owned_shards());
    if sa.is_empty() || sb.is_empty() || sa.len() + sb.len() != SHARDS as usize {
        return false;
    }
    let mut seen = vec![false; SHARDS as usize];
    for s in sa.into_iter().chain(sb) {
        if std::mem::replace(&mut seen[s as usize], true) {
            return false;
        }
    }
    true
}

/// After the old owner (`old_node`) lost its lock at `t0`: asks `id` through B every 5 ms
/// until B (node 2) answers one and lists the shard, or the old owner answers again from a
/// new lease (it noticed the loss: `old_lists` turned false, then it handled a probe).
async fn takeover(
    b: &Cluster,
    id: &str,
    shard: u32,
    t0: Instant,
    old_node: u8,
    old_lists: impl Fn() -> bool,
) -> FailoverRun {
    let t0_micros = micros_since_epoch(t0);

    // Probes: an ask every 5 ms (through B's handle) until B answers one.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Reply, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let probe_errors = Arc::new(AtomicU64::new(0));
    let prober = {
        let b = b.clone();
        let id = id.to_owned();
        let stop = stop.clone();
        let probe_errors = probe_errors.clone();
        tokio::spawn(async move {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let counter = b.entity::<Counter>(&id);
                let tx = tx.clone();
                let probe_errors = probe_errors.clone();
                probes.push(tokio::spawn(async move {
                    match counter.ask(Cmd::Add(1)).await {
                        Ok(r) => {
                            let _ = tx.send((r, Instant::now()));
                        }
                        Err(_) => {
                            probe_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for p in probes {
                let _ = p.await;
            }
        })
    };
    let mut run = FailoverRun {
        a_dropped: None,
        b_owned: None,
        b_reply: None,
        b_handled: None,
        a_again: None,
        gap: Duration::ZERO,
        errors: Vec::new(),
    };
    let deadline = t0 + Duration::from_secs(10);
    let mut served = Vec::new();
    loop {
        if run.a_dropped.is_none() && !old_lists() {
            run.a_dropped = Some(t0.elapsed());
        }
        if run.b_owned.is_none() && b.owned_shards().contains(&shard) {
            run.b_owned = Some(t0.elapsed());
        }
        while let Ok((reply, at)) = rx.try_recv() {
            if reply.node != CHILD_NODE {
                served.push(reply.handled_at);
            }
            let handled = Duration::from_micros(reply.handled_at.saturating_sub(t0_micros));
            if reply.node == 2 && run.b_reply.is_none() {
                run.b_reply = Some(at - t0);
                run.b_handled = Some(handled);
            }
            // A handled an ask after it noticed the loss: it re-acquired the shard.
            if reply.node == old_node
                && run.a_again.is_none()
                && run.a_dropped.is_some_and(|d| handled > d)
            {
                run.a_again = Some(at - t0);
            }
        }
        // After B's first reply, wait for B to list the shard too (publication lag).
        let b_done = run.b_reply.is_some() && run.b_owned.is_some();
        if b_done || run.a_again.is_some() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let end_micros = micros_since_epoch(Instant::now());
    stop.store(true, Ordering::Relaxed);
    if tokio::time::timeout(Duration::from_secs(30), prober)
        .await
        .is_err()
    {
        run.errors
            .push("probe asks still unanswered 30 s after the run".into());
    }
    while let Ok((reply, _)) = rx.try_recv() {
        if reply.node != CHILD_NODE {
            served.push(reply.handled_at);
        }
    }
    served.retain(|&t| t >= t0_micros && t <= end_micros);
    served.sort_unstable();
    run.gap = std::iter::once(t0_micros)
        .chain(served.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| Duration::from_micros(w[1] - w[0]))
        .max()
        .unwrap_or_default();
    let errors = probe_errors.load(Ordering::Relaxed);
    if errors > 0 {
        run.errors.push(format!("{errors} probe asks failed"));
    }
    run
}

async fn failover(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("fail");
    drop_schema(admin, &schema).await;
    let pid = std::process::id();
    let runner_config = |id: String| Config {
        runner_id: Some(id),
        ..config()
    };
    let mut a_gen = 0;
    let mut a = pg_cluster(
        url,
        &schema,
        runner_config(format!("load-a{a_gen}-{pid}")),
        1,
    )
    .await;
    let b = pg_cluster(url, &schema, runner_config(format!("load-b-{pid}")), 2).await;
    let mut taken_over = 0;
    for attempt in 0..s.failover_attempts {
        if taken_over >= s.failover_runs {
            break;
        }
        // Both runners up and sharing the shards (A reconnects by itself after a kill).
        let settle = Instant::now();
        let mut ok = settled(&a, &b, Duration::from_secs(20)).await;
        if !ok {
            report.anomaly(format!(
                "failover attempt {attempt}: ownership not settled 20 s after the previous \
                 run (A owns {}, B owns {}); replacing A",
                a.owned_shards().len(),
                b.owned_shards().len()
            ));
            a.shutdown().await.unwrap();
            a_gen += 1;
            a = pg_cluster(
                url,
                &schema,
                runner_config(format!("load-a{a_gen}-{pid}")),
                1,
            )
            .await;
            ok = settled(&a, &b, Duration::from_secs(20)).await;
        }
        if !ok {
            report.anomaly("failover: ownership never settled; giving up".into());
            break;
        }
        let settled_in = settle.elapsed();
        let a_shards = a.owned_shards();
        let shard = a_shards[attempt % a_shards.len()];
        let id = (0..)
            .map(|i| format!("f{attempt}-{i}"))
            .find(|id| shard_of(id, SHARDS) == shard)
            .unwrap();
        let counter = b.entity::<Counter>(&id);
        match counter.ask(Cmd::Add(1)).await {
            Ok(r) if r.node == 1 => {}
            Ok(r) => {
                let row = shard_row(admin, &schema, shard).await;
                report.anomaly(format!(
                    "failover attempt {attempt}: shard {shard} was in A's owned_shards() (and \
                     not B's) but B's runner handled the ask {} ms after the pick; now A's \
                     set has it: {}, B's: {}; shards row (owner, epoch): {row:?}",
                    micros_since_epoch(Instant::now()).saturating_sub(r.handled_at) / 1000,
                    a.owned_shards().contains(&shard),
                    b.owned_shards().contains(&shard),
                ));
                continue;
            }
            Err(e) => {
                report.anomaly(format!(
                    "failover attempt {attempt}: ask before the kill failed: {e}"
                ));
                continue;
            }
        }
        // A random phase against both runners' 250 ms rebalance and ping periods.
        let phase = (Uuid::now_v7().as_u128() >> 32) % 250;
        tokio::time::sleep(Duration::from_millis(phase as u64)).await;
        let backend = match lock_backend(admin, &schema, a.runner_id()).await {
            Ok(p) => p,
            Err(e) => {
                report.anomaly(format!(
                    "failover attempt {attempt}: A's lock backend not found: {e}"
                ));
                continue;
            }
        };
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(backend)
            .fetch_one(admin)
            .await
            .unwrap();
        let t0 = Instant::now();
        if !killed {
            report.anomaly(format!(
                "failover attempt {attempt}: pg_terminate_backend({backend}) returned false"
            ));
            continue;
        }
        let run = takeover(&b, &id, shard, t0, 1, || a.owned_shards().contains(&shard)).await;
        for e in &run.errors {
            report.anomaly(format!("failover attempt {attempt}: {e}"));
        }
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), ms);
        println!(
            "  attempt {attempt} (settled in {}): shard {shard}; A dropped it after {}, B owned \
             it after {}, first reply from B after {} (handled at {}); longest gap without a \
             handled probe {}{}",
            ms(settled_in),
            show(run.a_dropped),
            show(run.b_owned),
            show(run.b_reply),
            show(run.b_handled),
            ms(run.gap),
            match run.a_again {
                Some(d) => format!(
                    "; A re-opened its lock session and answered again after {} \
                     (B never took the shard)",
                    ms(d)
                ),
                None => String::new(),
            }
        );
        if run.b_reply.is_some() {
            taken_over += 1;
        } else if run.a_again.is_none() {
            report.anomaly(format!(
                "failover attempt {attempt}: no reply from B nor from A within 10 s of the kill"
            ));
        }
        report.failover.push(run);
    }
    // The same with a runner process killed outright (SIGKILL): no runner left to
    // re-open the lock session, so B must take over.
    a.shutdown().await.unwrap();
    println!("  -- runner processes struck instead of a lock connection:");
    failover_process(admin, s, report, &b, &schema).await;
    b.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}

/// The environment variable that turns this program into a child runner process.
const CHILD_ENV: &str = "ENTLOG_LOAD_CHILD_RUNNER";
/// The child runner's node number (its `handled_at` is on another clock).
const CHILD_NODE: u8 = 3;

/// Child mode (`CHILD_ENV` = `schema|runner id|lock url or empty`): host the counter as
/// node 3 until killed, or until stdin closes (the parent went away).
fn child_runner(spec: &str) {
    let mut parts = spec.split('|');
    let (schema, id) = (parts.next().unwrap(), parts.next().unwrap());
    let lock_url = parts.next().filter(|u| !u.is_empty()).map(str::to_owned);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Config {
            runner_id: Some(id.to_owned()),
            ..config()
        };
        let _cluster = match lock_url {
            None => pg_cluster(&pg_url(), schema, config, CHILD_NODE).await,
            Some(lock_url) => {
                let journal = PgJournal::open(
                    PgOptions::new(pg_url())
                        .schema(schema)
                        .shard_count(SHARDS)
                        .lock_url(lock_url),
                )
                .await
                .unwrap();
                Cluster::builder()
                    .journal(journal)
                    .config(config)
                    .entity(Counter { node: CHILD_NODE })
                    .start()
                    .await
                    .unwrap()
            }
        };
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut buf = [0u8; 64];
            while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
        })
        .await;
    });
    std::process::exit(0);
}

/// Shards whose `shards.owner` is `runner`.
async fn db_owned(admin: &PgPool, schema: &str, runner: &str) -> Vec<u32> {
    let rows: Vec<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT shard FROM \"{schema}\".shards WHERE owner = $1 ORDER BY shard"
    )))
    .bind(runner)
    .fetch_all(admin)
    .await
    .unwrap_or_default();
    rows.into_iter().map(|s| s as u32).collect()
}

/// Waits until the child runner `child` and B split the shards (per the `shards` table
/// and B's own list), unchanged for a whole second.
async fn settled_with_child(
    admin: &PgPool,
    schema: &str,
    b: &Cluster,
    child: &str,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut since: Option<(Instant, Vec<u32>)> = None;
    while Instant::now() < deadline {
        let theirs = db_owned(admin, schema, child).await;
        let b_db = db_owned(admin, schema, b.runner_id()).await;
        let ok = !theirs.is_empty()
            && theirs.len() + b_db.len() == SHARDS as usize
            && b.owned_shards() == b_db;
        match (&since, ok) {
            (_, false) => since = None,
            (Some((t, prev)), true) if *prev == theirs => {
                if t.elapsed() >= Duration::from_secs(1) {
                    return true;
                }
            }
            (_, true) => since = Some((Instant::now(), theirs)),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// How a runner process is taken out in a failover run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    /// `kill -9`: the kernel closes its sockets, the server frees its locks at once.
    Kill,
    /// SIGSTOP: the process stops answering with every socket open.
    Stop,
    /// Its lock connection goes silent (a proxy stops forwarding, closes nothing).
    Silence,
}

impl Strike {
    const ALL: [Strike; 3] = [Strike::Kill, Strike::Stop, Strike::Silence];

    fn label(self) -> &'static str {
        match self {
            Strike::Kill => "runner process SIGKILLed",
            Strike::Stop => "runner process SIGSTOPped",
            Strike::Silence => "lock connection black-holed",
        }
    }
}

async fn failover_process(
    admin: &PgPool,
    s: &Settings,
    report: &mut Report,
    b: &Cluster,
    schema: &str,
) {
    for strike in Strike::ALL {
        println!("  -- {}:", strike.label());
        for run_no in 0..s.failover_runs {
            if let Some(run) = failover_child(admin, report, b, schema, strike, run_no).await {
                report.failover_process.push((strike, run));
            }
        }
    }
}

/// One run: a child runner shares the shards with B, is struck, and B takes over.
async fn failover_child(
    admin: &PgPool,
    report: &mut Report,
    b: &Cluster,
    schema: &str,
    strike: Strike,
    run_no: usize,
) -> Option<FailoverRun> {
    let exe = std::env::current_exe().unwrap();
    let pid = std::process::id();
    {
        let proxy = match strike {
            Strike::Silence => match BlackHoleProxy::for_url(&pg_url()).await {
                Ok(p) => Some(p),
                Err(e) => {
                    report.anomaly(format!("failover ({strike:?}): no proxy: {e}"));
                    return None;
                }
            },
            _ => None,
        };
        let lock_url = proxy.as_ref().map(|(_, u)| u.clone()).unwrap_or_default();
        let runner = format!("load-{strike:?}{run_no}-{pid}").to_lowercase();
        let started = Instant::now();
        let child = match std::process::Command::new(&exe)
            .env(CHILD_ENV, format!("{schema}|{runner}|{lock_url}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                report.anomaly(format!("failover ({strike:?}): cannot start a runner: {e}"));
                return None;
            }
        };
        let end = |mut child: std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        let ok = settled_with_child(admin, schema, b, &runner, Duration::from_secs(20)).await;
        let settled_in = started.elapsed();
        let theirs = db_owned(admin, schema, &runner).await;
        if !ok || theirs.is_empty() {
            report.anomaly(format!(
                "failover ({strike:?}) run {run_no}: the child runner and B did not settle in \
                 20 s (child owns {} shards per the table, B lists {})",
                theirs.len(),
                b.owned_shards().len()
            ));
            end(child);
            return None;
        }
        let shard = theirs[run_no % theirs.len()];
        let id = (0..)
            .map(|i| format!("p{strike:?}{run_no}-{i}"))
            .find(|id| shard_of(id, SHARDS) == shard)
            .unwrap();
        match b.entity::<Counter>(&id).ask(Cmd::Add(1)).await {
            Ok(r) if r.node == CHILD_NODE => {}
            other => {
                report.anomaly(format!(
                    "failover ({strike:?}) run {run_no}: ask before the strike to the child's \
                     shard {shard}: {:?}",
                    other.map_err(|e| e.to_string())
                ));
                end(child);
                return None;
            }
        }
        let phase = (Uuid::now_v7().as_u128() >> 32) % 250;
        tokio::time::sleep(Duration::from_millis(phase as u64)).await;
        let signal = |sig: &str| {
            let _ = std::process::Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        };
        match strike {
            Strike::Kill => signal("-KILL"),
            Strike::Stop => signal("-STOP"),
            Strike::Silence => {
                if let Some((p, _)) = &proxy {
                    p.set_silent(true);
                }
            }
        }
        let t0 = Instant::now();
        let run = takeover(b, &id, shard, t0, CHILD_NODE, || true).await;
        if strike == Strike::Stop {
            signal("-CONT");
        }
        end(child);
        for e in &run.errors {
            report.anomaly(format!("failover ({strike:?}) run {run_no}: {e}"));
        }
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), ms);
        println!(
            "  run {run_no} (child settled in {}): shard {shard}; B listed it after {}, first \
             reply from B after {} (handled at {}); longest gap without a handled probe {}",
            ms(settled_in),
            show(run.b_owned),
            show(run.b_reply),
            show(run.b_handled),
            ms(run.gap),
        );
        if run.b_reply.is_none() {
            report.anomaly(format!(
                "failover ({strike:?}) run {run_no}: no reply from B within 10 s of the strike"
            ));
        }
        Some(run)
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 4: activation

async fn activation(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("act");
    drop_schema(admin, &schema).await;
    let n = s.activation_events;
    let (snap, full, warm) = ("act-snap", "act-full", "warm");
    let act_config = || Config {
        snapshot_every: 100,
        ..config()
    };
    let write_started = Instant::now();
    let cluster = pg_cluster(url, &schema, act_config(), 1).await;
    ready(&cluster, report, "activation").await;
    // `snap`: all but 50 events in parallel; keep the snapshot taken so far; 50 more.
    if let Err(e) = fill(&cluster, snap, n - 50).await {
        report.anomaly(format!("activation: writing {snap}: {e}"));
        return;
    }
    exec(
        admin,
        format!(
            "CREATE TABLE \"{schema}\".snap_keep AS SELECT * FROM \"{schema}\".snapshots
              WHERE entity_type = 'counter' AND entity_id = '{snap}'"
        ),
    )
    .await;
    for _ in 0..50 {
        if let Err(e) = cluster.entity::<Counter>(snap).ask(Cmd::Add(1)).await {
            report.anomaly(format!("activation: writing {snap}: {e}"));
            return;
        }
    }
    if let Err(e) = fill(&cluster, full, n).await {
        report.anomaly(format!("activation: writing {full}: {e}"));
        return;
    }
    cluster.shutdown().await.unwrap();
    drop(cluster);
    let kept: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT seq FROM \"{schema}\".snap_keep"
    )))
    .fetch_optional(admin)
    .await
    .unwrap();
    let Some(kept) = kept else {
        report.anomaly(format!(
            "activation: no snapshot of {snap} after {} events (snapshot_every 100)",
            n - 50
        ));
        return;
    };
    let replayed = n - kept as u64;
    println!(
        "  wrote 2 x {} events in {:.1} s; {snap}'s kept snapshot is at seq {kept} ({replayed} \
         events to replay); {full} has no snapshot",
        grouped(n as f64),
        write_started.elapsed().as_secs_f64()
    );

    let mut result = Activation {
        events: n,
        replayed,
        snap_cold: Vec::new(),
        snap_hot: Vec::new(),
        full_cold: Vec::new(),
        full_hot: Vec::new(),
    };
    for rep in 0..s.activation_reps {
        // Graceful shutdown snapshots every active entity: put the state back as wanted.
        for sql in [
            format!("DELETE FROM \"{schema}\".snapshots WHERE entity_id IN ('{snap}', '{full}')"),
            format!("INSERT INTO \"{schema}\".snapshots SELECT * FROM \"{schema}\".snap_keep"),
        ] {
            exec(admin, sql).await;
        }
        let cluster = pg_cluster(url, &schema, act_config(), 1).await;
        ready(&cluster, report, "activation").await;
        // Other entities first, concurrently: every pooled connection has run (and
        // planned) the reads and commits before the timed asks.
        for round in 0..3 {
            let asks: Vec<JoinHandle<_>> = (0..SHARDS)
                .map(|i| {
                    let c = cluster.entity::<Counter>(&format!("{warm}-{round}-{i}"));
                    tokio::spawn(async move { c.ask(Cmd::Get).await })
                })
                .collect();
            for a in asks {
                if let Err(e) = a.await.unwrap() {
                    report.anomaly(format!("activation rep {rep}: warm-up ask: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Per entity: the first ask (activation), then the median of 5 more (hot).
        let mut times = [Duration::ZERO; 4];
        for (k, id) in [snap, full].into_iter().enumerate() {
            let mut hot = Vec::new();
            for i in 0..6 {
                let t = Instant::now();
                match cluster.entity::<Counter>(id).ask(Cmd::Get).await {
                    Ok(r) if r.total == n as i64 => hot.push(t.elapsed()),
                    Ok(r) => report.anomaly(format!(
                        "activation rep {rep}: {id} replied total {} instead of {n}",
                        r.total
                    )),
                    Err(e) => report.anomaly(format!("activation rep {rep}: ask to {id}: {e}")),
                }
                if i == 0 {
                    times[2 * k] = hot.pop().unwrap_or_default();
                }
            }
            times[2 * k + 1] = median(&hot);
        }
        println!(
            "  rep {rep}: from snapshot: first ask {}, then {};  no snapshot: first ask {}, \
             then {}",
            ms(times[0]),
            ms(times[1]),
            ms(times[2]),
            ms(times[3])
        );
        result.snap_cold.push(times[0]);
        result.snap_hot.push(times[1]);
        result.full_cold.push(times[2]);
        result.full_hot.push(times[3]);
        cluster.shutdown().await.unwrap();
    }
    report.activation = Some(result);
    drop_schema(admin, &schema).await;
}

// ---------------------------------------------------------------------------------------
// Scenario 7: scheduled-message lateness on an idle runner

/// How late each scheduled message ran, in microseconds (negative: early).
static LATENESS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Records how late it runs: its wall clock minus the due time its command carries (the
/// instant its message was scheduled for).
struct Late;

#[derive(Serialize, Deserialize)]
struct Due(i64);

impl Entity for Late {
    const TYPE: &'static str = "late";
    type Command = Due;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(&self, _: &(), due: Due, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        let late = Timestamp::now().as_micros() - due.0;
        LATENESS.lock().unwrap().push(late);
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

/// A small deterministic generator (xorshift64*): the bench needs spread, not quality.
struct Spread(u64);

impl Spread {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo + 1)
    }
}

/// Schedules `late_messages` messages on `cluster` (its runner idle otherwise) and waits
/// for them; returns the lateness of each.
async fn lateness_run(cluster: &Cluster, s: &Settings, what: &str, report: &mut Report) -> Lat {
    LATENESS.lock().unwrap().clear();
    let (lo, hi) = s.late_spread_ms;
    let mut spread = Spread(0x9E37_79B9_7F4A_7C15);
    for i in 0..s.late_messages {
        let at = Timestamp::now().after(Duration::from_millis(spread.next(lo, hi)));
        let sent = cluster
            .entity::<Late>(&format!("late-{i:03}"))
            .tell_at(at, Due(at.as_micros()))
            .await;
        if let Err(e) = sent {
            report.anomaly(format!("lateness ({what}): tell_at failed: {e}"));
            return Lat::new(Vec::new());
        }
    }
    let all_in = wait_until(Duration::from_millis(hi + 10_000), || {
        LATENESS.lock().unwrap().len() >= s.late_messages
    })
    .await;
    // A little longer, for a duplicate delivery to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = std::mem::take(&mut *LATENESS.lock().unwrap());
    if !all_in || late.len() != s.late_messages {
        report.anomaly(format!(
            "lateness ({what}): {} deliveries of {} scheduled messages",
            late.len(),
            s.late_messages
        ));
    }
    let early = late.iter().filter(|&&l| l < 0).count();
    if early > 0 {
        report.anomaly(format!("lateness ({what}): {early} messages handled early"));
    }
    let lat = Lat::new(
        late.iter()
            .map(|&l| Duration::from_micros(l.max(0) as u64))
            .collect(),
    );
    println!(
        "  {what}: {} scheduled messages {lo}–{hi} ms ahead: lateness p50 {}  p99 {}  max {}  \
         (target p99 < 50 ms: {})",
        lat.0.len(),
        ms(lat.pct(0.5)),
        ms(lat.pct(0.99)),
        ms(lat.max()),
        if lat.pct(0.99) < Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
    lat
}

async fn lateness(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("late");
    drop_schema(admin, &schema).await;
    let cluster = Cluster::builder()
        .postgres_schema(url, &schema)
        .config(config())
        .entity(Late)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a cluster on schema {schema}: {e}"));
    ready(&cluster, report, "lateness (postgres)").await;
    let lat = lateness_run(&cluster, s, "postgres", report).await;
    report.lateness.push(("postgres", lat));
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;

    let dir = std::env::temp_dir().join(format!(
        "entlog-late-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("late.db"))
        .config(config())
        .entity(Late)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a SQLite cluster: {e}"));
    ready(&cluster, report, "lateness (sqlite)").await;
    let lat = lateness_run(&cluster, s, "sqlite", report).await;
    report.lateness.push(("sqlite", lat));
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Main

/// Runs a scenario with a time limit; false when it did not finish (a hang).
async fn timed<F: Future<Output = ()>>(name: &str, limit: Duration, scenario: F) -> bool {
    println!("\n== {name}");
    let started = Instant::now();
    let done = tokio::time::timeout(limit, scenario).await.is_ok();
    println!("   ({name}: {:.1} s)", started.elapsed().as_secs_f64());
    done
}

fn print_summary(r: &Report, s: &Settings, wall: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The URL without user and password.
    let host = pg_url().rsplit('@').next().unwrap_or_default().to_owned();
    println!();
    println!(
        "load benchmark ({}medians of this run; PostgreSQL {} at {host}, {cores} cores)",
        if s.quick { "QUICK mode, " } else { "" },
        r.pg_version
    );
    let col = |name: &str, rest: String| println!("{name:<52} {rest}");
    if let Some(pg) = &r.pg {
        let raw = match r.raw {
            Some(raw) => format!(
                "   (raw rows limit {} asks/s; ratio {:.2})",
                grouped(raw),
                pg.rate() / raw
            ),
            None => String::new(),
        };
        col(
            &format!("persisted asks, {ENTITIES} entities, {IN_FLIGHT} in flight"),
            format!("{}{raw}", pg.line()),
        );
        col("", pg.costs());
    }
    for (name, load) in &r.variants {
        col(&format!("  same, {name}"), load.line());
    }
    if let Some(pg64) = &r.pg64 {
        let raw = match r.raw {
            Some(raw) => format!("   (ratio {:.2} of the raw limit)", pg64.rate() / raw),
            None => String::new(),
        };
        col("same, 64 in flight", format!("{}{raw}", pg64.line()));
        col("", pg64.costs());
    }
    if let Some(sq) = &r.sqlite {
        col("sqlite, same", sq.line());
    }
    for (name, seq) in [("postgres", &r.seq), ("sqlite", &r.seq_sqlite)] {
        if let Some(seq) = seq {
            col(
                &format!("sequential ask, one entity ({name})"),
                format!(
                    "p50 {}  p99 {}  max {}",
                    ms(seq.pct(0.5)),
                    ms(seq.pct(0.99)),
                    ms(seq.max())
                ),
            );
        }
    }
    if let [(n0, m0, Some(r0)), .., (n1, m1, Some(r1))] = r.memory.as_slice() {
        col(
            "RSS, many distinct entities (cap 10,000)",
            format!(
                "{:.1} MB after {} ({} in memory), {:.1} MB after {} ({} in memory): ratio {:.2}",
                *r0 as f64 / 1024.0,
                grouped(*n0 as f64),
                grouped(*m0 as f64),
                *r1 as f64 / 1024.0,
                grouped(*n1 as f64),
                grouped(*m1 as f64),
                *r1 as f64 / *r0 as f64
            ),
        );
    }
    if !r.failover.is_empty() {
        let by_b: Vec<Duration> = r.failover.iter().filter_map(|f| f.b_reply).collect();
        let owned: Vec<Duration> = r.failover.iter().filter_map(|f| f.b_owned).collect();
        let back: Vec<Duration> = r.failover.iter().filter_map(|f| f.a_again).collect();
        let gaps: Vec<Duration> = r.failover.iter().map(|f| f.gap).collect();
        col(
            "failover (lock connection killed → first reply from B)",
            if by_b.is_empty() {
                format!("no kill of {} ended with B taking over", r.failover.len())
            } else {
                format!(
                    "median {}  ({} of {} kills; runs: {}; B listed the shard after {})",
                    ms(median(&by_b)),
                    by_b.len(),
                    r.failover.len(),
                    list(&by_b),
                    if owned.is_empty() {
                        "-".to_owned()
                    } else {
                        list(&owned)
                    }
                )
            },
        );
        if !back.is_empty() {
            col(
                "  … or A re-opened its lock session first",
                format!(
                    "{} of {} kills; first reply from A's new lease after {}",
                    back.len(),
                    r.failover.len(),
                    list(&back)
                ),
            );
        }
        col(
            "  longest gap without a handled probe",
            format!("median {}  (all kills: {})", ms(median(&gaps)), list(&gaps)),
        );
    }
    for strike in Strike::ALL {
        let runs: Vec<&FailoverRun> = r
            .failover_process
            .iter()
            .filter(|(s, _)| *s == strike)
            .map(|(_, f)| f)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let by_b: Vec<Duration> = runs.iter().filter_map(|f| f.b_reply).collect();
        let gaps: Vec<Duration> = runs.iter().map(|f| f.gap).collect();
        let max = by_b.iter().max().copied().unwrap_or_default();
        col(
            &format!("failover ({} → first reply from B)", strike.label()),
            format!(
                "median {}  max {}  (runs: {}; longest gaps {})",
                ms(median(&by_b)),
                ms(max),
                list(&by_b),
                list(&gaps)
            ),
        );
    }
    if let Some(a) = &r.activation {
        col(
            &format!("activation of a {}-event entity", grouped(a.events as f64)),
            format!(
                "snapshot every 100 (+{} events replayed): median {} (hot {}); without: {} \
                 (hot {})",
                a.replayed,
                ms(median(&a.snap_cold)),
                ms(median(&a.snap_hot)),
                ms(median(&a.full_cold)),
                ms(median(&a.full_hot))
            ),
        );
    }
    for (backend, lat) in &r.lateness {
        let (lo, hi) = s.late_spread_ms;
        col(
            &format!("scheduled-message lateness, idle runner, {backend}"),
            format!(
                "p50 {}  p99 {}  max {}  ({} messages {lo}–{hi} ms ahead)",
                ms(lat.pct(0.5)),
                ms(lat.pct(0.99)),
                ms(lat.max()),
                lat.0.len()
            ),
        );
    }
    if let Some(kb) = r.rss_after_kb {
        col(
            &format!("RSS after {ENTITIES} active entities"),
            format!(
                "{:.1} MB (at start {:.1} MB; client, runtime and pools included)",
                kb as f64 / 1024.0,
                r.rss_start_kb.unwrap_or(0) as f64 / 1024.0
            ),
        );
    }
    if r.anomalies.is_empty() {
        println!("anomalies: none");
    } else {
        println!("anomalies ({}):", r.anomalies.len());
        for a in &r.anomalies {
            println!("  - {a}");
        }
    }
    println!("bench wall time: {:.1} s", wall.as_secs_f64());
}

fn main() {
    EPOCH.get_or_init(Instant::now);
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_runner(&spec);
        return;
    }
    let wall = Instant::now();
    let s = Settings::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = pg_url();
    let mut report = Report {
        rss_start_kb: rss_kb(),
        ..Report::default()
    };
    rt.block_on(async {
        let admin = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
        report.pg_version = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&admin)
            .await
            .unwrap_or_default();
        println!(
            "entlog load benchmark, quick mode: {}; schemas bench_load_{}_*",
            s.quick,
            std::process::id()
        );
        let limit = |secs: u64| Duration::from_secs(if s.quick { secs.max(60) } else { secs });
        let (url, admin, s) = (&url, &admin, &s);
        let r = &mut report;
        // ENTLOG_LOAD_ONLY=failover,activation runs only those scenarios.
        let only = std::env::var("ENTLOG_LOAD_ONLY").unwrap_or_default();
        let run = |key: &str| only.is_empty() || only.split(',').any(|k| k.trim() == key);
        if run("throughput") {
            let name = "1. throughput on PostgreSQL (+ RSS, raw baseline)";
            if !timed(name, limit(120), throughput_pg(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(120)));
            }
        }
        if run("variants") && (!s.quick || !only.is_empty()) {
            let name = "1b. throughput with other journal options";
            if !timed(name, limit(90), throughput_variants(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(90)));
            }
        }
        if run("sequential") {
            let name = "2. sequential asks";
            if !timed(name, limit(90), sequential(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(90)));
            }
        }
        if run("failover") {
            let name = "3. failover";
            if !timed(name, limit(180), failover(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(180)));
            }
        }
        if run("activation") {
            let name = "4. activation";
            if !timed(name, limit(180), activation(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(180)));
            }
        }
        if run("sqlite") {
            let name = "1'. throughput on SQLite";
            if !timed(name, limit(90), throughput_sqlite(s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(90)));
            }
        }
        if run("memory") {
            let name = "8. memory under many distinct entities";
            if !timed(name, limit(240), memory(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(240)));
            }
        }
        if run("lateness") {
            let name = "7. scheduled-message lateness";
            if !timed(name, limit(90), lateness(url, admin, s, r)).await {
                r.anomaly(format!("{name}: did not finish within {:?}", limit(90)));
            }
        }
        admin.close().await;
    });
    print_summary(&report, &s, wall.elapsed());
    // Scenario tasks left running after a hang must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(5));
    if !report.anomalies.is_empty() {
        std::process::exit(1);
    }
}
