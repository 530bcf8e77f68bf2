//! The fixture every test here uses: `Pg`, the conformance suite's PostgreSQL backend,
//! which gives each journal its own schema (optionally with commits delayed inside their
//! transactions) and drops them at the end; and the entity key and payload the tests
//! append.

use std::sync::Mutex;

use entlog_journal::testing::conformance::Backend;
use entlog_journal::testing::database_url;
use entlog_journal::{EntityKey, Payload, PgJournal, PgOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Gives each journal its own schema, dropped when the test ends well.
pub(crate) struct Pg {
    pub(crate) url: String,
    pub(crate) schemas: Mutex<Vec<String>>,
    /// Install a trigger that sleeps a random 0-5 ms after each insert into the journal,
    /// inside the inserting transaction: commits then finish in a scrambled order.
    pub(crate) delay_commits: bool,
}

impl Pg {
    pub(crate) async fn new() -> Self {
        Pg {
            url: database_url().await,
            schemas: Mutex::new(Vec::new()),
            delay_commits: false,
        }
    }

    pub(crate) fn options(&self, schema: &str, shards: u32) -> PgOptions {
        PgOptions::new(&self.url)
            .schema(schema)
            .shard_count(shards)
            .max_connections(8)
    }

    pub(crate) async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    pub(crate) async fn cleanup(self) {
        let mut conn = self.admin().await;
        let schemas: Vec<String> = self.schemas.lock().unwrap().drain(..).collect();
        for s in schemas {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

impl Backend for Pg {
    type J = PgJournal;

    async fn fresh(&self, shards: u32) -> PgJournal {
        let schema = format!("t_{}", Uuid::now_v7().simple());
        self.schemas.lock().unwrap().push(schema.clone());
        let j = PgJournal::open(self.options(&schema, shards))
            .await
            .unwrap();
        if self.delay_commits {
            sqlx::raw_sql(
                "CREATE FUNCTION delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(random() * 0.005); RETURN NULL; END $$;
                 CREATE TRIGGER delay_commit AFTER INSERT ON journal
                 FOR EACH STATEMENT EXECUTE FUNCTION delay_commit();",
            )
            .execute(j.pool())
            .await
            .unwrap();
        }
        j
    }

    async fn reopen(&self, journal: PgJournal, shards: u32) -> entlog_journal::Result<PgJournal> {
        let schema = journal.schema().to_owned();
        journal.close().await;
        PgJournal::open(self.options(&schema, shards)).await
    }
}

pub(crate) fn key(id: &str) -> EntityKey {
    EntityKey::new("counter", id).unwrap()
}

pub(crate) fn payload(n: i64) -> Payload {
    Payload::encode("test.Value", 1, &n).unwrap()
}
