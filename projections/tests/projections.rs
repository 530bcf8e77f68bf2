//! Projections on both backends: exactly once under kills at random points (invariant 9),
//! a failing handler stopping only its shard, and rebuilds.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entlog_journal::testing::database_url;
use entlog_journal::{
    AnyJournal, AnyTx, EntityKey, Entry, Journal, NewEvent, Payload, PgJournal, PgOptions,
    Processed, ProcessedBatch, SqliteJournal, SqliteOptions, sql,
};
use entlog_projections::{Projection, ProjectionError, Projector, Step, rebuild, status};
use rand::Rng;
use uuid::Uuid;

const SHARDS: u32 = 4;

/// Sums each counter's event values into `sums`; fails on the value 13 while `poisoned`.
struct Sums {
    poisoned: AtomicBool,
    /// Sleep inside the transaction after writing, to widen the window for kills.
    linger: bool,
    /// Sleep inside a reset after emptying `sums`, to widen the window in which a live
    /// projector could commit between a rebuild's reset and its checkpoints.
    slow_reset: bool,
}

impl Sums {
    fn new() -> Arc<Self> {
        Arc::new(Sums {
            poisoned: AtomicBool::new(false),
            linger: false,
            slow_reset: false,
        })
    }
}

impl Projection for Sums {
    fn name(&self) -> &str {
        "sums"
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == "counter"
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        for e in events {
            let v: i64 = e.payload.decode()?;
            if v == 13 && self.poisoned.load(Ordering::SeqCst) {
                return Err(ProjectionError::Handler("13 is unlucky".into()));
            }
            let id = e.entity.entity_id();
            tx.execute(
                sql("INSERT INTO sums VALUES ($1, $2, 1) ON CONFLICT (entity_id)
                     DO UPDATE SET total = sums.total + excluded.total, events = sums.events + 1")
                .bind(id)
                .bind(v),
            )
            .await?;
        }
        if self.linger {
            let pause = rand::rng().random_range(0..3);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        tx.execute(sql("DELETE FROM sums")).await?;
        if self.slow_reset {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        Ok(())
    }
}

enum Backend {
    Pg(String),
    Sqlite(std::path::PathBuf),
}

impl Backend {
    async fn pg() -> Self {
        let _ = database_url().await;
        Backend::Pg(format!("p_{}", Uuid::now_v7().simple()))
    }

    fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("entlog-proj-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Backend::Sqlite(dir.join("p.db"))
    }

    async fn open(&self) -> AnyJournal {
        let j: AnyJournal = match self {
            Backend::Pg(schema) => PgJournal::open(
                PgOptions::new(database_url().await)
                    .schema(schema)
                    .shard_count(SHARDS),
            )
            .await
            .unwrap()
            .into(),
            Backend::Sqlite(path) => {
                SqliteJournal::open(SqliteOptions::new(path).shard_count(SHARDS))
                    .await
                    .unwrap()
                    .into()
            }
        };
        let ddl = "CREATE TABLE IF NOT EXISTS sums (entity_id TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)";
        j.execute(sql(ddl)).await.unwrap();
        j
    }

    /// Another handle on the same journal with connections of its own (PostgreSQL); on
    /// SQLite, where one handle owns the file, the same one.
    async fn second_handle(&self, j: &AnyJournal) -> AnyJournal {
        match self {
            Backend::Pg(schema) => PgJournal::open(
                PgOptions::new(database_url().await)
                    .schema(schema)
                    .shard_count(SHARDS)
                    .max_connections(2)
                    .notify(false),
            )
            .await
            .unwrap()
            .into(),
            Backend::Sqlite(_) => j.clone(),
        }
    }

    async fn cleanup(&self, j: AnyJournal) {
        j.close().await;
        match self {
            Backend::Pg(schema) => {
                let pool = sqlx::PgPool::connect(&database_url().await).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            Backend::Sqlite(path) => {
                let _ = std::fs::remove_dir_all(path.parent().unwrap());
            }
        }
    }
}

/// Writes `rounds` events to each of `entities` counters (values 1..), one commit per
/// entity and round. Returns the fold: entity → (total, events).
async fn write_events(
    j: &AnyJournal,
    prefix: &str,
    entities: usize,
    rounds: u64,
    start_seq: u64,
) -> BTreeMap<String, (i64, i64)> {
    let mut fold = BTreeMap::new();
    for r in 0..rounds {
        for e in 0..entities {
            let id = format!("{prefix}{e}");
            let key = EntityKey::new("counter", &id).unwrap();
            let value = (r as i64 * 7 + e as i64) % 50 + 1;
            j.commit(ProcessedBatch {
                shard: j.shard_of(&key),
                lease: None,
                cursor: None,
                messages: vec![Processed {
                    entity: key,
                    message_id: Uuid::now_v7(),
                    offset: 0,
                    events: vec![NewEvent {
                        seq: start_seq + r + 1,
                        payload: Payload::encode("counter.event", 1, &value).unwrap(),
                    }],
                    reply: Payload::encode("counter.reply", 1, &()).unwrap(),
                    outgoing: vec![],
                }],
            })
            .await
            .unwrap();
            let f = fold.entry(id).or_insert((0, 0));
            f.0 += value;
            f.1 += 1;
        }
    }
    fold
}

/// The fold computed from the journal itself.
async fn journal_fold(j: &AnyJournal) -> BTreeMap<String, (i64, i64)> {
    let mut fold = BTreeMap::new();
    for shard in 0..SHARDS {
        let mut after = 0;
        loop {
            let page = j
                .read_shard(shard, after, 1000, Some(entlog_journal::EntryKind::Event))
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.offset;
            for e in &page {
                let v: i64 = e.payload.decode().unwrap();
                let f = fold
                    .entry(e.entity.entity_id().to_owned())
                    .or_insert((0, 0));
                f.0 += v;
                f.1 += 1;
            }
        }
    }
    fold
}

async fn read_model(j: &AnyJournal) -> BTreeMap<String, (i64, i64)> {
    let rows: Vec<(String, i64, i64)> = j
        .fetch_all(sql("SELECT entity_id, total, events FROM sums"))
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap()))
        .collect();
    rows.into_iter().map(|(id, t, n)| (id, (t, n))).collect()
}

/// Runs projectors of every shard until they are idle.
async fn catch_up(j: &AnyJournal, p: Arc<Sums>) {
    for shard in 0..SHARDS {
        let mut projector = Projector::new(j.clone(), p.clone(), shard, 64);
        projector.init().await.unwrap();
        loop {
            match projector.step().await.unwrap() {
                Step::Idle => break,
                Step::Failed { offset, error } => {
                    panic!("shard {shard} failed at {offset}: {error}")
                }
                _ => {}
            }
        }
    }
}

/// Invariant 9: projectors killed at random points — mid-batch, mid-transaction, two of
/// them overlapping on one shard — while events keep coming; afterwards the read model is
/// exactly the fold of the journal.
///
/// A kill is a crash: the task is aborted and, on PostgreSQL, its connections are closed
/// with it (as a dead process's would be). Aborting the task alone and reusing its pool
/// lost events here: a pooled connection returned mid-`BEGIN` stays inside a server-side
/// transaction that the pool does not know about, and later statements join it.
async fn exactly_once_under_kills(b: Backend, kills: usize) {
    let j = b.open().await;
    let p = Arc::new(Sums {
        poisoned: AtomicBool::new(false),
        linger: true,
        slow_reset: false,
    });
    let writer = {
        let j = j.clone();
        tokio::spawn(async move { write_events(&j, "e", 12, 40, 0).await })
    };
    let mut rng = rand::rng();
    for round in 0..kills {
        let shard = rng.random_range(0..SHARDS);
        // Sometimes two projectors of one shard run at once, as after a failover.
        let copies = if round % 4 == 0 { 2 } else { 1 };
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..copies {
            // A killed process takes its connections with it: on PostgreSQL each
            // projector gets its own handle, closed right after the kill, so the
            // server rolls back whatever it had open.
            let handle = b.second_handle(&j).await;
            handles.push(handle.clone());
            let projector = Projector::new(handle, p.clone(), shard, rng.random_range(1..20));
            let (stop, rx) = tokio::sync::watch::channel(false);
            tasks.push(tokio::spawn(async move {
                let _keep = stop;
                projector.run(rx, Duration::from_millis(5)).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        for t in tasks {
            t.abort();
        }
        for h in handles {
            if matches!(h, AnyJournal::Postgres(_)) {
                h.close().await;
            }
        }
        if let (Backend::Pg(schema), AnyJournal::Postgres(pj)) = (&b, &j)
            && round % 5 == 1
        {
            // And the server-side kill: connections of this test's projectors that hold
            // the read model's rows in an open transaction right now.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                  WHERE l.relation = '{schema}.sums'::regclass AND l.pid <> pg_backend_pid()"
            )))
            .execute(pj.pool())
            .await;
        }
    }
    let fold = writer.await.unwrap();
    catch_up(&j, p.clone()).await;
    assert_eq!(
        journal_fold(&j).await,
        fold,
        "the journal holds every committed event"
    );
    assert_eq!(
        read_model(&j).await,
        fold,
        "read model = fold of the journal"
    );
    b.cleanup(j).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_exactly_once_under_kills() {
    exactly_once_under_kills(Backend::sqlite(), 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_exactly_once_under_kills() {
    exactly_once_under_kills(Backend::pg().await, 60).await;
}

/// A failing handler stops its shard's projection at that event, visibly; the other
/// shards go on; once the handler is fixed, it continues past the event.
async fn failing_handler_stops_its_shard(b: Backend) {
    let j = b.open().await;
    let p = Sums::new();
    p.poisoned.store(true, Ordering::SeqCst);
    let fold = write_events(&j, "e", 12, 3, 0).await;
    // Value 13 is written for (round, entity) with (7r + e) % 50 + 1 == 13: r=1, e=5.
    let bad = EntityKey::new("counter", "e5").unwrap();
    let bad_shard = j.shard_of(&bad);
    let mut stuck_at = None;
    for shard in 0..SHARDS {
        let mut projector = Projector::new(j.clone(), p.clone(), shard, 64);
        projector.init().await.unwrap();
        loop {
            match projector.step().await.unwrap() {
                Step::Idle => break,
                Step::Failed { offset, error } => {
                    assert_eq!(shard, bad_shard);
                    assert!(error.contains("unlucky"));
                    stuck_at = Some(offset);
                    // Retrying does not skip it.
                    assert!(
                        matches!(projector.step().await.unwrap(), Step::Failed { offset: o, .. } if o == offset)
                    );
                    break;
                }
                _ => {}
            }
        }
    }
    let stuck_at = stuck_at.expect("the poisoned event stops its shard");
    let st = status(&j, "sums").await.unwrap();
    for s in &st {
        if s.shard == bad_shard {
            assert_eq!(s.checkpoint, stuck_at - 1, "stopped right before the event");
            assert_eq!(s.error.as_ref().map(|e| e.0), Some(stuck_at));
            assert!(s.lag_events > 0);
        } else {
            assert_eq!(s.checkpoint, s.head, "shard {} went on", s.shard);
            assert_eq!(s.lag_events, 0);
            assert!(s.error.is_none());
        }
    }
    p.poisoned.store(false, Ordering::SeqCst);
    catch_up(&j, p.clone()).await;
    assert_eq!(read_model(&j).await, fold);
    assert!(
        status(&j, "sums")
            .await
            .unwrap()
            .iter()
            .all(|s| s.error.is_none()),
        "failure cleared"
    );
    b.cleanup(j).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failing_handler_stops_its_shard() {
    failing_handler_stops_its_shard(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_failing_handler_stops_its_shard() {
    failing_handler_stops_its_shard(Backend::pg().await).await;
}

/// A rebuild produces the same read model as the live projection, reporting progress.
async fn rebuild_matches_live(b: Backend) {
    let j = b.open().await;
    let p = Sums::new();
    let fold = write_events(&j, "e", 10, 20, 0).await;
    catch_up(&j, p.clone()).await;
    let live = read_model(&j).await;
    assert_eq!(live, fold);
    let mut reports = Vec::new();
    rebuild(&j, p.clone(), 16, |pr| reports.push(pr))
        .await
        .unwrap();
    assert_eq!(read_model(&j).await, live);
    let last = reports.last().unwrap();
    assert_eq!(last.done, last.total);
    assert!(reports.len() > 2, "progress reported along the way");
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    // New events after the rebuild are picked up as usual.
    let more = write_events(&j, "e", 10, 2, 20).await;
    catch_up(&j, p).await;
    let model = read_model(&j).await;
    for (id, (t, n)) in more {
        assert_eq!(model[&id], (fold[&id].0 + t, fold[&id].1 + n));
    }
    b.cleanup(j).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_matches_live() {
    rebuild_matches_live(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_rebuild_matches_live() {
    rebuild_matches_live(Backend::pg().await).await;
}

/// Rebuilds while live projectors of every shard keep applying new events (of entities
/// the read model has not seen, whose rows a reset cannot lock): afterwards the read
/// model is exactly the fold of the journal — nothing a live projector committed during a
/// rebuild is applied twice.
async fn rebuild_beside_live_projectors(b: Backend) {
    let j = b.open().await;
    let p = Arc::new(Sums {
        poisoned: AtomicBool::new(false),
        linger: true,
        slow_reset: true,
    });
    write_events(&j, "a", 8, 5, 0).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut live = Vec::new();
    for shard in 0..SHARDS {
        let projector = Projector::new(b.second_handle(&j).await, p.clone(), shard, 8);
        let rx = rx.clone();
        live.push(tokio::spawn(async move {
            projector.run(rx, Duration::from_millis(2)).await
        }));
    }
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (j, writing) = (j.clone(), writing.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while writing.load(Ordering::SeqCst) {
                write_events(&j, &format!("w{round}-"), 4, 1, 0).await;
                round += 1;
            }
            round
        })
    };
    for _ in 0..4 {
        rebuild(&j, p.clone(), 16, |_| {}).await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    assert!(rounds > 0, "events were written during the rebuilds");
    stop.send(true).unwrap();
    for t in live {
        t.await.unwrap();
    }
    catch_up(&j, p).await;
    assert_eq!(
        read_model(&j).await,
        journal_fold(&j).await,
        "read model = fold of the journal after rebuilds beside live projectors"
    );
    b.cleanup(j).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_rebuild_beside_live_projectors() {
    rebuild_beside_live_projectors(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_rebuild_beside_live_projectors() {
    rebuild_beside_live_projectors(Backend::pg().await).await;
}
