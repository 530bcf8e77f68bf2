//! Read-model rows and the statements that write them, shared by the projection and the
//! raw baselines: `Agg` aggregates a batch per entity into `Rows`, written with one
//! upsert or plain multi-row INSERT (`Write`) by `pg_write`, `sqlite_write` or, in a
//! journal transaction, `tx_write`; `create_table` makes a read-model table and
//! `check_table` compares one with the fold.

use std::collections::HashMap;

use entlog_journal::{AnyJournal, AnyTx, sql};
use sqlx::{AssertSqlSafe, PgConnection, QueryBuilder, Sqlite, SqliteConnection};

use crate::fill::Fold;

/// Read-model rows, column-wise, sorted by entity id.
#[derive(Default)]
pub(crate) struct Rows {
    ids: Vec<String>,
    totals: Vec<i64>,
    events: Vec<i64>,
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Aggregates a batch of (entity id, value) per entity.
pub(crate) struct Agg<'a>(HashMap<&'a str, (i64, i64)>);

impl<'a> Agg<'a> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Agg(HashMap::with_capacity(n))
    }

    pub(crate) fn add(&mut self, id: &'a str, v: i64) {
        let a = self.0.entry(id).or_insert((0, 0));
        a.0 += v;
        a.1 += 1;
    }

    pub(crate) fn rows(self) -> Rows {
        let mut v: Vec<_> = self.0.into_iter().collect();
        // One lock order for every writer.
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut rows = Rows {
            ids: Vec::with_capacity(v.len()),
            totals: Vec::with_capacity(v.len()),
            events: Vec::with_capacity(v.len()),
        };
        for (id, (t, n)) in v {
            rows.ids.push(id.to_owned());
            rows.totals.push(t);
            rows.events.push(n);
        }
        rows
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Upsert,
    Insert,
}

fn short_write(table: &str, done: u64, rows: usize) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{table}: wrote {done} rows of {rows}"))
}

/// One `INSERT … SELECT * FROM UNNEST(…)` statement, upserting or plain.
pub(crate) async fn pg_write(
    conn: &mut PgConnection,
    table: &str,
    rows: &Rows,
    how: Write,
) -> sqlx::Result<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    let sql = match how {
        Write::Upsert => format!(
            "INSERT INTO {table} AS s (entity_id, total, events)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[])
             ON CONFLICT (entity_id) DO UPDATE
                SET total = s.total + EXCLUDED.total, events = s.events + EXCLUDED.events"
        ),
        Write::Insert => format!(
            "INSERT INTO {table} (entity_id, total, events)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[])"
        ),
    };
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(&rows.ids)
        .bind(&rows.totals)
        .bind(&rows.events)
        .execute(conn)
        .await?;
    if done.rows_affected() != rows.len() as u64 {
        return Err(short_write(table, done.rows_affected(), rows.len()));
    }
    Ok(())
}

/// One multi-row `INSERT … VALUES` statement, upserting or plain.
pub(crate) async fn sqlite_write(
    conn: &mut SqliteConnection,
    table: &str,
    rows: &Rows,
    how: Write,
) -> sqlx::Result<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("INSERT INTO {table} (entity_id, total, events) "));
    q.push_values(0..rows.len(), |mut b, i| {
        b.push_bind(rows.ids[i].clone())
            .push_bind(rows.totals[i])
            .push_bind(rows.events[i]);
    });
    if how == Write::Upsert {
        q.push(format!(
            " ON CONFLICT (entity_id) DO UPDATE
                SET total = {table}.total + excluded.total, events = {table}.events + excluded.events"
        ));
    }
    let done = q.build().execute(conn).await?;
    if done.rows_affected() != rows.len() as u64 {
        return Err(short_write(table, done.rows_affected(), rows.len()));
    }
    Ok(())
}

pub(crate) async fn tx_write(
    tx: &mut AnyTx,
    table: &str,
    rows: &Rows,
    how: Write,
) -> sqlx::Result<()> {
    match tx {
        AnyTx::Postgres(tx) => pg_write(tx, table, rows, how).await,
        AnyTx::Sqlite(tx) => sqlite_write(tx, table, rows, how).await,
        other => unreachable!("no writer for {other:?}"),
    }
}

async fn exec(j: &AnyJournal, text: String) {
    j.execute(sql(&text)).await.unwrap();
}

/// Creates a read-model table: keyed by entity for upserts, or a plain heap with a
/// non-unique index on `entity_id` for the plain-INSERT baseline.
pub(crate) async fn create_table(j: &AnyJournal, table: &str, how: Write) {
    exec(j, format!("DROP TABLE IF EXISTS {table}")).await;
    match how {
        Write::Upsert => {
            exec(
                j,
                format!(
                    "CREATE TABLE {table} (entity_id TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
                ),
            )
            .await;
        }
        Write::Insert => {
            exec(
                j,
                format!(
                    "CREATE TABLE {table} (entity_id TEXT NOT NULL, total BIGINT NOT NULL, events BIGINT NOT NULL)"
                ),
            )
            .await;
            exec(
                j,
                format!("CREATE INDEX {table}_entity ON {table} (entity_id)"),
            )
            .await;
        }
    }
}

/// Compares a table (summed per entity) with the fold; `None` when equal.
pub(crate) async fn check_table(
    j: &AnyJournal,
    label: &str,
    table: &str,
    fold: &Fold,
) -> Option<String> {
    let text = format!(
        "SELECT entity_id, CAST(SUM(total) AS BIGINT), CAST(SUM(events) AS BIGINT) FROM {table} GROUP BY entity_id"
    );
    let rows: Vec<(String, i64, i64)> = j
        .fetch_all(sql(&text))
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap()))
        .collect();
    let model: Fold = rows.into_iter().map(|(id, t, n)| (id, (t, n))).collect();
    if &model == fold {
        return None;
    }
    let missing = fold.keys().filter(|k| !model.contains_key(*k)).count();
    let extra = model.keys().filter(|k| !fold.contains_key(*k)).count();
    let differ = fold
        .iter()
        .filter(|(k, v)| model.get(*k).is_some_and(|m| m != *v))
        .count();
    let example = fold
        .iter()
        .find(|(k, v)| model.get(*k) != Some(*v))
        .map(|(k, v)| format!("; e.g. {k}: fold {v:?}, table {:?}", model.get(k)))
        .unwrap_or_default();
    Some(format!(
        "{label} {table} differs from the fold: {missing} entities missing, {extra} extra, {differ} with other values{example}"
    ))
}
