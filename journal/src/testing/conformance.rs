//! The journal conformance suite: public async test functions that every backend passes
//! unchanged. A backend's test file implements [`Backend`] and calls each function (see
//! `journal/tests/`); each call gets a fresh journal, so the tests run in parallel.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::{
    AnyJournal, AppendOutcome, DamagedEntry, Delivery, EntityKey, Entry, EntryKind, Field, Journal,
    JournalError, Lease, NewEvent, NewMessage, NewSnapshot, Payload, Processed, ProcessedBatch,
    ShardLocks, Timestamp, shard_of,
};

/// What the suite needs from a backend besides the [`Journal`] trait.
pub trait Backend: Send + Sync + 'static {
    /// The journal under test.
    type J: Journal + Tamper + Clone + std::fmt::Debug + Into<crate::AnyJournal>;

    /// A fresh, empty journal with `shards` shards, on storage no other test uses.
    fn fresh(&self, shards: u32) -> impl Future<Output = Self::J> + Send;

    /// Closes `journal` and opens its storage again with `shards` shards.
    fn reopen(
        &self,
        journal: Self::J,
        shards: u32,
    ) -> impl Future<Output = crate::Result<Self::J>> + Send;
}

/// Ways to damage a journal's storage behind its back, as disks, bugs and operators do.
pub trait Tamper {
    /// Flips one bit of the payload stored at (shard, offset).
    fn flip_payload_bit(&self, shard: u32, offset: u64) -> impl Future<Output = ()> + Send;
    /// Rewrites the entity id stored at (shard, offset), leaving the checksum as it was.
    fn rewrite_entity_id(
        &self,
        shard: u32,
        offset: u64,
        id: &str,
    ) -> impl Future<Output = ()> + Send;
    /// Sets the kind code stored at (shard, offset).
    fn set_kind_code(&self, shard: u32, offset: u64, code: i16) -> impl Future<Output = ()> + Send;
    /// Flips one bit of an entity's stored snapshot.
    fn flip_snapshot_bit(&self, entity: &EntityKey) -> impl Future<Output = ()> + Send;
    /// Stores another format version in the journal's metadata.
    fn set_format_version(&self, version: u32) -> impl Future<Output = ()> + Send;
}

/// The command payload the suite sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cmd {
    /// Which sender.
    pub sender: u32,
    /// Its n-th message.
    pub n: u32,
}

fn key(id: &str) -> EntityKey {
    EntityKey::new("counter", id).expect("valid key")
}

fn msg(id: &str, sender: u32, n: u32) -> NewMessage {
    NewMessage::new(
        key(id),
        Payload::encode("test.Cmd", 1, &Cmd { sender, n }).expect("encode"),
    )
}

fn event(seq: u64, value: i64) -> NewEvent {
    NewEvent {
        seq,
        payload: Payload::encode("test.Added", 1, &value).expect("encode"),
    }
}

fn reply(value: i64) -> Payload {
    Payload::encode("test.Reply", 1, &value).expect("encode")
}

fn appended(o: &AppendOutcome) -> (u32, u64) {
    match o {
        AppendOutcome::Appended { shard, offset } => (*shard, *offset),
        other => panic!("expected Appended, got {other:?}"),
    }
}

/// An id whose entity lives in `shard` of a journal with `shards` shards.
pub fn id_in_shard(prefix: &str, shard: u32, shards: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| shard_of(id, shards) == shard)
        .expect("some id maps to every shard")
}

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

fn processed(entity: &EntityKey, offset: u64, message_id: Uuid, seqs: &[u64]) -> Processed {
    Processed {
        entity: entity.clone(),
        message_id,
        offset,
        events: seqs.iter().map(|&s| event(s, s as i64)).collect(),
        reply: reply(seqs.len() as i64),
        outgoing: vec![],
    }
}

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

/// Invariant 6: appenders committing concurrently, in random order and with random delays,
/// while a tailer follows the shard with `offset > last seen`: the tailer sees every entry
/// exactly once, at consecutive offsets. `rounds` repetitions, each on a fresh shard.
pub async fn no_skipped_entries<B: Backend>(
    b: &B,
    rounds: usize,
    appenders: u32,
    per_appender: u32,
) {
    let shards = rounds.max(1) as u32;
    let j = b.fresh(shards).await;
    for round in 0..rounds {
        let shard = round as u32;
        let ids: Vec<String> = (0..8)
            .map(|i| id_in_shard(&format!("r{round}-e{i}"), shard, shards))
            .collect();
        let total = (appenders * per_appender) as usize;
        let tailer = {
            let j = j.clone();
            tokio::spawn(async move {
                let mut last = 0u64;
                let mut seen = Vec::with_capacity(total);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.len() < total {
                    assert!(tokio::time::Instant::now() < deadline, "tailer timed out");
                    let batch = j.read_shard(shard, last, 64, None).await.expect("read");
                    if batch.is_empty() {
                        j.wait_for_entries(shard, Duration::from_millis(20)).await;
                        continue;
                    }
                    for e in batch {
                        assert_eq!(e.offset, last + 1, "tailer saw a gap: skipped entry");
                        last = e.offset;
                        seen.push(e.payload.decode::<Cmd>().expect("decode"));
                    }
                }
                seen
            })
        };
        let writers: Vec<_> = (0..appenders)
            .map(|w| {
                let (j, ids) = (j.clone(), ids.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while n < per_appender {
                        let size = rand::rng().random_range(1..=3).min(per_appender - n);
                        let batch = (n..n + size)
                            .map(|k| msg(&ids[((w + k) % 8) as usize], w, k))
                            .collect();
                        j.append(batch).await.expect("append");
                        n += size;
                        let pause = rand::rng().random_range(0..2_000);
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let seen = tailer.await.expect("tailer");
        let distinct: HashSet<(u32, u32)> = seen.iter().map(|c| (c.sender, c.n)).collect();
        assert_eq!(
            distinct.len(),
            total,
            "round {round}: every entry exactly once"
        );
        for w in 0..appenders {
            for k in 0..per_appender {
                assert!(distinct.contains(&(w, k)), "round {round}: missing {w}/{k}");
            }
        }
        assert_eq!(j.head(shard).await.expect("head"), total as u64);
    }
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
    assert!(
        matches!(
            err,
            JournalError::Checksum {
                shard: 0,
                offset: 2
            }
        ),
        "got {err:?}"
    );
    assert_eq!(
        j.read_shard(0, 2, 1, None).await.expect("read past").len(),
        1
    );

    j.flip_payload_bit(0, 5).await;
    let err = j.read_events(&e, 1, 10).await.expect_err("corrupt event");
    assert!(
        matches!(
            err,
            JournalError::Checksum {
                shard: 0,
                offset: 5
            }
        ),
        "got {err:?}"
    );
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
    assert!(
        matches!(
            err,
            JournalError::Checksum {
                shard: 0,
                offset: 3
            }
        ),
        "got {err:?}"
    );

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
    let state = |v: u32, n: i64| Payload::encode("test.State", v, &n).expect("encode");
    assert!(j.load_snapshot(&e, 1).await.expect("load").is_none());
    j.save_snapshot(NewSnapshot {
        entity: e.clone(),
        seq: 10,
        state: state(1, 10),
    })
    .await
    .expect("save");
    let s = j.load_snapshot(&e, 1).await.expect("load").expect("some");
    assert_eq!((s.seq, s.state.decode::<i64>().expect("decode")), (10, 10));
    assert!(
        j.load_snapshot(&e, 2).await.expect("load").is_none(),
        "old state version"
    );

    j.save_snapshot(NewSnapshot {
        entity: e.clone(),
        seq: 5,
        state: state(1, 5),
    })
    .await
    .expect("save older");
    assert_eq!(
        j.load_snapshot(&e, 1)
            .await
            .expect("load")
            .expect("some")
            .seq,
        10
    );

    j.flip_snapshot_bit(&e).await;
    assert!(
        j.load_snapshot(&e, 1).await.expect("load").is_none(),
        "corrupt snapshot"
    );
    j.save_snapshot(NewSnapshot {
        entity: e.clone(),
        seq: 11,
        state: state(1, 11),
    })
    .await
    .expect("save");
    assert_eq!(
        j.load_snapshot(&e, 1)
            .await
            .expect("load")
            .expect("some")
            .seq,
        11
    );
}

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
/// error that changes nothing.
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
/// nothing. A cancelled id is forgotten: sending it again schedules it anew.
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

/// A tailer waiting on a shard is woken by an append to it.
pub async fn wakeups<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let e = key("w");
    let shard = j.shard_of(&e);
    // Drain any stored permit, then wait while another task appends.
    j.wait_for_entries(shard, Duration::from_millis(10)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move { j.wait_for_entries(shard, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    j.append(vec![msg("w", 0, 0)]).await.expect("append");
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before the poll timeout")
        .expect("task");
    assert!(woken);
}

/// A lock session registers its runner as live until it closes; one id, one session.
pub async fn runner_registry<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    assert!(j.live_runners().await.expect("live").is_empty());
    let a = j.lock_session("runner-a").await.expect("session a");
    let c = j.lock_session("runner-c").await.expect("session c");
    let live: Vec<String> = j
        .live_runners()
        .await
        .expect("live")
        .into_iter()
        .map(|r| r.runner)
        .collect();
    assert_eq!(live, ["runner-a", "runner-c"]);
    let err = j.lock_session("runner-a").await.expect_err("same id twice");
    assert!(
        matches!(err, JournalError::RunnerInUse { .. }),
        "got {err:?}"
    );
    let lease = a.try_acquire(1).await.expect("acquire").expect("free");
    a.close().await.expect("close");
    // A closed session's locks are freed by the server once its backend has exited, a
    // moment after the client closed: wait for that, within a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (live, taken) = loop {
        let live: Vec<String> = j
            .live_runners()
            .await
            .expect("live")
            .into_iter()
            .map(|r| r.runner)
            .collect();
        let taken = match live.as_slice() {
            [only] if only == "runner-c" => c.try_acquire(1).await.expect("acquire"),
            _ => None,
        };
        if let Some(taken) = taken {
            break (live, taken);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner-a's locks were not released by close: live {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(live, ["runner-c"]);
    assert!(taken.epoch > lease.epoch);
    assert_eq!(
        j.shard_owner(1).await.expect("owner").as_deref(),
        Some("runner-c")
    );
    assert_eq!(
        j.shard_owner(0).await.expect("owner"),
        None,
        "never acquired"
    );
    let again = j.lock_session("runner-a").await.expect("id free again");
    drop(again);
    let err = j.lock_session("").await.expect_err("empty runner id");
    assert!(matches!(err, JournalError::Empty { .. }), "got {err:?}");
}

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
    let places: Vec<(u32, u64)> = j
        .read_mailboxes(&[(0, 2)], 3)
        .await
        .expect("mailboxes")
        .iter()
        .map(|d| (d.shard(), d.offset()))
        .collect();
    assert_eq!(places, [(0, 5), (0, 6), (0, 7)]);
    // A cursor at the head reads nothing of its shard; a shard listed twice is read once,
    // after the lower cursor.
    let places: Vec<(u32, u64)> = j
        .read_mailboxes(&[(0, 7), (1, 3), (1, 1)], 2)
        .await
        .expect("mailboxes")
        .iter()
        .map(|d| (d.shard(), d.offset()))
        .collect();
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
    let places: Vec<(u32, u64)> = j
        .read_mailboxes(&[(0, 0)], 1)
        .await
        .expect("mailboxes")
        .iter()
        .map(|d| (d.shard(), d.offset()))
        .collect();
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
    assert!(
        matches!(
            err,
            JournalError::Checksum {
                shard: 0,
                offset: 2
            }
        ),
        "read_shard still fails on a damaged entry: {err:?}"
    );

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

    // Recording: durable, idempotent, first record kept.
    let before = Timestamp::now();
    j.record_damaged(&damaged).await.expect("record");
    let after = Timestamp::now();
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
}

/// Invariant 12 at the journal: [`Journal::replies`] finds replies by (entity, message id)
/// — the same message id sent to two entities gives two replies, each with its own
/// entity — leaves unprocessed ones out, and serves many in one call; a commit that
/// stored replies of a shard wakes [`Journal::wait_for_replies`] of that shard.
pub async fn batched_replies<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let shared_id = Uuid::now_v7();
    let counter = key("r");
    let echo = EntityKey::new("echo", "r").expect("valid key");
    let shard = j.shard_of(&counter);
    assert_eq!(shard, j.shard_of(&echo), "same id, same shard");
    let mut messages = vec![
        NewMessage {
            message_id: shared_id,
            ..msg("r", 0, 0)
        },
        NewMessage {
            entity: echo.clone(),
            message_id: shared_id,
            ..msg("r", 0, 1)
        },
    ];
    messages.extend((2..700).map(|n| msg("r", 0, n)));
    let outcomes = j.append(messages.clone()).await.expect("append");

    // Drain any stored permit, then wait while the batch commits.
    j.wait_for_replies(shard, Duration::from_millis(10)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move { j.wait_for_replies(shard, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Every message but the last one is processed; message n replies n.
    let processed: Vec<Processed> = messages
        .iter()
        .zip(&outcomes)
        .enumerate()
        .take(messages.len() - 1)
        .map(|(n, (m, o))| Processed {
            entity: m.entity.clone(),
            message_id: m.message_id,
            offset: appended(o).1,
            events: vec![],
            reply: reply(n as i64),
            outgoing: vec![],
        })
        .collect();
    j.commit(ProcessedBatch {
        shard,
        lease: None,
        cursor: None,
        messages: processed,
    })
    .await
    .expect("commit");
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before the timeout")
        .expect("task");
    assert!(woken, "replies committed wake their shard's reply waiters");

    let wanted: Vec<(EntityKey, Uuid)> = messages
        .iter()
        .map(|m| (m.entity.clone(), m.message_id))
        .collect();
    let found = j.replies(&wanted).await.expect("replies");
    assert_eq!(
        found.len(),
        messages.len() - 1,
        "the unprocessed one is left out"
    );
    for (entity, stored) in &found {
        let n = messages
            .iter()
            .position(|m| m.entity == *entity && m.message_id == stored.message_id)
            .expect("a wanted reply");
        assert_eq!(stored.payload.decode::<i64>().expect("decode"), n as i64);
    }
    let both: Vec<i64> = found
        .iter()
        .filter(|(_, r)| r.message_id == shared_id)
        .map(|(_, r)| r.payload.decode::<i64>().expect("decode"))
        .collect();
    assert_eq!(both.len(), 2, "one reply per entity for the shared id");
    assert!(both.contains(&0) && both.contains(&1));
    assert!(j.replies(&[]).await.expect("nothing wanted").is_empty());
    let last = messages.last().expect("messages");
    assert!(
        j.replies(&[(last.entity.clone(), last.message_id)])
            .await
            .expect("replies")
            .is_empty()
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
    match any.commit_many(batches(&stale)).await {
        Err(JournalError::Fenced { shard: 2, .. }) => {}
        other => panic!("expected shard 2 fenced, got {other:?}"),
    }
    for (shard, (id, message_id, _)) in sent.iter().enumerate() {
        assert!(j.reply(&ckey(id), *message_id).await.expect("ok").is_none());
        assert_eq!(j.cursor("mailbox", shard as u32).await.expect("ok"), 0);
    }
    assert_eq!(j.head(3).await.expect("ok"), 0);
    // With current leases, everything commits at once.
    let receipts = any.commit_many(batches(&leases)).await.expect("ok");
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
    assert!(any.commit_many(batches(&leases)).await.is_err());
    session.close().await.expect("ok");
}

fn ckey(id: &str) -> EntityKey {
    EntityKey::new("counter", id).expect("ok")
}

fn cpayload(n: i64) -> Payload {
    Payload::encode("test.Value", 1, &n).expect("ok")
}
