//! The dashboard, served by the quickstart's own binary (the CLI with its types), over a
//! journal the engine wrote with healthy traffic, a poison message, a damaged entry and
//! a stopped projection — on SQLite and on PostgreSQL.
//!
//! Its JSON endpoints answer what the CLI's `--json` prints; in a real browser (headless
//! Chromium driven through ChromeDriver) the pages load without script errors, the shard
//! map shows every shard, the failures name the three problems, the entity page shows the
//! replayed states, and a new ask appears without a reload. The test saves a screenshot.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::{Broken, Db};
use common::example;
use entlog::journal::{Journal, NewMessage, Payload};
use entlog::{Cluster, Config, Context, Entity, EntityKey, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod common;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Adds numbers; `Boom` panics, so that it ends as a poison message.
struct Flaky;

#[derive(Debug, Serialize, Deserialize)]
enum FlakyCmd {
    Add(i64),
    Boom,
}

impl Entity for Flaky {
    const TYPE: &'static str = "flaky";
    type Command = FlakyCmd;
    type Event = i64;
    type Reply = i64;
    type State = i64;

    async fn handle(
        &self,
        s: &i64,
        c: FlakyCmd,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        match c {
            FlakyCmd::Add(n) => Ok(Outcome::new(vec![n], s + n)),
            FlakyCmd::Boom => panic!("boom: the handler cannot take this"),
        }
    }

    fn apply(s: &mut i64, e: &i64) {
        *s += e;
    }
}

/// A cluster on `db`'s journal (the quickstart's 8 shards) that runs `flaky`, with one
/// attempt per message: `Boom` is poison at once.
async fn flaky_cluster(db: &Db) -> Cluster {
    let config = Config::default().shard_count(8).max_attempts(1);
    db.cluster_with(config).entity(Flaky).start().await.unwrap()
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `exe dashboard` on a free loopback port (with `extra` arguments); returns the
/// process and the address it printed.
fn serve(db: &Db, exe: &Path, extra: &[&str]) -> (Killed, String) {
    let mut args = vec!["dashboard", "--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = Killed(
        db.command(exe, &args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("entlog dashboard: ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    (server, url)
}

/// `GET url` over plain HTTP/1.1: the status code and the body as JSON.
fn get(url: &str) -> (u16, Value) {
    request(url, "")
}

/// `GET url` with an `Authorization` header: the status code.
fn get_with(url: &str, authorization: &str) -> u16 {
    request(url, &format!("Authorization: {authorization}\r\n")).0
}

/// `GET url` with `headers` (each line ending in CRLF): the status code and the body as
/// JSON (`null` when it is not JSON).
fn request(url: &str, headers: &str) -> (u16, Value) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// What changes from one second to the next (ages, waits) taken out of a status report.
fn settled(mut status: Value) -> Value {
    for r in status["runners"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("heartbeat_age_seconds");
    }
    for p in status["projections"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("lag_seconds");
    }
    for list in ["shards", "stuck"] {
        for s in status[list].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("waiting_seconds");
        }
    }
    status
}

/// Writes the journal: the quickstart's accounts, then, with a runner of `flaky` live, a
/// damaged entry it passes by, a poison message and a stopped projection.
async fn write_journal(db: &Db) -> Cluster {
    let qs = example("quickstart");
    let demo = db.command(&qs, &["demo", &db.db]).output().unwrap();
    assert!(demo.status.success(), "{demo:?}");

    // A message damaged behind the journal's back before any runner reads it.
    let journal = db.writable_journal().await;
    let victim = EntityKey::new("flaky", "damaged").unwrap();
    let sent = NewMessage::new(
        victim.clone(),
        Payload::encode("flaky.command", 1, &1u8).unwrap(),
    );
    journal.append(vec![sent]).await.unwrap();
    let shard = journal.shard_of(&victim);
    let head = journal
        .shards()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.shard == shard)
        .unwrap()
        .head;
    let garble = r#"UPDATE journal SET payload = $1 WHERE shard = $2 AND "offset" = $3"#;
    journal
        .execute(
            entlog::journal::sql(garble)
                .bind(b"garbled".to_vec())
                .bind(shard as i32)
                .bind(head as i64),
        )
        .await
        .unwrap();
    journal.close().await;

    let cluster = flaky_cluster(db).await;
    let f1 = cluster.entity::<Flaky>("f1");
    for n in 1..=3 {
        f1.ask(FlakyCmd::Add(n)).await.unwrap();
    }
    assert!(
        cluster
            .entity::<Flaky>("f2")
            .ask(FlakyCmd::Boom)
            .await
            .is_err()
    );
    let journal = cluster.journal().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal.damaged_entries().await.unwrap().is_empty()
        || journal.failed_replies(1).await.unwrap().is_empty()
    {
        assert!(Instant::now() < deadline, "no damaged entry or poison");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let broken: std::sync::Arc<dyn entlog::projections::DynProjection> =
        std::sync::Arc::new(Broken);
    let mut stopped = 0;
    for shard in 0..journal.shard_count() {
        let mut p = entlog::projections::Projector::new(journal.clone(), broken.clone(), shard, 16);
        p.init().await.unwrap();
        if let entlog::projections::Step::Failed { .. } = p.step().await.unwrap() {
            stopped += 1;
        }
    }
    assert!(stopped > 0);
    cluster
}

/// Evaluates `script` (a function body) in the page.
async fn eval(c: &fantoccini::Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Waits until `script` returns true in the page.
async fn until(c: &fantoccini::Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if eval(c, script).await == json!(true) {
            return;
        }
        if Instant::now() > deadline {
            let text = eval(c, "return document.body.innerText").await;
            panic!(
                "the page never showed {what}; it shows:\n{}",
                text.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts ChromeDriver and a headless Chromium session.
async fn browser() -> (Killed, fantoccini::Client) {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "the dashboard test needs Chromium and ChromeDriver: apt-get install chromium chromium-driver"
    );
    let port = free_port();
    let driver = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "no ChromeDriver session: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    (driver, client)
}

fn dashboard(db: &Db) {
    let qs = example("quickstart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(write_journal(db));

    let (server, url) = serve(db, &qs, &[]);

    // The endpoints answer what the CLI prints.
    let (code, status) = get(&format!("{url}api/status"));
    assert_eq!(code, 200, "{status}");
    assert_eq!(
        settled(status.clone()),
        settled(db.json_any_status(&qs, &["status"])),
        "/api/status and status --json"
    );
    assert_eq!(
        get(&format!("{url}api/inspect/account/alice")).1,
        db.json_any_status(&qs, &["inspect", "account/alice"])
    );
    assert_eq!(
        get(&format!("{url}api/replay/account/alice")).1,
        db.json_any_status(&qs, &["replay", "account/alice"])
    );
    assert_eq!(
        get(&format!("{url}api/inspect/flaky/f1?limit=2")).1,
        db.json_any_status(&qs, &["inspect", "flaky/f1", "--limit", "2"])
    );
    let (code, missing) = get(&format!("{url}api/inspect/account/nobody"));
    assert_eq!(code, 404);
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("holds no messages"),
        "{missing}"
    );
    let (code, _) = get(&format!("{url}api/replay/flaky/f1"));
    assert_eq!(
        code, 404,
        "flaky is not registered in the quickstart's binary"
    );
    // The three problems, as the CLI lists them.
    assert_eq!(status["damaged"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["poison"][0]["entity"], "flaky/f2");
    assert!(
        status["stuck"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["projection"] == "broken"),
        "{status}"
    );

    rt.block_on(async {
        let (_driver, c) = browser().await;
        c.goto(&url).await.unwrap();
        until(&c, "the cluster", "return document.body.dataset.ready === 'true' && document.body.dataset.view === 'overview'").await;
        assert_eq!(
            eval(&c, "return document.querySelectorAll('#shards [data-shard]').length").await,
            json!(8)
        );
        let failures = eval(
            &c,
            "return [...document.querySelectorAll('#problems li')].map(li => [li.dataset.kind, li.innerText])",
        )
        .await;
        let failures: Vec<(String, String)> = serde_json::from_value(failures).unwrap();
        let of = |kind: &str| failures.iter().filter(|(k, _)| k == kind).map(|(_, t)| t.clone()).collect::<Vec<_>>();
        assert_eq!(of("poison").len(), 1, "{failures:?}");
        assert!(of("poison")[0].contains("flaky/f2") && of("poison")[0].contains("boom"), "{failures:?}");
        assert_eq!(of("damaged").len(), 1, "{failures:?}");
        assert!(of("damaged")[0].contains("checksum"), "{failures:?}");
        assert!(!of("projection").is_empty(), "{failures:?}");
        assert!(of("projection").iter().all(|t| t.contains("projection broken: stopped") && t.contains("always fails")), "{failures:?}");
        // The live runner, with the shards it owns.
        until(&c, "the live runner", "return [...document.querySelectorAll('#runners tr')].some(tr => tr.innerText.includes('live'))").await;
        // Throughput is being sampled.
        until(&c, "three samples in each chart", "const p = [...document.querySelectorAll('[data-chart] polyline')]; return p.length === 3 && p.every(l => l.getAttribute('points').split(' ').length >= 3)").await;

        let png = c.screenshot().await.unwrap();
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "dashboard-{}.png",
            if db.postgres { "postgres" } else { "sqlite" }
        ));
        std::fs::write(&shot, &png).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        eprintln!("dashboard screenshot: {}", shot.display());

        // An entity page: the state after each event, replayed with the registry's types.
        // Found by type and id, as a user would.
        use fantoccini::Locator;
        c.find(Locator::Css("#find-type")).await.unwrap().send_keys("account").await.unwrap();
        c.find(Locator::Css("#find-id")).await.unwrap().send_keys("alice").await.unwrap();
        c.find(Locator::Css("#find button")).await.unwrap().click().await.unwrap();
        until(&c, "alice's states", "return document.body.dataset.view === 'entity' && document.body.dataset.ready === 'true' && document.querySelectorAll('[data-state]').length === 3").await;
        let states = eval(&c, "return [...document.querySelectorAll('[data-state]')].map(e => JSON.parse(e.textContent))").await;
        assert_eq!(states[0]["cents"], 100, "{states}");
        assert_eq!(states[2], json!({"cents": 75, "operations": 3}));
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "dashboard-entity-{}.png",
            if db.postgres { "postgres" } else { "sqlite" }
        ));
        std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();

        // A new ask appears on the open page, which is not reloaded.
        c.execute("location.hash = '#/entity/flaky/f1'; window.__sameDocument = true", vec![]).await.unwrap();
        until(&c, "f1's three messages", "return document.body.dataset.view === 'entity' && document.querySelectorAll('#timeline tr.message').length === 3").await;
        assert_eq!(cluster.entity::<Flaky>("f1").ask(FlakyCmd::Add(10)).await.unwrap(), 16);
        until(&c, "the new ask", "return document.querySelectorAll('#timeline tr.message').length === 4 && window.__sameDocument === true").await;
        let last = eval(&c, "const rows = document.querySelectorAll('#timeline tr.message'); return rows[rows.length - 1].innerText").await;
        // flaky is not registered in the quickstart's binary: shown by type tag and raw bytes.
        assert!(last.as_str().unwrap().contains("flaky.command"), "{last}");

        assert_eq!(eval(&c, "return window.__entlogErrors").await, json!([]), "script errors");
        c.close().await.unwrap();
        cluster.shutdown().await.unwrap();
    });
    drop(server);
}

#[test]
fn dashboard_on_sqlite() {
    dashboard(&Db::sqlite());
}

#[test]
fn dashboard_on_postgres() {
    dashboard(&Db::postgres());
}

/// With a token, every request needs it; without one, the dashboard stays on loopback.
#[test]
fn dashboard_token() {
    let db = Db::sqlite();
    let entlog = common::entlog_bin();
    let migrated = db
        .command(&entlog, &["migrate", "--shards", "2"])
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    let exposed = db
        .command(&entlog, &["dashboard", "--bind", "0.0.0.0:0"])
        .env_remove("ENTLOG_DASHBOARD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(exposed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&exposed.stderr);
    assert!(stderr.contains("give it --token"), "{stderr}");

    let (server, with_token) = serve(&db, &entlog, &["--token", "s3cret"]);
    assert!(with_token.ends_with("/?token=s3cret"), "{with_token}");
    let base = with_token.strip_suffix("?token=s3cret").unwrap();
    for path in ["", "app.js", "api/status", "api/types"] {
        let (code, body) = get(&format!("{base}{path}"));
        assert_eq!(code, 401, "{path}");
        if path.starts_with("api") {
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
        assert_eq!(get(&format!("{base}{path}?token=wrong")).0, 401, "{path}");
        assert_eq!(
            get_with(&format!("{base}{path}"), "Bearer s3cret"),
            200,
            "{path}"
        );
    }
    let (code, status) = get(&format!("{base}api/status?token=s3cret"));
    assert_eq!(code, 200);
    assert_eq!(status["shard_count"], 2);
    drop(server);
}

/// A journal that fails under a running dashboard (its PostgreSQL schema dropped) is
/// seen: the API answers 500 with the journal's error as JSON, and the open page shows it
/// in its error banner instead of going stale.
#[test]
fn dashboard_shows_a_failing_journal() {
    let db = Db::postgres();
    let entlog = common::entlog_bin();
    db.ok(&entlog, &["migrate", "--shards", "2"]);
    let (server, url) = serve(&db, &entlog, &[]);
    assert_eq!(get(&format!("{url}api/status")).0, 200);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_driver, c) = browser().await;
        c.goto(&url).await.unwrap();
        until(&c, "the cluster", "return document.body.dataset.ready === 'true'").await;

        let pool = sqlx::PgPool::connect(&db.db).await.unwrap();
        let drop = format!("DROP SCHEMA {} CASCADE", db.schema);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let (code, body) = get(&format!("{url}api/status"));
        assert_eq!(code, 500, "{body}");
        let error = body["error"].as_str().unwrap_or_default().to_owned();
        assert!(!error.is_empty(), "{body}");
        until(
            &c,
            "the journal's error in the banner",
            "const e = document.getElementById('error'); return !e.hidden && e.textContent.length > 0",
        )
        .await;
        let banner = eval(&c, "return document.getElementById('error').textContent").await;
        assert_eq!(banner.as_str(), Some(error.as_str()));
        assert_eq!(eval(&c, "return window.__entlogErrors").await, json!([]));
        c.close().await.unwrap();
    });
    drop(server);
}
