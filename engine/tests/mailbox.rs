//! A bounded mailbox: a send to an entity that already has its capacity of unanswered
//! messages fails with `MailboxFull` (retryable) and journals nothing; other entities are
//! not affected; once the entity answers, sends go through again. The capacity comes from
//! `Config::mailbox_capacity`, or from `Entity::MAILBOX_CAPACITY` for one type. On SQLite
//! and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::pg::Schema;
use entlog_engine::{
    Cluster, ClusterBuilder, Context, EngineError, Entity, MAILBOX, Outcome, Rejection,
};
use entlog_journal::{EntityKey, EntryKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Handles a message only when the gate lets one through; replies with its number.
struct Gated(Arc<Semaphore>);

/// As `Gated`, with a capacity of its own: one unanswered message.
struct Narrow(Arc<Semaphore>);

#[derive(Debug, Serialize, Deserialize)]
struct Job(u32);

async fn pass(gate: &Semaphore) {
    gate.acquire().await.unwrap().forget();
}

impl Entity for Gated {
    const TYPE: &'static str = "gated";
    type Command = Job;
    type Event = ();
    type Reply = u32;
    type State = ();

    async fn handle(&self, _: &(), job: Job, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        pass(&self.0).await;
        Ok(Outcome::reply(job.0))
    }

    fn apply(_: &mut (), _: &()) {}
}

impl Entity for Narrow {
    const TYPE: &'static str = "narrow";
    const MAILBOX_CAPACITY: Option<u32> = Some(1);
    type Command = Job;
    type Event = ();
    type Reply = u32;
    type State = ();

    async fn handle(&self, _: &(), job: Job, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        pass(&self.0).await;
        Ok(Outcome::reply(job.0))
    }

    fn apply(_: &mut (), _: &()) {}
}

fn full(result: Result<impl std::fmt::Debug, EngineError>, entity: &str, capacity: u32) {
    match result {
        Err(e @ EngineError::MailboxFull { .. }) => {
            assert!(e.is_retryable());
            let EngineError::MailboxFull {
                entity: e_entity,
                capacity: e_capacity,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((e_entity.as_str(), *e_capacity), (entity, capacity));
            assert!(e.to_string().contains("is full"), "{e}");
        }
        other => panic!("expected MailboxFull for {entity}, got {other:?}"),
    }
}

async fn bounded(builder: ClusterBuilder) {
    let gate = Arc::new(Semaphore::new(0));
    let cluster: Cluster = builder
        .config(
            common::config(4)
                .mailbox_capacity(3)
                .handler_timeout(Duration::from_secs(120)),
        )
        .entity(Gated(gate.clone()))
        .entity(Narrow(gate.clone()))
        .start()
        .await
        .unwrap();
    let a = cluster.entity::<Gated>("a");
    for n in 0..3 {
        a.tell(Job(n)).await.unwrap();
    }
    full(a.tell(Job(3)).await, "gated/a", 3);
    full(a.ask(Job(4)).await, "gated/a", 3);
    // Another entity of the same type has a mailbox of its own.
    cluster.entity::<Gated>("b").tell(Job(0)).await.unwrap();
    // The type's own capacity.
    let narrow = cluster.entity::<Narrow>("n");
    narrow.tell(Job(0)).await.unwrap();
    full(narrow.tell(Job(1)).await, "narrow/n", 1);

    // The refused sends were not journaled.
    let journal = cluster.journal();
    let key = EntityKey::new("gated", "a").unwrap();
    let sent = |records: &entlog_journal::EntityRecords| {
        records
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Message)
            .count()
    };
    assert_eq!(sent(&journal.entity_records(&key).await.unwrap()), 3);
    assert_eq!(journal.unanswered(&key, MAILBOX, 10).await.unwrap(), 3);

    // Once the entity answers, its mailbox has room again.
    gate.add_permits(1_000);
    eventually(30, "gated/a to answer its messages", || async {
        journal.unanswered(&key, MAILBOX, 10).await.unwrap() == 0
    })
    .await;
    assert_eq!(a.ask(Job(5)).await.unwrap(), 5);
    assert_eq!(sent(&journal.entity_records(&key).await.unwrap()), 4);
    eventually(30, "narrow/n to answer", || async {
        narrow.tell(Job(2)).await.is_ok()
    })
    .await;
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_full_on_sqlite() {
    let dir = common::TempDir::new();
    bounded(Cluster::builder().sqlite(dir.db())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_full_on_postgres() {
    let schema = Schema::new().await;
    bounded(Cluster::builder().postgres_schema(&schema.url, &schema.name)).await;
    schema.drop().await;
}
