//! Shard groups: an entity type names its group, a runner hosts the groups of the types it
//! registers, and the shards of a group are owned only by runners that host it — never by
//! one that could not run its entities. A type's group is recorded in the journal and can
//! not change; the layout of groups is fixed like the shard count.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::pg::{SHARDS, Schema};
use common::*;
use entlog_engine::{Cluster, Config, Context, EngineError, Entity, Outcome, Rejection};
use entlog_journal::{
    EntityKey, Journal, JournalError, PgJournal, PgOptions, ShardGroup, SqliteJournal,
    SqliteOptions,
};
use serde::{Deserialize, Serialize};

/// Shards of the `payments` group: the last six of [`SHARDS`].
const PAYMENTS: u32 = 6;

/// An entity of the `payments` group; posting to it also adds to a counter (a message
/// across groups, journaled with its event).
struct Ledger;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Post {
    amount: i64,
    counter: String,
}

impl Entity for Ledger {
    const TYPE: &'static str = "ledger";
    const SHARD_GROUP: &'static str = "payments";
    type Command = Post;
    type Event = i64;
    type Reply = i64;
    type State = i64;

    async fn handle(
        &self,
        balance: &i64,
        post: Post,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        ctx.send::<Counter>(
            &post.counter,
            &Cmd::Add {
                n: post.amount,
                tag: post.amount as u64,
            },
        );
        Ok(Outcome::new(vec![post.amount], balance + post.amount))
    }

    fn apply(balance: &mut i64, amount: &i64) {
        *balance += amount;
    }
}

/// The same type name in the default group: a build that moved the type.
struct MovedLedger;

impl Entity for MovedLedger {
    const TYPE: &'static str = "ledger";
    type Command = Post;
    type Event = i64;
    type Reply = i64;
    type State = i64;

    async fn handle(&self, b: &i64, _: Post, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        Ok(Outcome::reply(*b))
    }

    fn apply(_: &mut i64, _: &i64) {}
}

/// A type naming a group no journal here has.
struct Stray;

impl Entity for Stray {
    const TYPE: &'static str = "stray";
    const SHARD_GROUP: &'static str = "nowhere";
    type Command = ();
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(&self, _: &(), _: (), _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

fn grouped(shards: u32) -> Config {
    config(shards)
        .shard_groups(vec![ShardGroup::new("payments", PAYMENTS)])
        .unavailable_after(Duration::from_millis(500))
}

const DEFAULT_SHARDS: std::ops::Range<u32> = 0..SHARDS - PAYMENTS;

async fn pg_member(schema: &Schema, id: &str, counters: bool, ledgers: bool) -> Cluster {
    let mut b = Cluster::builder()
        .postgres_schema(&schema.url, &schema.name)
        .config(grouped(SHARDS).runner_id(id));
    if counters {
        b = b.entity(Counter);
    }
    if ledgers {
        b = b.entity(Ledger);
    }
    b.start().await.unwrap()
}

async fn post(client: &Cluster, ledger: &str, amount: i64, counter: &str) -> i64 {
    client
        .entity::<Ledger>(ledger)
        .ask(Post {
            amount,
            counter: counter.into(),
        })
        .await
        .unwrap()
}

/// Two runners, one per group: each owns exactly its group's shards, every ask of both
/// types is answered, a ledger's message to a counter crosses groups. With the payments
/// runner gone its shards stay unowned — the default runner, which cannot run ledgers,
/// never takes them — and a ledger ask says no runner is available; a new payments
/// runner takes them and the ask goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_own_only_the_shards_of_the_groups_they_host() {
    let schema = Schema::new().await;
    let plain = pg_member(&schema, "plain", true, false).await;
    let pay = pg_member(&schema, "pay", false, true).await;
    let client = Cluster::builder()
        .postgres_schema(&schema.url, &schema.name)
        .config(grouped(SHARDS))
        .client_only()
        .start()
        .await
        .unwrap();
    let payments: Vec<u32> = (SHARDS - PAYMENTS..SHARDS).collect();
    eventually(30, "each runner to own its group", || async {
        plain.owned_shards() == DEFAULT_SHARDS.collect::<Vec<_>>() && pay.owned_shards() == payments
    })
    .await;

    for i in 0..40 {
        let c = format!("c-{i}");
        client
            .entity::<Counter>(&c)
            .ask(Cmd::Add { n: 1, tag: i })
            .await
            .unwrap();
        assert_eq!(post(&client, &format!("l-{i}"), 5, &c).await, 5);
        let key = EntityKey::new("ledger", format!("l-{i}")).unwrap();
        assert!(payments.contains(&client.journal().shard_of(&key)));
    }
    // Every ledger entry, and only those, lies in the payments shards.
    let mut admin = schema.admin().await;
    let (ledger_rows, misplaced): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FILTER (WHERE entity_type = 'ledger'),
                count(*) FILTER (WHERE (entity_type = 'ledger') <> (shard >= {}))
           FROM {}.journal",
        SHARDS - PAYMENTS,
        schema.name
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(ledger_rows, 80, "40 messages and 40 events");
    assert_eq!(misplaced, 0);
    // The ledgers' sends to counters were handled by the default group's runner.
    eventually(30, "the counters to see the ledgers' posts", || async {
        client.entity::<Counter>("c-7").ask(Cmd::Get).await.unwrap() == 6
    })
    .await;
    let hosts: Vec<_> = client
        .journal()
        .live_runners()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.runner, r.groups))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("pay".to_owned(), Some(vec!["payments".to_owned()])),
            ("plain".to_owned(), Some(vec!["default".to_owned()])),
        ]
    );

    pay.shutdown().await.unwrap();
    let owners = || async {
        let o = schema.owners().await;
        payments.iter().all(|s| o[s].is_none())
    };
    eventually(30, "the payments shards to be released", owners).await;
    let err = client
        .entity::<Ledger>("l-1")
        .ask(Post {
            amount: 1,
            counter: "c-1".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::RunnerUnavailable { .. }),
        "{err:?}"
    );
    // Many rebalances later the default runner still holds only its own group.
    assert_eq!(plain.owned_shards(), DEFAULT_SHARDS.collect::<Vec<_>>());
    assert!(
        owners().await,
        "a payments shard was taken by a runner without ledgers"
    );

    let pay2 = pg_member(&schema, "pay2", false, true).await;
    // The refused ask's message was journaled: the new runner handles it first.
    assert_eq!(post(&client, "l-1", 1, "c-1").await, 7);
    assert_eq!(pay2.owned_shards(), payments);
    for c in [&client, &plain, &pay2] {
        c.shutdown().await.unwrap();
    }
    schema.drop().await;
}

/// A runner that registers types of both groups owns every shard (the embedded case),
/// and answers both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_hosting_both_groups_owns_every_shard() {
    let dir = TempDir::new();
    let cluster = Cluster::builder()
        .sqlite(dir.db())
        .config(grouped(SHARDS))
        .entity(Counter)
        .entity(Ledger)
        .start()
        .await
        .unwrap();
    eventually(30, "every shard owned", || async {
        cluster.owned_shards().len() as u32 == SHARDS
    })
    .await;
    assert_eq!(post(&cluster, "l", 3, "c").await, 3);
    eventually(30, "the counter to get the post", || async {
        cluster.entity::<Counter>("c").ask(Cmd::Get).await.unwrap() == 3
    })
    .await;
    cluster.shutdown().await.unwrap();
}

/// A type's group is recorded by its first registration: a build that moves it, or names
/// a group the journal lacks, is refused at start; so is another layout of groups, and a
/// shard count of 0 adopts the stored one (unless other groups are configured).
#[tokio::test]
async fn groups_are_fixed_once_recorded() {
    let dir = TempDir::new();
    let start = |config: Config, moved: bool, stray: bool| {
        let mut b = Cluster::builder().sqlite(dir.db()).config(config);
        if moved {
            b = b.entity(MovedLedger);
        } else {
            b = b.entity(Ledger);
        }
        if stray {
            b = b.entity(Stray);
        }
        b.start()
    };
    let first = start(grouped(SHARDS), false, false).await.unwrap();
    assert_eq!(post(&first, "l", 2, "c").await, 2);
    first.shutdown().await.unwrap();

    let err = start(grouped(SHARDS), true, false).await.err().unwrap();
    assert!(
        matches!(
            &err,
            EngineError::Journal(JournalError::GroupMismatch { entity_type, stored, requested })
                if entity_type == "ledger" && stored == "payments" && requested == "default"
        ),
        "{err:?}"
    );
    let err = start(grouped(SHARDS), false, true).await.err().unwrap();
    assert!(
        matches!(&err, EngineError::Journal(JournalError::UnknownShardGroup { group, .. }) if group == "nowhere"),
        "{err:?}"
    );
    let err = start(config(SHARDS), false, false).await.err().unwrap();
    assert!(
        matches!(
            &err,
            EngineError::Journal(JournalError::ShardGroupsMismatch { stored, requested })
                if stored == "payments:6" && requested.is_empty()
        ),
        "{err:?}"
    );

    // Opened with shard count 0, the journal adopts its layout and knows the recorded type.
    let j = SqliteJournal::open(SqliteOptions::new(dir.db()).shard_count(0))
        .await
        .unwrap();
    let layout = j.shard_map().layout().clone();
    assert_eq!(layout.range("payments"), Some(SHARDS - PAYMENTS..SHARDS));
    assert_eq!(j.shard_map().group_of_type("ledger"), Some("payments"));
    let key = EntityKey::new("ledger", "l").unwrap();
    assert_eq!(j.shard_of(&key), layout.shard_in("payments", "l"));
    j.close().await;
    drop(j);
    // A count of 0 with groups configured adopts the count, not the groups: they are
    // checked against the stored ones.
    let err = SqliteJournal::open(
        SqliteOptions::new(dir.db()).shard_groups(vec![ShardGroup::new("payments", PAYMENTS - 1)]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JournalError::ShardGroupsMismatch { stored, requested } if stored == "payments:6" && requested == "payments:5"),
        "{err:?}"
    );
}

/// The same on PostgreSQL, where two processes may open one journal: a layout differing
/// from the stored one is refused, and a type recorded by one process is routed alike by a
/// journal handle opened before the record existed, once it records the type itself.
#[tokio::test]
async fn postgres_refuses_another_layout_and_shares_type_records() {
    let schema = Schema::new().await;
    let opts = || {
        PgOptions::new(&schema.url)
            .schema(&schema.name)
            .shard_count(SHARDS)
    };
    let early: entlog_journal::AnyJournal =
        PgJournal::open(opts().shard_groups(vec![ShardGroup::new("payments", PAYMENTS)]))
            .await
            .unwrap()
            .into();
    let err = PgJournal::open(opts().shard_groups(vec![ShardGroup::new("payments", 5)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::ShardGroupsMismatch { stored, requested } if stored == "payments:6" && requested == "payments:5"),
        "{err:?}"
    );
    let runner = pg_member(&schema, "r", true, true).await;
    assert_eq!(post(&runner, "l", 4, "c").await, 4);
    // `early` opened before `ledger` was recorded: it learns the record, and a
    // contradicting declaration is refused.
    early.record_group("ledger", "payments").await.unwrap();
    let err = early.record_group("ledger", "default").await.unwrap_err();
    assert!(matches!(err, JournalError::GroupMismatch { .. }), "{err:?}");
    let late: entlog_journal::AnyJournal =
        PgJournal::open(opts().shard_count(0)).await.unwrap().into();
    assert_eq!(late.shard_map().group_of_type("ledger"), Some("payments"));
    let err = late.record_group("ledger", "default").await.unwrap_err();
    assert!(matches!(err, JournalError::GroupMismatch { .. }), "{err:?}");
    early.close().await;
    late.close().await;
    runner.shutdown().await.unwrap();
    schema.drop().await;
}

/// A runner hosts the groups of the types it registers; when the journal records another
/// type of such a group (registered by another runner), its messages could reach this
/// runner's shards and fail as not registered: the runner says so when it starts.
#[tokio::test]
async fn a_runner_names_the_types_of_its_groups_it_cannot_run() {
    let out = common::logs::Captured::install();
    let dir = TempDir::new();
    let journal: entlog_journal::AnyJournal = SqliteJournal::open(
        SqliteOptions::new(dir.db())
            .shard_count(SHARDS)
            .shard_groups(vec![ShardGroup::new("payments", PAYMENTS)]),
    )
    .await
    .unwrap()
    .into();
    journal.record_group("invoice", "payments").await.unwrap();
    journal.close().await;
    let cluster = Cluster::builder()
        .sqlite(dir.db())
        .config(grouped(SHARDS))
        .entity(Ledger)
        .start()
        .await
        .unwrap();
    eventually(30, "the runner's warning", || async {
        out.lines().iter().any(|l| {
            l.contains("WARN")
                && l.contains("does not register")
                && l.contains("group=\"payments\"")
                && l.contains("\"invoice\"")
        })
    })
    .await;
    cluster.shutdown().await.unwrap();
}
