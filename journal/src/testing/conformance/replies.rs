//! Invariant 12 at the journal: replies found by (entity, message id), in batches, with wake-ups.

use super::*;

/// Invariant 12 at the journal: [`Journal::replies`] finds replies by (entity, message id)
/// — the same message id sent to two entities gives two replies, each with its own
/// entity — leaves unprocessed ones out, and serves many in one call; a commit that
/// stored replies of a shard wakes [`Journal::wait_for_replies`] of that shard.
pub async fn batched_replies<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let shared_id = Uuid::now_v7();
    let counter = key("r");
    let echo = EntityKey::new("echo", "r").expect("valid key");
    let shard = j.shard_of(&counter);
    assert_eq!(shard, j.shard_of(&echo), "same id, same shard");
    let mut messages = vec![
        NewMessage {
            message_id: shared_id,
            ..msg("r", 0, 0)
        },
        NewMessage {
            entity: echo.clone(),
            message_id: shared_id,
            ..msg("r", 0, 1)
        },
    ];
    messages.extend((2..700).map(|n| msg("r", 0, n)));
    let outcomes = j.append(messages.clone()).await.expect("append");

    // Drain any stored permit, then wait while the batch commits.
    j.wait_for_replies(shard, Duration::from_millis(10)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move { j.wait_for_replies(shard, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Every message but the last one is processed; message n replies n.
    let processed: Vec<Processed> = messages
        .iter()
        .zip(&outcomes)
        .enumerate()
        .take(messages.len() - 1)
        .map(|(n, (m, o))| Processed {
            entity: m.entity.clone(),
            message_id: m.message_id,
            offset: appended(o).1,
            events: vec![],
            reply: reply(n as i64),
            outgoing: vec![],
        })
        .collect();
    j.commit(ProcessedBatch {
        shard,
        lease: None,
        cursor: None,
        messages: processed,
    })
    .await
    .expect("commit");
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before the timeout")
        .expect("task");
    assert!(woken, "replies committed wake their shard's reply waiters");

    let wanted: Vec<(EntityKey, Uuid)> = messages
        .iter()
        .map(|m| (m.entity.clone(), m.message_id))
        .collect();
    let found = j.replies(&wanted).await.expect("replies");
    assert_eq!(
        found.len(),
        messages.len() - 1,
        "the unprocessed one is left out"
    );
    for (entity, stored) in &found {
        let n = messages
            .iter()
            .position(|m| m.entity == *entity && m.message_id == stored.message_id)
            .expect("a wanted reply");
        assert_eq!(stored.payload.decode::<i64>().expect("decode"), n as i64);
    }
    let both: Vec<i64> = found
        .iter()
        .filter(|(_, r)| r.message_id == shared_id)
        .map(|(_, r)| r.payload.decode::<i64>().expect("decode"))
        .collect();
    assert_eq!(both.len(), 2, "one reply per entity for the shared id");
    assert!(both.contains(&0) && both.contains(&1));
    assert!(j.replies(&[]).await.expect("nothing wanted").is_empty());
    let last = messages.last().expect("messages");
    assert!(
        j.replies(&[(last.entity.clone(), last.message_id)])
            .await
            .expect("replies")
            .is_empty()
    );
}
