//! The engine on PostgreSQL with several runners: failover when a lock connection dies or
//! a runner process is killed, shard hand-over when runners join and leave.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::*;
use common::*;
use entlog_engine::Cluster;

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
    let mut child = RunnerProcess::start(&schema, "proc-1").await;
    let local = schema.runner("local").await;
    eventually(20, "the two runners to share", || async {
        let n = local.owned_shards().len() as u32;
        n > 0 && n < SHARDS
    })
    .await;
    let client = schema.client().await;
    let acked = load(&client, 0..4_000, 200, 128, || async {
        let status = child.kill().await;
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

/// A runner with the counter's state as an inline projection, owning every shard.
async fn inline_runner(schema: &Schema) -> Cluster {
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
    cluster
}

/// Rebuilds of an inline projection while asks keep coming: each rebuild resets the
/// checkpoints under the runner's feet, the runner's next commit of each shard finds its
/// checkpoint moved, catches the projection up and commits again. Every ask succeeds and
/// the projected state is each entity's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_projection_survives_rebuilds() {
    let schema = Schema::new().await;
    let cluster = inline_runner(&schema).await;
    let asking = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut totals = std::collections::BTreeMap::new();
            for n in 1..=40u64 {
                for id in ["r1", "r2", "r3", "r4", "r5", "r6"] {
                    let total = cluster
                        .entity::<Counter>(id)
                        .ask(Cmd::Add { n: 2, tag: n })
                        .await
                        .unwrap();
                    totals.insert(id, total);
                }
            }
            totals
        })
    };
    let projection: Arc<dyn entlog_projections::DynProjection> =
        Arc::new(entlog_engine::StateProjection::<Counter>::new());
    let mut rebuilds = 0;
    while !asking.is_finished() || rebuilds < 3 {
        entlog_projections::rebuild(cluster.journal(), projection.clone(), 16, |_| {})
            .await
            .unwrap();
        rebuilds += 1;
    }
    let totals = asking.await.unwrap();
    for (id, total) in totals {
        let c = cluster.entity::<Counter>(id);
        c.ask(Cmd::Add { n: 0, tag: 1_000 }).await.unwrap();
        let (seq, state) = entlog_engine::projected_state::<Counter>(cluster.journal(), id)
            .await
            .unwrap()
            .expect("projected");
        assert_eq!(
            (seq, state.total),
            (41, total),
            "{id} after {rebuilds} rebuilds"
        );
    }
    cluster.shutdown().await.unwrap();
    schema.drop().await;
}
