//! Invariant 4: a message id is journaled once.

use super::*;

/// Invariant 4: re-sending a message id writes nothing and returns the original offset,
/// and the stored reply once the message was processed; repeats inside one call too.
pub async fn dedup<B: Backend>(b: &B) {
    let j = b.fresh(4).await;
    let m = msg("a", 1, 1);
    let (shard, offset) = appended(&j.append(vec![m.clone()]).await.expect("append")[0]);
    let again = j.append(vec![m.clone()]).await.expect("re-append");
    assert_eq!(
        again[0],
        AppendOutcome::Duplicate {
            shard,
            offset: Some(offset),
            reply: None
        }
    );
    assert_eq!(
        j.head(shard).await.expect("head"),
        offset,
        "nothing written"
    );

    j.commit(ProcessedBatch {
        shard,
        lease: None,
        cursor: Some(("mailbox".into(), offset)),
        messages: vec![Processed {
            entity: m.entity.clone(),
            message_id: m.message_id,
            offset,
            events: vec![event(1, 5)],
            reply: reply(5),
            outgoing: vec![],
        }],
    })
    .await
    .expect("commit");
    let third = j.append(vec![m.clone()]).await.expect("re-append");
    match &third[0] {
        AppendOutcome::Duplicate {
            offset: Some(o),
            reply: Some(r),
            ..
        } => {
            assert_eq!(*o, offset);
            assert_eq!(r.payload.decode::<i64>().expect("decode"), 5);
            assert_eq!(r.message_id, m.message_id);
        }
        other => panic!("expected a duplicate with its reply, got {other:?}"),
    }

    // A batch mixing a known id with new ones: the known one is a duplicate, the new
    // ones take the next offsets, densely.
    let (fresh_a, fresh_b) = (msg("a", 1, 10), msg("a", 1, 11));
    let before = j.head(shard).await.expect("head");
    let out = j
        .append(vec![fresh_a.clone(), m.clone(), fresh_b.clone()])
        .await
        .expect("mixed batch");
    assert!(
        matches!(&out[1], AppendOutcome::Duplicate { offset: Some(o), reply: Some(_), .. } if *o == offset),
        "{out:?}"
    );
    assert_eq!(
        out[0],
        AppendOutcome::Appended {
            shard,
            offset: before + 1
        }
    );
    assert_eq!(
        out[2],
        AppendOutcome::Appended {
            shard,
            offset: before + 2
        }
    );
    assert_eq!(j.head(shard).await.expect("head"), before + 2);

    // The same id twice in one call: one entry.
    let twin = msg("b", 1, 2);
    let out = j
        .append(vec![twin.clone(), twin.clone()])
        .await
        .expect("append twins");
    let (s, o) = appended(&out[0]);
    assert_eq!(
        out[1],
        AppendOutcome::Duplicate {
            shard: s,
            offset: Some(o),
            reply: None
        }
    );
    let ids: Vec<Uuid> = j
        .read_shard(s, 0, 100, None)
        .await
        .expect("read")
        .iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(ids.iter().filter(|&&id| id == twin.message_id).count(), 1);

    // Many concurrent senders of the same id: exactly one entry.
    let m = msg("c", 1, 3);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (j, m) = (j.clone(), m.clone());
            tokio::spawn(async move { j.append(vec![m]).await.expect("append") })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        if matches!(t.await.expect("task")[0], AppendOutcome::Appended { .. }) {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1, "exactly one concurrent send appends");
}
