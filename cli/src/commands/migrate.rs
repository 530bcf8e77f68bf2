//! `migrate`: create a journal, or bring an existing one up to this build's schema.

use entlog_journal::{FORMAT_VERSION, Journal};
use serde_json::json;

use super::Ctx;
use crate::error::CliError;
use crate::open;

pub(crate) async fn run(ctx: &Ctx, shards: Option<u32>) -> Result<(), CliError> {
    let journal = open::migrate(&ctx.location, shards).await?;
    let count = journal.shard_count();
    journal.close().await;
    if ctx.out.json {
        ctx.out.json_value(
            &json!({ "ready": true, "shards": count, "format_version": FORMAT_VERSION }),
            false,
        )
    } else {
        ctx.out.line(format_args!(
            "journal ready: {} shards, format version {FORMAT_VERSION}, every migration applied",
            count
        ))
    }
}
