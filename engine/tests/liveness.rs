//! A runner is live while it answers: a runner process stopped with SIGSTOP, and a runner
//! whose lock connection goes silent, lose their shards within seconds under load, commit
//! nothing that counts afterwards, and rejoin when they come back. An ask that no live
//! runner can answer says so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::pg::*;
use common::*;
use entlog_engine::{Cluster, EngineError};
use entlog_journal::testing::BlackHoleProxy;
use entlog_journal::{Journal, PgJournal, PgOptions};

/// When the runner `id` started its current lock session, as the journal says.
async fn session_start(cluster: &Cluster, id: &str) -> Option<entlog_journal::Timestamp> {
    cluster
        .journal()
        .live_runners()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.runner == id)
        .map(|r| r.started_at)
}

/// A runner process stopped with SIGSTOP under load (its sockets stay open, its locks
/// stay held until the server ends its silent session): the other runner owns every
/// shard within seconds, every ask completes once; after SIGCONT the stopped runner
/// finds its session gone, opens a new one and gets its share back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_runner_process_loses_its_shards() {
    let schema = Schema::new().await;
    let child = RunnerProcess::start(&schema, "stopped").await;
    let local = schema.runner("local").await;
    eventually(30, "the two runners to share", || async {
        let n = local.owned_shards().len() as u32;
        n > 0 && n < SHARDS
    })
    .await;
    let client = schema.client().await;
    let first_session = session_start(&client, "stopped").await.unwrap();
    let stopped = std::sync::Mutex::new(None);
    let acked = load(&client, 0..3_000, 200, 64, || async {
        child.signal("-STOP").await;
        *stopped.lock().unwrap() = Some(Instant::now());
        eprintln!("stopped the runner process");
    })
    .await;
    let stopped = stopped.lock().unwrap().unwrap();
    eventually(30, "local to own every shard", || async {
        covered(&[&local])
    })
    .await;
    eprintln!(
        "local owned every shard {:?} after SIGSTOP",
        stopped.elapsed()
    );
    check_counters(&client, &acked).await;

    // Back from the pause: its old session was ended by the server, so whatever it still
    // had in hand is fenced; it opens a new session and takes its share again.
    child.signal("-CONT").await;
    eventually(30, "the stopped runner to rejoin", || async {
        schema.owned_by("stopped").await > 0
    })
    .await;
    let second_session = session_start(&client, "stopped").await.unwrap();
    assert!(second_session > first_session, "a new lock session");
    let more = load(&client, 3_000..4_000, 200, 64, || async {}).await;
    let mut all = acked;
    for (id, n) in more {
        *all.entry(id).or_insert(0) += n;
    }
    check_counters(&client, &all).await;
    local.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
    drop(child);
    schema.drop().await;
}

/// A runner whose lock connection goes silent (a proxy stops forwarding and closes
/// nothing), under load: it stops on its own, the server frees its locks, the other
/// runner takes every shard, and every ask completes once. When the network is back it
/// rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_lock_connection_fails_over() {
    let schema = Schema::new().await;
    let (proxy, through) = BlackHoleProxy::for_url(&schema.url).await.unwrap();
    let journal = PgJournal::open(
        PgOptions::new(&schema.url)
            .schema(&schema.name)
            .shard_count(SHARDS)
            .lock_url(through),
    )
    .await
    .unwrap();
    let silent = Cluster::builder()
        .journal(journal)
        .config(config(SHARDS).runner_id("silent"))
        .entity(Counter)
        .start()
        .await
        .unwrap();
    eventually(30, "the silent-to-be runner to own every shard", || async {
        covered(&[&silent])
    })
    .await;
    let other = schema.runner("other").await;
    eventually(30, "the two runners to share", || async {
        covered(&[&silent, &other]) && !other.owned_shards().is_empty()
    })
    .await;
    let client = schema.client().await;
    let went_silent = std::sync::Mutex::new(None);
    let acked = load(&client, 0..3_000, 200, 64, || async {
        proxy.set_silent(true);
        *went_silent.lock().unwrap() = Some(Instant::now());
        eprintln!("the lock connection went silent");
    })
    .await;
    let went_silent = went_silent.lock().unwrap().unwrap();
    eventually(30, "the other runner to own every shard", || async {
        covered(&[&other])
    })
    .await;
    eprintln!(
        "the other runner owned every shard {:?} after the lock connection went silent",
        went_silent.elapsed()
    );
    assert!(
        silent.owned_shards().is_empty(),
        "the silent runner stopped"
    );
    check_counters(&client, &acked).await;

    proxy.set_silent(false);
    eventually(30, "the silent runner to rejoin", || async {
        !silent.owned_shards().is_empty()
    })
    .await;
    let more = load(&client, 3_000..4_000, 200, 64, || async {}).await;
    let mut all = acked;
    for (id, n) in more {
        *all.entry(id).or_insert(0) += n;
    }
    check_counters(&client, &all).await;
    for c in [&silent, &other, &client] {
        c.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// An ask to a shard no live runner owns fails with `RunnerUnavailable` after
/// `unavailable_after`, not `Timeout` after `ask_timeout`; the message waits in the
/// journal and is handled once a runner starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ask_with_no_live_runner_is_unavailable() {
    let schema = Schema::new().await;
    let client = Cluster::builder()
        .postgres_schema(&schema.url, &schema.name)
        .config(config(SHARDS).unavailable_after(Duration::from_millis(300)))
        .client_only()
        .start()
        .await
        .unwrap();
    let asked = Instant::now();
    let err = client
        .entity::<Counter>("nobody-home")
        .ask(Cmd::Add { n: 2, tag: 1 })
        .await
        .unwrap_err();
    let waited = asked.elapsed();
    let EngineError::RunnerUnavailable {
        shard, message_id, ..
    } = err
    else {
        panic!("got {err:?}");
    };
    eprintln!("RunnerUnavailable after {waited:?}");
    assert!(waited < Duration::from_secs(30), "not the ask timeout");
    let key = entlog_journal::EntityKey::new("counter", "nobody-home").unwrap();
    assert_eq!(shard, client.journal().shard_of(&key));

    let runner = schema.runner("late").await;
    let total = client
        .entity::<Counter>("nobody-home")
        .ask_with_id(message_id, Cmd::Add { n: 2, tag: 1 })
        .await
        .unwrap();
    assert_eq!(total, 2, "handled once, when a runner came");
    assert_eq!(
        check_history(client.journal(), "nobody-home").await.len(),
        1
    );
    runner.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
    schema.drop().await;
}

/// The same on SQLite: a process that opened the file without hosting entities has no
/// runner, and says so.
#[tokio::test]
async fn ask_with_no_runner_on_sqlite_is_unavailable() {
    let dir = TempDir::new();
    let client = Cluster::builder()
        .sqlite(dir.db())
        .config(config(4).unavailable_after(Duration::from_millis(100)))
        .client_only()
        .start()
        .await
        .unwrap();
    let err = client
        .entity::<Counter>("c")
        .ask(Cmd::Get)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::RunnerUnavailable { .. }),
        "got {err:?}"
    );
    client.shutdown().await.unwrap();
}
