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
//!    CPU use, PostgreSQL's transaction rate and where the time went over the window
//!    (each stage of the message path — the client's appends, the runner's mailbox reads
//!    and commits — with its calls per second, messages per call, time per call and busy
//!    share, from the engine's metrics); 1b. the same with other journal options (pool
//!    size, shard count, NOTIFY off) to show what limits it (not in quick mode); 1'. the
//!    same on SQLite, with its default shard count for a new journal;
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
//!
//! The code: `common` (the entity, settings, results and helpers), `closed_loop` (the
//! load generator) and `stages` (its stage figures), one module per scenario
//! (`throughput`, `raw`, `sequential`, `failover` and `child`, `activation`, `lateness`,
//! `memory`), and `report` (the summary); here, the constants and `main`.

mod activation;
mod child;
mod closed_loop;
mod common;
mod failover;
mod lateness;
mod memory;
mod raw;
mod report;
mod sequential;
mod stages;
mod throughput;

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::activation::activation;
use crate::child::{CHILD_ENV, child_runner};
use crate::common::{EPOCH, Report, Settings, pg_url, rss_kb};
use crate::failover::failover;
use crate::lateness::lateness;
use crate::memory::memory;
use crate::report::print_summary;
use crate::sequential::sequential;
use crate::throughput::{throughput_pg, throughput_sqlite, throughput_variants};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Shards of every PostgreSQL journal here (SQLite's take their default).
const SHARDS: u32 = 64;
const ENTITIES: usize = 1_000;
const IN_FLIGHT: usize = 256;
const RAW_CONNECTIONS: usize = 4;
const RAW_BATCH: usize = 256;

/// Runs a scenario with a time limit; false when it did not finish (a hang).
async fn timed<F: Future<Output = ()>>(name: &str, limit: Duration, scenario: F) -> bool {
    println!("\n== {name}");
    let started = Instant::now();
    let done = tokio::time::timeout(limit, scenario).await.is_ok();
    println!("   ({name}: {:.1} s)", started.elapsed().as_secs_f64());
    done
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
        stages::install();
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
