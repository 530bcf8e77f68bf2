//! Decoding the journal's rows into checked records, the same code for both backends:
//! entries, mailbox deliveries, replies, snapshots and runners.
//!
//! The two drivers differ only in how wide the integer columns are (PostgreSQL stores
//! shards and versions as `INTEGER`, SQLite every integer as 64 bits); [`Fields::int`]
//! reads either as `i64`, and everything else decodes to the same Rust types.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column as _, Row as _};
use uuid::Uuid;

use crate::damaged::{Delivery, deliver};
use crate::envelope::{CrcDomain, EntityKey, Entry, Payload, RawEntry, checksum, place_of};
use crate::error::{JournalError, Result};
use crate::ownership::RunnerInfo;
use crate::records::{Snapshot, StoredReply};
use crate::sql::{Column, FromValue};
use crate::time::Timestamp;

/// The journal columns every entry read selects, in [`entry_from_row`]'s order.
macro_rules! entry_columns {
    () => {
        r#"shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag, schema_version, payload, crc, deliver_at, created_at, headers"#
    };
}

/// A row of either backend, read column by column.
pub(crate) trait Fields {
    /// A column whose type decodes the same on both backends.
    fn get<T: FromValue, C: Column>(&self, column: C) -> Result<T>;

    /// An integer column, widened: `INTEGER` or `BIGINT` on PostgreSQL, any integer on
    /// SQLite.
    fn int<C: Column + Copy>(&self, column: C) -> Result<i64>;
}

impl Fields for PgRow {
    fn get<T: FromValue, C: Column>(&self, column: C) -> Result<T> {
        Ok(self.try_get(column)?)
    }

    fn int<C: Column + Copy>(&self, column: C) -> Result<i64> {
        let narrow =
            <i32 as sqlx::Type<sqlx::Postgres>>::compatible(self.try_column(column)?.type_info());
        Ok(if narrow {
            i64::from(self.try_get::<i32, _>(column)?)
        } else {
            self.try_get(column)?
        })
    }
}

impl Fields for SqliteRow {
    fn get<T: FromValue, C: Column>(&self, column: C) -> Result<T> {
        Ok(self.try_get(column)?)
    }

    fn int<C: Column + Copy>(&self, column: C) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
}

/// Decodes and verifies one journal row selected with `entry_columns!()`.
pub(crate) fn entry_from_row(r: &impl Fields) -> Result<Entry> {
    let (shard, offset) = place_columns(r)?;
    raw_from_row(r, shard, offset)?.verify()
}

/// A mailbox row selected with `entry_columns!()`: the message, or, when the row fails
/// its checksum or does not decode, a damaged entry at its place. Only a failure to read
/// the place itself (shard, offset: the primary key) fails the read.
pub(crate) fn delivery_from_row(r: &impl Fields) -> Result<Delivery> {
    let (shard, offset) = place_columns(r)?;
    let (s, o) = place_of(shard, offset);
    deliver(
        s,
        o,
        raw_from_row(r, shard, offset).and_then(RawEntry::verify),
    )
}

/// The row's shard and offset, read first: they are the trusted part of any row.
fn place_columns(r: &impl Fields) -> Result<(i64, i64)> {
    Ok((r.int(0)?, r.get(1)?))
}

/// The remaining columns of a row found at (`shard`, `offset`), not yet verified.
fn raw_from_row(r: &impl Fields, shard: i64, offset: i64) -> Result<RawEntry> {
    Ok(RawEntry {
        shard,
        offset,
        kind: r.get(2)?,
        entity_type: r.get(3)?,
        entity_id: r.get(4)?,
        seq: r.get(5)?,
        message_id: r.get(6)?,
        type_tag: r.get(7)?,
        schema_version: r.int(8)?,
        payload: r.get(9)?,
        crc: r.get(10)?,
        deliver_at: r.get(11)?,
        created_at: r.get(12)?,
        headers: r.get(13)?,
    })
}

/// Decodes and verifies a reply row (its columns by name, with `entity_type` and
/// `entity_id`).
pub(crate) fn reply_from_row(r: &impl Fields) -> Result<StoredReply> {
    Ok(keyed_reply_from_row(r)?.1)
}

/// Decodes and verifies a reply row, as [`reply_from_row`], with the entity it answers.
pub(crate) fn keyed_reply_from_row(r: &impl Fields) -> Result<(EntityKey, StoredReply)> {
    let message_id: Uuid = r.get("message_id")?;
    let entity = EntityKey::from_stored(r.get("entity_type")?, r.get("entity_id")?);
    let payload = Payload {
        type_tag: r.get("type_tag")?,
        version: r.int("schema_version")? as u32,
        bytes: r.get("payload")?,
    };
    let crc: i64 = r.get("crc")?;
    let reply = verified_reply(
        &entity,
        message_id,
        r.get::<i64, _>("offset")? as u64,
        payload,
        crc,
        Timestamp(r.get("created_at")?),
    )?;
    Ok((entity, reply))
}

/// A stored reply to `message_id` of `entity`, if `payload` passes its checksum `crc`.
pub(crate) fn verified_reply(
    entity: &EntityKey,
    message_id: Uuid,
    offset: u64,
    payload: Payload,
    crc: i64,
    created_at: Timestamp,
) -> Result<StoredReply> {
    if i64::from(checksum(
        CrcDomain::Reply,
        entity,
        None,
        &message_id,
        &payload,
    )) != crc
    {
        return Err(JournalError::ReplyChecksum { message_id });
    }
    Ok(StoredReply {
        message_id,
        offset,
        payload,
        created_at,
    })
}

/// Decodes a snapshot row; `None` (with a warning) when it fails its checksum or is of
/// another state version.
pub(crate) fn snapshot_from_row(
    r: &impl Fields,
    entity: &EntityKey,
    state_version: u32,
) -> Result<Option<Snapshot>> {
    let seq = r.get::<i64, _>("seq")? as u64;
    let state = Payload {
        type_tag: r.get("type_tag")?,
        version: r.int("state_version")? as u32,
        bytes: r.get("payload")?,
    };
    let crc: i64 = r.get("crc")?;
    Ok(crate::snapshot::accept(
        entity,
        seq,
        state,
        crc,
        Timestamp(r.get("created_at")?),
        state_version,
    ))
}

/// A runner row: `runner, started_at, heartbeat_at, groups`, in that order.
pub(crate) fn runner_from_row(r: &impl Fields) -> Result<RunnerInfo> {
    Ok(RunnerInfo {
        runner: r.get(0)?,
        started_at: Timestamp(r.get(1)?),
        heartbeat_at: Timestamp(r.get(2)?),
        groups: crate::ownership::decode_hosted(r.get(3)?),
    })
}
