//! The entlog CLI run end to end as processes, on journals the engine wrote: the
//! quickstart's own binary (the CLI with its types registered) and the plain `entlog`
//! binary (raw payloads), each against a SQLite file and a PostgreSQL schema.
//!
//! `replay` must agree with the state the engine reports, `prune` must keep what a
//! duplicate send still needs, and every bad input gets a clear error and exit status 1.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{block_on, database_url, example};
use entlog::journal::{Access, SqliteOptions};
use entlog::{
    AnyJournal, Cluster, Config, Context, EngineError, Entity, EntityKey, Outcome, PgJournal,
    PgOptions, Rejection, SqliteJournal,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod common;

/// The plain `entlog` binary.
fn entlog() -> PathBuf {
    common::entlog_bin()
}

/// A journal for one test: a SQLite file in a directory of its own, or a PostgreSQL
/// schema of its own; removed on drop.
struct Db {
    dir: PathBuf,
    /// `--db`.
    db: String,
    /// `--schema` (PostgreSQL).
    schema: String,
    postgres: bool,
}

impl Db {
    fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!("entlog-cli-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Db {
            db: dir.join("journal.db").display().to_string(),
            dir,
            schema: "entlog".into(),
            postgres: false,
        }
    }

    fn postgres() -> Db {
        let mut db = Db::sqlite();
        db.db = database_url();
        db.schema = format!("cli_{}", Uuid::now_v7().simple());
        db.postgres = true;
        db
    }

    /// Runs `exe` with `--db`/`--schema` (through the environment) and `args`.
    fn run(&self, exe: &Path, args: &[&str]) -> Output {
        self.command(exe, args).output().unwrap()
    }

    fn command(&self, exe: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(exe);
        c.args(args)
            .current_dir(&self.dir)
            .env("ENTLOG_DB", &self.db)
            .env("ENTLOG_SCHEMA", &self.schema)
            .stdin(Stdio::null());
        c
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, exe: &Path, args: &[&str]) -> String {
        let out = self.run(exe, args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}\n{}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit status 1 with `needle` in the error.
    fn fails(&self, exe: &Path, args: &[&str], needle: &str) {
        let out = self.run(exe, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    fn json(&self, exe: &Path, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(exe, &all)).unwrap()
    }

    async fn journal(&self) -> AnyJournal {
        if self.postgres {
            PgJournal::open_existing(PgOptions::new(&self.db).schema(&self.schema))
                .await
                .unwrap()
                .into()
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&self.db), Access::ReadOnly)
                .await
                .unwrap()
                .into()
        }
    }

    fn cluster(&self) -> entlog::ClusterBuilder {
        let config = Config {
            shard_count: 4,
            ..Config::default()
        };
        let builder = if self.postgres {
            Cluster::builder().postgres_schema(&self.db, &self.schema)
        } else {
            Cluster::builder().sqlite(&self.db)
        };
        builder.config(config)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.postgres {
            let (url, schema) = (self.db.clone(), self.schema.clone());
            block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        }
    }
}

/// The demo's line `alice's balance after restart: N`.
fn balance_after_restart(demo: &str) -> u64 {
    demo.lines()
        .find_map(|l| l.strip_prefix("alice's balance after restart: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// From the run command to `replay` on the quickstart's journal, every command checked.
fn quickstart_journal(db: &Db) {
    let qs = example("quickstart");
    let demo = db.ok(&qs, &["demo", &db.db]);
    let engine_balance = balance_after_restart(&demo);
    assert_eq!(engine_balance, 75);

    // replay: the state the engine holds, and what each event changed.
    let replay = db.json(&qs, &["replay", "account/alice"]);
    assert_eq!(replay["state"]["cents"], engine_balance);
    assert_eq!(replay["state"]["operations"], 3);
    let events = replay["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["event"]["value"],
        serde_json::json!({"Deposited": 100})
    );
    let changes: Vec<&str> = events[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["cents", "operations"]);
    assert_eq!(events[1]["changes"][0]["before"], 100);
    assert_eq!(events[1]["changes"][0]["after"], 70);
    let text = db.ok(&qs, &["replay", "account/alice"]);
    assert!(text.contains("cents: 100 → 70"), "{text}");
    assert!(
        text.contains(r#"state after seq 3: {"cents":75,"operations":3}"#),
        "{text}"
    );

    let to_two = db.json(&qs, &["replay", "account/alice", "--to-seq", "2"]);
    assert_eq!(to_two["state"]["cents"], 70);
    db.fails(
        &qs,
        &["replay", "account/alice", "--to-seq", "99"],
        "account/alice has 3 events",
    );
    let at = events[1]["created_at"].as_str().unwrap();
    let at_two = db.json(&qs, &["replay", "account/alice", "--at", at]);
    assert_eq!(at_two["state"]["cents"], 70);
    let snap = db.json(&qs, &["replay", "account/alice", "--from-snapshot"]);
    assert_eq!(snap["matches"], true, "{snap}");
    assert_eq!(snap["snapshot_state"], replay["state"]);

    // inspect: messages with their replies, events, the snapshot — decoded.
    let inspect = db.json(&qs, &["inspect", "account/alice"]);
    let entries = inspect["entries"].as_array().unwrap();
    let messages: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "message").collect();
    assert_eq!(
        messages.len(),
        4,
        "the deposit sent twice with one id is stored once"
    );
    assert_eq!(entries.len(), 7);
    assert_eq!(
        messages[0]["payload"]["value"],
        serde_json::json!({"Deposit": 100})
    );
    assert_eq!(
        messages[0]["reply"]["payload"]["value"],
        serde_json::json!({"Replied": 100})
    );
    assert!(messages.iter().all(|m| !m["reply"].is_null()));
    assert_eq!(inspect["snapshot"]["checksum_ok"], true);
    // A page at a time: the newest 3, then the 3 before them, then the last one.
    let newest = db.json(&qs, &["inspect", "account/alice", "--limit", "3"]);
    let offsets = |v: &Value| -> Vec<u64> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["offset"].as_u64().unwrap())
            .collect()
    };
    let all: Vec<u64> = entries
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets(&newest), all[4..]);
    assert_eq!(newest["more_before"], true);
    let before = all[4].to_string();
    let older = db.json(
        &qs,
        &[
            "inspect",
            "account/alice",
            "--limit",
            "3",
            "--before",
            &before,
        ],
    );
    assert_eq!(offsets(&older), all[1..4]);
    let text = db.ok(&qs, &["inspect", "account/alice", "--limit", "3"]);
    assert!(
        text.contains(&format!(
            "(older entries: inspect account/alice --before {before})"
        )),
        "{text}"
    );
    let first = db.json(
        &qs,
        &[
            "inspect",
            "account/alice",
            "--limit",
            "3",
            "--before",
            &all[1].to_string(),
        ],
    );
    assert_eq!(offsets(&first), all[..1]);
    assert_eq!(first["more_before"], false);
    // replay --last: the last step only, from the state before it.
    let last = db.json(&qs, &["replay", "account/alice", "--last", "1"]);
    assert_eq!(last["replayed"], 3);
    assert_eq!(last["events"].as_array().unwrap().len(), 1);
    assert_eq!(last["events"][0]["changes"], replay["events"][2]["changes"]);
    assert_eq!(last["state"], replay["state"]);
    // replay --to-seq --last starts from a snapshot before the steps shown, as activation
    // does: a snapshot at seq 1 that says 1000 cents shows in the result (a full replay
    // says 75).
    block_on(async {
        let journal: AnyJournal = if db.postgres {
            db.journal().await
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&db.db), Access::ReadWrite)
                .await
                .unwrap()
                .into()
        };
        let delete = "DELETE FROM snapshots WHERE entity_type = 'account' AND entity_id = 'alice'";
        match &journal {
            AnyJournal::Postgres(j) => sqlx::query(delete).execute(j.pool()).await.map(|_| ()),
            AnyJournal::Sqlite(j) => sqlx::query(delete).execute(j.writer()).await.map(|_| ()),
        }
        .unwrap();
        // The quickstart's state, { cents: 1000, operations: 1 }, as postcard writes it.
        let state = entlog::journal::Payload::encode("account.state", 1, &(1000u64, 1u64)).unwrap();
        entlog::Journal::save_snapshot(
            &journal,
            entlog::journal::NewSnapshot {
                entity: EntityKey::new("account", "alice").unwrap(),
                seq: 1,
                state,
            },
        )
        .await
        .unwrap();
        journal.close().await;
    });
    let tail = db.json(
        &qs,
        &["replay", "account/alice", "--to-seq", "3", "--last", "2"],
    );
    assert_eq!(tail["from_snapshot"], 1, "{tail}");
    assert_eq!(tail["replayed"], 2);
    assert_eq!(tail["initial"]["cents"], 1000);
    assert_eq!(tail["state"]["cents"], 975);
    assert_eq!(tail["events"][0]["changes"][0]["before"], 1000);
    let text = db.ok(
        &qs,
        &["replay", "account/alice", "--to-seq", "3", "--last", "2"],
    );
    assert!(text.contains("from its snapshot at seq 1"), "{text}");
    // Steps before the snapshot: a full replay.
    let full = db.json(
        &qs,
        &["replay", "account/alice", "--to-seq", "3", "--last", "3"],
    );
    assert_eq!(full["from_snapshot"], Value::Null);
    assert_eq!(full["state"]["cents"], 75);
    assert_eq!(
        db.json(&qs, &["replay", "account/alice"])["state"]["cents"],
        75
    );
    let bob = db.ok(&qs, &["inspect", "account/bob"]);
    assert!(bob.contains(r#"{"Rejected":"insufficient funds"#), "{bob}");

    // The plain binary: metadata and raw bytes, and a clear refusal where code is needed.
    let raw = db.ok(&entlog(), &["inspect", "account/alice"]);
    assert!(raw.contains("<account.command v1, 2 bytes: 0064>"), "{raw}");
    db.fails(
        &entlog(),
        &["replay", "account/alice"],
        "not registered in this binary",
    );
    db.fails(
        &entlog(),
        &["projections", "rebuild", "state.account"],
        "not registered",
    );
    db.fails(&qs, &["inspect", "account/nobody"], "holds no messages");
    db.fails(&qs, &["inspect", "alice"], "not an entity address");
    db.fails(&qs, &["replay", "cart/c1"], "\"cart\" is not registered");
    db.fails(
        &qs,
        &["replay", "account/alice", "--at", "noon"],
        "bad time",
    );
    db.fails(
        &qs,
        &["tail", "--shard", "99"],
        "the journal has shards 0..8",
    );

    // projections: a rebuild, then no lag.
    let rebuilt = db.ok(&qs, &["projections", "rebuild", "state.account"]);
    assert!(rebuilt.contains("rebuilt state.account"), "{rebuilt}");
    let projections = db.json(&qs, &["projections"]);
    assert_eq!(projections[0]["name"], "state.account");
    assert_eq!(projections[0]["lag_events"], 0);

    // status: heads add up to every entry, nothing is waiting, no poison.
    let status = db.json(&entlog(), &["status"]);
    assert_eq!(status["shard_count"], 8);
    let shards = status["shards"].as_array().unwrap();
    let heads: u64 = shards.iter().map(|s| s["head"].as_u64().unwrap()).sum();
    assert_eq!(heads, 11, "alice 7 entries, bob 4");
    assert!(shards.iter().all(|s| s["backlog"] == 0), "{status}");
    assert_eq!(status["poison"], serde_json::json!([]));
    assert_eq!(status["damaged"], serde_json::json!([]));
    assert_eq!(status["projections"][0]["name"], "state.account");
    let text = db.ok(&entlog(), &["status"]);
    assert!(
        text.contains("shards (8):")
            && text.contains("poison messages (0):")
            && text.contains("damaged entries (0):"),
        "{text}"
    );

    // tail from the start, then live while the demo runs again.
    let tail = db.ok(&qs, &["tail", "--from-start", "--count", "3", "--json"]);
    let lines: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let mut follower = db
        .command(
            &qs,
            &[
                "tail",
                "--entity",
                "account/alice",
                "--count",
                "2",
                "--json",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    db.ok(&qs, &["demo", &db.db]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while follower.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = follower.kill();
            panic!("tail did not see the new entries");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success());
    let live: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(live.len(), 2);
    for e in &live {
        assert_eq!(e["entity"], "account/alice");
        assert!(e["offset"].as_u64().unwrap() > 7, "only new entries: {e}");
    }
    assert_eq!(
        live[0]["payload"]["value"],
        serde_json::json!({"Deposit": 100})
    );

    // migrate on an existing journal keeps it.
    assert!(db.ok(&entlog(), &["migrate"]).contains("8 shards"));

    // A projection stopped at an event is stuck: named with its error, exit status 1.
    block_on(async {
        let journal: AnyJournal = if db.postgres {
            db.journal().await
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&db.db), Access::ReadWrite)
                .await
                .unwrap()
                .into()
        };
        let broken: std::sync::Arc<dyn entlog::projections::DynProjection> =
            std::sync::Arc::new(Broken);
        let mut stopped = 0;
        for shard in 0..entlog::Journal::shard_count(&journal) {
            let mut p =
                entlog::projections::Projector::new(journal.clone(), broken.clone(), shard, 16);
            p.init().await.unwrap();
            if let entlog::projections::Step::Failed { .. } = p.step().await.unwrap() {
                stopped += 1;
            }
        }
        assert!(
            stopped > 0,
            "the broken projection stops where there are events"
        );
        journal.close().await;
    });
    db.fails(&entlog(), &["status"], "thing(s) stuck");
    let text = String::from_utf8(db.run(&entlog(), &["status"]).stdout).unwrap();
    assert!(
        text.contains("projection broken: stopped at shard") && text.contains("always fails"),
        "{text}"
    );
}

/// A projection that fails on every event.
struct Broken;

impl entlog::projections::Projection for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn wants(&self, _: &str) -> bool {
        true
    }
    async fn apply(
        &self,
        _: &mut entlog::journal::AnyTx,
        _: &[entlog::Entry],
    ) -> Result<(), entlog::projections::ProjectionError> {
        Err(entlog::projections::ProjectionError::Handler(
            "always fails".into(),
        ))
    }
    async fn reset(
        &self,
        _: &mut entlog::journal::AnyTx,
    ) -> Result<(), entlog::projections::ProjectionError> {
        Ok(())
    }
}

#[test]
fn quickstart_journal_on_sqlite() {
    quickstart_journal(&Db::sqlite());
}

#[test]
fn quickstart_journal_on_postgres() {
    quickstart_journal(&Db::postgres());
}

fn migrate(db: &Db) {
    db.fails(&entlog(), &["status"], "no entlog journal at");
    db.fails(&entlog(), &["inspect", "account/a"], "no entlog journal at");
    let made = db.ok(&entlog(), &["migrate", "--shards", "4"]);
    assert!(made.contains("journal ready: 4 shards"), "{made}");
    assert!(db.ok(&entlog(), &["migrate"]).contains("4 shards"));
    db.fails(
        &entlog(),
        &["migrate", "--shards", "5"],
        "the journal has 4 shards",
    );
    let status = db.json(&entlog(), &["status"]);
    assert_eq!(status["shards"].as_array().unwrap().len(), 4);
}

#[test]
fn migrate_creates_and_keeps_on_sqlite() {
    migrate(&Db::sqlite());
}

#[test]
fn migrate_creates_and_keeps_on_postgres() {
    migrate(&Db::postgres());
}

#[test]
fn bad_addresses_are_clear_errors() {
    let db = Db::sqlite();
    let mut refused = Db::sqlite();
    refused.db = "postgres://postgres@127.0.0.1:1/test".into();
    refused.fails(&entlog(), &["status"], "Connection refused");
    let mut bad = Db::sqlite();
    bad.db = "postgres://:::bad".into();
    bad.fails(&entlog(), &["status"], "bad PostgreSQL URL");
    db.fails(&entlog(), &["prune", "--older-than", "soon"], "bad age");
    let mut typo = Db::sqlite();
    typo.db = "postgres:/oops".into();
    typo.fails(&entlog(), &["status"], "neither a PostgreSQL URL");
    assert!(
        !typo.dir.join("postgres:").exists(),
        "no file was created for it"
    );
    // With --json, the error is JSON as well.
    let out = typo.run(&entlog(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("neither a PostgreSQL URL"),
        "{err}"
    );
    let usage = db.run(&entlog(), &["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let help = db.ok(&entlog(), &["replay", "--help"]);
    assert!(help.contains("Examples:") && help.contains("--from-snapshot"));
}

/// A counter for the retention test.
struct Counter;

#[derive(Serialize, Deserialize)]
struct Add(i64);

#[derive(Serialize, Deserialize)]
struct Added(i64);

impl Entity for Counter {
    const TYPE: &'static str = "counter";
    type Command = Add;
    type Event = Added;
    type Reply = i64;
    type State = i64;

    async fn handle(&self, s: &i64, c: Add, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        assert!(c.0 != i64::MIN, "poison: cannot add i64::MIN");
        Ok(Outcome::new(vec![Added(c.0)], s + c.0))
    }

    fn apply(s: &mut i64, e: &Added) {
        *s += e.0;
    }
}

/// `prune` removes processed messages and replies past the age only: unprocessed
/// messages and events stay, a duplicate within the window gets the stored reply, and a
/// re-send after the window is a new message (the documented dedup window).
fn prune(db: &Db) {
    let key = EntityKey::new("counter", "c").unwrap();
    let first = Uuid::now_v7();
    block_on(async {
        let cluster = db.cluster().entity(Counter).start().await.unwrap();
        let c = cluster.entity::<Counter>("c");
        assert_eq!(c.ask_with_id(first, Add(1)).await.unwrap(), 1);
        let poisoned = c.ask(Add(i64::MIN)).await;
        assert!(
            matches!(poisoned, Err(EngineError::Failed { .. })),
            "{poisoned:?}"
        );
        cluster.shutdown().await.unwrap();
        // Sent while no runner hosts the type: journaled, not processed.
        let client = db.cluster().client_only().start().await.unwrap();
        for _ in 0..3 {
            client.entity::<Counter>("c").tell(Add(10)).await.unwrap();
        }
        client.shutdown().await.unwrap();
    });

    let status = db.json(&entlog(), &["status"]);
    let poison = status["poison"].as_array().unwrap();
    assert_eq!(poison.len(), 1, "{status}");
    assert_eq!(poison[0]["entity"], "counter/c");
    assert!(
        poison[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot add i64::MIN")
    );
    assert!(
        db.ok(&entlog(), &["status"])
            .contains("poison messages (1):")
    );
    let backlog: u64 = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["backlog"].as_u64().unwrap())
        .sum();
    assert_eq!(backlog, 3, "the three unprocessed sends");
    assert_eq!(
        status["stuck"],
        serde_json::json!([]),
        "not stuck yet: {status}"
    );

    // Stuck once they wait longer than --stuck-after: named, with why, and exit status 1.
    let out = db.run(&entlog(), &["status", "--stuck-after", "0s", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 thing(s) stuck"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stuck = report["stuck"].as_array().unwrap();
    assert_eq!(stuck.len(), 1, "{report}");
    let shard = stuck[0]["shard"].as_u64().unwrap();
    let cause = stuck[0]["cause"].as_str().unwrap();
    assert!(cause.contains("no live runner owns it"), "{cause}");
    assert!(
        report["shards"][shard as usize]["waiting_seconds"]
            .as_f64()
            .is_some(),
        "{report}"
    );
    let text = db.run(&entlog(), &["status", "--stuck-after", "0s"]);
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("stuck (1):")
            && text.contains(&format!("shard {shard}: a message has waited")),
        "{text}"
    );
    db.fails(
        &entlog(),
        &["status", "--stuck-after", "soon"],
        "bad --stuck-after",
    );

    let kept = db.json(&entlog(), &["prune", "--older-than", "1h"]);
    assert_eq!(kept["messages"], 0);
    block_on(async {
        // Within the window a duplicate is answered from the stored reply, not re-run.
        let cluster = db.cluster().client_only().start().await.unwrap();
        let again = cluster
            .entity::<Counter>("c")
            .ask_with_id(first, Add(1))
            .await
            .unwrap();
        assert_eq!(again, 1);
        cluster.shutdown().await.unwrap();
    });

    let pruned = db.json(&entlog(), &["prune", "--older-than", "0s"]);
    assert_eq!(pruned["messages"], 2, "only the processed ones: {pruned}");
    assert_eq!(pruned["replies"], 2);
    let records = block_on(async {
        let j = db.journal().await;
        let r = j.entity_records(&key).await.unwrap();
        j.close().await;
        r
    });
    let messages = records.entries.iter().filter(|e| e.seq.is_none()).count();
    assert_eq!(messages, 3, "unprocessed messages are kept");
    assert_eq!(
        records.entries.len() - messages,
        1,
        "events are never pruned"
    );
    assert!(records.replies.is_empty());

    block_on(async {
        let cluster = db.cluster().entity(Counter).start().await.unwrap();
        let c = cluster.entity::<Counter>("c");
        // The kept messages are processed once each…
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let j = cluster.journal();
            if j.entity_records(&key).await.unwrap().replies.len() == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "kept messages not processed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // …and past the window the old id is a new message.
        assert_eq!(c.ask_with_id(first, Add(1)).await.unwrap(), 32);
        match c.ask_with_id(first, Add(1)).await {
            Ok(n) => assert_eq!(n, 32, "deduplicated again once re-sent"),
            Err(e @ EngineError::Rejected { .. }) => panic!("{e}"),
            Err(e) => panic!("{e}"),
        }
        cluster.shutdown().await.unwrap();
    });
}

#[test]
fn prune_keeps_what_dedup_needs_on_sqlite() {
    prune(&Db::sqlite());
}

#[test]
fn prune_keeps_what_dedup_needs_on_postgres() {
    prune(&Db::postgres());
}

/// A damaged entry has no entity to `inspect` it by: `status` lists it by shard and
/// offset, with its reason and when it was recorded, in text and in `--json`. The entry is
/// damaged behind the journal's back (one flipped payload byte), found by the mailbox read
/// and recorded through the journal API, as a shard's owner does.
fn damaged(db: &Db) {
    use entlog::journal::{Delivery, Journal, NewMessage, Payload};
    db.ok(&entlog(), &["migrate", "--shards", "2"]);
    let text = db.ok(&entlog(), &["status"]);
    assert!(text.contains("damaged entries (0):"), "{text}");
    assert_eq!(
        db.json(&entlog(), &["status"])["damaged"],
        serde_json::json!([])
    );

    let (shard, offset) = block_on(async {
        let journal: AnyJournal = if db.postgres {
            PgJournal::open_existing(PgOptions::new(&db.db).schema(&db.schema))
                .await
                .unwrap()
                .into()
        } else {
            SqliteJournal::open_existing(SqliteOptions::new(&db.db), Access::ReadWrite)
                .await
                .unwrap()
                .into()
        };
        let to = EntityKey::new("counter", "c").unwrap();
        let sends = (0..3i64)
            .map(|n| NewMessage::new(to.clone(), Payload::encode("counter.Add", 1, &n).unwrap()))
            .collect();
        journal.append(sends).await.unwrap();
        let shard = journal.shard_of(&to);
        // One payload replaced behind the journal's back: its checksum no longer holds.
        match &journal {
            AnyJournal::Postgres(j) => sqlx::query(
                r#"UPDATE journal SET payload = CAST('garbled' AS BYTEA) WHERE shard = $1 AND "offset" = 2"#,
            )
            .bind(shard as i32)
            .execute(j.pool())
            .await
            .map(|_| ()),
            AnyJournal::Sqlite(j) => sqlx::query(
                r#"UPDATE journal SET payload = CAST('garbled' AS BLOB) WHERE shard = $1 AND "offset" = 2"#,
            )
            .bind(shard as i32)
            .execute(j.writer())
            .await
            .map(|_| ()),
        }
        .unwrap();
        let mailbox = journal.read_mailboxes(&[(shard, 0)], 10).await.unwrap();
        let damaged: Vec<_> = mailbox
            .into_iter()
            .filter_map(|d| match d {
                Delivery::Damaged(d) => Some(d),
                Delivery::Message(_) => None,
            })
            .collect();
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        journal.record_damaged(&damaged).await.unwrap();
        journal.close().await;
        (damaged[0].shard, damaged[0].offset)
    });
    assert_eq!(offset, 2);

    let status = db.json(&entlog(), &["status"]);
    let listed = status["damaged"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{status}");
    assert_eq!(listed[0]["shard"], shard);
    assert_eq!(listed[0]["offset"], 2);
    assert_eq!(listed[0]["reason"], "checksum mismatch");
    assert!(
        listed[0]["recorded_at"].as_str().unwrap().len() > 10,
        "{status}"
    );
    let text = db.ok(&entlog(), &["status"]);
    assert!(
        text.contains("damaged entries (1):")
            && text.contains(&format!("  shard {shard} offset 2 recorded at "))
            && text.contains(": checksum mismatch"),
        "{text}"
    );
}

#[test]
fn status_lists_damaged_entries_on_sqlite() {
    damaged(&Db::sqlite());
}

#[test]
fn status_lists_damaged_entries_on_postgres() {
    damaged(&Db::postgres());
}

/// `status` names why each stuck shard is stuck: a live owner that has not answered its
/// message, an owner that records why its commits fail (with a message waiting), and a
/// shard retrying with nothing waiting. On PostgreSQL, where a lock session held by this
/// process is a live owner to the CLI's process.
#[test]
fn status_names_why_a_shard_is_stuck_on_postgres() {
    use entlog::journal::testing::conformance::id_in_shard;
    use entlog::journal::{Journal, NewMessage, Payload, ShardLocks};
    let db = Db::postgres();
    db.ok(&entlog(), &["migrate", "--shards", "4"]);
    // A runtime with worker threads: the lock session's heartbeat goes on while the test
    // thread waits for the CLI.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (journal, locks) = rt.block_on(async {
        let j = PgJournal::open_existing(PgOptions::new(&db.db).schema(&db.schema))
            .await
            .unwrap();
        let any: AnyJournal = j.clone().into();
        let send = |shard: u32| {
            NewMessage::new(
                EntityKey::new("counter", id_in_shard("stuck", shard, 4)).unwrap(),
                Payload::encode("counter.Add", 1, &1i64).unwrap(),
            )
        };
        any.append(vec![send(0), send(1)]).await.unwrap();
        // A live owner of shards 0 and 1 that handles nothing.
        let locks = j.lock_session("idle").await.unwrap();
        for shard in [0, 1] {
            locks.try_acquire(shard).await.unwrap().unwrap();
        }
        let now = any.now();
        any.set_trouble(1, Some(("the read model is down", now)))
            .await
            .unwrap();
        any.set_trouble(2, Some(("connection reset", now)))
            .await
            .unwrap();
        (any, locks)
    });

    let out = db.run(&entlog(), &["status", "--stuck-after", "0s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let causes: Vec<(u64, String)> = report["stuck"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard"].as_u64().unwrap(),
                s["cause"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(causes.len(), 3, "{report}");
    assert!(causes[0].0 == 0 && causes[0].1.contains("its owner has not answered it"));
    assert!(
        causes[1].0 == 1
            && causes[1]
                .1
                .contains("its owner's commits fail: the read model is down"),
        "{causes:?}"
    );
    assert!(
        causes[2].0 == 2
            && causes[2].1.contains("retrying its commit since")
            && causes[2].1.contains("connection reset"),
        "{causes:?}"
    );
    assert_eq!(report["shards"][0]["owner_live"], true, "{report}");
    let text =
        String::from_utf8_lossy(&db.run(&entlog(), &["status", "--stuck-after", "0s"]).stdout)
            .into_owned();
    assert!(text.contains("stuck (3):"), "{text}");

    rt.block_on(async {
        locks.close().await.unwrap();
        journal.close().await;
    });
}

/// `inspect` shows the headers a message was sent with, in text and in `--json`.
#[test]
fn inspect_shows_headers() {
    use entlog::journal::{Journal, NewMessage, Payload};
    let db = Db::sqlite();
    db.ok(&entlog(), &["migrate", "--shards", "2"]);
    block_on(async {
        let journal: AnyJournal =
            SqliteJournal::open_existing(SqliteOptions::new(&db.db), Access::ReadWrite)
                .await
                .unwrap()
                .into();
        let mut m = NewMessage::new(
            EntityKey::new("counter", "h").unwrap(),
            Payload::encode("counter.Add", 1, &1i64).unwrap(),
        );
        m.headers.insert("tenant".into(), "acme".into());
        let plain = NewMessage::new(
            EntityKey::new("counter", "h").unwrap(),
            Payload::encode("counter.Add", 1, &2i64).unwrap(),
        );
        journal.append(vec![m, plain]).await.unwrap();
        journal.close().await;
    });
    let shown = db.json(&entlog(), &["inspect", "counter/h"]);
    assert_eq!(
        shown["entries"][0]["headers"],
        serde_json::json!({"tenant": "acme"})
    );
    assert_eq!(shown["entries"][1]["headers"], serde_json::json!({}));
    let text = db.ok(&entlog(), &["inspect", "counter/h"]);
    assert!(text.contains(r#"headers {"tenant":"acme"}"#), "{text}");
    let tail = db.ok(&entlog(), &["tail", "--from-start", "--count", "1"]);
    assert!(tail.contains(r#"headers {"tenant":"acme"}"#), "{tail}");
}
