//! Singletons and cron: one copy at a time across runners, observed from the database;
//! failover when a runner is cut off or shuts down; cron ticks fired once each, across
//! failover and across a stretch with no runner alive.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod cron;
mod db;
mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cron::{every_second, tick_message, ticks};
use db::Db;
use entlog_engine::{Cluster, CronSchedule, EngineError};
use entlog_journal::Timestamp;
use probe::{assert_disjoint, current, db_age, probe, runs};

/// Three runners host a singleton. It runs on exactly one of them at every moment (no
/// two runs overlap, from the rows the runs wrote); when its runner is cut off (lock
/// connection terminated, no reconnection) it runs elsewhere after the takeover grace;
/// when its runner
/// shuts down gracefully it stops cooperatively and runs elsewhere within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn singleton_runs_once_and_fails_over_on_postgres() {
    let mut db = Db::new().await;
    let table = format!("{}.probe", db.schema);
    db.exec(&format!(
        "CREATE TABLE {table} (instance TEXT, runner TEXT, kind TEXT, at FLOAT8)"
    ))
    .await;
    let task = Arc::new(probe(db.url.clone(), table.clone()));
    let mut runners = BTreeMap::new();
    for id in ["a", "b", "c"] {
        let task = task.clone();
        let r = db
            .runner(id, |b| b.singleton("probe", move |ctx| task(ctx)))
            .await;
        runners.insert(id.to_owned(), r);
    }
    eventually(20, "one settled copy", || async {
        current(&db, &table).await.is_some_and(|r| db_age(&r) > 0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owner = current(&db, &table).await.unwrap().runner;

    // Cut the owner off: the copy must move to another runner within the takeover grace
    // (the old run did not stop cleanly) and a second.
    let grace = entlog_journal::Liveness::default()
        .takeover_grace()
        .as_secs_f64();
    let killed_at = db.cut_off(&owner).await;
    eventually(20, "a copy on another runner", || async {
        current(&db, &table)
            .await
            .is_some_and(|r| r.runner != owner)
    })
    .await;
    let moved = runs(&db, &table)
        .await
        .into_iter()
        .find(|r| r.runner != owner && r.first > killed_at)
        .unwrap();
    let failover = moved.first - killed_at;
    eprintln!(
        "cut off {owner}: the singleton ran on {} after {failover:.2} s",
        moved.runner
    );
    assert!(
        failover <= grace + 1.0,
        "failover took {failover:.2} s (grace {grace:.2} s)"
    );
    assert!(
        failover >= grace,
        "started before the grace: {failover:.2} s (grace {grace:.2} s)"
    );
    let old = runs(&db, &table)
        .await
        .into_iter()
        .rfind(|r| r.runner == owner)
        .unwrap();
    // It was aborted (it may have seen its stop signal just before) when its runner
    // noticed the lost lock: within the lock ping interval (250 ms) and a round trip.
    let noticed = old.last - killed_at;
    eprintln!("{owner}'s copy wrote its last row {noticed:.2} s after the kill");
    assert!(
        noticed < 0.6,
        "{owner} went on for {noticed:.2} s after losing its lock"
    );
    assert!(old.last < moved.first);

    // Let it back in: it may take the shard (and the singleton) back, gracefully.
    db.restore(&owner).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now_on = current(&db, &table).await.unwrap().runner;

    // Graceful shutdown of whoever runs it now.
    let t = Instant::now();
    let before = db.now().await;
    runners.remove(&now_on).unwrap().shutdown().await.unwrap();
    eprintln!("shutdown of {now_on} took {:?}", t.elapsed());
    eventually(5, "a copy on a remaining runner", || async {
        current(&db, &table)
            .await
            .is_some_and(|r| r.runner != now_on)
    })
    .await;
    let all = runs(&db, &table).await;
    let stopped = all.iter().rfind(|r| r.runner == now_on).unwrap();
    assert!(
        stopped.stopped,
        "a graceful shutdown stops the copy cooperatively"
    );
    let next = all.iter().find(|r| r.first > stopped.last).unwrap();
    let handover = next.first - before;
    eprintln!(
        "graceful hand-over from {now_on} to {} in {handover:.2} s",
        next.runner
    );
    assert!(handover <= 2.0, "hand-over took {handover:.2} s");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        current(&db, &table).await.is_some(),
        "one copy runs after settling"
    );
    let all = runs(&db, &table).await;
    assert_disjoint(&all);
    eprintln!("{} runs, none overlapping", all.len());
    for (_, r) in runners {
        r.shutdown().await.unwrap();
    }
    // Every run stopped now; the last one cooperatively.
    assert!(runs(&db, &table).await.last().unwrap().stopped);
    db.drop().await;
}

/// An every-second schedule on three runners fires each tick once (one event per tick in
/// the target's history, no tick twice), and keeps firing after the runner driving it is
/// cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cron_fires_once_per_tick_across_runners_on_postgres() {
    let mut db = Db::new().await;
    let mut runners = BTreeMap::new();
    for id in ["a", "b", "c"] {
        let r = db
            .runner(id, |b| {
                b.cron_message_with::<Counter, _>(every_second("tick"), "ticker", tick_message)
            })
            .await;
        runners.insert(id.to_owned(), r);
    }
    let client = db.client().await;
    eventually(20, "three ticks", || async {
        ticks(&client, "ticker").await.len() >= 3
    })
    .await;
    let driver = || async {
        let mut admin = db.admin().await;
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT runner FROM {}.singletons WHERE name = 'cron:tick' AND running",
            db.schema
        )))
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    let host = driver().await;
    db.cut_off(&host).await;
    let cut = Timestamp::now().as_micros() / 1_000_000;
    eventually(10, "ticks after the cut", || async {
        ticks(&client, "ticker")
            .await
            .iter()
            .filter(|t| **t as i64 > cut + 2)
            .count()
            >= 2
    })
    .await;
    let after = driver().await;
    assert_ne!(after, host);
    let seen = ticks(&client, "ticker").await;
    eprintln!("ticks {seen:?}; driver cut off at {cut} ({host} → {after})");
    // Each tick once (checked by `ticks`), in order, and consecutive except around the cut,
    // where missed ticks are coalesced into the latest.
    for pair in seen.windows(2) {
        let gap = pair[1] as i64 - pair[0] as i64;
        assert!(gap >= 1, "ticks out of order: {pair:?}");
        let near_cut = (cut - 1..=cut + 3).contains(&(pair[1] as i64));
        assert!(
            gap == 1 || (near_cut && gap <= 3),
            "gap of {gap} s at {pair:?} (cut at {cut})"
        );
    }
    for (_, r) in runners {
        r.shutdown().await.unwrap();
    }
    client.shutdown().await.unwrap();
    db.drop().await;
}

fn sqlite(dir: &common::TempDir) -> entlog_engine::ClusterBuilder {
    Cluster::builder()
        .sqlite(dir.db())
        .config(
            config(4)
                .singleton_restart_backoff(Duration::from_millis(50))
                .singleton_stop_timeout(Duration::from_millis(300)),
        )
        .entity(Counter)
}

/// On SQLite the one runner runs every singleton: a failing one is restarted after its
/// back-off, a stopping one returns on its signal, and one that ignores the signal is
/// aborted after the stop timeout. Bad registrations are refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singletons_restart_and_stop_on_sqlite() {
    let dir = common::TempDir::new();
    let starts = Arc::new(AtomicU32::new(0));
    let stops = Arc::new(AtomicU32::new(0));
    let (s1, s2) = (starts.clone(), stops.clone());
    let stubborn_runs = Arc::new(AtomicU32::new(0));
    let stubborn = stubborn_runs.clone();
    let cluster = sqlite(&dir)
        .singleton("flaky", move |ctx| {
            let n = s1.fetch_add(1, Ordering::SeqCst);
            let stops = s2.clone();
            async move {
                match n {
                    0 => panic!("first run fails"),
                    1 => {} // second run returns at once
                    _ => {
                        ctx.stopped().await;
                        stops.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
        .singleton("stubborn", move |_ctx| {
            stubborn.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        })
        .start()
        .await
        .unwrap();
    eventually(10, "two restarts", || async {
        starts.load(Ordering::SeqCst) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "a running singleton is not restarted"
    );
    assert_eq!(stubborn_runs.load(Ordering::SeqCst), 1);
    let t = Instant::now();
    cluster.shutdown().await.unwrap();
    let took = t.elapsed();
    assert_eq!(stops.load(Ordering::SeqCst), 1, "stopped cooperatively");
    assert!(took < Duration::from_secs(3), "shutdown waited {took:?}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .unwrap();
    let running: Vec<(String, bool)> =
        sqlx::query_as("SELECT name, running FROM singletons ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        running,
        vec![("flaky".into(), false), ("stubborn".into(), false)],
        "both runs recorded as stopped cleanly"
    );
    pool.close().await;

    for bad in [
        sqlite(&dir)
            .singleton("x", |_| async {})
            .singleton("x", |_| async {}),
        sqlite(&dir).singleton("", |_| async {}),
    ] {
        match bad.start().await {
            Err(EngineError::Config(_)) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a bad singleton registration started"),
        }
    }
}

/// A singleton sends through its context's client, which does not keep the member
/// running: once every handle is dropped — the last being an `EntityRef`, which keeps it
/// running as its `Cluster` did — the member shuts down and the singleton is told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_a_member_with_singletons_on_sqlite() {
    let dir = common::TempDir::new();
    let sent = Arc::new(AtomicU32::new(0));
    let stops = Arc::new(AtomicU32::new(0));
    let (s1, s2) = (sent.clone(), stops.clone());
    let cluster = sqlite(&dir)
        .singleton("sender", move |ctx| {
            let (sent, stops) = (s1.clone(), s2.clone());
            async move {
                let counter = ctx.client().entity::<Counter>("from-singleton");
                if counter.ask(Cmd::Add { n: 1, tag: 1 }).await.is_ok() {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                ctx.stopped().await;
                stops.fetch_add(1, Ordering::SeqCst);
            }
        })
        .start()
        .await
        .unwrap();
    eventually(10, "the singleton's ask", || async {
        sent.load(Ordering::SeqCst) == 1
    })
    .await;
    let kept = cluster.entity::<Counter>("kept");
    drop(cluster);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kept.ask(Cmd::Add { n: 2, tag: 2 }).await.unwrap(), 2);
    assert_eq!(stops.load(Ordering::SeqCst), 0, "still running");
    drop(kept);
    eventually(10, "the singleton told to stop", || async {
        stops.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// Cron on SQLite: an every-second message schedule and task schedule fire each tick once;
/// ticks missed while nothing ran are coalesced into one late firing of the latest; a
/// missed tick older than `max_catch_up` is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_catches_up_once_or_skips_on_sqlite() {
    let dir = common::TempDir::new();
    let task_ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start = |task_ticks: Arc<std::sync::Mutex<Vec<u64>>>| {
        sqlite(&dir)
            .cron_message_with::<Counter, _>(
                every_second("tick").max_catch_up(Duration::from_secs(10)),
                "ticker",
                tick_message,
            )
            .cron_task(every_second("task"), move |_ctx, t| {
                let task_ticks = task_ticks.clone();
                async move {
                    task_ticks
                        .lock()
                        .unwrap()
                        .push((t.as_micros() / 1_000_000) as u64);
                }
            })
            .start()
    };
    let cluster = start(task_ticks.clone()).await.unwrap();
    eventually(10, "three ticks", || async {
        ticks(&cluster, "ticker").await.len() >= 3
    })
    .await;
    cluster.shutdown().await.unwrap();
    drop(cluster);

    // Nothing runs across two or more ticks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restart = (Timestamp::now().as_micros() / 1_000_000) as u64;
    let cluster = start(task_ticks.clone()).await.unwrap();
    let gaps = || async {
        let seen = ticks(&cluster, "ticker").await;
        let gaps: Vec<(u64, u64)> = seen
            .windows(2)
            .filter(|p| p[1] != p[0] + 1)
            .map(|p| (p[0], p[1]))
            .collect();
        (seen, gaps)
    };
    eventually(10, "ticks after the restart", || async {
        let (seen, gaps) = gaps().await;
        gaps.len() == 1 && seen.last() > Some(&gaps[0].1)
    })
    .await;
    let (seen, gaps) = gaps().await;
    let (last, caught_up) = gaps[0];
    eprintln!("last tick {last}, restart at {restart}, next tick {caught_up}: {seen:?}");
    assert!(restart >= last + 2, "at least two ticks were missed");
    // The missed ticks last+1 ..= restart were coalesced: only the latest one due when the
    // driver started fired (late), the earlier ones never.
    assert!(
        caught_up >= restart && caught_up <= restart + 3,
        "the latest missed tick fires once; earlier ones are skipped"
    );
    cluster.shutdown().await.unwrap();
    drop(cluster);
    let task_ticks = task_ticks.lock().unwrap().clone();
    assert!(task_ticks.len() >= 4, "{task_ticks:?}");
    let distinct: BTreeSet<u64> = task_ticks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        task_ticks.len(),
        "a task tick ran twice: {task_ticks:?}"
    );

    // A daily schedule last handled three days ago: the latest missed tick (today's
    // midnight) fires if max_catch_up covers it, and is skipped otherwise.
    let now = Timestamp::now();
    let midnight = (now.as_micros() / 86_400_000_000) * 86_400_000_000;
    let three_days_ago = now.as_micros() - 3 * 86_400_000_000;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.db().display()))
        .await
        .unwrap();
    for name in ["daily-catch", "daily-skip"] {
        sqlx::query(
            "INSERT INTO cron_schedules (name, last_tick, fired, runner, updated_at)
             VALUES (?1, ?2, 1, 'old', ?2)",
        )
        .bind(name)
        .bind(three_days_ago)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let daily = |name: &str, max| {
        CronSchedule::new(name, "0 0 0 * * *")
            .unwrap()
            .max_catch_up(max)
    };
    let cluster = sqlite(&dir)
        .cron_message_with::<Counter, _>(
            daily("daily-catch", Duration::from_secs(4 * 86_400)),
            "catch",
            tick_message,
        )
        .cron_message_with::<Counter, _>(daily("daily-skip", Duration::ZERO), "skip", tick_message)
        .start()
        .await
        .unwrap();
    eventually(10, "the catch-up tick", || async {
        !ticks(&cluster, "catch").await.is_empty()
    })
    .await;
    let journal = cluster.journal().clone();
    let last_tick = |name: &'static str| {
        let journal = journal.clone();
        async move {
            let entlog_journal::AnyJournal::Sqlite(j) = &journal else {
                unreachable!()
            };
            sqlx::query_as::<_, (i64, bool)>(
                "SELECT last_tick, fired FROM cron_schedules WHERE name = ?1",
            )
            .bind(name)
            .fetch_one(j.reader())
            .await
            .unwrap()
        }
    };
    eventually(10, "the skip to be recorded", || async {
        last_tick("daily-skip").await.0 == midnight
    })
    .await;
    assert_eq!(last_tick("daily-skip").await, (midnight, false));
    assert_eq!(last_tick("daily-catch").await, (midnight, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ticks(&cluster, "catch").await,
        vec![(midnight / 1_000_000) as u64],
        "three missed days fire once, for the latest"
    );
    assert!(
        ticks(&cluster, "skip").await.is_empty(),
        "too late: skipped"
    );
    cluster.shutdown().await.unwrap();
}
