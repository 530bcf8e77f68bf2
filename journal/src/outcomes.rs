//! What callers are told after a write: an append's outcomes and a commit's receipts, from
//! the placements the backend reported (`Placed`, in input order). A duplicate's stored
//! reply is fetched here (the rare path), so `columns.rs` stays a pure layout.

use crate::columns::{BatchColumns, EntryColumns, ManyColumns, Placed, Source};
use crate::envelope::EntityKey;
use crate::error::{JournalError, Result};
use crate::journal::Journal;
use crate::records::{AppendOutcome, CommitReceipt};
use crate::shard::Shard;

/// Outcomes of an append in the caller's order, repeats reported as duplicates of the
/// first occurrence.
pub(crate) async fn append_outcomes<J: Journal>(
    journal: &J,
    cols: &EntryColumns,
    placed: &[Placed],
    sources: &[Source],
) -> Result<Vec<AppendOutcome>> {
    let firsts = outcomes(journal, cols, placed, 0..cols.len()).await?;
    sources
        .iter()
        .map(|s| match *s {
            Source::Row(i) => firsts
                .get(i)
                .cloned()
                .ok_or_else(|| short_result(placed.len())),
            Source::RepeatOf(i) => match firsts.get(i) {
                Some(AppendOutcome::Appended { shard, offset }) => Ok(AppendOutcome::Duplicate {
                    shard: *shard,
                    offset: Some(*offset),
                    reply: None,
                }),
                Some(AppendOutcome::Scheduled { shard }) => Ok(AppendOutcome::Duplicate {
                    shard: *shard,
                    offset: None,
                    reply: None,
                }),
                Some(dup) => Ok(dup.clone()),
                None => Err(short_result(placed.len())),
            },
        })
        .collect()
}

fn short_result(n: usize) -> JournalError {
    JournalError::Persistence(sqlx::Error::Protocol(format!(
        "the append returned {n} rows, fewer than the entries sent"
    )))
}

/// Turns placements of the messages in `range` into outcomes, fetching the stored
/// replies of duplicates (the rare path).
pub(crate) async fn outcomes<J: Journal>(
    journal: &J,
    entries: &EntryColumns,
    placed: &[Placed],
    range: std::ops::Range<usize>,
) -> Result<Vec<AppendOutcome>> {
    let mut out = Vec::with_capacity(range.len());
    for i in range {
        let p = placed.get(i).ok_or_else(|| short_result(placed.len()))?;
        let shard = entries.shard[i] as Shard;
        out.push(if p.duplicate {
            let entity = EntityKey::from_stored(
                entries.entity_type[i].clone(),
                entries.entity_id[i].clone(),
            );
            AppendOutcome::Duplicate {
                shard,
                offset: p.offset,
                reply: journal.reply(&entity, entries.message_id[i]).await?,
            }
        } else if p.scheduled {
            AppendOutcome::Scheduled { shard }
        } else {
            AppendOutcome::Appended {
                shard,
                offset: p.offset.ok_or_else(|| short_result(placed.len()))?,
            }
        });
    }
    Ok(out)
}

/// Splits a batch's placements back into per-message event offsets and outgoing outcomes.
pub(crate) async fn receipt<J: Journal>(
    journal: &J,
    cols: &BatchColumns,
    placed: &[Placed],
) -> Result<CommitReceipt> {
    let mut receipt = CommitReceipt {
        created_at: cols.created_at,
        ..CommitReceipt::default()
    };
    let mut at = 0;
    for &(events, outgoing) in &cols.layout {
        let offsets = placed
            .get(at..at + events)
            .ok_or_else(|| short_result(placed.len()))?
            .iter()
            .map(|p| p.offset.ok_or_else(|| short_result(placed.len())))
            .collect::<Result<Vec<_>>>()?;
        receipt.event_offsets.push(offsets);
        at += events;
        receipt
            .outgoing
            .push(outcomes(journal, &cols.entries, placed, at..at + outgoing).await?);
        at += outgoing;
    }
    Ok(receipt)
}

/// Each batch's receipt, in batch order, from the placements of all of `many`'s entries.
pub(crate) async fn receipts<J: Journal>(
    journal: &J,
    many: &ManyColumns,
    placed: &[Placed],
) -> Result<Vec<CommitReceipt>> {
    let mut receipts = Vec::with_capacity(many.parts.len());
    let mut at = 0;
    for part in &many.parts {
        let n = part.cols.entries.len();
        let mine = placed
            .get(at..at + n)
            .ok_or_else(|| short_result(placed.len()))?;
        at += n;
        receipts.push(receipt(journal, &part.cols, mine).await?);
    }
    Ok(receipts)
}
