//! How records look on screen and in JSON: times, payloads, entries, state changes.

use std::io::Write;
use std::time::{Duration, SystemTime};

use entlog_journal::{Entry, EntryKind, Payload, Timestamp};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::registry::Registry;

/// Where a command writes: stdout, as text or JSON. A closed pipe ends the command quietly.
pub(crate) struct Out {
    /// Print JSON instead of text.
    pub json: bool,
    stdout: std::io::Stdout,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Out {
            json,
            stdout: std::io::stdout(),
        }
    }

    /// Writes one line and flushes it (so `tail` output appears at once).
    pub(crate) fn line(&self, text: impl std::fmt::Display) -> Result<(), CliError> {
        let mut lock = self.stdout.lock();
        writeln!(lock, "{text}")?;
        lock.flush()?;
        Ok(())
    }

    /// Writes a JSON document, pretty-printed, or compact when `compact`.
    pub(crate) fn json_value(&self, value: &Value, compact: bool) -> Result<(), CliError> {
        let text = if compact {
            value.to_string()
        } else {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        };
        self.line(text)
    }
}

/// A stored time as RFC 3339 (UTC, microseconds: exact, so it can be passed back to `--at`).
pub(crate) fn time(t: Timestamp) -> String {
    let at = if t.0 >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(t.0.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH
    };
    humantime::format_rfc3339_micros(at).to_string()
}

/// Parses an RFC 3339 time argument.
pub(crate) fn parse_time(value: &str) -> Result<Timestamp, CliError> {
    let at = humantime::parse_rfc3339_weak(value).map_err(|e| CliError::BadArgument {
        what: "time",
        value: value.to_owned(),
        reason: format!("{e} (expected e.g. 2026-11-27T10:00:00Z)"),
    })?;
    let micros = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(Timestamp(micros))
}

/// Seconds, for ages and lags.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Bytes as hex, shortened past 48 bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 48 { " …" } else { "" };
    format!("{}{more}", shown.join(""))
}

/// A payload decoded with the registry, or its raw form.
pub(crate) struct Shown {
    /// Decoded JSON, when the type is registered and reads it.
    pub value: Option<Value>,
    /// Why it could not be decoded, when the type is registered but fails.
    pub error: Option<String>,
}

pub(crate) fn show(registry: &Registry, entity_type: &str, payload: &Payload) -> Shown {
    match registry.decode(entity_type, payload) {
        None => Shown {
            value: None,
            error: None,
        },
        Some(Ok(v)) => Shown {
            value: Some(v),
            error: None,
        },
        Some(Err(e)) => Shown {
            value: None,
            error: Some(e),
        },
    }
}

/// A payload as one piece of text: decoded JSON, or tag, version and raw bytes.
pub(crate) fn payload_text(registry: &Registry, entity_type: &str, payload: &Payload) -> String {
    let shown = show(registry, entity_type, payload);
    if let Some(v) = shown.value {
        return v.to_string();
    }
    let why = shown
        .error
        .map_or(String::new(), |e| format!(" — undecodable: {e}"));
    format!(
        "<{} v{}, {} bytes: {}{why}>",
        payload.type_tag,
        payload.version,
        payload.bytes.len(),
        hex(&payload.bytes)
    )
}

/// A payload as JSON fields: type, version, and `value` or `raw_hex` (+ `decode_error`).
pub(crate) fn payload_json(registry: &Registry, entity_type: &str, payload: &Payload) -> Value {
    let shown = show(registry, entity_type, payload);
    let mut v = json!({
        "type": payload.type_tag,
        "version": payload.version,
        "bytes": payload.bytes.len(),
    });
    match shown.value {
        Some(value) => v["value"] = value,
        None => {
            let all: String = payload.bytes.iter().map(|b| format!("{b:02x}")).collect();
            v["raw_hex"] = Value::String(all);
        }
    }
    if let Some(e) = shown.error {
        v["decode_error"] = Value::String(e);
    }
    v
}

/// The kind of an entry as a word.
pub(crate) fn kind(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Message => "message",
        EntryKind::Event => "event",
        _ => "entry",
    }
}

/// One entry as a line of text.
pub(crate) fn entry_text(registry: &Registry, e: &Entry) -> String {
    let what = match e.kind {
        EntryKind::Message => format!("message {}", e.message_id),
        EntryKind::Event => format!("event seq {}", e.seq.unwrap_or(0)),
        other => kind(other).to_owned(),
    };
    format!(
        "shard {} offset {} {} {} {} {}{}",
        e.shard,
        e.offset,
        time(e.created_at),
        e.entity,
        what,
        payload_text(registry, e.entity.entity_type(), &e.payload),
        headers_text(&e.headers)
    )
}

/// One entry as JSON; a message with its headers.
pub(crate) fn entry_json(registry: &Registry, e: &Entry) -> Value {
    let mut v = json!({
        "shard": e.shard,
        "offset": e.offset,
        "kind": kind(e.kind),
        "entity": e.entity.to_string(),
        "seq": e.seq,
        "message_id": e.message_id.to_string(),
        "created_at": time(e.created_at),
        "deliver_at": e.deliver_at.map(time),
        "payload": payload_json(registry, e.entity.entity_type(), &e.payload),
    });
    if e.kind == EntryKind::Message {
        v["headers"] = json!(e.headers);
    }
    v
}

/// A message's headers as text to append to its line: empty when it has none.
pub(crate) fn headers_text(headers: &entlog_journal::Headers) -> String {
    if headers.is_empty() {
        return String::new();
    }
    format!("  headers {}", json!(headers))
}

/// One value that differs between two states: where, before, after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    /// JSON-pointer-like path (`cents`, `items/2/qty`); empty for the whole state.
    pub path: String,
    /// The value before (`None`: absent).
    pub before: Option<Value>,
    /// The value after (`None`: removed).
    pub after: Option<Value>,
}

/// The values that differ between `before` and `after`, object fields and equal-length
/// arrays compared member by member.
pub(crate) fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_into(String::new(), Some(before), Some(after), &mut out);
    out
}

fn diff_into(path: String, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<Change>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}/{key}")
        }
    };
    match (before, after) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                diff_into(join(k), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_into(join(&i.to_string()), Some(x), Some(y), out);
            }
        }
        (a, b) if a != b => out.push(Change {
            path,
            before: a.cloned(),
            after: b.cloned(),
        }),
        _ => {}
    }
}

/// A change as `path: before → after`.
pub(crate) fn change_text(c: &Change) -> String {
    let v = |x: &Option<Value>| x.as_ref().map_or("(none)".to_owned(), Value::to_string);
    let path = if c.path.is_empty() { "state" } else { &c.path };
    format!("{path}: {} → {}", v(&c.before), v(&c.after))
}

/// A change as JSON.
pub(crate) fn change_json(c: &Change) -> Value {
    json!({ "path": c.path, "before": c.before, "after": c.after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_changed_added_and_removed_values() {
        let a = json!({"cents": 10, "ops": 1, "tags": ["x", "y"], "old": true});
        let b = json!({"cents": 15, "ops": 1, "tags": ["x", "z"], "new": 2});
        let changes = diff(&a, &b);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["cents", "new", "old", "tags/1"]);
        assert_eq!(change_text(&changes[0]), "cents: 10 → 15");
        assert_eq!(change_text(&changes[1]), "new: (none) → 2");
        assert!(diff(&a, &a).is_empty());
        assert_eq!(diff(&json!(1), &json!(2))[0].path, "");
    }

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-11-27T10:00:00.123Z").unwrap();
        assert_eq!(time(t), "2026-11-27T10:00:00.123000Z");
        assert!(matches!(
            parse_time("yesterday"),
            Err(CliError::BadArgument { .. })
        ));
    }
}
