//! The `bank_balances` read model: the inline projection that folds account events into
//! the `bank_balances` table, and the queries the example checks the books with (the sums
//! in one consistent snapshot, and each account's row).

use std::collections::BTreeMap;

use entlog::journal::{AnyTx, Entry, sql};
use entlog::projections::{Projection, ProjectionError};
use entlog::{AnyJournal, Entity};
use sqlx::{PgPool, SqlitePool};

use crate::account::{Account, Event};

const BANK_BALANCES: &str = "CREATE TABLE IF NOT EXISTS bank_balances (
    account TEXT PRIMARY KEY,
    balance BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    received BIGINT NOT NULL)";

/// Adds a batch's changes to an account's row (the same SQL on both backends).
const UPSERT: &str = "INSERT INTO bank_balances (account, balance, sent, received)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (account) DO UPDATE SET
        balance = bank_balances.balance + excluded.balance,
        sent = bank_balances.sent + excluded.sent,
        received = bank_balances.received + excluded.received";

/// Folds account events into `bank_balances (account, balance, sent, received)`.
pub(crate) struct BankBalances;

impl Projection for BankBalances {
    fn name(&self) -> &str {
        "bank_balances"
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == Account::TYPE
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        // One write per account and batch: (balance, sent, received) changes.
        let mut deltas: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
        for e in events {
            let d = deltas.entry(e.entity.entity_id()).or_default();
            match entlog::engine::decode_event::<Account>(e)? {
                Event::Opened { initial } => d.0 += initial as i64,
                Event::Debited { amount, .. } => {
                    d.0 -= amount as i64;
                    d.1 += amount as i64;
                }
                Event::Credited { amount, .. } => {
                    d.0 += amount as i64;
                    d.2 += amount as i64;
                }
            }
        }
        for (account, (balance, sent, received)) in deltas {
            tx.execute(
                sql(UPSERT)
                    .bind(account)
                    .bind(balance)
                    .bind(sent)
                    .bind(received),
            )
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        tx.execute(sql("DELETE FROM bank_balances")).await?;
        Ok(())
    }
}

/// The read model's connection pool, for queries.
#[derive(Clone)]
pub(crate) enum ReadModel {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Sums over `bank_balances`, read in one statement (one consistent snapshot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Totals {
    pub(crate) balance: i64,
    pub(crate) sent: i64,
    pub(crate) received: i64,
}

/// One `bank_balances` row: (account, balance, sent, received).
pub(crate) type Row = (String, i64, i64, i64);

const TOTALS: &str = "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT),
        CAST(COALESCE(SUM(sent), 0) AS BIGINT),
        CAST(COALESCE(SUM(received), 0) AS BIGINT)
   FROM bank_balances";
const ROWS: &str = "SELECT account, balance, sent, received FROM bank_balances ORDER BY account";

impl ReadModel {
    /// Creates the table; on SQLite through the writer, the journal's only write connection.
    pub(crate) async fn create(journal: &AnyJournal) -> Result<Self, sqlx::Error> {
        Ok(match journal {
            AnyJournal::Sqlite(j) => {
                sqlx::query(BANK_BALANCES).execute(j.writer()).await?;
                ReadModel::Sqlite(j.reader().clone())
            }
            AnyJournal::Postgres(j) => {
                // The pool's search_path is the journal's schema: the table lives there.
                sqlx::query(BANK_BALANCES).execute(j.pool()).await?;
                ReadModel::Postgres(j.pool().clone())
            }
            // `AnyJournal` may gain backends; this read model knows these two.
            other => {
                return Err(sqlx::Error::Configuration(
                    format!("no bank_balances table for {other:?}").into(),
                ));
            }
        })
    }

    pub(crate) async fn totals(&self) -> Result<Totals, sqlx::Error> {
        let (balance, sent, received) = match self {
            ReadModel::Sqlite(p) => sqlx::query_as(TOTALS).fetch_one(p).await?,
            ReadModel::Postgres(p) => sqlx::query_as(TOTALS).fetch_one(p).await?,
        };
        Ok(Totals {
            balance,
            sent,
            received,
        })
    }

    pub(crate) async fn rows(&self) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            ReadModel::Sqlite(p) => sqlx::query_as(ROWS).fetch_all(p).await,
            ReadModel::Postgres(p) => sqlx::query_as(ROWS).fetch_all(p).await,
        }
    }
}
