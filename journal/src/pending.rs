//! How many of an entity's messages wait for an answer: the check behind a bounded
//! mailbox.

use crate::any::AnyJournal;
use crate::envelope::EntityKey;
use crate::error::Result;
use crate::journal::Journal;
use crate::pool::{Pool, on_pool};

/// Unanswered messages of one entity in its shard: after `consumer`'s cursor (the
/// runner's mailbox), with no stored reply. Counts at most `at_most`, so the cost follows
/// the shard's backlog up to that bound, not the journal.
const UNANSWERED: &str = r#"
    SELECT count(*) FROM (
        SELECT 1 FROM journal j
         WHERE j.shard = $1
           AND j."offset" > COALESCE(
                 (SELECT c."offset" FROM cursors c WHERE c.consumer = $2 AND c.shard = $1), 0)
           AND j.kind = 1 AND j.entity_type = $3 AND j.entity_id = $4
           AND NOT EXISTS (SELECT 1 FROM replies r
                            WHERE r.message_id = j.message_id
                              AND r.entity_type = $3 AND r.entity_id = $4)
         LIMIT $5) AS waiting"#;

impl AnyJournal {
    /// Messages sent to `entity` that are not answered yet (up to `at_most`): those after
    /// `consumer`'s cursor on the entity's shard without a reply. Scheduled messages count
    /// once they are due.
    pub async fn unanswered(
        &self,
        entity: &EntityKey,
        consumer: &str,
        at_most: u64,
    ) -> Result<u64> {
        let shard = i32::try_from(self.shard_of(entity)).unwrap_or(i32::MAX);
        let limit = i64::try_from(at_most).unwrap_or(i64::MAX);
        // PostgreSQL's main pool, SQLite's readers; one statement for both.
        let pool = match self {
            AnyJournal::Postgres(j) => Pool::Postgres(j.pool()),
            AnyJournal::Sqlite(j) => Pool::Sqlite(j.reader()),
        };
        let count: i64 = on_pool!(pool, p => {
            sqlx::query_scalar(UNANSWERED)
                .bind(shard)
                .bind(consumer)
                .bind(entity.entity_type())
                .bind(entity.entity_id())
                .bind(limit)
                .fetch_one(p)
                .await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
