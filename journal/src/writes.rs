//! The journal's bookkeeping writes whose SQL is the same on both backends: an entity's
//! snapshot, a consumer's cursor, and the records of damaged entries.
//!
//! As in `read.rs`, each is one SQL text with `$n` placeholders run on the [`Pool`] the
//! backend passes (PostgreSQL's pool of single statements, SQLite's writer); every one is
//! a single statement, atomic on its own, so no transaction is opened here. The writes on
//! the message path (appends, commits, promotion) differ and stay with their backends.

use uuid::Uuid;

use crate::damaged::DamagedEntry;
use crate::envelope::{CrcDomain, checksum};
use crate::error::Result;
use crate::pool::{Pool, on_pool};
use crate::records::NewSnapshot;
use crate::shard::Shard;
use crate::time::Timestamp;

/// Damaged entries recorded per statement: four parameters each, well under both
/// backends' limits on bound parameters.
const DAMAGED_PER_STATEMENT: usize = 1_000;

/// Stores `snapshot` (its checksum computed here) unless a newer one is stored already.
pub(crate) async fn save_snapshot(
    pool: Pool<'_>,
    snapshot: &NewSnapshot,
    max_payload_bytes: usize,
    now: Timestamp,
) -> Result<()> {
    snapshot.state.check(max_payload_bytes)?;
    let crc = checksum(
        CrcDomain::Snapshot,
        &snapshot.entity,
        Some(snapshot.seq),
        &Uuid::nil(),
        &snapshot.state,
    );
    on_pool!(pool, p => {
        sqlx::query(
            "INSERT INTO snapshots (entity_type, entity_id, seq, type_tag, state_version, payload, crc, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (entity_type, entity_id) DO UPDATE
                SET seq = excluded.seq, type_tag = excluded.type_tag,
                    state_version = excluded.state_version, payload = excluded.payload,
                    crc = excluded.crc, created_at = excluded.created_at
              WHERE snapshots.seq <= excluded.seq",
        )
        .bind(snapshot.entity.entity_type())
        .bind(snapshot.entity.entity_id())
        .bind(snapshot.seq as i64)
        .bind(&snapshot.state.type_tag)
        .bind(snapshot.state.version as i32)
        .bind(&snapshot.state.bytes)
        .bind(i64::from(crc))
        .bind(now.as_micros())
        .execute(p)
        .await?;
    });
    Ok(())
}

/// Moves the cursor of consumer `$1` on shard `$2` to offset `$3`, never back: for
/// [`advance_cursor`], and for a commit that moves a cursor inside its transaction.
pub(crate) const ADVANCE_CURSOR: &str = r#"INSERT INTO cursors (consumer, shard, "offset") VALUES ($1, $2, $3)
    ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = excluded."offset"
     WHERE cursors."offset" < excluded."offset""#;

/// Moves `consumer`'s cursor on `shard` to `offset`, never back.
pub(crate) async fn advance_cursor(
    pool: Pool<'_>,
    consumer: &str,
    shard: Shard,
    offset: u64,
) -> Result<()> {
    on_pool!(pool, p => {
        sqlx::query(ADVANCE_CURSOR)
            .bind(consumer)
            .bind(shard as i32)
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .execute(p)
            .await?;
    });
    Ok(())
}

/// Records `entries` as damaged at `now`; an entry recorded already keeps its first record.
pub(crate) async fn record_damaged(
    pool: Pool<'_>,
    entries: &[DamagedEntry],
    now: Timestamp,
) -> Result<()> {
    for chunk in entries.chunks(DAMAGED_PER_STATEMENT) {
        let values = (0..chunk.len())
            .map(|i| {
                let n = 4 * i;
                format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            r#"INSERT INTO damaged_entries (shard, "offset", reason, recorded_at) VALUES {values}
               ON CONFLICT (shard, "offset") DO NOTHING"#
        );
        on_pool!(pool, p => {
            // Its text varies with the count: not worth a place in the statement cache.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for e in chunk {
                query = query
                    .bind(e.shard as i32)
                    .bind(i64::try_from(e.offset).unwrap_or(i64::MAX))
                    .bind(e.reason.as_str())
                    .bind(now.as_micros());
            }
            query.execute(p).await?;
        });
    }
    Ok(())
}
