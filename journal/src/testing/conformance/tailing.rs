//! Invariant 6: a tailer sees every entry once, in order, and is woken by appends.

use super::*;

/// Invariant 6: appenders committing concurrently, in random order and with random delays,
/// while a tailer follows the shard with `offset > last seen`: the tailer sees every entry
/// exactly once, at consecutive offsets. `rounds` repetitions, each on a fresh shard.
pub async fn no_skipped_entries<B: Backend>(
    b: &B,
    rounds: usize,
    appenders: u32,
    per_appender: u32,
) {
    let shards = rounds.max(1) as u32;
    let j = b.fresh(shards).await;
    for round in 0..rounds {
        let shard = round as u32;
        let ids: Vec<String> = (0..8)
            .map(|i| id_in_shard(&format!("r{round}-e{i}"), shard, shards))
            .collect();
        let total = (appenders * per_appender) as usize;
        let tailer = {
            let j = j.clone();
            tokio::spawn(async move {
                let mut last = 0u64;
                let mut seen = Vec::with_capacity(total);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.len() < total {
                    assert!(tokio::time::Instant::now() < deadline, "tailer timed out");
                    let batch = j.read_shard(shard, last, 64, None).await.expect("read");
                    if batch.is_empty() {
                        j.wait_for_entries(shard, Duration::from_millis(20)).await;
                        continue;
                    }
                    for e in batch {
                        assert_eq!(e.offset, last + 1, "tailer saw a gap: skipped entry");
                        last = e.offset;
                        seen.push(e.payload.decode::<Cmd>().expect("decode"));
                    }
                }
                seen
            })
        };
        let writers: Vec<_> = (0..appenders)
            .map(|w| {
                let (j, ids) = (j.clone(), ids.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while n < per_appender {
                        let size = rand::rng().random_range(1..=3).min(per_appender - n);
                        let batch = (n..n + size)
                            .map(|k| msg(&ids[((w + k) % 8) as usize], w, k))
                            .collect();
                        j.append(batch).await.expect("append");
                        n += size;
                        let pause = rand::rng().random_range(0..2_000);
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let seen = tailer.await.expect("tailer");
        let distinct: HashSet<(u32, u32)> = seen.iter().map(|c| (c.sender, c.n)).collect();
        assert_eq!(
            distinct.len(),
            total,
            "round {round}: every entry exactly once"
        );
        for w in 0..appenders {
            for k in 0..per_appender {
                assert!(distinct.contains(&(w, k)), "round {round}: missing {w}/{k}");
            }
        }
        assert_eq!(j.head(shard).await.expect("head"), total as u64);
    }
}

/// A tailer waiting on a shard is woken by an append to it.
pub async fn wakeups<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    let e = key("w");
    let shard = j.shard_of(&e);
    // Drain any stored permit, then wait while another task appends.
    j.wait_for_entries(shard, Duration::from_millis(10)).await;
    let waiter = {
        let j = j.clone();
        tokio::spawn(async move { j.wait_for_entries(shard, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    j.append(vec![msg("w", 0, 0)]).await.expect("append");
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before the poll timeout")
        .expect("task");
    assert!(woken);
}
