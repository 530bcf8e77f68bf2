//! The client work of the raw SQL baselines, shared by both backends: `RawColumns` turns a
//! batch of messages into the journal's columns (shard, offset, checksum, timestamp) the
//! way the journal does, with the IEEE `crc32` the journal checksums payloads with.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use entlog_journal::{NewMessage, shard_of};

use crate::SHARDS;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// IEEE CRC-32, byte-wise with a table: the raw baselines checksum each payload with it.
///
/// The journal uses `crc32fast` (SIMD), which this bench cannot depend on; for ~100-byte
/// payloads either costs well under a microsecond per row, noise next to a round trip.
/// `main` checks it against the journal's own crc32 (through `shard_of`).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Raw rows, column-wise, as the PostgreSQL baseline binds them.
#[derive(Default)]
pub(crate) struct RawColumns {
    pub(crate) shard: Vec<i32>,
    pub(crate) offset: Vec<i64>,
    pub(crate) kind: Vec<i16>,
    pub(crate) entity_type: Vec<String>,
    pub(crate) entity_id: Vec<String>,
    pub(crate) seq: Vec<Option<i64>>,
    pub(crate) message_id: Vec<uuid::Uuid>,
    pub(crate) type_tag: Vec<String>,
    pub(crate) schema_version: Vec<i32>,
    pub(crate) payload: Vec<Vec<u8>>,
    pub(crate) crc: Vec<i64>,
    pub(crate) deliver_at: Vec<Option<i64>>,
    pub(crate) created_at: Vec<i64>,
}

impl RawColumns {
    /// The client work the raw baseline does per batch: shard, offset, crc, columns.
    pub(crate) fn build(messages: Vec<NewMessage>, heads: &Mutex<Vec<i64>>) -> Self {
        let mut cols = RawColumns::default();
        let now = now_micros();
        let mut heads = heads.lock().unwrap();
        for m in messages {
            let shard = shard_of(m.entity.entity_id(), SHARDS);
            let head = &mut heads[shard as usize];
            *head += 1;
            cols.shard.push(shard as i32);
            cols.offset.push(*head);
            cols.kind.push(1);
            cols.entity_type.push(m.entity.entity_type().to_owned());
            cols.entity_id.push(m.entity.entity_id().to_owned());
            cols.seq.push(None);
            cols.message_id.push(m.message_id);
            cols.type_tag.push(m.payload.type_tag);
            cols.schema_version.push(m.payload.version as i32);
            cols.crc.push(i64::from(crc32(&m.payload.bytes)));
            cols.payload.push(m.payload.bytes);
            cols.deliver_at.push(None);
            cols.created_at.push(now);
        }
        cols
    }

    pub(crate) fn len(&self) -> usize {
        self.shard.len()
    }
}
