//! What both backends time through the `Journal` trait: appends of fresh messages
//! (`time_appends`) and paged reads of one shard (`time_reads`, after `fill_shard`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use entlog_journal::{AppendOutcome, Journal};

use crate::READ_PAGE;
use crate::common::Gen;

fn check_appended(outcomes: &[AppendOutcome], n: usize) {
    assert_eq!(
        outcomes.len(),
        n,
        "append returned {} outcomes",
        outcomes.len()
    );
    for o in outcomes {
        assert!(
            matches!(o, AppendOutcome::Appended { .. }),
            "append of fresh messages returned {o:?}"
        );
    }
}

/// Times `n`-message appends: messages are built outside the timed part.
pub(crate) async fn time_appends<J: Journal>(
    journal: &J,
    gen_: &Mutex<Gen>,
    n: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let batch = gen_.lock().unwrap().batch(n);
        let start = Instant::now();
        let outcomes = journal.append(batch).await.unwrap();
        total += start.elapsed();
        check_appended(&outcomes, n);
    }
    total
}

/// Times reading all of shard 0 (`entries` entries) in pages, every checksum verified.
pub(crate) async fn time_reads<J: Journal>(journal: &J, entries: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut after = 0u64;
        let mut seen = 0usize;
        while seen < entries {
            let page = journal.read_shard(0, after, READ_PAGE, None).await.unwrap();
            assert!(
                !page.is_empty(),
                "shard ended after {seen} of {entries} entries"
            );
            after = page.last().unwrap().offset;
            seen += page.len();
        }
        assert_eq!(seen, entries);
    }
    start.elapsed()
}

/// Appends `entries` messages to shard 0 of `journal` in batches of 256.
pub(crate) async fn fill_shard<J: Journal>(journal: &J, entries: usize) {
    let mut g = Gen::for_shard(0, journal.shard_count());
    let mut left = entries;
    while left > 0 {
        let n = left.min(256);
        let outcomes = journal.append(g.batch(n)).await.unwrap();
        check_appended(&outcomes, n);
        left -= n;
    }
    assert_eq!(journal.head(0).await.unwrap(), entries as u64);
}
