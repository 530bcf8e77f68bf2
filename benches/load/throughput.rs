//! Scenario 1 and its relatives: throughput of persisted asks on PostgreSQL at 256 and
//! 64 asks in flight (with the RSS after it and the raw-insert baseline of `raw`, run on
//! the same schema), 1b. the same with other journal options (pool size, shard count,
//! NOTIFY off), and 1'. the same on SQLite (followed by sequential asks there).

use std::path::PathBuf;
use std::time::Duration;

use entlog_engine::Cluster;
use entlog_journal::{PgJournal, PgOptions};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::closed_loop::{closed_loop, entity_ids};
use crate::common::{
    Counter, Report, Settings, config, drop_schema, grouped, pg_cluster, ready, rss_kb,
    schema_name, sqlite_config, wait_until,
};
use crate::raw::raw_baseline;
use crate::sequential::sequential_on;
use crate::{ENTITIES, IN_FLIGHT, SHARDS};

pub(crate) async fn throughput_pg(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("tput");
    drop_schema(admin, &schema).await;
    let cluster = pg_cluster(url, &schema, config(), 1).await;
    ready(&cluster, report, "throughput").await;
    let load = closed_loop(
        &cluster,
        Some(admin),
        entity_ids(),
        IN_FLIGHT,
        s.warm_up,
        s.measure,
    )
    .await;
    report.rss_after_kb = rss_kb();
    let load64 = closed_loop(
        &cluster,
        Some(admin),
        entity_ids(),
        64,
        s.warm_up / 2,
        s.measure,
    )
    .await;
    println!("  postgres: {}", load.line());
    println!("            {}", load.costs());
    println!("            {}", load.stages());
    println!(
        "            {} asks answered in all (warm-up included), {} errors",
        grouped(load.ok_total as f64),
        load.errors
    );
    if let Some(e) = &load.first_error {
        report.anomaly(format!(
            "throughput (postgres): {} asks failed; first: {e}",
            load.errors
        ));
    }
    println!("  64 in flight: {}", load64.line());
    println!("            {}", load64.costs());
    println!("            {}", load64.stages());
    if let Some(e) = &load64.first_error {
        report.anomaly(format!(
            "throughput (postgres, 64 in flight): {} asks failed; first: {e}",
            load64.errors
        ));
    }
    let answered = load.ok_total + load64.ok_total;
    report.pg64 = Some(load64);
    if let Some(kb) = report.rss_after_kb {
        println!(
            "  RSS with {ENTITIES} active counters: {:.1} MB",
            kb as f64 / 1024.0
        );
    }
    cluster.shutdown().await.unwrap();

    // Exactly one event per answered ask.
    let events: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".journal WHERE kind = 2"
    )))
    .fetch_one(admin)
    .await
    .unwrap();
    if events as u64 != answered {
        report.anomaly(format!(
            "throughput (postgres): {events} events journaled for {answered} answered asks"
        ));
    }
    report.pg = Some(load);

    match raw_baseline(url, admin, &schema, s).await {
        Ok(rate) => {
            println!(
                "  raw: {} asks/s-equivalent (3 rows per ask)",
                grouped(rate)
            );
            report.raw = Some(rate);
        }
        Err(e) => report.anomaly(format!("raw baseline failed: {e}")),
    }
    drop_schema(admin, &schema).await;
}

/// Scenario 1 again with other journal options, to see what limits it: a bigger pool
/// (default 10 connections for 64 shard workers, the appender and reply polling), fewer
/// shards (bigger commit batches) and NOTIFY off (a notifying transaction holds PostgreSQL's global notify-queue lock through
/// its commit, so notifying commits are serialized; client and runner share a process
/// here, so local wake-ups still work without it).
pub(crate) async fn throughput_variants(
    url: &str,
    admin: &PgPool,
    s: &Settings,
    report: &mut Report,
) {
    let variants: [(&str, u32, bool, u32); 4] = [
        ("pool 40 connections", 40, true, SHARDS),
        ("NOTIFY off", 10, false, SHARDS),
        ("8 shards", 10, true, 8),
        ("8 shards + NOTIFY off", 10, false, 8),
    ];
    for (name, connections, notify, shards) in variants {
        let schema = schema_name("var");
        drop_schema(admin, &schema).await;
        let journal = PgJournal::open(
            PgOptions::new(url)
                .schema(&schema)
                .shard_count(shards)
                .max_connections(connections)
                .notify(notify),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot open a journal on schema {schema}: {e}"));
        let cluster = Cluster::builder()
            .journal(journal)
            .config(config().shard_count(shards))
            .entity(Counter { node: 1 })
            .start()
            .await
            .unwrap();
        if !wait_until(Duration::from_secs(15), || {
            cluster.owned_shards().len() == shards as usize
        })
        .await
        {
            report.anomaly(format!(
                "{name}: the runner does not own every shard after 15 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let load = closed_loop(
            &cluster,
            Some(admin),
            entity_ids(),
            IN_FLIGHT,
            s.variant_warm_up,
            s.variant_measure,
        )
        .await;
        println!("  {name:<22} {}", load.line());
        println!("  {:<22} {}", "", load.costs());
        if let Some(e) = &load.first_error {
            report.anomaly(format!(
                "throughput ({name}): {} asks failed; first: {e}",
                load.errors
            ));
        }
        cluster.shutdown().await.unwrap();
        report.variants.push((name, load));
        drop_schema(admin, &schema).await;
    }
}

pub(crate) async fn throughput_sqlite(s: &Settings, report: &mut Report) {
    let dir = std::env::temp_dir().join(format!(
        "entlog-load-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("load.db");
    let cluster = Cluster::builder()
        .sqlite(&path)
        .config(sqlite_config())
        .entity(Counter { node: 1 })
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a SQLite cluster: {e}"));
    ready(&cluster, report, "throughput (sqlite)").await;
    let load = closed_loop(
        &cluster,
        None,
        entity_ids(),
        IN_FLIGHT,
        s.warm_up,
        s.sqlite_measure,
    )
    .await;
    println!("  sqlite:   {}", load.line());
    println!("            {}", load.costs());
    println!("            {}", load.stages());
    println!(
        "            {} asks answered in all (warm-up included), {} errors",
        grouped(load.ok_total as f64),
        load.errors
    );
    if let Some(e) = &load.first_error {
        report.anomaly(format!(
            "throughput (sqlite): {} asks failed; first: {e}",
            load.errors
        ));
    }
    report.sqlite = Some(load);
    report.seq_sqlite = Some(sequential_on(&cluster, s, report, "sqlite").await);
    cluster.shutdown().await.unwrap();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
