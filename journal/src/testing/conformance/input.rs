//! Bad input and a mismatched journal get typed errors and change nothing.

use super::*;

/// Bad input gets a typed error and writes nothing.
pub async fn bad_input<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    assert!(matches!(
        EntityKey::new("counter", ""),
        Err(JournalError::Empty {
            field: Field::EntityId
        })
    ));
    assert!(matches!(
        EntityKey::new("counter", "x".repeat(256)),
        Err(JournalError::TooLong {
            field: Field::EntityId,
            len: 256,
            ..
        })
    ));
    let big = NewMessage::new(
        key("a"),
        Payload {
            type_tag: "t".into(),
            version: 1,
            bytes: vec![0; crate::DEFAULT_MAX_PAYLOAD_BYTES + 1],
        },
    );
    let ok = msg("b", 0, 0);
    let err = j
        .append(vec![ok.clone(), big])
        .await
        .expect_err("too large");
    assert!(
        matches!(err, JournalError::PayloadTooLarge { size, limit } if size == limit + 1),
        "got {err:?}"
    );
    let no_tag = NewMessage::new(
        key("a"),
        Payload {
            type_tag: String::new(),
            version: 1,
            bytes: vec![],
        },
    );
    let err = j.append(vec![no_tag]).await.expect_err("empty tag");
    assert!(
        matches!(
            err,
            JournalError::Empty {
                field: Field::TypeTag
            }
        ),
        "got {err:?}"
    );
    for shard in 0..2 {
        assert_eq!(j.head(shard).await.expect("head"), 0, "nothing was written");
    }
    // An empty payload is valid (a unit command).
    let unit = NewMessage::new(key("a"), Payload::encode("t", 1, &()).expect("encode"));
    appended(&j.append(vec![unit]).await.expect("unit payload")[0]);

    let err = j.read_shard(7, 0, 1, None).await.expect_err("shard range");
    assert!(matches!(
        err,
        JournalError::ShardOutOfRange {
            shard: 7,
            shard_count: 2
        }
    ));
    let err = j
        .commit(ProcessedBatch {
            shard: 0,
            lease: None,
            cursor: None,
            messages: vec![processed(&key("a"), 1, Uuid::now_v7(), &[0])],
        })
        .await
        .expect_err("seq 0");
    assert!(
        matches!(err, JournalError::InvalidSeq { .. }),
        "got {err:?}"
    );
    let err = j
        .advance_cursor("", 0, 1)
        .await
        .expect_err("empty consumer");
    assert!(matches!(
        err,
        JournalError::Empty {
            field: Field::Consumer
        }
    ));
}

/// Opening with another shard count, or a journal of an unknown format version, is a typed
/// error that changes nothing; a count of 0 opens with the stored one.
pub async fn wrong_shard_count_and_format<B: Backend>(b: &B) {
    let j = b.fresh(4).await;
    let (_, offset) = appended(&j.append(vec![msg("a", 0, 0)]).await.expect("append")[0]);
    let err = b.reopen(j, 8).await.expect_err("wrong shard count");
    assert!(
        matches!(
            err,
            JournalError::ShardCountMismatch {
                stored: 4,
                requested: 8
            }
        ),
        "got {err:?}"
    );
    let j = b.fresh(4).await;
    let (shard, _) = appended(&j.append(vec![msg("a", 0, 0)]).await.expect("append")[0]);
    let j = b.reopen(j, 4).await.expect("same count reopens");
    assert_eq!(j.head(shard).await.expect("head"), offset);
    // A count of 0 (the options' default) adopts the stored one.
    let j = b.reopen(j, 0).await.expect("a count of 0 reopens");
    assert_eq!(j.shard_count(), 4, "the stored count is adopted");
    assert_eq!(j.head(shard).await.expect("head"), offset);
    j.set_format_version(99).await;
    let err = b.reopen(j, 4).await.expect_err("unknown format");
    assert!(
        matches!(
            err,
            JournalError::UnsupportedFormat {
                found: 99,
                supported: 1
            }
        ),
        "got {err:?}"
    );
}
