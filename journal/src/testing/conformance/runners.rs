//! Lock sessions register their runners as live.

use super::*;

/// A lock session registers its runner as live until it closes; one id, one session.
pub async fn runner_registry<B: Backend>(b: &B) {
    let j = b.fresh(2).await;
    assert!(j.live_runners().await.expect("live").is_empty());
    let a = j.lock_session("runner-a").await.expect("session a");
    let c = j.lock_session("runner-c").await.expect("session c");
    let live = live_names(&j).await;
    assert_eq!(live, ["runner-a", "runner-c"]);
    let err = j.lock_session("runner-a").await.expect_err("same id twice");
    assert!(
        matches!(err, JournalError::RunnerInUse { .. }),
        "got {err:?}"
    );
    let lease = a.try_acquire(1).await.expect("acquire").expect("free");
    a.close().await.expect("close");
    // A closed session's locks are freed by the server once its backend has exited, a
    // moment after the client closed: wait for that, within a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (live, taken) = loop {
        let live = live_names(&j).await;
        let taken = match live.as_slice() {
            [only] if only == "runner-c" => c.try_acquire(1).await.expect("acquire"),
            _ => None,
        };
        if let Some(taken) = taken {
            break (live, taken);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner-a's locks were not released by close: live {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(live, ["runner-c"]);
    assert!(taken.epoch > lease.epoch);
    assert_eq!(
        j.shard_owner(1).await.expect("owner").as_deref(),
        Some("runner-c")
    );
    assert_eq!(
        j.shard_owner(0).await.expect("owner"),
        None,
        "never acquired"
    );
    let again = j.lock_session("runner-a").await.expect("id free again");
    drop(again);
    let err = j.lock_session("").await.expect_err("empty runner id");
    assert!(matches!(err, JournalError::Empty { .. }), "got {err:?}");
}

/// The ids of the live runners, in order.
async fn live_names<J: Journal>(j: &J) -> Vec<String> {
    j.live_runners()
        .await
        .expect("live")
        .into_iter()
        .map(|r| r.runner)
        .collect()
}
