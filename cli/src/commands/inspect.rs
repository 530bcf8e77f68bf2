//! `inspect TYPE/ID`: everything the journal holds about one entity, in order.

use entlog_journal::{EntityRecords, EntryKind, Journal};
use serde_json::{Value, json};

use super::Ctx;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::render;

pub(crate) async fn run(ctx: &Ctx, address: &str) -> Result<(), CliError> {
    let key = open::entity(address)?;
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let shard = journal.shard_of(&key);
    let records = journal.entity_records(&key).await;
    journal.close().await;
    let records = records?;
    if records == EntityRecords::default() {
        return Err(CliError::UnknownEntity(key.to_string()));
    }
    let t = key.entity_type();
    let reg = &ctx.registry;
    // By message id: an entity with many messages is looked up once per message.
    let replies: std::collections::HashMap<uuid::Uuid, &entlog_journal::StoredReply> =
        records.replies.iter().map(|r| (r.message_id, r)).collect();
    let reply_of = |id: uuid::Uuid| replies.get(&id).copied();
    if ctx.out.json {
        let entries: Vec<Value> = records
            .entries
            .iter()
            .map(|e| {
                let mut v = render::entry_json(reg, e);
                if e.kind == EntryKind::Message {
                    v["reply"] = reply_of(e.message_id).map_or(Value::Null, |r| {
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
        return ctx.out.json_value(
            &json!({
                "entity": key.to_string(),
                "shard": shard,
                "entries": entries,
                "scheduled": scheduled,
                "snapshot": snapshot,
            }),
            false,
        );
    }

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
    for e in &records.entries {
        match e.kind {
            EntryKind::Message => {
                ctx.out.line(format_args!(
                    "  offset {:>6}  {}  message {}  {}",
                    e.offset,
                    render::time(e.created_at),
                    e.message_id,
                    render::payload_text(reg, t, &e.payload)
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
