//! Appends on PostgreSQL: one call of the SQL function `append_entries`
//! (migrations/postgres/0012_headers.sql, its latest definition), which locks the head rows
//! of the shards written to, dedups message ids, parks messages due later and notifies the
//! shards' owners; then the shards are woken in this process.

use super::PgJournal;
use super::commit::{BindEntries, append_rows};
use crate::columns::append_columns;
use crate::envelope::NewMessage;
use crate::error::Result;
use crate::journal::Journal;
use crate::outcomes::append_outcomes;
use crate::records::AppendOutcome;

impl PgJournal {
    /// [`Journal::append`]: one call of `append_entries`.
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
        // Messages only for shards this process's runner holds: its in-process wake-up is
        // enough (see `held_here.rs`).
        let channel = if self.inner.held_here.all(&entries.shard) {
            None
        } else {
            self.channel()
        };
        let rows = append_rows(
            sqlx::query(
                "SELECT * FROM append_entries($1, $2, NULL, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(now.as_micros())
            .bind(channel)
            .bind_entries(&entries)
            .fetch_all(&self.inner.statements)
            .await?,
        )?;
        self.wake(&entries, &rows);
        append_outcomes(self, &entries, &rows, &sources).await
    }
}
