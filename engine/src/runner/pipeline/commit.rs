//! The runner's group commit: what every shard handled, in one transaction.
//!
//! ```text
//!   BEGIN
//!   lock the head rows of every shard written to, in shard order; read their epochs
//!   a shard whose epoch is no longer its lease's: fenced, left out
//!   per shard: events, replies, outgoing messages, mailbox cursor  (commit_in)
//!   COMMIT                                   then: wake the shards written to
//! ```
//!
//! The shards of one commit succeed or fail together, except a fenced shard, which is
//! left out before anything is written, so the others commit once. A shard with inline
//! projections commits in a transaction of its own (its projections' writes join it): a
//! failing projection then holds back only its own shard.

use entlog_journal::{
    AnyJournal, CommitReceipt, Journal, JournalError, Lease, ProcessedBatch, Shard,
};

use super::super::inline::Inline;
use crate::error::EngineError;

/// One shard's part of a commit.
pub(crate) struct Part {
    pub lease: Lease,
    /// Commit in a transaction of its own (its shard is looking for a refused message).
    pub alone: bool,
    pub batch: ProcessedBatch,
    /// The shard's inline projections, moved in for the commit and handed back.
    pub inline: Option<Inline>,
}

/// How one shard's part ended.
pub(crate) struct PartDone {
    pub shard: Shard,
    pub result: Result<CommitReceipt, Failure>,
    pub inline: Option<Inline>,
}

/// Why a part did not commit.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The shard was acquired again by another runner: this one must not write to it.
    Fenced,
    /// The transaction failed; `transient` when the database could not be reached (it may
    /// pass), otherwise something in the batch or an inline projection was refused.
    Failed { reason: String, transient: bool },
}

/// Commits `parts` (at most one per shard): together, but for those with inline
/// projections or committing alone.
pub(crate) async fn commit(journal: AnyJournal, parts: Vec<Part>) -> Vec<PartDone> {
    let (own, plain): (Vec<Part>, Vec<Part>) = parts
        .into_iter()
        .partition(|p| p.alone || p.inline.as_ref().is_some_and(|i| !i.is_empty()));
    let mut done = commit_together(&journal, plain).await;
    for part in own {
        done.extend(commit_together(&journal, vec![part]).await);
    }
    done
}

/// Commits `parts` in one transaction.
async fn commit_together(journal: &AnyJournal, mut parts: Vec<Part>) -> Vec<PartDone> {
    if parts.is_empty() {
        return Vec::new();
    }
    parts.sort_by_key(|p| p.lease.shard);
    let plain = |p: &Part| p.inline.as_ref().is_none_or(|i| i.is_empty());
    if parts.len() == 1 && plain(&parts[0]) {
        return vec![alone(journal, parts.remove(0)).await];
    }
    if parts.iter().all(plain) {
        return in_one_call(journal, parts).await;
    }
    let results = match transaction(journal, &mut parts).await {
        Ok(results) => results,
        Err(e) => {
            let transient = matches!(&e, EngineError::Journal(j) if is_transient(j));
            let failure = Failure::Failed {
                reason: e.to_string(),
                transient,
            };
            vec![Err(failure); parts.len()]
        }
    };
    parts
        .into_iter()
        .zip(results)
        .map(|(p, result)| PartDone {
            shard: p.lease.shard,
            result,
            inline: p.inline,
        })
        .collect()
}

/// One shard's part with no inline projections: one call, committed by itself (on
/// PostgreSQL one round trip; the journal checks the lease's fence inside it).
async fn alone(journal: &AnyJournal, mut part: Part) -> PartDone {
    let batch = std::mem::replace(
        &mut part.batch,
        ProcessedBatch {
            shard: part.lease.shard,
            lease: None,
            cursor: None,
            messages: Vec::new(),
        },
    );
    let result = match journal.commit(batch).await {
        Ok(receipt) => Ok(receipt),
        Err(JournalError::Fenced { .. }) => Err(Failure::Fenced),
        Err(e) => Err(Failure::Failed {
            transient: is_transient(&e),
            reason: e.to_string(),
        }),
    };
    PartDone {
        shard: part.lease.shard,
        result,
        inline: part.inline,
    }
}

/// Parts without inline projections: one call for all of them. A fenced part is named by
/// the failed call, left out, and the call made again without it.
async fn in_one_call(journal: &AnyJournal, mut parts: Vec<Part>) -> Vec<PartDone> {
    let mut done = Vec::with_capacity(parts.len());
    loop {
        let batches: Vec<ProcessedBatch> = parts.iter().map(|p| p.batch.clone()).collect();
        match journal.commit_many(batches).await {
            Ok(receipts) => {
                done.extend(parts.into_iter().zip(receipts).map(|(p, r)| PartDone {
                    shard: p.lease.shard,
                    result: Ok(r),
                    inline: p.inline,
                }));
                return done;
            }
            Err(JournalError::Fenced { shard, .. })
                if parts.iter().any(|p| p.lease.shard == shard) =>
            {
                let (fenced, rest): (Vec<Part>, Vec<Part>) =
                    parts.into_iter().partition(|p| p.lease.shard == shard);
                done.extend(fenced.into_iter().map(|p| PartDone {
                    shard: p.lease.shard,
                    result: Err(Failure::Fenced),
                    inline: p.inline,
                }));
                parts = rest;
                if parts.is_empty() {
                    return done;
                }
            }
            Err(e) => {
                let failure = Failure::Failed {
                    transient: is_transient(&e),
                    reason: e.to_string(),
                };
                done.extend(parts.into_iter().map(|p| PartDone {
                    shard: p.lease.shard,
                    result: Err(failure.clone()),
                    inline: p.inline,
                }));
                return done;
            }
        }
    }
}

/// The transaction: per part its receipt or `Fenced`; an error fails every part.
async fn transaction(
    journal: &AnyJournal,
    parts: &mut [Part],
) -> Result<Vec<Result<CommitReceipt, Failure>>, EngineError> {
    let mut tx = journal.begin().await?;
    let mut shards: Vec<Shard> = Vec::new();
    for p in parts.iter() {
        shards.push(p.lease.shard);
        for m in &p.batch.messages {
            shards.extend(m.outgoing.iter().map(|o| journal_shard(journal, &o.entity)));
        }
    }
    let epochs = tx.lock_shards(&shards).await?;
    let mut results = Vec::with_capacity(parts.len());
    let mut receipts = Vec::new();
    for p in parts.iter_mut() {
        let held = epochs
            .iter()
            .any(|&(s, e)| s == p.lease.shard && e == p.lease.epoch);
        if !held {
            results.push(Err(Failure::Fenced));
            continue;
        }
        let batch = std::mem::replace(
            &mut p.batch,
            ProcessedBatch {
                shard: p.lease.shard,
                lease: None,
                cursor: None,
                messages: Vec::new(),
            },
        );
        let receipt = match p.inline.as_mut() {
            Some(inline) if !inline.is_empty() => inline.commit_in(journal, &mut tx, batch).await?,
            _ => journal.commit_in(&mut tx, batch).await?,
        };
        receipts.push((p.lease.shard, receipt.clone()));
        results.push(Ok(receipt));
    }
    tx.commit().await?;
    for p in parts.iter_mut() {
        if let Some(inline) = p.inline.as_mut() {
            inline.committed();
        }
    }
    for (shard, receipt) in &receipts {
        journal.wake_after(*shard, receipt);
    }
    Ok(results)
}

fn journal_shard(journal: &AnyJournal, entity: &entlog_journal::EntityKey) -> Shard {
    use entlog_journal::Journal as _;
    journal.shard_of(entity)
}

/// Whether an error may pass by itself: the database unreachable or busy, a dropped
/// connection, a deadlock or serialization failure. Anything else is a refusal that
/// repeating the same commit would meet again.
pub(crate) fn is_transient(e: &JournalError) -> bool {
    let JournalError::Persistence(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), serialization failure and deadlock
            // (40001, 40P01), insufficient resources (53), operator intervention (57).
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code.starts_with("53")
                || code.starts_with("57")
                || matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
        }
        _ => false,
    }
}
