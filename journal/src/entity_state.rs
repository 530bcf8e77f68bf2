//! The `entity_state` table (migrations 0003): each entity's latest state as JSON, with
//! the seq it reflects, kept by the engine's `StateProjection`. Its SQL lives here, beside
//! the migrations that own the table.

use crate::AnyTx;
use crate::any::AnyJournal;
use crate::error::Result;
use crate::sql::sql;

/// Reads the stored (seq, state as JSON text); both backends return the JSON as text.
const SELECT: &str =
    "SELECT seq, CAST(state AS TEXT) FROM entity_state WHERE entity_type = $1 AND entity_id = $2";

impl AnyTx {
    /// The stored state of an entity (seq, JSON text), read inside this transaction.
    pub async fn entity_state(
        &mut self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Option<(u64, String)>> {
        let rows = self
            .fetch_all(sql(SELECT).bind(entity_type).bind(entity_id))
            .await?;
        rows.first()
            .map(|r| Ok((r.get::<i64>(0)? as u64, r.get::<String>(1)?)))
            .transpose()
    }

    /// Stores an entity's state (JSON text) at `seq`, replacing what was stored. The one
    /// statement that differs by backend: PostgreSQL keeps the state as `JSONB` (queryable
    /// with its operators), SQLite as text — a portable cast to `JSONB` would give SQLite a
    /// numeric affinity that turns a state like `5` into a number.
    pub async fn store_entity_state(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        seq: u64,
        updated_at: i64,
        state_json: &str,
    ) -> Result<()> {
        let value = match self {
            AnyTx::Postgres(_) => "$5::JSONB",
            AnyTx::Sqlite(_) => "$5",
        };
        let text = format!(
            "INSERT INTO entity_state (entity_type, entity_id, seq, updated_at, state)
             VALUES ($1, $2, $3, $4, {value})
             ON CONFLICT (entity_type, entity_id) DO UPDATE
                SET seq = excluded.seq, updated_at = excluded.updated_at, state = excluded.state"
        );
        self.execute(
            sql(&text)
                .bind(entity_type)
                .bind(entity_id)
                .bind(seq as i64)
                .bind(updated_at)
                .bind(state_json),
        )
        .await?;
        Ok(())
    }
}

impl AnyJournal {
    /// The stored state of an entity (seq, JSON text), as last committed.
    pub async fn entity_state(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Option<(u64, String)>> {
        self.fetch_optional(sql(SELECT).bind(entity_type).bind(entity_id))
            .await?
            .map(|r| Ok((r.get::<i64>(0)? as u64, r.get::<String>(1)?)))
            .transpose()
    }
}
