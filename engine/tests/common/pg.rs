//! PostgreSQL helpers of the engine tests: private schemas, runners and clients on them,
//! load with a strike in the middle, and the checks that nothing was lost or doubled.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use entlog_engine::Cluster;
use entlog_journal::testing::database_url;
use sqlx::{Connection, PgConnection};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{Cmd, Counter, check_history, config};

/// Shards of the journals these tests create.
pub const SHARDS: u32 = 16;

/// A private schema of the test database, dropped by [`Schema::drop`].
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    pub async fn new() -> Self {
        Schema {
            url: database_url().await,
            name: format!("e_{}", Uuid::now_v7().simple()),
        }
    }

    pub async fn runner(&self, id: &str) -> Cluster {
        Cluster::builder()
            .postgres_schema(&self.url, &self.name)
            .config(config(SHARDS).runner_id(id))
            .entity(Counter)
            .projection(entlog_engine::StateProjection::<Counter>::new())
            .start()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> Cluster {
        Cluster::builder()
            .postgres_schema(&self.url, &self.name)
            .config(config(SHARDS))
            .client_only()
            .start()
            .await
            .unwrap()
    }

    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// The server process holding runner `id`'s lock connection.
    pub async fn lock_backend(&self, id: &str) -> i32 {
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

    pub async fn owners(&self) -> HashMap<u32, Option<String>> {
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

    /// How many shards the `shards` table says `runner` owns (any connection may fail
    /// while a schema is being created: it counts as none).
    pub async fn owned_by(&self, runner: &str) -> usize {
        let Ok(mut admin) = PgConnection::connect(&self.url).await else {
            return 0;
        };
        let n: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.shards WHERE owner = $1",
            self.name
        )))
        .bind(runner)
        .fetch_one(&mut admin)
        .await;
        n.unwrap_or(0) as usize
    }

    pub async fn drop(self) {
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
pub fn covered(clusters: &[&Cluster]) -> bool {
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
pub async fn load<F, Fut>(
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
pub async fn check_counters(client: &Cluster, acked: &HashMap<String, u64>) {
    for (id, n) in acked {
        let history = check_history(client.journal(), id).await;
        assert_eq!(
            history.len() as u64,
            *n,
            "{id}: events vs acknowledged asks"
        );
    }
}

/// A runner in a child process (the `counter_runner` example), for what only a process
/// can show: `kill -9`, SIGSTOP.
pub struct RunnerProcess {
    child: tokio::process::Child,
    pub id: String,
}

impl RunnerProcess {
    /// Builds the example if needed, starts it as runner `id` on `schema`, and waits until
    /// it owns every shard (start it before any other runner).
    pub async fn start(schema: &Schema, id: &str) -> Self {
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
        let child = tokio::process::Command::new(&exe)
            .args([&schema.url, &schema.name, id, &SHARDS.to_string()])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // The schema is created by whoever starts first; give the child a head start.
        super::eventually(30, "the child runner to own every shard", || async {
            schema.owned_by(id).await == SHARDS as usize
        })
        .await;
        RunnerProcess {
            child,
            id: id.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends `signal` (`-STOP`, `-CONT`) with kill(1).
    pub async fn signal(&self, signal: &str) {
        let status = tokio::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// `kill -9`, and waits for the process to end.
    pub async fn kill(&mut self) -> std::process::ExitStatus {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap()
    }
}
