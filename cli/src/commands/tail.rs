//! `tail`: follow new journal entries of a shard, an entity type or one entity.

use std::time::Duration;

use entlog_journal::{AnyJournal, EntityKey, Journal};

use super::Ctx;
use crate::args::TailArgs;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::render;

/// Entries read per shard per round.
const PAGE: usize = 500;

pub(crate) async fn run(ctx: &Ctx, args: TailArgs) -> Result<(), CliError> {
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let result = tokio::select! {
        r = follow(ctx, &journal, args) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    journal.close().await;
    result
}

async fn follow(ctx: &Ctx, journal: &AnyJournal, args: TailArgs) -> Result<(), CliError> {
    let entity: Option<EntityKey> = args.entity.as_deref().map(open::entity).transpose()?;
    let shards: Vec<u32> = match (&entity, args.shard) {
        (Some(key), _) => vec![journal.shard_of(key)],
        (None, Some(s)) if s < journal.shard_count() => vec![s],
        (None, Some(s)) => {
            return Err(CliError::BadArgument {
                what: "shard",
                value: s.to_string(),
                reason: format!("the journal has shards 0..{}", journal.shard_count()),
            });
        }
        (None, None) => (0..journal.shard_count()).collect(),
    };
    let mut after = Vec::with_capacity(shards.len());
    for &shard in &shards {
        after.push(if args.from_start {
            0
        } else {
            journal.head(shard).await?
        });
    }
    let wanted = |e: &entlog_journal::Entry| match (&entity, &args.entity_type) {
        (Some(key), _) => &e.entity == key,
        (None, Some(t)) => e.entity.entity_type() == t,
        (None, None) => true,
    };
    let mut printed = 0u64;
    let poll = Duration::from_millis(args.poll_ms.max(1));
    loop {
        let mut saw = false;
        for (i, &shard) in shards.iter().enumerate() {
            let page = journal.read_shard(shard, after[i], PAGE, None).await?;
            saw |= page.len() == PAGE;
            for e in page {
                after[i] = e.offset;
                if !wanted(&e) {
                    continue;
                }
                if ctx.out.json {
                    ctx.out
                        .json_value(&render::entry_json(&ctx.registry, &e), true)?;
                } else {
                    ctx.out.line(render::entry_text(&ctx.registry, &e))?;
                }
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
        if !saw {
            match shards.as_slice() {
                [one] => {
                    journal.wait_for_entries(*one, poll).await;
                }
                _ => tokio::time::sleep(poll).await,
            }
        }
    }
}
