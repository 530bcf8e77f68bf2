//! Where a scenario's journal lives (the shared `Backend`, a SQLite file or a PostgreSQL
//! schema, here with a small payload limit), and what the scenarios check: a bystander on
//! the failing message's shard answering, and a message failing with a reason that names
//! its cause.

use std::time::{Duration, Instant};

use entlog_engine::{Cluster, Config, EngineError};

use crate::common::backend::Backend;
use crate::common::{Cmd, Counter};
use crate::entities::{BigCmd, LIMIT, Trouble};

/// A SQLite backend whose journals refuse payloads over [`LIMIT`].
pub(crate) fn sqlite() -> Backend {
    Backend::sqlite().max_payload_bytes(LIMIT)
}

/// A PostgreSQL backend whose journals refuse payloads over [`LIMIT`].
pub(crate) async fn postgres() -> Backend {
    Backend::postgres().await.max_payload_bytes(LIMIT)
}

/// A runner on `backend` hosting the counter and the troublesome entities.
pub(crate) async fn runner(backend: &Backend, shards: u32, config: Config) -> Cluster {
    Cluster::builder()
        .journal(backend.journal(shards).await)
        .config(config.shard_count(shards))
        .entity(Counter)
        .entity(Trouble)
        .entity(BigCmd)
        .start()
        .await
        .unwrap()
}

/// Asks `counter/bystander` and checks it answers within a second.
pub(crate) async fn bystander_answers(cluster: &Cluster, tag: u64) {
    let started = Instant::now();
    cluster
        .entity::<Counter>("bystander")
        .ask(Cmd::Add { n: 1, tag })
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a bystander on the same shard took {took:?}"
    );
}

pub(crate) fn failed_with(r: &Result<Vec<u8>, EngineError>, needle: &str) {
    match r {
        Err(EngineError::Failed { reason }) => {
            assert!(
                reason.contains(needle),
                "{reason:?} does not name {needle:?}"
            )
        }
        other => panic!("expected a failure naming {needle:?}, got {other:?}"),
    }
}

/// Asks `counter/bystander` and waits for its answer (across an owner change).
pub(crate) async fn bystander_answers_eventually(cluster: &Cluster, tag: u64) {
    cluster
        .entity::<Counter>("bystander")
        .ask(Cmd::Add { n: 1, tag })
        .await
        .unwrap();
}
