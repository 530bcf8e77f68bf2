//! Accounts and transfers: money moves between entities through the outbox, and the
//! books always balance.
//!
//! ```sh
//! cargo run --example bank                     # SQLite: bank.db in the working dir, removed at the end
//! cargo run --example bank -- --quick          # a small, fast run (what `tests/examples.rs` runs)
//! cargo run --example bank -- postgres://postgres@127.0.0.1:5432/test   # PostgreSQL, schema entlog_bank
//! cargo run --example bank -- --accounts 50 --transfers 20000 --in-flight 256 --schema my_bank <url>
//! ```
//!
//! On PostgreSQL the example owns its schema (`entlog_bank` unless `--schema` says
//! otherwise): it drops it at the start and at the end.
//!
//! # What it shows
//!
//! An `account` entity takes `Open`, `Transfer { to, amount }` and `Credit { from, amount }`.
//! A transfer debits the sender, or is rejected when funds are insufficient, and sends
//! `Credit` to the receiver with `ctx.send::<Account>(..)`: the debit event and the
//! outgoing credit are journaled in one transaction (the outbox), so a transfer can never
//! debit without crediting, or credit twice. A credit is never refused: the debit it
//! stands for has already happened.
//!
//! The `bank_balances` projection folds account events into a SQL table that plain SQL
//! queries. It is registered **inline**: its writes commit in the transaction of the
//! events they fold. That is what makes "the SQL sum never exceeds the initial total" true
//! at every instant: a background projection runs each shard on its own, and could fold a
//! credit (on the receiver's shard) before the debit it came from (on the sender's shard),
//! so its sum could briefly be too high.
//!
//! # The invariant, and how its check is made exact
//!
//! Money is neither created nor lost. Each account remembers, besides its balance, the
//! money it `sent` (debited by its transfers) and `received` (credited by others). Then
//! `SUM(balance) = initial total − (SUM(sent) − SUM(received))`, and the difference is
//! exactly the credits in flight. The example checks:
//!
//! 1. during the run: every sampled `SUM(balance)` is at most the initial total;
//! 2. quiescence without guessing: the driver adds up the amounts of the transfers that were
//!    acknowledged (each one committed its debit and its credit message), and waits until
//!    the projection has no lag and `SUM(sent)` and `SUM(received)` in the table both equal
//!    that amount — every credit has landed, and none twice;
//! 3. then `SUM(balance)` equals the initial total exactly, and every entity's own state
//!    (asked directly) equals its row in `bank_balances`.
//!
//! It prints the numbers and exits with status 1 when any check fails.
//!
//! The entity is in [`account`], the projection and the queries over its table in
//! [`balances`]; this file runs the transfers and checks the books.
#![allow(clippy::unwrap_used)]

#[path = "../logs/mod.rs"]
mod logs;

mod account;
mod balances;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use account::{Account, Command};
use balances::{BankBalances, ReadModel};
use entlog::projections::status;
use entlog::{
    AnyJournal, Cluster, Config, EngineError, EntityRef, PgJournal, PgOptions, SqliteJournal,
    SqliteOptions,
};
use uuid::Uuid;

/// What the command line asked for.
struct Args {
    accounts: usize,
    initial: u64,
    transfers: usize,
    in_flight: usize,
    postgres: Option<String>,
    schema: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        accounts: 50,
        initial: 1_000,
        transfers: 5_000,
        in_flight: 128,
        postgres: None,
        schema: "entlog_bank".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {
                a.accounts = 8;
                a.transfers = 400;
                a.in_flight = 32;
            }
            "--accounts" => a.accounts = value(&arg)?.parse().map_err(|e| format!("{e}"))?,
            "--transfers" => a.transfers = value(&arg)?.parse().map_err(|e| format!("{e}"))?,
            "--in-flight" => a.in_flight = value(&arg)?.parse().map_err(|e| format!("{e}"))?,
            "--initial" => a.initial = value(&arg)?.parse().map_err(|e| format!("{e}"))?,
            "--schema" => a.schema = value(&arg)?,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                a.postgres = Some(url.to_owned())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.accounts < 2 || a.in_flight == 0 {
        return Err("at least 2 accounts and 1 transfer in flight".into());
    }
    Ok(a)
}

/// xorshift64*: enough randomness for picking accounts, without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn account_id(i: usize) -> String {
    format!("acct-{i:03}")
}

/// Asks for a transfer until it has an answer: `Ok(true)` done, `Ok(false)` rejected. A
/// timed-out ask is asked again under the same message id, so it never runs twice.
async fn transfer(from: &EntityRef<Account>, to: String, amount: u64) -> Result<bool, EngineError> {
    let id = Uuid::now_v7();
    loop {
        let command = Command::Transfer {
            to: to.clone(),
            amount,
        };
        match from.ask_with_id(id, command).await {
            Ok(_) => return Ok(true),
            Err(EngineError::Rejected { .. }) => return Ok(false),
            Err(EngineError::Timeout { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Samples `SUM(balance)` until `stop`: (samples, lowest, highest).
async fn watch_sum(
    model: ReadModel,
    stop: Arc<AtomicBool>,
) -> Result<(u64, i64, i64), sqlx::Error> {
    let (mut samples, mut low, mut high) = (0, i64::MAX, i64::MIN);
    loop {
        let t = model.totals().await?;
        samples += 1;
        low = low.min(t.balance);
        high = high.max(t.balance);
        if stop.load(Ordering::SeqCst) {
            return Ok((samples, low, high));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Warnings and errors on stderr (RUST_LOG for more): see examples/logs/mod.rs.
    logs::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bank: {e}");
            eprintln!(
                "usage: bank [--quick] [--accounts N] [--transfers N] [--in-flight N] [--initial N] [--schema S] [postgres://URL]"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let sqlite_path = "bank.db";
    let (journal, shards, place): (AnyJournal, u32, String) = match &args.postgres {
        None => {
            remove_sqlite(sqlite_path);
            let j = SqliteJournal::open(SqliteOptions::new(sqlite_path).shard_count(8)).await?;
            (j.into(), 8, format!("SQLite ({sqlite_path})"))
        }
        Some(url) => {
            drop_schema(url, &args.schema).await?;
            let j =
                PgJournal::open(PgOptions::new(url).schema(&args.schema).shard_count(16)).await?;
            (j.into(), 16, format!("PostgreSQL (schema {})", args.schema))
        }
    };
    // The table exists before any event is folded into it.
    let model = ReadModel::create(&journal).await?;
    let cluster = Cluster::builder()
        .journal(journal)
        .config(Config::default().shard_count(shards))
        .entity(Account)
        .inline_projection(BankBalances)
        .start()
        .await?;

    let result = run(&args, &cluster, &model, &place).await;
    cluster.shutdown().await?;
    match &args.postgres {
        None => remove_sqlite(sqlite_path),
        Some(url) => drop_schema(url, &args.schema).await?,
    }
    let failures = result?;
    if failures.is_empty() {
        println!("invariant holds: money was neither created nor lost");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in failures {
            println!("INVARIANT VIOLATED: {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Opens the accounts, runs the transfers and checks the books; returns what failed.
async fn run(
    args: &Args,
    cluster: &Cluster,
    model: &ReadModel,
    place: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut failures = Vec::new();
    let total = (args.accounts as u64 * args.initial) as i64;
    for i in 0..args.accounts {
        let initial = args.initial;
        cluster
            .entity::<Account>(&account_id(i))
            .ask(Command::Open { initial })
            .await?;
    }
    println!(
        "bank on {place}: {} accounts opened with {} each, initial total {total}",
        args.accounts, args.initial
    );

    // Watch the SQL sum while transfers run.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_sum(model.clone(), stop.clone()));

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.in_flight));
    let mut rng = Rng(Uuid::now_v7().as_u64_pair().1 | 1);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.transfers {
        let from = rng.below(args.accounts as u64) as usize;
        let to = (from + 1 + rng.below(args.accounts as u64 - 1) as usize) % args.accounts;
        // Up to 40% of an opening balance: some transfers find too little money.
        let amount = 1 + rng.below((args.initial * 2 / 5).max(1));
        let permit = permits.clone().acquire_owned().await?;
        let from = cluster.entity::<Account>(&account_id(from));
        tasks.spawn(async move {
            let done = transfer(&from, account_id(to), amount).await;
            drop(permit);
            done.map(|done| (done, amount))
        });
    }
    let (mut done, mut rejected, mut moved) = (0u64, 0u64, 0i64);
    while let Some(joined) = tasks.join_next().await {
        match joined?? {
            (true, amount) => {
                done += 1;
                moved += amount as i64;
            }
            (false, _) => rejected += 1,
        }
    }
    let elapsed = started.elapsed();
    println!(
        "transfers: {} asked, {done} done (moving {moved}), {rejected} rejected for insufficient funds, in {:.2} s ({:.0}/s)",
        args.transfers,
        elapsed.as_secs_f64(),
        args.transfers as f64 / elapsed.as_secs_f64()
    );

    // Quiescent when every acknowledged debit's credit has been applied and projected.
    let settling = Instant::now();
    let totals = loop {
        let lag: u64 = status(cluster.journal(), "bank_balances")
            .await?
            .iter()
            .map(|s| s.lag_events)
            .sum();
        let t = model.totals().await?;
        if lag == 0 && t.sent == moved && t.received == moved {
            break t;
        }
        if t.received > t.sent || settling.elapsed() > Duration::from_secs(60) {
            failures.push(format!(
                "not quiescent after {:.1} s: lag {lag}, sent {}, received {}, acknowledged {moved}",
                settling.elapsed().as_secs_f64(),
                t.sent,
                t.received
            ));
            break t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.store(true, Ordering::SeqCst);
    let (samples, low, high) = watcher.await??;
    println!(
        "during the run: {samples} samples of SUM(balance), lowest {low}, highest {high} (credits in flight at most {})",
        total - low
    );
    if high > total {
        failures.push(format!(
            "SUM(balance) reached {high} during the run, above the initial total {total}"
        ));
    }
    if totals.sent == moved && totals.received == moved {
        println!(
            "quiescent after {} ms: SUM(sent) {} = SUM(received) {} = acknowledged transfers {moved}",
            settling.elapsed().as_millis(),
            totals.sent,
            totals.received
        );
    }
    println!(
        "final: SUM(balance) = {}, initial total = {total}",
        totals.balance
    );
    if totals.balance != total {
        failures.push(format!(
            "SUM(balance) is {}, the initial total {total}",
            totals.balance
        ));
    }

    // Each entity's own state, asked directly, against its row in the read model.
    let rows = model.rows().await?;
    let mut matching = 0;
    for i in 0..args.accounts {
        let id = account_id(i);
        let s = cluster.entity::<Account>(&id).ask(Command::Get).await?;
        let row = rows.iter().find(|r| r.0 == id);
        let expected = (
            id.clone(),
            s.balance as i64,
            s.sent as i64,
            s.received as i64,
        );
        if row == Some(&expected) && s.balance + s.sent == s.initial + s.received {
            matching += 1;
        } else {
            failures.push(format!("{id}: state {s:?}, row {row:?}"));
        }
    }
    println!(
        "entity states match bank_balances for {matching} of {} accounts",
        args.accounts
    );
    Ok(failures)
}

fn remove_sqlite(path: &str) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

/// Drops the example's schema: it starts from nothing and leaves nothing behind.
async fn drop_schema(url: &str, schema: &str) -> Result<(), Box<dyn std::error::Error>> {
    use sqlx::Connection;
    let valid = !schema.is_empty()
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!("schema {schema:?}: use a-z, 0-9 and _").into());
    }
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}
