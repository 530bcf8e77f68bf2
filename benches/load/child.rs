//! Scenario 3 with a child runner process: this program re-run with `CHILD_ENV` set hosts
//! the counter as node `CHILD_NODE` (`child_runner`); `failover_child` lets it share the
//! shards with B, strikes it (`Strike`: SIGKILL, SIGSTOP, or its lock connection
//! black-holed by a proxy) and measures B's takeover; `failover_process` runs every
//! strike. Also its ownership checks on the `shards` table (`db_owned`,
//! `settled_with_child`).

use std::time::{Duration, Instant};

use entlog_engine::Cluster;
use entlog_journal::testing::BlackHoleProxy;
use entlog_journal::{PgJournal, PgOptions, shard_of};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::SHARDS;
use crate::common::{Cmd, Counter, FailoverRun, Report, Settings, config, ms, pg_cluster, pg_url};
use crate::failover::takeover;

/// The environment variable that turns this program into a child runner process.
pub(crate) const CHILD_ENV: &str = "ENTLOG_LOAD_CHILD_RUNNER";
/// The child runner's node number (its `handled_at` is on another clock).
pub(crate) const CHILD_NODE: u8 = 3;

/// Child mode (`CHILD_ENV` = `schema|runner id|lock url or empty`): host the counter as
/// node 3 until killed, or until stdin closes (the parent went away).
pub(crate) fn child_runner(spec: &str) {
    let mut parts = spec.split('|');
    let (schema, id) = (parts.next().unwrap(), parts.next().unwrap());
    let lock_url = parts.next().filter(|u| !u.is_empty()).map(str::to_owned);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = config().runner_id(id);
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
pub(crate) enum Strike {
    /// `kill -9`: the kernel closes its sockets, the server frees its locks at once.
    Kill,
    /// SIGSTOP: the process stops answering with every socket open.
    Stop,
    /// Its lock connection goes silent (a proxy stops forwarding, closes nothing).
    Silence,
}

impl Strike {
    pub(crate) const ALL: [Strike; 3] = [Strike::Kill, Strike::Stop, Strike::Silence];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Strike::Kill => "runner process SIGKILLed",
            Strike::Stop => "runner process SIGSTOPped",
            Strike::Silence => "lock connection black-holed",
        }
    }
}

pub(crate) async fn failover_process(
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
