//! Appends on PostgreSQL: one call of the SQL function `append_entries`
//! (migrations/postgres/0012_headers.sql, its latest definition), which locks the head rows
//! of the shards written to, dedups message ids, parks messages due later and notifies the
//! shards' owners. What comes before and after (the columns, the wake-ups, the outcomes)
//! is the same on both backends: see `same_on_both.rs`.

use super::PgJournal;
use super::commit::{BindEntries, append_rows};
use crate::columns::{EntryColumns, Placed};
use crate::error::Result;
use crate::time::Timestamp;

impl PgJournal {
    /// Places appended messages, laid out as `entries`, in one call of `append_entries`.
    pub(super) async fn place_appended(
        &self,
        entries: &EntryColumns,
        now: Timestamp,
    ) -> Result<Vec<Placed>> {
        // Messages only for shards this process's runner holds: its in-process wake-up is
        // enough (see `held_here.rs`).
        let channel = if self.inner.held_here.all(&entries.shard) {
            None
        } else {
            self.channel()
        };
        append_rows(
            sqlx::query(
                "SELECT * FROM append_entries($1, $2, NULL, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(now.as_micros())
            .bind(channel)
            .bind_entries(entries)
            .fetch_all(&self.inner.statements)
            .await?,
        )
    }
}
