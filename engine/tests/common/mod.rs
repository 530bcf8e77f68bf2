//! A counter entity and helpers shared by the engine tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod backend;
pub mod logs;
pub mod pg;

use std::time::Duration;

use entlog_engine::{Cluster, Config, Context, Entity, Outcome, Rejection};
use entlog_journal::{AnyJournal, EntityKey, Journal};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

/// Counts additions; each addition carries a tag so a test can see it was applied once.
pub struct Counter;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Cmd {
    /// Add `n`, recording `tag`.
    Add { n: i64, tag: u64 },
    /// Reply with the total.
    Get,
    /// Always rejected.
    Refuse,
    /// The handler panics on every attempt.
    Poison,
    /// The handler panics on the first attempt with this tag only (counted process-wide,
    /// so each test uses a tag of its own).
    Flaky { tag: u64 },
    /// Add `n` here and send `Add` to counter `to` in the same transaction.
    Transfer { to: String, n: i64, tag: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    pub n: i64,
    pub tag: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub total: i64,
    pub count: u64,
}

/// The tags of the `Flaky` commands that have failed their first attempt.
pub static FLAKY_FAILED: std::sync::Mutex<std::collections::BTreeSet<u64>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl Entity for Counter {
    const TYPE: &'static str = "counter";
    type Command = Cmd;
    type Event = Added;
    type Reply = i64;
    type State = State;

    async fn handle(
        &self,
        state: &State,
        cmd: Cmd,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        match cmd {
            Cmd::Add { n, tag } => Ok(Outcome::new(vec![Added { n, tag }], state.total + n)),
            Cmd::Get => Ok(Outcome::reply(state.total)),
            Cmd::Refuse => Err(Rejection::new("refused")),
            Cmd::Poison => panic!("poison message"),
            Cmd::Flaky { tag } => {
                let first = FLAKY_FAILED.lock().unwrap().insert(tag);
                if first {
                    panic!("first attempt fails");
                }
                Ok(Outcome::new(vec![Added { n: 1, tag }], state.total + 1))
            }
            Cmd::Transfer { to, n, tag } => {
                ctx.send::<Counter>(
                    &to,
                    &Cmd::Add {
                        n,
                        tag: tag + 1_000_000,
                    },
                );
                Ok(Outcome::new(vec![Added { n: -n, tag }], state.total - n))
            }
        }
    }

    fn apply(state: &mut State, event: &Added) {
        state.total += event.n;
        state.count += 1;
    }
}

/// A config suited to tests: fast rebalancing, snapshots every 10 events.
pub fn config(shards: u32) -> Config {
    Config::default()
        .shard_count(shards)
        .snapshot_every(10)
        .rebalance_interval(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(200))
        .ask_timeout(Duration::from_secs(30))
}

/// Every event of a counter, in seq order: (seq, added).
pub async fn events(journal: &AnyJournal, id: &str) -> Vec<(u64, Added)> {
    let key = EntityKey::new("counter", id).unwrap();
    journal
        .events(&key, 1)
        .map_ok(|e| (e.seq.unwrap(), e.payload.decode::<Added>().unwrap()))
        .try_collect()
        .await
        .unwrap()
}

/// Asserts a counter's history has seqs 1..=n without gaps and no tag twice; returns it.
pub async fn check_history(journal: &AnyJournal, id: &str) -> Vec<Added> {
    let evs = events(journal, id).await;
    let mut tags = std::collections::HashSet::new();
    for (i, (seq, ev)) in evs.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{id}: seq gap");
        assert!(tags.insert(ev.tag), "{id}: tag {} applied twice", ev.tag);
    }
    evs.into_iter().map(|(_, e)| e).collect()
}

/// Waits until `f` holds, polling, or panics after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the state projection of every counter in `expected` (id → number of
/// events) reflects exactly that many events, with the total the journal's fold gives.
pub async fn check_projection(
    cluster: &Cluster,
    expected: &std::collections::HashMap<String, u64>,
) {
    for (id, n) in expected {
        let history = events(cluster.journal(), id).await;
        let total: i64 = history.iter().map(|(_, e)| e.n).sum();
        eventually(20, "the state projection to catch up", || async {
            match entlog_engine::projected_state::<Counter>(cluster.journal(), id)
                .await
                .unwrap()
            {
                Some((seq, state)) => seq == *n && state.count == *n && state.total == total,
                None => *n == 0,
            }
        })
        .await;
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("entlog-engine-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The journal file inside it.
    pub fn db(&self) -> std::path::PathBuf {
        self.0.join("app.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
