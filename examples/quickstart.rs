//! entlog in one file: an `account` entity on the embedded SQLite journal.
//!
//! Run with `cargo run --example quickstart`. It creates `quickstart.db` in the working
//! directory, sends a few commands, stops the cluster, starts it again and shows that the
//! state was rebuilt from the journal. Run it twice: balances carry over between runs.
//!
//! With arguments, the same binary is the entlog CLI with this file's types registered,
//! so it decodes what it wrote:
//!
//! ```sh
//! cargo run --example quickstart -- inspect account/alice   # messages, events, replies
//! cargo run --example quickstart -- replay account/alice    # state after each event
//! cargo run --example quickstart -- status                  # shards, cursors, poison
//! cargo run --example quickstart -- demo postgres://postgres@127.0.0.1/test  # on PostgreSQL
//! ```
#![allow(clippy::unwrap_used)]

mod logs;

use std::process::ExitCode;

// An application enables entlog's `cli` feature and writes `entlog::cli::{Cli, Registry}`;
// the example uses the same crate under its own name, a dev-dependency.
use entlog::{Cluster, Config, Context, EngineError, Entity, Outcome, Rejection, StateProjection};
use entlog_cli::{Cli, Registry};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A bank account: its state is the fold of its events.
struct Account;

#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Deposit(u64),
    Withdraw(u64),
    Balance,
}

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Deposited(u64),
    Withdrew(u64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Balance {
    cents: u64,
    operations: u64,
}

impl Entity for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Reply = u64;
    type State = Balance;

    async fn handle(
        &self,
        state: &Balance,
        command: Command,
        _ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        match command {
            Command::Deposit(n) => Ok(Outcome::new(vec![Event::Deposited(n)], state.cents + n)),
            Command::Withdraw(n) if n > state.cents => Err(Rejection::new(format!(
                "insufficient funds: balance {}, asked {n}",
                state.cents
            ))),
            Command::Withdraw(n) => Ok(Outcome::new(vec![Event::Withdrew(n)], state.cents - n)),
            Command::Balance => Ok(Outcome::reply(state.cents)),
        }
    }

    fn apply(state: &mut Balance, event: &Event) {
        match event {
            Event::Deposited(n) => state.cents += n,
            Event::Withdrew(n) => state.cents -= n,
        }
        state.operations += 1;
    }
}

/// Where the demo keeps its journal: a SQLite file, or a PostgreSQL URL (in the schema
/// `ENTLOG_SCHEMA`, default `entlog`, as the CLI reads it).
const DEFAULT_DB: &str = "quickstart.db";

async fn start(db: &str) -> Result<Cluster, EngineError> {
    let builder = if db.starts_with("postgres") {
        let schema = std::env::var("ENTLOG_SCHEMA").unwrap_or_else(|_| "entlog".into());
        Cluster::builder().postgres_schema(db, schema)
    } else {
        Cluster::builder().sqlite(db)
    };
    builder
        .config(Config::default().shard_count(8))
        .entity(Account)
        // Every account's latest state as JSON in the `entity_state` table.
        .projection(StateProjection::<Account>::new())
        .start()
        .await
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let demo_db = match args.get(1).map(String::as_str) {
        None => DEFAULT_DB,
        Some("demo") => args.get(2).map_or(DEFAULT_DB, String::as_str),
        // Anything else is a CLI command, run with this file's types.
        Some(_) => {
            let registry = Registry::new()
                .entity::<Account>()
                .projection(StateProjection::<Account>::new());
            return Cli::new(registry).default_db(DEFAULT_DB).main();
        }
    };
    // Warnings and errors on stderr (RUST_LOG for more): see examples/logs/mod.rs.
    logs::init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match runtime.block_on(demo(demo_db)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(db: &str) -> Result<(), EngineError> {
    let cluster = start(db).await?;
    let alice = cluster.entity::<Account>("alice");
    let bob = cluster.entity::<Account>("bob");

    println!(
        "alice deposits 100: balance {}",
        alice.ask(Command::Deposit(100)).await?
    );
    println!(
        "bob deposits 40:    balance {}",
        bob.ask(Command::Deposit(40)).await?
    );
    println!(
        "alice withdraws 30: balance {}",
        alice.ask(Command::Withdraw(30)).await?
    );
    match bob.ask(Command::Withdraw(1_000)).await {
        Err(EngineError::Rejected { reason }) => {
            println!("bob withdraws 1000: rejected ({reason})")
        }
        other => println!("bob withdraws 1000: {other:?}"),
    }

    // The same message id sent twice is executed once: the second send gets the stored reply.
    let id = Uuid::now_v7();
    let first = alice.ask_with_id(id, Command::Deposit(5)).await?;
    let again = alice.ask_with_id(id, Command::Deposit(5)).await?;
    println!("deposit 5 sent twice with one id: replies {first} and {again} (applied once)");

    // Stop: in-flight work finishes, snapshots are written, the file is released.
    cluster.shutdown().await?;
    println!("-- cluster stopped; starting again from the journal --");

    let cluster = start(db).await?;
    let alice = cluster.entity::<Account>("alice");
    let bob = cluster.entity::<Account>("bob");
    println!(
        "alice's balance after restart: {}",
        alice.ask(Command::Balance).await?
    );
    println!(
        "bob's balance after restart:   {}",
        bob.ask(Command::Balance).await?
    );
    cluster.shutdown().await?;

    println!();
    println!("The journal is in {db}. Next:");
    println!("  - run this again: balances carry over, rebuilt from snapshots and events;");
    println!("  - replay it: cargo run --example quickstart -- replay account/alice");
    println!("  - look inside: cargo run --example quickstart -- inspect account/alice");
    println!("  - point Cluster::builder().postgres(url) at PostgreSQL and start several runners.");
    Ok(())
}
