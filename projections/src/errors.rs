//! Recorded projection failures (`projection_errors`), visible to status tools. One SQL
//! text serves both backends (`entlog_journal::sql`).

use entlog_journal::{AnyJournal, Journal, JournalError, Shard, sql};

/// Records that `projection` is stopped at `offset` of `shard`.
pub(crate) async fn record(
    journal: &AnyJournal,
    projection: &str,
    shard: Shard,
    offset: u64,
    error: &str,
) -> Result<(), JournalError> {
    journal
        .execute(
            sql(r#"INSERT INTO projection_errors (projection, shard, "offset", error, failed_at, attempts)
                   VALUES ($1, $2, $3, $4, $5, 1)
                   ON CONFLICT (projection, shard) DO UPDATE
                      SET "offset" = excluded."offset", error = excluded.error,
                          failed_at = excluded.failed_at, attempts = projection_errors.attempts + 1"#)
            .bind(projection)
            .bind(i64::from(shard))
            .bind(offset as i64)
            .bind(error)
            .bind(journal.now().as_micros()),
        )
        .await?;
    Ok(())
}

/// Clears the recorded failure of (projection, shard).
pub(crate) async fn clear(
    journal: &AnyJournal,
    projection: &str,
    shard: Shard,
) -> Result<(), JournalError> {
    journal
        .execute(
            sql("DELETE FROM projection_errors WHERE projection = $1 AND shard = $2")
                .bind(projection)
                .bind(i64::from(shard)),
        )
        .await?;
    Ok(())
}

/// Recorded failures of a projection: (shard, offset, error).
pub(crate) async fn list(
    journal: &AnyJournal,
    projection: &str,
) -> Result<Vec<(Shard, u64, String)>, JournalError> {
    journal
        .fetch_all(
            sql(
                r#"SELECT CAST(shard AS BIGINT), "offset", error FROM projection_errors
                    WHERE projection = $1"#,
            )
            .bind(projection),
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.get::<i64>(0)? as Shard,
                r.get::<i64>(1)? as u64,
                r.get::<String>(2)?,
            ))
        })
        .collect()
}

/// Events of `shard` after `offset`.
pub(crate) async fn events_after(
    journal: &AnyJournal,
    shard: Shard,
    offset: u64,
) -> Result<u64, JournalError> {
    let row = journal
        .fetch_optional(
            sql(r#"SELECT count(*) FROM journal WHERE shard = $1 AND "offset" > $2 AND kind = 2"#)
                .bind(i64::from(shard))
                .bind(offset as i64),
        )
        .await?;
    Ok(row.map_or(Ok(0), |r| r.get::<i64>(0))? as u64)
}
