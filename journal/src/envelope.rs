//! The envelope: what one journal entry is, and the checksum that guards it.
//!
//! An entry is a header (kind, entity, seq, message id, type tag, schema version, times)
//! plus a postcard payload. The crc32 covers the payload *and* the identity fields, so a
//! row whose payload was swapped for another entity's, or whose seq was edited, fails too.
//!
//! # Checksum layout (part of the storage format: do not change)
//!
//! crc32 (IEEE, `crc32fast`) over, in order, all integers little-endian:
//!
//! ```text
//! kind: u8 | len(entity_type): u16 | entity_type | len(entity_id): u16 | entity_id
//! | seq: u64 (0 when none) | message_id: 16 bytes | len(type_tag): u16 | type_tag
//! | schema_version: u32 | len(payload): u32 | payload
//! [ | len(headers): u32 | headers ]      (messages with headers only)
//! ```
//!
//! A message without headers is checksummed as before headers existed.
//!
//! Shard, offset and times are not covered: a scheduled message keeps its checksum when it
//! is moved into its shard's partition at a new offset.

use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::error::{Field, JournalError, Result};
use crate::headers::Headers;
use crate::names::check_name;
use crate::shard::Shard;
use crate::time::Timestamp;

/// Default largest payload, in bytes (configurable per journal).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum EntryKind {
    /// A command sent to an entity; delivered by the shard's owner.
    Message = 1,
    /// A fact an entity decided; the only input to its state.
    Event = 2,
}

/// Domain of a checksummed record; a reply or snapshot can never pass for an entry.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum CrcDomain {
    Message = 1,
    Event = 2,
    Reply = 3,
    Snapshot = 4,
}

impl From<EntryKind> for CrcDomain {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::Message => CrcDomain::Message,
            EntryKind::Event => CrcDomain::Event,
        }
    }
}

impl EntryKind {
    /// The stored code of this kind.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The kind stored as `code`, if any.
    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(EntryKind::Message),
            2 => Some(EntryKind::Event),
            _ => None,
        }
    }
}

/// The address of one entity: its type name and its id, both validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    entity_type: String,
    entity_id: String,
}

impl EntityKey {
    /// An entity address; both parts must be non-empty and at most [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES).
    pub fn new(entity_type: impl Into<String>, entity_id: impl Into<String>) -> Result<Self> {
        let entity_type = entity_type.into();
        let entity_id = entity_id.into();
        check_name(Field::EntityType, &entity_type)?;
        check_name(Field::EntityId, &entity_id)?;
        Ok(EntityKey {
            entity_type,
            entity_id,
        })
    }

    /// The entity type name.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The entity id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// A key read back from storage, trusted to have been validated when written.
    pub(crate) fn from_stored(entity_type: String, entity_id: String) -> Self {
        EntityKey {
            entity_type,
            entity_id,
        }
    }
}

impl std::fmt::Display for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.entity_id)
    }
}

/// Serialized application data with the type tag and schema version that say how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Stable name of the payload's type (`"counter.Added"`).
    pub type_tag: String,
    /// Schema version of the type when the bytes were written.
    pub version: u32,
    /// postcard bytes.
    pub bytes: Vec<u8>,
}

impl Payload {
    /// Encodes `value` with postcard under a type tag and schema version.
    pub fn encode<T: Serialize>(type_tag: &str, version: u32, value: &T) -> Result<Self> {
        let bytes = postcard::to_stdvec(value).map_err(|source| JournalError::Codec {
            type_tag: type_tag.to_owned(),
            source,
        })?;
        Ok(Payload {
            type_tag: type_tag.to_owned(),
            version,
            bytes,
        })
    }

    /// Decodes the bytes as `T`; trailing bytes are an error (they mean a schema mismatch).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let codec = |source| JournalError::Codec {
            type_tag: self.type_tag.clone(),
            source,
        };
        let (value, rest) = postcard::take_from_bytes(&self.bytes).map_err(codec)?;
        if !rest.is_empty() {
            return Err(codec(postcard::Error::DeserializeBadEncoding));
        }
        Ok(value)
    }

    /// Checks the type tag and the size against the journal's limits.
    pub(crate) fn check(&self, max_payload_bytes: usize) -> Result<()> {
        check_name(Field::TypeTag, &self.type_tag)?;
        if self.bytes.len() > max_payload_bytes {
            return Err(JournalError::PayloadTooLarge {
                size: self.bytes.len(),
                limit: max_payload_bytes,
            });
        }
        Ok(())
    }
}

/// A message to append: a command for one entity, optionally due later.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The receiving entity.
    pub entity: EntityKey,
    /// Unique id of the message (uuid v7); re-sending the same id is deduplicated.
    pub message_id: Uuid,
    /// The command.
    pub payload: Payload,
    /// When the message becomes due; `None` (or a past time) means at once.
    pub deliver_at: Option<Timestamp>,
    /// String key/values carried with the command (a tenant, a trace id).
    pub headers: Headers,
}

impl NewMessage {
    /// A message due at once, with a fresh uuid v7 id and no headers.
    pub fn new(entity: EntityKey, payload: Payload) -> Self {
        NewMessage {
            entity,
            message_id: Uuid::now_v7(),
            payload,
            deliver_at: None,
            headers: Headers::new(),
        }
    }
}

/// An event decided while handling a message, at the entity's next seq.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Position in the entity's history (1, 2, 3, …); a taken seq is a [`JournalError::SeqConflict`].
    pub seq: u64,
    /// The event.
    pub payload: Payload,
}

/// One stored entry, its checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Shard whose partition holds the entry.
    pub shard: Shard,
    /// Position in the shard's partition: 1, 2, 3, … without gaps, in commit order.
    pub offset: u64,
    /// Message or event.
    pub kind: EntryKind,
    /// The entity the entry belongs to.
    pub entity: EntityKey,
    /// For events, the position in the entity's history.
    pub seq: Option<u64>,
    /// For messages, their id; for events, the id of the message that caused them.
    pub message_id: Uuid,
    /// The payload.
    pub payload: Payload,
    /// For scheduled messages, when they were due.
    pub deliver_at: Option<Timestamp>,
    /// When the entry (or its scheduled message) was first written.
    pub created_at: Timestamp,
    /// For messages, the headers they were sent with (empty for events).
    pub headers: Headers,
}

/// The crc32 of a record (see the module docs for the layout).
pub(crate) fn checksum(
    domain: CrcDomain,
    entity: &EntityKey,
    seq: Option<u64>,
    message_id: &Uuid,
    payload: &Payload,
) -> u32 {
    hasher(domain, entity, seq, message_id, payload).finalize()
}

/// The crc32 of an entry or scheduled message with its stored headers, if any.
pub(crate) fn entry_checksum(
    domain: CrcDomain,
    entity: &EntityKey,
    seq: Option<u64>,
    message_id: &Uuid,
    payload: &Payload,
    headers: Option<&[u8]>,
) -> u32 {
    let mut h = hasher(domain, entity, seq, message_id, payload);
    if let Some(bytes) = headers {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        h.update(&len.to_le_bytes());
        h.update(bytes);
    }
    h.finalize()
}

/// The hasher after the fields every record has.
fn hasher(
    domain: CrcDomain,
    entity: &EntityKey,
    seq: Option<u64>,
    message_id: &Uuid,
    payload: &Payload,
) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&[domain as u8]);
    put_str(&mut h, entity.entity_type());
    put_str(&mut h, entity.entity_id());
    h.update(&seq.unwrap_or(0).to_le_bytes());
    h.update(message_id.as_bytes());
    put_str(&mut h, &payload.type_tag);
    h.update(&payload.version.to_le_bytes());
    let len = u32::try_from(payload.bytes.len()).unwrap_or(u32::MAX);
    h.update(&len.to_le_bytes());
    h.update(&payload.bytes);
    h
}

fn put_str(h: &mut crc32fast::Hasher, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    h.update(&len.to_le_bytes());
    h.update(s.as_bytes());
}

/// A raw journal row as both backends read it, before it is checked.
pub(crate) struct RawEntry {
    pub shard: i64,
    pub offset: i64,
    pub kind: i16,
    pub entity_type: String,
    pub entity_id: String,
    pub seq: Option<i64>,
    pub message_id: Uuid,
    pub type_tag: String,
    pub schema_version: i64,
    pub payload: Vec<u8>,
    pub crc: i64,
    pub deliver_at: Option<i64>,
    pub created_at: i64,
    pub headers: Option<Vec<u8>>,
}

/// The place of a stored row, its primary key (shard, offset), as the journal's types.
pub(crate) fn place_of(shard: i64, offset: i64) -> (Shard, u64) {
    (
        Shard::try_from(shard).unwrap_or(Shard::MAX),
        u64::try_from(offset).unwrap_or(0),
    )
}

impl RawEntry {
    /// Validates the row and verifies its checksum: corrupt rows become typed errors.
    pub(crate) fn verify(self) -> Result<Entry> {
        let (shard, offset) = place_of(self.shard, self.offset);
        let corrupt = |reason: String| JournalError::Corrupt {
            shard,
            offset,
            reason,
        };
        let kind = EntryKind::from_code(self.kind)
            .ok_or_else(|| corrupt(format!("unknown entry kind {}", self.kind)))?;
        let seq = match (kind, self.seq) {
            (EntryKind::Event, Some(s)) if s >= 1 => Some(s as u64),
            (EntryKind::Message, None) => None,
            (k, s) => return Err(corrupt(format!("{k:?} with seq {s:?}"))),
        };
        let version = u32::try_from(self.schema_version)
            .map_err(|_| corrupt(format!("schema version {}", self.schema_version)))?;
        let entity = EntityKey::from_stored(self.entity_type, self.entity_id);
        let payload = Payload {
            type_tag: self.type_tag,
            version,
            bytes: self.payload,
        };
        let crc = entry_checksum(
            kind.into(),
            &entity,
            seq,
            &self.message_id,
            &payload,
            self.headers.as_deref(),
        );
        if i64::from(crc) != self.crc {
            return Err(JournalError::Checksum { shard, offset });
        }
        let headers = crate::headers::decode(self.headers.as_deref()).map_err(corrupt)?;
        Ok(Entry {
            shard,
            offset,
            kind,
            entity,
            seq,
            message_id: self.message_id,
            payload,
            deliver_at: self.deliver_at.map(Timestamp),
            created_at: Timestamp(self.created_at),
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::MAX_NAME_BYTES;

    #[test]
    fn payload_round_trip_and_trailing_bytes() {
        let p = Payload::encode("t", 1, &(7u32, String::from("x"))).unwrap();
        assert_eq!(p.decode::<(u32, String)>().unwrap(), (7, "x".into()));
        assert!(matches!(p.decode::<u32>(), Err(JournalError::Codec { .. })));
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            EntityKey::new("", "a"),
            Err(JournalError::Empty {
                field: Field::EntityType
            })
        ));
        assert!(matches!(
            EntityKey::new("t", ""),
            Err(JournalError::Empty {
                field: Field::EntityId
            })
        ));
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            EntityKey::new("t", long),
            Err(JournalError::TooLong {
                field: Field::EntityId,
                len: 256,
                limit: 255
            })
        ));
        assert!(EntityKey::new("t", "x".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn checksum_covers_identity() {
        let e = EntityKey::new("t", "a").unwrap();
        let id = Uuid::nil();
        let p = Payload::encode("tag", 1, &1u8).unwrap();
        let base = checksum(CrcDomain::Event, &e, Some(1), &id, &p);
        assert_ne!(base, checksum(CrcDomain::Event, &e, Some(2), &id, &p));
        assert_ne!(base, checksum(CrcDomain::Message, &e, Some(1), &id, &p));
        let other = EntityKey::new("t", "b").unwrap();
        assert_ne!(base, checksum(CrcDomain::Event, &other, Some(1), &id, &p));
        let mut q = p.clone();
        q.version = 2;
        assert_ne!(base, checksum(CrcDomain::Event, &e, Some(1), &id, &q));
    }
}
