//! Message headers as the CLI shows them: `inspect` (text and `--json`) and `tail`.

use entlog::journal::{Access, SqliteOptions};
use entlog::{AnyJournal, EntityKey, SqliteJournal};

use crate::common::block_on;
use crate::common::db::Db;
use crate::entlog;

/// `inspect` shows the headers a message was sent with, in text and in `--json`.
#[test]
fn inspect_shows_headers() {
    use entlog::journal::{Journal, NewMessage, Payload};
    let db = Db::sqlite();
    db.ok(&entlog(), &["migrate", "--shards", "2"]);
    block_on(async {
        let journal: AnyJournal =
            SqliteJournal::open_existing(SqliteOptions::new(&db.db), Access::ReadWrite)
                .await
                .unwrap()
                .into();
        let mut m = NewMessage::new(
            EntityKey::new("counter", "h").unwrap(),
            Payload::encode("counter.Add", 1, &1i64).unwrap(),
        );
        m.headers.insert("tenant".into(), "acme".into());
        let plain = NewMessage::new(
            EntityKey::new("counter", "h").unwrap(),
            Payload::encode("counter.Add", 1, &2i64).unwrap(),
        );
        journal.append(vec![m, plain]).await.unwrap();
        journal.close().await;
    });
    let shown = db.json_ok(&entlog(), &["inspect", "counter/h"]);
    assert_eq!(
        shown["entries"][0]["headers"],
        serde_json::json!({"tenant": "acme"})
    );
    assert_eq!(shown["entries"][1]["headers"], serde_json::json!({}));
    let text = db.ok(&entlog(), &["inspect", "counter/h"]);
    assert!(text.contains(r#"headers {"tenant":"acme"}"#), "{text}");
    let tail = db.ok(&entlog(), &["tail", "--from-start", "--count", "1"]);
    assert!(tail.contains(r#"headers {"tenant":"acme"}"#), "{tail}");
}
