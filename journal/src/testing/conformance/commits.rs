//! Invariant 3: a processed batch commits whole or not at all, alone, cancelled, with the
//! batches of other shards, or with other writes joining its transaction.

use super::*;

/// Invariant 3: a batch whose last message collides commits nothing at all — not the
/// other messages' events, replies and outgoing messages, nor the cursor advance.
pub async fn atomic_batch_commit<B: Backend>(b: &B) {
    let shards = 4;
    let j = b.fresh(shards).await;
    let a = key(&id_in_shard("a", 0, shards));
    let c = key(&id_in_shard("c", 0, shards));
    let other = key(&id_in_shard("z", 1, shards));
    // c already has event 1.
    let setup = j
        .append(vec![NewMessage::new(c.clone(), reply(0))])
        .await
        .expect("append");
    let (_, c_off) = appended(&setup[0]);
    let c_first = Uuid::now_v7();
    j.commit(ProcessedBatch {
        shard: 0,
        lease: None,
        cursor: None,
        messages: vec![processed(&c, c_off, c_first, &[1])],
    })
    .await
    .expect("setup commit");
    let head0 = j.head(0).await.expect("head");
    let head1 = j.head(1).await.expect("head");

    let mut first = processed(&a, 1, Uuid::now_v7(), &[1, 2]);
    first
        .outgoing
        .push(NewMessage::new(other.clone(), reply(9)));
    let colliding = processed(&c, c_off, Uuid::now_v7(), &[1]);
    let err = j
        .commit(ProcessedBatch {
            shard: 0,
            lease: None,
            cursor: Some(("mailbox".into(), 99)),
            messages: vec![first.clone(), colliding],
        })
        .await
        .expect_err("colliding seq must fail the batch");
    assert!(
        matches!(err, JournalError::SeqConflict { shard: 0, .. }),
        "got {err:?}"
    );
    assert_eq!(j.head(0).await.expect("head"), head0);
    assert_eq!(
        j.head(1).await.expect("head"),
        head1,
        "outgoing not appended"
    );
    assert!(j.read_events(&a, 1, 10).await.expect("events").is_empty());
    assert!(
        j.reply(&a, first.message_id)
            .await
            .expect("reply")
            .is_none()
    );
    assert_eq!(j.cursor("mailbox", 0).await.expect("cursor"), 0);

    // The same batch without the collision commits whole.
    let receipt = j
        .commit(ProcessedBatch {
            shard: 0,
            lease: None,
            cursor: Some(("mailbox".into(), 99)),
            messages: vec![first.clone()],
        })
        .await
        .expect("commit");
    assert_eq!(receipt.event_offsets, vec![vec![head0 + 1, head0 + 2]]);
    assert!(matches!(
        receipt.outgoing[0][0],
        AppendOutcome::Appended { shard: 1, .. }
    ));
    assert_eq!(j.read_events(&a, 1, 10).await.expect("events").len(), 2);
    assert!(
        j.reply(&a, first.message_id)
            .await
            .expect("reply")
            .is_some()
    );
    assert_eq!(j.cursor("mailbox", 0).await.expect("cursor"), 99);
    assert_eq!(j.head(1).await.expect("head"), head1 + 1);

    // A redelivered message that was already processed is refused whole as well.
    let err = j
        .commit(ProcessedBatch {
            shard: 0,
            lease: None,
            cursor: None,
            messages: vec![Processed {
                events: vec![],
                ..first
            }],
        })
        .await
        .expect_err("second reply for one message");
    assert!(
        matches!(err, JournalError::SeqConflict { .. }),
        "got {err:?}"
    );
}

/// Invariant 3 under cancellation: commits abandoned at random points (the future dropped
/// mid-flight, as when a task is aborted or its connection is lost) leave either all of a
/// batch or none of it.
pub async fn cancelled_commits_are_all_or_nothing<B: Backend>(b: &B, rounds: usize) {
    let shards = 2;
    let j = b.fresh(shards).await;
    let target = key(&id_in_shard("out", 1, shards));
    let mut rng = rand::rng();
    const CALIBRATION: usize = 5;
    let mut full = Duration::ZERO;
    let (mut finished, mut abandoned, mut abandoned_but_committed) = (0, 0, 0);
    for round in 0..rounds {
        let e = key(&format!("{}-{round}", id_in_shard("cx", 0, shards)));
        let e = if shard_of(e.entity_id(), shards) == 0 {
            e
        } else {
            key(&id_in_shard(&format!("cx{round}"), 0, shards))
        };
        let message_id = Uuid::now_v7();
        let mut p = processed(&e, round as u64 + 1, message_id, &[1, 2, 3]);
        let out_id = Uuid::now_v7();
        p.outgoing.push(NewMessage {
            message_id: out_id,
            ..NewMessage::new(target.clone(), reply(1))
        });
        let batch = ProcessedBatch {
            shard: 0,
            lease: None,
            cursor: Some((format!("c{round}"), 7)),
            messages: vec![p],
        };
        // The first rounds run to completion and calibrate: later rounds are cut off at a
        // random point within twice the fastest commit, so many are abandoned mid-flight.
        let result = if round < CALIBRATION {
            let t = std::time::Instant::now();
            let r = j.commit(batch).await;
            full = if round == 0 {
                t.elapsed()
            } else {
                full.min(t.elapsed())
            };
            Ok(r)
        } else {
            let micros = rng.random_range(0..(2 * full.as_micros() as u64).max(2));
            tokio::time::timeout(Duration::from_micros(micros), j.commit(batch)).await
        };
        // An abandoned commit may still be running on the server, and the reads below are
        // not one snapshot, so a look can catch it half-way. A partial state that was
        // really committed never changes again; so look until the state is whole (all or
        // nothing) and fail only if it stays partial.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let (all, seen) = loop {
            let events = j.read_events(&e, 1, 10).await.expect("events").len();
            let replied = j.reply(&e, message_id).await.expect("reply").is_some();
            let cursor = j.cursor(&format!("c{round}"), 0).await.expect("cursor");
            let outgoing = j
                .read_shard(1, 0, 100_000, Some(EntryKind::Message))
                .await
                .expect("read")
                .iter()
                .any(|x| x.message_id == out_id);
            let all = events == 3 && replied && cursor == 7 && outgoing;
            let none = events == 0 && !replied && cursor == 0 && !outgoing;
            let seen =
                format!("events {events}, reply {replied}, cursor {cursor}, outgoing {outgoing}");
            if all || none || std::time::Instant::now() > deadline {
                assert!(
                    all || none,
                    "round {round}: partial commit stays visible: {seen}"
                );
                break (all, seen);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        match result {
            Ok(r) => {
                r.expect("a commit that finished must succeed");
                assert!(
                    all,
                    "round {round}: commit returned Ok but is not visible: {seen}"
                );
                finished += 1;
            }
            Err(_) if all => abandoned_but_committed += 1,
            Err(_) => abandoned += 1,
        }
    }
    eprintln!(
        "{rounds} rounds: {finished} finished, {abandoned} abandoned before commit, \
         {abandoned_but_committed} abandoned after commit"
    );
    // On PostgreSQL a commit is one statement: once sent, the server finishes it whether or
    // not the caller still waits, so every abandoned commit may land; the server-side kill
    // in the PostgreSQL tests covers the commit that dies before it lands.
    assert!(
        finished > 0 && abandoned + abandoned_but_committed > 0,
        "the cut-off points did not cover both outcomes"
    );
}

/// `commit_many`: the batches of several shards in one call — events, replies, outgoing
/// messages and cursors of all of them — and, when one lease is stale, nothing at all,
/// with the error naming that shard.
pub async fn commit_many_all_or_none<B: Backend>(b: &B) {
    let shards = 4;
    let j = b.fresh(shards).await;
    let any: crate::AnyJournal = j.clone().into();
    let session = j.lock_session("runner-m").await.expect("ok");
    let mut leases = Vec::new();
    let mut sent = Vec::new();
    for shard in 0..3 {
        leases.push(session.try_acquire(shard).await.expect("ok").expect("ok"));
        let id = id_in_shard("m", shard, shards);
        let message_id = Uuid::now_v7();
        let outcome = j
            .append(vec![NewMessage {
                entity: ckey(&id),
                message_id,
                payload: cpayload(shard as i64),
                deliver_at: None,
                headers: Default::default(),
            }])
            .await
            .expect("ok");
        let AppendOutcome::Appended { offset, .. } = outcome[0] else {
            panic!("{outcome:?}")
        };
        sent.push((id, message_id, offset));
    }
    let batches = |leases: &[crate::Lease]| -> Vec<ProcessedBatch> {
        sent.iter()
            .zip(leases)
            .map(|((id, message_id, offset), lease)| ProcessedBatch {
                shard: lease.shard,
                lease: Some(*lease),
                cursor: Some(("mailbox".into(), *offset)),
                messages: vec![Processed {
                    entity: ckey(id),
                    message_id: *message_id,
                    offset: *offset,
                    events: vec![NewEvent {
                        seq: 1,
                        payload: cpayload(1),
                    }],
                    reply: cpayload(2),
                    // Shard 1's message also sends one to shard 3.
                    outgoing: if lease.shard == 1 {
                        vec![NewMessage {
                            entity: ckey(&id_in_shard("out", 3, shards)),
                            message_id: Uuid::now_v7(),
                            payload: cpayload(3),
                            deliver_at: None,
                            headers: Default::default(),
                        }]
                    } else {
                        Vec::new()
                    },
                }],
            })
            .collect()
    };
    // Shard 2 is taken again elsewhere: its lease goes stale, and nothing is written.
    let mut stale = leases.clone();
    stale[2].epoch -= 1;
    match any
        .commit_many(batches(&stale), crate::Askers::Anywhere)
        .await
    {
        Err(JournalError::Fenced { shard: 2, .. }) => {}
        other => panic!("expected shard 2 fenced, got {other:?}"),
    }
    for (shard, (id, message_id, _)) in sent.iter().enumerate() {
        assert!(j.reply(&ckey(id), *message_id).await.expect("ok").is_none());
        assert_eq!(j.cursor("mailbox", shard as u32).await.expect("ok"), 0);
    }
    assert_eq!(j.head(3).await.expect("ok"), 0);
    // With current leases, everything commits at once.
    let receipts = any
        .commit_many(batches(&leases), crate::Askers::Anywhere)
        .await
        .expect("ok");
    assert_eq!(receipts.len(), 3);
    for (shard, (id, message_id, offset)) in sent.iter().enumerate() {
        assert_eq!(receipts[shard].event_offsets, vec![vec![offset + 1]]);
        assert!(j.reply(&ckey(id), *message_id).await.expect("ok").is_some());
        assert_eq!(
            j.cursor("mailbox", shard as u32).await.expect("ok"),
            *offset
        );
        let events = j.read_events(&ckey(id), 1, 10).await.expect("ok");
        assert_eq!(events.len(), 1);
    }
    assert!(matches!(
        receipts[1].outgoing[0][0],
        AppendOutcome::Appended {
            shard: 3,
            offset: 1
        }
    ));
    assert_eq!(j.head(3).await.expect("ok"), 1);
    // The same batches again: their replies exist, so the whole call is refused.
    assert!(
        any.commit_many(batches(&leases), crate::Askers::Anywhere)
            .await
            .is_err()
    );
    session.close().await.expect("ok");
}

fn ckey(id: &str) -> EntityKey {
    EntityKey::new("counter", id).expect("ok")
}

fn cpayload(n: i64) -> Payload {
    Payload::encode("test.Value", 1, &n).expect("ok")
}

/// Invariant 3 with other writes joining: a batch written by `commit_open` is invisible
/// and wakes nobody until its transaction commits; dropped uncommitted it leaves nothing;
/// committed it wakes the shards its outgoing messages went to; a stale lease is refused
/// before anything is written.
pub async fn open_commit_wakes_once_committed<B: Backend>(b: &B) {
    let shards = 2;
    let j = b.fresh(shards).await;
    let any: crate::AnyJournal = j.clone().into();
    let locks = j.lock_session("runner-o").await.expect("session");
    let old = locks.try_acquire(0).await.expect("acquire").expect("free");
    locks.release(old).await.expect("release");
    let lease = locks.try_acquire(0).await.expect("acquire").expect("free");
    let entity = key(&id_in_shard("o", 0, shards));
    let target = key(&id_in_shard("t", 1, shards));
    let batch = |lease: Lease, message_id: Uuid| {
        let mut p = processed(&entity, 1, message_id, &[1]);
        p.outgoing.push(NewMessage::new(target.clone(), reply(7)));
        ProcessedBatch {
            shard: 0,
            lease: Some(lease),
            cursor: Some(("mailbox".into(), 1)),
            messages: vec![p],
        }
    };
    let head1 = j.head(1).await.expect("head");
    let woken = any.wake_count(1);

    let err = any
        .commit_open(batch(old, Uuid::now_v7()))
        .await
        .expect_err("stale lease");
    assert!(
        matches!(err, JournalError::Fenced { shard: 0, .. }),
        "got {err:?}"
    );

    // Dropped uncommitted: rolled back, nobody woken.
    let dropped = Uuid::now_v7();
    let open = any
        .commit_open(batch(lease, dropped))
        .await
        .expect("open commit");
    assert_eq!(open.receipt().event_offsets.len(), 1);
    drop(open);
    assert_eq!(
        any.wake_count(1),
        woken,
        "an uncommitted batch woke shard 1"
    );
    assert!(j.reply(&entity, dropped).await.expect("reply").is_none());
    assert!(
        j.read_events(&entity, 1, 10)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(j.head(1).await.expect("head"), head1);
    assert_eq!(j.cursor("mailbox", 0).await.expect("cursor"), 0);

    // Committed: visible, and the outgoing message's shard is woken.
    let kept = Uuid::now_v7();
    let mut open = any
        .commit_open(batch(lease, kept))
        .await
        .expect("open commit");
    open.tx()
        .ensure_checkpoint("joined", 0)
        .await
        .expect("joined write");
    assert_eq!(any.wake_count(1), woken, "woken before the commit");
    let receipt = open.commit().await.expect("commit");
    assert!(any.wake_count(1) > woken, "shard 1 not woken by the commit");
    assert!(matches!(
        receipt.outgoing[0][0],
        AppendOutcome::Appended { shard: 1, .. }
    ));
    assert!(j.reply(&entity, kept).await.expect("reply").is_some());
    assert_eq!(
        j.read_events(&entity, 1, 10).await.expect("events").len(),
        1
    );
    assert_eq!(j.head(1).await.expect("head"), head1 + 1);
    assert_eq!(j.cursor("mailbox", 0).await.expect("cursor"), 1);
    assert_eq!(j.cursor("joined", 0).await.expect("joined cursor"), 0);
}
