//! A lock session that stops answering: the runner notices first and the server frees its
//! locks after; a shard row held by a stalled transaction neither blocks the session nor
//! leaves a lock behind; settings that would let the two overlap are refused.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use entlog_journal::testing::conformance::id_in_shard;
use entlog_journal::testing::{BlackHoleProxy, database_url};
use entlog_journal::{
    EntityKey, Journal, JournalError, Liveness, NewEvent, Payload, PgJournal, PgOptions, Processed,
    ProcessedBatch, ShardLocks,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn new() -> Self {
        Schema {
            url: database_url().await,
            name: format!("l_{}", Uuid::now_v7().simple()),
        }
    }

    fn options(&self) -> PgOptions {
        PgOptions::new(&self.url)
            .schema(&self.name)
            .shard_count(4)
            .max_connections(4)
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    async fn drop(self) {
        let mut admin = self.admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Polls `session.try_acquire(shard)` until it succeeds; panics after `limit`.
async fn acquire_within(
    session: &impl ShardLocks,
    shard: u32,
    limit: Duration,
) -> entlog_journal::Lease {
    let start = Instant::now();
    loop {
        if let Some(lease) = session.try_acquire(shard).await.unwrap() {
            return lease;
        }
        assert!(start.elapsed() < limit, "shard {shard} never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lock connection that goes silent (a proxy that stops forwarding and closes nothing):
/// the runner counts its session lost before the server frees its locks, the server does
/// free them (before: never, while the socket stayed open), a commit under the old lease is
/// fenced, and once the network is back the same runner id opens a session again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_lock_session_stops_before_its_locks_are_freed() {
    let schema = Schema::new().await;
    let direct = PgJournal::open(schema.options()).await.unwrap();
    let (proxy, through) = BlackHoleProxy::for_url(&schema.url).await.unwrap();
    let behind = PgJournal::open(schema.options().lock_url(through))
        .await
        .unwrap();
    let liveness = behind.liveness();
    let a = behind.lock_session("runner-a").await.unwrap();
    let c = direct.lock_session("runner-c").await.unwrap();
    let lease_a = a.try_acquire(0).await.unwrap().expect("free");
    assert!(c.try_acquire(0).await.unwrap().is_none(), "held by a");

    proxy.set_silent(true);
    let silent = Instant::now();
    let (noticed, lease_c) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(30), a.lost())
                .await
                .expect("the runner never noticed");
            silent.elapsed()
        },
        acquire_within(&c, 0, Duration::from_secs(30)),
    );
    let freed = silent.elapsed();
    eprintln!(
        "silent lock connection: noticed by the runner after {noticed:?}, locks freed by the \
         server after {freed:?} (bounds {:?} / {:?})",
        liveness.self_detection(),
        liveness.session_timeout
    );
    assert!(
        noticed < freed,
        "the runner must stop before its locks are freed"
    );
    assert!(lease_c.epoch > lease_a.epoch);
    assert!(a.held().is_empty());
    let live: Vec<String> = direct
        .live_runners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.runner)
        .collect();
    assert_eq!(live, ["runner-c"]);

    // The silent runner's late commit is refused.
    let entity = EntityKey::new("counter", id_in_shard("x", 0, 4)).unwrap();
    let batch = |lease| ProcessedBatch {
        shard: 0,
        lease: Some(lease),
        cursor: None,
        messages: vec![Processed {
            entity: entity.clone(),
            message_id: Uuid::now_v7(),
            offset: 1,
            events: vec![NewEvent {
                seq: 1,
                payload: Payload::encode("counter.event", 1, &1i64).unwrap(),
            }],
            reply: Payload::encode("counter.reply", 1, &1i64).unwrap(),
            outgoing: vec![],
        }],
    };
    let err = behind
        .commit(batch(lease_a))
        .await
        .expect_err("stale owner");
    assert!(matches!(err, JournalError::Fenced { .. }), "got {err:?}");

    // The network comes back: the runner's old session is gone, so its id is free.
    proxy.set_silent(false);
    drop(a);
    let again = behind.lock_session("runner-a").await.unwrap();
    assert!(again.is_alive());
    again.close().await.unwrap();
    c.close().await.unwrap();
    behind.close().await;
    direct.close().await;
    schema.drop().await;
}

/// A stalled process's open transaction holds a shard's row: an acquire gives up within
/// the lock wait instead of blocking the session (whose heartbeat goes on), keeps no lock,
/// and the server ends the idle transaction after the session timeout, so the shard can
/// be taken without waiting for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locked_shard_row_neither_blocks_the_session_nor_keeps_a_lock() {
    let schema = Schema::new().await;
    let j = PgJournal::open(schema.options()).await.unwrap();
    let liveness = j.liveness();
    let a = j.lock_session("runner-a").await.unwrap();

    // A transaction of the journal's own pool, left open: what a stalled runner leaves.
    let mut stalled = j.pool().begin().await.unwrap();
    sqlx::query("SELECT shard FROM shards WHERE shard = 0 FOR UPDATE")
        .execute(&mut *stalled)
        .await
        .unwrap();

    let asked = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(30), a.try_acquire(0))
        .await
        .expect("the acquire waited on the row lock with no bound")
        .unwrap();
    eprintln!(
        "acquire of a locked row gave up after {:?} (lock wait {:?})",
        asked.elapsed(),
        liveness.lock_wait()
    );
    assert_eq!(got, None, "a busy row is not acquired");
    assert!(a.is_alive(), "giving up is not losing the session");
    assert!(a.held().is_empty());
    assert_eq!(
        j.shard_owner(0).await.unwrap(),
        None,
        "the advisory lock taken by the failed statement was given back"
    );
    assert!(
        a.try_acquire(1).await.unwrap().is_some(),
        "other shards go on"
    );

    // The server ends the idle transaction; then the shard is free to take.
    let lease = acquire_within(&a, 0, Duration::from_secs(30)).await;
    eprintln!(
        "the stalled transaction's row was free after {:?} (session timeout {:?})",
        asked.elapsed(),
        liveness.session_timeout
    );
    assert_eq!(lease.shard, 0);
    assert!(
        stalled.commit().await.is_err(),
        "the stalled transaction was ended by the server"
    );
    assert!(a.is_alive());
    a.close().await.unwrap();
    j.close().await;
    schema.drop().await;
}

/// Liveness settings under which a runner could go on writing after the server freed its
/// locks are refused at open, with a message that says why.
#[tokio::test]
async fn overlapping_liveness_is_refused() {
    let schema = Schema::new().await;
    let bad = Liveness {
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_secs(3),
        session_timeout: Duration::from_secs(3),
    };
    let err = PgJournal::open(schema.options().liveness(bad))
        .await
        .unwrap_err();
    match err {
        JournalError::Config(msg) => assert!(msg.contains("session_timeout"), "{msg}"),
        other => panic!("got {other:?}"),
    }
}
