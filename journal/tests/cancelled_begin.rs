//! A pooled connection that comes back inside a transaction is closed, never reused.
//!
//! The bug: sqlx does not roll back a `begin()` whose future is dropped after `BEGIN` was
//! sent but before the server's reply. The connection went back to the pool inside an
//! open transaction, and the next `append` on it returned `Ok(offset)` for a row that was
//! never committed: an acknowledged message, lost when the connection closed. These tests
//! cancel `pool.begin()` at many points on a pool of one connection, then check that the
//! pool's connection is never inside a transaction: an append is seen at once from another
//! connection, and the server shows no idle-in-transaction session of the pool.
#![allow(clippy::unwrap_used)]

use std::pin::pin;
use std::time::Duration;

use entlog_journal::testing::database_url;
use entlog_journal::{
    AppendOutcome, EntityKey, Journal, NewMessage, Payload, PgJournal, PgOptions, SqliteJournal,
    SqliteOptions,
};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

const ROUNDS: u32 = 400;

/// Polls `fut` `polls` times (sleeping `pause` between polls, so that the server's reply
/// may be on its way), then drops it unless it finished.
async fn cancel_after<F: std::future::Future>(fut: F, polls: u32, pause: Duration) -> bool {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        if futures_util::poll!(fut.as_mut()).is_ready() {
            return true;
        }
        // Blocking on purpose: the runtime must not run the future's I/O meanwhile.
        std::thread::sleep(pause);
    }
    false
}

/// The poll count and pause of round `i`: from "dropped before BEGIN was sent" to
/// "dropped with BEGIN's reply already in the socket".
fn schedule(i: u32) -> (u32, Duration) {
    (1 + i % 3, Duration::from_micros(u64::from(i % 40) * 10))
}

fn message(n: u32) -> NewMessage {
    NewMessage::new(
        EntityKey::new("counter", format!("c{}", n % 5)).unwrap(),
        Payload::encode("t.Cmd", 1, &n).unwrap(),
    )
}

fn url_with(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_never_reuses_a_connection_inside_a_transaction() {
    let base = database_url().await;
    let schema = format!("c_{}", Uuid::now_v7().simple());
    // The application name finds this pool's sessions in pg_stat_activity.
    let app = format!("entlog_cancel_{}", Uuid::now_v7().simple());
    let journal = PgJournal::open(
        PgOptions::new(url_with(&base, &format!("application_name={app}")))
            .schema(&schema)
            .shard_count(2)
            .max_connections(1),
    )
    .await
    .unwrap();
    let mut admin = PgConnection::connect(&base).await.unwrap();
    let mut completed = 0;
    for i in 0..ROUNDS {
        let (polls, pause) = schedule(i);
        if cancel_after(journal.pool().begin(), polls, pause).await {
            completed += 1;
        }
        let m = message(i);
        let offset = match journal.append(vec![m.clone()]).await.unwrap()[0] {
            AppendOutcome::Appended { offset, .. } => offset,
            ref other => panic!("round {i}: {other:?}"),
        };
        // Acknowledged means committed: another connection sees it at once.
        let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM {schema}.journal WHERE message_id = $1 AND "offset" = $2"#
        )))
        .bind(m.message_id)
        .bind(offset as i64)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            seen, 1,
            "round {i}: append acknowledged at {offset} but not committed"
        );
        // The journal's own statements have a pool of their own: the pool a caller begins
        // transactions on must hold acknowledged writes too.
        let key = format!("round-{i}");
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, 'x')")
            .bind(&key)
            .execute(journal.pool())
            .await
            .unwrap();
        let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.meta WHERE key = $1"
        )))
        .bind(&key)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(seen, 1, "round {i}: a write on the pool was not committed");
        // Look at the server until no session of the pool idles in a transaction (a
        // release in progress may still be closing one); one that stays is the bug.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let in_transaction: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
            )
            .bind(&app)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if in_transaction == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {i}: a pooled session idles in a transaction"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Some rounds must have been cut inside `begin()` for the test to mean anything.
    assert!(
        completed < ROUNDS,
        "every begin() completed; nothing was cancelled"
    );
    // The pool's one connection, as handed out now: outside any transaction block.
    let mut conn = journal.pool().acquire().await.unwrap();
    let row = sqlx::raw_sql("SELECT now() = statement_timestamp()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(row.get::<bool, _>(0));
    drop(conn);
    journal.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Without cancellations, the check on release keeps connections: a busy pool reuses its
/// one server session (the check must not close healthy connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_keeps_healthy_connections() {
    let base = database_url().await;
    let schema = format!("c_{}", Uuid::now_v7().simple());
    let journal = PgJournal::open(
        PgOptions::new(&base)
            .schema(&schema)
            .shard_count(2)
            .max_connections(1),
    )
    .await
    .unwrap();
    let pid = |j: PgJournal| async move {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(j.pool())
            .await
            .unwrap()
    };
    let first = pid(journal.clone()).await;
    for n in 0..50 {
        journal.append(vec![message(n)]).await.unwrap();
        let mut tx = journal.pool().begin().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
        if n % 2 == 0 {
            tx.commit().await.unwrap();
        } else {
            drop(tx); // rolled back by sqlx
        }
        assert_eq!(
            pid(journal.clone()).await,
            first,
            "round {n}: connection replaced"
        );
    }
    journal.close().await;
    let mut admin = PgConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pool_never_reuses_a_connection_inside_a_transaction() {
    let dir = std::env::temp_dir().join(format!("entlog-cancel-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = SqliteJournal::open(SqliteOptions::new(dir.join("j.db")).shard_count(2))
        .await
        .unwrap();
    for i in 0..ROUNDS {
        let (polls, pause) = schedule(i);
        cancel_after(journal.writer().begin(), polls, pause).await;
        let m = message(i);
        match journal.append(vec![m.clone()]).await.unwrap()[0] {
            AppendOutcome::Appended { .. } => {}
            ref other => panic!("round {i}: {other:?}"),
        }
        // Acknowledged means committed: a reader connection sees it at once.
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM journal WHERE message_id = ?1")
            .bind(m.message_id)
            .fetch_one(journal.reader())
            .await
            .unwrap();
        assert_eq!(seen, 1, "round {i}: append acknowledged but not committed");
        // The writer as handed out now is outside any transaction: BEGIN succeeds.
        let mut conn = journal.writer().acquire().await.unwrap();
        assert!(!conn.is_in_transaction(), "round {i}");
        sqlx::raw_sql("BEGIN; ROLLBACK;")
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("round {i}: writer inside a transaction: {e}"));
    }
    journal.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
