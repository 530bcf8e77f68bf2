//! The PostgreSQL side of the tests: a schema per test, and a login role per runner so
//! that a test can cut one runner off from the database (and let it back in) while the
//! others go on.

use entlog_engine::Cluster;
use entlog_journal::testing::database_url;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::{Counter, config};

const SHARDS: u32 = 8;

/// A PostgreSQL schema for one test, and a login role per runner so that a test can cut a
/// runner off: terminate its lock connection and refuse its reconnection, as when its host
/// loses the network (a plain `pg_terminate_backend` lets it reconnect at once).
pub(crate) struct Db {
    pub(crate) url: String,
    pub(crate) schema: String,
    roles: Vec<String>,
}

impl Db {
    pub(crate) async fn new() -> Self {
        let db = Db {
            url: database_url().await,
            schema: format!("s_{}", Uuid::now_v7().simple()),
            roles: Vec::new(),
        };
        // The admin creates the journal, so that no runner role owns any of it.
        let client = db.client().await;
        client.shutdown().await.unwrap();
        db
    }

    pub(crate) async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    pub(crate) async fn exec(&self, sql: &str) {
        let mut admin = self.admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    fn role(&self, runner: &str) -> String {
        format!("{}_{runner}", self.schema)
    }

    /// The test URL with the user replaced by `role`.
    fn url_as(&self, role: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{role}:pw@{host}")
    }

    pub(crate) async fn client(&self) -> Cluster {
        Cluster::builder()
            .postgres_schema(&self.url, &self.schema)
            .config(config(SHARDS))
            .entity(Counter)
            .client_only()
            .start()
            .await
            .unwrap()
    }

    /// A runner connecting as its own role, built by `build`.
    pub(crate) async fn runner(
        &mut self,
        id: &str,
        build: impl FnOnce(entlog_engine::ClusterBuilder) -> entlog_engine::ClusterBuilder,
    ) -> Cluster {
        let role = self.role(id);
        if !self.roles.contains(&role) {
            self.exec(&format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'pw'"))
                .await;
            self.roles.push(role.clone());
        }
        let builder = Cluster::builder()
            .postgres_schema(self.url_as(&role), &self.schema)
            .config(config(SHARDS).runner_id(id))
            .entity(Counter);
        build(builder).start().await.unwrap()
    }

    /// Cuts runner `id` off: its lock connection dies and it cannot log in again. Returns
    /// the server's clock at the kill.
    pub(crate) async fn cut_off(&self, id: &str) -> f64 {
        let role = self.role(id);
        let mut admin = self.admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} NOLOGIN")))
            .execute(&mut admin)
            .await
            .unwrap();
        let (killed, at): (i64, f64) = sqlx::query_as(
            "SELECT count(pg_terminate_backend(pid)), extract(epoch FROM clock_timestamp())::FLOAT8
               FROM pg_stat_activity WHERE usename = $1 AND application_name = 'entlog-locks'",
        )
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(killed, 1, "{id} has one lock connection");
        at
    }

    /// Lets runner `id` log in again.
    pub(crate) async fn restore(&self, id: &str) {
        self.exec(&format!("ALTER ROLE {} LOGIN", self.role(id)))
            .await;
    }

    pub(crate) async fn now(&self) -> f64 {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::FLOAT8")
            .fetch_one(&mut admin)
            .await
            .unwrap()
    }

    pub(crate) async fn drop(self) {
        self.exec(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
        for role in &self.roles {
            self.exec(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ))
            .await;
            self.exec(&format!("DROP ROLE {role}")).await;
        }
    }
}
