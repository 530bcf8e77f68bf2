//! Opening a SQLite journal: options, the owner lock, migrations, and the stored metadata.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::owner::{OwnerLock, OwnerProbe};
use super::{Inner, SqliteJournal};
use crate::common::Common;
use crate::envelope::DEFAULT_MAX_PAYLOAD_BYTES;
use crate::error::{JournalError, Result};
use crate::meta::{FORMAT_VERSION, Meta, adopt_shape, check_meta};
use crate::pool::Pool;
use crate::read;
use crate::shard_groups::{ShardGroup, ShardLayout, ShardMap};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// What survives a crash once a write returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: every commit is on disk before it returns. Survives process
    /// crashes and power loss. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: commits survive a crash of the process, but the last ones
    /// may be lost if the machine loses power. Several times faster for small commits.
    Normal,
}

/// What a tool opening an existing SQLite journal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Read only, without the owner lock: works beside the process that owns the file.
    ReadOnly,
    /// Read and write as the file's owner (the owning process must be stopped).
    ReadWrite,
}

/// How to open a SQLite journal. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file; created if missing.
    pub path: PathBuf,
    /// Number of shards; fixed when the journal is created, checked on every later open.
    /// Default 0: an existing journal's count, [`SqliteOptions::NEW_SHARD_COUNT`] for a new
    /// one.
    pub shard_count: u32,
    /// Named shard groups at the end of the shards (see [`crate::shard_groups`]); fixed
    /// with the shard count. Default none. With none configured and a shard count of 0, an
    /// existing journal's groups are adopted.
    pub shard_groups: Vec<ShardGroup>,
    /// Largest accepted payload in bytes. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// What survives a crash. Default [`Durability::Full`].
    pub durability: Durability,
    /// Reader connections. Default 4.
    pub readers: u32,
}

impl SqliteOptions {
    /// Shards of a journal created with a shard count of 0. Fewer than on PostgreSQL: one
    /// process owns every shard of a SQLite journal, so shards buy it little, while each
    /// shard a transaction writes to costs its own pages (see the README's "Fewer shards
    /// on SQLite").
    pub const NEW_SHARD_COUNT: u32 = 8;

    /// Options for the file at `path` with every other field at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            shard_count: 0,
            shard_groups: Vec::new(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            durability: Durability::Full,
            readers: 4,
        }
    }

    crate::meta::shape_setters!();

    /// Sets the durability level.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
}

pub(super) async fn open(mut options: SqliteOptions) -> Result<SqliteJournal> {
    if options.shard_count > i32::MAX as u32 {
        return Err(JournalError::Config(format!(
            "shard count {} is out of range",
            options.shard_count
        )));
    }
    let path = options.path.clone();
    let owner = tokio::task::spawn_blocking(move || OwnerLock::take(&path))
        .await
        .map_err(|e| JournalError::Internal(format!("owner-lock task failed: {e}")))??;
    refuse_foreign(&options.path).await?;
    let connect = SqliteConnectOptions::new()
        .filename(&options.path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match options.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_secs(10))
        // Statement journals (SQLite's undo copy for a multi-row statement that may fail
        // midway) and sorts stay in memory: on a file they cost a create, writes and an
        // unlink per statement, a third of an insert's time.
        .pragma("temp_store", "memory")
        // Checkpoints run beside the writer (see `checkpoint.rs`).
        .pragma(
            "wal_autocheckpoint",
            super::checkpoint::BACKSTOP_PAGES.to_string(),
        );
    let writer = SqlitePoolOptions::new()
        .after_release(|conn, _| Box::pin(released_outside_transaction(conn)))
        // A local file connection does not go stale: a ping per acquire is a wasted
        // round trip to the connection's thread on every write.
        .test_before_acquire(false)
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(connect.clone())
        .await?;

    let existing = read::meta(Pool::Sqlite(&writer)).await?;
    adopt_shape(
        &mut options.shard_count,
        &mut options.shard_groups,
        existing.as_ref(),
        SqliteOptions::NEW_SHARD_COUNT,
    );
    let layout = ShardLayout::new(options.shard_count, &options.shard_groups)?;
    if let Some(meta) = &existing {
        check_meta(meta, options.shard_count, &options.shard_groups)?;
    }
    MIGRATOR.run(&writer).await?;
    let meta = match existing {
        Some(meta) => meta,
        None => initialise(&writer, layout).await?,
    };
    check_meta(&meta, options.shard_count, &options.shard_groups)?;
    let shard_map = Arc::new(ShardMap::new(meta.layout, &meta.types)?);

    // This process owns the file: registrations left by an earlier process are stale.
    sqlx::query("DELETE FROM runners").execute(&writer).await?;
    sqlx::query("UPDATE shards SET owner = NULL")
        .execute(&writer)
        .await?;

    let reader = SqlitePoolOptions::new()
        .after_release(|conn, _| Box::pin(released_outside_transaction(conn)))
        .test_before_acquire(false)
        .max_connections(options.readers.max(1))
        .connect_with(connect.create_if_missing(false))
        .await?;
    let journal = SqliteJournal {
        inner: Arc::new(Inner {
            writer,
            reader,
            common: Common::new(shard_map, options.max_payload_bytes),
            live: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            probe: OwnerProbe::new(options.path.clone()),
            options,
            owner: std::sync::Mutex::new(Some(owner)),
        }),
    };
    super::checkpoint::start(Arc::downgrade(&journal.inner));
    Ok(journal)
}

/// Opens a journal file that must already exist and be fully migrated, with its stored
/// shard count (ignoring `options.shard_count`).
pub(super) async fn open_existing(
    mut options: SqliteOptions,
    access: Access,
) -> Result<SqliteJournal> {
    let location = options.path.display().to_string();
    match std::fs::metadata(&options.path) {
        Ok(meta) if meta.is_file() => super::owner::one_name(&options.path, &meta)?,
        _ => return Err(JournalError::NotFound { location }),
    }
    let connect = SqliteConnectOptions::new()
        .filename(&options.path)
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    let probe = SqlitePoolOptions::new()
        .after_release(|conn, _| Box::pin(released_outside_transaction(conn)))
        .max_connections(options.readers.max(1))
        .connect_with(connect)
        .await?;
    let meta = read::existing_meta(Pool::Sqlite(&probe), &location, &MIGRATOR).await?;
    options.shard_count = meta.shard_count;
    options.shard_groups = meta.layout.named();
    if access == Access::ReadWrite {
        probe.close().await;
        return open(options).await;
    }
    Ok(SqliteJournal {
        inner: Arc::new(Inner {
            writer: probe.clone(),
            reader: probe,
            common: Common::new(
                Arc::new(ShardMap::new(meta.layout, &meta.types)?),
                options.max_payload_bytes,
            ),
            live: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            probe: OwnerProbe::new(options.path.clone()),
            options,
            owner: std::sync::Mutex::new(None),
        }),
    })
}

/// Refuses a non-empty file that is not an entlog journal — a SQLite database of other
/// tables, or not SQLite at all — before anything (even the journal mode) is changed in
/// it. Looks through a read-only connection with SQLite's defaults.
async fn refuse_foreign(path: &std::path::Path) -> Result<()> {
    let len = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
    if len == 0 {
        return Ok(());
    }
    let location = path.display().to_string();
    let foreign = |found: String| JournalError::NotAJournal {
        location: location.clone(),
        found,
    };
    let look = async {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(
            &SqliteConnectOptions::new().filename(path).read_only(true),
        )
        .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        sqlx::Connection::close(conn).await?;
        Ok::<_, sqlx::Error>(tables)
    };
    match look.await {
        Ok(tables) if tables.is_empty() || tables.iter().any(|t| t == "meta") => Ok(()),
        Ok(tables) => Err(foreign(format!(
            "tables {}{}",
            tables
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if tables.len() > 5 { ", …" } else { "" }
        ))),
        // SQLITE_NOTADB (26): not a database file.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("26") => {
            Err(foreign("not a SQLite database".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `after_release`: a connection that comes back inside a transaction is closed, never
/// reused (a cancelled `begin()` must not leave an open transaction under the next user's
/// writes; see the PostgreSQL pool for the bug this guards against).
///
/// Read locally, no statement: sqlx's SQLite worker tracks every transaction it begins,
/// also across cancellation (it rolls back a `BEGIN` whose caller went away). Only when
/// that count is not zero is the worker asked to finish its queued commands — a dropped
/// transaction queues its `ROLLBACK` there — before looking again.
async fn released_outside_transaction(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<bool> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    let outside = !conn.is_in_transaction();
    if !outside {
        tracing::warn!("a pooled SQLite connection came back inside a transaction; closing it");
    }
    Ok(outside)
}

async fn initialise(writer: &SqlitePool, layout: ShardLayout) -> Result<Meta> {
    let shard_count = layout.shard_count();
    let mut tx = writer.begin().await?;
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('format_version', ?1), ('shard_count', ?2), ('lock_namespace', '0'),
                                             ('shard_groups', ?3)",
    )
    .bind(FORMAT_VERSION.to_string())
    .bind(shard_count.to_string())
    .bind(layout.encode())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < ?1)
         INSERT INTO shards (shard) SELECT n FROM s",
    )
    .bind(i64::from(shard_count))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Meta {
        format_version: FORMAT_VERSION,
        shard_count,
        lock_namespace: 0,
        layout,
        types: Vec::new(),
    })
}
