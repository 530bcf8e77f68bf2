//! Invariant 5: racing writers and stale leases cannot fork a history.

use super::*;

/// Invariant 5 (seq fencing): writers racing to commit the same seq of an entity — exactly
/// one wins, the others get `SeqConflict`, and history does not fork.
pub async fn seq_fencing<B: Backend>(b: &B, entities: usize, writers: usize) {
    let j = b.fresh(4).await;
    let barrier = Arc::new(Barrier::new(entities * writers));
    let mut tasks = Vec::new();
    for e in 0..entities {
        for w in 0..writers {
            let (j, barrier) = (j.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let entity = key(&format!("race-{e}"));
                let shard = j.shard_of(&entity);
                barrier.wait().await;
                let r = j
                    .commit(ProcessedBatch {
                        shard,
                        lease: None,
                        cursor: None,
                        messages: vec![processed(&entity, 1, Uuid::now_v7(), &[1])],
                    })
                    .await;
                (e, w, r)
            }));
        }
    }
    let mut winners = BTreeMap::new();
    for t in tasks {
        let (e, w, r) = t.await.expect("task");
        match r {
            Ok(_) => *winners.entry(e).or_insert(0) += 1,
            Err(JournalError::SeqConflict { .. }) => {}
            Err(other) => panic!("writer {w} of entity {e}: unexpected {other:?}"),
        }
    }
    for e in 0..entities {
        assert_eq!(winners.get(&e), Some(&1), "entity {e}: exactly one winner");
        let events = j
            .read_events(&key(&format!("race-{e}")), 1, 10)
            .await
            .expect("events");
        assert_eq!(events.len(), 1);
    }
}

/// Invariant 5 (lease fencing): once a shard is acquired again, a batch carrying the old
/// lease is refused with `Fenced`, even when its seqs are free.
pub async fn lease_fencing<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let locks = j.lock_session("runner-a").await.expect("session");
    let old = locks.try_acquire(0).await.expect("acquire").expect("free");
    locks.release(old).await.expect("release");
    let new = locks.try_acquire(0).await.expect("acquire").expect("free");
    assert!(new.epoch > old.epoch, "every acquisition bumps the epoch");
    let entity = key(&id_in_shard("f", 0, 2));
    let batch = |lease: Lease| ProcessedBatch {
        shard: 0,
        lease: Some(lease),
        cursor: Some(("mailbox".into(), 1)),
        messages: vec![processed(&entity, 1, Uuid::now_v7(), &[1])],
    };
    let err = j.commit(batch(old)).await.expect_err("stale lease");
    assert!(
        matches!(err, JournalError::Fenced { shard: 0, epoch } if epoch == old.epoch),
        "got {err:?}"
    );
    assert!(
        j.read_events(&entity, 1, 10)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(j.cursor("mailbox", 0).await.expect("cursor"), 0);
    j.commit(batch(new)).await.expect("current lease commits");
}
