//! Scenario 2: sequential asks to one counter, one after another, on PostgreSQL;
//! `sequential_on` is also run on SQLite by the SQLite throughput scenario.

use std::time::Instant;

use entlog_engine::Cluster;
use sqlx::PgPool;

use crate::common::{
    Cmd, Counter, Lat, Report, Settings, config, drop_schema, ms, pg_cluster, ready, schema_name,
};

pub(crate) async fn sequential(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("seq");
    drop_schema(admin, &schema).await;
    let cluster = pg_cluster(url, &schema, config(), 1).await;
    ready(&cluster, report, "sequential").await;
    report.seq = Some(sequential_on(&cluster, s, report, "postgres").await);
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}

/// Sequential asks to one counter of `cluster`; prints and returns their latencies.
pub(crate) async fn sequential_on(
    cluster: &Cluster,
    s: &Settings,
    report: &mut Report,
    what: &str,
) -> Lat {
    let counter = cluster.entity::<Counter>("seq-1");
    let mut lat = Vec::with_capacity(s.seq_asks);
    let mut failed = None;
    for i in 0..s.seq_warm_up + s.seq_asks {
        let t = Instant::now();
        match counter.ask(Cmd::Add(1)).await {
            Ok(_) if i >= s.seq_warm_up => lat.push(t.elapsed()),
            Ok(_) => {}
            Err(e) => {
                failed = Some(format!("ask {i}: {e}"));
                break;
            }
        }
    }
    if let Some(e) = failed {
        report.anomaly(format!("sequential ({what}): {e}"));
    }
    let lat = Lat::new(lat);
    println!(
        "  {} sequential asks ({what}): p50 {}  p90 {}  p99 {}  max {}",
        lat.0.len(),
        ms(lat.pct(0.5)),
        ms(lat.pct(0.9)),
        ms(lat.pct(0.99)),
        ms(lat.max())
    );
    lat
}
