//! entlog: event-sourced entities on an append-only SQL journal, sharded across runners.
//!
//! This facade re-exports the crates an application uses: the engine ([`engine`]: entity
//! types, the cluster, asks and tells), the projections ([`projections`]: read models
//! folded from the journal) and the journal ([`journal`]: the storage layer with
//! its PostgreSQL and SQLite backends). With the feature `cli`, [`cli`] builds an
//! application's own command line (the plain `entlog` binary is the `entlog-cli` package).
//!
//! # Guarantees
//!
//! - **A send is durable before it returns**: `ask` and `tell` return once the message is
//!   in the journal; it survives crashes, restarts and failover.
//! - **Each message takes effect once**: its events, reply, outgoing messages and the
//!   mailbox cursor commit in one transaction, so a redelivery after a crash changes
//!   nothing, and a message id sent again gets the stored reply.
//! - **One owner per entity**: an entity's messages are handled one at a time, in journal
//!   order, by the runner that owns its shard; a runner that dies or stops answering
//!   loses its shards within seconds, and a stale owner's commits are refused.
//! - **Every message ends**, within a bound: with its outcome, or with a stored failure
//!   naming the cause (a panicking or hanging handler, an oversized payload, a damaged
//!   entry); nothing but its own entity waits for it.
//! - **State is the fold of the events**, rebuilt from a snapshot and the events after
//!   it; projections apply every event once.
//!
//! # Example
//!
//! A shopping cart on the embedded default (a SQLite file); the same code runs on
//! PostgreSQL with `Cluster::builder().postgres(url)`.
//!
//! ```
//! use entlog::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! struct Cart;
//!
//! #[derive(Serialize, Deserialize)]
//! enum Cmd {
//!     Add(String),
//!     Checkout,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! enum Ev {
//!     Added(String),
//!     CheckedOut,
//! }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct State {
//!     items: Vec<String>,
//!     checked_out: bool,
//! }
//!
//! impl Entity for Cart {
//!     const TYPE: &'static str = "cart";
//!     type Command = Cmd;
//!     type Event = Ev;
//!     type Reply = usize;
//!     type State = State;
//!
//!     async fn handle(
//!         &self,
//!         state: &State,
//!         cmd: Cmd,
//!         _: &mut Context,
//!     ) -> Result<Outcome<Self>, Rejection> {
//!         if state.checked_out {
//!             return Err(Rejection::new("the cart is checked out"));
//!         }
//!         Ok(match cmd {
//!             Cmd::Add(item) => Outcome::new(vec![Ev::Added(item)], state.items.len() + 1),
//!             Cmd::Checkout if state.items.is_empty() => {
//!                 return Err(Rejection::new("the cart is empty"));
//!             }
//!             Cmd::Checkout => Outcome::new(vec![Ev::CheckedOut], state.items.len()),
//!         })
//!     }
//!
//!     fn apply(state: &mut State, event: &Ev) {
//!         match event {
//!             Ev::Added(item) => state.items.push(item.clone()),
//!             Ev::CheckedOut => state.checked_out = true,
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("entlog-doc-{}", Uuid::now_v7()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("shop.db");
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let cluster = Cluster::builder().sqlite(&path).entity(Cart).start().await?;
//!     let cart = cluster.entity::<Cart>("alice");
//!     assert!(matches!(cart.ask(Cmd::Checkout).await, Err(EngineError::Rejected { .. })));
//!     assert_eq!(cart.ask(Cmd::Add("tea".into())).await?, 1);
//!     assert_eq!(cart.ask(Cmd::Checkout).await?, 1);
//!     // Read without a message: the state from the journal (snapshot + later events).
//!     let (seq, state) = cart.state().await?;
//!     assert_eq!((seq, state.checked_out), (2, true));
//!     cluster.shutdown().await?;
//!     Ok::<_, EngineError>(())
//! })?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

/// The command line, for an application's own binary (feature `cli`).
#[cfg(feature = "cli")]
pub use entlog_cli as cli;
pub use entlog_engine as engine;
pub use entlog_journal as journal;
pub use entlog_projections as projections;

pub use entlog_engine::{
    Client, Cluster, ClusterBuilder, Config, Context, CronSchedule, EngineError, Entity, EntityRef,
    Outcome, Rejection, SingletonContext, StateProjection, TRACE_HEADER, decode_event,
    projected_state,
};
pub use entlog_journal::{
    AnyJournal, AnyTx, DEFAULT_GROUP, Durability, EntityKey, Entry, EntryKind, Headers, Journal,
    JournalError, NewMessage, Payload, PgJournal, PgOptions, Row, ShardGroup, Sql, SqliteJournal,
    SqliteOptions, Timestamp, sql,
};
pub use entlog_projections::{Projection, ProjectionError};
/// Message ids (`ask_with_id`, `tell_at_with_id`, `cancel`) are UUIDs.
pub use uuid::Uuid;

/// What application code uses most, in one `use entlog::prelude::*;`: entity types,
/// the cluster, projections with their backend-neutral SQL, and the ids and times they
/// carry.
pub mod prelude {
    pub use crate::{
        AnyTx, Cluster, Config, Context, EngineError, Entity, EntityRef, Entry, Headers,
        Journal as _, JournalError, Outcome, Projection, ProjectionError, Rejection, Row,
        TRACE_HEADER, Timestamp, Uuid, decode_event, sql,
    };
}
