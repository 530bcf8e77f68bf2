//! Appends on SQLite: one transaction on the writer connection that places the messages
//! (`place.rs`: offsets, dedup, scheduling) — optimistically, without looking each id up,
//! and again with lookups if the journal's unique index met a duplicate; then the shards
//! are woken in this process.

use super::SqliteJournal;
use super::place::{self, Dedup};
use crate::columns::append_columns;
use crate::envelope::NewMessage;
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::outcomes::append_outcomes;
use crate::records::AppendOutcome;

impl SqliteJournal {
    /// [`Journal::append`]: one transaction on the writer connection.
    pub(super) async fn append_messages(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<AppendOutcome>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let (entries, sources) = append_columns(
            messages,
            &self.inner.shard_map,
            self.inner.options.max_payload_bytes,
            now,
        )?;
        let mut tx = self.inner.writer.begin().await?;
        let placed = match place::place(&mut tx, &entries, now, None, Dedup::Optimistic).await? {
            Some(placed) => placed,
            None => {
                // A duplicate among them: start over, looking each id up.
                tx.rollback().await?;
                tx = self.inner.writer.begin().await?;
                place::place(&mut tx, &entries, now, None, Dedup::Lookup)
                    .await?
                    .ok_or_else(|| {
                        JournalError::Internal("placement with lookups cannot conflict".into())
                    })?
            }
        };
        tx.commit().await?;
        self.wake(&entries, &placed);
        append_outcomes(self, &entries, &placed, &sources).await
    }
}
