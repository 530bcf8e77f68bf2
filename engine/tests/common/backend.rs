//! Where a scenario's journal lives: a SQLite file in a temporary directory or a private
//! PostgreSQL schema, so that one scenario runs on both backends. A payload limit can be
//! set for the journals it opens.
#![allow(dead_code, clippy::unwrap_used)]

use entlog_engine::{Cluster, ClusterBuilder};
use entlog_journal::testing::database_url;
use entlog_journal::{AnyJournal, PgJournal, PgOptions, SqliteJournal, SqliteOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{Counter, TempDir, config};

/// Where a scenario's journal lives. A PostgreSQL schema is removed by
/// [`Backend::drop`], which each scenario calls at its end.
pub enum Backend {
    Sqlite {
        dir: TempDir,
        max_payload: Option<usize>,
    },
    Postgres {
        url: String,
        schema: String,
        max_payload: Option<usize>,
    },
}

impl Backend {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Self {
        Backend::Sqlite {
            dir: TempDir::new(),
            max_payload: None,
        }
    }

    /// A fresh schema of the test database (created by the first journal opened on it).
    pub async fn postgres() -> Self {
        Backend::Postgres {
            url: database_url().await,
            schema: format!("p_{}", Uuid::now_v7().simple()),
            max_payload: None,
        }
    }

    /// Journals opened by [`journal`](Self::journal) refuse payloads over `limit` bytes.
    pub fn max_payload_bytes(mut self, limit: usize) -> Self {
        match &mut self {
            Backend::Sqlite { max_payload, .. } | Backend::Postgres { max_payload, .. } => {
                *max_payload = Some(limit)
            }
        }
        self
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Opens the journal with `shards` shards (and the payload limit, if one was set).
    pub async fn journal(&self, shards: u32) -> AnyJournal {
        match self {
            Backend::Sqlite { dir, max_payload } => {
                let mut options = SqliteOptions::new(dir.db()).shard_count(shards);
                if let Some(limit) = max_payload {
                    options = options.max_payload_bytes(*limit);
                }
                SqliteJournal::open(options).await.unwrap().into()
            }
            Backend::Postgres {
                url,
                schema,
                max_payload,
            } => {
                let mut options = PgOptions::new(url.clone())
                    .schema(schema.clone())
                    .shard_count(shards);
                if let Some(limit) = max_payload {
                    options = options.max_payload_bytes(*limit);
                }
                PgJournal::open(options).await.unwrap().into()
            }
        }
    }

    /// A cluster builder pointed at this backend: the engine opens the journal itself,
    /// with the shard count of the config it is given (and no payload limit).
    pub fn builder(&self) -> ClusterBuilder {
        match self {
            Backend::Sqlite { dir, .. } => Cluster::builder().sqlite(dir.db()),
            Backend::Postgres { url, schema, .. } => {
                Cluster::builder().postgres_schema(url.clone(), schema.clone())
            }
        }
    }

    /// A single runner hosting [`Counter`] with its state projection, owning every shard
    /// (on PostgreSQL it waits until it does, so that asks are not held by the first
    /// rebalance).
    pub async fn counter_cluster(&self, shards: u32) -> Cluster {
        let cluster = self
            .builder()
            .config(config(shards))
            .entity(Counter)
            .projection(entlog_engine::StateProjection::<Counter>::new())
            .start()
            .await
            .unwrap();
        super::eventually(20, "the runner to own every shard", || async {
            cluster.owned_shards().len() == shards as usize
        })
        .await;
        cluster
    }

    /// Deletes every snapshot (with the journal closed), so activation replays in full.
    pub async fn drop_snapshots(&self) {
        match self {
            Backend::Sqlite { dir, .. } => {
                let url = format!("sqlite://{}", dir.db().display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("DELETE FROM snapshots")
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Backend::Postgres { url, schema, .. } => {
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

    /// Removes the journal: the PostgreSQL schema (if it was created), or the SQLite
    /// directory. Call it at the end of a scenario, after the clusters' shutdown.
    pub async fn drop(self) {
        if let Backend::Postgres { url, schema, .. } = &self {
            let mut admin = PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        }
    }
}
