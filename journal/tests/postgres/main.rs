//! The conformance suite on PostgreSQL (one schema per test), plus what only PostgreSQL
//! has: connections killed by the server, shard locks on dedicated connections, and
//! commits delayed inside their transactions.
//!
//! The fixture (`Pg`, a schema per journal) is in [`pg`]; the tests of connections killed
//! by the server are in [`killed`].
#![allow(clippy::unwrap_used)]

mod killed;
mod pg;

use std::time::{Duration, Instant};

use entlog_journal::testing::conformance::{self as suite, Backend, id_in_shard};
use entlog_journal::testing::database_url;
use entlog_journal::{
    AppendOutcome, EntityKey, Journal, JournalError, NewMessage, Payload, PgJournal, PgOptions,
    Processed, ProcessedBatch, ShardLocks,
};
use pg::{Pg, key, payload};
use uuid::Uuid;

macro_rules! conformance {
    ($($name:ident $(($($arg:expr),*))?;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let b = Pg::new().await;
                suite::$name(&b $($(, $arg)*)?).await;
                b.cleanup().await;
            }
        )*
    };
}

conformance! {
    durable_ack;
    dedup;
    atomic_batch_commit;
    open_commit_wakes_once_committed;
    cancelled_commits_are_all_or_nothing(200);
    seq_fencing(20, 4);
    lease_fencing;
    checked_bytes;
    snapshots;
    bad_input;
    wrong_shard_count_and_format;
    scheduled_messages;
    cancel_scheduled;
    headers_round_trip;
    cancel_races_promotion(400);
    event_stream;
    cursors_move_forward;
    wakeups;
    batched_replies;
    runner_registry;
    mailbox_reads;
    damaged_mailbox_entries;
    mailbox_bad_input;
    commit_many_all_or_none;
}

/// Invariant 6 with commits held open for a random 0-5 ms after their insert, so that
/// transactions commit out of the order in which they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_skipped_entries_with_delayed_commits() {
    let b = Pg {
        delay_commits: true,
        ..Pg::new().await
    };
    suite::no_skipped_entries(&b, 5, 8, 40).await;
    b.cleanup().await;
}

/// The control for the test above: the same delayed commits make a naive
/// `id > last_seen` tailer over a bigserial skip entries. If this stopped failing, the
/// delay injection would no longer create the hazard and the test above would prove
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_bigserial_tailer_skips_under_delayed_commits() {
    let b = Pg::new().await;
    let schema = format!("t_{}", Uuid::now_v7().simple());
    b.schemas.lock().unwrap().push(schema.clone());
    let mut admin = b.admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.naive (id BIGSERIAL PRIMARY KEY, v INT NOT NULL);
         CREATE FUNCTION {schema}.delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(random() * 0.005); RETURN NULL; END $$;
         CREATE TRIGGER delay_commit AFTER INSERT ON {schema}.naive
         FOR EACH STATEMENT EXECUTE FUNCTION {schema}.delay_commit();"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(9)
        .connect(&b.url)
        .await
        .unwrap();
    let total = 8 * 40;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (pool, schema) = (pool.clone(), schema.clone());
            tokio::spawn(async move {
                for k in 0..40 {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO {schema}.naive (v) VALUES ($1)"
                    )))
                    .bind(w * 1000 + k)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let mut last = 0i64;
    let mut seen = 0usize;
    let started = Instant::now();
    while !writers.iter().all(|w| w.is_finished()) && started.elapsed() < Duration::from_secs(30) {
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {schema}.naive WHERE id > $1 ORDER BY id"
        )))
        .bind(last)
        .fetch_all(&pool)
        .await
        .unwrap();
        seen += ids.len();
        last = ids.last().copied().unwrap_or(last);
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {schema}.naive WHERE id > $1"
    )))
    .bind(last)
    .fetch_all(&pool)
    .await
    .unwrap();
    seen += ids.len();
    assert!(
        seen < total,
        "the naive tailer saw all {total} rows: the delay no longer reorders commits"
    );
    eprintln!(
        "naive bigserial tailer skipped {} of {total} rows",
        total - seen
    );
    pool.close().await;
    b.cleanup().await;
}

/// Shard locks of two journals in one database (two schemas) never contend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_namespaces_are_per_journal() {
    let b = Pg::new().await;
    let j1 = b.fresh(2).await;
    let j2 = b.fresh(2).await;
    let s1 = j1.lock_session("r1").await.unwrap();
    let s2 = j2.lock_session("r2").await.unwrap();
    assert!(s1.try_acquire(0).await.unwrap().is_some());
    assert!(s2.try_acquire(0).await.unwrap().is_some());
    b.cleanup().await;
}

/// A notification from another process (another pool) wakes a waiting tailer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_cross_processes() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let other = PgJournal::open(b.options(j.schema(), 2)).await.unwrap();
    let e = key("n");
    let shard = j.shard_of(&e);
    j.wait_for_entries(shard, Duration::from_millis(50)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (
                j.wait_for_entries(shard, Duration::from_secs(10)).await,
                t.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    other
        .append(vec![NewMessage::new(e, payload(1))])
        .await
        .unwrap();
    let (woken, waited) = waiter.await.unwrap();
    assert!(
        woken && waited < Duration::from_secs(5),
        "woken {woken} after {waited:?}"
    );
    b.cleanup().await;
}

/// An append whose messages all go to shards a lock session of this journal holds sends
/// no NOTIFY (the journal's own runner is woken in-process); one that also goes elsewhere
/// does, and so do appends to a shard whose session was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_to_held_shards_send_no_notify() {
    let b = Pg::new().await;
    let shards = 4;
    let j = b.fresh(shards).await;
    let any: entlog_journal::AnyJournal = j.clone().into();
    let mut listener = sqlx::postgres::PgListener::connect(&b.url).await.unwrap();
    listener
        .listen(&format!("entlog_{}", j.schema()))
        .await
        .unwrap();
    let locks = j.lock_session("runner-h").await.unwrap();
    locks
        .try_acquire(0)
        .await
        .unwrap()
        .expect("shard 0 is free");
    let held = key(&id_in_shard("h", 0, shards));
    let free = key(&id_in_shard("f", 1, shards));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notified within 10 s")
            .unwrap()
            .payload()
            .to_owned()
    };

    // Notifications arrive in commit order: shard 1's comes first, so shard 0's append
    // sent none; its tailers in this process were woken all the same.
    let woken = any.wake_count(0);
    j.append(vec![NewMessage::new(held.clone(), payload(1))])
        .await
        .unwrap();
    assert!(any.wake_count(0) > woken, "shard 0 not woken in-process");
    j.append(vec![NewMessage::new(free.clone(), payload(2))])
        .await
        .unwrap();
    assert_eq!(next().await, "1");

    // Held and not held together: notified, both named.
    j.append(vec![
        NewMessage::new(held.clone(), payload(3)),
        NewMessage::new(free, payload(4)),
    ])
    .await
    .unwrap();
    assert_eq!(next().await, "0,1");

    // The session's connection dies: shard 0 is no longer held here, and is notified.
    let pid = locks.backend_pid().await.unwrap();
    let mut admin = b.admin().await;
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(done);
    tokio::time::timeout(Duration::from_secs(30), locks.lost())
        .await
        .expect("the session notices its lost connection");
    j.append(vec![NewMessage::new(held, payload(5))])
        .await
        .unwrap();
    assert_eq!(next().await, "0");
    b.cleanup().await;
}

/// An append or a commit over many shards sends one notification per kind, listing its
/// shards, in groups of at most 500 (a payload stays under PostgreSQL's 8,000 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_coalesced_per_transaction() {
    let b = Pg::new().await;
    let shards: u32 = 1_200;
    let j = b.fresh(shards).await;
    let mut listener = sqlx::postgres::PgListener::connect(&b.url).await.unwrap();
    listener
        .listen(&format!("entlog_{}", j.schema()))
        .await
        .unwrap();
    let messages: Vec<NewMessage> = (0..shards)
        .map(|s| NewMessage::new(key(&id_in_shard("c", s, shards)), payload(1)))
        .collect();
    let outcomes = j.append(messages.clone()).await.unwrap();

    let mut payloads = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    while seen.len() < shards as usize {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notified within 10 s")
            .unwrap();
        seen.extend(n.payload().split(',').map(|s| s.parse::<u32>().unwrap()));
        payloads.push(n.payload().len());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..shards).collect::<Vec<_>>());
    assert_eq!(payloads.len(), 3, "500 + 500 + 200 shards: {payloads:?}");
    assert!(payloads.iter().all(|&len| len < 8_000), "{payloads:?}");

    // The replies of three shards committed together: one 'r' notification naming them.
    let batches: Vec<ProcessedBatch> = [5u32, 17, 900]
        .iter()
        .map(|&s| {
            let (m, o) = (&messages[s as usize], &outcomes[s as usize]);
            let AppendOutcome::Appended { offset, .. } = o else {
                panic!("expected Appended, got {o:?}");
            };
            ProcessedBatch {
                shard: s,
                lease: None,
                cursor: None,
                messages: vec![Processed {
                    entity: m.entity.clone(),
                    message_id: m.message_id,
                    offset: *offset,
                    events: vec![],
                    reply: payload(2),
                    outgoing: vec![],
                }],
            }
        })
        .collect();
    j.commit_many(batches, entlog_journal::Askers::Anywhere)
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("notified within 10 s")
        .unwrap();
    assert_eq!(n.payload(), "r5,17,900");
    b.cleanup().await;
}

/// A bad URL is a typed configuration error.
#[tokio::test]
async fn bad_url_is_a_config_error() {
    let err = PgJournal::open(PgOptions::new("not a url"))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Config(_)), "got {err:?}");
    let err =
        PgJournal::open(PgOptions::new("postgres://x@127.0.0.1:5432/test").schema("Bad-Name"))
            .await
            .unwrap_err();
    assert!(matches!(err, JournalError::Config(_)), "got {err:?}");
}

#[tokio::test]
async fn unreachable_server_says_why_at_once() {
    let err = PgJournal::open(PgOptions::new("postgres://postgres@127.0.0.1:1/test"))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    // The server's answer, not the pool's "timed out" after 10 s.
    assert!(err.to_string().contains("refused"), "got {err}");
}

/// A server that never answers (a proxy that forwards nothing and closes nothing, as a
/// firewall dropping packets): `Unreachable` after the 10 s connect bound, naming host and
/// port but no credentials, and worth retrying — not a configuration error.
#[tokio::test]
async fn silent_server_is_unreachable_not_misconfigured() {
    let url = database_url().await;
    let (proxy, _) = entlog_journal::testing::BlackHoleProxy::for_url(&url)
        .await
        .unwrap();
    proxy.set_silent(true);
    let with_password = format!("postgres://postgres:s3cret@{}/test", proxy.addr());
    let err = PgJournal::open(PgOptions::new(with_password))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::Unreachable { waited, .. } if waited.as_secs() == 10),
        "got {err:?}"
    );
    assert!(err.is_transient(), "worth retrying");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
}

/// Replies committed by one process wake the reply waiters of another (a second journal
/// on the same schema stands for it) through the `'r<shard>'` notification, long before
/// the waiter's timeout; the waiter's shard only, not every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_committed_elsewhere_wake_by_notification() {
    let b = Pg::new().await;
    let here = b.fresh(4).await;
    let there = PgJournal::open(b.options(here.schema(), 4)).await.unwrap();
    let key = EntityKey::new("counter", id_in_shard("n", 1, 4)).unwrap();
    let other_shard = 2;
    // The first wait starts the listener (and returns at once); drain stored permits.
    there.wait_for_replies(1, Duration::from_millis(10)).await;
    there.wait_for_replies(1, Duration::from_millis(10)).await;
    there
        .wait_for_replies(other_shard, Duration::from_millis(10))
        .await;
    let m = NewMessage::new(key.clone(), Payload::encode("t.Cmd", 1, &1u8).unwrap());
    let offset = match here.append(vec![m.clone()]).await.unwrap()[0] {
        AppendOutcome::Appended { offset, .. } => offset,
        ref other => panic!("{other:?}"),
    };
    let waiter = {
        let there = there.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let woken = there.wait_for_replies(1, Duration::from_secs(20)).await;
            (woken, started.elapsed())
        })
    };
    let bystander = {
        let there = there.clone();
        tokio::spawn(async move {
            there
                .wait_for_replies(other_shard, Duration::from_millis(500))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    here.commit(ProcessedBatch {
        shard: 1,
        lease: None,
        cursor: None,
        messages: vec![Processed {
            entity: key.clone(),
            message_id: m.message_id,
            offset,
            events: vec![],
            reply: Payload::encode("t.Reply", 1, &7u8).unwrap(),
            outgoing: vec![],
        }],
    })
    .await
    .unwrap();
    let (woken, after) = waiter.await.unwrap();
    assert!(
        woken && after < Duration::from_secs(5),
        "woken after {after:?}"
    );
    assert!(
        !bystander.await.unwrap(),
        "another shard's waiter is not woken"
    );
    let found = there.replies(&[(key, m.message_id)]).await.unwrap();
    assert_eq!(found.len(), 1);
    there.close().await;
    here.close().await;
    b.cleanup().await;
}

/// The journal's clock is the server's: `now()` lies between two readings of the
/// server's `clock_timestamp()` taken around it (with a little room for rounding), and
/// rows are stamped with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_clock_is_the_servers() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let server = || async {
        let t: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT")
                .fetch_one(j.pool())
                .await
                .unwrap();
        t
    };
    let slack = 5_000; // µs: the offset is measured over a round trip
    let mut inside = 0;
    for _ in 0..20 {
        let before = server().await;
        let now = j.now().as_micros();
        let after = server().await;
        if now >= before - slack && now <= after + slack {
            inside += 1;
        }
    }
    assert!(
        inside >= 15,
        "journal clock within the server's in {inside} of 20"
    );
    let before = server().await;
    let out = j
        .append(vec![NewMessage::new(key("c"), payload(1))])
        .await
        .unwrap();
    let after = server().await;
    let AppendOutcome::Appended { shard, offset } = out[0] else {
        panic!("{out:?}")
    };
    let entry = j.read_shard(shard, offset - 1, 1, None).await.unwrap();
    let stamped = entry[0].created_at.as_micros();
    assert!(
        stamped >= before - slack && stamped <= after + slack,
        "stamped {stamped}, server between {before} and {after}"
    );
    b.cleanup().await;
}

/// A journal created with a shard count of 0 (the default) has
/// `PgOptions::NEW_SHARD_COUNT` shards, and a member opening it with 0 adopts that count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_shard_count_creates_the_pg_default() {
    let b = Pg::new().await;
    let j = b.fresh(0).await;
    assert_eq!(j.shard_count(), PgOptions::NEW_SHARD_COUNT);
    assert_eq!(PgOptions::NEW_SHARD_COUNT, 64);
    assert_eq!(PgOptions::new(&b.url).shard_count, 0, "the default adopts");
    let j = b.reopen(j, 0).await.unwrap();
    assert_eq!(j.shard_count(), 64);
    j.close().await;
    b.cleanup().await;
}
