//! The journal's single statements whose SQL is the same on both backends: reads of a
//! shard, of an entity's events, of a reply, a snapshot, a cursor, a head and the next
//! due time, the cancelling of a scheduled message, and the reading of the stored
//! metadata when a journal is opened.
//!
//! Each is one SQL text with `$n` placeholders, which both drivers bind by number, run on
//! the [`Pool`] the backend passes: on PostgreSQL its pool of single statements, on
//! SQLite its readers (or, to cancel, its writer). `same_on_both.rs` wires them into both
//! backends' `impl Journal`; the backends keep what differs: appends, commits,
//! promotion, locks, and the mailbox read.

use sqlx::Row as _;
use uuid::Uuid;

use crate::envelope::{EntityKey, Entry, EntryKind};
use crate::error::{JournalError, Result};
use crate::meta::{APPLIED_MIGRATIONS, Meta, check_migrated, parse_meta};
use crate::pool::{Pool, on_pool};
use crate::records::{Snapshot, StoredReply};
use crate::rows::{entry_from_row, reply_from_row, snapshot_from_row};
use crate::shard::Shard;
use crate::time::Timestamp;

/// Up to `limit` entries of `shard` after offset `after`, of `kind` if given.
pub(crate) async fn read_shard(
    pool: Pool<'_>,
    shard: Shard,
    after: u64,
    limit: usize,
    kind: Option<EntryKind>,
) -> Result<Vec<Entry>> {
    // PostgreSQL must be told the type of a parameter it only sees compared with NULL.
    let sql = match pool {
        Pool::Postgres(_) => concat!(
            "SELECT ",
            entry_columns!(),
            r#" FROM journal
                WHERE shard = $1 AND "offset" > $2 AND ($4::SMALLINT IS NULL OR kind = $4)
                ORDER BY "offset" LIMIT $3"#
        ),
        Pool::Sqlite(_) => concat!(
            "SELECT ",
            entry_columns!(),
            r#" FROM journal
                WHERE shard = $1 AND "offset" > $2 AND ($4 IS NULL OR kind = $4)
                ORDER BY "offset" LIMIT $3"#
        ),
    };
    on_pool!(pool, p => {
        let rows = sqlx::query(sql)
            .bind(shard as i32)
            .bind(after as i64)
            .bind(limit as i64)
            .bind(kind.map(EntryKind::code))
            .fetch_all(p)
            .await?;
        rows.iter().map(entry_from_row).collect()
    })
}

/// Up to `limit` of `entity`'s events from seq `from_seq`.
pub(crate) async fn read_events(
    pool: Pool<'_>,
    entity: &EntityKey,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<Entry>> {
    on_pool!(pool, p => {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM journal
                WHERE kind = 2 AND entity_type = $1 AND entity_id = $2 AND seq >= $3
                ORDER BY seq LIMIT $4"
        ))
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .bind(from_seq as i64)
        .bind(limit as i64)
        .fetch_all(p)
        .await?;
        rows.iter().map(entry_from_row).collect()
    })
}

/// The stored reply to `message_id` of `entity`, verified.
pub(crate) async fn reply(
    pool: Pool<'_>,
    entity: &EntityKey,
    message_id: Uuid,
) -> Result<Option<StoredReply>> {
    on_pool!(pool, p => {
        let row = sqlx::query(
            r#"SELECT message_id, "offset", type_tag, schema_version, payload, crc, created_at, entity_type, entity_id
                 FROM replies WHERE entity_type = $1 AND entity_id = $2 AND message_id = $3"#,
        )
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .bind(message_id)
        .fetch_optional(p)
        .await?;
        row.as_ref().map(reply_from_row).transpose()
    })
}

/// `entity`'s snapshot if it passes its checksum and has `state_version`.
pub(crate) async fn load_snapshot(
    pool: Pool<'_>,
    entity: &EntityKey,
    state_version: u32,
) -> Result<Option<Snapshot>> {
    on_pool!(pool, p => {
        let row = sqlx::query(
            "SELECT seq, type_tag, state_version, payload, crc, created_at
               FROM snapshots WHERE entity_type = $1 AND entity_id = $2",
        )
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .fetch_optional(p)
        .await?;
        Ok(match row {
            Some(row) => snapshot_from_row(&row, entity, state_version)?,
            None => None,
        })
    })
}

/// `consumer`'s cursor on `shard` (0 when it has none).
pub(crate) async fn cursor(pool: Pool<'_>, consumer: &str, shard: Shard) -> Result<u64> {
    on_pool!(pool, p => {
        let offset: Option<i64> = sqlx::query_scalar(
            r#"SELECT "offset" FROM cursors WHERE consumer = $1 AND shard = $2"#,
        )
        .bind(consumer)
        .bind(shard as i32)
        .fetch_optional(p)
        .await?;
        Ok(offset.unwrap_or(0) as u64)
    })
}

/// The highest committed offset of `shard`.
pub(crate) async fn head(pool: Pool<'_>, shard: Shard) -> Result<u64> {
    on_pool!(pool, p => {
        let head: i64 = sqlx::query_scalar("SELECT head FROM shards WHERE shard = $1")
            .bind(shard as i32)
            .fetch_one(p)
            .await?;
        Ok(head as u64)
    })
}

/// The earliest due time of each of `shards`, in their order (`None`: nothing scheduled).
pub(crate) async fn next_due_many(
    pool: Pool<'_>,
    shards: &[Shard],
) -> Result<Vec<Option<Timestamp>>> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i32, i64)> = match pool {
        // One statement text whatever the number of shards.
        Pool::Postgres(p) => {
            let list: Vec<i32> = shards.iter().map(|&s| s as i32).collect();
            sqlx::query_as(
                "SELECT shard, min(deliver_at) FROM scheduled WHERE shard = ANY($1) GROUP BY shard",
            )
            .bind(list)
            .fetch_all(p)
            .await?
        }
        Pool::Sqlite(p) => {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT shard, min(deliver_at) FROM scheduled WHERE shard IN (",
            );
            let mut list = q.separated(", ");
            for &s in shards {
                list.push_bind(s as i32);
            }
            q.push(") GROUP BY shard");
            q.build_query_as().fetch_all(p).await?
        }
    };
    let due: std::collections::HashMap<i32, i64> = rows.into_iter().collect();
    Ok(shards
        .iter()
        .map(|&s| due.get(&(s as i32)).map(|&at| Timestamp(at)))
        .collect())
}

/// Deletes `entity`'s scheduled message `message_id`; whether it was there. Each
/// backend's `cancel_scheduled` says why it cannot race promotion.
pub(crate) async fn cancel_scheduled(
    pool: Pool<'_>,
    entity: &EntityKey,
    message_id: Uuid,
) -> Result<bool> {
    on_pool!(pool, p => {
        let removed = sqlx::query(
            "DELETE FROM scheduled WHERE entity_type = $1 AND entity_id = $2 AND message_id = $3",
        )
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .bind(message_id)
        .execute(p)
        .await?
        .rows_affected();
        Ok(removed > 0)
    })
}

/// The stored metadata; `None` when the journal has no `meta` table yet.
pub(crate) async fn meta(pool: Pool<'_>) -> Result<Option<Meta>> {
    let exists = match pool {
        Pool::Postgres(p) => {
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('meta')::TEXT")
                .fetch_one(p)
                .await?;
            exists.is_some()
        }
        Pool::Sqlite(p) => {
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            )
            .fetch_optional(p)
            .await?;
            exists.is_some()
        }
    };
    if !exists {
        return Ok(None);
    }
    on_pool!(pool, p => {
        let rows = sqlx::query("SELECT key, value FROM meta")
            .fetch_all(p)
            .await?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<Vec<_>>>()?;
        parse_meta(&pairs)
    })
}

/// The metadata of a journal that must already exist at `location` with every migration
/// of `migrator` applied; otherwise `NotFound` or the migration error, with `pool`
/// closed.
pub(crate) async fn existing_meta(
    pool: Pool<'_>,
    location: &str,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Meta> {
    let Some(meta) = meta(pool).await? else {
        on_pool!(pool, p => p.close().await);
        return Err(JournalError::NotFound {
            location: location.to_owned(),
        });
    };
    let applied: i64 =
        on_pool!(pool, p => sqlx::query_scalar(APPLIED_MIGRATIONS).fetch_one(p).await?);
    if let Err(e) = check_migrated(location, applied, migrator) {
        on_pool!(pool, p => p.close().await);
        return Err(e);
    }
    Ok(meta)
}
