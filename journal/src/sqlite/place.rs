//! The SQLite write path: offsets, dedup, scheduling and fencing, in the writer's
//! transaction. The single writer connection is the per-shard lock: nothing else can
//! take an offset between reading a head and committing it.

use std::collections::{HashMap, HashSet};

use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use crate::columns::{EntryColumns, Placed, ReplyColumns};
use crate::error::{JournalError, Result};
use crate::ownership::Lease;
use crate::shard::Shard;
use crate::time::Timestamp;

/// Rows per multi-row statement: 14 columns × 500 stays far below SQLite's 32,766
/// bound parameters.
const CHUNK: usize = 500;

type Key = (String, String, Uuid);

/// How `place` looks for duplicates of the messages it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dedup {
    /// Look each message id up before inserting (always correct).
    Lookup,
    /// Insert assuming there is none, and report `None` if the unique index says
    /// otherwise: the caller rolls back and places again with `Lookup`. Saves a lookup
    /// per message on the common path, where sends are new.
    Optimistic,
}

/// Appends entries like PostgreSQL's `append_entries`: returns a placement per row, or
/// `None` when an optimistic placement met a duplicate (the transaction must be rolled
/// back and the call repeated with [`Dedup::Lookup`]). A lease in `fences` that is not
/// its shard's current epoch fails the call with [`JournalError::Fenced`] before anything
/// is written.
pub(super) async fn place(
    conn: &mut SqliteConnection,
    cols: &EntryColumns,
    now: Timestamp,
    fences: &[Lease],
    dedup: Dedup,
) -> Result<Option<Vec<Placed>>> {
    let mut shards: Vec<i32> = cols.shard.clone();
    shards.extend(fences.iter().map(|l| l.shard as i32));
    shards.sort_unstable();
    shards.dedup();
    // The heads, the epochs to fence with and whether anything is scheduled, in one
    // statement: each statement is a round trip to the writer's thread.
    let mut heads = HashMap::with_capacity(shards.len());
    let mut any_scheduled = false;
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT shard, head, epoch, EXISTS (SELECT 1 FROM scheduled) FROM shards WHERE shard IN (",
    );
    let mut list = q.separated(", ");
    for &s in &shards {
        list.push_bind(s);
    }
    q.push(")");
    for row in q.build().fetch_all(&mut *conn).await? {
        heads.insert(
            row.try_get::<i32, _>(0)?,
            (row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?),
        );
        any_scheduled = row.try_get(3)?;
    }
    for lease in fences {
        let epoch = heads.get(&(lease.shard as i32)).map(|h| h.1);
        if epoch != Some(lease.epoch as i64) {
            return Err(JournalError::Fenced {
                shard: lease.shard,
                epoch: lease.epoch,
            });
        }
    }

    let messages: Vec<usize> = (0..cols.len()).filter(|&i| cols.kind[i] == 1).collect();
    let all_messages = messages.clone();
    let optimistic = dedup == Dedup::Optimistic && !messages.is_empty();
    // Optimistically, only messages to be scheduled are looked up: they do not go
    // through the journal's unique index, which catches the others.
    let lookups: Vec<usize> = if optimistic {
        messages
            .iter()
            .copied()
            .filter(|&i| cols.deliver_at[i].is_some_and(|t| t > now.as_micros()))
            .collect()
    } else {
        messages
    };
    let journaled = find_journaled(conn, cols, &lookups).await?;
    let parked = if any_scheduled {
        find_scheduled(conn, cols, &all_messages).await?
    } else {
        HashSet::new()
    };

    let mut placed = Vec::with_capacity(cols.len());
    let mut fresh = Vec::new();
    let mut later = Vec::new();
    for i in 0..cols.len() {
        let key = key(cols, i);
        if cols.kind[i] == 1 {
            if let Some(&offset) = journaled.get(&key) {
                placed.push(Placed {
                    offset: Some(offset),
                    duplicate: true,
                    scheduled: false,
                });
                continue;
            }
            if parked.contains(&key) {
                placed.push(Placed {
                    offset: None,
                    duplicate: true,
                    scheduled: false,
                });
                continue;
            }
            if cols.deliver_at[i].is_some_and(|t| t > now.as_micros()) {
                placed.push(Placed {
                    offset: None,
                    duplicate: false,
                    scheduled: true,
                });
                later.push(i);
                continue;
            }
        }
        let head = heads.entry(cols.shard[i]).or_insert((0, 0));
        head.0 += 1;
        placed.push(Placed {
            offset: Some(head.0 as u64),
            duplicate: false,
            scheduled: false,
        });
        fresh.push(i);
    }

    let inserted = insert_journal(conn, cols, &fresh, &placed, optimistic).await?;
    if inserted < fresh.len() as u64 {
        return Ok(None);
    }
    insert_scheduled(conn, cols, &later).await?;
    let touched: HashSet<i32> = fresh.iter().map(|&i| cols.shard[i]).collect();
    if !touched.is_empty() {
        // One statement for every touched head.
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE shards SET head = CASE shard");
        for &s in &touched {
            q.push(" WHEN ")
                .push_bind(s)
                .push(" THEN ")
                .push_bind(heads.get(&s).map(|h| h.0).unwrap_or(0));
        }
        q.push(" END WHERE shard IN (");
        let mut list = q.separated(", ");
        for &s in &touched {
            list.push_bind(s);
        }
        q.push(")");
        q.build().execute(&mut *conn).await?;
    }
    Ok(Some(placed))
}

fn key(cols: &EntryColumns, i: usize) -> Key {
    (
        cols.entity_type[i].clone(),
        cols.entity_id[i].clone(),
        cols.message_id[i],
    )
}

/// Offsets of the messages among `rows` that are already journaled.
async fn find_journaled(
    conn: &mut SqliteConnection,
    cols: &EntryColumns,
    rows: &[usize],
) -> Result<HashMap<Key, u64>> {
    let mut found = HashMap::new();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            r#"SELECT j.entity_type, j.entity_id, j.message_id, j."offset" FROM (VALUES "#,
        );
        push_keys(&mut q, cols, chunk);
        q.push(
            ") AS v JOIN journal j ON j.kind = 1 AND j.entity_type = v.column1 \
             AND j.entity_id = v.column2 AND j.message_id = v.column3",
        );
        for row in q.build().fetch_all(&mut *conn).await? {
            found.insert(
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                row.try_get::<i64, _>(3)? as u64,
            );
        }
    }
    Ok(found)
}

/// The messages among `rows` that are already scheduled.
async fn find_scheduled(
    conn: &mut SqliteConnection,
    cols: &EntryColumns,
    rows: &[usize],
) -> Result<HashSet<Key>> {
    let mut found = HashSet::new();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT s.entity_type, s.entity_id, s.message_id FROM (VALUES ",
        );
        push_keys(&mut q, cols, chunk);
        q.push(
            ") AS v JOIN scheduled s ON s.entity_type = v.column1 \
             AND s.entity_id = v.column2 AND s.message_id = v.column3",
        );
        for row in q.build().fetch_all(&mut *conn).await? {
            found.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
    }
    Ok(found)
}

fn push_keys(q: &mut QueryBuilder<Sqlite>, cols: &EntryColumns, rows: &[usize]) {
    let mut sep = q.separated(", ");
    for &i in rows {
        sep.push("(");
        sep.push_bind_unseparated(cols.entity_type[i].clone());
        sep.push_unseparated(", ");
        sep.push_bind_unseparated(cols.entity_id[i].clone());
        sep.push_unseparated(", ");
        sep.push_bind_unseparated(cols.message_id[i]);
        sep.push_unseparated(")");
    }
}

/// Inserts journal rows; with `skip_conflicts`, rows that hit a unique index are skipped
/// instead of failing. Returns how many were inserted.
async fn insert_journal(
    conn: &mut SqliteConnection,
    cols: &EntryColumns,
    rows: &[usize],
    placed: &[Placed],
    skip_conflicts: bool,
) -> Result<u64> {
    let mut inserted = 0;
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            r#"INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
               type_tag, schema_version, payload, crc, deliver_at, created_at, headers) "#,
        );
        q.push_values(chunk, |mut b, &i| {
            b.push_bind(cols.shard[i])
                .push_bind(placed[i].offset.map(|o| o as i64))
                .push_bind(cols.kind[i])
                .push_bind(cols.entity_type[i].clone())
                .push_bind(cols.entity_id[i].clone())
                .push_bind(cols.seq[i]);
            push_message(&mut b, cols, i);
        });
        if skip_conflicts {
            q.push(" ON CONFLICT DO NOTHING");
        }
        inserted += q.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}

/// Binds row `i`'s columns from `message_id` to `headers`, in that order: the end of both
/// a journal row and a scheduled row.
fn push_message(b: &mut Separated<'_, Sqlite, &'static str>, cols: &EntryColumns, i: usize) {
    b.push_bind(cols.message_id[i])
        .push_bind(cols.type_tag[i].clone())
        .push_bind(cols.schema_version[i])
        .push_bind(cols.payload[i].clone())
        .push_bind(cols.crc[i])
        .push_bind(cols.deliver_at[i])
        .push_bind(cols.created_at[i])
        .push_bind(cols.headers[i].clone());
}

async fn insert_scheduled(
    conn: &mut SqliteConnection,
    cols: &EntryColumns,
    rows: &[usize],
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO scheduled (shard, entity_type, entity_id, message_id, type_tag,
             schema_version, payload, crc, deliver_at, created_at, headers) ",
        );
        q.push_values(chunk, |mut b, &i| {
            b.push_bind(cols.shard[i])
                .push_bind(cols.entity_type[i].clone())
                .push_bind(cols.entity_id[i].clone());
            push_message(&mut b, cols, i);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts a batch's replies; an existing reply is a unique violation (the caller maps
/// it to `SeqConflict`).
/// Inserts replies; `shards[i]` is the shard of reply `i`.
pub(super) async fn insert_replies(
    conn: &mut SqliteConnection,
    shards: &[Shard],
    r: &ReplyColumns,
    now: Timestamp,
) -> std::result::Result<(), sqlx::Error> {
    let rows: Vec<usize> = (0..r.message_id.len()).collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            r#"INSERT INTO replies (entity_type, entity_id, message_id, shard, "offset", type_tag,
               schema_version, payload, crc, created_at) "#,
        );
        q.push_values(chunk, |mut b, &i| {
            b.push_bind(r.entity_type[i].clone())
                .push_bind(r.entity_id[i].clone())
                .push_bind(r.message_id[i])
                .push_bind(shards.get(i).copied().unwrap_or_default() as i64)
                .push_bind(r.offset[i])
                .push_bind(r.type_tag[i].clone())
                .push_bind(r.schema_version[i])
                .push_bind(r.payload[i].clone())
                .push_bind(r.crc[i])
                .push_bind(now.as_micros());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Moves the shard's due scheduled messages into its partition, in due order.
pub(super) async fn promote_due(
    conn: &mut SqliteConnection,
    shard: Shard,
    now: Timestamp,
) -> Result<usize> {
    let head: i64 = sqlx::query_scalar("SELECT head FROM shards WHERE shard = ?1")
        .bind(shard as i64)
        .fetch_one(&mut *conn)
        .await?;
    let moved = sqlx::query(
        r#"INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
               type_tag, schema_version, payload, crc, deliver_at, created_at, headers)
           SELECT shard, ?3 + row_number() OVER (ORDER BY deliver_at, created_at, message_id), 1,
                  entity_type, entity_id, NULL, message_id, type_tag, schema_version, payload,
                  crc, deliver_at, created_at, headers
             FROM scheduled WHERE shard = ?1 AND deliver_at <= ?2"#,
    )
    .bind(shard as i64)
    .bind(now.as_micros())
    .bind(head)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved > 0 {
        sqlx::query("DELETE FROM scheduled WHERE shard = ?1 AND deliver_at <= ?2")
            .bind(shard as i64)
            .bind(now.as_micros())
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE shards SET head = head + ?2 WHERE shard = ?1")
            .bind(shard as i64)
            .bind(moved as i64)
            .execute(&mut *conn)
            .await?;
    }
    Ok(moved as usize)
}
