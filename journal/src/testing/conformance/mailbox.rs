//! The mailbox read over many shards, damaged entries in it (invariant 10), and its bad input.

use super::*;

/// A mailbox item as (shard, offset, the message's command or `None` when damaged).
fn item(d: &Delivery) -> (u32, u64, Option<Cmd>) {
    match d {
        Delivery::Message(e) => {
            assert_eq!(e.kind, EntryKind::Message, "only messages are delivered");
            (e.shard, e.offset, Some(e.payload.decode().expect("decode")))
        }
        Delivery::Damaged(d) => (d.shard, d.offset, None),
    }
}

/// The mailbox read: one call over several shards returns exactly the messages after each
/// cursor that have no stored reply yet — no events, no message already processed, at most
/// the limit per shard — ordered by (shard, offset), whatever the order of the cursors;
/// each message equals what `read_shard` returns for it.
pub async fn mailbox_reads<B: Backend>(b: &B) {
    let shards = 4;
    let j = b.fresh(shards).await;
    let a = id_in_shard("a", 0, shards);
    let c = id_in_shard("c", 1, shards);
    let d = id_in_shard("d", 2, shards);
    // Shard 0: messages at 1, 2; events at 3, 4; messages at 5, 6, 7.
    for n in 0..2 {
        j.append(vec![msg(&a, 0, n)]).await.expect("append");
    }
    let first = j.read_shard(0, 0, 1, None).await.expect("read")[0].clone();
    j.commit(ProcessedBatch {
        shard: 0,
        lease: None,
        cursor: None,
        messages: vec![processed(&key(&a), first.offset, first.message_id, &[1, 2])],
    })
    .await
    .expect("commit");
    for n in 2..5 {
        j.append(vec![msg(&a, 0, n)]).await.expect("append");
    }
    // Shard 1: messages at 1..=4 (one call, several entities' worth). Shard 2: 2 messages.
    // Shard 3: empty.
    j.append((10..14).map(|n| msg(&c, 1, n)).collect())
        .await
        .expect("append");
    j.append((20..22).map(|n| msg(&d, 2, n)).collect())
        .await
        .expect("append");
    assert_eq!(j.head(0).await.expect("head"), 7);

    // The reference: each shard's messages by `read_shard`, but for the one processed
    // (shard 0, offset 1: it has a reply, so it is done although the cursor is below it).
    let mut expected = Vec::new();
    for shard in 0..shards {
        for e in j
            .read_shard(shard, 0, 1000, Some(EntryKind::Message))
            .await
            .expect("read")
        {
            if (e.shard, e.offset) != (0, 1) {
                expected.push(e);
            }
        }
    }
    let all = j
        .read_mailboxes(&[(3, 0), (2, 0), (1, 0), (0, 0)], 100)
        .await
        .expect("mailboxes");
    let got: Vec<Entry> = all
        .iter()
        .map(|d| match d {
            Delivery::Message(e) => e.clone(),
            Delivery::Damaged(d) => panic!("nothing is damaged: {d:?}"),
        })
        .collect();
    assert_eq!(got, expected, "every message, in (shard, offset) order");
    let places: Vec<(u32, u64)> = all.iter().map(|d| (d.shard(), d.offset())).collect();
    assert_eq!(
        places,
        [
            (0, 2),
            (0, 5),
            (0, 6),
            (0, 7),
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2)
        ]
    );

    // Cursors are exclusive and per shard; the limit is per shard and counts messages only.
    let some = j
        .read_mailboxes(&[(0, 1), (1, 2), (2, 2)], 2)
        .await
        .expect("mailboxes");
    let items: Vec<_> = some.iter().map(item).collect();
    assert_eq!(
        items,
        [
            (0, 2, Some(Cmd { sender: 0, n: 1 })),
            (0, 5, Some(Cmd { sender: 0, n: 2 })),
            (1, 3, Some(Cmd { sender: 1, n: 12 })),
            (1, 4, Some(Cmd { sender: 1, n: 13 })),
        ]
    );
    // After the events, the limit still counts only messages.
    let places = places_read(&j, &[(0, 2)], 3).await;
    assert_eq!(places, [(0, 5), (0, 6), (0, 7)]);
    // A cursor at the head reads nothing of its shard; a shard listed twice is read once,
    // after the lower cursor.
    let places = places_read(&j, &[(0, 7), (1, 3), (1, 1)], 2).await;
    assert_eq!(places, [(1, 2), (1, 3)]);
    // No limit to speak of.
    assert_eq!(
        j.read_mailboxes(&[(0, 0), (1, 0), (2, 0)], usize::MAX)
            .await
            .expect("mailboxes")
            .len(),
        10
    );
    // The limit counts what is delivered: the processed message takes no place in it.
    let places = places_read(&j, &[(0, 0)], 1).await;
    assert_eq!(places, [(0, 2)]);
}

/// Invariant 10: a damaged entry in the mailbox — a flipped payload bit, an edited
/// identity field, an unknown kind — comes back as `Damaged` at its place, while its
/// neighbours in the same and other shards come back intact; `read_shard` still fails on
/// it; recording it is idempotent and the tools see the first record.
pub async fn damaged_mailbox_entries<B: Backend>(b: &B) {
    let shards = 2;
    let j = b.fresh(shards).await;
    let a = id_in_shard("a", 0, shards);
    let c = id_in_shard("c", 1, shards);
    j.append((0..5).map(|n| msg(&a, 0, n)).collect())
        .await
        .expect("append");
    j.append((10..13).map(|n| msg(&c, 1, n)).collect())
        .await
        .expect("append");
    j.flip_payload_bit(0, 2).await;
    j.rewrite_entity_id(0, 4, "someone-else").await;
    j.set_kind_code(1, 2, 9).await;

    let err = j.read_shard(0, 0, 100, None).await.expect_err("read_shard");
    assert_checksum_at(&err, 0, 2);

    let all = j
        .read_mailboxes(&[(0, 0), (1, 0)], 100)
        .await
        .expect("a damaged entry never fails the mailbox read");
    let items: Vec<_> = all.iter().map(item).collect();
    let cmd = |sender, n| Some(Cmd { sender, n });
    assert_eq!(
        items,
        [
            (0, 1, cmd(0, 0)),
            (0, 2, None),
            (0, 3, cmd(0, 2)),
            (0, 4, None),
            (0, 5, cmd(0, 4)),
            (1, 1, cmd(1, 10)),
            (1, 2, None),
            (1, 3, cmd(1, 12)),
        ]
    );
    let damaged: Vec<DamagedEntry> = all
        .iter()
        .filter_map(|d| match d {
            Delivery::Damaged(d) => Some(d.clone()),
            Delivery::Message(_) => None,
        })
        .collect();
    assert!(damaged[0].reason.contains("checksum"), "{damaged:?}");
    assert!(damaged[1].reason.contains("checksum"), "{damaged:?}");
    assert!(damaged[2].reason.contains("kind 9"), "{damaged:?}");
    // The intact messages are exactly what `read_shard` returns for them.
    for d in &all {
        if let Delivery::Message(e) = d {
            let one = j
                .read_shard(e.shard, e.offset - 1, 1, None)
                .await
                .expect("read one");
            assert_eq!(one, vec![e.clone()]);
        }
    }
    // A damaged entry counts against the limit like a message.
    let items: Vec<_> = j
        .read_mailboxes(&[(0, 1), (1, 1)], 1)
        .await
        .expect("mailboxes")
        .iter()
        .map(item)
        .collect();
    assert_eq!(items, [(0, 2, None), (1, 2, None)]);

    // Recording: durable, idempotent, first record kept. Its time is the journal's clock
    // (on PostgreSQL the server's), so that is what brackets it.
    let before = j.now();
    j.record_damaged(&damaged).await.expect("record");
    let after = j.now();
    let again: Vec<DamagedEntry> = damaged
        .iter()
        .map(|d| DamagedEntry {
            reason: "recorded again".into(),
            ..d.clone()
        })
        .collect();
    j.record_damaged(&again).await.expect("record twice");
    j.record_damaged(&damaged[..1])
        .await
        .expect("record once more");
    let j = b.reopen(j, shards).await.expect("reopen");
    let any: AnyJournal = j.clone().into();
    let recorded = any.damaged_entries().await.expect("damaged entries");
    let entries: Vec<DamagedEntry> = recorded.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(
        entries, damaged,
        "the first record of each, in (shard, offset) order"
    );
    for (_, at) in &recorded {
        assert!(
            before <= *at && *at <= after,
            "recorded_at of the first record"
        );
    }
}

/// The mailbox read and the damage record refuse bad input with a typed error and treat
/// an empty request as nothing to do; nothing panics.
pub async fn mailbox_bad_input<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    j.append(vec![msg("a", 0, 0), msg("b", 0, 1)])
        .await
        .expect("append");
    let err = j
        .read_mailboxes(&[(0, 0), (5, 0)], 10)
        .await
        .expect_err("shard range");
    assert!(
        matches!(
            err,
            JournalError::ShardOutOfRange {
                shard: 5,
                shard_count: 2
            }
        ),
        "got {err:?}"
    );
    assert!(j.read_mailboxes(&[], 10).await.expect("empty").is_empty());
    assert!(
        j.read_mailboxes(&[(0, 0), (1, 0)], 0)
            .await
            .expect("zero limit")
            .is_empty()
    );
    assert!(
        j.read_mailboxes(&[(0, u64::MAX), (1, u64::MAX)], 10)
            .await
            .expect("far cursor")
            .is_empty()
    );
    j.record_damaged(&[]).await.expect("nothing to record");
    let err = j
        .record_damaged(&[
            DamagedEntry {
                shard: 0,
                offset: 1,
                reason: "r".into(),
            },
            DamagedEntry {
                shard: 2,
                offset: 1,
                reason: "r".into(),
            },
        ])
        .await
        .expect_err("shard range");
    assert!(
        matches!(
            err,
            JournalError::ShardOutOfRange {
                shard: 2,
                shard_count: 2
            }
        ),
        "got {err:?}"
    );
    let any: AnyJournal = j.clone().into();
    assert!(
        any.damaged_entries().await.expect("read").is_empty(),
        "a refused call records nothing"
    );
    // More than one statement's worth in one call: every one is recorded.
    let many: Vec<DamagedEntry> = (0..2_500)
        .map(|n| DamagedEntry {
            shard: n % 2,
            offset: 1_000 + u64::from(n),
            reason: format!("damage {n}"),
        })
        .collect();
    j.record_damaged(&many).await.expect("record many");
    assert_eq!(any.damaged_entries().await.expect("read").len(), 2_500);
}

/// The places (shard, offset) of what a mailbox read from `from` delivers.
async fn places_read<J: Journal>(j: &J, from: &[(u32, u64)], limit: usize) -> Vec<(u32, u64)> {
    j.read_mailboxes(from, limit)
        .await
        .expect("mailboxes")
        .iter()
        .map(|d| (d.shard(), d.offset()))
        .collect()
}
