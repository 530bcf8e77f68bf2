//! A shard's trouble: why its owner's reads or commits fail, and since when.
//!
//! The owner retries errors that may pass (a dropped connection, a failing inline
//! projection) with back-off; while it does, the cause is recorded on the shard's row so
//! that any process sees it (`entlog status`), and cleared with the next success. A
//! record is best effort: when the database itself is out of reach, so is the record,
//! and the runner's log and metrics are what remains.

use crate::any::AnyJournal;
use crate::error::Result;
use crate::shard::Shard;
use crate::time::Timestamp;

impl AnyJournal {
    /// Records (`Some((cause, since))`) or clears (`None`) a shard's trouble.
    pub async fn set_trouble(
        &self,
        shard: Shard,
        trouble: Option<(&str, Timestamp)>,
    ) -> Result<()> {
        let (cause, since) = match trouble {
            Some((c, t)) => (Some(c), Some(t.as_micros())),
            None => (None, None),
        };
        match self {
            AnyJournal::Postgres(j) => {
                sqlx::query("UPDATE shards SET trouble = $2, trouble_since = $3 WHERE shard = $1")
                    .bind(shard as i32)
                    .bind(cause)
                    .bind(since)
                    .execute(j.pool())
                    .await?;
            }
            AnyJournal::Sqlite(j) => {
                sqlx::query("UPDATE shards SET trouble = ?2, trouble_since = ?3 WHERE shard = ?1")
                    .bind(shard as i64)
                    .bind(cause)
                    .bind(since)
                    .execute(j.writer())
                    .await?;
            }
        }
        Ok(())
    }
}
