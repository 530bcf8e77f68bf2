//! The conformance suite on PostgreSQL (one schema per test), plus what only PostgreSQL
//! has: connections killed by the server, shard locks on dedicated connections, and
//! commits delayed inside their transactions.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use entlog_journal::testing::conformance::{self as suite, Backend, id_in_shard};
use entlog_journal::testing::database_url;
use entlog_journal::{
    AppendOutcome, EntityKey, Journal, JournalError, NewEvent, NewMessage, Payload, PgJournal,
    PgOptions, Processed, ProcessedBatch, ShardLocks,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Gives each journal its own schema, dropped when the test ends well.
struct Pg {
    url: String,
    schemas: Mutex<Vec<String>>,
    /// Install a trigger that sleeps a random 0-5 ms after each insert into the journal,
    /// inside the inserting transaction: commits then finish in a scrambled order.
    delay_commits: bool,
}

impl Pg {
    async fn new() -> Self {
        Pg {
            url: database_url().await,
            schemas: Mutex::new(Vec::new()),
            delay_commits: false,
        }
    }

    fn options(&self, schema: &str, shards: u32) -> PgOptions {
        PgOptions::new(&self.url)
            .schema(schema)
            .shard_count(shards)
            .max_connections(8)
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    async fn cleanup(self) {
        let mut conn = self.admin().await;
        let schemas: Vec<String> = self.schemas.lock().unwrap().drain(..).collect();
        for s in schemas {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {s} CASCADE"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

impl Backend for Pg {
    type J = PgJournal;

    async fn fresh(&self, shards: u32) -> PgJournal {
        let schema = format!("t_{}", Uuid::now_v7().simple());
        self.schemas.lock().unwrap().push(schema.clone());
        let j = PgJournal::open(self.options(&schema, shards))
            .await
            .unwrap();
        if self.delay_commits {
            sqlx::raw_sql(
                "CREATE FUNCTION delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(random() * 0.005); RETURN NULL; END $$;
                 CREATE TRIGGER delay_commit AFTER INSERT ON journal
                 FOR EACH STATEMENT EXECUTE FUNCTION delay_commit();",
            )
            .execute(j.pool())
            .await
            .unwrap();
        }
        j
    }

    async fn reopen(&self, journal: PgJournal, shards: u32) -> entlog_journal::Result<PgJournal> {
        let schema = journal.schema().to_owned();
        journal.close().await;
        PgJournal::open(self.options(&schema, shards)).await
    }
}

macro_rules! conformance {
    ($($name:ident $(($($arg:expr),*))?;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let b = Pg::new().await;
                suite::$name(&b $($(, $arg)*)?).await;
                b.cleanup().await;
            }
        )*
    };
}

conformance! {
    durable_ack;
    dedup;
    atomic_batch_commit;
    cancelled_commits_are_all_or_nothing(200);
    seq_fencing(20, 4);
    lease_fencing;
    checked_bytes;
    snapshots;
    bad_input;
    wrong_shard_count_and_format;
    scheduled_messages;
    cancel_scheduled;
    headers_round_trip;
    cancel_races_promotion(400);
    event_stream;
    cursors_move_forward;
    wakeups;
    batched_replies;
    runner_registry;
    mailbox_reads;
    damaged_mailbox_entries;
    mailbox_bad_input;
    commit_many_all_or_none;
}

/// Invariant 6 with commits held open for a random 0-5 ms after their insert, so that
/// transactions commit out of the order in which they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_skipped_entries_with_delayed_commits() {
    let b = Pg {
        delay_commits: true,
        ..Pg::new().await
    };
    suite::no_skipped_entries(&b, 5, 8, 40).await;
    b.cleanup().await;
}

/// The control for the test above: the same delayed commits make a naive
/// `id > last_seen` tailer over a bigserial skip entries. If this stopped failing, the
/// delay injection would no longer create the hazard and the test above would prove
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_bigserial_tailer_skips_under_delayed_commits() {
    let b = Pg::new().await;
    let schema = format!("t_{}", Uuid::now_v7().simple());
    b.schemas.lock().unwrap().push(schema.clone());
    let mut admin = b.admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.naive (id BIGSERIAL PRIMARY KEY, v INT NOT NULL);
         CREATE FUNCTION {schema}.delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(random() * 0.005); RETURN NULL; END $$;
         CREATE TRIGGER delay_commit AFTER INSERT ON {schema}.naive
         FOR EACH STATEMENT EXECUTE FUNCTION {schema}.delay_commit();"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(9)
        .connect(&b.url)
        .await
        .unwrap();
    let total = 8 * 40;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (pool, schema) = (pool.clone(), schema.clone());
            tokio::spawn(async move {
                for k in 0..40 {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO {schema}.naive (v) VALUES ($1)"
                    )))
                    .bind(w * 1000 + k)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    let mut last = 0i64;
    let mut seen = 0usize;
    let started = Instant::now();
    while !writers.iter().all(|w| w.is_finished()) && started.elapsed() < Duration::from_secs(30) {
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {schema}.naive WHERE id > $1 ORDER BY id"
        )))
        .bind(last)
        .fetch_all(&pool)
        .await
        .unwrap();
        seen += ids.len();
        last = ids.last().copied().unwrap_or(last);
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {schema}.naive WHERE id > $1"
    )))
    .bind(last)
    .fetch_all(&pool)
    .await
    .unwrap();
    seen += ids.len();
    assert!(
        seen < total,
        "the naive tailer saw all {total} rows: the delay no longer reorders commits"
    );
    eprintln!(
        "naive bigserial tailer skipped {} of {total} rows",
        total - seen
    );
    pool.close().await;
    b.cleanup().await;
}

fn key(id: &str) -> EntityKey {
    EntityKey::new("counter", id).unwrap()
}

fn payload(n: i64) -> Payload {
    Payload::encode("test.Value", 1, &n).unwrap()
}

/// The server process waiting on a lock whose query mentions `needle`.
async fn blocked_backend(admin: &mut PgConnection, needle: &str) -> i32 {
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        )
        .bind(needle)
        .fetch_optional(&mut *admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing blocked on {needle}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn terminate(admin: &mut PgConnection, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    assert!(done);
}

/// Invariant 3 with a real crash: the connection committing a batch is killed by the
/// server after the batch's events and replies were written but before it committed.
/// Nothing of it may be visible, and the journal keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_commit_leaves_nothing() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let e = key(&id_in_shard("k", 0, 2));
    let target = key(&id_in_shard("t", 1, 2));
    let sent = j
        .append(vec![NewMessage::new(e.clone(), payload(1))])
        .await
        .unwrap();
    let AppendOutcome::Appended { offset, .. } = sent[0] else {
        panic!("{sent:?}")
    };
    j.advance_cursor("mailbox", 0, 0).await.unwrap();

    // Hold the cursor row: commit_batch writes events, outgoing and replies, then blocks
    // on its cursor update.
    let mut holder = b.admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}",
        j.schema()
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM cursors WHERE consumer = 'mailbox' AND shard = 0 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let message_id = sent_id(&j, offset).await;
    let batch = ProcessedBatch {
        shard: 0,
        lease: None,
        cursor: Some(("mailbox".into(), offset)),
        messages: vec![Processed {
            entity: e.clone(),
            message_id,
            offset,
            events: vec![
                NewEvent {
                    seq: 1,
                    payload: payload(1),
                },
                NewEvent {
                    seq: 2,
                    payload: payload(2),
                },
            ],
            reply: payload(3),
            outgoing: vec![NewMessage::new(target.clone(), payload(4))],
        }],
    };
    let committing = {
        let (j, batch) = (j.clone(), batch.clone());
        tokio::spawn(async move { j.commit(batch).await })
    };
    let mut admin = b.admin().await;
    let pid = blocked_backend(&mut admin, "commit_batch").await;
    terminate(&mut admin, pid).await;
    let err = committing
        .await
        .unwrap()
        .expect_err("killed commit must fail");
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    tx.rollback().await.unwrap();

    assert_eq!(j.head(0).await.unwrap(), 1, "no events visible");
    assert_eq!(j.head(1).await.unwrap(), 0, "no outgoing message visible");
    assert!(j.read_events(&e, 1, 10).await.unwrap().is_empty());
    assert!(j.reply(&e, message_id).await.unwrap().is_none());
    assert_eq!(j.cursor("mailbox", 0).await.unwrap(), 0);

    // The redelivered message commits normally on a fresh connection.
    j.commit(batch).await.unwrap();
    assert_eq!(j.read_events(&e, 1, 10).await.unwrap().len(), 2);
    assert_eq!(j.cursor("mailbox", 0).await.unwrap(), offset);
    b.cleanup().await;
}

async fn sent_id(j: &PgJournal, offset: u64) -> Uuid {
    j.read_shard(0, offset - 1, 1, None).await.unwrap()[0].message_id
}

/// A connection killed in the middle of an append (some rows of the batch inserted, one
/// waiting on a unique-index check) fails with an error, leaves nothing behind, and the
/// next append succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_killed_mid_append_leaves_nothing() {
    let b = Pg::new().await;
    let j = b.fresh(1).await;
    let blocked = NewMessage::new(key("b"), payload(2));
    // An uncommitted row with the same (entity, message id): the append's insert of that
    // message waits on the unique index, after inserting the message before it.
    let mut holder = b.admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}",
        j.schema()
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query(
        r#"INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
              type_tag, schema_version, payload, crc, deliver_at, created_at)
           VALUES (0, 1000000, 1, 'counter', 'b', NULL, $1, 't', 1, '\x00', 0, NULL, 0)"#,
    )
    .bind(blocked.message_id)
    .execute(&mut *tx)
    .await
    .unwrap();

    let first = NewMessage::new(key("a"), payload(1));
    let appending = {
        let (j, batch) = (j.clone(), vec![first.clone(), blocked.clone()]);
        tokio::spawn(async move { j.append(batch).await })
    };
    let mut admin = b.admin().await;
    let pid = blocked_backend(&mut admin, "append_entries").await;
    terminate(&mut admin, pid).await;
    let err = appending
        .await
        .unwrap()
        .expect_err("killed append must fail");
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    tx.rollback().await.unwrap();

    assert_eq!(j.head(0).await.unwrap(), 0);
    assert!(j.read_shard(0, 0, 10, None).await.unwrap().is_empty());
    let out = j.append(vec![first, blocked]).await.unwrap();
    assert!(matches!(out[0], AppendOutcome::Appended { offset: 1, .. }));
    assert!(matches!(out[1], AppendOutcome::Appended { offset: 2, .. }));
    b.cleanup().await;
}

/// Invariant 5 on PostgreSQL: a shard lock is exclusive across sessions; when the lock
/// connection dies the session learns it, another session takes the shard at a higher
/// epoch, and the dead session's lease is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_connection_death_hands_the_shard_over() {
    let b = Pg::new().await;
    let j = b.fresh(4).await;
    let a = j.lock_session("runner-a").await.unwrap();
    let c = j.lock_session("runner-c").await.unwrap();
    let lease_a = a.try_acquire(0).await.unwrap().expect("free shard");
    assert!(c.try_acquire(0).await.unwrap().is_none(), "held by a");
    assert!(
        c.try_acquire(1).await.unwrap().is_some(),
        "other shards are free"
    );
    assert_eq!(
        a.try_acquire(0).await.unwrap(),
        Some(lease_a),
        "re-acquire is idempotent"
    );
    assert_eq!(a.held(), vec![0]);

    let mut admin = b.admin().await;
    let pid = a.backend_pid().await.unwrap();
    let killed = Instant::now();
    terminate(&mut admin, pid).await;

    let lease_c = loop {
        if let Some(l) = c.try_acquire(0).await.unwrap() {
            break l;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "lock never freed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let freed_after = killed.elapsed();
    assert!(lease_c.epoch > lease_a.epoch);
    tokio::time::timeout(Duration::from_secs(3), a.lost())
        .await
        .expect("death noticed");
    let noticed_after = killed.elapsed();
    assert!(!a.is_alive());
    assert!(a.held().is_empty());
    let live: Vec<String> = j
        .live_runners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.runner)
        .collect();
    assert_eq!(
        live,
        ["runner-c"],
        "a dead lock connection means a dead runner"
    );
    assert!(matches!(
        a.try_acquire(2).await,
        Err(JournalError::LockConnectionLost)
    ));
    eprintln!("lock free after {freed_after:?}; death noticed after {noticed_after:?}");

    let e = key(&id_in_shard("x", 0, 4));
    let batch = |lease| ProcessedBatch {
        shard: 0,
        lease: Some(lease),
        cursor: Some(("mailbox".into(), 1)),
        messages: vec![Processed {
            entity: e.clone(),
            message_id: Uuid::now_v7(),
            offset: 1,
            events: vec![NewEvent {
                seq: 1,
                payload: payload(1),
            }],
            reply: payload(1),
            outgoing: vec![],
        }],
    };
    let err = j.commit(batch(lease_a)).await.expect_err("stale owner");
    assert!(
        matches!(err, JournalError::Fenced { shard: 0, .. }),
        "got {err:?}"
    );
    j.commit(batch(lease_c)).await.unwrap();
    c.release(lease_c).await.unwrap();
    let again = a_session_takes(&j, 0).await;
    assert!(
        again.epoch > lease_c.epoch,
        "released shards can be taken again"
    );
    b.cleanup().await;
}

async fn a_session_takes(j: &PgJournal, shard: u32) -> entlog_journal::Lease {
    let s = j.lock_session("runner-d").await.unwrap();
    s.try_acquire(shard)
        .await
        .unwrap()
        .expect("free after release")
}

/// Shard locks of two journals in one database (two schemas) never contend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_namespaces_are_per_journal() {
    let b = Pg::new().await;
    let j1 = b.fresh(2).await;
    let j2 = b.fresh(2).await;
    let s1 = j1.lock_session("r1").await.unwrap();
    let s2 = j2.lock_session("r2").await.unwrap();
    assert!(s1.try_acquire(0).await.unwrap().is_some());
    assert!(s2.try_acquire(0).await.unwrap().is_some());
    b.cleanup().await;
}

/// A notification from another process (another pool) wakes a waiting tailer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_cross_processes() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let other = PgJournal::open(b.options(j.schema(), 2)).await.unwrap();
    let e = key("n");
    let shard = j.shard_of(&e);
    j.wait_for_entries(shard, Duration::from_millis(50)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (
                j.wait_for_entries(shard, Duration::from_secs(10)).await,
                t.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    other
        .append(vec![NewMessage::new(e, payload(1))])
        .await
        .unwrap();
    let (woken, waited) = waiter.await.unwrap();
    assert!(
        woken && waited < Duration::from_secs(5),
        "woken {woken} after {waited:?}"
    );
    b.cleanup().await;
}

/// An append or a commit over many shards sends one notification per kind, listing its
/// shards, in groups of at most 500 (a payload stays under PostgreSQL's 8,000 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_coalesced_per_transaction() {
    let b = Pg::new().await;
    let shards: u32 = 1_200;
    let j = b.fresh(shards).await;
    let mut listener = sqlx::postgres::PgListener::connect(&b.url).await.unwrap();
    listener
        .listen(&format!("entlog_{}", j.schema()))
        .await
        .unwrap();
    let messages: Vec<NewMessage> = (0..shards)
        .map(|s| NewMessage::new(key(&id_in_shard("c", s, shards)), payload(1)))
        .collect();
    let outcomes = j.append(messages.clone()).await.unwrap();

    let mut payloads = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    while seen.len() < shards as usize {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("notified within 10 s")
            .unwrap();
        seen.extend(n.payload().split(',').map(|s| s.parse::<u32>().unwrap()));
        payloads.push(n.payload().len());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..shards).collect::<Vec<_>>());
    assert_eq!(payloads.len(), 3, "500 + 500 + 200 shards: {payloads:?}");
    assert!(payloads.iter().all(|&len| len < 8_000), "{payloads:?}");

    // The replies of three shards committed together: one 'r' notification naming them.
    let batches: Vec<ProcessedBatch> = [5u32, 17, 900]
        .iter()
        .map(|&s| {
            let (m, o) = (&messages[s as usize], &outcomes[s as usize]);
            let AppendOutcome::Appended { offset, .. } = o else {
                panic!("expected Appended, got {o:?}");
            };
            ProcessedBatch {
                shard: s,
                lease: None,
                cursor: None,
                messages: vec![Processed {
                    entity: m.entity.clone(),
                    message_id: m.message_id,
                    offset: *offset,
                    events: vec![],
                    reply: payload(2),
                    outgoing: vec![],
                }],
            }
        })
        .collect();
    j.commit_many(batches).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("notified within 10 s")
        .unwrap();
    assert_eq!(n.payload(), "r5,17,900");
    b.cleanup().await;
}

/// A bad URL is a typed configuration error.
#[tokio::test]
async fn bad_url_is_a_config_error() {
    let err = PgJournal::open(PgOptions::new("not a url"))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Config(_)), "got {err:?}");
    let err =
        PgJournal::open(PgOptions::new("postgres://x@127.0.0.1:5432/test").schema("Bad-Name"))
            .await
            .unwrap_err();
    assert!(matches!(err, JournalError::Config(_)), "got {err:?}");
}

#[tokio::test]
async fn unreachable_server_says_why_at_once() {
    let err = PgJournal::open(PgOptions::new("postgres://postgres@127.0.0.1:1/test"))
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::Persistence(_)), "got {err:?}");
    // The server's answer, not the pool's "timed out" after 10 s.
    assert!(err.to_string().contains("refused"), "got {err}");
}

/// A server that never answers (a proxy that forwards nothing and closes nothing, as a
/// firewall dropping packets): `Unreachable` after the 10 s connect bound, naming host and
/// port but no credentials, and worth retrying — not a configuration error.
#[tokio::test]
async fn silent_server_is_unreachable_not_misconfigured() {
    let url = database_url().await;
    let (proxy, _) = entlog_journal::testing::BlackHoleProxy::for_url(&url)
        .await
        .unwrap();
    proxy.set_silent(true);
    let with_password = format!("postgres://postgres:s3cret@{}/test", proxy.addr());
    let err = PgJournal::open(PgOptions::new(with_password))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::Unreachable { waited, .. } if waited.as_secs() == 10),
        "got {err:?}"
    );
    assert!(err.is_transient(), "worth retrying");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
}

/// Replies committed by one process wake the reply waiters of another (a second journal
/// on the same schema stands for it) through the `'r<shard>'` notification, long before
/// the waiter's timeout; the waiter's shard only, not every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_committed_elsewhere_wake_by_notification() {
    let b = Pg::new().await;
    let here = b.fresh(4).await;
    let there = PgJournal::open(b.options(here.schema(), 4)).await.unwrap();
    let key = EntityKey::new("counter", id_in_shard("n", 1, 4)).unwrap();
    let other_shard = 2;
    // The first wait starts the listener (and returns at once); drain stored permits.
    there.wait_for_replies(1, Duration::from_millis(10)).await;
    there.wait_for_replies(1, Duration::from_millis(10)).await;
    there
        .wait_for_replies(other_shard, Duration::from_millis(10))
        .await;
    let m = NewMessage::new(key.clone(), Payload::encode("t.Cmd", 1, &1u8).unwrap());
    let offset = match here.append(vec![m.clone()]).await.unwrap()[0] {
        AppendOutcome::Appended { offset, .. } => offset,
        ref other => panic!("{other:?}"),
    };
    let waiter = {
        let there = there.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let woken = there.wait_for_replies(1, Duration::from_secs(20)).await;
            (woken, started.elapsed())
        })
    };
    let bystander = {
        let there = there.clone();
        tokio::spawn(async move {
            there
                .wait_for_replies(other_shard, Duration::from_millis(500))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    here.commit(ProcessedBatch {
        shard: 1,
        lease: None,
        cursor: None,
        messages: vec![Processed {
            entity: key.clone(),
            message_id: m.message_id,
            offset,
            events: vec![],
            reply: Payload::encode("t.Reply", 1, &7u8).unwrap(),
            outgoing: vec![],
        }],
    })
    .await
    .unwrap();
    let (woken, after) = waiter.await.unwrap();
    assert!(
        woken && after < Duration::from_secs(5),
        "woken after {after:?}"
    );
    assert!(
        !bystander.await.unwrap(),
        "another shard's waiter is not woken"
    );
    let found = there.replies(&[(key, m.message_id)]).await.unwrap();
    assert_eq!(found.len(), 1);
    there.close().await;
    here.close().await;
    b.cleanup().await;
}

/// The journal's clock is the server's: `now()` lies between two readings of the
/// server's `clock_timestamp()` taken around it (with a little room for rounding), and
/// rows are stamped with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_clock_is_the_servers() {
    let b = Pg::new().await;
    let j = b.fresh(2).await;
    let server = || async {
        let t: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT")
                .fetch_one(j.pool())
                .await
                .unwrap();
        t
    };
    let slack = 5_000; // µs: the offset is measured over a round trip
    let mut inside = 0;
    for _ in 0..20 {
        let before = server().await;
        let now = j.now().as_micros();
        let after = server().await;
        if now >= before - slack && now <= after + slack {
            inside += 1;
        }
    }
    assert!(
        inside >= 15,
        "journal clock within the server's in {inside} of 20"
    );
    let before = server().await;
    let out = j
        .append(vec![NewMessage::new(key("c"), payload(1))])
        .await
        .unwrap();
    let after = server().await;
    let AppendOutcome::Appended { shard, offset } = out[0] else {
        panic!("{out:?}")
    };
    let entry = j.read_shard(shard, offset - 1, 1, None).await.unwrap();
    let stamped = entry[0].created_at.as_micros();
    assert!(
        stamped >= before - slack && stamped <= after + slack,
        "stamped {stamped}, server between {before} and {after}"
    );
    b.cleanup().await;
}
