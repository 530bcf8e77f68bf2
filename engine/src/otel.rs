//! OpenTelemetry trace context across messages (feature `opentelemetry`).
//!
//! A message carries its sender's trace context in the W3C `traceparent` header
//! ([`TRACE_HEADER`](crate::TRACE_HEADER)), written and read by the application's global
//! text-map propagator (`opentelemetry::global::set_text_map_propagator`). The `ask` span
//! joins the trace of a header the caller set; what it sends carries the `ask` span's own
//! context; the runner's `handle` span is that context's child, and a handler's sends
//! carry the `handle` span's context on — so one trace shows every step of a request,
//! from runner to runner, through the journal. Without a `tracing-opentelemetry` layer,
//! spans have no OpenTelemetry context and nothing is written.

use std::collections::HashMap;

use entlog_journal::Headers;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Read<'a>(&'a Headers);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Write(HashMap<String, String>);

impl Injector for Write {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Makes `span` a child of the trace context in `headers`, if they carry a valid one.
pub(crate) fn join(span: &tracing::Span, headers: &Headers) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Read(headers)));
    if parent.span().span_context().is_valid() {
        // Refused only for a span already started or filtered out: it then keeps its own
        // parent, which is all a trace can do then.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `headers` (replacing a carried one), when the span
/// has one.
pub(crate) fn carry(span: &tracing::Span, headers: &mut Headers) {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut out = Write(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
    headers.extend(out.0);
}
