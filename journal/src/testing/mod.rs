//! Test support: the conformance suite every backend passes, a PostgreSQL to run it on,
//! and a proxy that goes silent.

pub mod conformance;
mod proxy;
mod server;

pub use proxy::BlackHoleProxy;

pub use server::database_url;
