//! The engine on PostgreSQL with several runners: failover when a lock connection dies or
//! a runner process is killed, shard hand-over when runners join and leave.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use entlog_engine::{Cluster, Config};
use entlog_journal::testing::database_url;
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;
use uuid::Uuid;

const SHARDS: u32 = 16;

struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn new() -> Self {
        Schema {
            url: database_url().await,
            name: format!("e_{}", Uuid::now_v7().simple()),
        }
    }

    async fn runner(&self, id: &str) -> Cluster {
        Cluster::builder()
            .postgres_schema(&self.url, &self.name)
            .config(Config {
                runner_id: Some(id.into()),
                ..config(SHARDS)
            })
            .entity(Counter)
            .projection(entlog_engine::StateProjection::<Counter>::new())
            .start()
            .await
            .unwrap()
    }

    async fn client(&self) -> Cluster {
        Cluster::builder()
            .postgres_schema(&self.url, &self.name)
            .config(config(SHARDS))
            .client_only()
            .start()
            .await
            .unwrap()
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// The server process holding runner `id`'s lock connection.
    async fn lock_backend(&self, id: &str) -> i32 {
        let mut admin = self.admin().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT l.pid FROM pg_locks l JOIN {}.runners r
               ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
              AND l.objid::BIGINT = (r.lock_key::BIGINT & 4294967295)
            WHERE r.runner = $1",
            self.name
        )))
        .bind(id)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    }

    async fn owners(&self) -> HashMap<u32, Option<String>> {
        let mut admin = self.admin().await;
        let rows: Vec<(i32, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT shard, owner FROM {}.shards",
            self.name
        )))
        .fetch_all(&mut admin)
        .await
        .unwrap();
        rows.into_iter().map(|(s, o)| (s as u32, o)).collect()
    }

    async fn drop(self) {
        let mut admin = self.admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Every shard owned by exactly one of `clusters`.
fn covered(clusters: &[&Cluster]) -> bool {
    let mut seen = vec![0; SHARDS as usize];
    for c in clusters {
        for s in c.owned_shards() {
            seen[s as usize] += 1;
        }
    }
    seen.iter().all(|&n| n == 1)
}

/// Sends one Add command per tag over `entities` counters with `in_flight` concurrent asks;
/// `midway` runs once half of them were acknowledged. Returns acknowledgements per
/// counter; panics if any ask fails.
async fn load<F, Fut>(
    client: &Cluster,
    tags: std::ops::Range<u64>,
    entities: u64,
    in_flight: usize,
    midway: F,
) -> HashMap<String, u64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let asks = tags.end - tags.start;
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(asks as usize);
    let mut midway = Some(midway);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for tag in tags.clone() {
        if tag == tags.start + asks / 2 {
            // Let the first half land, then strike.
            while acked.load(std::sync::atomic::Ordering::SeqCst) < asks / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(f) = midway.take() {
                f().await;
            }
        }
        let permit = sem.clone().acquire_owned().await.unwrap();
        let id = format!("c{}", tag % entities);
        let c = client.entity::<Counter>(&id);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.ask(Cmd::Add { n: 1, tag }).await;
            drop(permit);
            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (id, tag, r)
        }));
    }
    let mut per = HashMap::new();
    for t in tasks {
        let (id, tag, r) = t.await.unwrap();
        r.unwrap_or_else(|e| panic!("ask {tag} to {id} failed: {e}"));
        *per.entry(id).or_insert(0) += 1;
    }
    per
}

/// Every counter's history is gapless, applies each tag once, and has exactly one event
/// per acknowledged ask.
async fn check_counters(client: &Cluster, acked: &HashMap<String, u64>) {
    for (id, n) in acked {
        let history = check_history(client.journal(), id).await;
        assert_eq!(
            history.len() as u64,
            *n,
            "{id}: events vs acknowledged asks"
        );
    }
}

/// Three runners, 10,000 asks over 500 entities; one runner's lock connection is
/// terminated by the server mid-run. Every ask completes, each counter equals the asks
/// acknowledged for it, no seq gaps, no message applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_runners_survive_a_killed_lock_connection() {
    let schema = Schema::new().await;
    let r1 = schema.runner("r1").await;
    let r2 = schema.runner("r2").await;
    let r3 = schema.runner("r3").await;
    eventually(20, "three runners to share the shards", || async {
        covered(&[&r1, &r2, &r3]) && [&r1, &r2, &r3].iter().all(|r| !r.owned_shards().is_empty())
    })
    .await;
    let client = schema.client().await;
    let before = r2.owned_shards();
    let started = Instant::now();
    let acked = load(&client, 0..10_000, 500, 128, || async {
        let pid = schema.lock_backend("r2").await;
        let mut admin = schema.admin().await;
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(killed);
        eprintln!("terminated r2's lock connection (it owned shards {before:?})");
    })
    .await;
    eprintln!("10,000 asks in {:?}", started.elapsed());
    check_counters(&client, &acked).await;
    // Invariant 9 across a failover: the projection moved with the shards and applied
    // every event exactly once.
    check_projection(&client, &acked).await;
    eventually(20, "the shards to settle again", || async {
        covered(&[&r1, &r2, &r3])
    })
    .await;
    for c in [&r1, &r2, &r3, &client] {
        c.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// A runner that joins gets its share within seconds; one that shuts down hands its
/// shards over without anything being applied twice, while asks keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_join_and_leave_under_load() {
    let schema = Schema::new().await;
    let r1 = schema.runner("j1").await;
    eventually(10, "j1 to own every shard", || async { covered(&[&r1]) }).await;
    let client = schema.client().await;
    let joined = Arc::new(tokio::sync::Mutex::new(None));
    let acked = {
        let joined = joined.clone();
        let schema = &schema;
        load(&client, 0..3_000, 100, 64, move || async move {
            let r2 = schema.runner("j2").await;
            let t = Instant::now();
            eventually(10, "j2 to get its share", || async {
                !r2.owned_shards().is_empty()
            })
            .await;
            eprintln!(
                "j2 owned {} shards after {:?}",
                r2.owned_shards().len(),
                t.elapsed()
            );
            *joined.lock().await = Some(r2);
        })
        .await
    };
    check_counters(&client, &acked).await;
    let r2 = joined.lock().await.take().unwrap();
    eventually(10, "j1 and j2 to share", || async { covered(&[&r1, &r2]) }).await;

    // j2 leaves gracefully during more load: j1 takes everything back.
    let more = {
        let client = client.clone();
        tokio::spawn(async move { load(&client, 3_000..4_000, 100, 32, || async {}).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    r2.shutdown().await.unwrap();
    eventually(10, "j1 to own every shard again", || async {
        covered(&[&r1])
    })
    .await;
    eprintln!("hand-over after graceful shutdown took {:?}", t.elapsed());
    let more = more.await.unwrap();
    let mut all = acked;
    for (id, n) in more {
        *all.entry(id).or_insert(0) += n;
    }
    check_counters(&client, &all).await;
    check_projection(&client, &all).await;
    let owners = schema.owners().await;
    assert!(
        owners.values().all(|o| o.as_deref() == Some("j1")),
        "{owners:?}"
    );
    r1.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
    schema.drop().await;
}

/// A runner process killed with `kill -9` under load: the survivor takes its shards over
/// and every ask still completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_runner_process_is_replaced() {
    let schema = Schema::new().await;
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("counter_runner");
    // Build it if missing or stale (a stale binary would carry an older schema).
    let built = tokio::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "entlog-engine",
            "--example",
            "counter_runner",
        ])
        .status()
        .await
        .unwrap();
    assert!(
        built.success() && exe.exists(),
        "cannot build {}",
        exe.display()
    );
    let mut child = tokio::process::Command::new(&exe)
        .args([&schema.url, &schema.name, "proc-1", &SHARDS.to_string()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The schema is created by whoever starts first; give the child a head start.
    eventually(20, "the child runner to own shards", || async {
        let Ok(mut admin) = PgConnection::connect(&schema.url).await else {
            return false;
        };
        let n: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.shards WHERE owner = 'proc-1'",
            schema.name
        )))
        .fetch_one(&mut admin)
        .await;
        n.is_ok_and(|n| n == i64::from(SHARDS))
    })
    .await;
    let local = schema.runner("local").await;
    eventually(20, "the two runners to share", || async {
        let n = local.owned_shards().len() as u32;
        n > 0 && n < SHARDS
    })
    .await;
    let client = schema.client().await;
    let acked = load(&client, 0..4_000, 200, 128, || async {
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        eprintln!("killed the runner process: {status}");
    })
    .await;
    check_counters(&client, &acked).await;
    eventually(10, "local to own every shard", || async {
        covered(&[&local])
    })
    .await;
    local.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
    schema.drop().await;
}

/// Inline mode on PostgreSQL: a read right after an ask sees the projected write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_projection_reads_its_writes() {
    let schema = Schema::new().await;
    let cluster = Cluster::builder()
        .postgres_schema(&schema.url, &schema.name)
        .config(config(SHARDS))
        .entity(Counter)
        .inline_projection(entlog_engine::StateProjection::<Counter>::new())
        .start()
        .await
        .unwrap();
    eventually(10, "the runner to own every shard", || async {
        covered(&[&cluster])
    })
    .await;
    for id in ["i1", "i2", "i3"] {
        let c = cluster.entity::<Counter>(id);
        for n in 1..=10u64 {
            let total = c.ask(Cmd::Add { n: 3, tag: n }).await.unwrap();
            let (seq, state) = entlog_engine::projected_state::<Counter>(cluster.journal(), id)
                .await
                .unwrap()
                .expect("projected with the ask");
            assert_eq!((seq, state.total), (n, total));
        }
    }
    cluster.shutdown().await.unwrap();
    schema.drop().await;
}
