//! Failure replies are found through their own index: `failed_replies` returns them newest
//! first, and its query is one the planner serves from `replies_failed` on both backends
//! (so its cost follows the number of failures, not of replies).
#![allow(clippy::unwrap_used)]

use entlog_journal::testing::Scratch;
use entlog_journal::{
    AnyJournal, AppendOutcome, EntityKey, FAILED_REPLY_BYTE, Journal, NewMessage, Payload,
    Processed, ProcessedBatch,
};
use uuid::Uuid;

const MESSAGES: usize = 120;

/// Sends `MESSAGES` messages and answers each; every 40th answer is a failure. Returns the
/// failed messages' ids, oldest first.
async fn write(j: &AnyJournal) -> Vec<Uuid> {
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|i| {
            NewMessage::new(
                EntityKey::new("counter", format!("c{}", i % 7)).unwrap(),
                Payload::encode("test.Cmd", 1, &(i as i64)).unwrap(),
            )
        })
        .collect();
    let outcomes = j.append(messages.clone()).await.unwrap();
    let mut failed = Vec::new();
    for (i, (m, o)) in messages.iter().zip(&outcomes).enumerate() {
        let AppendOutcome::Appended { shard, offset } = o else {
            panic!("expected Appended, got {o:?}");
        };
        let mut reply = Payload::encode("test.Reply", 1, &format!("ok {i:04}")).unwrap();
        if i % 40 == 39 {
            reply.bytes = vec![FAILED_REPLY_BYTE, 4, b'b', b'o', b'o', b'm'];
            failed.push(m.message_id);
        } else {
            assert_ne!(reply.bytes[0], FAILED_REPLY_BYTE);
        }
        j.commit(ProcessedBatch {
            shard: *shard,
            lease: None,
            cursor: None,
            messages: vec![Processed {
                entity: m.entity.clone(),
                message_id: m.message_id,
                offset: *offset,
                events: vec![],
                reply,
                outgoing: vec![],
            }],
        })
        .await
        .unwrap();
    }
    failed
}

async fn check(j: &AnyJournal, failed: &[Uuid]) {
    let newest_first: Vec<Uuid> = failed.iter().rev().copied().collect();
    let found: Vec<Uuid> = j
        .failed_replies(10)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.message_id)
        .collect();
    assert_eq!(found, newest_first);
    let two: Vec<Uuid> = j
        .failed_replies(2)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.message_id)
        .collect();
    assert_eq!(two, newest_first[..2]);
}

#[tokio::test]
async fn failed_replies_on_sqlite() {
    let scratch = Scratch::sqlite(4).await;
    let AnyJournal::Sqlite(j) = &scratch.journal else {
        unreachable!("a SQLite scratch journal")
    };
    let failed = write(&scratch.journal).await;
    check(&scratch.journal, &failed).await;
    // The same text as `failed_replies` sends.
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT message_id FROM replies
          WHERE substr(payload, 1, 1) = X'02' ORDER BY created_at DESC LIMIT 10",
    )
    .fetch_all(j.writer())
    .await
    .unwrap()
    .iter()
    .map(|r| sqlx::Row::get::<String, _>(r, 3))
    .collect();
    assert!(
        plan.iter().any(|p| p.contains("replies_failed")),
        "{plan:?}"
    );
    scratch.remove().await;
}

#[tokio::test]
async fn failed_replies_on_postgres() {
    let scratch = Scratch::postgres(4).await;
    let AnyJournal::Postgres(j) = &scratch.journal else {
        unreachable!("a PostgreSQL scratch journal")
    };
    let failed = write(&scratch.journal).await;
    check(&scratch.journal, &failed).await;
    // With sequential scans priced out, the query can only avoid one through the partial
    // index: it is usable only if the query's predicate matches the index's.
    let mut tx = j.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        r#"EXPLAIN SELECT message_id FROM replies
            WHERE substring(payload FROM 1 FOR 1) = '\x02'::bytea
            ORDER BY created_at DESC LIMIT 10"#,
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        plan.iter().any(|p| p.contains("replies_failed")),
        "{plan:?}"
    );
    scratch.remove().await;
}
