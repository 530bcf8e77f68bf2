//! Recording an entity type's shard group in the journal's metadata (`group:<type>`), the
//! first time any process registers the type, so that every process routes it alike (see
//! `shard_groups.rs` for why a type never moves).

use crate::any::AnyJournal;
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::sql::sql;

/// The metadata key that records an entity type's group.
fn type_key(entity_type: &str) -> String {
    format!("group:{entity_type}")
}

impl AnyJournal {
    /// Records that `entity_type` belongs to `group` — in the journal the first time, so
    /// that every process routes the type alike — and routes it so in this process.
    /// Refused with [`JournalError::UnknownShardGroup`] for a group the journal lacks, and
    /// with [`JournalError::GroupMismatch`] when the type was recorded in another group.
    /// A journal with no named group has nothing to record: every type is in the default
    /// group, so only the name is checked.
    pub async fn record_group(&self, entity_type: &str, group: &str) -> Result<()> {
        crate::names::check_name(crate::error::Field::EntityType, entity_type)?;
        let map = self.shard_map();
        if map.layout().range(group).is_none() || map.layout().is_single() {
            return map.declare(entity_type, group);
        }
        if map.recorded_in(entity_type, group) {
            return Ok(());
        }
        let key = type_key(entity_type);
        self.execute(
            sql("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key.as_str())
                .bind(group),
        )
        .await?;
        let stored: String = self
            .fetch_optional(sql("SELECT value FROM meta WHERE key = $1").bind(key.as_str()))
            .await?
            .ok_or_else(|| JournalError::Internal(format!("metadata {key} vanished")))?
            .get(0)?;
        map.learn(entity_type, &stored, true)?;
        map.declare(entity_type, group)
    }
}
