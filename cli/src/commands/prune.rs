//! `prune`: retention for processed messages and their replies.

use entlog_engine::MAILBOX;
use entlog_journal::{Journal as _, Timestamp};
use serde_json::json;

use super::Ctx;
use crate::error::CliError;
use crate::open::{self, Need};
use crate::render;

pub(crate) async fn run(ctx: &Ctx, older_than: &str) -> Result<(), CliError> {
    let age = humantime::parse_duration(older_than).map_err(|e| CliError::BadArgument {
        what: "age",
        value: older_than.to_owned(),
        reason: format!("{e} (expected e.g. 30d, 12h, 0s)"),
    })?;
    let journal = open::existing(&ctx.location, Need::Write).await?;
    let before = Timestamp(
        journal
            .now()
            .as_micros()
            .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)),
    );
    let report = journal.prune(MAILBOX, before).await;
    journal.close().await;
    let report = report?;
    if ctx.out.json {
        ctx.out.json_value(
            &json!({
                "processed_before": render::time(before),
                "messages": report.messages,
                "replies": report.replies,
            }),
            false,
        )
    } else {
        ctx.out.line(format_args!(
            "pruned {} messages and {} replies processed before {}",
            report.messages,
            report.replies,
            render::time(before)
        ))?;
        ctx.out.line(format_args!(
            "dedup window: a message id is remembered for at least {} after it was processed",
            humantime::format_duration(age)
        ))
    }
}
