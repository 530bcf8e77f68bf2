//! The quickstart's journal walked through with every command: its own binary (the CLI
//! with its types registered) and the plain `entlog` binary, after the demo has run.
//!
//! `replay` agrees with the state the engine reports (in full, up to a seq or a time,
//! from a snapshot, the last steps only); `inspect` decodes messages, replies and the
//! snapshot and pages back; `projections`, `status` and `tail` (from the start and live)
//! report what the journal holds; the plain binary shows raw bytes and refuses what needs
//! the types; and a stopped projection makes `status` exit 1 naming it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use entlog::journal::{Access, SqliteOptions};
use entlog::{AnyJournal, EntityKey, SqliteJournal};
use serde_json::Value;

use crate::common::db::{Broken, Db};
use crate::common::{block_on, example};
use crate::entlog;

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
    let replay = db.json_ok(&qs, &["replay", "account/alice"]);
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

    let to_two = db.json_ok(&qs, &["replay", "account/alice", "--to-seq", "2"]);
    assert_eq!(to_two["state"]["cents"], 70);
    db.fails(
        &qs,
        &["replay", "account/alice", "--to-seq", "99"],
        "account/alice has 3 events",
    );
    let at = events[1]["created_at"].as_str().unwrap();
    let at_two = db.json_ok(&qs, &["replay", "account/alice", "--at", at]);
    assert_eq!(at_two["state"]["cents"], 70);
    let snap = db.json_ok(&qs, &["replay", "account/alice", "--from-snapshot"]);
    assert_eq!(snap["matches"], true, "{snap}");
    assert_eq!(snap["snapshot_state"], replay["state"]);

    // inspect: messages with their replies, events, the snapshot — decoded.
    let inspect = db.json_ok(&qs, &["inspect", "account/alice"]);
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
    let newest = db.json_ok(&qs, &["inspect", "account/alice", "--limit", "3"]);
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
    let older = db.json_ok(
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
    let first = db.json_ok(
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
    let last = db.json_ok(&qs, &["replay", "account/alice", "--last", "1"]);
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
        journal.execute(entlog::journal::sql(delete)).await.unwrap();
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
    let tail = db.json_ok(
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
    let full = db.json_ok(
        &qs,
        &["replay", "account/alice", "--to-seq", "3", "--last", "3"],
    );
    assert_eq!(full["from_snapshot"], Value::Null);
    assert_eq!(full["state"]["cents"], 75);
    assert_eq!(
        db.json_ok(&qs, &["replay", "account/alice"])["state"]["cents"],
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
    let projections = db.json_ok(&qs, &["projections"]);
    assert_eq!(projections[0]["name"], "state.account");
    assert_eq!(projections[0]["lag_events"], 0);

    // status: heads add up to every entry, nothing is waiting, no poison.
    let status = db.json_ok(&entlog(), &["status"]);
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

#[test]
fn quickstart_journal_on_sqlite() {
    quickstart_journal(&Db::sqlite());
}

#[test]
fn quickstart_journal_on_postgres() {
    quickstart_journal(&Db::postgres());
}
