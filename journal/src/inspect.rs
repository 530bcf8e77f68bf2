//! The journal's bookkeeping as tools see it: shards, runners, cursors, one entity's
//! records, failure replies and damaged entries (retention is in `prune.rs`).
//!
//! These reads serve people and scripts (the CLI), not the message path: they favour
//! completeness over speed, and every record they return has passed its checksum (or,
//! for snapshots, says whether it did).

use sqlx::Row;
use uuid::Uuid;

use crate::any::AnyJournal;
use crate::damaged::DamagedEntry;
use crate::envelope::{CrcDomain, EntityKey, Entry, EntryKind, Payload, checksum, entry_checksum};
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::ownership::RunnerInfo;
use crate::pool::{Pool, on_pool};
use crate::records::StoredReply;
use crate::rows::{entry_from_row, runner_from_row, verified_reply};
use crate::shard::Shard;
use crate::time::Timestamp;

/// One shard's bookkeeping row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard.
    pub shard: Shard,
    /// Highest committed offset.
    pub head: u64,
    /// Times the shard was acquired (the fencing epoch).
    pub epoch: u64,
    /// The runner that last acquired it and has not released it.
    pub owner: Option<String>,
    /// Messages held in the shard's schedule, not yet due.
    pub scheduled: u64,
    /// Why its owner's reads or commits fail, and since when, while they do.
    pub trouble: Option<(String, Timestamp)>,
}

/// A registered runner and whether it is live right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRow {
    /// Id, session start and last heartbeat.
    pub info: RunnerInfo,
    /// Whether its lock session is alive (on SQLite: whether a process holds the file).
    pub live: bool,
}

/// A consumer's cursor on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorInfo {
    /// The consumer (`mailbox`, `projection:<name>`, …).
    pub consumer: String,
    /// The shard.
    pub shard: Shard,
    /// The last offset the consumer is done with.
    pub offset: u64,
}

/// A message held in a shard's schedule until it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledMessage {
    /// The shard it will enter.
    pub shard: Shard,
    /// The receiving entity.
    pub entity: EntityKey,
    /// The message id.
    pub message_id: Uuid,
    /// The command.
    pub payload: Payload,
    /// When it is due.
    pub deliver_at: Timestamp,
    /// When it was sent.
    pub created_at: Timestamp,
    /// The headers it was sent with.
    pub headers: crate::Headers,
}

/// An entity's stored snapshot, whatever its version, with its checksum verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Seq of the last event folded into the state.
    pub seq: u64,
    /// The state (its `version` is the state schema version it was written with).
    pub state: Payload,
    /// When it was saved.
    pub created_at: Timestamp,
    /// Whether it passes its checksum (a failing one is ignored on activation).
    pub checksum_ok: bool,
}

/// Everything the journal holds about one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityRecords {
    /// Its messages and events, in offset order.
    pub entries: Vec<Entry>,
    /// Its messages not yet due.
    pub scheduled: Vec<ScheduledMessage>,
    /// Replies to its processed messages, in offset order.
    pub replies: Vec<StoredReply>,
    /// Its snapshot, if one was saved.
    pub snapshot: Option<StoredSnapshot>,
}

/// A page of an entity's history, from [`AnyJournal::entity_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityPage {
    /// The page's messages and events (in offset order) with their replies, and the
    /// entity's scheduled messages and snapshot.
    pub records: EntityRecords,
    /// Whether older messages or events exist before the page.
    pub more_before: bool,
}

/// Entry columns, cast so that both backends decode them into the same Rust types.
macro_rules! cast_entry_columns {
    () => {
        r#"CAST(shard AS BIGINT) AS shard, "offset", CAST(kind AS SMALLINT) AS kind, entity_type, entity_id, seq,
           message_id, type_tag, CAST(schema_version AS BIGINT) AS schema_version, payload, crc, deliver_at, created_at, headers"#
    };
}

impl AnyJournal {
    /// The pool these reads run on: PostgreSQL's main pool, SQLite's readers. Their SQL
    /// uses `$n` placeholders, which both accept, so each body is one source for both
    /// (see [`on_pool!`]).
    fn inspect_pool(&self) -> Pool<'_> {
        match self {
            AnyJournal::Postgres(j) => Pool::Postgres(j.pool()),
            AnyJournal::Sqlite(j) => Pool::Sqlite(j.reader()),
        }
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn version_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl AnyJournal {
    /// Every shard's head, epoch, owner and scheduled backlog.
    pub async fn shards(&self) -> Result<Vec<ShardInfo>> {
        on_pool!(self.inspect_pool(), pool => {
            let rows = sqlx::query(
                "SELECT CAST(s.shard AS BIGINT), s.head, s.epoch, s.owner,
                        (SELECT count(*) FROM scheduled d WHERE d.shard = s.shard),
                        s.trouble, s.trouble_since
                   FROM shards s ORDER BY s.shard",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(ShardInfo {
                        shard: Shard::try_from(r.try_get::<i64, _>(0)?).unwrap_or(Shard::MAX),
                        head: u64_of(r.try_get(1)?),
                        epoch: u64_of(r.try_get(2)?),
                        owner: r.try_get(3)?,
                        scheduled: u64_of(r.try_get(4)?),
                        trouble: match (r.try_get::<Option<String>, _>(5)?, r.try_get::<Option<i64>, _>(6)?) {
                            (Some(cause), Some(since)) => Some((cause, Timestamp(since))),
                            _ => None,
                        },
                    })
                })
                .collect()
        })
    }

    /// Messages of a shard past `offset` (a consumer's backlog).
    pub async fn messages_after(&self, shard: Shard, offset: u64) -> Result<u64> {
        on_pool!(self.inspect_pool(), pool => {
            let n: i64 = sqlx::query_scalar(
                r#"SELECT count(*) FROM journal WHERE shard = $1 AND "offset" > $2 AND kind = 1"#,
            )
            .bind(shard as i32)
            .bind(offset as i64)
            .fetch_one(pool)
            .await?;
            Ok(u64_of(n))
        })
    }

    /// When the oldest message after `offset` that has no reply yet became due (its
    /// `deliver_at` or, if later, when it was sent); `None` when every one is answered.
    pub async fn oldest_unanswered(&self, shard: Shard, offset: u64) -> Result<Option<Timestamp>> {
        on_pool!(self.inspect_pool(), pool => {
            let row: Option<(i64, Option<i64>)> = sqlx::query_as(
                r#"SELECT j.created_at, j.deliver_at FROM journal j
                    WHERE j.shard = $1 AND j."offset" > $2 AND j.kind = 1
                      AND NOT EXISTS (SELECT 1 FROM replies r
                                       WHERE r.entity_type = j.entity_type AND r.entity_id = j.entity_id
                                         AND r.message_id = j.message_id)
                    ORDER BY j."offset" LIMIT 1"#,
            )
            .bind(shard as i32)
            .bind(offset as i64)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|(created, due)| Timestamp(due.map_or(created, |d| d.max(created)))))
        })
    }

    /// Every registered runner, live or not, ordered by id.
    pub async fn runners(&self) -> Result<Vec<RunnerRow>> {
        let live: Vec<String> = match self {
            AnyJournal::Postgres(j) => j
                .live_runners()
                .await?
                .into_iter()
                .map(|r| r.runner)
                .collect(),
            AnyJournal::Sqlite(_) => Vec::new(),
        };
        let file_owned = match self {
            AnyJournal::Sqlite(j) => j.owner_alive().await?,
            AnyJournal::Postgres(_) => false,
        };
        on_pool!(self.inspect_pool(), pool => {
            let rows = sqlx::query(
                "SELECT runner, started_at, heartbeat_at, groups FROM runners ORDER BY runner",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let info = runner_from_row(r)?;
                    Ok(RunnerRow {
                        live: file_owned || live.contains(&info.runner),
                        info,
                    })
                })
                .collect()
        })
    }

    /// Every consumer's cursor on every shard it has one on.
    pub async fn cursors(&self) -> Result<Vec<CursorInfo>> {
        on_pool!(self.inspect_pool(), pool => {
            let rows = sqlx::query(
                r#"SELECT consumer, CAST(shard AS BIGINT), "offset" FROM cursors ORDER BY consumer, shard"#,
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(CursorInfo {
                        consumer: r.try_get(0)?,
                        shard: Shard::try_from(r.try_get::<i64, _>(1)?).unwrap_or(Shard::MAX),
                        offset: u64_of(r.try_get(2)?),
                    })
                })
                .collect()
        })
    }

    /// Everything stored about one entity: messages and events in offset order, messages
    /// still scheduled, replies, and the snapshot.
    pub async fn entity_records(&self, entity: &EntityKey) -> Result<EntityRecords> {
        Ok(self.entity_page(entity, None, u64::MAX).await?.records)
    }

    /// The last `limit` of an entity's messages and events before offset `before` (all of
    /// them when `None`), with those messages' replies, its scheduled messages and its
    /// snapshot. Pages back through a long history: pass the page's `first_offset` as the
    /// next `before`. Only the page's rows are decoded and sent.
    pub async fn entity_page(
        &self,
        entity: &EntityKey,
        before: Option<u64>,
        limit: u64,
    ) -> Result<EntityPage> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        // One more than asked: whether anything older is left.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let (t, id) = (entity.entity_type(), entity.entity_id());
        let shard = i32::try_from(self.shard_of(entity)).unwrap_or(i32::MAX);
        on_pool!(self.inspect_pool(), pool => {
            let mut entries = Vec::new();
            // One query per kind, so each uses its partial index; each kind's newest
            // `fetch`, of which the newest `fetch` of both are kept.
            for kind in [EntryKind::Message, EntryKind::Event] {
                // The offsets first (on SQLite the index holds them, the journal's key),
                // then only those rows: a long history is not read whole to sort it.
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    cast_entry_columns!(),
                    r#" FROM journal WHERE shard = $1 AND "offset" IN (
                          SELECT "offset" FROM journal
                           WHERE kind = $2 AND entity_type = $3 AND entity_id = $4 AND "offset" < $5
                           ORDER BY "offset" DESC LIMIT $6)"#
                ))
                .bind(shard)
                .bind(kind.code())
                .bind(t)
                .bind(id)
                .bind(before)
                .bind(fetch)
                .fetch_all(pool)
                .await?;
                for r in &rows {
                    entries.push(entry_from_row(r)?);
                }
            }
            entries.sort_by_key(|e| std::cmp::Reverse(e.offset));
            let more_before = entries.len() as u64 > limit;
            entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            entries.reverse();
            let first = entries.first().map_or(before, |e| i64::try_from(e.offset).unwrap_or(i64::MAX));

            let rows = sqlx::query(
                "SELECT CAST(shard AS BIGINT), message_id, type_tag, CAST(schema_version AS BIGINT),
                        payload, crc, deliver_at, created_at, headers
                   FROM scheduled WHERE entity_type = $1 AND entity_id = $2 ORDER BY deliver_at",
            )
            .bind(t)
            .bind(id)
            .fetch_all(pool)
            .await?;
            let mut scheduled = Vec::with_capacity(rows.len());
            for r in &rows {
                let shard = Shard::try_from(r.try_get::<i64, _>(0)?).unwrap_or(Shard::MAX);
                let message_id: Uuid = r.try_get(1)?;
                let payload = Payload {
                    type_tag: r.try_get(2)?,
                    version: version_of(r.try_get(3)?),
                    bytes: r.try_get(4)?,
                };
                let crc: i64 = r.try_get(5)?;
                let stored: Option<Vec<u8>> = r.try_get(8)?;
                let corrupt = |reason: String| JournalError::Corrupt {
                    shard,
                    offset: 0,
                    reason: format!("scheduled message {message_id} of {entity} {reason}"),
                };
                let crc_now = entry_checksum(CrcDomain::Message, entity, None, &message_id, &payload, stored.as_deref());
                if i64::from(crc_now) != crc {
                    return Err(corrupt("fails its checksum".into()));
                }
                let headers = crate::headers::decode(stored.as_deref()).map_err(corrupt)?;
                scheduled.push(ScheduledMessage {
                    shard,
                    entity: entity.clone(),
                    message_id,
                    payload,
                    deliver_at: Timestamp(r.try_get(6)?),
                    created_at: Timestamp(r.try_get(7)?),
                    headers,
                });
            }

            let rows = sqlx::query(
                // Through the entity's messages: replies are keyed by message id first.
                r#"SELECT r.message_id, r."offset", r.type_tag, CAST(r.schema_version AS BIGINT), r.payload, r.crc, r.created_at
                     FROM journal j
                     JOIN replies r ON r.message_id = j.message_id AND r.entity_type = j.entity_type
                                   AND r.entity_id = j.entity_id
                    WHERE j.kind = 1 AND j.entity_type = $1 AND j.entity_id = $2
                      AND j."offset" >= $3 AND j."offset" < $4
                    ORDER BY r."offset""#,
            )
            .bind(t)
            .bind(id)
            .bind(first)
            .bind(before)
            .fetch_all(pool)
            .await?;
            let mut replies = Vec::with_capacity(rows.len());
            for r in &rows {
                let payload = Payload {
                    type_tag: r.try_get(2)?,
                    version: version_of(r.try_get(3)?),
                    bytes: r.try_get(4)?,
                };
                replies.push(verified_reply(entity, r.try_get(0)?, u64_of(r.try_get(1)?), payload, r.try_get(5)?, Timestamp(r.try_get(6)?))?);
            }

            let row = sqlx::query(
                "SELECT seq, type_tag, CAST(state_version AS BIGINT), payload, crc, created_at
                   FROM snapshots WHERE entity_type = $1 AND entity_id = $2",
            )
            .bind(t)
            .bind(id)
            .fetch_optional(pool)
            .await?;
            let snapshot = match row {
                None => None,
                Some(r) => {
                    let seq = u64_of(r.try_get(0)?);
                    let state = Payload {
                        type_tag: r.try_get(1)?,
                        version: version_of(r.try_get(2)?),
                        bytes: r.try_get(3)?,
                    };
                    let crc: i64 = r.try_get(4)?;
                    let checksum_ok = i64::from(checksum(
                        CrcDomain::Snapshot,
                        entity,
                        Some(seq),
                        &Uuid::nil(),
                        &state,
                    )) == crc;
                    Some(StoredSnapshot {
                        seq,
                        state,
                        created_at: Timestamp(r.try_get(5)?),
                        checksum_ok,
                    })
                }
            };
            Ok(EntityPage {
                records: EntityRecords { entries, scheduled, replies, snapshot },
                more_before,
            })
        })
    }

    /// Stored failure replies (whose payload starts with [`FAILED_REPLY_BYTE`]), at most
    /// `limit`, newest first. Read through their own index: the cost follows the number
    /// of failures, not of replies.
    ///
    /// [`FAILED_REPLY_BYTE`]: crate::FAILED_REPLY_BYTE
    pub async fn failed_replies(&self, limit: usize) -> Result<Vec<(EntityKey, StoredReply)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The WHERE clause repeats the index's predicate word for word, so that the planner
        // can use it (migration 0011); the byte is FAILED_REPLY_BYTE.
        let sql = match self {
            AnyJournal::Postgres(_) => {
                r#"SELECT entity_type, entity_id, message_id, "offset", type_tag, CAST(schema_version AS BIGINT), payload, crc, created_at
                     FROM replies WHERE substring(payload FROM 1 FOR 1) = '\x02'::bytea
                    ORDER BY created_at DESC LIMIT $1"#
            }
            AnyJournal::Sqlite(_) => {
                r#"SELECT entity_type, entity_id, message_id, "offset", type_tag, CAST(schema_version AS BIGINT), payload, crc, created_at
                     FROM replies WHERE substr(payload, 1, 1) = X'02'
                    ORDER BY created_at DESC LIMIT $1"#
            }
        };
        on_pool!(self.inspect_pool(), pool => {
            let rows = sqlx::query(sql)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let entity = EntityKey::from_stored(r.try_get(0)?, r.try_get(1)?);
                    let payload = Payload {
                        type_tag: r.try_get(4)?,
                        version: version_of(r.try_get(5)?),
                        bytes: r.try_get(6)?,
                    };
                    let reply = verified_reply(&entity, r.try_get(2)?, u64_of(r.try_get(3)?), payload, r.try_get(7)?, Timestamp(r.try_get(8)?))?;
                    Ok((entity, reply))
                })
                .collect()
        })
    }

    /// Every recorded damaged entry with the time it was recorded, in (shard, offset) order.
    pub async fn damaged_entries(&self) -> Result<Vec<(DamagedEntry, Timestamp)>> {
        on_pool!(self.inspect_pool(), pool => {
            let rows = sqlx::query(
                r#"SELECT CAST(shard AS BIGINT), "offset", reason, recorded_at
                     FROM damaged_entries ORDER BY shard, "offset""#,
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let entry = DamagedEntry {
                        shard: Shard::try_from(r.try_get::<i64, _>(0)?).unwrap_or(Shard::MAX),
                        offset: u64_of(r.try_get(1)?),
                        reason: r.try_get(2)?,
                    };
                    Ok((entry, Timestamp(r.try_get(3)?)))
                })
                .collect()
        })
    }
}
