//! Every message ends, and no single message stops anything but its own entity: oversized
//! outcomes, a handler that never returns, a slow handler, `apply` panicking on replay, a
//! fenced shard in a multi-shard commit, and a bounded number of entities in memory. Each
//! scenario runs on SQLite and on PostgreSQL; the bystanders share the failing message's
//! shard (one shard), and must answer within a second while it fails.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod entities;
mod harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::*;
use entities::{APPLY_PANICS, Ask, Failing, PROJECTION_FAILS, Trouble};
use entlog_engine::Cluster;
use entlog_journal::Journal;
use harness::{bystander_answers, bystander_answers_eventually, failed_with, runner};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn oversized(backend: Backend) {
    let cluster = runner(&backend, 1, config(1)).await;
    bystander_answers(&cluster, 1).await;
    let trouble = cluster.entity::<Trouble>("t");
    for (i, (cmd, what)) in [
        (Ask::BigEvent, "event 1 of 1"),
        (Ask::BigReply, "the reply"),
        (Ask::BigSend, "the message to bigcmd/receiver"),
    ]
    .into_iter()
    .enumerate()
    {
        let (failed, ()) =
            tokio::join!(trouble.ask(cmd), bystander_answers(&cluster, 10 + i as u64));
        failed_with(&failed, "PayloadTooLarge");
        failed_with(&failed, what);
    }
    // The failing messages left nothing behind: no event, no outgoing message; the
    // entity still answers.
    assert_eq!(trouble.ask(Ask::Ping).await.unwrap(), 0u64.to_le_bytes());
    assert_eq!(check_history(cluster.journal(), "bystander").await.len(), 4);
    assert!(events(cluster.journal(), "receiver").await.is_empty());
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_outcomes_fail_their_message_sqlite() {
    oversized(harness::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_outcomes_fail_their_message_postgres() {
    oversized(harness::postgres().await).await;
}

async fn hanging_and_slow(backend: Backend) {
    let cluster = runner(
        &backend,
        1,
        config(1).handler_timeout(Duration::from_secs(3)),
    )
    .await;
    bystander_answers(&cluster, 1).await;
    // A handler that never returns: others of its shard answer meanwhile, and it fails at
    // the timeout.
    let hang = cluster.entity::<Trouble>("hangs");
    let started = Instant::now();
    let hung = tokio::spawn(async move { hang.ask(Ask::Hang).await });
    for tag in 2..6 {
        bystander_answers(&cluster, tag).await;
    }
    failed_with(&hung.await.unwrap(), "handler timed out");
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The entity goes on with its next message.
    assert_eq!(
        cluster
            .entity::<Trouble>("hangs")
            .ask(Ask::Ping)
            .await
            .unwrap(),
        0u64.to_le_bytes()
    );
    // A slow (not hanging) handler delays only its own entity.
    let slow = cluster.entity::<Trouble>("slow");
    let slow = tokio::spawn(async move { slow.ask(Ask::Slow(2_000)).await });
    for tag in 6..10 {
        bystander_answers(&cluster, tag).await;
    }
    assert_eq!(slow.await.unwrap().unwrap(), Vec::<u8>::new());
    assert_eq!(check_history(cluster.journal(), "bystander").await.len(), 9);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_slow_handler_holds_only_its_entity_sqlite() {
    hanging_and_slow(harness::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_slow_handler_holds_only_its_entity_postgres() {
    hanging_and_slow(harness::postgres().await).await;
}

async fn apply_panics_on_replay(backend: Backend) {
    let cluster = runner(&backend, 1, config(1)).await;
    cluster
        .entity::<Trouble>("marked")
        .ask(Ask::Mark)
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
    backend.drop_snapshots().await;
    // A new build whose `apply` panics on an event already in the journal.
    APPLY_PANICS.store(true, Ordering::SeqCst);
    let cluster = runner(&backend, 1, config(1)).await;
    let marked = cluster.entity::<Trouble>("marked");
    let (marked, ()) = tokio::join!(marked.ask(Ask::Ping), bystander_answers(&cluster, 1));
    APPLY_PANICS.store(false, Ordering::SeqCst);
    failed_with(&marked, "apply panicked while replaying");
    bystander_answers(&cluster, 2).await;
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_panicking_on_replay_fails_only_its_entity() {
    // One test for both backends: the panic switch is process-wide.
    apply_panics_on_replay(harness::sqlite()).await;
    apply_panics_on_replay(harness::postgres().await).await;
}

async fn bounded_memory(backend: Backend) {
    let cap = 50;
    let cluster = runner(&backend, 4, config(4).max_active_entities(cap)).await;
    let mut peak = 0;
    for round in 0..20u64 {
        let asks = (0..50u64).map(|i| {
            let c = cluster.entity::<Counter>(&format!("e-{round}-{i}"));
            async move { c.ask(Cmd::Add { n: 1, tag: i }).await.unwrap() }
        });
        futures_util::future::join_all(asks).await;
        peak = peak.max(cluster.entities_in_memory());
    }
    // 1,000 distinct entities went through; memory holds at most the cap (plus the runs
    // in flight when it was last counted, at most one round's worth).
    assert!(peak <= cap + 50, "{peak} entities in memory, cap {cap}");
    // The pipeline passivates down to the cap right after the last commit.
    eventually(10, "entities in memory to come down to the cap", || async {
        cluster.entities_in_memory() <= cap
    })
    .await;
    // Passivated entities come back from the journal with their state.
    let again = cluster
        .entity::<Counter>("e-0-0")
        .ask(Cmd::Get)
        .await
        .unwrap();
    assert_eq!(again, 1);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_in_memory_stay_under_the_cap_sqlite() {
    bounded_memory(harness::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_in_memory_stay_under_the_cap_postgres() {
    bounded_memory(harness::postgres().await).await;
}

/// A multi-shard commit in which one shard is fenced (its epoch moved, as when another
/// runner acquired it): the other shards' messages commit once, none twice; the fenced
/// shard is given up, taken again and its messages processed once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_shard_leaves_the_others_committed_once() {
    let backend = harness::postgres().await;
    let Backend::Postgres { url, schema, .. } = &backend else {
        unreachable!()
    };
    let shards = 8;
    let cluster = runner(&backend, shards, config(shards)).await;
    let mut admin = PgConnection::connect(url).await.unwrap();
    let ids: Vec<String> = (0..64).map(|i| format!("f-{i}")).collect();
    for round in 0..10u64 {
        let asks = ids.iter().enumerate().map(|(i, id)| {
            let c = cluster.entity::<Counter>(id);
            async move {
                c.ask(Cmd::Add {
                    n: 1,
                    tag: round * 1_000 + i as u64,
                })
                .await
                .unwrap()
            }
        });
        let fence = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {schema}.shards SET epoch = epoch + 1 WHERE shard = {}",
                round % shards as u64
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        };
        let (replies, ()) = tokio::join!(futures_util::future::join_all(asks), fence);
        assert!(
            replies.iter().all(|r| *r == round as i64 + 1),
            "{replies:?}"
        );
    }
    for id in &ids {
        assert_eq!(check_history(cluster.journal(), id).await.len(), 10, "{id}");
    }
    // Each shard was acquired once (epoch 1) and bumped here `bumps` times; anything above
    // that is a re-acquisition after the runner found itself fenced.
    let epochs: Vec<(i32, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT shard, epoch FROM {schema}.shards ORDER BY shard"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let reacquired: i64 = epochs
        .iter()
        .map(|(s, e)| e - 1 - (10 / shards as i64 + i64::from((*s as i64) < 10 % shards as i64)))
        .sum();
    assert!(reacquired >= 1, "no shard was ever fenced: {epochs:?}");
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

async fn damaged_entry(backend: Backend) {
    use entlog_journal::testing::conformance::Tamper;
    use entlog_journal::{EntityKey, NewMessage};
    let journal = backend.journal(1).await;
    // Three sends to counters of the one shard, before any runner: the middle one is then
    // damaged where it lies (a flipped bit), so its entity and id cannot be trusted.
    let mut offsets = Vec::new();
    for (i, id) in ["before", "damaged", "after"].into_iter().enumerate() {
        let outcome = journal
            .append(vec![NewMessage {
                entity: EntityKey::new("counter", id).unwrap(),
                message_id: Uuid::now_v7(),
                payload: entlog_engine::command_payload::<Counter>(&Cmd::Add {
                    n: 1,
                    tag: i as u64,
                })
                .unwrap(),
                deliver_at: None,
                headers: Default::default(),
            }])
            .await
            .unwrap();
        match outcome[0] {
            entlog_journal::AppendOutcome::Appended { offset, .. } => offsets.push(offset),
            ref other => panic!("{other:?}"),
        }
    }
    journal.flip_payload_bit(0, offsets[1]).await;
    let cluster = Cluster::builder()
        .journal(journal.clone())
        .config(config(1))
        .entity(Counter)
        .start()
        .await
        .unwrap();
    // The shard goes on: a new ask answers within a second, and the messages around the
    // damaged one were handled.
    bystander_answers(&cluster, 9).await;
    eventually(10, "the messages around the damaged one", || async {
        events(cluster.journal(), "before").await.len() == 1
            && events(cluster.journal(), "after").await.len() == 1
    })
    .await;
    assert!(events(cluster.journal(), "damaged").await.is_empty());
    // The damaged entry is recorded by its place, and the cursor passed it.
    let damaged = cluster.journal().damaged_entries().await.unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!((damaged[0].0.shard, damaged[0].0.offset), (0, offsets[1]));
    assert!(damaged[0].0.reason.contains("checksum"), "{damaged:?}");
    eventually(10, "the cursor to pass the damaged entry", || async {
        cluster
            .journal()
            .cursor(entlog_engine::MAILBOX, 0)
            .await
            .unwrap()
            > offsets[2]
    })
    .await;
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_message_is_recorded_and_passed_sqlite() {
    damaged_entry(harness::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_message_is_recorded_and_passed_postgres() {
    damaged_entry(harness::postgres().await).await;
}

/// Messages of other entities commit past a slow one, above the shard's cursor. When the
/// runner then loses its lock and takes the shard again from that cursor, the slow
/// entity's message is redelivered and those committed past it are not handled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_past_a_slow_entity_are_not_redelivered() {
    let backend = harness::postgres().await;
    let Backend::Postgres { url, schema, .. } = &backend else {
        unreachable!()
    };
    let cluster = runner(&backend, 1, config(1).runner_id("r1")).await;
    bystander_answers(&cluster, 0).await;
    let slow = cluster.entity::<Trouble>("slow");
    let slow = tokio::spawn(async move { slow.ask(Ask::Slow(3_000)).await });
    for tag in 1..4 {
        bystander_answers(&cluster, tag).await;
    }
    // The bystander's messages committed while the slow one holds the cursor below them.
    let cursor = cluster
        .journal()
        .cursor(entlog_engine::MAILBOX, 0)
        .await
        .unwrap();
    let head = cluster.journal().head(0).await.unwrap();
    assert!(cursor < head, "cursor {cursor}, head {head}");
    // The lock connection dies: the shard is dropped and acquired again, from the cursor.
    let mut admin = PgConnection::connect(url).await.unwrap();
    let killed: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN {schema}.runners r
           ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
          AND l.objid::BIGINT = (r.lock_key::BIGINT & 4294967295)
        WHERE r.runner = 'r1'"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed);
    assert_eq!(slow.await.unwrap().unwrap(), Vec::<u8>::new());
    bystander_answers_eventually(&cluster, 4).await;
    // Every bystander message ran exactly once.
    let history = check_history(cluster.journal(), "bystander").await;
    assert_eq!(history.len(), 5, "{history:?}");
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

/// A shard whose commits keep failing (here: its inline projection) is retried with
/// back-off, and its trouble is recorded on the shard for any process to see while it
/// lasts, then cleared.
async fn trouble_is_visible(backend: Backend) {
    let cluster = Cluster::builder()
        .journal(backend.journal(1).await)
        .config(config(1))
        .entity(Counter)
        .inline_projection(Failing)
        .start()
        .await
        .unwrap();
    bystander_answers(&cluster, 0).await;
    PROJECTION_FAILS.store(true, Ordering::SeqCst);
    let counter = cluster.entity::<Counter>("held");
    let held = tokio::spawn(async move { counter.ask(Cmd::Add { n: 1, tag: 1 }).await });
    let trouble = || async { cluster.journal().shards().await.unwrap()[0].trouble.clone() };
    eventually(20, "the shard's trouble to be recorded", || async {
        trouble()
            .await
            .is_some_and(|(cause, _)| cause.contains("the read model is down"))
    })
    .await;
    PROJECTION_FAILS.store(false, Ordering::SeqCst);
    assert_eq!(held.await.unwrap().unwrap(), 1);
    eventually(20, "the shard's trouble to be cleared", || async {
        trouble().await.is_none()
    })
    .await;
    assert_eq!(check_history(cluster.journal(), "held").await.len(), 1);
    cluster.shutdown().await.unwrap();
    backend.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_shard_shows_its_trouble() {
    // One test for both backends: the failure switch is process-wide.
    trouble_is_visible(harness::sqlite()).await;
    trouble_is_visible(harness::postgres().await).await;
}
