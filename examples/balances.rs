//! A read model: account balances kept in a SQL table by a projection, queried with SQL.
//!
//! Run with `cargo run --example balances`. It creates `balances.db` in the working
//! directory (and removes it at the end): accounts receive deposits and withdrawals,
//! the `balances` projection folds their events into a table, and plain SQL answers
//! "which accounts hold more than 100?" — exactly once per event, whatever crashes.
#![allow(clippy::unwrap_used)]

mod logs;

use std::time::Duration;

use entlog::journal::{AnyJournal, AnyTx, Entry};
use entlog::projections::{Projection, ProjectionError, status};
use entlog::{Cluster, Config, Context, EngineError, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};

struct Account;

#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Deposited(i64),
    Withdrew(i64),
}

impl Entity for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Reply = i64;
    type State = i64;

    async fn handle(
        &self,
        balance: &i64,
        cmd: Command,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        match cmd {
            Command::Deposit(n) => Ok(Outcome::new(vec![Event::Deposited(n)], balance + n)),
            Command::Withdraw(n) if n > *balance => Err(Rejection::new("insufficient funds")),
            Command::Withdraw(n) => Ok(Outcome::new(vec![Event::Withdrew(n)], balance - n)),
        }
    }

    fn apply(balance: &mut i64, event: &Event) {
        match event {
            Event::Deposited(n) => *balance += n,
            Event::Withdrew(n) => *balance -= n,
        }
    }
}

/// Folds account events into `balances (account, cents)`.
struct Balances;

impl Projection for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == Account::TYPE
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        let AnyTx::Sqlite(tx) = tx else {
            return Err(ProjectionError::Handler(
                "this example runs on SQLite".into(),
            ));
        };
        for e in events {
            let delta = match entlog::engine::decode_event::<Account>(e)? {
                Event::Deposited(n) => n,
                Event::Withdrew(n) => -n,
            };
            sqlx::query(
                "INSERT INTO balances (account, cents) VALUES (?1, ?2)
                 ON CONFLICT (account) DO UPDATE SET cents = cents + excluded.cents",
            )
            .bind(e.entity.entity_id())
            .bind(delta)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        if let AnyTx::Sqlite(tx) = tx {
            sqlx::query("DELETE FROM balances")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), EngineError> {
    // Warnings and errors on stderr (RUST_LOG for more): see examples/logs/mod.rs.
    logs::init();
    let path = "balances.db";
    let cluster = Cluster::builder()
        .sqlite(path)
        .config(Config::default().shard_count(4))
        .entity(Account)
        .projection(Balances)
        .start()
        .await?;
    let AnyJournal::Sqlite(db) = cluster.journal().clone() else {
        unreachable!("opened as SQLite")
    };
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)",
    )
    .execute(db.writer())
    .await
    .unwrap();

    for (i, account) in ["ada", "grace", "edsger", "barbara", "tony"]
        .iter()
        .enumerate()
    {
        let a = cluster.entity::<Account>(account);
        a.ask(Command::Deposit(50 * (i as i64 + 1))).await?;
        a.ask(Command::Deposit(20)).await?;
        let _ = a.ask(Command::Withdraw(60)).await; // rejected for the poorest
    }

    // The projection runs behind the entities: wait until it has caught up.
    loop {
        let shards = status(cluster.journal(), "balances").await?;
        if shards.iter().all(|s| s.lag_events == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rich: Vec<(String, i64)> =
        sqlx::query_as("SELECT account, cents FROM balances WHERE cents > 100 ORDER BY cents DESC")
            .fetch_all(db.reader())
            .await
            .unwrap();
    println!("accounts holding more than 100:");
    for (account, cents) in rich {
        println!("  {account:<8} {cents:>5}");
    }
    cluster.shutdown().await?;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
