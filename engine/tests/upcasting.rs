//! Versioned payloads: a journal written by version 1 of an entity type, read by version 2.
//!
//! Version 1 of `account` stores `Event::Deposited(u64)` and commands
//! `Cmd::Deposit(u64)`. Version 2 gives both a memo (`EVENT_VERSION = 2`,
//! `COMMAND_VERSION = 2`) with upcasters from version 1, and reorders its state's fields
//! (`STATE_VERSION = 2`): postcard cannot tell the two state shapes apart, so a v1 snapshot
//! read as v2 would silently swap the balance and the deposit count. The v2 code must read
//! the v1 history through its upcasters on every path (activation, queued messages, the
//! state projection), ignore the v1 snapshot, and write new events as v2. A v2 reader
//! without upcasters must fail with an error naming the type, the version, the shard and
//! the offset, never skip or misread.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use entlog_engine::{
    Cluster, Config, Context, EngineError, Entity, Outcome, Rejection, StateProjection,
    decode_event, projected_state,
};
use entlog_journal::{AnyJournal, EntityKey, Entry, Journal, JournalError, Payload};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version 1, as it was deployed.
mod v1 {
    use super::*;

    pub struct Account;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit(u64),
        Get,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Event {
        Deposited(u64),
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct State {
        pub cents: u64,
        pub deposits: u64,
    }

    impl Entity for Account {
        const TYPE: &'static str = "account";
        type Command = Cmd;
        type Event = Event;
        type Reply = u64;
        type State = State;

        async fn handle(
            &self,
            state: &State,
            cmd: Cmd,
            _: &mut Context,
        ) -> Result<Outcome<Self>, Rejection> {
            Ok(match cmd {
                Cmd::Deposit(n) => Outcome::new(vec![Event::Deposited(n)], state.cents + n),
                Cmd::Get => Outcome::reply(state.cents),
            })
        }

        fn apply(state: &mut State, event: &Event) {
            let Event::Deposited(n) = event;
            state.cents += n;
            state.deposits += 1;
        }
    }
}

/// Version 2: events and commands gain a memo; the state's fields are reordered.
mod v2 {
    use super::*;

    /// Version 2 with upcasters from version 1.
    pub struct Account;
    /// Version 2 without upcasters (a deploy that forgot them).
    pub struct Forgetful;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Cmd {
        Deposit { cents: u64, memo: String },
        Get,
        Deposits,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Event {
        Deposited { cents: u64, memo: String },
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct State {
        pub deposits: u64,
        pub cents: u64,
    }

    /// The memo given to deposits made by version 1.
    pub const V1_MEMO: &str = "(v1)";

    impl From<v1::Event> for Event {
        fn from(e: v1::Event) -> Self {
            let v1::Event::Deposited(cents) = e;
            Event::Deposited {
                cents,
                memo: V1_MEMO.into(),
            }
        }
    }

    impl From<v1::Cmd> for Cmd {
        fn from(c: v1::Cmd) -> Self {
            match c {
                v1::Cmd::Deposit(cents) => Cmd::Deposit {
                    cents,
                    memo: V1_MEMO.into(),
                },
                v1::Cmd::Get => Cmd::Get,
            }
        }
    }

    fn handle<E>(state: &State, cmd: Cmd) -> Result<Outcome<E>, Rejection>
    where
        E: Entity<Command = Cmd, Event = Event, Reply = u64, State = State>,
    {
        Ok(match cmd {
            Cmd::Deposit { cents, memo } => {
                Outcome::new(vec![Event::Deposited { cents, memo }], state.cents + cents)
            }
            Cmd::Get => Outcome::reply(state.cents),
            Cmd::Deposits => Outcome::reply(state.deposits),
        })
    }

    fn apply(state: &mut State, event: &Event) {
        let Event::Deposited { cents, .. } = event;
        state.cents += cents;
        state.deposits += 1;
    }

    impl Entity for Account {
        const TYPE: &'static str = "account";
        const COMMAND_VERSION: u32 = 2;
        const EVENT_VERSION: u32 = 2;
        const STATE_VERSION: u32 = 2;
        type Command = Cmd;
        type Event = Event;
        type Reply = u64;
        type State = State;

        async fn handle(
            &self,
            state: &State,
            cmd: Cmd,
            _: &mut Context,
        ) -> Result<Outcome<Self>, Rejection> {
            handle(state, cmd)
        }

        fn apply(state: &mut State, event: &Event) {
            apply(state, event)
        }

        fn upcast_event(payload: &Payload) -> Option<Result<Event, JournalError>> {
            match payload.version {
                1 => Some(payload.decode::<v1::Event>().map(Event::from)),
                _ => None,
            }
        }

        fn upcast_command(payload: &Payload) -> Option<Result<Cmd, JournalError>> {
            match payload.version {
                1 => Some(payload.decode::<v1::Cmd>().map(Cmd::from)),
                _ => None,
            }
        }
    }

    impl Entity for Forgetful {
        const TYPE: &'static str = "account";
        const COMMAND_VERSION: u32 = 2;
        const EVENT_VERSION: u32 = 2;
        const STATE_VERSION: u32 = 2;
        type Command = Cmd;
        type Event = Event;
        type Reply = u64;
        type State = State;

        async fn handle(
            &self,
            state: &State,
            cmd: Cmd,
            _: &mut Context,
        ) -> Result<Outcome<Self>, Rejection> {
            handle(state, cmd)
        }

        fn apply(state: &mut State, event: &Event) {
            apply(state, event)
        }
    }
}

fn config() -> Config {
    Config::default()
        .shard_count(2)
        .snapshot_every(10)
        .rebalance_interval(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(200))
        .ask_timeout(Duration::from_secs(30))
}

async fn cluster<E: Entity>(db: &std::path::Path, entity: E) -> Cluster {
    Cluster::builder()
        .sqlite(db)
        .config(config())
        .entity(entity)
        .start()
        .await
        .unwrap()
}

async fn client(db: &std::path::Path) -> Cluster {
    Cluster::builder()
        .sqlite(db)
        .config(config())
        .client_only()
        .start()
        .await
        .unwrap()
}

fn key(id: &str) -> EntityKey {
    EntityKey::new("account", id).unwrap()
}

async fn events(journal: &AnyJournal, id: &str) -> Vec<Entry> {
    journal.events(&key(id), 1).try_collect().await.unwrap()
}

/// Version 1 deposits 100 and 50 into `alice` (snapshotted at shutdown, state version 1)
/// and leaves a v1 `Deposit(7)` queued for `bob`, undelivered.
async fn write_v1(db: &std::path::Path) -> Uuid {
    let c = cluster(db, v1::Account).await;
    let alice = c.entity::<v1::Account>("alice");
    assert_eq!(alice.ask(v1::Cmd::Deposit(100)).await.unwrap(), 100);
    assert_eq!(alice.ask(v1::Cmd::Deposit(50)).await.unwrap(), 150);
    c.shutdown().await.unwrap();
    drop(c);

    // A message sent by a v1 client that no runner picks up before the deploy.
    let c = client(db).await;
    let queued = c
        .entity::<v1::Account>("bob")
        .tell(v1::Cmd::Deposit(7))
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    queued
}

/// Activation replays v1 events through the upcaster and ignores the v1 snapshot; a
/// queued v1 command is upcast too; new events are written as version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_reads_a_v1_journal() {
    let dir = common::TempDir::new();
    let queued = write_v1(&dir.db()).await;

    // The v1 run left a snapshot of state version 1, which version 2 must not use.
    {
        let c = client(&dir.db()).await;
        let j = c.journal();
        let snap = j.load_snapshot(&key("alice"), 1).await.unwrap();
        assert_eq!(snap.expect("a v1 snapshot").seq, 2);
        assert!(j.load_snapshot(&key("alice"), 2).await.unwrap().is_none());
        c.shutdown().await.unwrap();
    }

    let c = cluster(&dir.db(), v2::Account).await;
    let alice = c.entity::<v2::Account>("alice");
    // Full replay of the upcast v1 events: read as v2 bytes, the v1 snapshot would have
    // given 2 cents in 150 deposits.
    assert_eq!(alice.ask(v2::Cmd::Get).await.unwrap(), 150);
    assert_eq!(alice.ask(v2::Cmd::Deposits).await.unwrap(), 2);
    let deposit = v2::Cmd::Deposit {
        cents: 25,
        memo: "rent".into(),
    };
    assert_eq!(alice.ask(deposit).await.unwrap(), 175);

    // The v1 command queued before the deploy was upcast and handled.
    let bob = c.entity::<v2::Account>("bob");
    let mut reply = None;
    for _ in 0..200 {
        reply = bob.reply_to(queued).await.unwrap();
        if reply.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reply, Some(7));
    let bob_events = events(c.journal(), "bob").await;
    assert_eq!(bob_events.len(), 1);
    assert_eq!(bob_events[0].payload.version, 2);
    assert_eq!(
        decode_event::<v2::Account>(&bob_events[0]).unwrap(),
        v2::Event::Deposited {
            cents: 7,
            memo: v2::V1_MEMO.into()
        }
    );

    // Old events stay as written; the new one is version 2; all read as v2 events.
    let history = events(c.journal(), "alice").await;
    let versions: Vec<u32> = history.iter().map(|e| e.payload.version).collect();
    assert_eq!(versions, [1, 1, 2]);
    let read: Vec<v2::Event> = history
        .iter()
        .map(|e| decode_event::<v2::Account>(e).unwrap())
        .collect();
    assert_eq!(
        read,
        [
            v2::Event::Deposited {
                cents: 100,
                memo: v2::V1_MEMO.into()
            },
            v2::Event::Deposited {
                cents: 50,
                memo: v2::V1_MEMO.into()
            },
            v2::Event::Deposited {
                cents: 25,
                memo: "rent".into()
            },
        ]
    );
    c.shutdown().await.unwrap();
    drop(c);

    // Shutdown saved a state-version-2 snapshot; a restart starts from it.
    let c = cluster(&dir.db(), v2::Account).await;
    let snap = c
        .journal()
        .load_snapshot(&key("alice"), 2)
        .await
        .unwrap()
        .expect("a v2 snapshot");
    assert_eq!(snap.seq, 3);
    assert_eq!(
        snap.state.decode::<v2::State>().unwrap(),
        v2::State {
            deposits: 3,
            cents: 175
        }
    );
    let alice = c.entity::<v2::Account>("alice");
    assert_eq!(alice.ask(v2::Cmd::Get).await.unwrap(), 175);
    assert_eq!(alice.ask(v2::Cmd::Deposits).await.unwrap(), 3);
    c.shutdown().await.unwrap();
}

/// The state projection, rebuilt by version 2, reads the v1 events through the upcaster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_projection_rebuild_upcasts() {
    let dir = common::TempDir::new();
    write_v1(&dir.db()).await;
    let c = client(&dir.db()).await;
    let journal = c.journal();
    entlog_projections::rebuild(
        journal,
        Arc::new(StateProjection::<v2::Account>::new()),
        100,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        projected_state::<v2::Account>(journal, "alice")
            .await
            .unwrap(),
        Some((
            2,
            v2::State {
                deposits: 2,
                cents: 150
            }
        ))
    );

    // Without the upcaster the rebuild stops at the first v1 event, and says where.
    let err = entlog_projections::rebuild(
        journal,
        Arc::new(StateProjection::<v2::Forgetful>::new()),
        100,
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    let first = &events(journal, "alice").await[0];
    assert!(err.contains("account.event version 1"), "{err}");
    assert!(
        err.contains(&format!("shard {}, offset {}", first.shard, first.offset)),
        "{err}"
    );
    c.shutdown().await.unwrap();
}

/// A v2 reader without upcasters gets the typed error, on every path, and nothing is
/// skipped: the entity's messages fail with the reason, its history is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upcaster_reads_fail_with_the_place() {
    let dir = common::TempDir::new();
    let queued = write_v1(&dir.db()).await;
    let c = cluster(&dir.db(), v2::Forgetful).await;

    // The direct read: the typed error with tag, versions, shard and offset.
    let history = events(c.journal(), "alice").await;
    let first = &history[0];
    match decode_event::<v2::Forgetful>(first) {
        Err(EngineError::NoUpcaster {
            type_tag,
            version,
            current,
            shard,
            offset,
        }) => {
            assert_eq!(type_tag, "account.event");
            assert_eq!((version, current), (1, 2));
            assert_eq!((shard, offset), (first.shard, first.offset));
        }
        other => panic!("expected NoUpcaster, got {other:?}"),
    }

    // Activation fails: the asker gets a failure naming the problem, not a panic.
    let err = c
        .entity::<v2::Forgetful>("alice")
        .ask(v2::Cmd::Get)
        .await
        .unwrap_err();
    let EngineError::Failed { reason } = &err else {
        panic!("expected a failure reply, got {err:?}");
    };
    assert!(reason.contains("activation failed"), "{reason}");
    assert!(reason.contains("account.event version 1"), "{reason}");
    assert!(
        reason.contains(&format!("shard {}, offset {}", first.shard, first.offset)),
        "{reason}"
    );
    assert_eq!(events(c.journal(), "alice").await.len(), 2);

    // The queued v1 command gets a failure reply naming its version.
    let bob = c.entity::<v2::Forgetful>("bob");
    let mut reply = None;
    for _ in 0..200 {
        match bob.reply_to(queued).await {
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => {
                reply = Some(other);
                break;
            }
        }
    }
    match reply {
        Some(Err(EngineError::Failed { reason })) => {
            assert!(reason.contains("account.command version 1"), "{reason}");
            assert!(reason.contains("reads version 2"), "{reason}");
        }
        other => panic!("expected a failure reply, got {other:?}"),
    }
    assert!(events(c.journal(), "bob").await.is_empty());
    c.shutdown().await.unwrap();
}

/// A version newer than this build's is never handed to the upcaster (it would be a
/// downgrade) and is an error too.
#[test]
fn newer_versions_are_errors() {
    let payload = Payload::encode(
        "account.event",
        3,
        &v2::Event::Deposited {
            cents: 1,
            memo: String::new(),
        },
    )
    .unwrap();
    let entry = Entry {
        shard: 1,
        offset: 9,
        kind: entlog_journal::EntryKind::Event,
        entity: key("carol"),
        seq: Some(1),
        message_id: Uuid::now_v7(),
        payload,
        deliver_at: None,
        created_at: entlog_journal::Timestamp(0),
        headers: Default::default(),
    };
    assert!(matches!(
        decode_event::<v2::Account>(&entry),
        Err(EngineError::NoUpcaster {
            version: 3,
            current: 2,
            shard: 1,
            offset: 9,
            ..
        })
    ));
}
