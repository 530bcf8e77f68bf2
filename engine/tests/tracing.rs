//! Log lines carry the message they are about: whatever is logged while a message is
//! handled — by the engine or by the handler — is inside a `handle` span naming the
//! entity, message id, shard and offset, and an ask's own lines inside an `ask` span.
//! The spans are at warn level: a subscriber that shows only warnings and errors (as the
//! examples install) still names the message. One test in this binary: it installs the
//! process-wide subscriber.
#![allow(clippy::unwrap_used)]

mod common;

use common::logs::Captured;
use common::*;
use entlog_engine::{Cluster, EngineError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_name_their_message() {
    let out = Captured::install();

    let dir = std::env::temp_dir().join(format!("entlog-tracing-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("t.db"))
        .config(
            config(4)
                .max_attempts(2)
                .retry_backoff(std::time::Duration::from_millis(1)),
        )
        .entity(Counter)
        .start()
        .await
        .unwrap();
    let c = cluster.entity::<Counter>("traced");
    let id = uuid::Uuid::now_v7();
    let err = c.ask_with_id(id, Cmd::Poison).await.unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");
    cluster.shutdown().await.unwrap();

    // The handler's panic is retried once, and the warning says which message it was.
    let lines = out.lines();
    let retried: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("handler panicked; retrying"))
        .collect();
    assert_eq!(retried.len(), 1, "{lines:#?}");
    let line = retried[0];
    for field in [
        "handle{".to_owned(),
        "entity=counter/traced".to_owned(),
        format!("message_id={id}"),
        "shard=".to_owned(),
        "offset=1".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing in: {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
