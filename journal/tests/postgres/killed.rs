//! Connections killed by the server: the connection committing a batch or appending one,
//! terminated midway, leaves nothing behind; a shard's lock connection, terminated, hands
//! the shard to another session at a higher epoch and fences the dead session's lease.

use std::time::{Duration, Instant};

use entlog_journal::testing::conformance::{Backend, id_in_shard};
use entlog_journal::{
    AppendOutcome, Journal, JournalError, NewEvent, NewMessage, PgJournal, Processed,
    ProcessedBatch, ShardLocks,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::pg::{Pg, key, payload};

/// The server process waiting on a lock whose query mentions `needle`.
async fn blocked_backend(admin: &mut PgConnection, needle: &str) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        )
        .bind(needle)
        .fetch_optional(&mut *admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing blocked on {needle}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn terminate(admin: &mut PgConnection, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    assert!(done);
}

/// Invariant 3 with a real crash: the connection committing a batch is killed by the
/// server after the batch's events and replies were written but before it committed.
/// Nothing of it may be visible, and the journal keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_commit_leaves_nothing() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let e = key(&id_in_shard("k", 0, 2));
    let target = key(&id_in_shard("t", 1, 2));
    let sent = j
        .append(vec![NewMessage::new(e.clone(), payload(1))])
        .await
        .unwrap();
    let AppendOutcome::Appended { offset, .. } = sent[0] else {
        panic!("{sent:?}")
    };
    j.advance_cursor("mailbox", 0, 0).await.unwrap();

    // Hold the cursor row: commit_batch writes events, outgoing and replies, then blocks
    // on its cursor update.
    let mut holder = b.admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}",
        j.schema()
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM cursors WHERE consumer = 'mailbox' AND shard = 0 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let message_id = sent_id(&j, offset).await;
    let batch = ProcessedBatch {
        shard: 0,
        lease: None,
        cursor: Some(("mailbox".into(), offset)),
        messages: vec![Processed {
            entity: e.clone(),
            message_id,
            offset,
            events: vec![
                NewEvent {
                    seq: 1,
                    payload: payload(1),
                },
                NewEvent {
                    seq: 2,
                    payload: payload(2),
                },
            ],
            reply: payload(3),
            outgoing: vec![NewMessage::new(target.clone(), payload(4))],
        }],
    };
    let committing = {
        let (j, batch) = (j.clone(), batch.clone());
        tokio::spawn(async move { j.commit(batch).await })
    };
    let mut admin = b.admin().await;
    let pid = blocked_backend(&mut admin, "commit_batch").await;
    terminate(&mut admin, pid).await;
    let err = committing
        .await
        .unwrap()
        .expect_err("killed commit must fail");
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    tx.rollback().await.unwrap();

    assert_eq!(j.head(0).await.unwrap(), 1, "no events visible");
    assert_eq!(j.head(1).await.unwrap(), 0, "no outgoing message visible");
    assert!(j.read_events(&e, 1, 10).await.unwrap().is_empty());
    assert!(j.reply(&e, message_id).await.unwrap().is_none());
    assert_eq!(j.cursor("mailbox", 0).await.unwrap(), 0);

    // The redelivered message commits normally on a fresh connection.
    j.commit(batch).await.unwrap();
    assert_eq!(j.read_events(&e, 1, 10).await.unwrap().len(), 2);
    assert_eq!(j.cursor("mailbox", 0).await.unwrap(), offset);
    b.cleanup().await;
}

async fn sent_id(j: &PgJournal, offset: u64) -> Uuid {
    j.read_shard(0, offset - 1, 1, None).await.unwrap()[0].message_id
}

/// A connection killed in the middle of an append (some rows of the batch inserted, one
/// waiting on a unique-index check) fails with an error, leaves nothing behind, and the
/// next append succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_append_leaves_nothing() {
    let b = Pg::new().await;
    let j = b.fresh(1).await;
    let blocked = NewMessage::new(key("b"), payload(2));
    // An uncommitted row with the same (entity, message id): the append's insert of that
    // message waits on the unique index, after inserting the message before it.
    let mut holder = b.admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}",
        j.schema()
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query(
        r#"INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
              type_tag, schema_version, payload, crc, deliver_at, created_at)
           VALUES (0, 1000000, 1, 'counter', 'b', NULL, $1, 't', 1, '\x00', 0, NULL, 0)"#,
    )
    .bind(blocked.message_id)
    .execute(&mut *tx)
    .await
    .unwrap();

    let first = NewMessage::new(key("a"), payload(1));
    let appending = {
        let (j, batch) = (j.clone(), vec![first.clone(), blocked.clone()]);
        tokio::spawn(async move { j.append(batch).await })
    };
    let mut admin = b.admin().await;
    let pid = blocked_backend(&mut admin, "append_entries").await;
    terminate(&mut admin, pid).await;
    let err = appending
        .await
        .unwrap()
        .expect_err("killed append must fail");
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    tx.rollback().await.unwrap();

    assert_eq!(j.head(0).await.unwrap(), 0);
    assert!(j.read_shard(0, 0, 10, None).await.unwrap().is_empty());
    let out = j.append(vec![first, blocked]).await.unwrap();
    assert!(matches!(out[0], AppendOutcome::Appended { offset: 1, .. }));
    assert!(matches!(out[1], AppendOutcome::Appended { offset: 2, .. }));
    b.cleanup().await;
}

/// Invariant 5 on PostgreSQL: a shard lock is exclusive across sessions; when the lock
/// connection dies the session learns it, another session takes the shard at a higher
/// epoch, and the dead session's lease is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_connection_death_hands_the_shard_over() {
    let b = Pg::new().await;
    let j = b.fresh(4).await;
    let a = j.lock_session("runner-a").await.unwrap();
    let c = j.lock_session("runner-c").await.unwrap();
    let lease_a = a.try_acquire(0).await.unwrap().expect("free shard");
    assert!(c.try_acquire(0).await.unwrap().is_none(), "held by a");
    assert!(
        c.try_acquire(1).await.unwrap().is_some(),
        "other shards are free"
    );
    assert_eq!(
        a.try_acquire(0).await.unwrap(),
        Some(lease_a),
        "re-acquire is idempotent"
    );
    assert_eq!(a.held(), vec![0]);

    let mut admin = b.admin().await;
    let pid = a.backend_pid().await.unwrap();
    let killed = Instant::now();
    terminate(&mut admin, pid).await;

    let lease_c = loop {
        if let Some(l) = c.try_acquire(0).await.unwrap() {
            break l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "lock never freed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let freed_after = killed.elapsed();
    assert!(lease_c.epoch > lease_a.epoch);
    tokio::time::timeout(Duration::from_secs(3), a.lost())
        .await
        .expect("death noticed");
    let noticed_after = killed.elapsed();
    assert!(!a.is_alive());
    assert!(a.held().is_empty());
    let live: Vec<String> = j
        .live_runners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.runner)
        .collect();
    assert_eq!(
        live,
        ["runner-c"],
        "a dead lock connection means a dead runner"
    );
    assert!(matches!(
        a.try_acquire(2).await,
        Err(JournalError::LockConnectionLost)
    ));
    eprintln!("lock free after {freed_after:?}; death noticed after {noticed_after:?}");

    let e = key(&id_in_shard("x", 0, 4));
    let batch = |lease| ProcessedBatch {
        shard: 0,
        lease: Some(lease),
        cursor: Some(("mailbox".into(), 1)),
        messages: vec![Processed {
            entity: e.clone(),
            message_id: Uuid::now_v7(),
            offset: 1,
            events: vec![NewEvent {
                seq: 1,
                payload: payload(1),
            }],
            reply: payload(1),
            outgoing: vec![],
        }],
    };
    let err = j.commit(batch(lease_a)).await.expect_err("stale owner");
    assert!(
        matches!(err, JournalError::Fenced { shard: 0, .. }),
        "got {err:?}"
    );
    j.commit(batch(lease_c)).await.unwrap();
    c.release(lease_c).await.unwrap();
    let again = a_session_takes(&j, 0).await;
    assert!(
        again.epoch > lease_c.epoch,
        "released shards can be taken again"
    );
    b.cleanup().await;
}

async fn a_session_takes(j: &PgJournal, shard: u32) -> entlog_journal::Lease {
    let s = j.lock_session("runner-d").await.unwrap();
    s.try_acquire(shard)
        .await
        .unwrap()
        .expect("free after release")
}
