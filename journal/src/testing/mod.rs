//! Test support: the conformance suite every backend passes, a PostgreSQL to run it on,
//! scratch journals for one test, and a proxy that goes silent.

pub mod conformance;
mod proxy;
mod scratch;
mod server;

pub use proxy::BlackHoleProxy;
pub use scratch::Scratch;

pub use server::database_url;
