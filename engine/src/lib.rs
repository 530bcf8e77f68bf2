//! entlog's engine: typed entities hosted by runners that own journal shards.
//!
//! An application implements [`Entity`] for each entity type, starts a [`Cluster`] on a
//! journal (SQLite embedded, or PostgreSQL shared by many runners), and sends commands
//! with [`EntityRef::ask`] / [`EntityRef::tell`]. Each message is journaled before the
//! send returns; the runner that owns the entity's shard handles it, and commits its
//! events, reply, outgoing messages and cursor advance in one transaction — so a message
//! redelivered after a crash changes nothing, and a re-sent message id gets the stored
//! reply.
//!
//! ```no_run
//! use entlog_engine::{Cluster, Context, Entity, Outcome, Rejection};
//! use serde::{Deserialize, Serialize};
//!
//! struct Counter;
//!
//! #[derive(Serialize, Deserialize)]
//! enum Cmd { Add(i64), Get }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Added(i64);
//!
//! impl Entity for Counter {
//!     const TYPE: &'static str = "counter";
//!     type Command = Cmd;
//!     type Event = Added;
//!     type Reply = i64;
//!     type State = i64;
//!
//!     async fn handle(&self, state: &i64, cmd: Cmd, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
//!         Ok(match cmd {
//!             Cmd::Add(n) if n < 0 => return Err(Rejection::new("only additions")),
//!             Cmd::Add(n) => Outcome::new(vec![Added(n)], state + n),
//!             Cmd::Get => Outcome::reply(*state),
//!         })
//!     }
//!
//!     fn apply(state: &mut i64, event: &Added) {
//!         *state += event.0;
//!     }
//! }
//!
//! # async fn demo() -> Result<(), entlog_engine::EngineError> {
//! let cluster = Cluster::builder().sqlite("app.db").entity(Counter).start().await?;
//! let total = cluster.entity::<Counter>("c-1").ask(Cmd::Add(5)).await?;
//! cluster.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod appender;
mod client;
mod cluster;
mod codec;
mod config;
mod cron;
mod entity;
mod entity_ref;
mod error;
mod exporter;
mod failure_kind;
mod instance;
pub mod metrics;
#[cfg(feature = "opentelemetry")]
mod otel;
mod owned;
mod owner_check;
mod panics;
mod registry;
mod replies;
mod runner;
mod singleton;
mod state;
mod state_projection;
mod waiters;

pub use client::Client;
pub use cluster::{Cluster, ClusterBuilder};
pub use codec::{
    FAILURE_PREFIX, PayloadError, StoredOutcome, command_from_payload, decode_command,
    decode_event, event_from_payload, failure_reason,
};
pub use config::Config;
pub use cron::{CronSchedule, DEFAULT_MAX_CATCH_UP, firing_id};
pub use entity::{Context, Entity, Outcome, Rejection, command_payload};
pub use entity_ref::EntityRef;
pub use entlog_projections::{Projection, ProjectionError};
pub use error::EngineError;

/// The header that carries a request's trace context (W3C Trace Context's `traceparent`):
/// the `ask` and `handle` spans record it as their `trace` field, and handlers' sends
/// carry it on, so one trace id names every step of a request across runners.
pub const TRACE_HEADER: &str = "traceparent";
pub use runner::pipeline::MAILBOX;
pub use singleton::SingletonContext;
pub use state_projection::{StateProjection, projected_state};
