//! The load generator: `closed_loop` keeps a number of asks in flight against the
//! counters and measures the asks answered in a window, with the machine's CPU use
//! (`Cpu`, from `/proc`) and PostgreSQL's committed transactions (`xacts`) over that
//! window; `fill` writes many events to one counter, and `entity_ids` names the
//! counters of the throughput scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog_engine::Cluster;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::common::{Cmd, Counter, Lat, Load};
use crate::stages::{self, Sample};
use crate::{ENTITIES, IN_FLIGHT};

/// `in_flight` tasks, each asking `Add(1)` of the next counter (round robin over `ids`)
/// as soon as its previous ask is answered, for `warm_up + measure`. Counts and times
/// the asks answered inside the measured window.
pub(crate) async fn closed_loop(
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
    let before = (Cpu::now(), xacts(admin).await, Sample::now());
    tokio::time::sleep_until(end.into()).await;
    let after = (Cpu::now(), xacts(admin).await, Sample::now());
    let stages = stages::line(&before.2, &after.2, measure);
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
        stages,
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
pub(crate) async fn fill(cluster: &Cluster, id: &str, n: u64) -> Result<(), String> {
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

pub(crate) fn entity_ids() -> Arc<Vec<String>> {
    Arc::new((0..ENTITIES).map(|i| format!("c-{i:04}")).collect())
}
