//! Scenario 8: memory under many distinct entities: 200,000 counters (10,000 in quick
//! mode) asked once each, 256 in flight, by a runner that keeps at most `MEMORY_CAP`
//! in memory; entities in memory and RSS after the first cap's worth and at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::IN_FLIGHT;
use crate::common::{
    Cmd, Counter, Report, Settings, config, drop_schema, grouped, pg_cluster, ready, rss_kb,
    schema_name,
};

/// Entities kept in memory in the memory scenario (`Config::max_active_entities`).
const MEMORY_CAP: usize = 10_000;

/// Asks 200,000 distinct counters (10,000 in quick mode: 1,000), 256 in flight, with
/// `max_active_entities` at 10,000: RSS and entities in memory after the first 10,000 and
/// at the end. Bounded memory means the two RSS figures stay close.
pub(crate) async fn memory(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("mem");
    drop_schema(admin, &schema).await;
    let cap = if s.quick { 1_000 } else { MEMORY_CAP };
    let total = if s.quick { 10_000 } else { 200_000 };
    let cluster = pg_cluster(url, &schema, config().max_active_entities(cap), 1).await;
    ready(&cluster, report, "memory").await;
    let next = Arc::new(AtomicU64::new(0));
    for step in [cap, total] {
        let tasks: Vec<JoinHandle<Result<(), String>>> = (0..IN_FLIGHT)
            .map(|_| {
                let cluster = cluster.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= step {
                            return Ok(());
                        }
                        cluster
                            .entity::<Counter>(&format!("m-{i}"))
                            .ask(Cmd::Add(1))
                            .await
                            .map_err(|e| format!("ask {i}: {e}"))?;
                    }
                })
            })
            .collect();
        for t in tasks {
            if let Ok(Err(e)) = t.await {
                report.anomaly(format!("memory: {e}"));
            }
        }
        next.store(step as u64, Ordering::Relaxed);
        let in_memory = cluster.entities_in_memory();
        let rss = rss_kb();
        println!(
            "  after {} distinct entities: {} in memory, RSS {:.1} MB",
            grouped(step as f64),
            grouped(in_memory as f64),
            rss.unwrap_or(0) as f64 / 1024.0
        );
        if in_memory > cap + IN_FLIGHT {
            report.anomaly(format!("memory: {in_memory} entities in memory, cap {cap}"));
        }
        report.memory.push((step, in_memory, rss));
    }
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}
