//! The PostgreSQL groups (`bench_pg`): appends to a journal in schema `bench_journal` (and
//! one with NOTIFY off), the raw baseline (multi-row `INSERT … UNNEST` and single-row
//! `INSERT` into `bench_raw.journal`, a `LIKE … INCLUDING ALL` copy of the real journal
//! table), and paged reads of one shard.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use entlog_journal::{PgJournal, PgOptions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::runtime::Runtime;

use crate::common::{Gen, Settings};
use crate::measure::{fill_shard, time_appends, time_reads};
use crate::raw::RawColumns;
use crate::{BATCHES, DEFAULT_URL, SHARDS};

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn pg_admin(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"))
}

async fn pg_exec(pool: &PgPool, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

/// Drops the schema and opens a fresh journal in it.
async fn pg_fresh(
    admin: &PgPool,
    url: &str,
    schema: &str,
    configure: fn(PgOptions) -> PgOptions,
) -> PgJournal {
    pg_exec(admin, format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    let options = configure(PgOptions::new(url).schema(schema).shard_count(SHARDS));
    PgJournal::open(options).await.unwrap()
}

const PG_RAW_UNNEST: &str = r#"INSERT INTO bench_raw.journal
    (shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag, schema_version,
     payload, crc, deliver_at, created_at)
    SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::SMALLINT[], $4::TEXT[], $5::TEXT[],
                         $6::BIGINT[], $7::UUID[], $8::TEXT[], $9::INTEGER[], $10::BYTEA[],
                         $11::BIGINT[], $12::BIGINT[], $13::BIGINT[])"#;

const PG_RAW_SINGLE: &str = r#"INSERT INTO bench_raw.journal
    (shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag, schema_version,
     payload, crc, deliver_at, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#;

async fn pg_raw_unnest(pool: &PgPool, cols: &RawColumns) {
    let done = sqlx::query(PG_RAW_UNNEST)
        .bind(&cols.shard)
        .bind(&cols.offset)
        .bind(&cols.kind)
        .bind(&cols.entity_type)
        .bind(&cols.entity_id)
        .bind(&cols.seq)
        .bind(&cols.message_id)
        .bind(&cols.type_tag)
        .bind(&cols.schema_version)
        .bind(&cols.payload)
        .bind(&cols.crc)
        .bind(&cols.deliver_at)
        .bind(&cols.created_at)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), cols.len() as u64);
}

async fn pg_raw_single(pool: &PgPool, cols: &RawColumns) {
    sqlx::query(PG_RAW_SINGLE)
        .bind(cols.shard[0])
        .bind(cols.offset[0])
        .bind(cols.kind[0])
        .bind(&cols.entity_type[0])
        .bind(&cols.entity_id[0])
        .bind(cols.seq[0])
        .bind(cols.message_id[0])
        .bind(&cols.type_tag[0])
        .bind(cols.schema_version[0])
        .bind(&cols.payload[0])
        .bind(cols.crc[0])
        .bind(cols.deliver_at[0])
        .bind(cols.created_at[0])
        .execute(pool)
        .await
        .unwrap();
}

/// Times raw inserts: messages built outside, columns (shard, offset, crc) inside.
async fn time_pg_raw(
    pool: &PgPool,
    gen_: &Mutex<Gen>,
    heads: &Mutex<Vec<i64>>,
    n: usize,
    single: bool,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = gen_.lock().unwrap().batch(n);
        let start = Instant::now();
        let cols = RawColumns::build(batch, heads);
        if single {
            pg_raw_single(pool, &cols).await;
        } else {
            pg_raw_unnest(pool, &cols).await;
        }
        total += start.elapsed();
    }
    total
}

pub(crate) fn bench_pg(c: &mut Criterion, rt: &Runtime, s: &Settings) {
    let url = pg_url();
    let (journal, nonotify, raw, reader) = rt.block_on(async {
        let admin = pg_admin(&url).await;
        let journal = pg_fresh(&admin, &url, "bench_journal", |o| o).await;
        let nonotify = pg_fresh(&admin, &url, "bench_journal_nonotify", |o| o.notify(false)).await;
        pg_exec(&admin, "DROP SCHEMA IF EXISTS bench_raw CASCADE".into()).await;
        pg_exec(&admin, "CREATE SCHEMA bench_raw".into()).await;
        pg_exec(
            &admin,
            "CREATE TABLE bench_raw.journal (LIKE bench_journal.journal INCLUDING ALL)".into(),
        )
        .await;
        let reader = pg_fresh(&admin, &url, "bench_read", |o| o.shard_count(1)).await;
        admin.close().await;
        // Same pool shape as the journal's (10 connections, no schema on the path needed).
        let raw = PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .unwrap();
        (journal, nonotify, raw, reader)
    });
    let gen_ = Mutex::new(Gen::new());
    let heads = Mutex::new(vec![0i64; SHARDS as usize]);

    let mut g = c.benchmark_group("append");
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("pg", n), &n, |b, &n| {
            b.to_async(rt)
                .iter_custom(|iters| time_appends(&journal, &gen_, n, iters));
        });
    }
    g.throughput(Throughput::Elements(256));
    g.bench_with_input(BenchmarkId::new("pg-nonotify", 256), &256, |b, &n| {
        b.to_async(rt)
            .iter_custom(|iters| time_appends(&nonotify, &gen_, n, iters));
    });
    g.finish();

    let mut g = c.benchmark_group("raw");
    for n in BATCHES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("pg", n), &n, |b, &n| {
            b.to_async(rt)
                .iter_custom(|iters| time_pg_raw(&raw, &gen_, &heads, n, false, iters));
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("pg-single-row", 1), &1, |b, &n| {
        b.to_async(rt)
            .iter_custom(|iters| time_pg_raw(&raw, &gen_, &heads, n, true, iters));
    });
    g.finish();

    let entries = s.read_entries;
    rt.block_on(fill_shard(&reader, entries));
    let mut g = c.benchmark_group("read");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(entries as u64));
    g.bench_function("pg", |b| {
        b.to_async(rt)
            .iter_custom(|iters| time_reads(&reader, entries, iters));
    });
    g.finish();

    rt.block_on(async {
        // Flush PostgreSQL's dirty pages now, so its checkpointer does not compete for the
        // disk with the SQLite fsyncs measured next (needs superuser; skipped otherwise).
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&raw).await {
            println!("note: CHECKPOINT after the PostgreSQL groups failed: {e}");
        }
        journal.close().await;
        nonotify.close().await;
        reader.close().await;
        raw.close().await;
    });
}
