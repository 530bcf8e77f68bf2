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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, AnyTx, EntityKey, Entry, EntryKind, Journal, NewEvent, Payload, PgJournal,
    PgOptions, Processed, ProcessedBatch, Shard, SqliteJournal, SqliteOptions, shard_of,
};
use entlog_projections::{
    DynProjection, Projection, ProjectionError, Projector, Step, checkpoint_name,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_SCHEMA: &str = "bench_projections";
const SHARDS: u32 = 8;
const MESSAGES_PER_COMMIT: usize = 250;
const EVENTS_PER_MESSAGE: u64 = 4;
const BATCHES: [usize; 2] = [1000, 256];
const ENTITY_TYPE: &str = "account";
const EVENT_TAG: &str = "account.Deposited";

// ---------------------------------------------------------------------------------------
// Settings

/// How much data one backend gets.
#[derive(Clone, Copy)]
struct Size {
    events: u64,
    entities: usize,
}

struct Settings {
    quick: bool,
    pg: Size,
    sqlite: Size,
}

impl Settings {
    fn new() -> Self {
        let env_quick = std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
        // `cargo bench` passes `--bench`; `cargo test` runs this binary without it.
        let under_test = !std::env::args().any(|a| a == "--bench");
        if env_quick || under_test {
            let size = Size {
                events: 20_000,
                entities: 1_000,
            };
            Settings {
                quick: true,
                pg: size,
                sqlite: size,
            }
        } else {
            Settings {
                quick: false,
                pg: Size {
                    events: 1_000_000,
                    entities: 10_000,
                },
                sqlite: Size {
                    events: 1_000_000,
                    entities: 10_000,
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The data set

/// Entities, by shard, and how many rounds of messages each gets.
struct Data {
    ids: Vec<String>,
    by_shard: Vec<Vec<u32>>,
    rounds: u64,
    events: u64,
}

impl Data {
    fn new(size: Size) -> Self {
        let per_entity = size.events / size.entities as u64;
        assert!(
            per_entity * size.entities as u64 == size.events
                && per_entity.is_multiple_of(EVENTS_PER_MESSAGE),
            "events per entity must be a whole multiple of {EVENTS_PER_MESSAGE}"
        );
        let ids: Vec<String> = (0..size.entities).map(|i| format!("acct-{i:06}")).collect();
        let mut by_shard = vec![Vec::new(); SHARDS as usize];
        for (i, id) in ids.iter().enumerate() {
            by_shard[shard_of(id, SHARDS) as usize].push(i as u32);
        }
        Data {
            ids,
            by_shard,
            rounds: per_entity / EVENTS_PER_MESSAGE,
            events: size.events,
        }
    }
}

/// The value of an entity's event at `seq`: deterministic, of both signs.
fn value(entity: u32, seq: u64) -> i64 {
    ((i64::from(entity) * 31 + seq as i64 * 17) % 201) - 100
}

/// entity id → (sum of values, number of events).
type Fold = HashMap<String, (i64, i64)>;

/// What the fill committed.
struct Filled {
    /// Per shard, (entity, value) of each event in offset order.
    streams: Arc<Vec<Vec<(u32, i64)>>>,
    /// The fold of everything committed.
    fold: Fold,
    elapsed: Duration,
    commits: u64,
}

/// Commits `pending` to `shard` and checks the events got the next offsets, in order.
async fn commit(j: &AnyJournal, shard: Shard, pending: &mut Vec<Processed>, next: &mut u64) {
    let events: usize = pending.iter().map(|p| p.events.len()).sum();
    let receipt = j
        .commit(ProcessedBatch {
            shard,
            lease: None,
            cursor: None,
            messages: std::mem::take(pending),
        })
        .await
        .unwrap();
    let offsets: Vec<u64> = receipt.event_offsets.into_iter().flatten().collect();
    let expected: Vec<u64> = (*next + 1..=*next + events as u64).collect();
    assert_eq!(
        offsets, expected,
        "shard {shard}: events not at the next offsets"
    );
    *next += events as u64;
}

/// Fills the journal: per shard, commits of `MESSAGES_PER_COMMIT` handled messages of
/// `EVENTS_PER_MESSAGE` events, the shards concurrently. Folds while filling.
async fn fill(j: &AnyJournal, data: &Arc<Data>) -> Filled {
    let start = Instant::now();
    let tasks: Vec<_> = (0..SHARDS)
        .map(|shard| {
            let (j, data) = (j.clone(), data.clone());
            tokio::spawn(async move {
                let reply = Payload::encode("account.Ack", 1, &()).unwrap();
                let entities = &data.by_shard[shard as usize];
                let mut stream = Vec::with_capacity(
                    entities.len() * (data.rounds * EVENTS_PER_MESSAGE) as usize,
                );
                let mut fold: HashMap<u32, (i64, i64)> = HashMap::new();
                let mut pending = Vec::with_capacity(MESSAGES_PER_COMMIT);
                let (mut next, mut commits) = (0u64, 0u64);
                for round in 0..data.rounds {
                    for &e in entities {
                        let entity = EntityKey::new(ENTITY_TYPE, &data.ids[e as usize]).unwrap();
                        let events = (1..=EVENTS_PER_MESSAGE)
                            .map(|k| {
                                let seq = round * EVENTS_PER_MESSAGE + k;
                                let v = value(e, seq);
                                stream.push((e, v));
                                let f = fold.entry(e).or_insert((0, 0));
                                f.0 += v;
                                f.1 += 1;
                                NewEvent {
                                    seq,
                                    payload: Payload::encode(EVENT_TAG, 1, &v).unwrap(),
                                }
                            })
                            .collect();
                        pending.push(Processed {
                            entity,
                            message_id: Uuid::now_v7(),
                            offset: 0,
                            events,
                            reply: reply.clone(),
                            outgoing: vec![],
                        });
                        if pending.len() == MESSAGES_PER_COMMIT {
                            commit(&j, shard, &mut pending, &mut next).await;
                            commits += 1;
                        }
                    }
                }
                if !pending.is_empty() {
                    commit(&j, shard, &mut pending, &mut next).await;
                    commits += 1;
                }
                (stream, fold, commits)
            })
        })
        .collect();
    let mut streams = Vec::new();
    let mut fold = Fold::new();
    let mut commits = 0;
    for t in tasks {
        let (stream, f, c) = t.await.unwrap();
        streams.push(stream);
        for (e, v) in f {
            fold.insert(data.ids[e as usize].clone(), v);
        }
        commits += c;
    }
    let elapsed = start.elapsed();
    let mut total = 0;
    for shard in 0..SHARDS {
        total += j.head(shard).await.unwrap();
    }
    assert_eq!(total, data.events, "journal heads after the fill");
    Filled {
        streams: Arc::new(streams),
        fold,
        elapsed,
        commits,
    }
}

// ---------------------------------------------------------------------------------------
// Read-model rows and the statements that write them (shared by projection and baseline)

/// Read-model rows, column-wise, sorted by entity id.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    totals: Vec<i64>,
    events: Vec<i64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Aggregates a batch of (entity id, value) per entity.
struct Agg<'a>(HashMap<&'a str, (i64, i64)>);

impl<'a> Agg<'a> {
    fn with_capacity(n: usize) -> Self {
        Agg(HashMap::with_capacity(n))
    }

    fn add(&mut self, id: &'a str, v: i64) {
        let a = self.0.entry(id).or_insert((0, 0));
        a.0 += v;
        a.1 += 1;
    }

    fn rows(self) -> Rows {
        let mut v: Vec<_> = self.0.into_iter().collect();
        // One lock order for every writer.
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut rows = Rows {
            ids: Vec::with_capacity(v.len()),
            totals: Vec::with_capacity(v.len()),
            events: Vec::with_capacity(v.len()),
        };
        for (id, (t, n)) in v {
            rows.ids.push(id.to_owned());
            rows.totals.push(t);
            rows.events.push(n);
        }
        rows
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Upsert,
    Insert,
}

fn short_write(table: &str, done: u64, rows: usize) -> sqlx::Error {
    sqlx::Error::Protocol(format!("{table}: wrote {done} rows of {rows}"))
}

/// One `INSERT … SELECT * FROM UNNEST(…)` statement, upserting or plain.
async fn pg_write(
    conn: &mut PgConnection,
    table: &str,
    rows: &Rows,
    how: Write,
) -> sqlx::Result<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    let sql = match how {
        Write::Upsert => format!(
            "INSERT INTO {table} AS s (entity_id, total, events)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[])
             ON CONFLICT (entity_id) DO UPDATE
                SET total = s.total + EXCLUDED.total, events = s.events + EXCLUDED.events"
        ),
        Write::Insert => format!(
            "INSERT INTO {table} (entity_id, total, events)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[])"
        ),
    };
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(&rows.ids)
        .bind(&rows.totals)
        .bind(&rows.events)
        .execute(conn)
        .await?;
    if done.rows_affected() != rows.len() as u64 {
        return Err(short_write(table, done.rows_affected(), rows.len()));
    }
    Ok(())
}

/// One multi-row `INSERT … VALUES` statement, upserting or plain.
async fn sqlite_write(
    conn: &mut SqliteConnection,
    table: &str,
    rows: &Rows,
    how: Write,
) -> sqlx::Result<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("INSERT INTO {table} (entity_id, total, events) "));
    q.push_values(0..rows.len(), |mut b, i| {
        b.push_bind(rows.ids[i].clone())
            .push_bind(rows.totals[i])
            .push_bind(rows.events[i]);
    });
    if how == Write::Upsert {
        q.push(format!(
            " ON CONFLICT (entity_id) DO UPDATE
                SET total = {table}.total + excluded.total, events = {table}.events + excluded.events"
        ));
    }
    let done = q.build().execute(conn).await?;
    if done.rows_affected() != rows.len() as u64 {
        return Err(short_write(table, done.rows_affected(), rows.len()));
    }
    Ok(())
}

async fn tx_write(tx: &mut AnyTx, table: &str, rows: &Rows, how: Write) -> sqlx::Result<()> {
    match tx {
        AnyTx::Postgres(tx) => pg_write(tx, table, rows, how).await,
        AnyTx::Sqlite(tx) => sqlite_write(tx, table, rows, how).await,
    }
}

async fn exec(j: &AnyJournal, sql: String) {
    match j {
        AnyJournal::Postgres(p) => {
            sqlx::query(AssertSqlSafe(sql))
                .execute(p.pool())
                .await
                .unwrap();
        }
        AnyJournal::Sqlite(s) => {
            sqlx::query(AssertSqlSafe(sql))
                .execute(s.writer())
                .await
                .unwrap();
        }
    }
}

/// Creates a read-model table: keyed by entity for upserts, or a plain heap with a
/// non-unique index on `entity_id` for the plain-INSERT baseline.
async fn create_table(j: &AnyJournal, table: &str, how: Write) {
    exec(j, format!("DROP TABLE IF EXISTS {table}")).await;
    match how {
        Write::Upsert => {
            exec(
                j,
                format!(
                    "CREATE TABLE {table} (entity_id TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
                ),
            )
            .await;
        }
        Write::Insert => {
            exec(
                j,
                format!(
                    "CREATE TABLE {table} (entity_id TEXT NOT NULL, total BIGINT NOT NULL, events BIGINT NOT NULL)"
                ),
            )
            .await;
            exec(
                j,
                format!("CREATE INDEX {table}_entity ON {table} (entity_id)"),
            )
            .await;
        }
    }
}

/// Compares a table (summed per entity) with the fold; `None` when equal.
async fn check_table(j: &AnyJournal, label: &str, table: &str, fold: &Fold) -> Option<String> {
    let sql = format!(
        "SELECT entity_id, CAST(SUM(total) AS BIGINT), CAST(SUM(events) AS BIGINT) FROM {table} GROUP BY entity_id"
    );
    let rows: Vec<(String, i64, i64)> = match j {
        AnyJournal::Postgres(p) => sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(p.pool())
            .await
            .unwrap(),
        AnyJournal::Sqlite(s) => sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(s.reader())
            .await
            .unwrap(),
    };
    let model: Fold = rows.into_iter().map(|(id, t, n)| (id, (t, n))).collect();
    if &model == fold {
        return None;
    }
    let missing = fold.keys().filter(|k| !model.contains_key(*k)).count();
    let extra = model.keys().filter(|k| !fold.contains_key(*k)).count();
    let differ = fold
        .iter()
        .filter(|(k, v)| model.get(*k).is_some_and(|m| m != *v))
        .count();
    let example = fold
        .iter()
        .find(|(k, v)| model.get(*k) != Some(*v))
        .map(|(k, v)| format!("; e.g. {k}: fold {v:?}, table {:?}", model.get(k)))
        .unwrap_or_default();
    Some(format!(
        "{label} {table} differs from the fold: {missing} entities missing, {extra} extra, {differ} with other values{example}"
    ))
}

// ---------------------------------------------------------------------------------------
// The projection

/// Per entity: the sum of the event values and the number of events, one upsert per batch.
struct Totals {
    name: String,
    table: String,
    /// Time spent decoding and aggregating, and in the upsert statement (ns, all shards).
    prep_ns: AtomicU64,
    sql_ns: AtomicU64,
    applies: AtomicU64,
    rows: AtomicU64,
}

impl Totals {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Totals {
            name: name.to_owned(),
            table: name.to_owned(),
            prep_ns: AtomicU64::new(0),
            sql_ns: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        })
    }

    fn prep(&self) -> Duration {
        Duration::from_nanos(self.prep_ns.load(Ordering::Relaxed))
    }

    fn sql(&self) -> Duration {
        Duration::from_nanos(self.sql_ns.load(Ordering::Relaxed))
    }
}

impl Projection for Totals {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == ENTITY_TYPE
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        let start = Instant::now();
        let mut agg = Agg::with_capacity(events.len());
        for e in events {
            agg.add(e.entity.entity_id(), e.payload.decode::<i64>()?);
        }
        let rows = agg.rows();
        let prepared = Instant::now();
        tx_write(tx, &self.table, &rows, Write::Upsert).await?;
        self.prep_ns
            .fetch_add((prepared - start).as_nanos() as u64, Ordering::Relaxed);
        self.sql_ns
            .fetch_add(prepared.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        let sql = format!("DELETE FROM {}", self.table);
        match tx {
            AnyTx::Postgres(tx) => {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut **tx).await?;
            }
            AnyTx::Sqlite(tx) => {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Runs

/// A catch-up by the real `Projector`s.
struct ProjectorRun {
    elapsed: Duration,
    /// Sum over the shards' tasks of their run time.
    task_time: Duration,
    steps: u64,
    events: u64,
    prep: Duration,
    sql: Duration,
    rows: u64,
}

/// One `Projector` per shard, all concurrently: `init()`, then `step()` until idle.
async fn run_projectors(j: &AnyJournal, p: &Arc<Totals>, batch: usize) -> ProjectorRun {
    let start = Instant::now();
    let tasks: Vec<_> = (0..j.shard_count())
        .map(|shard| {
            let j = j.clone();
            let p: Arc<dyn DynProjection> = p.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut projector = Projector::new(j, p, shard, batch);
                projector.init().await.unwrap();
                let (mut steps, mut events) = (0u64, 0u64);
                loop {
                    match projector.step().await.unwrap() {
                        Step::Idle => break,
                        Step::Applied { events: n, .. } => {
                            steps += 1;
                            events += n as u64;
                        }
                        other => panic!("shard {shard}: unexpected step {other:?}"),
                    }
                }
                (steps, events, started.elapsed())
            })
        })
        .collect();
    let (mut steps, mut events, mut task_time) = (0, 0, Duration::ZERO);
    for t in tasks {
        let (s, e, d) = t.await.unwrap();
        steps += s;
        events += e;
        task_time += d;
    }
    ProjectorRun {
        elapsed: start.elapsed(),
        task_time,
        steps,
        events,
        prep: p.prep(),
        sql: p.sql(),
        rows: p.rows.load(Ordering::Relaxed),
    }
}

/// A raw baseline run.
struct RawRun {
    elapsed: Duration,
    statements: u64,
    rows: u64,
}

/// The read-model writes alone: each shard's events in offset order, cut into batches of
/// `batch`, aggregated like the projection does, one statement per batch (in its own
/// transaction), the shards concurrently on the journal's pool.
async fn run_raw(
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

/// Time per phase of a step, summed over the shards.
#[derive(Default, Clone, Copy)]
struct Phases {
    cursor: Duration,
    read: Duration,
    begin: Duration,
    apply: Duration,
    checkpoint: Duration,
    commit: Duration,
    steps: u64,
    events: u64,
}

impl Phases {
    fn add(&mut self, o: &Phases) {
        self.cursor += o.cursor;
        self.read += o.read;
        self.begin += o.begin;
        self.apply += o.apply;
        self.checkpoint += o.checkpoint;
        self.commit += o.commit;
        self.steps += o.steps;
        self.events += o.events;
    }

    fn total(&self) -> Duration {
        self.cursor + self.read + self.begin + self.apply + self.checkpoint + self.commit
    }
}

/// A copy of `Projector::step`'s sequence built from the public API, each phase timed:
/// read the checkpoint, `read_shard`, begin, apply, compare-and-set the checkpoint, commit;
/// on `shards`, concurrently. With `reread` false the checkpoint is read once and then kept
/// in memory (the compare-and-set still guards it): what the per-step read costs.
async fn run_phases(
    j: &AnyJournal,
    p: &Arc<Totals>,
    batch: usize,
    shards: &[Shard],
    reread: bool,
) -> (Duration, Phases) {
    let start = Instant::now();
    let tasks: Vec<_> = shards
        .iter()
        .map(|&shard| {
            let (j, p) = (j.clone(), p.clone());
            tokio::spawn(async move {
                let consumer = checkpoint_name(&p.name);
                let mut tx = j.begin().await.unwrap();
                tx.ensure_checkpoint(&consumer, shard).await.unwrap();
                tx.commit().await.unwrap();
                let mut known: Option<u64> = None;
                let mut ph = Phases::default();
                loop {
                    let t0 = Instant::now();
                    let from = match known {
                        Some(at) if !reread => at,
                        _ => j.cursor(&consumer, shard).await.unwrap(),
                    };
                    let t1 = Instant::now();
                    let entries = j
                        .read_shard(shard, from, batch, Some(EntryKind::Event))
                        .await
                        .unwrap();
                    let t2 = Instant::now();
                    ph.cursor += t1 - t0;
                    ph.read += t2 - t1;
                    let Some(last) = entries.last().map(|e| e.offset) else {
                        break;
                    };
                    let wanted: Vec<Entry> = entries
                        .into_iter()
                        .filter(|e| Projection::wants(&*p, e.entity.entity_type()))
                        .collect();
                    let mut tx = j.begin().await.unwrap();
                    let t3 = Instant::now();
                    Projection::apply(&*p, &mut tx, &wanted).await.unwrap();
                    let t4 = Instant::now();
                    tx.move_checkpoint(&consumer, shard, from, last)
                        .await
                        .unwrap();
                    let t5 = Instant::now();
                    tx.commit().await.unwrap();
                    let t6 = Instant::now();
                    ph.begin += t3 - t2;
                    ph.apply += t4 - t3;
                    ph.checkpoint += t5 - t4;
                    ph.commit += t6 - t5;
                    known = Some(last);
                    ph.steps += 1;
                    ph.events += wanted.len() as u64;
                }
                ph
            })
        })
        .collect();
    let mut phases = Phases::default();
    for t in tasks {
        phases.add(&t.await.unwrap());
    }
    (start.elapsed(), phases)
}

/// The journal read alone: every shard read in pages of `batch` events, concurrently.
async fn run_read_only(j: &AnyJournal, batch: usize) -> (Duration, u64) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..j.shard_count())
        .map(|shard| {
            let j = j.clone();
            tokio::spawn(async move {
                let (mut after, mut n) = (0u64, 0u64);
                loop {
                    let page = j
                        .read_shard(shard, after, batch, Some(EntryKind::Event))
                        .await
                        .unwrap();
                    let Some(last) = page.last() else { break };
                    after = last.offset;
                    n += page.len() as u64;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    (start.elapsed(), n)
}

// ---------------------------------------------------------------------------------------
// One backend

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

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn pct(part: Duration, whole: Duration) -> String {
    format!(
        "{:.0}%",
        100.0 * part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
    )
}

fn per(d: Duration, n: u64) -> Duration {
    d / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// Summary lines and anomalies of the whole run.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    anomalies: Vec<String>,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }

    fn check(&mut self, found: Option<String>) {
        if let Some(f) = found {
            println!("MISMATCH: {f}");
            self.anomalies.push(f);
        }
    }
}

/// Fill, catch-up at each batch size next to the raw baselines, then the phase breakdown.
async fn bench_backend(j: AnyJournal, label: &str, size: Size, quick: bool, r: &mut Report) {
    let data = Arc::new(Data::new(size));
    let filled = fill(&j, &data).await;
    r.line(format!(
        "{label} fill: {} events over {} entities, {SHARDS} shards concurrently: {:.1} s = {} events/s \
         ({} commits of {MESSAGES_PER_COMMIT} messages × {EVENTS_PER_MESSAGE} events)",
        grouped(data.events as f64),
        grouped(size.entities as f64),
        filled.elapsed.as_secs_f64(),
        grouped(rate(data.events, filled.elapsed)),
        grouped(filled.commits as f64),
    ));
    if let AnyJournal::Postgres(p) = &j {
        // A journal that has been sitting a while: hint bits set, visibility map and
        // statistics up to date, dirty pages flushed, so that the first catch-up does
        // not pay for what the ones after it would not.
        let t = Instant::now();
        sqlx::query("VACUUM ANALYZE journal")
            .execute(p.pool())
            .await
            .unwrap();
        if let Err(e) = sqlx::query("CHECKPOINT").execute(p.pool()).await {
            println!("note: CHECKPOINT failed (needs superuser): {e}");
        }
        println!(
            "{label} (VACUUM ANALYZE journal + CHECKPOINT after the fill: {:.1} s, not timed)",
            t.elapsed().as_secs_f64()
        );
    }
    let fold = &filled.fold;
    for batch in BATCHES {
        let upsert_table = format!("raw_upsert_b{batch}");
        let insert_table = format!("raw_insert_b{batch}");
        let proj_name = format!("totals_b{batch}");
        create_table(&j, &upsert_table, Write::Upsert).await;
        create_table(&j, &insert_table, Write::Insert).await;
        create_table(&j, &proj_name, Write::Upsert).await;

        let p = Totals::new(&proj_name);
        let pr = run_projectors(&j, &p, batch).await;
        r.check(check_table(&j, label, &proj_name, fold).await);
        if pr.events != data.events {
            r.check(Some(format!(
                "{label} projector b{batch} applied {} events of {}",
                pr.events, data.events
            )));
        }
        let up = run_raw(
            &j,
            &data,
            &filled.streams,
            &upsert_table,
            batch,
            Write::Upsert,
        )
        .await;
        r.check(check_table(&j, label, &upsert_table, fold).await);
        let ins = run_raw(
            &j,
            &data,
            &filled.streams,
            &insert_table,
            batch,
            Write::Insert,
        )
        .await;
        r.check(check_table(&j, label, &insert_table, fold).await);

        let proj_rate = rate(pr.events, pr.elapsed);
        let up_rate = rate(data.events, up.elapsed);
        let ins_rate = rate(data.events, ins.elapsed);
        r.line(format!("{label} batch {batch}:"));
        r.line(format!(
            "  projector catch-up ({SHARDS} Projectors concurrently) {:>7.2} s  {:>9} events/s  \
             ({} steps, {:.0} rows per upsert, {} rows/s)",
            pr.elapsed.as_secs_f64(),
            grouped(proj_rate),
            grouped(pr.steps as f64),
            pr.rows as f64 / pr.steps.max(1) as f64,
            grouped(rate(pr.rows, pr.elapsed)),
        ));
        r.line(format!(
            "  raw upsert, same statements              {:>7.2} s  {:>9} events/s  \
             ({} statements, {} rows/s)",
            up.elapsed.as_secs_f64(),
            grouped(up_rate),
            grouped(up.statements as f64),
            grouped(rate(up.rows, up.elapsed)),
        ));
        r.line(format!(
            "  raw plain multi-row INSERT, same rows    {:>7.2} s  {:>9} events/s  \
             ({} statements, {} rows/s)",
            ins.elapsed.as_secs_f64(),
            grouped(ins_rate),
            grouped(ins.statements as f64),
            grouped(rate(ins.rows, ins.elapsed)),
        ));
        r.line(format!(
            "  projection/raw upsert = {:.2} (target ≥ 0.50){}; projection/raw INSERT = {:.2}",
            proj_rate / up_rate,
            if quick {
                " (quick mode: too few steps to judge)"
            } else if proj_rate / up_rate >= 0.5 {
                ""
            } else {
                " BELOW TARGET"
            },
            proj_rate / ins_rate,
        ));
        let apply = pr.prep + pr.sql;
        let outside = pr.task_time.saturating_sub(apply);
        r.line(format!(
            "  projector task time {:.1} s (sum of {SHARDS} tasks): apply {} (decode+aggregate {}, \
             upsert {}), outside apply {} = {} per step",
            pr.task_time.as_secs_f64(),
            pct(apply, pr.task_time),
            pct(pr.prep, pr.task_time),
            pct(pr.sql, pr.task_time),
            pct(outside, pr.task_time),
            ms(per(outside, pr.steps)),
        ));
    }

    // Where a step's time goes, at the first batch size: the copy of `step` on every shard;
    // the same with the checkpoint kept in memory; and on one shard alone (no waiting for
    // pool connections or CPU, so the phases are plain latencies).
    let batch = BATCHES[0];
    let all: Vec<Shard> = (0..SHARDS).collect();
    let variants: [(&str, &str, &[Shard], bool); 3] = [
        (
            "phases",
            "step phases (hand-rolled copy of Projector::step, 8 shards concurrently)",
            &all,
            true,
        ),
        (
            "phases_kept",
            "same, checkpoint read once and kept in memory (no per-step read)",
            &all,
            false,
        ),
        (
            "phases_one",
            "same as the copy of step, shard 0 alone (uncontended latencies)",
            &[0],
            true,
        ),
    ];
    for (key, what, shards, reread) in variants {
        let name = format!("{key}_b{batch}");
        create_table(&j, &name, Write::Upsert).await;
        let p = Totals::new(&name);
        let (elapsed, ph) = run_phases(&j, &p, batch, shards, reread).await;
        let expected: Fold = fold
            .iter()
            .filter(|(id, _)| shards.contains(&shard_of(id, SHARDS)))
            .map(|(id, v)| (id.clone(), *v))
            .collect();
        r.check(check_table(&j, label, &name, &expected).await);
        let total = ph.total();
        let cell = |d: Duration| format!("{} ({})", ms(per(d, ph.steps)), pct(d, total));
        r.line(format!(
            "  {what}, batch {batch}: {:.2} s, {} events/s; per step:",
            elapsed.as_secs_f64(),
            grouped(rate(ph.events, elapsed)),
        ));
        r.line(format!(
            "    checkpoint read {}, read_shard {}, begin {}, apply {} [decode+aggregate {}, \
             upsert {}], checkpoint CAS {}, commit {}",
            cell(ph.cursor),
            cell(ph.read),
            cell(ph.begin),
            cell(ph.apply),
            ms(per(p.prep(), ph.steps)),
            ms(per(p.sql(), ph.steps)),
            cell(ph.checkpoint),
            cell(ph.commit),
        ));
    }
    let (read_elapsed, read) = run_read_only(&j, batch).await;
    r.line(format!(
        "  journal read alone (read_shard, pages of {batch}, {SHARDS} concurrently): {:.2} s, {} events/s",
        read_elapsed.as_secs_f64(),
        grouped(rate(read, read_elapsed)),
    ));
    if read != data.events {
        r.check(Some(format!(
            "{label}: read {read} events of {}",
            data.events
        )));
    }
}

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn bench_pg(s: &Settings, r: &mut Report) {
    let url = pg_url();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await
        .unwrap_or_default();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&admin)
        .await
        .unwrap_or_default();
    let drop = format!("DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE");
    sqlx::query(AssertSqlSafe(drop.clone()))
        .execute(&admin)
        .await
        .unwrap();
    let j: AnyJournal = PgJournal::open(PgOptions::new(&url).schema(PG_SCHEMA).shard_count(SHARDS))
        .await
        .unwrap()
        .into();
    let host = url.rsplit('@').next().unwrap_or_default();
    r.line(format!(
        "== PostgreSQL {version} at {host}, schema {PG_SCHEMA}, synchronous_commit={sync}, \
         journal pool of 10 connections"
    ));
    let started = Instant::now();
    bench_backend(j.clone(), "pg", s.pg, s.quick, r).await;
    j.close().await;
    sqlx::query(AssertSqlSafe(drop))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    println!(
        "(PostgreSQL part: {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

async fn bench_sqlite(s: &Settings, r: &mut Report) {
    let dir = std::env::temp_dir().join(format!(
        "entlog-bench-projections-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let j: AnyJournal =
        SqliteJournal::open(SqliteOptions::new(dir.join("journal.db")).shard_count(SHARDS))
            .await
            .unwrap()
            .into();
    r.line(format!(
        "== SQLite (WAL, synchronous=FULL, one writer connection, 4 readers) in {}",
        dir.display()
    ));
    let started = Instant::now();
    bench_backend(j.clone(), "sqlite", s.sqlite, s.quick, r).await;
    j.close().await;
    drop(j);
    let _ = std::fs::remove_dir_all(&dir);
    println!("(SQLite part: {:.1} s)", started.elapsed().as_secs_f64());
}

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
    println!();
    println!(
        "summary ({}events/s = journal events folded per second; the raw baselines write the \
         same rows with the same statements, without journal read or checkpoint)",
        if s.quick { "QUICK mode; " } else { "" }
    );
    for l in &report.lines {
        println!("{l}");
    }
    if report.anomalies.is_empty() {
        println!("read models = fold: yes, every table");
    } else {
        println!("MISMATCHES ({}):", report.anomalies.len());
        for a in &report.anomalies {
            println!("  - {a}");
        }
    }
    println!("bench wall time: {:.1} s", wall.elapsed().as_secs_f64());
    if !report.anomalies.is_empty() {
        std::process::exit(1);
    }
}
