#![allow(clippy::unwrap_used)]
//! Journal benchmarks: append and read throughput of both backends, each next to a raw
//! SQL baseline that writes the same rows into a table with the same columns and indexes.
//!
//! ```text
//! cargo bench --bench journal                        # full run (a few minutes)
//! ENTLOG_BENCH_QUICK=1 cargo bench --bench journal   # smoke test
//! DATABASE_URL=postgres://user@host/db cargo bench --bench journal
//! ```
//!
//! After the criterion groups a summary prints journal/raw ratios, computed from
//! criterion's own medians (`target/criterion/<group>/<function>/new/estimates.json`).
//!
//! The raw tables are made from the journal the bench has just opened, never written out
//! here: on PostgreSQL `CREATE TABLE … (LIKE bench_journal.journal INCLUDING ALL)`, on
//! SQLite the journal table's and its indexes' `CREATE` statements read from the journal
//! file's `sqlite_master`; so they follow every migration.
//!
//! The code: `common` (settings and the messages appended), `raw` (the raw baselines'
//! client work: columns and crc), `measure` (the timed appends and reads through the
//! `Journal` trait), one module per backend (`pg`, `sqlite`) and `report` (the summary);
//! here, the constants and `main`.

mod common;
mod measure;
mod pg;
mod raw;
mod report;
mod sqlite;

use std::time::{Instant, SystemTime};

use criterion::Criterion;
use entlog_journal::shard_of;

use crate::common::{Gen, Settings};
use crate::pg::bench_pg;
use crate::raw::crc32;
use crate::report::{Medians, criterion_dir, print_summary};
use crate::sqlite::bench_sqlite;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const BATCHES: [usize; 3] = [1, 16, 256];
const ENTITIES: usize = 1_000;
const SHARDS: u32 = 64;
const READ_PAGE: usize = 1_000;
const ENTITY_TYPE: &str = "bench";

fn main() {
    // The raw baselines' crc must be the real IEEE CRC-32: compare with the journal's.
    let probe = "entlog bench crc probe";
    assert_eq!(
        crc32(probe.as_bytes()) % u32::MAX,
        shard_of(probe, u32::MAX)
    );

    let settings = Settings::from_env();
    let started = SystemTime::now();
    let wall = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload_len = Gen::new().message().payload.bytes.len();
    println!(
        "payload: {payload_len} bytes of postcard; quick mode: {}",
        settings.quick
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(settings.warm_up)
        .measurement_time(settings.measure)
        .configure_from_args();
    bench_pg(&mut c, &rt, &settings);
    bench_sqlite(&mut c, &rt, &settings);
    c.final_summary();

    print_summary(
        &Medians {
            dir: criterion_dir(),
            since: started,
        },
        &settings,
    );
    println!("bench wall time: {:.1} s", wall.elapsed().as_secs_f64());
}
