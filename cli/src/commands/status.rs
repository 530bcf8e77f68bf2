//! `status`: runners, shards, projections, poison messages and damaged entries at a glance,
//! and what is stuck — with exit status 1 then, for scripts and health checks.
//!
//! Stuck means waiting with no end in sight: a shard whose oldest unanswered message has
//! waited longer than `--stuck-after` (with why, as far as the journal tells: no live
//! owner, or the commit error its owner recorded), a shard retrying its commit, a
//! projection stopped at an event. Poison messages and damaged entries are not stuck:
//! they ended (with a failure reply, or passed by their shard).
//!
//! A damaged entry (one that failed its checksum or did not decode) is known only by its
//! place: its entity cannot be trusted, so `inspect TYPE/ID` cannot find it and it is
//! listed here instead.

use std::collections::BTreeSet;

use entlog_engine::{MAILBOX, failure_reason};
use entlog_journal::{AnyJournal, CursorInfo, Journal, RunnerRow, ShardLayout};
use serde_json::{Value, json};

use super::Ctx;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::render;

/// Reads `--stuck-after`.
pub(crate) fn parse_stuck_after(value: &str) -> Result<std::time::Duration, CliError> {
    humantime::parse_duration(value).map_err(|e| CliError::BadArgument {
        what: "--stuck-after",
        value: value.to_owned(),
        reason: format!("{e} (expected e.g. 60s, 5m)"),
    })
}

pub(crate) async fn run(ctx: &Ctx, poison_limit: usize, stuck_after: &str) -> Result<(), CliError> {
    let stuck_after = parse_stuck_after(stuck_after)?;
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let result = gather(&journal, poison_limit, stuck_after).await;
    journal.close().await;
    let report = result?;
    if ctx.out.json {
        ctx.out.json_value(&report, false)?;
    } else {
        print(ctx, &report)?;
    }
    match report["stuck"].as_array().map_or(0, Vec::len) {
        0 => Ok(()),
        count => Err(CliError::Stuck { count }),
    }
}

/// Names of the projections that have checkpoints among `cursors`.
pub(crate) fn projection_names(cursors: &[CursorInfo]) -> BTreeSet<&str> {
    cursors
        .iter()
        .filter_map(|c| entlog_projections::projection_of(&c.consumer))
        .collect()
}

/// One projection's status over all shards, as JSON.
pub(crate) async fn projection_json(journal: &AnyJournal, name: &str) -> Result<Value, CliError> {
    let shards = entlog_projections::status(journal, name).await?;
    let lag_events: u64 = shards.iter().map(|s| s.lag_events).sum();
    let lag = shards.iter().map(|s| s.lag).max().unwrap_or_default();
    let failing: Vec<Value> = shards
        .iter()
        .filter_map(|s| {
            s.error.as_ref().map(
                |(offset, error)| json!({ "shard": s.shard, "offset": offset, "error": error }),
            )
        })
        .collect();
    Ok(json!({
        "name": name,
        "lag_events": lag_events,
        "lag_seconds": lag.as_secs_f64(),
        "failing": failing,
    }))
}

/// The report `status --json` prints.
pub(crate) async fn gather(
    journal: &AnyJournal,
    poison_limit: usize,
    stuck_after: std::time::Duration,
) -> Result<Value, CliError> {
    let now = journal.now();
    let runners = journal.runners().await?;
    let live: BTreeSet<&str> = runners
        .iter()
        .filter(|r| r.live)
        .map(|r| r.info.runner.as_str())
        .collect();
    let cursors = journal.cursors().await?;
    let layout = journal.shard_map().layout();
    let mut shards = Vec::new();
    let mut stuck = Vec::new();
    let groups = group_hosts(layout, &runners, &mut stuck);
    for s in journal.shards().await? {
        let cursor = cursors
            .iter()
            .find(|c| c.consumer == MAILBOX && c.shard == s.shard)
            .map_or(0, |c| c.offset);
        let backlog = journal.messages_after(s.shard, cursor).await?;
        let owner_live = s.owner.as_deref().is_some_and(|o| live.contains(o));
        let waiting = if backlog > 0 {
            journal
                .oldest_unanswered(s.shard, cursor)
                .await?
                .map(|due| now.since(due))
        } else {
            None
        };
        if let Some(waited) = waiting.filter(|w| *w >= stuck_after) {
            let why = match (&s.trouble, owner_live) {
                (Some((cause, _)), _) => format!("its owner's commits fail: {cause}"),
                (None, false) => "no live runner owns it".to_owned(),
                (None, true) => "its owner has not answered it".to_owned(),
            };
            stuck.push(json!({
                "shard": s.shard,
                "waiting_seconds": waited.as_secs_f64(),
                "cause": format!("shard {}: a message has waited {} — {why}", s.shard, render::secs(waited)),
            }));
        } else if let Some((cause, since)) = &s.trouble {
            stuck.push(json!({
                "shard": s.shard,
                "cause": format!("shard {}: retrying its commit since {}: {cause}", s.shard, render::time(*since)),
            }));
        }
        shards.push(json!({
            "waiting_seconds": waiting.map(|w| w.as_secs_f64()),
            "shard": s.shard,
            "group": layout.group_of(s.shard),
            "owner": s.owner,
            "owner_live": owner_live,
            "head": s.head,
            "cursor": cursor,
            "backlog": backlog,
            "scheduled": s.scheduled,
            "epoch": s.epoch,
            "trouble": s.trouble.as_ref().map(|(cause, since)| json!({
                "cause": cause,
                "since": render::time(*since),
            })),
        }));
    }
    let mut projections = Vec::new();
    for name in projection_names(&cursors) {
        let p = projection_json(journal, name).await?;
        for f in p["failing"].as_array().into_iter().flatten() {
            stuck.push(json!({
                "projection": name,
                "shard": f["shard"],
                "cause": format!(
                    "projection {name}: stopped at shard {} offset {}: {}",
                    f["shard"], f["offset"], f["error"].as_str().unwrap_or("")
                ),
            }));
        }
        projections.push(p);
    }
    let mut poison = Vec::new();
    for (entity, reply) in journal.failed_replies(poison_limit).await? {
        if let Some(reason) = failure_reason(&reply.payload) {
            poison.push(json!({
                "shard": journal.shard_of(&entity),
                "entity": entity.to_string(),
                "message_id": reply.message_id.to_string(),
                "offset": reply.offset,
                "failed_at": render::time(reply.created_at),
                "reason": reason,
            }));
        }
    }
    let damaged: Vec<Value> = journal
        .damaged_entries()
        .await?
        .into_iter()
        .map(|(d, recorded_at)| {
            json!({
                "shard": d.shard,
                "offset": d.offset,
                "reason": d.reason,
                "recorded_at": render::time(recorded_at),
            })
        })
        .collect();
    Ok(json!({
        "shard_count": journal.shard_count(),
        "shard_groups": groups,
        "runners": runners.iter().map(|r| json!({
            "runner": r.info.runner,
            "live": r.live,
            "groups": r.info.groups,
            "started_at": render::time(r.info.started_at),
            "heartbeat_age_seconds": now.since(r.info.heartbeat_at).as_secs_f64(),
        })).collect::<Vec<_>>(),
        "shards": shards,
        "projections": projections,
        "poison": poison,
        "damaged": damaged,
        "stuck": stuck,
    }))
}

/// Each shard group with its shards and the live runners that host it; a group that no
/// live runner hosts while others run is stuck (its messages wait for a runner that
/// registers its entity types).
fn group_hosts(layout: &ShardLayout, runners: &[RunnerRow], stuck: &mut Vec<Value>) -> Vec<Value> {
    let live: Vec<&RunnerRow> = runners.iter().filter(|r| r.live).collect();
    layout
        .groups()
        .map(|(group, range)| {
            let hosts: Vec<&str> = live
                .iter()
                .filter(|r| r.info.hosts(group))
                .map(|r| r.info.runner.as_str())
                .collect();
            if hosts.is_empty() && !live.is_empty() {
                stuck.push(json!({
                    "group": group,
                    "cause": format!(
                        "shard group {group} (shards {}..{}): no live runner hosts it; start one that registers its entity types",
                        range.start, range.end
                    ),
                }));
            }
            json!({ "name": group, "first": range.start, "end": range.end, "hosted_by": hosts })
        })
        .collect()
}

fn print(ctx: &Ctx, r: &Value) -> Result<(), CliError> {
    let out = &ctx.out;
    let empty = Vec::new();
    let list = |key: &str| r[key].as_array().unwrap_or(&empty).clone();
    let runners = list("runners");
    out.line(format_args!("runners ({}):", runners.len()))?;
    for x in &runners {
        let hosts = match x["groups"].as_array() {
            Some(g) => format!(
                "  hosts {}",
                g.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => String::new(),
        };
        out.line(format_args!(
            "  {:<40} {:<5} heartbeat {:>7.1}s ago  started {}{hosts}",
            x["runner"].as_str().unwrap_or(""),
            if x["live"].as_bool() == Some(true) {
                "live"
            } else {
                "dead"
            },
            x["heartbeat_age_seconds"].as_f64().unwrap_or(0.0),
            x["started_at"].as_str().unwrap_or("")
        ))?;
    }
    let groups = list("shard_groups");
    if groups.len() > 1 {
        out.line(format_args!("shard groups ({}):", groups.len()))?;
        for g in &groups {
            let hosts: Vec<&str> = g["hosted_by"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.line(format_args!(
                "  {:<20} shards {}..{}  hosted by {}",
                g["name"].as_str().unwrap_or(""),
                g["first"],
                g["end"],
                if hosts.is_empty() {
                    "nobody".to_owned()
                } else {
                    hosts.join(", ")
                }
            ))?;
        }
    }
    let shards = list("shards");
    out.line(format_args!("shards ({}):", shards.len()))?;
    // The group column only when there are groups to tell apart.
    let group = |s: &Value| match groups.len() {
        0 | 1 => String::new(),
        _ => format!("  {}", s.as_str().unwrap_or("")),
    };
    out.line(format_args!(
        "  {:>5}  {:<40} {:>9} {:>9} {:>8} {:>9} {:>6}{}",
        "SHARD",
        "OWNER",
        "HEAD",
        "CURSOR",
        "BACKLOG",
        "SCHEDULED",
        "EPOCH",
        group(&json!("GROUP"))
    ))?;
    for s in &shards {
        let owner = match (s["owner"].as_str(), s["owner_live"].as_bool()) {
            (Some(o), Some(true)) => o.to_owned(),
            (Some(o), _) => format!("{o} (gone)"),
            (None, _) => "-".to_owned(),
        };
        out.line(format_args!(
            "  {:>5}  {:<40} {:>9} {:>9} {:>8} {:>9} {:>6}{}",
            cell(&s["shard"]),
            owner,
            cell(&s["head"]),
            cell(&s["cursor"]),
            cell(&s["backlog"]),
            cell(&s["scheduled"]),
            cell(&s["epoch"]),
            group(&s["group"])
        ))?;
        if let Some(t) = s["trouble"].as_object() {
            out.line(format_args!(
                "         retrying since {}: {}",
                t["since"].as_str().unwrap_or(""),
                t["cause"].as_str().unwrap_or("")
            ))?;
        }
    }
    let projections = list("projections");
    out.line(format_args!("projections ({}):", projections.len()))?;
    for p in &projections {
        out.line(format_args!(
            "  {:<30} lag {} events ({})",
            p["name"].as_str().unwrap_or(""),
            p["lag_events"],
            render::secs(std::time::Duration::from_secs_f64(
                p["lag_seconds"].as_f64().unwrap_or(0.0)
            ))
        ))?;
        for f in p["failing"].as_array().unwrap_or(&empty) {
            out.line(format_args!(
                "    failing at shard {} offset {}: {}",
                f["shard"],
                f["offset"],
                f["error"].as_str().unwrap_or("")
            ))?;
        }
    }
    let poison = list("poison");
    out.line(format_args!("poison messages ({}):", poison.len()))?;
    for p in &poison {
        out.line(format_args!(
            "  {} message {} (shard {} offset {}) failed at {}: {}",
            p["entity"].as_str().unwrap_or(""),
            p["message_id"].as_str().unwrap_or(""),
            p["shard"],
            p["offset"],
            p["failed_at"].as_str().unwrap_or(""),
            p["reason"].as_str().unwrap_or("")
        ))?;
    }
    let damaged = list("damaged");
    out.line(format_args!("damaged entries ({}):", damaged.len()))?;
    for d in &damaged {
        out.line(format_args!(
            "  shard {} offset {} recorded at {}: {}",
            d["shard"],
            d["offset"],
            d["recorded_at"].as_str().unwrap_or(""),
            d["reason"].as_str().unwrap_or("")
        ))?;
    }
    let stuck = list("stuck");
    out.line(format_args!("stuck ({}):", stuck.len()))?;
    for s in &stuck {
        out.line(format_args!("  {}", s["cause"].as_str().unwrap_or("")))?;
    }
    Ok(())
}

/// A JSON value as a table cell (so that width and alignment apply).
fn cell(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}
