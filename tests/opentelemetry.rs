//! With the feature `opentelemetry` and a `tracing-opentelemetry` layer installed, one
//! OpenTelemetry trace shows a request's whole path through the journal: the caller's
//! span, the `ask`, the `handle` span of the entity asked, and the `handle` span of the
//! entity its handler sent a message to — each the child of the one before, linked only
//! by the `traceparent` header stored with each message.
#![allow(clippy::unwrap_used)]

use entlog::prelude::*;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Forwards what it is told to a `Back` entity, and answers.
struct Front;
/// Counts what it gets.
struct Back;

#[derive(Serialize, Deserialize)]
struct Forward(String);

impl Entity for Front {
    const TYPE: &'static str = "front";
    type Command = Forward;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(
        &self,
        _: &(),
        f: Forward,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        ctx.send::<Back>(&f.0, &());
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

impl Entity for Back {
    const TYPE: &'static str = "back";
    type Command = ();
    type Event = ();
    type Reply = u32;
    type State = u32;

    async fn handle(&self, n: &u32, _: (), _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        Ok(Outcome::new(vec![()], n + 1))
    }

    fn apply(n: &mut u32, _: &()) {
        *n += 1;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_request_through_the_journal() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = std::env::temp_dir().join(format!("entlog-otel-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("j.db"))
        .entity(Front)
        .entity(Back)
        .start()
        .await
        .unwrap();
    let request = tracing::info_span!("request");
    cluster
        .entity::<Front>("f")
        .ask(Forward("b".into()))
        .instrument(request)
        .await
        .unwrap();
    // The forwarded message is handled after the ask returns: ask the back entity (in a
    // trace of its own) until it has been.
    while cluster.entity::<Back>("b").ask(()).await.unwrap() < 2 {}
    cluster.shutdown().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = named(&spans, "request")[0];
    let trace: TraceId = request.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let parent_of = |name: &str| -> Vec<SpanId> {
        in_trace
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.parent_span_id)
            .collect()
    };
    let ask = in_trace.iter().find(|s| s.name == "ask").unwrap();
    assert_eq!(ask.parent_span_id, request.span_context.span_id());
    let handles: Vec<&&SpanData> = in_trace.iter().filter(|s| s.name == "handle").collect();
    assert_eq!(
        handles.len(),
        2,
        "the front and the back handler, each once: {:?}",
        in_trace.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let front = handles
        .iter()
        .find(|h| h.parent_span_id == ask.span_context.span_id())
        .expect("the front handler is the ask's child");
    assert!(
        parent_of("handle").contains(&front.span_context.span_id()),
        "the back handler is the front handler's child"
    );
    std::fs::remove_dir_all(&dir).ok();
}
