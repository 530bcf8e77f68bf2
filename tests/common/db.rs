//! A journal of its own for a test that runs the CLI as a process (`tests/cli/`,
//! `tests/dashboard.rs`), and a projection that always fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use entlog::journal::{Access, SqliteOptions};
use entlog::{AnyJournal, Cluster, ClusterBuilder, Config, PgJournal, PgOptions, SqliteJournal};
use serde_json::Value;
use uuid::Uuid;

use super::{block_on, database_url};

/// A journal for one test: a SQLite file in a directory of its own, or a PostgreSQL
/// schema of its own; removed on drop. The directory and the schema are named after the
/// test target (`entlog-cli-…`, `cli_…`), so that a leftover one says where it came from.
pub struct Db {
    /// The working directory of the commands run; holds the SQLite file.
    pub dir: PathBuf,
    /// `--db`.
    pub db: String,
    /// `--schema` (PostgreSQL).
    pub schema: String,
    pub postgres: bool,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!(
            "entlog-{}-{}",
            env!("CARGO_CRATE_NAME"),
            Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Db {
            db: dir.join("journal.db").display().to_string(),
            dir,
            schema: "entlog".into(),
            postgres: false,
        }
    }

    pub fn postgres() -> Db {
        let mut db = Db::sqlite();
        db.db = database_url();
        db.schema = format!("{}_{}", env!("CARGO_CRATE_NAME"), Uuid::now_v7().simple());
        db.postgres = true;
        db
    }

    /// `exe` with `args`, `--db`/`--schema` given through the environment, run in the
    /// test's directory with no stdin.
    pub fn command(&self, exe: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(exe);
        c.args(args)
            .current_dir(&self.dir)
            .env("ENTLOG_DB", &self.db)
            .env("ENTLOG_SCHEMA", &self.schema)
            .stdin(Stdio::null());
        c
    }

    /// Runs `exe` with `--db`/`--schema` (through the environment) and `args`.
    pub fn run(&self, exe: &Path, args: &[&str]) -> Output {
        self.command(exe, args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, exe: &Path, args: &[&str]) -> String {
        let out = self.run(exe, args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}\n{}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit status 1 with `needle` in the error.
    pub fn fails(&self, exe: &Path, args: &[&str], needle: &str) {
        let out = self.run(exe, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    /// Runs with `--json` and expects success (as [`Db::ok`]); returns what it printed.
    pub fn json_ok(&self, exe: &Path, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(exe, &all)).unwrap()
    }

    /// Runs with `--json`; returns what it printed, whatever its exit status (`status`
    /// exits 1 when something is stuck and still prints its report).
    pub fn json_any_status(&self, exe: &Path, args: &[&str]) -> Value {
        let out = self.command(exe, args).arg("--json").output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// The journal, opened read-only on SQLite.
    pub async fn journal(&self) -> AnyJournal {
        if self.postgres {
            PgJournal::open_existing(PgOptions::new(&self.db).schema(&self.schema))
                .await
                .unwrap()
                .into()
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&self.db), Access::ReadOnly)
                .await
                .unwrap()
                .into()
        }
    }

    /// The journal, opened read-write on SQLite too.
    pub async fn writable_journal(&self) -> AnyJournal {
        if self.postgres {
            PgJournal::open_existing(PgOptions::new(&self.db).schema(&self.schema))
                .await
                .unwrap()
                .into()
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&self.db), Access::ReadWrite)
                .await
                .unwrap()
                .into()
        }
    }

    /// A cluster on this journal with 4 shards and the default config otherwise.
    pub fn cluster(&self) -> ClusterBuilder {
        self.cluster_with(Config::default().shard_count(4))
    }

    /// A cluster on this journal with `config`.
    pub fn cluster_with(&self, config: Config) -> ClusterBuilder {
        let builder = if self.postgres {
            Cluster::builder().postgres_schema(&self.db, &self.schema)
        } else {
            Cluster::builder().sqlite(&self.db)
        };
        builder.config(config)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.postgres {
            let (url, schema) = (self.db.clone(), self.schema.clone());
            block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        }
    }
}

/// A projection that fails on every event ("always fails"): it stops at the first event
/// of each shard, and `status` and the dashboard say where.
pub struct Broken;

impl entlog::projections::Projection for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn wants(&self, _: &str) -> bool {
        true
    }
    async fn apply(
        &self,
        _: &mut entlog::journal::AnyTx,
        _: &[entlog::Entry],
    ) -> Result<(), entlog::projections::ProjectionError> {
        Err(entlog::projections::ProjectionError::Handler(
            "always fails".into(),
        ))
    }
    async fn reset(
        &self,
        _: &mut entlog::journal::AnyTx,
    ) -> Result<(), entlog::projections::ProjectionError> {
        Ok(())
    }
}
