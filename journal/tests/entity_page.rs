//! `entity_page` pages back through one entity's history: each page holds the newest
//! entries before its `before`, in offset order, with exactly its messages' replies, and
//! says whether older entries are left. Walking the pages back to front gives the whole
//! history once, equal to `entity_records`, on both backends.
#![allow(clippy::unwrap_used)]

use entlog_journal::testing::Scratch;
use entlog_journal::{
    AnyJournal, AppendOutcome, EntityKey, Journal, NewEvent, NewMessage, Payload, Processed,
    ProcessedBatch,
};
use uuid::Uuid;

/// Messages sent to the entity; each answered with one event (every third with none).
const MESSAGES: u64 = 25;

/// Writes the history of `counter/paged` (and a neighbour's, which pages must not show).
async fn write(j: &AnyJournal) -> EntityKey {
    let key = EntityKey::new("counter", "paged").unwrap();
    let other = EntityKey::new("counter", "other").unwrap();
    let mut seq = 0;
    for i in 0..MESSAGES {
        let sends = vec![
            NewMessage::new(key.clone(), Payload::encode("test.Cmd", 1, &i).unwrap()),
            NewMessage::new(other.clone(), Payload::encode("test.Cmd", 1, &i).unwrap()),
        ];
        let outcomes = j.append(sends.clone()).await.unwrap();
        for (m, o) in sends.iter().zip(&outcomes) {
            let AppendOutcome::Appended { shard, offset } = o else {
                panic!("expected Appended, got {o:?}");
            };
            let events = if m.entity == key && i % 3 != 2 {
                seq += 1;
                vec![NewEvent {
                    seq,
                    payload: Payload::encode("test.Event", 1, &i).unwrap(),
                }]
            } else {
                vec![]
            };
            j.commit(ProcessedBatch {
                shard: *shard,
                lease: None,
                cursor: None,
                messages: vec![Processed {
                    entity: m.entity.clone(),
                    message_id: m.message_id,
                    offset: *offset,
                    events,
                    reply: Payload::encode("test.Reply", 1, &i).unwrap(),
                    outgoing: vec![],
                }],
            })
            .await
            .unwrap();
        }
    }
    key
}

async fn check(j: &AnyJournal) {
    let key = write(j).await;
    let all = j.entity_records(&key).await.unwrap();
    let events = MESSAGES - MESSAGES / 3;
    assert_eq!(all.entries.len() as u64, MESSAGES + events);
    assert_eq!(all.replies.len() as u64, MESSAGES);

    let mut before = None;
    let mut pages = Vec::new();
    loop {
        let page = j.entity_page(&key, before, 7).await.unwrap();
        let entries = &page.records.entries;
        assert!(entries.len() <= 7);
        assert!(entries.windows(2).all(|w| w[0].offset < w[1].offset));
        assert!(entries.iter().all(|e| e.entity == key));
        // Exactly the replies of the page's messages.
        let mut messages: Vec<Uuid> = entries
            .iter()
            .filter(|e| e.seq.is_none())
            .map(|e| e.message_id)
            .collect();
        let mut replied: Vec<Uuid> = page.records.replies.iter().map(|r| r.message_id).collect();
        messages.sort();
        replied.sort();
        assert_eq!(messages, replied);
        assert_eq!(page.records.snapshot, all.snapshot);
        before = entries.first().map(|e| e.offset);
        pages.push(page.clone());
        if !page.more_before {
            break;
        }
        assert_eq!(entries.len(), 7, "a page before the first is full");
    }
    let walked: Vec<_> = pages
        .iter()
        .rev()
        .flat_map(|p| p.records.entries.clone())
        .collect();
    assert_eq!(walked, all.entries);
    assert_eq!(pages.len(), all.entries.len().div_ceil(7));

    // Past the first entry: an empty page with nothing before it.
    let first = all.entries[0].offset;
    let empty = j.entity_page(&key, Some(first), 7).await.unwrap();
    assert!(empty.records.entries.is_empty() && empty.records.replies.is_empty());
    assert!(!empty.more_before);
}

#[tokio::test]
async fn entity_pages_on_sqlite() {
    let scratch = Scratch::sqlite(2).await;
    check(&scratch.journal).await;
    scratch.remove().await;
}

#[tokio::test]
async fn entity_pages_on_postgres() {
    let scratch = Scratch::postgres(2).await;
    check(&scratch.journal).await;
    scratch.remove().await;
}
