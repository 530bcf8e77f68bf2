//! `replay TYPE/ID`: the state after each event and what each event changed, or a check
//! of the stored snapshot against a full replay.

use entlog_journal::{AnyJournal, EntityKey, Entry, Journal, Timestamp};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::Ctx;
use crate::args::ReplayArgs;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::registry::{Registry, ReplayFailure, TypeCodec};
use crate::render;

/// Where a replay stops and how much of it to show.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Until {
    /// Stop after the event at this seq.
    pub to_seq: Option<u64>,
    /// Stop at the last event written at or before this time.
    pub at: Option<Timestamp>,
    /// Show only the last this many steps.
    pub last: Option<usize>,
}

/// One event and the state after it.
pub(crate) struct Step {
    pub event: Entry,
    pub state: Value,
    pub changes: Vec<render::Change>,
}

/// An entity's states from the initial one through its events.
pub(crate) struct Replay {
    pub entity: EntityKey,
    /// The state replay started from: the initial one, or the snapshot's.
    pub initial: Value,
    /// The seq of the snapshot replay started from, if it did.
    pub from_snapshot: Option<u64>,
    /// The steps shown (the last `Until::last` of them).
    pub steps: Vec<Step>,
    /// The state after the last step.
    pub state: Value,
    /// The events replayed (also those not shown), after the snapshot if it started there.
    pub replayed: usize,
}

pub(crate) async fn run(ctx: &Ctx, args: ReplayArgs) -> Result<(), CliError> {
    let key = open::entity(&args.entity)?;
    let codec = codec(&ctx.registry, &key)?;
    let until = Until {
        to_seq: args.to_seq,
        at: args.at.as_deref().map(render::parse_time).transpose()?,
        last: args.last,
    };
    let journal = open::existing(&ctx.location, Need::Read).await?;
    if args.from_snapshot {
        let loaded = async {
            let events: Vec<Entry> = journal.events(&key, 1).try_collect().await?;
            let snapshot = journal.entity_records(&key).await?.snapshot;
            Ok::<_, CliError>((events, snapshot))
        }
        .await;
        let shard = journal.shard_of(&key);
        journal.close().await;
        let (events, snapshot) = loaded?;
        let Some(snap) = snapshot else {
            return Err(CliError::UnknownEntity(format!("a snapshot of {key}")));
        };
        return check_snapshot(ctx, codec.as_ref(), &key.to_string(), shard, &snap, &events);
    }
    let replay = load(&ctx.registry, &journal, &key, until).await;
    journal.close().await;
    let replay = replay?;
    if ctx.out.json {
        return ctx.out.json_value(&to_json(&ctx.registry, &replay), false);
    }
    print(ctx, &replay)
}

/// The entity type's codec: replay needs the application's code.
fn codec(registry: &Registry, key: &EntityKey) -> Result<std::sync::Arc<dyn TypeCodec>, CliError> {
    registry
        .codec(key.entity_type())
        .cloned()
        .ok_or_else(|| CliError::Unregistered {
            entity_type: key.entity_type().to_owned(),
            needed_for: "replay",
        })
}

/// Replays the entity's events up to `until`. When only the last steps up to a given seq
/// are shown (`to_seq` and `last`) and the entity's snapshot (checksum and version good)
/// lies before them, the replay starts from it, as activation does: its cost follows the
/// steps shown, not the history.
pub(crate) async fn load(
    registry: &Registry,
    journal: &AnyJournal,
    key: &EntityKey,
    until: Until,
) -> Result<Replay, CliError> {
    let codec = codec(registry, key)?;
    let shard = journal.shard_of(key);
    let snapshot = match (until.to_seq, until.last) {
        (Some(to), Some(last)) => {
            let first_shown = to.saturating_sub(last as u64) + 1;
            journal
                .load_snapshot(key, codec.state_version())
                .await?
                .filter(|s| s.seq < first_shown)
        }
        _ => None,
    };
    let from_seq = snapshot.as_ref().map_or(1, |s| s.seq + 1);
    let mut events: Vec<Entry> = Vec::new();
    let mut stream = std::pin::pin!(journal.events(key, from_seq));
    while let Some(e) = stream.try_next().await? {
        if until.to_seq.is_some_and(|n| e.seq.unwrap_or(0) > n) {
            break;
        }
        events.push(e);
    }
    let last = events
        .last()
        .and_then(|e| e.seq)
        .or(snapshot.as_ref().map(|s| s.seq))
        .unwrap_or(0);
    if let Some(n) = until.to_seq.filter(|n| *n > last) {
        return Err(CliError::BadArgument {
            what: "--to-seq",
            value: n.to_string(),
            reason: format!("{key} has {last} events"),
        });
    }
    let events: Vec<Entry> = events
        .into_iter()
        .take_while(|e| until.at.is_none_or(|t| e.created_at <= t))
        .collect();
    let replayed = codec
        .replay(snapshot.as_ref().map(|s| &s.state), &events)
        .map_err(|f| failure(f, shard))?;
    let count = events.len();
    let skip = until.last.map_or(0, |n| count.saturating_sub(n));
    let mut before = if skip == 0 {
        replayed.start.clone()
    } else {
        replayed.after[skip - 1].clone()
    };
    let mut steps = Vec::with_capacity(count - skip);
    for (event, state) in events.into_iter().zip(replayed.after).skip(skip) {
        let changes = render::diff(&before, &state);
        before = state.clone();
        steps.push(Step {
            event,
            state,
            changes,
        });
    }
    Ok(Replay {
        entity: key.clone(),
        initial: replayed.start,
        from_snapshot: snapshot.map(|s| s.seq),
        steps,
        state: before,
        replayed: count,
    })
}

/// The replay as `replay --json` prints it.
pub(crate) fn to_json(registry: &Registry, replay: &Replay) -> Value {
    let t = replay.entity.entity_type();
    let steps: Vec<Value> = replay
        .steps
        .iter()
        .map(|s| {
            json!({
                "seq": s.event.seq,
                "offset": s.event.offset,
                "created_at": render::time(s.event.created_at),
                "event": render::payload_json(registry, t, &s.event.payload),
                "changes": s.changes.iter().map(render::change_json).collect::<Vec<_>>(),
                "state": s.state,
            })
        })
        .collect();
    json!({
        "entity": replay.entity.to_string(),
        "initial": replay.initial,
        "from_snapshot": replay.from_snapshot,
        "events": steps,
        "replayed": replay.replayed,
        "state": replay.state,
    })
}

fn print(ctx: &Ctx, replay: &Replay) -> Result<(), CliError> {
    let entity = &replay.entity;
    match replay.from_snapshot {
        Some(seq) => ctx.out.line(format_args!(
            "{entity}: from its snapshot at seq {seq}: {}",
            replay.initial
        ))?,
        None if replay.replayed == 0 => ctx.out.line(format_args!(
            "{entity} has no events: its state is the initial one"
        ))?,
        None => {}
    }
    if replay.from_snapshot.is_none() {
        ctx.out
            .line(format_args!("{entity}: initial state {}", replay.initial))?;
    }
    if replay.steps.len() < replay.replayed {
        ctx.out.line(format_args!(
            "  ({} earlier events replayed, not shown)",
            replay.replayed - replay.steps.len()
        ))?;
    }
    for s in &replay.steps {
        ctx.out.line(format_args!(
            "seq {:>5}  {}  {}",
            s.event.seq.unwrap_or(0),
            render::time(s.event.created_at),
            render::payload_text(&ctx.registry, entity.entity_type(), &s.event.payload)
        ))?;
        if s.changes.is_empty() {
            ctx.out.line("           (no change)")?;
        }
        for c in &s.changes {
            ctx.out
                .line(format_args!("           {}", render::change_text(c)))?;
        }
    }
    let last = replay.steps.last().and_then(|s| s.event.seq).unwrap_or(0);
    ctx.out
        .line(format_args!("state after seq {last}: {}", replay.state))
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
