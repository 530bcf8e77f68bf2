//! The SQLite groups (`bench_sqlite`, temporary files): appends to a journal (and one with
//! `synchronous = NORMAL`), the raw baseline (multi-row `INSERT`, one transaction per
//! batch, into a second file holding the journal table exactly as the migrations made it
//! in the journal's file), and paged reads of one shard.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use entlog_journal::{Durability, SqliteJournal, SqliteOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::runtime::Runtime;

use crate::common::{Gen, Settings};
use crate::measure::{fill_shard, time_appends, time_reads};
use crate::raw::RawColumns;
use crate::{BATCHES, SHARDS};

/// The `CREATE` statements of the journal table and its indexes in the journal file read
/// through `template`, as its migrations left them (SQLite folds every later `ALTER TABLE
/// … ADD COLUMN` into the table's text): the table first, then the indexes by name.
async fn journal_ddl(template: &SqlitePool) -> Vec<String> {
    let ddl: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master
          WHERE tbl_name = 'journal' AND type IN ('table', 'index') AND sql IS NOT NULL
          ORDER BY type = 'index', name",
    )
    .fetch_all(template)
    .await
    .unwrap();
    assert!(
        ddl.first().is_some_and(|t| t.starts_with("CREATE TABLE")),
        "no journal table in the template file: {ddl:?}"
    );
    ddl
}

/// A second file with the journal's pragmas (WAL, synchronous = FULL) and the raw table:
/// the journal table of the journal file read through `template`, with its indexes,
/// under the same names (this file holds nothing else).
async fn sqlite_raw(path: &Path, template: &SqlitePool) -> SqlitePool {
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(connect)
        .await
        .unwrap();
    for ddl in journal_ddl(template).await {
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

/// Times raw multi-row inserts, one transaction per batch.
async fn time_sqlite_raw(
    pool: &SqlitePool,
    gen_: &Mutex<Gen>,
    heads: &Mutex<Vec<i64>>,
    n: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = gen_.lock().unwrap().batch(n);
        let start = Instant::now();
        let cols = RawColumns::build(batch, heads);
        let mut tx = pool.begin().await.unwrap();
        let mut q = QueryBuilder::<Sqlite>::new(
            r#"INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq,
               message_id, type_tag, schema_version, payload, crc, deliver_at, created_at) "#,
        );
        q.push_values(0..cols.len(), |mut b, i| {
            b.push_bind(cols.shard[i])
                .push_bind(cols.offset[i])
                .push_bind(cols.kind[i])
                .push_bind(cols.entity_type[i].clone())
                .push_bind(cols.entity_id[i].clone())
                .push_bind(cols.seq[i])
                .push_bind(cols.message_id[i])
                .push_bind(cols.type_tag[i].clone())
                .push_bind(cols.schema_version[i])
                .push_bind(cols.payload[i].clone())
                .push_bind(cols.crc[i])
                .push_bind(cols.deliver_at[i])
                .push_bind(cols.created_at[i]);
        });
        let done = q.build().execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        total += start.elapsed();
        assert_eq!(done.rows_affected(), n as u64);
    }
    total
}

pub(crate) fn bench_sqlite(c: &mut Criterion, rt: &Runtime, s: &Settings) {
    let dir = std::env::temp_dir().join(format!(
        "entlog-bench-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (journal, normal, raw, reader) = rt.block_on(async {
        let open = |name: &str, shards: u32, d: Durability| {
            SqliteJournal::open(
                SqliteOptions::new(dir.join(name))
                    .shard_count(shards)
                    .durability(d),
            )
        };
        let journal = open("journal.db", SHARDS, Durability::Full).await.unwrap();
        let normal = open("journal-normal.db", SHARDS, Durability::Normal)
            .await
            .unwrap();
        let raw = sqlite_raw(&dir.join("raw.db"), journal.reader()).await;
        let reader = open("read.db", 1, Durability::Full).await.unwrap();
        (journal, normal, raw, reader)
    });
    let gen_ = Mutex::new(Gen::new());
    let heads = Mutex::new(vec![0i64; SHARDS as usize]);

    let mut g = c.benchmark_group("append");
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("sqlite", n), &n, |b, &n| {
            b.to_async(rt)
                .iter_custom(|iters| time_appends(&journal, &gen_, n, iters));
        });
    }
    g.throughput(Throughput::Elements(256));
    g.bench_with_input(BenchmarkId::new("sqlite-normal", 256), &256, |b, &n| {
        b.to_async(rt)
            .iter_custom(|iters| time_appends(&normal, &gen_, n, iters));
    });
    g.finish();

    let mut g = c.benchmark_group("raw");
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("sqlite", n), &n, |b, &n| {
            b.to_async(rt)
                .iter_custom(|iters| time_sqlite_raw(&raw, &gen_, &heads, n, iters));
        });
    }
    g.finish();

    let entries = s.read_entries;
    rt.block_on(fill_shard(&reader, entries));
    let mut g = c.benchmark_group("read");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(entries as u64));
    g.bench_function("sqlite", |b| {
        b.to_async(rt)
            .iter_custom(|iters| time_reads(&reader, entries, iters));
    });
    g.finish();

    rt.block_on(async {
        journal.close().await;
        normal.close().await;
        reader.close().await;
        raw.close().await;
    });
    drop((journal, normal, reader));
    let _ = std::fs::remove_dir_all(&dir);
}
