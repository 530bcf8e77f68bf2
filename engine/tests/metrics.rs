//! The Prometheus endpoint (`Config::metrics_addr`) and the README's list of metrics.
//!
//! The `metrics` recorder is global to a process and can never be removed, and the tests
//! of one file share a process. So exactly one test here installs it
//! (`endpoint_serves_the_documented_metrics`), and checks everything that depends on
//! which recorder is installed, in order; the other test only reads files.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;
use entlog_engine::{Cluster, EngineError, Projection, ProjectionError};
use entlog_journal::{AnyTx, Entry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const README: &str = include_str!("../../README.md");
const ENGINE_METRICS: &str = include_str!("../src/metrics.rs");
const PROJECTION_METRICS: &str = include_str!("../../projections/src/metrics.rs");

/// Documented metrics the traffic below cannot produce: they count failed commits, damaged
/// entries and retried shards, which take a broken database or a damaged journal (the
/// failure-path tests make those happen).
const NOT_PRODUCED: &[&str] = &[
    "entlog_messages_redelivered_total",
    "entlog_entries_damaged_total",
    "entlog_shard_retries_total",
    // Local asks get their replies from the runner: no reply query.
    "entlog_reply_queries_total",
    "entlog_runner_unavailable_total",
    // A full mailbox takes an entity that does not answer (engine/tests/mailbox.rs).
    "entlog_mailbox_full_total",
    "entlog_lock_sessions_lost_total",
    "entlog_lock_session_failures_total",
];

/// A projection that fails on every event, so `entlog_projection_failures_total` moves.
struct Broken;

impl Projection for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn wants(&self, entity_type: &str) -> bool {
        entity_type == "counter"
    }
    async fn apply(&self, _: &mut AnyTx, _: &[Entry]) -> Result<(), ProjectionError> {
        Err(ProjectionError::Handler("always fails".into()))
    }
    async fn reset(&self, _: &mut AnyTx) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Metric name → type ("gauge", "counter", "histogram"), from the `pub const`s of a
/// metrics file and the `/// Type: …` doc line above each.
fn constants(source: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut doc_type = None;
    for line in source.lines().map(str::trim) {
        if let Some(doc) = line.strip_prefix("///") {
            // The first doc line names the type.
            if doc_type.is_none() {
                doc_type = doc
                    .trim()
                    .split([':', ' '])
                    .next()
                    .map(|t| t.to_ascii_lowercase());
            }
        } else if line.starts_with("pub const ") && line.contains(": &str") {
            let name = line.split('"').nth(1).unwrap().to_owned();
            out.insert(name, doc_type.take().unwrap_or_default());
        } else {
            doc_type = None;
        }
    }
    out
}

/// Metric name → type, from the table of the README's "Metrics" section.
fn documented() -> BTreeMap<String, String> {
    let start = README
        .find("\n## Metrics\n")
        .expect("README has a Metrics section");
    let section = &README[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    section
        .lines()
        .filter(|l| l.starts_with("| `entlog_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

/// The README's Metrics section lists exactly the metrics the two metrics files define,
/// each with the type its constant's doc gives.
#[test]
fn readme_lists_exactly_the_defined_metrics() {
    let mut defined = constants(ENGINE_METRICS);
    let projections = constants(PROJECTION_METRICS);
    assert_eq!(projections.len(), 2, "{projections:?}");
    defined.extend(projections);
    assert!(defined.len() >= 13, "{defined:?}");
    assert_eq!(documented(), defined);
}

/// A port nothing listens on (right now).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `GET /metrics` over HTTP/1.0: (status line, body).
async fn scrape(addr: SocketAddr) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .map_err(std::io::Error::other)??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

async fn start(db: &std::path::Path, addr: SocketAddr) -> Result<Cluster, EngineError> {
    Cluster::builder()
        .sqlite(db)
        .config(config(4).metrics_addr(addr))
        .entity(Counter)
        .projection(entlog_engine::StateProjection::<Counter>::new())
        .projection(Broken)
        .singleton("idle", |ctx| async move { ctx.stopped().await })
        .start()
        .await
}

/// The endpoint's lifecycle, in the order the one global recorder forces:
/// 1. an address already taken is `EngineError::Metrics`, and installs nothing;
/// 2. a member serves every documented metric that its traffic produces, with types
///    and `# HELP` lines, the latency as a histogram with buckets;
/// 3. a second member on the same address, or on another while the recorder is
///    installed, is `EngineError::Metrics`;
/// 4. shutdown stops the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_the_documented_metrics() {
    let dir = common::TempDir::new();

    // 1. Taken by someone else.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let other = common::TempDir::new();
    match start(&other.db(), taken).await {
        Err(EngineError::Metrics { addr, reason }) => {
            assert_eq!(addr, taken);
            assert!(reason.contains("HTTP listener"), "{reason}");
        }
        Err(e) => panic!("expected EngineError::Metrics, got {e}"),
        Ok(_) => panic!("started on an address in use"),
    }
    drop(squatter);

    // 2. Serving.
    let addr = free_addr();
    let cluster = start(&dir.db(), addr).await.unwrap();
    let c = cluster.entity::<Counter>("c-1");
    for tag in 0..12u64 {
        c.ask(Cmd::Add { n: 1, tag }).await.unwrap();
    }
    let err = c.ask(Cmd::Refuse).await.unwrap_err();
    assert!(matches!(err, EngineError::Rejected { .. }), "{err}");
    let err = c.ask(Cmd::Poison).await.unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err}");
    let id = Uuid::now_v7();
    let d = cluster.entity::<Counter>("d-1");
    assert_eq!(
        d.ask_with_id(id, Cmd::Add { n: 2, tag: 100 })
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        d.ask_with_id(id, Cmd::Add { n: 2, tag: 100 })
            .await
            .unwrap(),
        2
    );
    cluster
        .entity::<Counter>("e-1")
        .tell(Cmd::Add { n: 3, tag: 200 })
        .await
        .unwrap();

    let documented = documented();
    let expected: BTreeMap<&String, &String> = documented
        .iter()
        .filter(|(name, _)| !NOT_PRODUCED.contains(&name.as_str()))
        .collect();
    // Gauges and projection metrics move on their own schedule: scrape until all show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = scrape(addr).await.unwrap();
        assert!(status.contains(" 200"), "{status}");
        let missing: Vec<_> = expected
            .keys()
            .filter(|name| !body.contains(&format!("# TYPE {name} ")))
            .collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing from the endpoint: {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (name, kind) in &expected {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not exported as a {kind}:\n{body}"
        );
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no description:\n{body}"
        );
    }
    assert!(
        body.contains("entlog_processing_latency_seconds_bucket{le=\"0.005\"}"),
        "{body}"
    );
    assert!(
        body.contains("entlog_messages_deduplicated_total 1\n"),
        "{body}"
    );
    assert!(
        body.contains("entlog_messages_failed_total{kind=\"panicked\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("entlog_entities_active "), "{body}");
    // One commit per sequential ask: the handled message carries the mailbox cursor; no
    // commit moves a cursor alone, and a commit does not make its shard read again.
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}:\n{body}"))
            .parse()
            .unwrap()
    };
    let (commits, handled) = (
        value("entlog_messages_per_commit_count"),
        value("entlog_messages_per_commit_sum"),
    );
    assert!(handled >= 15.0, "{handled} messages handled:\n{body}");
    assert!(
        commits <= handled,
        "{commits} commits for {handled} sequentially handled messages"
    );
    assert!(
        body.contains("entlog_singleton_running{singleton=\"idle\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("entlog_projection_failures_total{projection=\"broken\"}"),
        "{body}"
    );

    // 3. A second member: the address is taken, and so is the process's recorder.
    match start(&other.db(), addr).await {
        Err(EngineError::Metrics { addr: a, .. }) => assert_eq!(a, addr),
        Err(e) => panic!("expected EngineError::Metrics, got {e}"),
        Ok(_) => panic!("a second endpoint started on a taken address"),
    }
    let elsewhere = free_addr();
    match start(&other.db(), elsewhere).await {
        Err(EngineError::Metrics { addr: a, reason }) => {
            assert_eq!(a, elsewhere);
            assert!(reason.contains("already installed"), "{reason}");
        }
        Err(e) => panic!("expected EngineError::Metrics, got {e}"),
        Ok(_) => panic!("a second recorder was installed"),
    }
    // The first endpoint is unaffected.
    let (status, _) = scrape(addr).await.unwrap();
    assert!(status.contains(" 200"), "{status}");

    // 4. Shutdown closes the listener.
    cluster.shutdown().await.unwrap();
    eventually(5, "the endpoint to close", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}
