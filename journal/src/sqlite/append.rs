//! Appends on SQLite: one transaction on the writer connection that places the messages
//! (`place.rs`: offsets, dedup, scheduling) — optimistically, without looking each id up,
//! and again with lookups if the journal's unique index met a duplicate. What comes before
//! and after (the columns, the wake-ups, the outcomes) is the same on both backends: see
//! `same_on_both.rs`.

use super::SqliteJournal;
use super::place::{self, Dedup};
use crate::columns::{EntryColumns, Placed};
use crate::error::{JournalError, Result};
use crate::time::Timestamp;

impl SqliteJournal {
    /// Places appended messages, laid out as `entries`, in one transaction of the writer.
    pub(super) async fn place_appended(
        &self,
        entries: &EntryColumns,
        now: Timestamp,
    ) -> Result<Vec<Placed>> {
        let mut tx = self.inner.writer.begin().await?;
        let placed = match place::place(&mut tx, entries, now, &[], Dedup::Optimistic).await? {
            Some(placed) => placed,
            None => {
                // A duplicate among them: start over, looking each id up.
                tx.rollback().await?;
                tx = self.inner.writer.begin().await?;
                place::place(&mut tx, entries, now, &[], Dedup::Lookup)
                    .await?
                    .ok_or_else(|| {
                        JournalError::Internal("placement with lookups cannot conflict".into())
                    })?
            }
        };
        tx.commit().await?;
        Ok(placed)
    }
}
