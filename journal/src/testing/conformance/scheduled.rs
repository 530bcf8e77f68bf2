//! Scheduled messages: out of the partition until due, promoted once, cancellable, and cancel racing promotion.

use super::*;

/// Scheduled messages stay out of the partition until due, so a far-future message never
/// holds a cursor back; promotion appends them at the then-next offset, once.
pub async fn scheduled_messages<B: Backend>(b: &B) {
    let j = b.fresh(1).await;
    let far = Timestamp::now().after(Duration::from_secs(365 * 24 * 3600));
    let soon = Timestamp::now().after(Duration::from_secs(30));
    let mut later = msg("s", 0, 0);
    later.deliver_at = Some(far);
    let mut shortly = msg("s", 0, 1);
    shortly.deliver_at = Some(soon);
    let out = j
        .append(vec![later.clone(), shortly.clone()])
        .await
        .expect("append");
    assert_eq!(out[0], AppendOutcome::Scheduled { shard: 0 });
    let dup = j.append(vec![later.clone()]).await.expect("re-append");
    assert!(matches!(
        dup[0],
        AppendOutcome::Duplicate { offset: None, .. }
    ));
    // A busy shard: the cursor moves past everything due.
    for n in 2..50 {
        j.append(vec![msg("s", 0, n)]).await.expect("append");
    }
    let due = j.read_shard(0, 0, 1000, None).await.expect("read");
    assert_eq!(due.len(), 48, "only due entries are in the partition");
    j.advance_cursor("mailbox", 0, 48).await.expect("advance");
    assert_eq!(j.next_due(0).await.expect("next due"), Some(soon));
    // Promotion takes the clock as an argument: nothing is due a microsecond early.
    let early = Timestamp(soon.as_micros() - 1);
    assert_eq!(j.promote_due(0, early).await.expect("early"), 0);
    assert_eq!(j.promote_due(0, soon).await.expect("promote"), 1);
    assert_eq!(j.promote_due(0, soon).await.expect("again"), 0);
    let after = j.read_shard(0, 48, 10, None).await.expect("read");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].offset, 49);
    assert_eq!(after[0].message_id, shortly.message_id);
    assert_eq!(after[0].deliver_at, Some(soon));
    assert_eq!(j.next_due(0).await.expect("next due"), Some(far));
    let dup = j.append(vec![shortly]).await.expect("re-append");
    assert!(matches!(
        dup[0],
        AppendOutcome::Duplicate {
            offset: Some(49),
            ..
        }
    ));
    j.promote_due(0, far).await.expect("promote far");
    assert_eq!(j.next_due(0).await.expect("next due"), None);
    assert_eq!(j.head(0).await.expect("head"), 50);
}

/// A scheduled message to entity `id`, due at `at`.
fn scheduled_msg(id: &str, n: u32, at: Timestamp) -> NewMessage {
    NewMessage {
        deliver_at: Some(at),
        ..msg(id, 0, n)
    }
}

/// Cancelling a scheduled message removes it for good; cancelling one that is unknown, was
/// due at once, was already promoted or already cancelled reports `false` and changes
/// nothing. A cancelled id is forgotten: sending it again schedules it anew. The schedules
/// of several shards are read in one call.
pub async fn cancel_scheduled<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let base = Timestamp::now().after(Duration::from_secs(3600));
    let at = |ms: u64| base.after(Duration::from_millis(ms));
    let first = scheduled_msg("c", 0, at(10));
    let second = scheduled_msg("c", 1, at(20));
    let at_once = msg("c", 0, 2);
    let e = first.entity.clone();
    let shard = j.shard_of(&e);
    j.append(vec![first.clone(), second.clone(), at_once.clone()])
        .await
        .expect("append");
    assert_eq!(j.next_due(shard).await.expect("next due"), Some(at(10)));
    // Many shards in one query, in the order asked; out of range is refused.
    let other = 1 - shard;
    assert_eq!(
        j.next_due_many(&[other, shard, other])
            .await
            .expect("next due many"),
        vec![None, Some(at(10)), None]
    );
    assert!(j.next_due_many(&[]).await.expect("none asked").is_empty());
    assert!(matches!(
        j.next_due_many(&[shard, 2]).await,
        Err(JournalError::ShardOutOfRange { shard: 2, .. })
    ));
    let cancel = |entity: EntityKey, id: Uuid| {
        let j = j.clone();
        async move { j.cancel_scheduled(&entity, id).await.expect("cancel") }
    };

    // The earliest is cancelled: the schedule moves on to the next.
    assert!(cancel(e.clone(), first.message_id).await);
    assert!(
        !cancel(e.clone(), first.message_id).await,
        "already cancelled"
    );
    assert_eq!(j.next_due(shard).await.expect("next due"), Some(at(20)));
    // Unknown ids, the id under another entity, a message that was due at once.
    assert!(!cancel(e.clone(), Uuid::now_v7()).await);
    assert!(!cancel(key("other"), second.message_id).await);
    assert!(!cancel(e.clone(), at_once.message_id).await);

    // Promotion past both due times moves only the one left.
    let head = j.head(shard).await.expect("head");
    assert_eq!(j.promote_due(shard, at(30)).await.expect("promote"), 1);
    let moved = j.read_shard(shard, head, 10, None).await.expect("read");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].message_id, second.message_id);
    // Once promoted it can no longer be cancelled; a re-send is a duplicate.
    assert!(
        !cancel(e.clone(), second.message_id).await,
        "already promoted"
    );
    let dup = j.append(vec![second.clone()]).await.expect("re-send");
    assert!(
        matches!(dup[0], AppendOutcome::Duplicate { offset: Some(o), .. } if o == head + 1),
        "{dup:?}"
    );

    // The cancelled id is forgotten: re-sending it schedules it anew, and it is delivered.
    let again = j.append(vec![first.clone()]).await.expect("re-send");
    assert_eq!(again[0], AppendOutcome::Scheduled { shard });
    assert_eq!(j.next_due(shard).await.expect("next due"), Some(at(10)));
    assert_eq!(j.promote_due(shard, at(30)).await.expect("promote"), 1);
    let moved = j.read_shard(shard, head + 1, 10, None).await.expect("read");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].message_id, first.message_id);
    assert_eq!(moved[0].offset, head + 2);
    assert_eq!(j.next_due(shard).await.expect("next due"), None);
}

/// Cancel racing promotion: for every message exactly one of them wins. A message cancel
/// reports removed never enters the partition; one it reports missing is there, once.
/// Promotion walks through `messages` due times in small steps while four tasks cancel
/// every message in random order.
pub async fn cancel_races_promotion<B: Backend>(b: &B, messages: u32) {
    use rand::seq::SliceRandom as _;

    let j = b.fresh(1).await;
    let base = Timestamp::now().after(Duration::from_secs(3600));
    let due = move |n: u64| base.after(Duration::from_micros(n));
    let sent: Vec<NewMessage> = (0..messages)
        .map(|n| scheduled_msg(&format!("r{}", n % 16), n, due(u64::from(n))))
        .collect();
    let out = j.append(sent.clone()).await.expect("schedule");
    assert!(
        out.iter()
            .all(|o| *o == AppendOutcome::Scheduled { shard: 0 })
    );

    let promoter = {
        let j = j.clone();
        tokio::spawn(async move {
            let mut t = 0;
            while t <= u64::from(messages) {
                j.promote_due(0, due(t)).await.expect("promote");
                t += rand::rng().random_range(1..4);
            }
            j.promote_due(0, due(u64::from(messages) + 1))
                .await
                .expect("promote the rest");
        })
    };
    let mut order: Vec<(EntityKey, Uuid)> = sent
        .iter()
        .map(|m| (m.entity.clone(), m.message_id))
        .collect();
    order.shuffle(&mut rand::rng());
    let cancellers: Vec<_> = order
        .chunks(order.len().div_ceil(4).max(1))
        .map(|chunk| {
            let (j, chunk) = (j.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let mut won = Vec::new();
                for (entity, id) in chunk {
                    if j.cancel_scheduled(&entity, id).await.expect("cancel") {
                        won.push(id);
                    }
                }
                won
            })
        })
        .collect();
    let mut cancelled = HashSet::new();
    for c in cancellers {
        cancelled.extend(c.await.expect("canceller"));
    }
    promoter.await.expect("promoter");

    let entries = j
        .read_shard(0, 0, messages as usize * 2, None)
        .await
        .expect("read");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.offset, i as u64 + 1, "dense offsets");
    }
    let promoted: HashSet<Uuid> = entries.iter().map(|e| e.message_id).collect();
    assert_eq!(promoted.len(), entries.len(), "each promoted once");
    for m in &sent {
        let (c, p) = (
            cancelled.contains(&m.message_id),
            promoted.contains(&m.message_id),
        );
        assert!(
            c != p,
            "message {}: cancelled {c}, promoted {p}",
            m.message_id
        );
    }
    assert_eq!(j.next_due(0).await.expect("next due"), None);
    assert!(
        !cancelled.is_empty() && !promoted.is_empty(),
        "the race was not exercised: {} cancelled, {} promoted",
        cancelled.len(),
        promoted.len()
    );
}
