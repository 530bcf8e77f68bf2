//! The entlog CLI run end to end as processes, on journals the engine wrote: the
//! quickstart's own binary (the CLI with its types registered) and the plain `entlog`
//! binary (raw payloads), each against a SQLite file and a PostgreSQL schema.
//!
//! `replay` must agree with the state the engine reports, `prune` must keep what a
//! duplicate send still needs, and every bad input gets a clear error and exit status 1.
//!
//! One module per subject: [`quickstart`] (the quickstart's journal, every command),
//! [`input`] (`migrate` and bad input), [`prune`] (retention and the dedup window),
//! [`status`] (damaged entries, stuck shards) and [`headers`] (message headers).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

#[path = "../common/mod.rs"]
mod common;

mod headers;
mod input;
mod prune;
mod quickstart;
mod status;

/// The plain `entlog` binary.
fn entlog() -> PathBuf {
    common::entlog_bin()
}
