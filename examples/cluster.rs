//! Several runner processes share one PostgreSQL journal; kill one and watch the others
//! take its shards over.
//!
//! Build once, then start runners in separate terminals (or `cargo run --example cluster
//! -- runner` in each, which waits for the others' builds):
//!
//! ```sh
//! cargo build --example cluster
//! target/debug/examples/cluster runner            # terminal 1
//! target/debug/examples/cluster runner            # terminal 2
//! target/debug/examples/cluster runner            # terminal 3
//! target/debug/examples/cluster load --asks 20000 --entities 200 --concurrency 64   # terminal 4
//! ```
//!
//! Every runner prints its id and the shards it owns once a second; the 16 shards are
//! spread over the live runners. While `load` runs, stop a runner:
//!
//! - Ctrl-C (or `kill <pid>`, SIGTERM): it finishes its in-flight batches, snapshots and
//!   releases its shards, and the others own them within a rebalance interval (250 ms);
//! - `kill -9 <pid>`: nothing is released, but its lock connection dies with it, the
//!   server drops its advisory locks, and the others take its shards as soon as they
//!   notice. Messages it had not committed are redelivered to the new owner: no ask is
//!   lost or executed twice.
//!
//! `load` is a client-only member (it hosts nothing): it sends `--asks` asks (`Add(1)`) over
//! `--entities` fresh counters with `--concurrency` in flight, prints progress, the throughput
//! and latency percentiles, then asks every counter for its value and checks that it equals
//! the number of acknowledged asks sent to it (exit status 1 when one differs). Start a
//! runner again and it takes its share back.
//!
//! Options (both subcommands): `--url` (default `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`), `--schema` (default `entlog_cluster_demo`;
//! created by the first member that starts). `runner --id NAME` names a runner (default
//! `runner-<pid>`; ids must be unique among live runners, so pick one on other machines).
//!
//! Runners and shard owners, from another terminal (the `entlog` command-line tool), or
//! live in a browser at http://127.0.0.1:7777/ (the dashboard, with this file's types):
//!
//! ```sh
//! cargo run -p entlog-cli -- status --db postgres://postgres@127.0.0.1:5432/test --schema entlog_cluster_demo
//! target/debug/examples/cluster dashboard
//! ```
//!
//! Start afresh with `psql postgres://postgres@127.0.0.1:5432/test -c 'DROP SCHEMA
//! entlog_cluster_demo CASCADE'` while no member runs.
#![allow(clippy::unwrap_used)]

mod logs;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog::{Cluster, Config, Context, EngineError, Entity, EntityRef, Outcome, Rejection};
// An application enables entlog's `cli` feature and writes `entlog::cli::{Cli, Registry}`;
// the example uses the same crate under its own name, a dev-dependency.
use entlog_cli::{Cli, Registry};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A counter: the entity the runners host.
struct Counter;

#[derive(Debug, Serialize, Deserialize)]
enum Command {
    /// Adds `n`; replies with the new value.
    Add(u64),
    /// Replies with the value.
    Get,
}

#[derive(Debug, Serialize, Deserialize)]
struct Added(u64);

impl Entity for Counter {
    const TYPE: &'static str = "counter";
    type Command = Command;
    type Event = Added;
    type Reply = u64;
    type State = u64;

    async fn handle(
        &self,
        value: &u64,
        command: Command,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        match command {
            Command::Add(n) => Ok(Outcome::new(vec![Added(n)], value + n)),
            Command::Get => Ok(Outcome::reply(*value)),
        }
    }

    fn apply(value: &mut u64, event: &Added) {
        *value += event.0;
    }
}

/// Shards of the demo's journal, fixed when the first member creates it.
const SHARDS: u32 = 16;

/// Where the demo's journal is, unless `DATABASE_URL` and `--schema` say otherwise.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEMO_SCHEMA: &str = "entlog_cluster_demo";

const USAGE: &str = "usage:
  cluster runner [--url URL] [--schema S] [--id NAME]
  cluster load   [--url URL] [--schema S] [--asks N] [--entities M] [--concurrency C]
  cluster dashboard [--bind ADDR]   (the entlog dashboard of the demo's journal)";

struct Args {
    command: String,
    url: String,
    schema: String,
    id: String,
    asks: u64,
    entities: u64,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut a = Args {
        command: args.next().ok_or("a subcommand is needed")?,
        url: std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into()),
        schema: DEMO_SCHEMA.into(),
        id: format!("runner-{}", std::process::id()),
        asks: 10_000,
        entities: 100,
        concurrency: 64,
    };
    if a.command != "runner" && a.command != "load" {
        return Err(format!("unknown subcommand {:?}", a.command));
    }
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{arg} {v}: {e}"));
        match arg.as_str() {
            "--url" => a.url = value,
            "--schema" => a.schema = value,
            "--id" => a.id = value,
            "--asks" => a.asks = number(&value)?,
            "--entities" => a.entities = number(&value)?.max(1),
            "--concurrency" => a.concurrency = number(&value)?.max(1) as usize,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dashboard") {
        // The entlog CLI's dashboard with this file's types, over the demo's journal.
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let cli = ["cluster", "--db", &url, "--schema", DEMO_SCHEMA]
            .into_iter()
            .map(String::from)
            .chain(args.into_iter().skip(1));
        return Cli::new(Registry::new().entity::<Counter>()).main_from(cli);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match runtime.block_on(run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, EngineError> {
    // Warnings and errors on stderr (RUST_LOG for more): see examples/logs/mod.rs.
    logs::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cluster: {e}\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.command == "runner" {
        runner(&args).await?;
        Ok(ExitCode::SUCCESS)
    } else {
        load(&args).await
    }
}

/// Hosts counters until Ctrl-C or SIGTERM, printing the owned shards every second.
async fn runner(args: &Args) -> Result<(), EngineError> {
    let cluster = Cluster::builder()
        .postgres_schema(&args.url, &args.schema)
        .config(
            Config::default()
                .shard_count(SHARDS)
                .runner_id(args.id.clone()),
        )
        .entity(Counter)
        .start()
        .await?;
    println!(
        "{} started (pid {}) on schema {}",
        args.id,
        std::process::id(),
        args.schema
    );
    let printer = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let mut shards = cluster.owned_shards();
                shards.sort_unstable();
                let list: Vec<String> = shards.iter().map(u32::to_string).collect();
                println!(
                    "{} owns {}/{SHARDS} shards: [{}]",
                    cluster.runner_id(),
                    shards.len(),
                    list.join(" ")
                );
            }
        })
    };
    cluster.run_until_signal().await?;
    printer.abort();
    println!("{} stopped: shards released", args.id);
    Ok(())
}

/// Asks `Add(1)` until it is answered, under one message id so that a retry never counts
/// twice.
async fn add_one(counter: &EntityRef<Counter>) -> Result<u64, EngineError> {
    let id = Uuid::now_v7();
    loop {
        match counter.ask_with_id(id, Command::Add(1)).await {
            Err(EngineError::Timeout { .. }) => continue,
            other => return other,
        }
    }
}

/// Sends the asks, reports throughput and latency, and checks every counter.
async fn load(args: &Args) -> Result<ExitCode, EngineError> {
    let cluster = Cluster::builder()
        .postgres_schema(&args.url, &args.schema)
        .config(Config::default().shard_count(SHARDS))
        .client_only()
        .start()
        .await?;
    // Fresh counters for each run, so the check below holds whatever ran before.
    let run = Uuid::now_v7().simple().to_string()[24..].to_owned();
    let name = |i: u64| format!("load-{run}-{i}");
    println!(
        "load {run}: {} asks over {} counters, {} in flight, schema {}",
        args.asks, args.entities, args.concurrency, args.schema
    );

    let acked = Arc::new(AtomicU64::new(0));
    let step = (args.asks / 10).max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.asks {
        let entity = n % args.entities;
        let counter = cluster.entity::<Counter>(&name(entity));
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (acked, total) = (acked.clone(), args.asks);
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = add_one(&counter).await;
            drop(permit);
            if result.is_ok() {
                let done = acked.fetch_add(1, Ordering::SeqCst) + 1;
                if done % step == 0 && done < total {
                    println!("acked {done}/{total}");
                }
            }
            (entity, sent.elapsed(), result)
        });
    }
    let mut per_entity = vec![0u64; args.entities as usize];
    let mut latencies = Vec::with_capacity(args.asks as usize);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (entity, latency, result) = joined.unwrap();
        match result {
            Ok(_) => {
                per_entity[entity as usize] += 1;
                latencies.push(latency);
            }
            Err(e) => {
                errors += 1;
                eprintln!("ask to {} failed: {e}", name(entity));
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "acked {}/{} in {:.2} s: {:.0} asks/s; latency ms p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}; {errors} failed",
        latencies.len(),
        args.asks,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );

    // Each counter must equal the asks acknowledged to it: none lost, none run twice.
    let mut wrong = 0;
    for (entity, expected) in per_entity.iter().enumerate() {
        let id = name(entity as u64);
        let value = cluster.entity::<Counter>(&id).ask(Command::Get).await?;
        if value != *expected {
            wrong += 1;
            println!("counter {id} is {value}, but {expected} asks to it were acknowledged");
        }
    }
    cluster.shutdown().await?;
    if wrong == 0 && errors == 0 {
        println!(
            "counters ok: all {} equal their acknowledged asks",
            args.entities
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("counters FAILED: {wrong} differ, {errors} asks failed");
        Ok(ExitCode::FAILURE)
    }
}
