//! Per entity type settings: `MAX_ATTEMPTS`, `RETRY_BACKOFF` and `PASSIVATE_AFTER` override
//! the runner's `Config` for that type only.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::eventually;
use entlog_engine::{Cluster, Context, EngineError, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Ping,
    Explode,
}

/// Handler calls of `Explode`, per type.
static FRAGILE_CALLS: AtomicU32 = AtomicU32::new(0);
static STURDY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Counts a call of `Explode`, then panics; `Ping` replies.
fn handle(calls: &AtomicU32, cmd: Cmd) {
    if let Cmd::Explode = cmd {
        calls.fetch_add(1, Ordering::SeqCst);
        panic!("boom");
    }
}

/// One attempt, and out of memory after 100 ms idle.
struct Fragile;

impl Entity for Fragile {
    const TYPE: &'static str = "fragile";
    const MAX_ATTEMPTS: Option<u32> = Some(1);
    const PASSIVATE_AFTER: Option<Duration> = Some(Duration::from_millis(100));
    type Command = Cmd;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(&self, _: &(), cmd: Cmd, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        handle(&FRAGILE_CALLS, cmd);
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

/// Four attempts, 1 ms apart at first; the config's idle time.
struct Sturdy;

impl Entity for Sturdy {
    const TYPE: &'static str = "sturdy";
    const MAX_ATTEMPTS: Option<u32> = Some(4);
    const RETRY_BACKOFF: Option<Duration> = Some(Duration::from_millis(1));
    type Command = Cmd;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(&self, _: &(), cmd: Cmd, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        handle(&STURDY_CALLS, cmd);
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_type_keeps_its_own_attempts_and_idle_time() {
    let dir = std::env::temp_dir().join(format!("entlog-options-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("o.db"))
        .config(
            common::config(4)
                .max_attempts(2)
                .passivate_after(Duration::from_secs(600)),
        )
        .entity(Fragile)
        .entity(Sturdy)
        .start()
        .await
        .unwrap();
    eventually(10, "the runner to own every shard", || async {
        cluster.owned_shards().len() == 4
    })
    .await;

    let err = cluster
        .entity::<Fragile>("f")
        .ask(Cmd::Explode)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");
    assert_eq!(
        FRAGILE_CALLS.load(Ordering::SeqCst),
        1,
        "MAX_ATTEMPTS = 1, not the config's 2"
    );
    let err = cluster
        .entity::<Sturdy>("s")
        .ask(Cmd::Explode)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");
    assert_eq!(STURDY_CALLS.load(Ordering::SeqCst), 4, "MAX_ATTEMPTS = 4");

    // Fragile instances leave memory after 100 ms; Sturdy ones stay (the config's 600 s).
    for i in 0..5 {
        cluster
            .entity::<Fragile>(&format!("f{i}"))
            .ask(Cmd::Ping)
            .await
            .unwrap();
        cluster
            .entity::<Sturdy>(&format!("s{i}"))
            .ask(Cmd::Ping)
            .await
            .unwrap();
    }
    eventually(
        10,
        "only the sturdy instances to stay in memory",
        || async { cluster.entities_in_memory() == 6 },
    )
    .await;
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
