//! The pool a single statement runs on, for SQL that is the same on both backends: one
//! source, expanded once per driver by [`on_pool!`].

use sqlx::{PgPool, SqlitePool};

/// The pool a statement runs on, chosen by its backend.
#[derive(Clone, Copy)]
pub(crate) enum Pool<'a> {
    /// PostgreSQL.
    Postgres(&'a PgPool),
    /// SQLite.
    Sqlite(&'a SqlitePool),
}

/// Runs `$body` with `$p` bound to the pool inside `$pool` (a [`Pool`]): the same source
/// for both backends.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::pool::Pool::Postgres($p) => $body,
            $crate::pool::Pool::Sqlite($p) => $body,
        }
    };
}
pub(crate) use on_pool;
