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

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use entlog_journal::{
    AppendOutcome, Durability, EntityKey, Journal, NewMessage, Payload, PgJournal, PgOptions,
    SqliteJournal, SqliteOptions, shard_of,
};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, QueryBuilder, Sqlite, SqlitePool};
use tokio::runtime::Runtime;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const BATCHES: [usize; 3] = [1, 16, 256];
const ENTITIES: usize = 1_000;
const SHARDS: u32 = 64;
const READ_PAGE: usize = 1_000;
const ENTITY_TYPE: &str = "bench";

/// The command every benchmark appends; about 100 bytes of postcard.
#[derive(Serialize)]
struct Cmd {
    account: String,
    amount: i64,
    counter: u64,
    note: String,
}

/// Run settings: full, or quick (`ENTLOG_BENCH_QUICK=1`) for a smoke test.
struct Settings {
    quick: bool,
    warm_up: Duration,
    measure: Duration,
    read_entries: usize,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
        if quick {
            Settings {
                quick,
                warm_up: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                read_entries: 10_000,
            }
        } else {
            Settings {
                quick,
                warm_up: Duration::from_secs(1),
                measure: Duration::from_secs(3),
                read_entries: 100_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Messages

/// Makes batches of fresh messages (uuid v7 ids) spread over `ENTITIES` entities.
struct Gen {
    keys: Vec<EntityKey>,
    next: usize,
}

impl Gen {
    fn new() -> Self {
        let keys = (0..ENTITIES)
            .map(|i| EntityKey::new(ENTITY_TYPE, format!("account-{i:05}")).unwrap())
            .collect();
        Gen { keys, next: 0 }
    }

    /// Keys whose id falls into shard `shard` of `shard_count`, for filling one shard.
    fn for_shard(shard: u32, shard_count: u32) -> Self {
        let keys: Vec<EntityKey> = (0..)
            .map(|i| format!("account-{i:05}"))
            .filter(|id| shard_of(id, shard_count) == shard)
            .take(ENTITIES)
            .map(|id| EntityKey::new(ENTITY_TYPE, id).unwrap())
            .collect();
        Gen { keys, next: 0 }
    }

    fn message(&mut self) -> NewMessage {
        let i = self.next;
        self.next += 1;
        // A stride coprime with ENTITIES walks every entity before repeating one.
        let key = self.keys[(i * 7_919) % self.keys.len()].clone();
        let cmd = Cmd {
            account: key.entity_id().to_owned(),
            amount: (i as i64 % 10_000) - 5_000,
            counter: i as u64,
            note: "benchmark command payload, padded to about one hundred bytes of postcard".into(),
        };
        NewMessage::new(key, Payload::encode("bench.Cmd", 1, &cmd).unwrap())
    }

    fn batch(&mut self, n: usize) -> Vec<NewMessage> {
        (0..n).map(|_| self.message()).collect()
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// IEEE CRC-32, byte-wise with a table: the raw baselines checksum each payload with it.
///
/// The journal uses `crc32fast` (SIMD), which this bench cannot depend on; for ~100-byte
/// payloads either costs well under a microsecond per row, noise next to a round trip.
/// `main` checks it against the journal's own crc32 (through `shard_of`).
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in bytes {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Raw rows, column-wise, as the PostgreSQL baseline binds them.
#[derive(Default)]
struct RawColumns {
    shard: Vec<i32>,
    offset: Vec<i64>,
    kind: Vec<i16>,
    entity_type: Vec<String>,
    entity_id: Vec<String>,
    seq: Vec<Option<i64>>,
    message_id: Vec<uuid::Uuid>,
    type_tag: Vec<String>,
    schema_version: Vec<i32>,
    payload: Vec<Vec<u8>>,
    crc: Vec<i64>,
    deliver_at: Vec<Option<i64>>,
    created_at: Vec<i64>,
}

impl RawColumns {
    /// The client work the raw baseline does per batch: shard, offset, crc, columns.
    fn build(messages: Vec<NewMessage>, heads: &Mutex<Vec<i64>>) -> Self {
        let mut cols = RawColumns::default();
        let now = now_micros();
        let mut heads = heads.lock().unwrap();
        for m in messages {
            let shard = shard_of(m.entity.entity_id(), SHARDS);
            let head = &mut heads[shard as usize];
            *head += 1;
            cols.shard.push(shard as i32);
            cols.offset.push(*head);
            cols.kind.push(1);
            cols.entity_type.push(m.entity.entity_type().to_owned());
            cols.entity_id.push(m.entity.entity_id().to_owned());
            cols.seq.push(None);
            cols.message_id.push(m.message_id);
            cols.type_tag.push(m.payload.type_tag);
            cols.schema_version.push(m.payload.version as i32);
            cols.crc.push(i64::from(crc32(&m.payload.bytes)));
            cols.payload.push(m.payload.bytes);
            cols.deliver_at.push(None);
            cols.created_at.push(now);
        }
        cols
    }

    fn len(&self) -> usize {
        self.shard.len()
    }
}

fn check_appended(outcomes: &[AppendOutcome], n: usize) {
    assert_eq!(
        outcomes.len(),
        n,
        "append returned {} outcomes",
        outcomes.len()
    );
    for o in outcomes {
        assert!(
            matches!(o, AppendOutcome::Appended { .. }),
            "append of fresh messages returned {o:?}"
        );
    }
}

/// Times `n`-message appends: messages are built outside the timed part.
async fn time_appends<J: Journal>(
    journal: &J,
    gen_: &Mutex<Gen>,
    n: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = gen_.lock().unwrap().batch(n);
        let start = Instant::now();
        let outcomes = journal.append(batch).await.unwrap();
        total += start.elapsed();
        check_appended(&outcomes, n);
    }
    total
}

/// Times reading all of shard 0 (`entries` entries) in pages, every checksum verified.
async fn time_reads<J: Journal>(journal: &J, entries: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut after = 0u64;
        let mut seen = 0usize;
        while seen < entries {
            let page = journal.read_shard(0, after, READ_PAGE, None).await.unwrap();
            assert!(
                !page.is_empty(),
                "shard ended after {seen} of {entries} entries"
            );
            after = page.last().unwrap().offset;
            seen += page.len();
        }
        assert_eq!(seen, entries);
    }
    start.elapsed()
}

/// Appends `entries` messages to shard 0 of `journal` in batches of 256.
async fn fill_shard<J: Journal>(journal: &J, entries: usize) {
    let mut g = Gen::for_shard(0, journal.shard_count());
    let mut left = entries;
    while left > 0 {
        let n = left.min(256);
        let outcomes = journal.append(g.batch(n)).await.unwrap();
        check_appended(&outcomes, n);
        left -= n;
    }
    assert_eq!(journal.head(0).await.unwrap(), entries as u64);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

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

fn bench_pg(c: &mut Criterion, rt: &Runtime, s: &Settings) {
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

// ---------------------------------------------------------------------------------------
// SQLite

/// The journal table of migrations/sqlite/0001_journal.sql, renamed.
const SQLITE_RAW_DDL: [&str; 3] = [
    r#"CREATE TABLE journal_raw (
        shard          INTEGER NOT NULL,
        "offset"       INTEGER NOT NULL,
        kind           INTEGER NOT NULL,
        entity_type    TEXT    NOT NULL,
        entity_id      TEXT    NOT NULL,
        seq            INTEGER,
        message_id     BLOB    NOT NULL,
        type_tag       TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        payload        BLOB    NOT NULL,
        crc            INTEGER NOT NULL,
        deliver_at     INTEGER,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (shard, "offset")
    ) WITHOUT ROWID"#,
    "CREATE UNIQUE INDEX journal_raw_event_seq ON journal_raw (entity_type, entity_id, seq) WHERE kind = 2",
    "CREATE UNIQUE INDEX journal_raw_message_id ON journal_raw (entity_type, entity_id, message_id) WHERE kind = 1",
];

/// A second file with the journal's pragmas (WAL, synchronous = FULL) and the raw table.
async fn sqlite_raw(path: &Path) -> SqlitePool {
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
    for ddl in SQLITE_RAW_DDL {
        sqlx::query(ddl).execute(&pool).await.unwrap();
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
            r#"INSERT INTO journal_raw (shard, "offset", kind, entity_type, entity_id, seq,
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

fn bench_sqlite(c: &mut Criterion, rt: &Runtime, s: &Settings) {
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
        (
            open("journal.db", SHARDS, Durability::Full).await.unwrap(),
            open("journal-normal.db", SHARDS, Durability::Normal)
                .await
                .unwrap(),
            sqlite_raw(&dir.join("raw.db")).await,
            open("read.db", 1, Durability::Full).await.unwrap(),
        )
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

// ---------------------------------------------------------------------------------------
// Summary

/// Where criterion writes its results (its own rule, minus the `cargo metadata` step).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Medians of this run's benchmarks, in ns per iteration; stale files are ignored.
struct Medians {
    dir: PathBuf,
    since: SystemTime,
}

impl Medians {
    fn ns(&self, id: &str) -> Option<f64> {
        let path = self.dir.join(id).join("new").join("estimates.json");
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        if modified < self.since {
            return None;
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        json["median"]["point_estimate"].as_f64()
    }

    /// Entries per second of a benchmark that handles `n` entries per iteration.
    fn rate(&self, id: &str, n: usize) -> Option<f64> {
        self.ns(id).map(|ns| n as f64 / (ns / 1e9))
    }
}

fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{}/s", grouped(r)))
}

fn ms_cell(ns: Option<f64>) -> String {
    ns.map_or_else(|| "n/a".into(), |ns| format!("{:.3} ms", ns / 1e6))
}

fn ratio_cell(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn print_summary(m: &Medians, s: &Settings) {
    let row = |name: &str, value: String, ratio: String, note: String| {
        println!("{name:<30} {value:>14} {ratio:>9}  {note}");
    };
    println!();
    println!(
        "summary (medians of this run{})   throughput ratio = journal/raw (higher is better); latency ratio = journal/raw (lower is better)",
        if s.quick { ", QUICK mode" } else { "" }
    );
    row("", "entries/s".into(), "vs raw".into(), String::new());
    for backend in ["pg", "sqlite"] {
        for n in [256, 16, 1] {
            let j = m.rate(&format!("append/{backend}/{n}"), n);
            let r = m.rate(&format!("raw/{backend}/{n}"), n);
            let what = if backend == "pg" {
                "raw multi-row INSERT … UNNEST"
            } else {
                "raw multi-row INSERT, 1 tx"
            };
            row(
                &format!("append/{backend}/{n}"),
                rate_cell(j),
                ratio_cell(j, r),
                format!("({what} {})", rate_cell(r)),
            );
        }
        let jl = m.ns(&format!("append/{backend}/1"));
        let (rl, what) = if backend == "pg" {
            (m.ns("raw/pg-single-row/1"), "raw single-row INSERT")
        } else {
            (m.ns("raw/sqlite/1"), "raw 1-row INSERT, 1 tx")
        };
        row(
            &format!("append/{backend}/1  latency"),
            ms_cell(jl),
            ratio_cell(jl, rl),
            format!("({what} {})", ms_cell(rl)),
        );
        if backend == "pg" {
            let multi1 = m.ns("raw/pg/1");
            row(
                "raw/pg/1 (UNNEST) latency",
                ms_cell(multi1),
                String::new(),
                String::new(),
            );
            let on = m.rate("append/pg/256", 256);
            let off = m.rate("append/pg-nonotify/256", 256);
            let r = m.rate("raw/pg/256", 256);
            row(
                "append/pg-nonotify/256",
                rate_cell(off),
                ratio_cell(off, r),
                format!(
                    "(notify on: {}, on/off {})",
                    rate_cell(on),
                    ratio_cell(on, off)
                ),
            );
        } else {
            let full = m.rate("append/sqlite/256", 256);
            let normal = m.rate("append/sqlite-normal/256", 256);
            let r = m.rate("raw/sqlite/256", 256);
            row(
                "append/sqlite-normal/256",
                rate_cell(normal),
                ratio_cell(normal, r),
                format!(
                    "(synchronous=NORMAL; FULL: {}, normal/full {}; raw is FULL)",
                    rate_cell(full),
                    ratio_cell(normal, full)
                ),
            );
        }
    }
    for backend in ["pg", "sqlite"] {
        let r = m.rate(&format!("read/{backend}"), s.read_entries);
        row(
            &format!("read/{backend}"),
            rate_cell(r),
            String::new(),
            format!(
                "(one shard of {} entries, pages of {READ_PAGE}, crc verified)",
                grouped(s.read_entries as f64)
            ),
        );
    }
}

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
