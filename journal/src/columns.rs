//! Column-wise batches of entries and replies, as both backends bind them.

use uuid::Uuid;

use crate::envelope::{
    CrcDomain, EntityKey, EntryKind, NewMessage, Payload, checksum, entry_checksum,
};
use crate::error::{JournalError, Result};
use crate::records::Processed;
use crate::shard::Shard;
use crate::shard_groups::ShardMap;
use crate::time::Timestamp;

/// Entries to insert, one vector per column (PostgreSQL binds each as an array).
#[derive(Debug, Default)]
pub(crate) struct EntryColumns {
    pub shard: Vec<i32>,
    pub kind: Vec<i16>,
    pub entity_type: Vec<String>,
    pub entity_id: Vec<String>,
    pub seq: Vec<Option<i64>>,
    pub message_id: Vec<Uuid>,
    pub type_tag: Vec<String>,
    pub schema_version: Vec<i32>,
    pub payload: Vec<Vec<u8>>,
    pub crc: Vec<i64>,
    pub deliver_at: Vec<Option<i64>>,
    pub created_at: Vec<i64>,
    /// Stored headers (messages that have some), `None` otherwise.
    pub headers: Vec<Option<Vec<u8>>>,
}

impl EntryColumns {
    pub(crate) fn len(&self) -> usize {
        self.shard.len()
    }

    /// Appends copies of `other`'s rows (several batches bound as one).
    pub(crate) fn extend_from(&mut self, other: &EntryColumns) {
        self.shard.extend_from_slice(&other.shard);
        self.kind.extend_from_slice(&other.kind);
        self.entity_type.extend_from_slice(&other.entity_type);
        self.entity_id.extend_from_slice(&other.entity_id);
        self.seq.extend_from_slice(&other.seq);
        self.message_id.extend_from_slice(&other.message_id);
        self.type_tag.extend_from_slice(&other.type_tag);
        self.schema_version.extend_from_slice(&other.schema_version);
        self.payload.extend_from_slice(&other.payload);
        self.crc.extend_from_slice(&other.crc);
        self.deliver_at.extend_from_slice(&other.deliver_at);
        self.created_at.extend_from_slice(&other.created_at);
        self.headers.extend_from_slice(&other.headers);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        shard: Shard,
        kind: EntryKind,
        entity: &EntityKey,
        seq: Option<u64>,
        message_id: Uuid,
        payload: Payload,
        deliver_at: Option<Timestamp>,
        created_at: Timestamp,
        headers: Option<Vec<u8>>,
    ) {
        let crc = entry_checksum(
            kind.into(),
            entity,
            seq,
            &message_id,
            &payload,
            headers.as_deref(),
        );
        self.headers.push(headers);
        self.shard.push(shard as i32);
        self.kind.push(kind.code());
        self.entity_type.push(entity.entity_type().to_owned());
        self.entity_id.push(entity.entity_id().to_owned());
        self.seq.push(seq.map(|s| s as i64));
        self.message_id.push(message_id);
        self.type_tag.push(payload.type_tag);
        self.schema_version.push(payload.version as i32);
        self.payload.push(payload.bytes);
        self.crc.push(i64::from(crc));
        self.deliver_at.push(deliver_at.map(Timestamp::as_micros));
        self.created_at.push(created_at.as_micros());
    }

    /// Adds a message, validated against the limits, routed to its entity's shard.
    pub(crate) fn push_message(
        &mut self,
        m: NewMessage,
        shards: &ShardMap,
        max_payload: usize,
        now: Timestamp,
    ) -> Result<()> {
        m.payload.check(max_payload)?;
        let headers = crate::headers::encode(&m.headers)?;
        let shard = shards.shard_of(&m.entity);
        self.push(
            shard,
            EntryKind::Message,
            &m.entity,
            None,
            m.message_id,
            m.payload,
            m.deliver_at,
            now,
            headers,
        );
        Ok(())
    }
}

/// Which row carries each appended message: its own, or (for a repeat of an id earlier
/// in the same call) the first occurrence's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// Sent as row `i` of the columns.
    Row(usize),
    /// A repeat of the message sent as row `i`.
    RepeatOf(usize),
}

/// Lays out messages for an append; repeats of an id within the call are sent once.
pub(crate) fn append_columns(
    messages: Vec<NewMessage>,
    shards: &ShardMap,
    max_payload: usize,
    now: Timestamp,
) -> Result<(EntryColumns, Vec<Source>)> {
    let mut cols = EntryColumns::default();
    let mut sources = Vec::with_capacity(messages.len());
    let mut seen = std::collections::HashMap::new();
    for m in messages {
        let key = (m.entity.clone(), m.message_id);
        if let Some(&row) = seen.get(&key) {
            m.payload.check(max_payload)?;
            sources.push(Source::RepeatOf(row));
            continue;
        }
        seen.insert(key, cols.len());
        sources.push(Source::Row(cols.len()));
        cols.push_message(m, shards, max_payload, now)?;
    }
    Ok((cols, sources))
}

/// Replies to insert, one vector per column.
#[derive(Debug, Default)]
pub(crate) struct ReplyColumns {
    pub entity_type: Vec<String>,
    pub entity_id: Vec<String>,
    pub message_id: Vec<Uuid>,
    pub offset: Vec<i64>,
    pub type_tag: Vec<String>,
    pub schema_version: Vec<i32>,
    pub payload: Vec<Vec<u8>>,
    pub crc: Vec<i64>,
}

impl ReplyColumns {
    /// Moves `other`'s rows to the end of these.
    pub(crate) fn append(&mut self, other: &mut ReplyColumns) {
        self.entity_type.append(&mut other.entity_type);
        self.entity_id.append(&mut other.entity_id);
        self.message_id.append(&mut other.message_id);
        self.offset.append(&mut other.offset);
        self.type_tag.append(&mut other.type_tag);
        self.schema_version.append(&mut other.schema_version);
        self.payload.append(&mut other.payload);
        self.crc.append(&mut other.crc);
    }
}

/// A processed batch laid out in columns: entries (events, then each message's outgoing
/// messages, message by message) and replies, plus where each message's rows start.
pub(crate) struct BatchColumns {
    pub entries: EntryColumns,
    pub replies: ReplyColumns,
    /// Per handled message: (number of events, number of outgoing messages).
    pub layout: Vec<(usize, usize)>,
    /// The time stored as every row's `created_at`.
    pub created_at: Timestamp,
}

impl BatchColumns {
    /// Validates a processed batch (shard range, cursor name, every payload) and lays out
    /// its messages, leaving `batch.messages` empty.
    pub(crate) fn prepare(
        batch: &mut crate::records::ProcessedBatch,
        shards: &ShardMap,
        max_payload: usize,
        now: Timestamp,
    ) -> Result<Self> {
        if batch.shard >= shards.layout().shard_count() {
            return Err(JournalError::ShardOutOfRange {
                shard: batch.shard,
                shard_count: shards.layout().shard_count(),
            });
        }
        if let Some((consumer, _)) = &batch.cursor {
            crate::names::check_name(crate::error::Field::Consumer, consumer)?;
        }
        let messages = std::mem::take(&mut batch.messages);
        Self::build(batch.shard, messages, shards, max_payload, now)
    }

    /// Validates and lays out the handled messages of one shard.
    fn build(
        shard: Shard,
        messages: Vec<Processed>,
        shards: &ShardMap,
        max_payload: usize,
        now: Timestamp,
    ) -> Result<Self> {
        let mut entries = EntryColumns::default();
        let mut replies = ReplyColumns::default();
        let mut layout = Vec::with_capacity(messages.len());
        for p in messages {
            p.reply.check(max_payload)?;
            layout.push((p.events.len(), p.outgoing.len()));
            for e in p.events {
                e.payload.check(max_payload)?;
                if e.seq == 0 {
                    return Err(JournalError::InvalidSeq {
                        entity: p.entity.to_string(),
                    });
                }
                entries.push(
                    shard,
                    EntryKind::Event,
                    &p.entity,
                    Some(e.seq),
                    p.message_id,
                    e.payload,
                    None,
                    now,
                    None,
                );
            }
            for m in p.outgoing {
                entries.push_message(m, shards, max_payload, now)?;
            }
            let crc = checksum(CrcDomain::Reply, &p.entity, None, &p.message_id, &p.reply);
            replies.entity_type.push(p.entity.entity_type().to_owned());
            replies.entity_id.push(p.entity.entity_id().to_owned());
            replies.message_id.push(p.message_id);
            replies.offset.push(p.offset as i64);
            replies.type_tag.push(p.reply.type_tag);
            replies.schema_version.push(p.reply.version as i32);
            replies.payload.push(p.reply.bytes);
            replies.crc.push(i64::from(crc));
        }
        Ok(BatchColumns {
            entries,
            replies,
            layout,
            created_at: now,
        })
    }
}

/// Where one appended row went, as both backends report it, in input order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    /// The new offset, or the original's for a duplicate; `None` while scheduled.
    pub offset: Option<u64>,
    /// A message whose id the entity already had: nothing was written.
    pub duplicate: bool,
    /// A message parked until due.
    pub scheduled: bool,
}

/// One batch of a [`ManyColumns`]: its shard, lease, cursor and its own columns.
pub(crate) struct ManyPart {
    pub shard: Shard,
    pub lease: Option<crate::ownership::Lease>,
    pub cursor: Option<(String, u64)>,
    pub cols: BatchColumns,
}

/// The processed batches of several shards laid out for one commit: each batch's own
/// columns (for its receipt) and all their rows together (for the statements).
pub(crate) struct ManyColumns {
    pub parts: Vec<ManyPart>,
    /// Every batch's entries, batch after batch.
    pub entries: EntryColumns,
    /// Every batch's replies, batch after batch, and the shard of each.
    pub replies: ReplyColumns,
    pub reply_shards: Vec<Shard>,
}

impl ManyColumns {
    /// Validates and lays out `batches`: at most one per shard, and cursors of one consumer.
    pub(crate) fn prepare(
        batches: Vec<crate::records::ProcessedBatch>,
        shards: &ShardMap,
        max_payload: usize,
        now: Timestamp,
    ) -> Result<Self> {
        let mut many = ManyColumns {
            parts: Vec::with_capacity(batches.len()),
            entries: EntryColumns::default(),
            replies: ReplyColumns::default(),
            reply_shards: Vec::new(),
        };
        let mut consumer: Option<String> = None;
        for mut batch in batches {
            let mut cols = BatchColumns::prepare(&mut batch, shards, max_payload, now)?;
            if many.parts.iter().any(|p| p.shard == batch.shard) {
                return Err(JournalError::Internal(format!(
                    "two batches of shard {} in one commit",
                    batch.shard
                )));
            }
            if let Some((c, _)) = &batch.cursor {
                if consumer.as_ref().is_some_and(|known| known != c) {
                    return Err(JournalError::Internal(
                        "batches of one commit move cursors of different consumers".into(),
                    ));
                }
                consumer = Some(c.clone());
            }
            many.entries.extend_from(&cols.entries);
            many.reply_shards.extend(std::iter::repeat_n(
                batch.shard,
                cols.replies.message_id.len(),
            ));
            many.replies.append(&mut cols.replies);
            many.parts.push(ManyPart {
                shard: batch.shard,
                lease: batch.lease,
                cursor: batch.cursor.take(),
                cols,
            });
        }
        Ok(many)
    }
}
