//! Where a test's journal lives (`Store`: a SQLite file or a PostgreSQL schema) and its
//! runners, and what the tests read back from it: every handled `Fire` with the due time
//! of the message it came from, checked to be delivered once and never early.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use entlog_engine::{Cluster, Config};
use entlog_journal::testing::database_url;
use entlog_journal::{AnyJournal, EntryKind, Journal, Timestamp};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::{config, eventually};
use crate::entities::{Event, Timer};

pub(crate) const SHARDS: u32 = 8;

/// Where a test's journal lives.
pub(crate) enum Store {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Store {
    pub(crate) fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("entlog-scheduled-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Store::Sqlite(dir.join("app.db"))
    }

    pub(crate) async fn postgres() -> Self {
        Store::Postgres {
            url: database_url().await,
            schema: format!("e_{}", Uuid::now_v7().simple()),
        }
    }

    pub(crate) async fn runner(&self, id: &str, node: u8) -> Cluster {
        self.runner_with(id, node, config(SHARDS)).await
    }

    pub(crate) async fn runner_with(&self, id: &str, node: u8, config: Config) -> Cluster {
        let builder = match self {
            Store::Sqlite(path) => Cluster::builder().sqlite(path),
            Store::Postgres { url, schema } => Cluster::builder().postgres_schema(url, schema),
        };
        let cluster = builder
            .config(config.runner_id(id))
            .entity(Timer { node })
            .start()
            .await
            .unwrap();
        eventually(20, "the runner to own shards", || async {
            !cluster.owned_shards().is_empty()
        })
        .await;
        cluster
    }

    pub(crate) async fn admin(&self) -> PgConnection {
        match self {
            Store::Postgres { url, .. } => PgConnection::connect(url).await.unwrap(),
            Store::Sqlite(_) => panic!("no server"),
        }
    }

    pub(crate) async fn cleanup(self) {
        match &self {
            Store::Sqlite(path) => {
                let _ = std::fs::remove_dir_all(path.parent().unwrap());
            }
            Store::Postgres { schema, .. } => {
                let mut admin = self.admin().await;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
        }
    }
}

/// One handled `Fire`, as the journal has it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) entity: String,
    pub(crate) tag: u64,
    /// When the handler ran.
    pub(crate) at: Timestamp,
    /// The promoted message's due time (`None`: it was sent due at once).
    pub(crate) deliver_at: Option<Timestamp>,
    pub(crate) node: u8,
}

/// Every `Fire` handled so far, in each entity's handling order.
pub(crate) async fn deliveries(journal: &AnyJournal) -> Vec<Delivery> {
    let mut out = Vec::new();
    for shard in 0..SHARDS {
        let entries = journal.read_shard(shard, 0, 100_000, None).await.unwrap();
        let due: HashMap<Uuid, Option<Timestamp>> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Message)
            .map(|e| (e.message_id, e.deliver_at))
            .collect();
        for e in entries.iter().filter(|e| e.kind == EntryKind::Event) {
            if let Event::Fired { tag, at, node } = e.payload.decode::<Event>().unwrap() {
                out.push(Delivery {
                    entity: e.entity.entity_id().to_owned(),
                    tag,
                    at: Timestamp(at),
                    deliver_at: *due.get(&e.message_id).unwrap(),
                    node,
                });
            }
        }
    }
    out
}

/// Waits until the tags in `tags` were all delivered; returns every delivery.
pub(crate) async fn await_tags(
    journal: &AnyJournal,
    tags: &HashSet<u64>,
    secs: u64,
) -> Vec<Delivery> {
    eventually(secs, "the scheduled messages", || async {
        let seen: HashSet<u64> = deliveries(journal).await.iter().map(|d| d.tag).collect();
        tags.is_subset(&seen)
    })
    .await;
    deliveries(journal).await
}

/// Each tag delivered at most once, and never before its due time.
pub(crate) fn check_once_and_never_early(all: &[Delivery]) {
    let mut seen = HashSet::new();
    for d in all {
        assert!(seen.insert(d.tag), "tag {} delivered twice: {all:?}", d.tag);
        if let Some(due) = d.deliver_at {
            assert!(d.at >= due, "tag {} ran {:?} early", d.tag, due.since(d.at));
        }
    }
}
