//! Journals for one test: a SQLite file in a directory of its own, or a PostgreSQL schema
//! of its own on the test server; each removed by `remove`.

use sqlx::Connection;
use uuid::Uuid;

use crate::{AnyJournal, PgJournal, PgOptions, SqliteJournal, SqliteOptions};

/// A fresh journal and what to remove after the test.
pub struct Scratch {
    /// The journal.
    pub journal: AnyJournal,
    place: Place,
}

enum Place {
    Dir(std::path::PathBuf),
    Schema { url: String, name: String },
}

impl Scratch {
    /// A new SQLite journal with `shards` shards in a directory of its own.
    pub async fn sqlite(shards: u32) -> Self {
        let dir = std::env::temp_dir().join(format!("entlog-scratch-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let j = SqliteJournal::open(SqliteOptions::new(dir.join("j.db")).shard_count(shards))
            .await
            .expect("scratch SQLite journal");
        Scratch {
            journal: j.into(),
            place: Place::Dir(dir),
        }
    }

    /// A new PostgreSQL journal with `shards` shards in a schema of its own on the test
    /// server ([`database_url`](crate::testing::database_url)).
    pub async fn postgres(shards: u32) -> Self {
        let url = super::database_url().await;
        let name = format!("t_{}", Uuid::now_v7().simple());
        let j = PgJournal::open(
            PgOptions::new(&url)
                .schema(&name)
                .shard_count(shards)
                .max_connections(4),
        )
        .await
        .expect("scratch PostgreSQL journal");
        Scratch {
            journal: j.into(),
            place: Place::Schema { url, name },
        }
    }

    /// Closes the journal and removes its file or schema.
    pub async fn remove(self) {
        self.journal.close().await;
        match self.place {
            Place::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Place::Schema { url, name } => {
                let mut admin = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("test server");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    r#"DROP SCHEMA "{name}" CASCADE"#
                )))
                .execute(&mut admin)
                .await
                .expect("drop scratch schema");
            }
        }
    }
}
