//! Reading an entity without a message: `EntityRef::state` (latest snapshot + later
//! events, from any member), `owner` and `is_local`; and `EngineError::is_retryable`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::pg::*;
use common::*;
use entlog_engine::{Cluster, EngineError};

/// After concurrent asks, `state()` is the state the owner reached — read from the
/// journal through snapshots (every 10 events) and the events after them — and journals
/// no message.
async fn state_equals_the_owners(cluster: &Cluster, reader: &Cluster) {
    let c = cluster.entity::<Counter>("s1");
    let asks: Vec<_> = (0..40u64)
        .map(|tag| {
            let c = c.clone();
            tokio::spawn(async move { c.ask(Cmd::Add { n: 3, tag }).await.unwrap() })
        })
        .collect();
    for a in asks {
        a.await.unwrap();
    }
    let total = c.ask(Cmd::Get).await.unwrap();
    let journal = cluster.journal();
    let shard = journal.shard_of(&entlog_journal::EntityKey::new("counter", "s1").unwrap());
    let head_before = journal.head(shard).await.unwrap();
    let (seq, state) = reader.entity::<Counter>("s1").state().await.unwrap();
    assert_eq!((seq, state.total, state.count), (40, total, 40));
    assert_eq!(total, 120);
    let head_after = journal.head(shard).await.unwrap();
    assert_eq!(head_before, head_after, "state() journals nothing");
    let (seq, state) = reader
        .entity::<Counter>("never-seen")
        .state()
        .await
        .unwrap();
    assert_eq!((seq, state), (0, State::default()));
    let err = reader.entity::<Counter>("").state().await.unwrap_err();
    assert!(matches!(err, EngineError::Journal(_)), "{err:?}");
    assert!(!err.is_retryable(), "bad input is not worth retrying");
}

use entlog_journal::Journal as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_state_owner_and_locality() {
    let dir = std::env::temp_dir().join(format!("entlog-state-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("s.db"))
        .config(config(8).runner_id("solo"))
        .entity(Counter)
        .start()
        .await
        .unwrap();
    eventually(10, "the runner to own every shard", || async {
        cluster.owned_shards().len() == 8
    })
    .await;
    state_equals_the_owners(&cluster, &cluster).await;
    let c = cluster.entity::<Counter>("s1");
    assert_eq!(c.owner().await.unwrap().as_deref(), Some("solo"));
    assert!(c.is_local().unwrap());
    let refused = c.ask(Cmd::Refuse).await.unwrap_err();
    assert!(matches!(refused, EngineError::Rejected { .. }));
    assert!(!refused.is_retryable(), "a rejection is met again");
    // A projected state whose JSON is not the state type: a decode error naming it.
    let entlog_journal::AnyJournal::Sqlite(j) = cluster.journal() else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO entity_state (entity_type, entity_id, seq, updated_at, state)
         VALUES ('counter', 'odd', 1, 0, '{\"total\": \"many\"}')",
    )
    .execute(j.writer())
    .await
    .unwrap();
    let err = entlog_engine::projected_state::<Counter>(cluster.journal(), "odd")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Decode { what, .. } if what.contains("counter/odd")),
        "{err:?}"
    );
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// On PostgreSQL a client-only member reads the state the runner wrote; it knows the
/// owner, is not local, and with no runner left an ask fails with a retryable
/// `RunnerUnavailable` while `state()` still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_state_from_another_member() {
    let schema = Schema::new().await;
    let runner = schema.runner("owner-1").await;
    eventually(20, "the runner to own every shard", || async {
        covered(&[&runner])
    })
    .await;
    let client = Cluster::builder()
        .postgres_schema(&schema.url, &schema.name)
        .config(config(SHARDS).unavailable_after(Duration::from_millis(500)))
        .client_only()
        .start()
        .await
        .unwrap();
    state_equals_the_owners(&runner, &client).await;
    let remote = client.entity::<Counter>("s1");
    assert_eq!(remote.owner().await.unwrap().as_deref(), Some("owner-1"));
    assert!(!remote.is_local().unwrap());
    assert!(runner.entity::<Counter>("s1").is_local().unwrap());
    runner.shutdown().await.unwrap();
    eventually(10, "the owner to be gone", || async {
        remote.owner().await.unwrap().is_none()
    })
    .await;
    let err = remote.ask(Cmd::Add { n: 1, tag: 99 }).await.unwrap_err();
    assert!(
        matches!(err, EngineError::RunnerUnavailable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable(), "nobody running may pass");
    let (seq, state) = remote.state().await.unwrap();
    assert_eq!(
        (seq, state.total),
        (40, 120),
        "the unhandled message is not in it"
    );
    client.shutdown().await.unwrap();
    schema.drop().await;
}
