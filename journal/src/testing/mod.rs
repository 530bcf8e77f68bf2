//! Test support: the conformance suite every backend passes, and a PostgreSQL to run it on.

pub mod conformance;
mod server;

pub use server::database_url;
