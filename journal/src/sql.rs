//! One code path for an application's own SQL on either backend: a read model's
//! statements written once, with `$1`, `$2`… placeholders, bound with Rust values and read
//! back as Rust values, whether the journal is PostgreSQL or SQLite.
//!
//! ```text
//!   tx.execute(sql("INSERT INTO carts (id, items) VALUES ($1, $2)").bind(id).bind(n)).await?
//!   journal.fetch_all(sql("SELECT id, items FROM carts WHERE items > $1").bind(0_i64)).await?
//!       → rows; row.get::<String>(0)?, row.get::<i64>("items")?
//! ```
//!
//! A value binds and decodes when both drivers know its type (`i64`, `i32`, `f64`, `bool`,
//! `String`/`&str`, `Vec<u8>`/`&[u8]`, `Uuid`, and `Option` of each). The SQL itself must
//! be valid on both (`BIGINT`, `TEXT`, `ON CONFLICT … DO UPDATE` are; `BYTEA`/`BLOB` are
//! not — SQLite accepts any type name, so write the PostgreSQL one). On SQLite, `$n` is
//! rewritten to `?n` (outside quotes), so each placeholder keeps its number.

use sqlx::{Postgres, Row as _, Sqlite};

use crate::error::Result;

/// A statement and its bound values, not yet tied to a backend. Build it with [`sql`].
pub struct Sql<'q> {
    text: &'q str,
    binds: Vec<Box<dyn Bind<'q> + 'q>>,
}

/// A statement with `$1`, `$2`… placeholders; bind values in order with [`Sql::bind`].
pub fn sql(text: &str) -> Sql<'_> {
    Sql {
        text,
        binds: Vec::new(),
    }
}

/// A value both drivers can bind.
pub trait Value<'q>:
    sqlx::Encode<'q, Postgres>
    + sqlx::Type<Postgres>
    + sqlx::Encode<'q, Sqlite>
    + sqlx::Type<Sqlite>
    + Send
    + 'q
{
}

impl<'q, T> Value<'q> for T where
    T: sqlx::Encode<'q, Postgres>
        + sqlx::Type<Postgres>
        + sqlx::Encode<'q, Sqlite>
        + sqlx::Type<Sqlite>
        + Send
        + 'q
{
}

/// A bound value, replayed onto the backend's query when it runs.
trait Bind<'q>: Send {
    fn onto_pg(
        self: Box<Self>,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
    fn onto_sqlite(
        self: Box<Self>,
        q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;
}

struct Bound<T>(T);

impl<'q, T: Value<'q>> Bind<'q> for Bound<T> {
    fn onto_pg(
        self: Box<Self>,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.0)
    }

    fn onto_sqlite(
        self: Box<Self>,
        q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        q.bind(self.0)
    }
}

impl<'q> Sql<'q> {
    /// Binds the next placeholder (`$1` first).
    pub fn bind<T: Value<'q>>(mut self, value: T) -> Self {
        self.binds.push(Box::new(Bound(value)));
        self
    }

    pub(crate) fn pg(self) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text));
        for b in self.binds {
            q = b.onto_pg(q);
        }
        q
    }

    pub(crate) fn sqlite(self) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(numbered_for_sqlite(self.text)));
        for b in self.binds {
            q = b.onto_sqlite(q);
        }
        q
    }
}

/// `$n` → `?n` outside string literals, quoted identifiers and comments: SQLite numbers
/// `$name` parameters by first appearance, `?n` by `n`.
pub(crate) fn numbered_for_sqlite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    out.push(c);
                    for c in chars.by_ref() {
                        out.push(c);
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
                _ => out.push(c),
            },
        }
    }
    out
}

/// A row read by [`AnyJournal::fetch_all`] or [`AnyTx::fetch_all`].
#[non_exhaustive]
pub enum Row {
    /// PostgreSQL.
    Postgres(sqlx::postgres::PgRow),
    /// SQLite.
    Sqlite(sqlx::sqlite::SqliteRow),
}

/// A value both drivers can decode.
pub trait FromValue:
    for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
    + for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
{
}

impl<T> FromValue for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
{
}

/// A column, by position (from 0) or by name.
pub trait Column:
    sqlx::ColumnIndex<sqlx::postgres::PgRow> + sqlx::ColumnIndex<sqlx::sqlite::SqliteRow>
{
}

impl<I> Column for I where
    I: sqlx::ColumnIndex<sqlx::postgres::PgRow> + sqlx::ColumnIndex<sqlx::sqlite::SqliteRow>
{
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (backend, columns) = match self {
            Row::Postgres(r) => ("postgres", r.len()),
            Row::Sqlite(r) => ("sqlite", r.len()),
        };
        write!(f, "Row({backend}, {columns} columns)")
    }
}

impl Row {
    /// The value of a column, by position (from 0) or name.
    pub fn get<T: FromValue>(&self, column: impl Column) -> Result<T> {
        Ok(match self {
            Row::Postgres(r) => r.try_get(column)?,
            Row::Sqlite(r) => r.try_get(column)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::numbered_for_sqlite;

    #[test]
    fn placeholders_keep_their_numbers_outside_quotes() {
        assert_eq!(
            numbered_for_sqlite(
                "UPDATE t SET a = $2 WHERE b = $1 AND c = '$3' -- $4\n AND d = \"$5\" AND e = $10"
            ),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = '$3' -- $4\n AND d = \"$5\" AND e = ?10"
        );
    }
}
