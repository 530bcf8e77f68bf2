#![allow(clippy::unwrap_used)]
//! Projection benchmark: catch-up of a read-model projection over a filled journal, next to
//! a raw baseline that writes the same read-model rows with the same statements.
//!
//! ```text
//! cargo bench --bench projections                        # full run (about 3 minutes)
//! ENTLOG_BENCH_QUICK=1 cargo bench --bench projections   # smoke test
//! DATABASE_URL=postgres://user@host/db cargo bench --bench projections
//! ```
//!
//! On PostgreSQL (schema `bench_projections`, dropped and recreated, dropped after) and
//! then on SQLite (a temporary file):
//!
//! 1. fill: a fresh 8-shard journal gets 1,000,000 events (quick mode: 20,000) over 10,000
//!    entities (quick: 1,000), through `Journal::commit`: per shard, commits of 250 handled
//!    messages of 4 events each, the 8 shards concurrently;
//! 2. catch-up: a read-model projection (`totals`: per entity, the sum of the event values
//!    and the number of events) driven by one `Projector` per shard, all 8 concurrently,
//!    `init()` then `step()` until idle, at batch sizes 1000 and 256. The projection batches
//!    like applications are expected to: it aggregates a batch per entity in Rust and writes
//!    it with one upsert statement (`INSERT … SELECT * FROM UNNEST(…) ON CONFLICT … DO
//!    UPDATE` on PostgreSQL, a multi-row `VALUES` upsert on SQLite);
//! 3. raw baselines: the same batches (the events of each shard in offset order, cut at the
//!    same batch size, aggregated the same way) written with the same upsert statements
//!    into a table of the same schema, 8 concurrently on the journal's own pool, no journal
//!    read and no checkpoint; and the same rows as plain multi-row INSERTs (no upsert) into
//!    a table with the same columns and a non-unique index on `entity_id`;
//! 4. where a step's time goes: a hand-rolled copy of `Projector::step` (checkpoint read,
//!    `read_shard`, begin, apply, compare-and-set of the checkpoint, commit) with each
//!    phase timed, and the journal read alone;
//! 5. every read model (and every raw table) is checked against the fold of the values
//!    computed while filling; a mismatch is reported and the program exits with status 1.
//!
//! Run without `--bench` (that is, by `cargo test --all-targets`), it runs in quick mode.
//!
//! The code: `common` (settings, the database URL and number formatting), `fill` (the
//! data set and scenario 1), `rows` (read-model rows and the statements that write them),
//! `totals` (the projection), one module per scenario after the fill (`catch_up`, `raw`,
//! `phases`), `backend` (one backend's run, on PostgreSQL and on SQLite) and `report` (the
//! summary); here, the constants and `main`.

mod backend;
mod catch_up;
mod common;
mod fill;
mod phases;
mod raw;
mod report;
mod rows;
mod totals;

use std::time::Instant;

use crate::backend::{bench_pg, bench_sqlite};
use crate::common::Settings;
use crate::report::{Report, print_summary};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_SCHEMA: &str = "bench_projections";
const SHARDS: u32 = 8;
const MESSAGES_PER_COMMIT: usize = 250;
const EVENTS_PER_MESSAGE: u64 = 4;
const BATCHES: [usize; 2] = [1000, 256];
const ENTITY_TYPE: &str = "account";
const EVENT_TAG: &str = "account.Deposited";

fn main() {
    let wall = Instant::now();
    let s = Settings::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut report = Report::default();
    println!(
        "entlog projections benchmark, quick mode: {}; {cores} cores",
        s.quick
    );
    rt.block_on(async {
        bench_pg(&s, &mut report).await;
        bench_sqlite(&s, &mut report).await;
    });
    print_summary(&report, &s, wall.elapsed());
    if !report.anomalies.is_empty() {
        std::process::exit(1);
    }
}
