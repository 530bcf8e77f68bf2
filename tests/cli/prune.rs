//! `prune` and the dedup window, with a counter entity run by the engine: processed
//! messages and their replies past the age go, unprocessed messages and events stay, a
//! duplicate within the window gets the stored reply, and a re-send after it is a new
//! message. Along the way `status` lists the poison message, the backlog and (with
//! `--stuck-after`) the shard stuck with no live owner.

use std::time::{Duration, Instant};

use entlog::{Context, EngineError, Entity, EntityKey, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::common::block_on;
use crate::common::db::Db;
use crate::entlog;

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

    let status = db.json_ok(&entlog(), &["status"]);
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

    let kept = db.json_ok(&entlog(), &["prune", "--older-than", "1h"]);
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

    let pruned = db.json_ok(&entlog(), &["prune", "--older-than", "0s"]);
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
