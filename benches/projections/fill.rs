//! Scenario 1, the fill: the data set (`Data`: entities by shard, deterministic event
//! values), and `fill`, which commits it to a fresh journal through `Journal::commit`,
//! the shards concurrently, and returns what it committed (`Filled`: each shard's events
//! in offset order and the `Fold` of everything, which every read model is checked
//! against).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, EntityKey, Journal, NewEvent, Payload, Processed, ProcessedBatch, Shard, shard_of,
};
use uuid::Uuid;

use crate::common::Size;
use crate::{ENTITY_TYPE, EVENT_TAG, EVENTS_PER_MESSAGE, MESSAGES_PER_COMMIT, SHARDS};

/// Entities, by shard, and how many rounds of messages each gets.
pub(crate) struct Data {
    pub(crate) ids: Vec<String>,
    by_shard: Vec<Vec<u32>>,
    rounds: u64,
    pub(crate) events: u64,
}

impl Data {
    pub(crate) fn new(size: Size) -> Self {
        let per_entity = size.events / size.entities as u64;
        assert!(
            per_entity * size.entities as u64 == size.events
                && per_entity.is_multiple_of(EVENTS_PER_MESSAGE),
            "events per entity must be a whole multiple of {EVENTS_PER_MESSAGE}"
        );
        let ids: Vec<String> = (0..size.entities).map(|i| format!("acct-{i:06}")).collect();
        let mut by_shard = vec![Vec::new(); SHARDS as usize];
        for (i, id) in ids.iter().enumerate() {
            by_shard[shard_of(id, SHARDS) as usize].push(i as u32);
        }
        Data {
            ids,
            by_shard,
            rounds: per_entity / EVENTS_PER_MESSAGE,
            events: size.events,
        }
    }
}

/// The value of an entity's event at `seq`: deterministic, of both signs.
fn value(entity: u32, seq: u64) -> i64 {
    ((i64::from(entity) * 31 + seq as i64 * 17) % 201) - 100
}

/// entity id → (sum of values, number of events).
pub(crate) type Fold = HashMap<String, (i64, i64)>;

/// What the fill committed.
pub(crate) struct Filled {
    /// Per shard, (entity, value) of each event in offset order.
    pub(crate) streams: Arc<Vec<Vec<(u32, i64)>>>,
    /// The fold of everything committed.
    pub(crate) fold: Fold,
    pub(crate) elapsed: Duration,
    pub(crate) commits: u64,
}

/// Commits `pending` to `shard` and checks the events got the next offsets, in order.
async fn commit(j: &AnyJournal, shard: Shard, pending: &mut Vec<Processed>, next: &mut u64) {
    let events: usize = pending.iter().map(|p| p.events.len()).sum();
    let receipt = j
        .commit(ProcessedBatch {
            shard,
            lease: None,
            cursor: None,
            messages: std::mem::take(pending),
        })
        .await
        .unwrap();
    let offsets: Vec<u64> = receipt.event_offsets.into_iter().flatten().collect();
    let expected: Vec<u64> = (*next + 1..=*next + events as u64).collect();
    assert_eq!(
        offsets, expected,
        "shard {shard}: events not at the next offsets"
    );
    *next += events as u64;
}

/// Fills the journal: per shard, commits of `MESSAGES_PER_COMMIT` handled messages of
/// `EVENTS_PER_MESSAGE` events, the shards concurrently. Folds while filling.
pub(crate) async fn fill(j: &AnyJournal, data: &Arc<Data>) -> Filled {
    let start = Instant::now();
    let tasks: Vec<_> = (0..SHARDS)
        .map(|shard| {
            let (j, data) = (j.clone(), data.clone());
            tokio::spawn(async move {
                let reply = Payload::encode("account.Ack", 1, &()).unwrap();
                let entities = &data.by_shard[shard as usize];
                let mut stream = Vec::with_capacity(
                    entities.len() * (data.rounds * EVENTS_PER_MESSAGE) as usize,
                );
                let mut fold: HashMap<u32, (i64, i64)> = HashMap::new();
                let mut pending = Vec::with_capacity(MESSAGES_PER_COMMIT);
                let (mut next, mut commits) = (0u64, 0u64);
                for round in 0..data.rounds {
                    for &e in entities {
                        let entity = EntityKey::new(ENTITY_TYPE, &data.ids[e as usize]).unwrap();
                        let events = (1..=EVENTS_PER_MESSAGE)
                            .map(|k| {
                                let seq = round * EVENTS_PER_MESSAGE + k;
                                let v = value(e, seq);
                                stream.push((e, v));
                                let f = fold.entry(e).or_insert((0, 0));
                                f.0 += v;
                                f.1 += 1;
                                NewEvent {
                                    seq,
                                    payload: Payload::encode(EVENT_TAG, 1, &v).unwrap(),
                                }
                            })
                            .collect();
                        pending.push(Processed {
                            entity,
                            message_id: Uuid::now_v7(),
                            offset: 0,
                            events,
                            reply: reply.clone(),
                            outgoing: vec![],
                        });
                        if pending.len() == MESSAGES_PER_COMMIT {
                            commit(&j, shard, &mut pending, &mut next).await;
                            commits += 1;
                        }
                    }
                }
                if !pending.is_empty() {
                    commit(&j, shard, &mut pending, &mut next).await;
                    commits += 1;
                }
                (stream, fold, commits)
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut fold = Fold::new();
    let mut commits = 0;
    for t in tasks {
        let (stream, f, c) = t.await.unwrap();
        streams.push(stream);
        for (e, v) in f {
            fold.insert(data.ids[e as usize].clone(), v);
        }
        commits += c;
    }
    let elapsed = start.elapsed();
    let mut total = 0;
    for shard in 0..SHARDS {
        total += j.head(shard).await.unwrap();
    }
    assert_eq!(total, data.events, "journal heads after the fill");
    Filled {
        streams: Arc::new(streams),
        fold,
        elapsed,
        commits,
    }
}
