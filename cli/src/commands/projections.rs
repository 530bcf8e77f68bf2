//! `projections`: status of every projection, and rebuilds.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::Ctx;
use super::status::{projection_json, projection_names};
use crate::error::CliError;
use crate::open::{self, Need};

pub(crate) async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let gathered = async {
        let mut out = Vec::new();
        let cursors = journal.cursors().await?;
        for name in projection_names(&cursors) {
            out.push(projection_json(&journal, name).await?);
        }
        Ok::<_, CliError>(out)
    }
    .await;
    journal.close().await;
    let all = gathered?;
    if ctx.out.json {
        return ctx.out.json_value(&Value::Array(all), false);
    }
    if all.is_empty() {
        return ctx
            .out
            .line("no projection has a checkpoint in this journal");
    }
    for p in &all {
        let failing = p["failing"].as_array().map_or(0, Vec::len);
        ctx.out.line(format_args!(
            "{:<30} lag {} events, oldest unprojected {:.1}s, {}",
            p["name"].as_str().unwrap_or(""),
            p["lag_events"],
            p["lag_seconds"].as_f64().unwrap_or(0.0),
            if failing == 0 {
                "healthy".to_owned()
            } else {
                format!("failing on {failing} shard(s)")
            }
        ))?;
        for f in p["failing"].as_array().into_iter().flatten() {
            ctx.out.line(format_args!(
                "    shard {} stopped at offset {}: {}",
                f["shard"],
                f["offset"],
                f["error"].as_str().unwrap_or("")
            ))?;
        }
    }
    Ok(())
}

pub(crate) async fn rebuild(ctx: &Ctx, name: &str, batch: usize) -> Result<(), CliError> {
    let projection = ctx
        .registry
        .projection_named(name)
        .ok_or_else(|| CliError::UnknownProjection(name.to_owned()))?;
    let journal = open::existing(&ctx.location, Need::Write).await?;
    let bar = if ctx.out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} entries ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {name}"));
    let started = Instant::now();
    let mut total = 0;
    let result = entlog_projections::rebuild(&journal, projection, batch.max(1), |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        total = p.total;
    })
    .await;
    bar.finish_and_clear();
    journal.close().await;
    result?;
    let seconds = started.elapsed().as_secs_f64();
    if ctx.out.json {
        ctx.out.json_value(
            &json!({ "rebuilt": name, "entries": total, "seconds": seconds }),
            false,
        )
    } else {
        ctx.out.line(format_args!(
            "rebuilt {name}: {total} journal entries replayed in {seconds:.2}s"
        ))
    }
}
