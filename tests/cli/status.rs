//! `status` on what goes wrong below the entities: a damaged journal entry, listed by
//! shard and offset with its reason, and stuck shards, each named with why it is stuck.

use entlog::journal::{Access, SqliteOptions};
use entlog::{AnyJournal, EntityKey, PgJournal, PgOptions, SqliteJournal};
use serde_json::Value;

use crate::common::block_on;
use crate::common::db::Db;
use crate::entlog;

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
        db.json_ok(&entlog(), &["status"])["damaged"],
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
        journal
            .execute(
                entlog::journal::sql(
                    r#"UPDATE journal SET payload = $2 WHERE shard = $1 AND "offset" = 2"#,
                )
                .bind(shard as i32)
                .bind(b"garbled".to_vec()),
            )
            .await
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

    let status = db.json_ok(&entlog(), &["status"]);
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

/// With shard groups, `status` shows each group's shards and the live runners hosting it,
/// the group of every shard and the groups each runner hosts; a group that no live runner
/// hosts while another runs is stuck — its messages wait for a runner that registers its
/// entity types — and `status` exits 1 naming it.
#[test]
fn status_shows_shard_groups_and_a_group_nobody_hosts() {
    use entlog::ShardGroup;
    use entlog::journal::{Journal, ShardLocks};
    let db = Db::postgres();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (journal, locks) = rt.block_on(async {
        let j = PgJournal::open(
            PgOptions::new(&db.db)
                .schema(&db.schema)
                .shard_count(4)
                .shard_groups(vec![ShardGroup::new("payments", 1)]),
        )
        .await
        .unwrap();
        let locks = j
            .lock_session_hosting("plain", Some(&["default".to_owned()]))
            .await
            .unwrap();
        (j, locks)
    });

    let out = db.run(&entlog(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["shard_groups"],
        serde_json::json!([
            { "name": "default", "first": 0, "end": 3, "hosted_by": ["plain"] },
            { "name": "payments", "first": 3, "end": 4, "hosted_by": [] },
        ]),
        "{report}"
    );
    assert_eq!(
        report["runners"][0]["groups"],
        serde_json::json!(["default"])
    );
    assert_eq!(report["shards"][2]["group"], "default");
    assert_eq!(report["shards"][3]["group"], "payments");
    let stuck = report["stuck"].as_array().unwrap();
    assert_eq!(stuck.len(), 1, "{report}");
    assert_eq!(stuck[0]["group"], "payments");
    assert!(
        stuck[0]["cause"]
            .as_str()
            .unwrap()
            .contains("shard group payments (shards 3..4): no live runner hosts it"),
        "{report}"
    );
    let text = String::from_utf8_lossy(&db.run(&entlog(), &["status"]).stdout).into_owned();
    assert!(text.contains("hosts default"), "{text}");
    assert!(text.contains("shard groups (2):"), "{text}");
    assert!(text.contains("hosted by nobody"), "{text}");
    assert!(text.contains("GROUP"), "{text}");

    rt.block_on(async {
        locks.close().await.unwrap();
        journal.close().await;
    });
}
