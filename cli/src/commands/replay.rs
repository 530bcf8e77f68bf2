//! `replay TYPE/ID`: the state after each event and what each event changed, or a check
//! of the stored snapshot against a full replay.

use entlog_journal::{Entry, Journal};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::Ctx;
use crate::args::ReplayArgs;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::registry::{ReplayFailure, TypeCodec};
use crate::render;

pub(crate) async fn run(ctx: &Ctx, args: ReplayArgs) -> Result<(), CliError> {
    let key = open::entity(&args.entity)?;
    let codec = ctx
        .registry
        .codec(key.entity_type())
        .ok_or_else(|| CliError::Unregistered {
            entity_type: key.entity_type().to_owned(),
            needed_for: "replay",
        })?
        .clone();
    let at = args.at.as_deref().map(render::parse_time).transpose()?;
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let loaded = async {
        let events: Vec<Entry> = journal.events(&key, 1).try_collect().await?;
        let snapshot = if args.from_snapshot {
            journal.entity_records(&key).await?.snapshot
        } else {
            None
        };
        Ok::<_, CliError>((events, snapshot))
    }
    .await;
    let shard = journal.shard_of(&key);
    journal.close().await;
    let (events, snapshot) = loaded?;
    let entity = key.to_string();

    if args.from_snapshot {
        let Some(snap) = snapshot else {
            return Err(CliError::UnknownEntity(format!("a snapshot of {entity}")));
        };
        return check_snapshot(ctx, codec.as_ref(), &entity, shard, &snap, &events);
    }
    if events.is_empty() && !ctx.out.json {
        ctx.out.line(format_args!(
            "{entity} has no events: its state is the initial one"
        ))?;
    }
    let last = events.last().and_then(|e| e.seq).unwrap_or(0);
    if let Some(n) = args.to_seq.filter(|n| *n > last) {
        return Err(CliError::BadArgument {
            what: "--to-seq",
            value: n.to_string(),
            reason: format!("{entity} has {last} events"),
        });
    }
    let events: Vec<Entry> = events
        .into_iter()
        .take_while(|e| args.to_seq.is_none_or(|n| e.seq.unwrap_or(0) <= n))
        .take_while(|e| at.is_none_or(|t| e.created_at <= t))
        .collect();
    let replayed = codec.replay(None, &events).map_err(|f| failure(f, shard))?;
    let mut before = replayed.start.clone();
    let mut steps = Vec::with_capacity(events.len());
    for (e, state) in events.iter().zip(&replayed.after) {
        let changes = render::diff(&before, state);
        steps.push((e, state, changes));
        before = state.clone();
    }
    if ctx.out.json {
        let steps: Vec<Value> = steps
            .iter()
            .map(|(e, state, changes)| {
                json!({
                    "seq": e.seq,
                    "offset": e.offset,
                    "created_at": render::time(e.created_at),
                    "event": render::payload_json(&ctx.registry, key.entity_type(), &e.payload),
                    "changes": changes.iter().map(render::change_json).collect::<Vec<_>>(),
                    "state": state,
                })
            })
            .collect();
        return ctx.out.json_value(
            &json!({
                "entity": entity,
                "initial": replayed.start,
                "events": steps,
                "state": before,
            }),
            false,
        );
    }
    ctx.out
        .line(format_args!("{entity}: initial state {}", replayed.start))?;
    for (e, _, changes) in &steps {
        ctx.out.line(format_args!(
            "seq {:>5}  {}  {}",
            e.seq.unwrap_or(0),
            render::time(e.created_at),
            render::payload_text(&ctx.registry, key.entity_type(), &e.payload)
        ))?;
        if changes.is_empty() {
            ctx.out.line("           (no change)")?;
        }
        for c in changes {
            ctx.out
                .line(format_args!("           {}", render::change_text(c)))?;
        }
    }
    let last = steps.last().and_then(|(e, _, _)| e.seq).unwrap_or(0);
    ctx.out
        .line(format_args!("state after seq {last}: {before}"))
}

fn failure(f: ReplayFailure, shard: u32) -> CliError {
    match f.entry {
        Some((shard, offset, what)) => CliError::Decode {
            what,
            shard,
            offset,
            reason: f.reason,
        },
        None => CliError::Decode {
            what: "the starting state".into(),
            shard,
            offset: 0,
            reason: f.reason,
        },
    }
}

fn check_snapshot(
    ctx: &Ctx,
    codec: &dyn TypeCodec,
    entity: &str,
    shard: u32,
    snap: &entlog_journal::StoredSnapshot,
    events: &[Entry],
) -> Result<(), CliError> {
    let upto: Vec<Entry> = events
        .iter()
        .take_while(|e| e.seq.unwrap_or(0) <= snap.seq)
        .cloned()
        .collect();
    let replayed = codec.replay(None, &upto).map_err(|f| failure(f, shard))?;
    let full = replayed.after.last().cloned().unwrap_or(replayed.start);
    let mut problems: Vec<String> = Vec::new();
    if !snap.checksum_ok {
        problems.push("the snapshot fails its checksum (activation ignores it)".into());
    }
    if upto.len() as u64 != snap.seq {
        problems.push(format!(
            "the journal holds {} events up to seq {}",
            upto.len(),
            snap.seq
        ));
    }
    let (stored, changes) = if snap.state.version != codec.state_version() {
        problems.push(format!(
            "the snapshot has state version {}, this build {} (activation ignores it)",
            snap.state.version,
            codec.state_version()
        ));
        (Value::Null, Vec::new())
    } else {
        match codec.replay(Some(&snap.state), &[]) {
            Ok(r) => {
                let changes = render::diff(&full, &r.start);
                (r.start, changes)
            }
            Err(f) => {
                problems.push(format!(
                    "the snapshot's state does not decode: {}",
                    f.reason
                ));
                (Value::Null, Vec::new())
            }
        }
    };
    let differences = changes.len() + problems.len();
    if ctx.out.json {
        ctx.out.json_value(
            &json!({
                "entity": entity,
                "snapshot_seq": snap.seq,
                "matches": differences == 0,
                "snapshot_state": stored,
                "replayed_state": full,
                "problems": problems,
                "differences": changes.iter().map(render::change_json).collect::<Vec<_>>(),
            }),
            false,
        )?;
    } else {
        ctx.out.line(format_args!(
            "{entity}: snapshot at seq {} saved {}",
            snap.seq,
            render::time(snap.created_at)
        ))?;
        ctx.out.line(format_args!("  snapshot state: {stored}"))?;
        ctx.out.line(format_args!("  full replay:    {full}"))?;
        for p in &problems {
            ctx.out.line(format_args!("  problem: {p}"))?;
        }
        for c in &changes {
            ctx.out.line(format_args!(
                "  differs (replay → snapshot): {}",
                render::change_text(c)
            ))?;
        }
        if differences == 0 {
            ctx.out.line("  the snapshot matches a full replay")?;
        }
    }
    if differences == 0 {
        Ok(())
    } else {
        Err(CliError::SnapshotMismatch {
            entity: entity.to_owned(),
            seq: snap.seq,
            differences,
        })
    }
}
