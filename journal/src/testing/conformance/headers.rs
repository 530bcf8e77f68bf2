//! Headers: stored with their message under its checksum, on every path a message takes
//! into the journal — an append, a schedule and its promotion, a handler's outgoing
//! message at commit — and refused before anything is written when they break the limits.

use std::time::Duration;

use super::{Backend, Tamper, appended, key, msg, processed};
use crate::{
    Delivery, Field, Headers, Journal, JournalError, MAX_HEADER_BYTES, NewMessage, ProcessedBatch,
    Timestamp,
};

fn with(headers: &[(&str, &str)], mut m: NewMessage) -> NewMessage {
    m.headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m
}

/// The headers of the message read back at (`shard`, `offset`).
async fn read_back<J: Journal>(j: &J, shard: u32, offset: u64) -> Headers {
    let read = j
        .read_shard(shard, offset - 1, 1, None)
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].offset, offset);
    read[0].headers.clone()
}

/// Headers round-trip on each write path; a message without headers has none; a
/// rewritten header is a damaged entry; bad headers are refused with a typed error.
pub async fn headers_round_trip<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let tenant = [("tenant", "acme"), ("trace", "t-1")];
    let expected: Headers = tenant
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();

    // An append, with and without headers, in one call.
    let sent = with(&tenant, msg("h", 0, 0));
    let plain = msg("h", 0, 1);
    let out = j
        .append(vec![sent.clone(), plain.clone()])
        .await
        .expect("append");
    let (shard, offset) = appended(&out[0]);
    assert_eq!(read_back(&j, shard, offset).await, expected);
    let (_, plain_offset) = appended(&out[1]);
    assert!(read_back(&j, shard, plain_offset).await.is_empty());

    // A scheduled message keeps its headers through promotion.
    let at = Timestamp::now().after(Duration::from_secs(3600));
    let mut later = with(&[("tenant", "later")], msg("h", 0, 2));
    later.deliver_at = Some(at);
    j.append(vec![later.clone()]).await.expect("schedule");
    let head = j.head(shard).await.expect("head");
    assert_eq!(j.promote_due(shard, at).await.expect("promote"), 1);
    assert_eq!(
        read_back(&j, shard, head + 1).await,
        Headers::from([("tenant".to_owned(), "later".to_owned())])
    );

    // A handler's outgoing message, journaled at commit.
    let mut p = processed(&sent.entity, offset, sent.message_id, &[]);
    let target = key("h-target");
    p.outgoing.push(with(
        &tenant,
        NewMessage::new(target.clone(), super::reply(7)),
    ));
    let receipt = j
        .commit(ProcessedBatch {
            shard,
            lease: None,
            cursor: None,
            messages: vec![p],
        })
        .await
        .expect("commit");
    let (t_shard, t_offset) = appended(&receipt.outgoing[0][0]);
    assert_eq!(read_back(&j, t_shard, t_offset).await, expected);

    // The checksum covers the headers: removed from a message that had some, or added to
    // one that had none, the message is damaged, not delivered.
    j.rewrite_headers(shard, head + 1, None).await;
    j.rewrite_headers(shard, plain_offset, Some(vec![1, 1, b'a', 0]))
        .await;
    for at in [head + 1, plain_offset] {
        let items = j
            .read_mailboxes(&[(shard, at - 1)], 1)
            .await
            .expect("mailbox");
        assert!(
            matches!(&items[..], [Delivery::Damaged(d)] if d.offset == at),
            "{items:?}"
        );
    }

    // Refused before anything is written.
    let head = j.head(shard).await.expect("head");
    let bad = [
        (with(&[("", "x")], msg("h", 1, 0)), Field::HeaderName),
        (
            with(&[("big", &"x".repeat(MAX_HEADER_BYTES))], msg("h", 1, 1)),
            Field::Headers,
        ),
    ];
    for (m, field) in bad {
        match j.append(vec![m]).await {
            Err(JournalError::Empty { field: f }) | Err(JournalError::TooLong { field: f, .. })
                if f == field => {}
            other => panic!("expected a {field} error, got {other:?}"),
        }
    }
    assert_eq!(j.head(shard).await.expect("head"), head);
}
