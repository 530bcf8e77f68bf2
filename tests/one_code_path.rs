//! An application written with the facade alone — no sqlx, no backend match — runs the
//! same on SQLite and PostgreSQL: a shopping cart (add, remove, checkout, a rejection on
//! an empty cart) with a read model of carts by status, created by the projection's
//! `setup`, written with `sql()` and queried with `sql()`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use entlog::prelude::*;
use serde::{Deserialize, Serialize};

struct Cart;

#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Add(String),
    Remove(String),
    Checkout,
}

#[derive(Debug, Serialize, Deserialize)]
enum Event {
    Added(String),
    Removed(String),
    CheckedOut,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    items: BTreeSet<String>,
    checked_out: bool,
}

impl Entity for Cart {
    const TYPE: &'static str = "cart";
    type Command = Command;
    type Event = Event;
    type Reply = usize;
    type State = State;

    async fn handle(
        &self,
        state: &State,
        cmd: Command,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        if state.checked_out {
            return Err(Rejection::new("the cart is checked out"));
        }
        // The reply is the state after the events: Outcome::applied folds them first.
        Ok(match cmd {
            Command::Add(item) => {
                Outcome::<Self>::applied(state, vec![Event::Added(item)], |s| s.items.len())
            }
            Command::Remove(item) => {
                Outcome::<Self>::applied(state, vec![Event::Removed(item)], |s| s.items.len())
            }
            Command::Checkout if state.items.is_empty() => {
                return Err(Rejection::new("the cart is empty"));
            }
            Command::Checkout => {
                Outcome::<Self>::applied(state, vec![Event::CheckedOut], |s| s.items.len())
            }
        })
    }

    fn apply(state: &mut State, event: &Event) {
        match event {
            Event::Added(item) => {
                state.items.insert(item.clone());
            }
            Event::Removed(item) => {
                state.items.remove(item);
            }
            Event::CheckedOut => state.checked_out = true,
        }
    }
}

/// Carts by status, one row per cart: written once, for both backends.
struct Carts;

impl Projection for Carts {
    fn name(&self) -> &str {
        "carts"
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == Cart::TYPE
    }

    async fn setup(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        tx.execute(sql(
            "CREATE TABLE IF NOT EXISTS carts (id TEXT PRIMARY KEY, items BIGINT NOT NULL, status TEXT NOT NULL)",
        ))
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        for e in events {
            let id = e.entity.entity_id();
            let (delta, status): (i64, &str) = match decode_event::<Cart>(e)? {
                Event::Added(_) => (1, "open"),
                Event::Removed(_) => (-1, "open"),
                Event::CheckedOut => (0, "checked out"),
            };
            tx.execute(
                sql("INSERT INTO carts (id, items, status) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET items = carts.items + $2, status = $3")
                .bind(id)
                .bind(delta)
                .bind(status),
            )
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        tx.execute(sql("DELETE FROM carts")).await?;
        Ok(())
    }
}

async fn shop(cluster: &Cluster) {
    let a = cluster.entity::<Cart>("a");
    assert_eq!(a.ask(Command::Add("apple".into())).await.unwrap(), 1);
    assert_eq!(a.ask(Command::Add("pear".into())).await.unwrap(), 2);
    assert_eq!(a.ask(Command::Remove("apple".into())).await.unwrap(), 1);
    assert_eq!(a.ask(Command::Checkout).await.unwrap(), 1);
    let b = cluster.entity::<Cart>("b");
    assert_eq!(b.ask(Command::Add("fig".into())).await.unwrap(), 1);
    let empty = cluster.entity::<Cart>("c").ask(Command::Checkout).await;
    assert!(
        matches!(&empty, Err(EngineError::Rejected { reason }) if reason == "the cart is empty"),
        "{empty:?}"
    );
    let (_, state) = a.state().await.unwrap();
    assert!(state.checked_out && state.items.len() == 1);

    // The read model catches up; then it is queried with the same SQL on both backends.
    let journal = cluster.journal();
    let query =
        || sql("SELECT id, items, status FROM carts WHERE items > $1 ORDER BY id").bind(0_i64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let rows = loop {
        let rows = journal.fetch_all(query()).await.unwrap();
        let done = rows
            .iter()
            .any(|r| r.get::<String>("status").unwrap() == "checked out");
        if (rows.len() == 2 && done) || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let carts: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0).unwrap(),
                r.get(1).unwrap(),
                r.get("status").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        carts,
        vec![
            ("a".to_owned(), 1, "checked out".to_owned()),
            ("b".to_owned(), 1, "open".to_owned()),
        ]
    );
    // Placeholders keep their numbers on SQLite too ($2 before $1).
    let one = journal
        .fetch_optional(
            sql("SELECT count(*) FROM carts WHERE status = $2 AND items >= $1")
                .bind(1_i64)
                .bind("open"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.get::<i64>(0).unwrap(), 1);
    let bad = journal.fetch_all(sql("SELECT nothing FROM carts")).await;
    assert!(matches!(bad, Err(JournalError::Persistence(_))), "{bad:?}");
}

fn config() -> Config {
    Config::default().shard_count(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("entlog-cart-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("cart.db"))
        .config(config())
        .entity(Cart)
        .projection(Carts)
        .start()
        .await
        .unwrap();
    shop(&cluster).await;
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_on_postgres() {
    let url = entlog::journal::testing::database_url().await;
    let schema = format!("cart_{}", Uuid::now_v7().simple());
    let cluster = Cluster::builder()
        .postgres_schema(&url, &schema)
        .config(config())
        .entity(Cart)
        .projection(Carts)
        .start()
        .await
        .unwrap();
    shop(&cluster).await;
    cluster
        .journal()
        .execute(sql(&format!("DROP SCHEMA {schema} CASCADE")))
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
}
