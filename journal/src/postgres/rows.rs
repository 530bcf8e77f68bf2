//! Decoding PostgreSQL rows into checked journal records.

use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::columns::Placed;
use crate::damaged::{Delivery, deliver};
use crate::envelope::{CrcDomain, EntityKey, Entry, Payload, RawEntry, checksum, place_of};
use crate::error::{JournalError, Result};
use crate::records::{Snapshot, StoredReply};
use crate::time::Timestamp;

/// The journal columns every entry read selects, in [`entry_from_row`]'s order.
macro_rules! entry_columns {
    () => {
        r#"shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag, schema_version, payload, crc, deliver_at, created_at, headers"#
    };
}

/// Decodes `append_entries` rows (already in input order).
pub(super) fn append_rows(rows: Vec<PgRow>) -> Result<Vec<Placed>> {
    rows.iter()
        .map(|r| {
            Ok(Placed {
                offset: r.try_get::<Option<i64>, _>(1)?.map(|o| o as u64),
                duplicate: r.try_get(2)?,
                scheduled: r.try_get(3)?,
            })
        })
        .collect()
}

/// Decodes and verifies one journal row selected with `entry_columns!()`.
pub(super) fn entry_from_row(r: &PgRow) -> Result<Entry> {
    let (shard, offset) = place_columns(r)?;
    raw_from_row(r, shard, offset)?.verify()
}

/// A mailbox row selected with `entry_columns!()`: the message, or, when the row fails
/// its checksum or does not decode, a damaged entry at its place. Only a failure to read
/// the place itself (shard, offset: the primary key) fails the read.
pub(super) fn delivery_from_row(r: &PgRow) -> Result<Delivery> {
    let (shard, offset) = place_columns(r)?;
    let (s, o) = place_of(shard, offset);
    deliver(
        s,
        o,
        raw_from_row(r, shard, offset).and_then(RawEntry::verify),
    )
}

/// The row's shard and offset, read first: they are the trusted part of any row.
fn place_columns(r: &PgRow) -> Result<(i64, i64)> {
    Ok((i64::from(r.try_get::<i32, _>(0)?), r.try_get(1)?))
}

/// The remaining columns of a row found at (`shard`, `offset`), not yet verified.
fn raw_from_row(r: &PgRow, shard: i64, offset: i64) -> Result<RawEntry> {
    Ok(RawEntry {
        shard,
        offset,
        kind: r.try_get(2)?,
        entity_type: r.try_get(3)?,
        entity_id: r.try_get(4)?,
        seq: r.try_get(5)?,
        message_id: r.try_get(6)?,
        type_tag: r.try_get(7)?,
        schema_version: i64::from(r.try_get::<i32, _>(8)?),
        payload: r.try_get(9)?,
        crc: r.try_get(10)?,
        deliver_at: r.try_get(11)?,
        created_at: r.try_get(12)?,
        headers: r.try_get(13)?,
    })
}

/// Decodes and verifies a reply row.
pub(super) fn reply_from_row(r: &PgRow) -> Result<StoredReply> {
    let message_id: uuid::Uuid = r.try_get("message_id")?;
    let entity = EntityKey::from_stored(r.try_get("entity_type")?, r.try_get("entity_id")?);
    let payload = Payload {
        type_tag: r.try_get("type_tag")?,
        version: r.try_get::<i32, _>("schema_version")? as u32,
        bytes: r.try_get("payload")?,
    };
    let crc: i64 = r.try_get("crc")?;
    if i64::from(checksum(
        CrcDomain::Reply,
        &entity,
        None,
        &message_id,
        &payload,
    )) != crc
    {
        return Err(JournalError::ReplyChecksum { message_id });
    }
    Ok(StoredReply {
        message_id,
        offset: r.try_get::<i64, _>("offset")? as u64,
        payload,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

/// Decodes a snapshot row; `None` (with a warning) when it fails its checksum or is of
/// another state version.
pub(super) fn snapshot_from_row(
    r: &PgRow,
    entity: &EntityKey,
    state_version: u32,
) -> Result<Option<Snapshot>> {
    let seq = r.try_get::<i64, _>("seq")? as u64;
    let state = Payload {
        type_tag: r.try_get("type_tag")?,
        version: r.try_get::<i32, _>("state_version")? as u32,
        bytes: r.try_get("payload")?,
    };
    let crc: i64 = r.try_get("crc")?;
    Ok(crate::snapshot::accept(
        entity,
        seq,
        state,
        crc,
        Timestamp(r.try_get("created_at")?),
        state_version,
    ))
}
