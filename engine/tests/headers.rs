//! Headers: sent with `EntityRef::with_header`, seen by the handler in `Context`, carried
//! on by what it sends (`ctx.send` and a timer), and stored with every message — on SQLite
//! and PostgreSQL. Across two runners, the `handle` spans of one request all name its
//! trace (the `traceparent` header). One subscriber per process: this binary installs it
//! once, for the trace test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::eventually;
use common::logs::Captured;
use common::pg::Schema;
use entlog_engine::{Cluster, ClusterBuilder, Context, Entity, Outcome, Rejection, TRACE_HEADER};
use entlog_journal::{EntityKey, EntryKind, Headers};
use serde::{Deserialize, Serialize};

type Seen = Vec<(String, String)>;

fn seen(ctx: &Context) -> Seen {
    ctx.headers()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Replies with the headers it was sent; `Forward(id)` also sends a note to back `id`, at
/// once and as a timer.
struct Front;

#[derive(Debug, Serialize, Deserialize)]
enum FrontCmd {
    Forward(String),
    Look,
}

impl Entity for Front {
    const TYPE: &'static str = "front";
    type Command = FrontCmd;
    type Event = ();
    type Reply = Seen;
    type State = ();

    async fn handle(
        &self,
        _: &(),
        cmd: FrontCmd,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        tracing::warn!("front handled");
        if let FrontCmd::Forward(back) = cmd {
            ctx.send::<Back>(&back, &Note);
            ctx.schedule::<Back>(Duration::from_millis(10), &back, &Note);
        }
        Ok(Outcome::reply(seen(ctx)))
    }

    fn apply(_: &mut (), _: &()) {}
}

/// Records the headers of each note it gets.
struct Back;

#[derive(Debug, Serialize, Deserialize)]
struct Note;

impl Entity for Back {
    const TYPE: &'static str = "back";
    type Command = Note;
    type Event = Seen;
    type Reply = ();
    type State = Vec<Seen>;

    async fn handle(
        &self,
        _: &Vec<Seen>,
        _: Note,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        tracing::warn!("back handled");
        Ok(Outcome::new(vec![seen(ctx)], ()))
    }

    fn apply(notes: &mut Vec<Seen>, note: &Seen) {
        notes.push(note.clone());
    }
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn sent() -> Seen {
    vec![
        ("tenant".to_owned(), "acme".to_owned()),
        (TRACE_HEADER.to_owned(), TRACE.to_owned()),
    ]
}

async fn carried(builder: ClusterBuilder) {
    let cluster = builder
        .config(common::config(4))
        .entity(Front)
        .entity(Back)
        .start()
        .await
        .unwrap();
    let front = cluster
        .entity::<Front>("f")
        .with_header("tenant", "acme")
        .with_header(TRACE_HEADER, TRACE);
    assert_eq!(
        front.ask(FrontCmd::Forward("b".into())).await.unwrap(),
        sent()
    );
    // A handle without headers sends none.
    assert_eq!(
        cluster
            .entity::<Front>("f")
            .ask(FrontCmd::Look)
            .await
            .unwrap(),
        Seen::new()
    );
    // The note sent at once and the timer both carry the request's headers.
    let back = cluster.entity::<Back>("b");
    eventually(30, "both notes", || async {
        back.state().await.unwrap().1.len() == 2
    })
    .await;
    assert_eq!(back.state().await.unwrap().1, vec![sent(), sent()]);
    // Stored with each message.
    let expected: Headers = sent().into_iter().collect();
    let records = cluster
        .journal()
        .entity_records(&EntityKey::new("back", "b").unwrap())
        .await
        .unwrap();
    let messages: Vec<&Headers> = records
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Message)
        .map(|e| &e.headers)
        .collect();
    assert_eq!(messages, vec![&expected, &expected]);
    // Bad headers are refused before anything is sent.
    let err = cluster
        .entity::<Front>("f")
        .with_header("", "x")
        .ask(FrontCmd::Look)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("header name"), "{err}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_carried_on_sqlite() {
    let dir = common::TempDir::new();
    carried(Cluster::builder().sqlite(dir.db())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_carried_on_postgres() {
    let schema = Schema::new().await;
    carried(Cluster::builder().postgres_schema(&schema.url, &schema.name)).await;
    schema.drop().await;
}

/// A request that crosses runners: the front entity on one runner, the back entity it
/// sends to on the other; the log lines of both handlers name the request's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_two_runners() {
    let out = Captured::install();
    let schema = Schema::new().await;
    let runner = |id: &str| {
        Cluster::builder()
            .postgres_schema(&schema.url, &schema.name)
            .config(common::config(common::pg::SHARDS).runner_id(id))
            .entity(Front)
            .entity(Back)
            .start()
    };
    let one = runner("trace-one").await.unwrap();
    let two = runner("trace-two").await.unwrap();
    eventually(30, "both runners to own shards", || async {
        common::pg::covered(&[&one, &two])
            && !one.owned_shards().is_empty()
            && !two.owned_shards().is_empty()
    })
    .await;
    let local = |c: &Cluster, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|id| c.entity::<Back>(id).is_local().unwrap())
            .unwrap()
    };
    let front_id = local(&one, "front");
    let back_id = local(&two, "back");
    // Owned by different runners: the note crosses from one to the other.
    assert!(!one.entity::<Back>(&back_id).is_local().unwrap());
    assert!(!two.entity::<Front>(&front_id).is_local().unwrap());

    let reply = one
        .entity::<Front>(&front_id)
        .with_header(TRACE_HEADER, TRACE)
        .ask(FrontCmd::Forward(back_id.clone()))
        .await
        .unwrap();
    assert!(reply.contains(&(TRACE_HEADER.to_owned(), TRACE.to_owned())));
    let back = two.entity::<Back>(&back_id);
    eventually(30, "both notes", || async {
        back.state().await.unwrap().1.len() == 2
    })
    .await;

    let lines = out.lines();
    let of = |what: &str, entity: &str| -> Vec<&String> {
        lines
            .iter()
            .filter(|l| l.contains(what) && l.contains(&format!("entity={entity}")))
            .collect()
    };
    let front_lines = of("front handled", &format!("front/{front_id}"));
    let back_lines = of("back handled", &format!("back/{back_id}"));
    assert_eq!(front_lines.len(), 1, "{lines:#?}");
    assert_eq!(back_lines.len(), 2, "{lines:#?}");
    for line in front_lines.iter().chain(&back_lines) {
        assert!(line.contains(&format!("trace={TRACE}")), "{line}");
    }
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    schema.drop().await;
}
