//! Scenario 4: activation: the first ask to a counter with many events in a fresh
//! cluster, from its snapshot (+50 events to replay) and with no snapshot at all, then
//! the median of the next asks (hot), over several repetitions.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, PgPool};
use tokio::task::JoinHandle;

use crate::SHARDS;
use crate::closed_loop::fill;
use crate::common::{
    Activation, Cmd, Counter, Report, Settings, config, drop_schema, exec, grouped, median, ms,
    pg_cluster, ready, schema_name,
};

pub(crate) async fn activation(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("act");
    drop_schema(admin, &schema).await;
    let n = s.activation_events;
    let (snap, full, warm) = ("act-snap", "act-full", "warm");
    let act_config = || config().snapshot_every(100);
    let write_started = Instant::now();
    let cluster = pg_cluster(url, &schema, act_config(), 1).await;
    ready(&cluster, report, "activation").await;
    // `snap`: all but 50 events in parallel; keep the snapshot taken so far; 50 more.
    if let Err(e) = fill(&cluster, snap, n - 50).await {
        report.anomaly(format!("activation: writing {snap}: {e}"));
        return;
    }
    // Snapshots are saved beside the commit path, just after the commit that makes one
    // due: wait for it (the last asks' replies can arrive first).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let saved: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".snapshots
              WHERE entity_type = 'counter' AND entity_id = '{snap}'"
        )))
        .fetch_one(admin)
        .await
        .unwrap();
        if saved > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec(
        admin,
        format!(
            "CREATE TABLE \"{schema}\".snap_keep AS SELECT * FROM \"{schema}\".snapshots
              WHERE entity_type = 'counter' AND entity_id = '{snap}'"
        ),
    )
    .await;
    for _ in 0..50 {
        if let Err(e) = cluster.entity::<Counter>(snap).ask(Cmd::Add(1)).await {
            report.anomaly(format!("activation: writing {snap}: {e}"));
            return;
        }
    }
    if let Err(e) = fill(&cluster, full, n).await {
        report.anomaly(format!("activation: writing {full}: {e}"));
        return;
    }
    cluster.shutdown().await.unwrap();
    drop(cluster);
    let kept: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT seq FROM \"{schema}\".snap_keep"
    )))
    .fetch_optional(admin)
    .await
    .unwrap();
    let Some(kept) = kept else {
        report.anomaly(format!(
            "activation: no snapshot of {snap} after {} events (snapshot_every 100)",
            n - 50
        ));
        return;
    };
    let replayed = n - kept as u64;
    println!(
        "  wrote 2 x {} events in {:.1} s; {snap}'s kept snapshot is at seq {kept} ({replayed} \
         events to replay); {full} has no snapshot",
        grouped(n as f64),
        write_started.elapsed().as_secs_f64()
    );

    let mut result = Activation {
        events: n,
        replayed,
        snap_cold: Vec::new(),
        snap_hot: Vec::new(),
        full_cold: Vec::new(),
        full_hot: Vec::new(),
    };
    for rep in 0..s.activation_reps {
        // Graceful shutdown snapshots every active entity: put the state back as wanted.
        for sql in [
            format!("DELETE FROM \"{schema}\".snapshots WHERE entity_id IN ('{snap}', '{full}')"),
            format!("INSERT INTO \"{schema}\".snapshots SELECT * FROM \"{schema}\".snap_keep"),
        ] {
            exec(admin, sql).await;
        }
        let cluster = pg_cluster(url, &schema, act_config(), 1).await;
        ready(&cluster, report, "activation").await;
        // Other entities first, concurrently: every pooled connection has run (and
        // planned) the reads and commits before the timed asks.
        for round in 0..3 {
            let asks: Vec<JoinHandle<_>> = (0..SHARDS)
                .map(|i| {
                    let c = cluster.entity::<Counter>(&format!("{warm}-{round}-{i}"));
                    tokio::spawn(async move { c.ask(Cmd::Get).await })
                })
                .collect();
            for a in asks {
                if let Err(e) = a.await.unwrap() {
                    report.anomaly(format!("activation rep {rep}: warm-up ask: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Per entity: the first ask (activation), then the median of 5 more (hot).
        let mut times = [Duration::ZERO; 4];
        for (k, id) in [snap, full].into_iter().enumerate() {
            let mut hot = Vec::new();
            for i in 0..6 {
                let t = Instant::now();
                match cluster.entity::<Counter>(id).ask(Cmd::Get).await {
                    Ok(r) if r.total == n as i64 => hot.push(t.elapsed()),
                    Ok(r) => report.anomaly(format!(
                        "activation rep {rep}: {id} replied total {} instead of {n}",
                        r.total
                    )),
                    Err(e) => report.anomaly(format!("activation rep {rep}: ask to {id}: {e}")),
                }
                if i == 0 {
                    times[2 * k] = hot.pop().unwrap_or_default();
                }
            }
            times[2 * k + 1] = median(&hot);
        }
        println!(
            "  rep {rep}: from snapshot: first ask {}, then {};  no snapshot: first ask {}, \
             then {}",
            ms(times[0]),
            ms(times[1]),
            ms(times[2]),
            ms(times[3])
        );
        result.snap_cold.push(times[0]);
        result.snap_hot.push(times[1]);
        result.full_cold.push(times[2]);
        result.full_hot.push(times[3]);
        cluster.shutdown().await.unwrap();
    }
    report.activation = Some(result);
    drop_schema(admin, &schema).await;
}
