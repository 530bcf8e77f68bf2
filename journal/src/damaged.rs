//! Damaged entries: journal entries that fail their checksum or do not decode.
//!
//! A damaged entry's identity fields (entity, message id, seq) are covered by the checksum
//! that failed, so none of them can be trusted: the entry is known only by its place, the
//! shard and offset (the primary key the row was found under). The mailbox read
//! ([`Journal::read_mailboxes`](crate::Journal::read_mailboxes)) passes such an entry as
//! [`Delivery::Damaged`] instead of failing the whole read, so one flipped byte stops
//! nothing but itself (invariant 10); the shard's owner records it with
//! [`Journal::record_damaged`](crate::Journal::record_damaged) and moves past it, and
//! tools list the records ([`AnyJournal::damaged_entries`](crate::AnyJournal::damaged_entries)).

use crate::envelope::Entry;
use crate::error::JournalError;
use crate::shard::Shard;

/// An entry whose checksum (or decoding) failed: known only by its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// Shard of the entry.
    pub shard: Shard,
    /// Offset of the entry in its shard.
    pub offset: u64,
    /// What is wrong with it, for people (not parsed by anything).
    pub reason: String,
}

/// One item of a mailbox read: a message, or an entry that cannot be trusted.
///
/// Deliberately exhaustive: a new kind of item must be handled by every owner that reads
/// mailboxes — a wildcard arm could only pass it, moving a cursor over a message.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message whose checksum holds.
    Message(Entry),
    /// An entry at this place failed its checksum or did not decode.
    Damaged(DamagedEntry),
}

impl Delivery {
    /// The shard the item was read from.
    pub fn shard(&self) -> Shard {
        match self {
            Delivery::Message(e) => e.shard,
            Delivery::Damaged(d) => d.shard,
        }
    }

    /// The item's offset in its shard.
    pub fn offset(&self) -> u64 {
        match self {
            Delivery::Message(e) => e.offset,
            Delivery::Damaged(d) => d.offset,
        }
    }
}

/// The delivery of one row found at (`shard`, `offset`), given the outcome of decoding and
/// verifying it: a bad checksum, a value no writer produces, or a column that does not
/// decode become [`Delivery::Damaged`]; any other error (the database failed) is returned.
pub(crate) fn deliver(
    shard: Shard,
    offset: u64,
    decoded: Result<Entry, JournalError>,
) -> Result<Delivery, JournalError> {
    let reason = match decoded {
        Ok(entry) => return Ok(Delivery::Message(entry)),
        Err(JournalError::Checksum { .. }) => "checksum mismatch".to_owned(),
        Err(JournalError::Corrupt { reason, .. }) => reason,
        Err(JournalError::Persistence(sqlx::Error::ColumnDecode { index, source })) => {
            format!("column {index} does not decode: {source}")
        }
        Err(other) => return Err(other),
    };
    Ok(Delivery::Damaged(DamagedEntry {
        shard,
        offset,
        reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_failures_become_damaged_and_database_errors_do_not() {
        let d = deliver(
            3,
            9,
            Err(JournalError::Checksum {
                shard: 3,
                offset: 9,
            }),
        )
        .unwrap();
        assert!(matches!(
            d,
            Delivery::Damaged(DamagedEntry { shard: 3, offset: 9, ref reason }) if reason == "checksum mismatch"
        ));
        let d = deliver(
            1,
            2,
            Err(JournalError::Corrupt {
                shard: 1,
                offset: 2,
                reason: "unknown entry kind 9".into(),
            }),
        )
        .unwrap();
        assert_eq!((d.shard(), d.offset()), (1, 2));
        let err = deliver(
            0,
            1,
            Err(JournalError::Persistence(sqlx::Error::PoolTimedOut)),
        );
        assert!(matches!(err, Err(JournalError::Persistence(_))));
    }
}
