//! What the tools cost on a grown journal: `status` and an entity's dashboard page
//! (`/api/status`, `/api/inspect`, `/api/replay`, as the page asks them) over a journal
//! with a million replies and one entity with 100,050 messages and events, on PostgreSQL
//! and SQLite.
//!
//! ```sh
//! cargo bench --bench tools                        # full size (a few minutes, mostly writing)
//! ENTLOG_BENCH_QUICK=1 cargo bench --bench tools   # small journal, seconds
//! ```
//!
//! The entity's history is written by the engine (tells, then one ask behind them); the
//! other replies are added in bulk with SQL (they are only counted, never read, so their
//! checksums are not computed). Each request is timed 7 times against a dashboard served
//! in this process; the table shows the median and the slowest. Run without `--bench` (by
//! `cargo test --all-targets`), it runs the quick mode.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use entlog::journal::sql;
use entlog::{AnyJournal, Cluster, Config, Context, Entity, Outcome, Rejection};
use entlog_cli::{Dashboard, Registry};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A counter: the entity with the long history.
struct Counter;

#[derive(Debug, Serialize, Deserialize)]
enum Cmd {
    Add(u64),
    Get,
}

impl Entity for Counter {
    const TYPE: &'static str = "counter";
    type Command = Cmd;
    type Event = u64;
    type Reply = u64;
    type State = u64;

    async fn handle(&self, s: &u64, c: Cmd, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        match c {
            Cmd::Add(n) => Ok(Outcome::new(vec![n], s + n)),
            Cmd::Get => Ok(Outcome::reply(*s)),
        }
    }

    fn apply(s: &mut u64, e: &u64) {
        *s += e;
    }
}

struct Size {
    /// Messages (each with one event) of the long entity.
    messages: u64,
    /// Replies in the journal in all.
    replies: u64,
}

const REPEATS: usize = 7;

/// `GET path` on the dashboard; the time to the last byte and the response.
async fn get(addr: std::net::SocketAddr, path: &str) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.unwrap();
    let took = started.elapsed();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    (took, body)
}

/// Median and slowest of `REPEATS` requests.
async fn time(addr: std::net::SocketAddr, path: &str) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(REPEATS);
    let mut len = 0;
    for _ in 0..REPEATS {
        let (t, body) = get(addr, path).await;
        times.push(t);
        len = body.len();
    }
    times.sort();
    (times[REPEATS / 2], times[REPEATS - 1], len)
}

/// Adds replies in bulk until the journal holds `total`, one statement per 100,000.
async fn fill_replies(journal: &AnyJournal, total: u64) {
    let have: i64 = journal
        .fetch_optional(sql("SELECT count(*) FROM replies"))
        .await
        .unwrap()
        .expect("a count")
        .get(0)
        .unwrap();
    let mut left = total.saturating_sub(have as u64);
    let mut base = 0u64;
    while left > 0 {
        let n = left.min(100_000);
        // Fresh message ids (random, as foreign clients may send), one reply each, of entities
        // spread over 10,000 ids.
        let text = if let AnyJournal::Postgres(_) = journal {
            format!(
                r#"INSERT INTO replies (message_id, entity_type, entity_id, shard, "offset", type_tag, schema_version, payload, crc, created_at)
                       SELECT gen_random_uuid(), 'filler', 'f' || (g % 10000), g % 16, g, 'filler.reply', 1,
                              '\x0001'::bytea, 0,
                              (extract(epoch from now()) * 1000000)::bigint
                         FROM generate_series({}, {}) g"#,
                base + 1,
                base + n
            )
        } else {
            format!(
                r#"WITH RECURSIVE g(x) AS (SELECT {} UNION ALL SELECT x + 1 FROM g WHERE x < {})
                       INSERT INTO replies (message_id, entity_type, entity_id, shard, "offset", type_tag, schema_version, payload, crc, created_at)
                       SELECT randomblob(16), 'filler', 'f' || (x % 10000), x % 16, x, 'filler.reply', 1,
                              X'0001', 0,
                              CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
                         FROM g"#,
                base + 1,
                base + n
            )
        };
        journal.execute(sql(&text)).await.unwrap();
        base += n;
        left -= n;
    }
}

async fn scenario(name: &str, builder: entlog::ClusterBuilder, size: &Size) {
    // One snapshot, after the bulk; the last 50 events come after it.
    let tail = 50;
    let config = Config::default()
        .shard_count(16)
        .snapshot_every(size.messages - tail);
    let cluster = builder
        .config(config)
        .entity(Counter)
        .start()
        .await
        .unwrap();
    let written = Instant::now();
    let big = cluster.entity::<Counter>("big");
    let mut sent = 0;
    while sent < size.messages - tail {
        let n = (size.messages - tail - sent).min(1000);
        let mut tells = tokio::task::JoinSet::new();
        for _ in 0..n {
            let big = big.clone();
            tells.spawn(async move { big.tell(Cmd::Add(1)).await });
        }
        while let Some(t) = tells.join_next().await {
            t.unwrap().unwrap();
        }
        sent += n;
    }
    // Behind every tell: its answer is the count of all of them.
    assert_eq!(big.ask(Cmd::Get).await.unwrap(), size.messages - tail);
    for _ in 0..tail {
        big.ask(Cmd::Add(1)).await.unwrap();
    }
    let journal = cluster.journal().clone();
    fill_replies(&journal, size.replies).await;
    println!(
        "{name}: wrote {} messages and {} events of counter/big and {} replies in {:.1} s",
        size.messages + 1,
        size.messages,
        size.replies,
        written.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Dashboard::new(Registry::new().entity::<Counter>(), journal.clone()).serve(
            listener,
            async {
                let _ = stopped.await;
            },
        ),
    );
    // The entity page's requests: its newest 200 entries, the replay of their events from
    // the snapshot among them, the replay of all events (on request), and an older page.
    let last_seq = size.messages;
    let (_, inspected) = get(addr, "/api/inspect/counter/big").await;
    let body = &inspected[inspected.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let page: serde_json::Value = serde_json::from_slice(body).unwrap();
    let snapshot = page["snapshot"]["seq"].as_u64().unwrap();
    let middle = size.messages; // an offset in the middle of the entity's history
    let paths = [
        ("status".to_owned(), "/api/status".to_owned()),
        (
            "entity page: inspect, newest 200".to_owned(),
            "/api/inspect/counter/big".to_owned(),
        ),
        (
            format!(
                "entity page: replay from the snapshot ({} steps)",
                last_seq - snapshot
            ),
            format!(
                "/api/replay/counter/big?to_seq={last_seq}&last={}",
                last_seq - snapshot
            ),
        ),
        (
            "entity page: replay all, show the last 100".to_owned(),
            format!("/api/replay/counter/big?to_seq={last_seq}&last=100"),
        ),
        (
            "entity page: inspect, 200 older ones".to_owned(),
            format!("/api/inspect/counter/big?before={middle}"),
        ),
    ];
    println!(
        "  {:<45} {:>10} {:>10} {:>10}",
        "request", "median", "slowest", "bytes"
    );
    for (what, path) in &paths {
        let (median, slowest, bytes) = time(addr, path).await;
        println!(
            "  {:<45} {:>8.1}ms {:>8.1}ms {:>10}",
            what,
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3,
            bytes
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    cluster.shutdown().await.unwrap();
}

fn main() {
    let under_test = !std::env::args().any(|a| a == "--bench");
    let quick = under_test || std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
    let size = if quick {
        Size {
            messages: 2_050,
            replies: 20_000,
        }
    } else {
        Size {
            messages: 100_050,
            replies: 1_000_000,
        }
    };
    println!(
        "entlog tools benchmark: counter/big with {} messages and events, {} replies in all{}",
        size.messages,
        size.replies,
        if quick { " (quick mode)" } else { "" }
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = entlog::journal::testing::database_url().await;
        let schema = format!("bench_tools_{}", Uuid::now_v7().simple());
        scenario(
            "PostgreSQL",
            Cluster::builder().postgres_schema(&url, &schema),
            &size,
        )
        .await;
        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
            let _ = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&pool)
                .await;
        }
        let dir =
            std::env::temp_dir().join(format!("entlog-bench-tools-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        scenario(
            "SQLite",
            Cluster::builder().sqlite(dir.join("journal.db")),
            &size,
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
