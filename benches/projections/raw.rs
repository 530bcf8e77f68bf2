//! Scenario 3, the raw baselines: the read-model writes alone, each shard's events cut
//! into the same batches and aggregated the same way, written with the same upsert (or
//! plain INSERT) statements, with no journal read and no checkpoint (`run_raw`,
//! `RawRun`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::AnyJournal;

use crate::SHARDS;
use crate::fill::Data;
use crate::rows::{Agg, Write, pg_write, sqlite_write};

/// A raw baseline run.
pub(crate) struct RawRun {
    pub(crate) elapsed: Duration,
    pub(crate) statements: u64,
    pub(crate) rows: u64,
}

/// The read-model writes alone: each shard's events in offset order, cut into batches of
/// `batch`, aggregated like the projection does, one statement per batch (in its own
/// transaction), the shards concurrently on the journal's pool.
pub(crate) async fn run_raw(
    j: &AnyJournal,
    data: &Arc<Data>,
    streams: &Arc<Vec<Vec<(u32, i64)>>>,
    table: &str,
    batch: usize,
    how: Write,
) -> RawRun {
    let start = Instant::now();
    let tasks: Vec<_> = (0..SHARDS as usize)
        .map(|shard| {
            let (j, data, streams, table) =
                (j.clone(), data.clone(), streams.clone(), table.to_owned());
            tokio::spawn(async move {
                let (mut statements, mut rows_written) = (0u64, 0u64);
                for chunk in streams[shard].chunks(batch) {
                    let mut agg = Agg::with_capacity(chunk.len());
                    for &(e, v) in chunk {
                        agg.add(&data.ids[e as usize], v);
                    }
                    let rows = agg.rows();
                    match &j {
                        AnyJournal::Postgres(p) => {
                            let mut conn = p.pool().acquire().await.unwrap();
                            pg_write(&mut conn, &table, &rows, how).await.unwrap();
                        }
                        AnyJournal::Sqlite(s) => {
                            let mut tx = s.writer().begin().await.unwrap();
                            sqlite_write(&mut tx, &table, &rows, how).await.unwrap();
                            tx.commit().await.unwrap();
                        }
                        other => unreachable!("no raw writer for {other:?}"),
                    }
                    statements += 1;
                    rows_written += rows.len() as u64;
                }
                (statements, rows_written)
            })
        })
        .collect();
    let (mut statements, mut rows) = (0, 0);
    for t in tasks {
        let (s, r) = t.await.unwrap();
        statements += s;
        rows += r;
    }
    RawRun {
        elapsed: start.elapsed(),
        statements,
        rows,
    }
}
