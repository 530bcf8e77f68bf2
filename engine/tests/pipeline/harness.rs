//! Where a scenario's journal lives (`Backend`: a SQLite file or a PostgreSQL schema, with
//! a small payload limit), and what the scenarios check: a bystander on the failing
//! message's shard answering, and a message failing with a reason that names its cause.

use std::time::{Duration, Instant};

use entlog_engine::{Cluster, Config, EngineError};
use entlog_journal::testing::database_url;
use entlog_journal::{AnyJournal, PgJournal, PgOptions, SqliteJournal, SqliteOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::{Cmd, Counter, TempDir};
use crate::entities::{BigCmd, LIMIT, Trouble};

/// Where a scenario's journal lives.
pub(crate) enum Backend {
    Sqlite(TempDir),
    Postgres { url: String, schema: String },
}

impl Backend {
    pub(crate) fn sqlite() -> Self {
        Backend::Sqlite(TempDir::new())
    }

    pub(crate) async fn postgres() -> Self {
        Backend::Postgres {
            url: database_url().await,
            schema: format!("p_{}", Uuid::now_v7().simple()),
        }
    }

    pub(crate) async fn journal(&self, shards: u32) -> AnyJournal {
        match self {
            Backend::Sqlite(dir) => SqliteJournal::open(
                SqliteOptions::new(dir.db())
                    .shard_count(shards)
                    .max_payload_bytes(LIMIT),
            )
            .await
            .unwrap()
            .into(),
            Backend::Postgres { url, schema } => PgJournal::open(
                PgOptions::new(url.clone())
                    .schema(schema.clone())
                    .shard_count(shards)
                    .max_payload_bytes(LIMIT),
            )
            .await
            .unwrap()
            .into(),
        }
    }

    /// Deletes every snapshot (with the journal closed), so activation replays in full.
    pub(crate) async fn drop_snapshots(&self) {
        match self {
            Backend::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.db().display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("DELETE FROM snapshots")
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Backend::Postgres { url, schema } => {
                let mut c = PgConnection::connect(url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {schema}.snapshots"
                )))
                .execute(&mut c)
                .await
                .unwrap();
            }
        }
    }

    pub(crate) async fn cluster(&self, shards: u32, config: Config) -> Cluster {
        Cluster::builder()
            .journal(self.journal(shards).await)
            .config(config.shard_count(shards))
            .entity(Counter)
            .entity(Trouble)
            .entity(BigCmd)
            .start()
            .await
            .unwrap()
    }
}

/// Asks `counter/bystander` and checks it answers within a second.
pub(crate) async fn bystander_answers(cluster: &Cluster, tag: u64) {
    let started = Instant::now();
    cluster
        .entity::<Counter>("bystander")
        .ask(Cmd::Add { n: 1, tag })
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a bystander on the same shard took {took:?}"
    );
}

pub(crate) fn failed_with(r: &Result<Vec<u8>, EngineError>, needle: &str) {
    match r {
        Err(EngineError::Failed { reason }) => {
            assert!(
                reason.contains(needle),
                "{reason:?} does not name {needle:?}"
            )
        }
        other => panic!("expected a failure naming {needle:?}, got {other:?}"),
    }
}

/// Asks `counter/bystander` and waits for its answer (across an owner change).
pub(crate) async fn bystander_answers_eventually(cluster: &Cluster, tag: u64) {
    cluster
        .entity::<Counter>("bystander")
        .ask(Cmd::Add { n: 1, tag })
        .await
        .unwrap();
}
