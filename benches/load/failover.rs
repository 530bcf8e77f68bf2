//! Scenario 3, failover in one process: runners A and B share the shards, A's lock
//! connection is terminated by the server, and `takeover` probes an entity of one of A's
//! shards until B (or A again, from a new lock session) answers. Also the database
//! look-ups it needs (`lock_backend`, `shard_row`) and the ownership checks (`settled`,
//! `balanced`); the runs with a child runner process follow in `child`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog_engine::Cluster;
use entlog_journal::shard_of;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::SHARDS;
use crate::child::{CHILD_NODE, failover_process};
use crate::common::{
    Cmd, Counter, FailoverRun, Reply, Report, Settings, config, drop_schema, micros_since_epoch,
    ms, pg_cluster, schema_name,
};

/// The server process of runner `runner`'s lock connection (its liveness lock).
async fn lock_backend(admin: &PgPool, schema: &str, runner: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT l.pid FROM pg_locks l JOIN \"{schema}\".runners r
            ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
           AND l.objid::BIGINT = (r.lock_key::BIGINT & 4294967295)
           AND l.classid::BIGINT = ((SELECT value::BIGINT FROM \"{schema}\".meta
                                      WHERE key = 'lock_namespace') & 4294967295)
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         WHERE r.runner = $1"
    )))
    .bind(runner)
    .fetch_one(admin)
    .await
}

/// The `shards` row of `shard`: (owner, epoch).
async fn shard_row(admin: &PgPool, schema: &str, shard: u32) -> Option<(Option<String>, i64)> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT owner, epoch FROM \"{schema}\".shards WHERE shard = $1"
    )))
    .bind(shard as i32)
    .fetch_optional(admin)
    .await
    .ok()
    .flatten()
}

/// Waits until `a` and `b` are [`balanced`] with the same shards for a whole second
/// (`owned_shards()` still lists a shard being handed over until its worker is reaped, so
/// one balanced look can be a hand-over in progress). False after `limit`.
async fn settled(a: &Cluster, b: &Cluster, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut since: Option<(Instant, Vec<u32>)> = None;
    while Instant::now() < deadline {
        let now = (a.owned_shards(), balanced(a, b));
        match (&since, now) {
            (_, (_, false)) => since = None,
            (Some((t, sa)), (na, true)) if *sa == na => {
                if t.elapsed() >= Duration::from_secs(1) {
                    return true;
                }
            }
            (_, (na, true)) => since = Some((Instant::now(), na)),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Both runners own shards, and every shard is owned by exactly one of them.
fn balanced(a: &Cluster, b: &Cluster) -> bool {
    let (sa, sb) = (a.owned_shards(), b.owned_shards());
    if sa.is_empty() || sb.is_empty() || sa.len() + sb.len() != SHARDS as usize {
        return false;
    }
    let mut seen = vec![false; SHARDS as usize];
    for s in sa.into_iter().chain(sb) {
        if std::mem::replace(&mut seen[s as usize], true) {
            return false;
        }
    }
    true
}

/// After the old owner (`old_node`) lost its lock at `t0`: asks `id` through B every 5 ms
/// until B (node 2) answers one and lists the shard, or the old owner answers again from a
/// new lease (it noticed the loss: `old_lists` turned false, then it handled a probe).
pub(crate) async fn takeover(
    b: &Cluster,
    id: &str,
    shard: u32,
    t0: Instant,
    old_node: u8,
    old_lists: impl Fn() -> bool,
) -> FailoverRun {
    let t0_micros = micros_since_epoch(t0);

    // Probes: an ask every 5 ms (through B's handle) until B answers one.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Reply, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let probe_errors = Arc::new(AtomicU64::new(0));
    let prober = {
        let b = b.clone();
        let id = id.to_owned();
        let stop = stop.clone();
        let probe_errors = probe_errors.clone();
        tokio::spawn(async move {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let counter = b.entity::<Counter>(&id);
                let tx = tx.clone();
                let probe_errors = probe_errors.clone();
                probes.push(tokio::spawn(async move {
                    match counter.ask(Cmd::Add(1)).await {
                        Ok(r) => {
                            let _ = tx.send((r, Instant::now()));
                        }
                        Err(_) => {
                            probe_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for p in probes {
                let _ = p.await;
            }
        })
    };
    let mut run = FailoverRun {
        a_dropped: None,
        b_owned: None,
        b_reply: None,
        b_handled: None,
        a_again: None,
        gap: Duration::ZERO,
        errors: Vec::new(),
    };
    let deadline = t0 + Duration::from_secs(10);
    let mut served = Vec::new();
    loop {
        if run.a_dropped.is_none() && !old_lists() {
            run.a_dropped = Some(t0.elapsed());
        }
        if run.b_owned.is_none() && b.owned_shards().contains(&shard) {
            run.b_owned = Some(t0.elapsed());
        }
        while let Ok((reply, at)) = rx.try_recv() {
            if reply.node != CHILD_NODE {
                served.push(reply.handled_at);
            }
            let handled = Duration::from_micros(reply.handled_at.saturating_sub(t0_micros));
            if reply.node == 2 && run.b_reply.is_none() {
                run.b_reply = Some(at - t0);
                run.b_handled = Some(handled);
            }
            // A handled an ask after it noticed the loss: it re-acquired the shard.
            if reply.node == old_node
                && run.a_again.is_none()
                && run.a_dropped.is_some_and(|d| handled > d)
            {
                run.a_again = Some(at - t0);
            }
        }
        // After B's first reply, wait for B to list the shard too (publication lag).
        let b_done = run.b_reply.is_some() && run.b_owned.is_some();
        if b_done || run.a_again.is_some() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let end_micros = micros_since_epoch(Instant::now());
    stop.store(true, Ordering::Relaxed);
    if tokio::time::timeout(Duration::from_secs(30), prober)
        .await
        .is_err()
    {
        run.errors
            .push("probe asks still unanswered 30 s after the run".into());
    }
    while let Ok((reply, _)) = rx.try_recv() {
        if reply.node != CHILD_NODE {
            served.push(reply.handled_at);
        }
    }
    served.retain(|&t| t >= t0_micros && t <= end_micros);
    served.sort_unstable();
    run.gap = std::iter::once(t0_micros)
        .chain(served.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| Duration::from_micros(w[1] - w[0]))
        .max()
        .unwrap_or_default();
    let errors = probe_errors.load(Ordering::Relaxed);
    if errors > 0 {
        run.errors.push(format!("{errors} probe asks failed"));
    }
    run
}

pub(crate) async fn failover(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("fail");
    drop_schema(admin, &schema).await;
    let pid = std::process::id();
    let runner_config = |id: String| config().runner_id(id);
    let mut a_gen = 0;
    let mut a = pg_cluster(
        url,
        &schema,
        runner_config(format!("load-a{a_gen}-{pid}")),
        1,
    )
    .await;
    let b = pg_cluster(url, &schema, runner_config(format!("load-b-{pid}")), 2).await;
    let mut taken_over = 0;
    for attempt in 0..s.failover_attempts {
        if taken_over >= s.failover_runs {
            break;
        }
        // Both runners up and sharing the shards (A reconnects by itself after a kill).
        let settle = Instant::now();
        let mut ok = settled(&a, &b, Duration::from_secs(20)).await;
        if !ok {
            report.anomaly(format!(
                "failover attempt {attempt}: ownership not settled 20 s after the previous \
                 run (A owns {}, B owns {}); replacing A",
                a.owned_shards().len(),
                b.owned_shards().len()
            ));
            a.shutdown().await.unwrap();
            a_gen += 1;
            a = pg_cluster(
                url,
                &schema,
                runner_config(format!("load-a{a_gen}-{pid}")),
                1,
            )
            .await;
            ok = settled(&a, &b, Duration::from_secs(20)).await;
        }
        if !ok {
            report.anomaly("failover: ownership never settled; giving up".into());
            break;
        }
        let settled_in = settle.elapsed();
        let a_shards = a.owned_shards();
        let shard = a_shards[attempt % a_shards.len()];
        let id = (0..)
            .map(|i| format!("f{attempt}-{i}"))
            .find(|id| shard_of(id, SHARDS) == shard)
            .unwrap();
        let counter = b.entity::<Counter>(&id);
        match counter.ask(Cmd::Add(1)).await {
            Ok(r) if r.node == 1 => {}
            Ok(r) => {
                let row = shard_row(admin, &schema, shard).await;
                report.anomaly(format!(
                    "failover attempt {attempt}: shard {shard} was in A's owned_shards() (and \
                     not B's) but B's runner handled the ask {} ms after the pick; now A's \
                     set has it: {}, B's: {}; shards row (owner, epoch): {row:?}",
                    micros_since_epoch(Instant::now()).saturating_sub(r.handled_at) / 1000,
                    a.owned_shards().contains(&shard),
                    b.owned_shards().contains(&shard),
                ));
                continue;
            }
            Err(e) => {
                report.anomaly(format!(
                    "failover attempt {attempt}: ask before the kill failed: {e}"
                ));
                continue;
            }
        }
        // A random phase against both runners' 250 ms rebalance and ping periods.
        let phase = (Uuid::now_v7().as_u128() >> 32) % 250;
        tokio::time::sleep(Duration::from_millis(phase as u64)).await;
        let backend = match lock_backend(admin, &schema, a.runner_id()).await {
            Ok(p) => p,
            Err(e) => {
                report.anomaly(format!(
                    "failover attempt {attempt}: A's lock backend not found: {e}"
                ));
                continue;
            }
        };
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(backend)
            .fetch_one(admin)
            .await
            .unwrap();
        let t0 = Instant::now();
        if !killed {
            report.anomaly(format!(
                "failover attempt {attempt}: pg_terminate_backend({backend}) returned false"
            ));
            continue;
        }
        let run = takeover(&b, &id, shard, t0, 1, || a.owned_shards().contains(&shard)).await;
        for e in &run.errors {
            report.anomaly(format!("failover attempt {attempt}: {e}"));
        }
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), ms);
        println!(
            "  attempt {attempt} (settled in {}): shard {shard}; A dropped it after {}, B owned \
             it after {}, first reply from B after {} (handled at {}); longest gap without a \
             handled probe {}{}",
            ms(settled_in),
            show(run.a_dropped),
            show(run.b_owned),
            show(run.b_reply),
            show(run.b_handled),
            ms(run.gap),
            match run.a_again {
                Some(d) => format!(
                    "; A re-opened its lock session and answered again after {} \
                     (B never took the shard)",
                    ms(d)
                ),
                None => String::new(),
            }
        );
        if run.b_reply.is_some() {
            taken_over += 1;
        } else if run.a_again.is_none() {
            report.anomaly(format!(
                "failover attempt {attempt}: no reply from B nor from A within 10 s of the kill"
            ));
        }
        report.failover.push(run);
    }
    // The same with a runner process killed outright (SIGKILL): no runner left to
    // re-open the lock session, so B must take over.
    a.shutdown().await.unwrap();
    println!("  -- runner processes struck instead of a lock connection:");
    failover_process(admin, s, report, &b, &schema).await;
    b.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;
}
