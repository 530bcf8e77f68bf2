//! The engine with one process, one runner owning every shard: replies, restarts and
//! replay, durability of `tell`, per-entity order, idempotent asks, rejections and
//! retries, the outbox, typed errors, scheduled messages and inline projections. Each
//! scenario runs on SQLite (`<scenario>::sqlite`) and on PostgreSQL, in a schema of its
//! own (`<scenario>::postgres`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::backend::Backend;
use common::*;
use entlog_engine::{Cluster, EngineError};
use entlog_journal::{EntityKey, EntryKind, Journal, Timestamp};
use uuid::Uuid;

/// Two tests for a scenario `async fn name(Backend)`: `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(Backend::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(Backend::postgres().await).await;
            }
        }
    )*};
}

on_both_backends!(
    ask_restart_and_replay,
    tell_is_durable_on_return,
    per_entity_order,
    ask_with_id_executes_once,
    rejections_poison_and_retries,
    outbox_delivers_with_the_events,
    bad_input_is_typed,
    scheduled_tell_is_delivered_when_due,
    inline_projection_reads_its_writes,
);

/// Asks get replies; state survives a restart, rebuilt from snapshot + later events and
/// equal to a full replay (invariant 8).
async fn ask_restart_and_replay(backend: Backend) {
    let cluster = backend.counter_cluster(4).await;
    let c = cluster.entity::<Counter>("c-1");
    let mut expected = 0;
    for tag in 0..25u64 {
        expected += tag as i64;
        assert_eq!(
            c.ask(Cmd::Add { n: tag as i64, tag }).await.unwrap(),
            expected
        );
    }
    assert_eq!(c.ask(Cmd::Get).await.unwrap(), expected);
    cluster.shutdown().await.unwrap();
    drop(cluster);

    let cluster = backend.counter_cluster(4).await;
    assert_eq!(
        cluster
            .entity::<Counter>("c-1")
            .ask(Cmd::Get)
            .await
            .unwrap(),
        expected
    );
    // A snapshot exists (every 10 events, and at shutdown) and agrees with a full replay.
    let key = EntityKey::new("counter", "c-1").unwrap();
    let snap = cluster
        .journal()
        .load_snapshot(&key, 1)
        .await
        .unwrap()
        .expect("snapshot");
    let from_snapshot: State = snap.state.decode().unwrap();
    let mut full = State::default();
    for ev in check_history(cluster.journal(), "c-1").await {
        <Counter as entlog_engine::Entity>::apply(&mut full, &ev);
    }
    assert_eq!(snap.seq, 25);
    assert_eq!(from_snapshot, full);
    assert_eq!(full.total, expected);
    cluster.shutdown().await.unwrap();
    drop(cluster);

    // A damaged snapshot is ignored: the state comes from a full replay, still right.
    {
        use entlog_journal::testing::conformance::Tamper;
        let j = backend.journal(4).await;
        j.flip_snapshot_bit(&key).await;
        j.close().await;
    }
    let cluster = backend.counter_cluster(4).await;
    assert!(
        cluster
            .journal()
            .load_snapshot(&key, 1)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        cluster
            .entity::<Counter>("c-1")
            .ask(Cmd::Get)
            .await
            .unwrap(),
        expected
    );
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Invariant 1: `tell` returns only once the message is in the journal.
async fn tell_is_durable_on_return(backend: Backend) {
    let cluster = backend
        .builder()
        .config(config(4))
        .client_only()
        .start()
        .await
        .unwrap();
    let id = cluster
        .entity::<Counter>("d-1")
        .tell(Cmd::Add { n: 1, tag: 1 })
        .await
        .unwrap();
    let key = EntityKey::new("counter", "d-1").unwrap();
    let shard = cluster.journal().shard_of(&key);
    let entries = cluster
        .journal()
        .read_shard(shard, 0, 10, Some(EntryKind::Message))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].message_id, id);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Invariant 2: messages to one entity are handled in journal order, even when sent
/// concurrently from many tasks.
async fn per_entity_order(backend: Backend) {
    let cluster = backend.counter_cluster(2).await;
    let tasks: Vec<_> = (0..200u64)
        .map(|tag| {
            let c = cluster.entity::<Counter>("ordered");
            tokio::spawn(async move { c.ask(Cmd::Add { n: 1, tag }).await.unwrap() })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies.sort_unstable();
    assert_eq!(
        replies,
        (1..=200).collect::<Vec<i64>>(),
        "each ask saw the one before"
    );
    // Event order = message offset order.
    let key = EntityKey::new("counter", "ordered").unwrap();
    let shard = cluster.journal().shard_of(&key);
    let messages = cluster
        .journal()
        .read_shard(shard, 0, 1000, Some(EntryKind::Message))
        .await
        .unwrap();
    let sent: Vec<u64> = messages
        .iter()
        .map(|e| match e.payload.decode::<Cmd>().unwrap() {
            Cmd::Add { tag, .. } => tag,
            other => panic!("{other:?}"),
        })
        .collect();
    let applied: Vec<u64> = check_history(cluster.journal(), "ordered")
        .await
        .iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(applied, sent);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Invariants 3 and 4: re-sending a message id — sequentially or concurrently — returns
/// the first outcome and never executes twice.
async fn ask_with_id_executes_once(backend: Backend) {
    let cluster = Arc::new(backend.counter_cluster(4).await);
    let c = cluster.entity::<Counter>("once");
    let id = Uuid::now_v7();
    assert_eq!(
        c.ask_with_id(id, Cmd::Add { n: 5, tag: 1 }).await.unwrap(),
        5
    );
    assert_eq!(
        c.ask_with_id(id, Cmd::Add { n: 5, tag: 1 }).await.unwrap(),
        5
    );
    let id2 = Uuid::now_v7();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = cluster.entity::<Counter>("once");
            tokio::spawn(
                async move { c.ask_with_id(id2, Cmd::Add { n: 7, tag: 2 }).await.unwrap() },
            )
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 12);
    }
    assert_eq!(check_history(cluster.journal(), "once").await.len(), 2);
    assert_eq!(c.ask(Cmd::Get).await.unwrap(), 12);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// A rejection is the stored reply; a poison message gets a failure reply after its
/// retries and does not stop the other entities of its shard; a handler that fails once
/// succeeds on retry, once.
async fn rejections_poison_and_retries(backend: Backend) {
    let cluster = backend.counter_cluster(1).await;
    let err = cluster
        .entity::<Counter>("r")
        .ask(Cmd::Refuse)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Rejected { ref reason } if reason == "refused"),
        "{err:?}"
    );

    // One shard: the poison message and the healthy ones share it.
    let poison = {
        let c = cluster.entity::<Counter>("p");
        tokio::spawn(async move { c.ask(Cmd::Poison).await })
    };
    let healthy = cluster
        .entity::<Counter>("h")
        .ask(Cmd::Add { n: 3, tag: 9 })
        .await
        .unwrap();
    assert_eq!(healthy, 3);
    let err = poison.await.unwrap().unwrap_err();
    assert!(
        matches!(err, EngineError::Failed { ref reason } if reason.contains("poison message")),
        "{err:?}"
    );
    assert!(check_history(cluster.journal(), "p").await.is_empty());

    // The flaky handler fails the first attempt of each tag, process-wide: a tag per
    // backend, as both tests of this scenario may run at once.
    let tag = match backend {
        Backend::Sqlite { .. } => 1,
        Backend::Postgres { .. } => 2,
    };
    assert_eq!(
        cluster
            .entity::<Counter>("f")
            .ask(Cmd::Flaky { tag })
            .await
            .unwrap(),
        1
    );
    assert!(
        FLAKY_FAILED.lock().unwrap().contains(&tag),
        "the first attempt failed"
    );
    assert_eq!(check_history(cluster.journal(), "f").await.len(), 1);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Messages sent by a handler are journaled with its events and delivered once.
async fn outbox_delivers_with_the_events(backend: Backend) {
    let cluster = backend.counter_cluster(4).await;
    let a = cluster.entity::<Counter>("a");
    for tag in 0..20u64 {
        a.ask(Cmd::Transfer {
            to: format!("b{}", tag % 3),
            n: 2,
            tag,
        })
        .await
        .unwrap();
    }
    assert_eq!(a.ask(Cmd::Get).await.unwrap(), -40);
    eventually(20, "transfers to arrive", || {
        let cluster = &cluster;
        async move {
            let mut totals = HashMap::new();
            for b in 0..3 {
                let v = cluster
                    .entity::<Counter>(&format!("b{b}"))
                    .ask(Cmd::Get)
                    .await
                    .unwrap();
                totals.insert(b, v);
            }
            totals.values().sum::<i64>() == 40
        }
    })
    .await;
    for b in 0..3 {
        check_history(cluster.journal(), &format!("b{b}")).await;
    }
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Bad addresses, a second process on the same SQLite file and a send after shutdown are
/// typed errors.
async fn bad_input_is_typed(backend: Backend) {
    let cluster = backend.counter_cluster(2).await;
    let err = cluster
        .entity::<Counter>("")
        .ask(Cmd::Get)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Journal(_)), "{err:?}");
    let err = cluster
        .entity::<Counter>(&"x".repeat(300))
        .tell(Cmd::Get)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Journal(_)), "{err:?}");
    // SQLite only: its file belongs to one process, so a second opener is refused. A
    // PostgreSQL journal is shared by design (another runner on the same schema joins
    // it; the multi-runner tests cover that).
    if let Backend::Sqlite { dir, .. } = &backend {
        let second = Cluster::builder()
            .sqlite(dir.db())
            .entity(Counter)
            .start()
            .await;
        assert!(
            matches!(
                second,
                Err(EngineError::Journal(
                    entlog_journal::JournalError::Locked { .. }
                ))
            ),
            "a second opener of the file must be refused"
        );
    }
    cluster.shutdown().await.unwrap();
    let err = cluster
        .entity::<Counter>("late")
        .tell(Cmd::Get)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ShutDown), "{err:?}");
    backend.drop().await;
}

/// A message sent with `tell_at` is journaled at once, delivered when due and not before,
/// and survives a restart in between.
async fn scheduled_tell_is_delivered_when_due(backend: Backend) {
    let cluster = backend.counter_cluster(2).await;
    let c = cluster.entity::<Counter>("timer");
    let due = Timestamp::now().after(Duration::from_millis(400));
    c.tell_at(due, Cmd::Add { n: 7, tag: 1 }).await.unwrap();
    let later = Timestamp::now().after(Duration::from_millis(2_500));
    c.tell_at(later, Cmd::Add { n: 1, tag: 2 }).await.unwrap();
    let early = c.ask(Cmd::Get).await.unwrap();
    // A reply that came back before the first timer was due was handled before it too (on
    // a busy machine the reply may come later, and then says nothing).
    if Timestamp::now() < due {
        assert_eq!(early, 0, "nothing delivered early");
    }
    eventually(10, "the first timer", || async {
        c.ask(Cmd::Get).await.unwrap() == 7
    })
    .await;
    assert!(Timestamp::now() >= due, "delivered at or after its time");
    // Restart (before the second is due, unless the machine is very slow): it is still
    // delivered, once.
    cluster.shutdown().await.unwrap();
    drop(c);
    drop(cluster);
    let cluster = backend.counter_cluster(2).await;
    let c = cluster.entity::<Counter>("timer");
    eventually(10, "the second timer", || async {
        c.ask(Cmd::Get).await.unwrap() == 8
    })
    .await;
    assert!(Timestamp::now() >= later);
    assert_eq!(check_history(cluster.journal(), "timer").await.len(), 2);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// Inline mode: the read model is written in the same transaction as the events, so a
/// read right after an ask sees it — every time, with no waiting.
async fn inline_projection_reads_its_writes(backend: Backend) {
    let shards = 4;
    let cluster = backend
        .builder()
        .config(config(shards))
        .entity(Counter)
        .inline_projection(entlog_engine::StateProjection::<Counter>::new())
        .start()
        .await
        .unwrap();
    eventually(20, "the runner to own every shard", || async {
        cluster.owned_shards().len() == shards as usize
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
        // The commit that wrote the read model moved the mailbox cursor past the messages.
        let journal = cluster.journal();
        let shard = journal.shard_of(&EntityKey::new("counter", id).unwrap());
        let last = journal
            .read_shard(shard, 0, 1_000, Some(EntryKind::Message))
            .await
            .unwrap()
            .last()
            .expect("the messages")
            .offset;
        eventually(20, "the mailbox cursor past the last message", || async {
            journal.cursor(entlog_engine::MAILBOX, shard).await.unwrap() >= last
        })
        .await;
    }
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}
