//! Invariants 1, 7 and 8, and reading back: acknowledged appends survive a reopen; damaged bytes are an error naming their place; snapshots are checked; long histories page; cursors only move forward.

use super::*;

/// Invariant 1: an acknowledged append survives closing and reopening the journal, with
/// its bytes, and offsets are 1, 2, 3, … per shard.
pub async fn durable_ack<B: Backend>(b: &B) {
    let j = b.fresh(4).await;
    let mut sent = Vec::new();
    for n in 0..20 {
        let m = msg(&format!("e{}", n % 7), 1, n);
        sent.push(m.clone());
        let out = j.append(vec![m]).await.expect("append");
        appended(&out[0]);
    }
    let j = b.reopen(j, 4).await.expect("reopen");
    let mut seen = 0;
    for shard in 0..4 {
        let entries = j.read_shard(shard, 0, 1000, None).await.expect("read");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.offset, i as u64 + 1, "dense offsets");
            let original = sent
                .iter()
                .find(|m| m.message_id == e.message_id)
                .expect("entry was sent");
            assert_eq!(e.payload, original.payload);
            assert_eq!(e.entity, original.entity);
            assert_eq!(e.kind, EntryKind::Message);
        }
        assert_eq!(j.head(shard).await.expect("head"), entries.len() as u64);
        seen += entries.len();
    }
    assert_eq!(seen, sent.len());
}

/// Invariant 7: a flipped bit in a payload, an edited identity field or an unknown kind is
/// an error naming the shard and offset on every read path, never a skip or a panic.
pub async fn checked_bytes<B: Backend>(b: &B) {
    let j = b.fresh(1).await;
    let e = key("k");
    for n in 0..3 {
        j.append(vec![msg("k", 0, n)]).await.expect("append");
    }
    j.commit(ProcessedBatch {
        shard: 0,
        lease: None,
        cursor: None,
        messages: vec![processed(&e, 1, Uuid::now_v7(), &[1, 2])],
    })
    .await
    .expect("commit");
    // Offsets: 1..3 messages, 4..5 events.
    j.flip_payload_bit(0, 2).await;
    let err = j.read_shard(0, 0, 100, None).await.expect_err("corrupt");
    assert_checksum_at(&err, 0, 2);
    assert_eq!(
        j.read_shard(0, 2, 1, None).await.expect("read past").len(),
        1
    );

    j.flip_payload_bit(0, 5).await;
    let err = j.read_events(&e, 1, 10).await.expect_err("corrupt event");
    assert_checksum_at(&err, 0, 5);
    let err = j
        .events(&e, 1)
        .try_collect::<Vec<_>>()
        .await
        .expect_err("stream");
    assert!(
        matches!(err, JournalError::Checksum { offset: 5, .. }),
        "got {err:?}"
    );

    j.rewrite_entity_id(0, 3, "someone-else").await;
    let err = j
        .read_shard(0, 2, 1, None)
        .await
        .expect_err("identity edit");
    assert_checksum_at(&err, 0, 3);

    j.set_kind_code(0, 1, 9).await;
    let err = j.read_shard(0, 0, 1, None).await.expect_err("unknown kind");
    assert!(
        matches!(
            err,
            JournalError::Corrupt {
                shard: 0,
                offset: 1,
                ..
            }
        ),
        "got {err:?}"
    );
}

/// Invariant 8 (storage side): a snapshot that fails its checksum or has another state
/// version is not returned; a newer snapshot is never replaced by an older one.
pub async fn snapshots<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let e = key("snap");
    let save = |seq: u64| {
        j.save_snapshot(NewSnapshot {
            entity: e.clone(),
            seq,
            state: Payload::encode("test.State", 1, &(seq as i64)).expect("encode"),
        })
    };
    let stored_seq = || async {
        let s = j.load_snapshot(&e, 1).await.expect("load").expect("some");
        assert_eq!(s.state.decode::<i64>().expect("decode"), s.seq as i64);
        s.seq
    };
    assert!(j.load_snapshot(&e, 1).await.expect("load").is_none());
    save(10).await.expect("save");
    assert_eq!(stored_seq().await, 10);
    assert!(
        j.load_snapshot(&e, 2).await.expect("load").is_none(),
        "old state version"
    );

    save(5).await.expect("save older");
    assert_eq!(
        stored_seq().await,
        10,
        "an older snapshot replaced a newer one"
    );

    j.flip_snapshot_bit(&e).await;
    assert!(
        j.load_snapshot(&e, 1).await.expect("load").is_none(),
        "corrupt snapshot"
    );
    save(11).await.expect("save");
    assert_eq!(stored_seq().await, 11);
}

/// A long history is read back in pages, in seq order, through the stream.
pub async fn event_stream<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let e = key("long");
    let shard = j.shard_of(&e);
    let total = crate::EVENT_PAGE as u64 * 2 + 17;
    let mut seq = 0;
    while seq < total {
        let n = (total - seq).min(500);
        let seqs: Vec<u64> = (seq + 1..=seq + n).collect();
        j.commit(ProcessedBatch {
            shard,
            lease: None,
            cursor: None,
            messages: vec![processed(&e, 1, Uuid::now_v7(), &seqs)],
        })
        .await
        .expect("commit");
        seq += n;
    }
    let all: Vec<Entry> = j.events(&e, 1).try_collect().await.expect("stream");
    assert_eq!(all.len() as u64, total);
    for (i, ev) in all.iter().enumerate() {
        assert_eq!(ev.seq, Some(i as u64 + 1));
        assert_eq!(ev.payload.decode::<i64>().expect("decode"), i as i64 + 1);
    }
    let tail: Vec<Entry> = j.events(&e, total - 4).try_collect().await.expect("stream");
    assert_eq!(tail.len(), 5);
}

/// Cursors start at 0 and only move forward.
pub async fn cursors_move_forward<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    assert_eq!(j.cursor("p", 1).await.expect("cursor"), 0);
    j.advance_cursor("p", 1, 10).await.expect("advance");
    j.advance_cursor("p", 1, 4).await.expect("advance back");
    assert_eq!(j.cursor("p", 1).await.expect("cursor"), 10);
    assert_eq!(j.cursor("q", 1).await.expect("cursor"), 0);
    assert_eq!(j.cursor("p", 0).await.expect("cursor"), 0);
}
