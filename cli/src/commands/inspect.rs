//! `inspect TYPE/ID`: everything the journal holds about one entity, in order; a long
//! history a page at a time (`--limit`, then `--before` the page's first offset).

use entlog_journal::{AnyJournal, EntityKey, EntityPage, EntryKind, Journal, StoredReply};
use serde_json::{Value, json};

use super::Ctx;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::registry::Registry;
use crate::render;

/// Which part of an entity's history to show.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Window {
    /// Only entries before this offset.
    pub before: Option<u64>,
    /// At most this many entries (the newest of the window).
    pub limit: Option<u64>,
}

pub(crate) async fn run(ctx: &Ctx, address: &str, window: Window) -> Result<(), CliError> {
    let key = open::entity(address)?;
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let page = load(&journal, &key, window).await;
    journal.close().await;
    let page = page?;
    let shard = journal.shard_of(&key);
    if ctx.out.json {
        return ctx
            .out
            .json_value(&to_json(&ctx.registry, &key, shard, &page), false);
    }
    print(ctx, &key, shard, &page)
}

/// Reads a window of the entity's history; an entity the journal knows nothing of is an
/// error.
pub(crate) async fn load(
    journal: &AnyJournal,
    key: &EntityKey,
    window: Window,
) -> Result<EntityPage, CliError> {
    let page = journal
        .entity_page(key, window.before, window.limit.unwrap_or(u64::MAX))
        .await?;
    if window.before.is_none() && page == EntityPage::default() {
        return Err(CliError::UnknownEntity(key.to_string()));
    }
    Ok(page)
}

/// By message id: an entity with many messages is looked up once per message.
fn replies_by_id(page: &EntityPage) -> std::collections::HashMap<uuid::Uuid, &StoredReply> {
    page.records
        .replies
        .iter()
        .map(|r| (r.message_id, r))
        .collect()
}

/// The page as `inspect --json` prints it.
pub(crate) fn to_json(reg: &Registry, key: &EntityKey, shard: u32, page: &EntityPage) -> Value {
    let records = &page.records;
    let t = key.entity_type();
    let replies = replies_by_id(page);
    let entries: Vec<Value> = records
        .entries
        .iter()
        .map(|e| {
            let mut v = render::entry_json(reg, e);
            if e.kind == EntryKind::Message {
                v["reply"] = replies.get(&e.message_id).map_or(Value::Null, |r| {
                    json!({
                        "created_at": render::time(r.created_at),
                        "payload": render::payload_json(reg, t, &r.payload),
                    })
                });
            }
            v
        })
        .collect();
    let scheduled: Vec<Value> = records
        .scheduled
        .iter()
        .map(|s| {
            json!({
                "message_id": s.message_id.to_string(),
                "deliver_at": render::time(s.deliver_at),
                "created_at": render::time(s.created_at),
                "payload": render::payload_json(reg, t, &s.payload),
                "headers": s.headers,
            })
        })
        .collect();
    let snapshot = records.snapshot.as_ref().map_or(Value::Null, |s| {
        json!({
            "seq": s.seq,
            "created_at": render::time(s.created_at),
            "checksum_ok": s.checksum_ok,
            "state": render::payload_json(reg, t, &s.state),
        })
    });
    json!({
        "entity": key.to_string(),
        "shard": shard,
        "entries": entries,
        "more_before": page.more_before,
        "scheduled": scheduled,
        "snapshot": snapshot,
    })
}

fn print(ctx: &Ctx, key: &EntityKey, shard: u32, page: &EntityPage) -> Result<(), CliError> {
    let records = &page.records;
    let t = key.entity_type();
    let reg = &ctx.registry;
    let replies = replies_by_id(page);
    let reply_of = |id: uuid::Uuid| replies.get(&id).copied();
    let messages = records
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Message)
        .count();
    let events = records.entries.len() - messages;
    ctx.out.line(format_args!(
        "{key} (shard {shard}): {messages} messages, {events} events, {} replies, {} scheduled",
        records.replies.len(),
        records.scheduled.len()
    ))?;
    if page.more_before {
        let first = records.entries.first().map_or(0, |e| e.offset);
        ctx.out.line(format_args!(
            "  (older entries: inspect {key} --before {first})"
        ))?;
    }
    for e in &records.entries {
        match e.kind {
            EntryKind::Message => {
                ctx.out.line(format_args!(
                    "  offset {:>6}  {}  message {}  {}{}",
                    e.offset,
                    render::time(e.created_at),
                    e.message_id,
                    render::payload_text(reg, t, &e.payload),
                    render::headers_text(&e.headers)
                ))?;
                match reply_of(e.message_id) {
                    Some(r) => ctx.out.line(format_args!(
                        "                 {}  reply    {}",
                        render::time(r.created_at),
                        render::payload_text(reg, t, &r.payload)
                    ))?,
                    None => ctx.out.line("                 (not processed yet)")?,
                }
            }
            EntryKind::Event => ctx.out.line(format_args!(
                "  offset {:>6}  {}  event seq {}  {}",
                e.offset,
                render::time(e.created_at),
                e.seq.unwrap_or(0),
                render::payload_text(reg, t, &e.payload)
            ))?,
            other => ctx.out.line(format_args!(
                "  offset {:>6}  {}  {}  {}",
                e.offset,
                render::time(e.created_at),
                render::kind(other),
                render::payload_text(reg, t, &e.payload)
            ))?,
        }
    }
    for s in &records.scheduled {
        ctx.out.line(format_args!(
            "  scheduled for {}  message {}  {}",
            render::time(s.deliver_at),
            s.message_id,
            render::payload_text(reg, t, &s.payload)
        ))?;
    }
    match &records.snapshot {
        Some(s) => ctx.out.line(format_args!(
            "  snapshot at seq {} ({}, {})  {}",
            s.seq,
            render::time(s.created_at),
            if s.checksum_ok {
                "checksum ok"
            } else {
                "CHECKSUM FAILS: ignored on activation"
            },
            render::payload_text(reg, t, &s.state)
        )),
        None => ctx.out.line("  no snapshot"),
    }
}
