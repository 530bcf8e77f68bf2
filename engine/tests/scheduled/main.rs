//! Scheduled messages and durable timers, on SQLite and PostgreSQL: delivered in due
//! order, never early, once — across restarts and a failover — and cancelled ones never.
//!
//! Every delivery is checked against the journal: the handler records the wall clock when
//! it runs in its event, and the event's message id leads to the promoted message and its
//! `deliver_at`.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod entities;
mod store;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{config, eventually};
use entities::{Cmd, Event, Timer};
use entlog_engine::{Cluster, EngineError};
use entlog_journal::{AnyJournal, AppendOutcome, EntityKey, EntryKind, Journal, Timestamp};
use store::{Delivery, SHARDS, Store, await_tags, check_once_and_never_early, deliveries};
use uuid::Uuid;

/// Messages scheduled out of order are delivered in due order, each once, none early;
/// one with a past time is delivered at once.
async fn due_order(store: Store) {
    let cluster = store.runner("r1", 1).await;
    let t = cluster.entity::<Timer>("ordered");
    // Due times 150 ms .. 1,200 ms ahead, sent in a shuffled order, through both calls.
    let offsets_ms = [900u64, 150, 1200, 450, 300, 1050, 600, 750];
    for (i, ms) in offsets_ms.iter().enumerate() {
        let tag = *ms;
        if i % 2 == 0 {
            let at = Timestamp::now().after(Duration::from_millis(*ms));
            t.tell_at(at, Cmd::Fire { tag }).await.unwrap();
        } else {
            t.tell_after(Duration::from_millis(*ms), Cmd::Fire { tag })
                .await
                .unwrap();
        }
    }
    let past = Timestamp::now().after(Duration::ZERO);
    cluster
        .entity::<Timer>("past")
        .tell_at(
            Timestamp(past.as_micros() - 60_000_000),
            Cmd::Fire { tag: 1 },
        )
        .await
        .unwrap();
    let tags: HashSet<u64> = offsets_ms.iter().copied().chain([1]).collect();
    let all = await_tags(cluster.journal(), &tags, 20).await;
    check_once_and_never_early(&all);
    // Each due time was taken when its message was sent, so the journal's `deliver_at`
    // (not the offsets) gives the expected order.
    let handled: Vec<&Delivery> = all.iter().filter(|d| d.entity == "ordered").collect();
    let mut by_due = handled.clone();
    by_due.sort_by_key(|d| d.deliver_at);
    let tags = |v: &[&Delivery]| v.iter().map(|d| d.tag).collect::<Vec<_>>();
    assert_eq!(tags(&handled), tags(&by_due), "handled in due order");
    assert_eq!(handled.len(), offsets_ms.len());
    let past = all.iter().find(|d| d.tag == 1).unwrap();
    assert!(past.at.since(past.deliver_at.unwrap()) >= Duration::from_secs(60));
    cluster.shutdown().await.unwrap();
    store.cleanup().await;
}

/// Cancelled messages are never delivered; cancel reports `false` once a message was
/// cancelled or delivered; a cancelled id is forgotten (a re-send schedules it anew), a
/// delivered one is a duplicate.
async fn cancel(store: Store) {
    let cluster = store.runner("r1", 1).await;
    let mut sent = Vec::new();
    for tag in 0..10u64 {
        let t = cluster.entity::<Timer>(&format!("c-{}", tag % 3));
        // Far enough ahead for the cancels below to come first, even on a busy machine.
        let id = t
            .tell_after(Duration::from_millis(2_000 + 50 * tag), Cmd::Fire { tag })
            .await
            .unwrap();
        sent.push((tag, id));
    }
    let handle = |tag: u64| cluster.entity::<Timer>(&format!("c-{}", tag % 3));
    for &(tag, id) in sent.iter().filter(|(tag, _)| tag % 2 == 0) {
        assert!(handle(tag).cancel(id).await.unwrap(), "tag {tag} cancelled");
        assert!(
            !handle(tag).cancel(id).await.unwrap(),
            "tag {tag} already cancelled"
        );
        // The id belongs to one entity.
        assert!(!handle(tag + 1).cancel(id).await.unwrap());
    }
    let kept: HashSet<u64> = (0..10).filter(|t| t % 2 == 1).collect();
    let all = await_tags(cluster.journal(), &kept, 20).await;
    // Past every due time, and a little more for a late delivery to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_later = deliveries(cluster.journal()).await;
    assert_eq!(all.len(), all_later.len());
    check_once_and_never_early(&all_later);
    let delivered: HashSet<u64> = all_later.iter().map(|d| d.tag).collect();
    assert_eq!(delivered, kept, "cancelled messages are never delivered");

    let (tag, id) = sent[1];
    assert!(!handle(tag).cancel(id).await.unwrap(), "already delivered");
    let at = Timestamp::now().after(Duration::from_millis(500));
    let dup = handle(tag)
        .tell_at_with_id(id, at, Cmd::Fire { tag })
        .await
        .unwrap();
    assert!(matches!(dup, AppendOutcome::Duplicate { .. }), "{dup:?}");
    // Cancel + re-send with the same id: scheduled anew (how a timer is moved).
    let (tag, id) = sent[0];
    let at = Timestamp::now().after(Duration::from_millis(500));
    let again = handle(tag)
        .tell_at_with_id(id, at, Cmd::Fire { tag })
        .await
        .unwrap();
    assert!(
        matches!(again, AppendOutcome::Scheduled { .. }),
        "{again:?}"
    );
    let all = await_tags(cluster.journal(), &HashSet::from([tag]), 20).await;
    check_once_and_never_early(&all);
    assert_eq!(all.len(), kept.len() + 1);
    cluster.shutdown().await.unwrap();
    store.cleanup().await;
}

/// A timer armed by a handler (`ctx.schedule`) commits or vanishes with the handled
/// message: a panicking or rejected handler leaves no timer; a successful one leaves
/// exactly one, delivered once and not early — also when the runner restarts before it
/// is due.
async fn handler_timers(store: Store) {
    let cluster = store.runner("r1", 1).await;
    let t = cluster.entity::<Timer>("armed");
    // Far enough ahead to be still scheduled after the failing handlers' retries.
    let timer = t
        .ask(Cmd::Arm {
            tag: 1,
            after_ms: 3_000,
        })
        .await
        .unwrap();
    let err = t
        .ask(Cmd::ArmThenPanic {
            tag: 2,
            after_ms: 100,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");
    let err = t
        .ask(Cmd::ArmThenReject {
            tag: 3,
            after_ms: 100,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Rejected { .. }), "{err:?}");
    let key = EntityKey::new("timer", "armed").unwrap();
    let records = cluster.journal().entity_records(&key).await.unwrap();
    let scheduled: Vec<Uuid> = records.scheduled.iter().map(|s| s.message_id).collect();
    assert_eq!(
        scheduled,
        vec![timer],
        "exactly the committed handler's timer"
    );
    let armed_at = records
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Event)
        .find_map(|e| match e.payload.decode::<Event>().unwrap() {
            Event::Armed { at, .. } => Some(Timestamp(at)),
            Event::Fired { .. } => None,
        })
        .unwrap();

    // Restart before it is due.
    cluster.shutdown().await.unwrap();
    drop(t);
    drop(cluster);
    let cluster = store.runner("r1", 1).await;
    let all = await_tags(cluster.journal(), &HashSet::from([1]), 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_later = deliveries(cluster.journal()).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all_later.len(), 1, "{all_later:?}");
    check_once_and_never_early(&all_later);
    let fired = &all_later[0];
    assert!(fired.at >= armed_at.after(Duration::from_millis(3_000)));
    for shard in 0..SHARDS {
        assert_eq!(cluster.journal().next_due(shard).await.unwrap(), None);
    }
    cluster.shutdown().await.unwrap();
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_due_order_and_never_early() {
    due_order(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancelled_messages_are_never_delivered() {
    cancel(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handler_timers_commit_with_their_message() {
    handler_timers(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_due_order_and_never_early() {
    due_order(Store::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cancelled_messages_are_never_delivered() {
    cancel(Store::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_handler_timers_commit_with_their_message() {
    handler_timers(Store::postgres().await).await;
}

/// A message scheduled by a client in another process reaches the owner's timer through
/// `NOTIFY`: the runner's next due time is far away when a nearer message is scheduled by
/// a client-only member (its own journal, so nothing is shared in-process), and it is
/// still delivered on time — not at the runner's next look at the schedule, which its
/// 10 s poll interval puts far off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schedule_from_another_member_wakes_the_owner() {
    let store = Store::postgres().await;
    let slow_poll = config(SHARDS).poll_interval(Duration::from_secs(10));
    let runner = store.runner_with("r1", 1, slow_poll).await;
    eventually(20, "the runner to own every shard", || async {
        runner.owned_shards().len() == SHARDS as usize
    })
    .await;
    let Store::Postgres { url, schema } = &store else {
        unreachable!()
    };
    let client = Cluster::builder()
        .postgres_schema(url, schema)
        .config(config(SHARDS))
        .client_only()
        .start()
        .await
        .unwrap();
    let t = client.entity::<Timer>("remote");
    // A far one first, so the owner's timer waits for it; then a near one.
    t.tell_after(Duration::from_secs(3600), Cmd::Fire { tag: 1 })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.tell_after(Duration::from_millis(300), Cmd::Fire { tag: 2 })
        .await
        .unwrap();
    let all = await_tags(runner.journal(), &HashSet::from([2]), 10).await;
    check_once_and_never_early(&all);
    let d = &all[0];
    let late = d.at.since(d.deliver_at.unwrap());
    // Far below the poll interval, with room for a busy test machine.
    assert!(late < Duration::from_secs(2), "delivered {late:?} late");
    eprintln!("scheduled from another member: delivered {late:?} late");
    client.shutdown().await.unwrap();
    runner.shutdown().await.unwrap();
    store.cleanup().await;
}

/// Failover: two runners share the shards, scheduled messages (from clients and from
/// handlers) are due over the next few seconds, and runner 1 dies — its lock connection
/// is terminated by the server, and it does not come back. Runner 2 takes its shards
/// over and delivers every scheduled message exactly once, none early; those due after
/// runner 1 was gone are handled by runner 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_failover_delivers_each_scheduled_message_once() {
    let store = Store::postgres().await;
    let Store::Postgres { schema, .. } = &store else {
        unreachable!()
    };
    let schema = schema.clone();
    let r1 = store.runner("r1", 1).await;
    let r2 = store.runner("r2", 2).await;
    eventually(20, "the runners to share the shards", || async {
        let (a, b) = (r1.owned_shards(), r2.owned_shards());
        !a.is_empty() && !b.is_empty() && a.len() + b.len() == SHARDS as usize
    })
    .await;
    let before = r1.owned_shards();

    // 40 client messages over 20 entities, due 400 ms .. 3.5 s from now, and 10 timers
    // armed by handlers, due 600 ms .. 2.4 s after their handling.
    let mut tags = HashSet::new();
    for tag in 0..40u64 {
        let t = r2.entity::<Timer>(&format!("f-{}", tag % 20));
        t.tell_after(Duration::from_millis(400 + 80 * tag), Cmd::Fire { tag })
            .await
            .unwrap();
        tags.insert(tag);
    }
    for tag in 100..110u64 {
        let t = r2.entity::<Timer>(&format!("h-{tag}"));
        t.ask(Cmd::Arm {
            tag,
            after_ms: 600 + 200 * (tag - 100),
        })
        .await
        .unwrap();
        tags.insert(tag);
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid: i32 = {
        let mut admin = store.admin().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT l.pid FROM pg_locks l JOIN {schema}.runners r
               ON l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
              AND l.objid::BIGINT = (r.lock_key::BIGINT & 4294967295)
            WHERE r.runner = 'r1'"
        )))
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    let mut admin = store.admin().await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    r1.shutdown().await.unwrap();
    let gone = Timestamp::now();
    eprintln!("r1 (shards {before:?}) is gone");
    eventually(20, "r2 to own every shard", || async {
        r2.owned_shards().len() == SHARDS as usize
    })
    .await;

    let all = await_tags(r2.journal(), &tags, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_later = deliveries(r2.journal()).await;
    assert_eq!(all.len(), tags.len(), "{all:?}");
    assert_eq!(all_later.len(), tags.len(), "{all_later:?}");
    check_once_and_never_early(&all_later);
    for d in &all_later {
        if d.deliver_at.is_some_and(|due| due > gone) {
            assert_eq!(d.node, 2, "tag {} due after r1 was gone", d.tag);
        }
    }
    let by_r1 = all_later.iter().filter(|d| d.node == 1).count();
    eprintln!(
        "{} delivered by r1 before it died, {} by r2",
        by_r1,
        all_later.len() - by_r1
    );
    for shard in 0..SHARDS {
        assert_eq!(r2.journal().next_due(shard).await.unwrap(), None);
    }
    r2.shutdown().await.unwrap();
    store.cleanup().await;
}

/// One clock: every time a member stamps, schedules or compares comes from its journal's
/// clock, not its host's. A runner whose journal clock is moved 30 s ahead of (or behind)
/// the host's delivers a `tell_after` and a handler's timer after their delay of real
/// time — not 30 s late (or at once), as it would if any step read the host's clock.
async fn one_clock(shift_secs: i64) {
    let store = Store::postgres().await;
    let runner = store.runner("r1", 1).await;
    let AnyJournal::Postgres(pg) = runner.journal() else {
        unreachable!()
    };
    pg.shift_clock(shift_secs * 1_000_000);
    let delay = Duration::from_millis(1_500);
    let t = runner.entity::<Timer>("clocked");
    let sent = std::time::Instant::now();
    t.tell_after(delay, Cmd::Fire { tag: 1 }).await.unwrap();
    t.ask(Cmd::Arm {
        tag: 2,
        after_ms: delay.as_millis() as u64,
    })
    .await
    .unwrap();
    let mut seen: HashMap<u64, Duration> = HashMap::new();
    while seen.len() < 2 && sent.elapsed() < Duration::from_secs(20) {
        for d in deliveries(runner.journal()).await {
            seen.entry(d.tag).or_insert_with(|| sent.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = deliveries(runner.journal()).await;
    check_once_and_never_early(&all);
    for tag in [1, 2] {
        let after = seen.get(&tag).copied();
        assert!(
            after.is_some_and(|a| a >= delay && a < delay + Duration::from_secs(8)),
            "shift {shift_secs} s: tag {tag} delivered after {after:?}, due after {delay:?}"
        );
    }
    runner.shutdown().await.unwrap();
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_journal_clock_ahead_of_the_host() {
    one_clock(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_journal_clock_behind_the_host() {
    one_clock(-30).await;
}
