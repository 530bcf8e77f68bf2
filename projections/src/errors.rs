//! Recorded projection failures (`projection_errors`), visible to status tools.

use entlog_journal::{AnyJournal, Journal, JournalError, Shard};

/// Records that `projection` is stopped at `offset` of `shard`.
pub(crate) async fn record(
    journal: &AnyJournal,
    projection: &str,
    shard: Shard,
    offset: u64,
    error: &str,
) -> Result<(), JournalError> {
    let now = journal.now().as_micros();
    match journal {
        AnyJournal::Postgres(j) => {
            sqlx::query(
                r#"INSERT INTO projection_errors AS e (projection, shard, "offset", error, failed_at, attempts)
                   VALUES ($1, $2, $3, $4, $5, 1)
                   ON CONFLICT (projection, shard) DO UPDATE
                      SET "offset" = EXCLUDED."offset", error = EXCLUDED.error,
                          failed_at = EXCLUDED.failed_at, attempts = e.attempts + 1"#,
            )
            .bind(projection)
            .bind(shard as i32)
            .bind(offset as i64)
            .bind(error)
            .bind(now)
            .execute(j.pool())
            .await?;
        }
        AnyJournal::Sqlite(j) => {
            sqlx::query(
                r#"INSERT INTO projection_errors (projection, shard, "offset", error, failed_at, attempts)
                   VALUES (?1, ?2, ?3, ?4, ?5, 1)
                   ON CONFLICT (projection, shard) DO UPDATE
                      SET "offset" = excluded."offset", error = excluded.error,
                          failed_at = excluded.failed_at, attempts = projection_errors.attempts + 1"#,
            )
            .bind(projection)
            .bind(shard as i64)
            .bind(offset as i64)
            .bind(error)
            .bind(now)
            .execute(j.writer())
            .await?;
        }
    }
    Ok(())
}

/// Clears the recorded failure of (projection, shard).
pub(crate) async fn clear(
    journal: &AnyJournal,
    projection: &str,
    shard: Shard,
) -> Result<(), JournalError> {
    match journal {
        AnyJournal::Postgres(j) => {
            sqlx::query("DELETE FROM projection_errors WHERE projection = $1 AND shard = $2")
                .bind(projection)
                .bind(shard as i32)
                .execute(j.pool())
                .await?;
        }
        AnyJournal::Sqlite(j) => {
            sqlx::query("DELETE FROM projection_errors WHERE projection = ?1 AND shard = ?2")
                .bind(projection)
                .bind(shard as i64)
                .execute(j.writer())
                .await?;
        }
    }
    Ok(())
}

/// Recorded failures of a projection: (shard, offset, error).
pub(crate) async fn list(
    journal: &AnyJournal,
    projection: &str,
) -> Result<Vec<(Shard, u64, String)>, JournalError> {
    let rows: Vec<(i64, i64, String)> = match journal {
        AnyJournal::Postgres(j) => sqlx::query_as(
            r#"SELECT shard::BIGINT, "offset", error FROM projection_errors WHERE projection = $1"#,
        )
        .bind(projection)
        .fetch_all(j.pool())
        .await?,
        AnyJournal::Sqlite(j) => {
            sqlx::query_as(
                r#"SELECT shard, "offset", error FROM projection_errors WHERE projection = ?1"#,
            )
            .bind(projection)
            .fetch_all(j.reader())
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(s, o, e)| (s as Shard, o as u64, e))
        .collect())
}

/// Events of `shard` after `offset`.
pub(crate) async fn events_after(
    journal: &AnyJournal,
    shard: Shard,
    offset: u64,
) -> Result<u64, JournalError> {
    let n: i64 =
        match journal {
            AnyJournal::Postgres(j) => sqlx::query_scalar(
                r#"SELECT count(*) FROM journal WHERE shard = $1 AND "offset" > $2 AND kind = 2"#,
            )
            .bind(shard as i32)
            .bind(offset as i64)
            .fetch_one(j.pool())
            .await?,
            AnyJournal::Sqlite(j) => sqlx::query_scalar(
                r#"SELECT count(*) FROM journal WHERE shard = ?1 AND "offset" > ?2 AND kind = 2"#,
            )
            .bind(shard as i64)
            .bind(offset as i64)
            .fetch_one(j.reader())
            .await?,
        };
    Ok(n as u64)
}
