//! A journal written before replies were keyed by message id first (migration 0009)
//! opens, is migrated, and keeps every reply: lookups, dedup with the stored reply, an
//! entity's replies for `inspect`, and a second reply to one message still refused.
#![allow(clippy::unwrap_used)]

use entlog_journal::testing::database_url;
use entlog_journal::{
    AnyJournal, AppendOutcome, EntityKey, Journal, JournalError, NewMessage, Payload, PgJournal,
    PgOptions, Processed, ProcessedBatch, SqliteJournal, SqliteOptions,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use uuid::Uuid;

fn key(id: &str) -> EntityKey {
    EntityKey::new("counter", id).unwrap()
}

fn msg(id: &str, n: i64) -> NewMessage {
    NewMessage::new(key(id), Payload::encode("test.Cmd", 1, &n).unwrap())
}

/// Appends two messages to `a` and one to `b`, and answers the first of `a` and `b`'s.
/// Returns (message, offset, answered) in append order.
async fn write<J: Journal>(j: &J) -> Vec<(NewMessage, u64, bool)> {
    let sent = vec![
        (msg("a", 1), true),
        (msg("a", 2), false),
        (msg("b", 3), true),
    ];
    let mut out = Vec::new();
    for (m, answered) in sent {
        let offset = match &j.append(vec![m.clone()]).await.unwrap()[0] {
            AppendOutcome::Appended { offset, .. } => *offset,
            other => panic!("expected Appended, got {other:?}"),
        };
        out.push((m, offset, answered));
    }
    for (m, offset, answered) in &out {
        if *answered {
            j.commit(batch(j, m, *offset)).await.unwrap();
        }
    }
    out
}

fn batch<J: Journal>(j: &J, m: &NewMessage, offset: u64) -> ProcessedBatch {
    ProcessedBatch {
        shard: entlog_journal::shard_of(m.entity.entity_id(), j.shard_count()),
        lease: None,
        cursor: None,
        messages: vec![Processed {
            entity: m.entity.clone(),
            message_id: m.message_id,
            offset,
            events: vec![],
            reply: Payload::encode("test.Reply", 1, &(offset as i64 * 10)).unwrap(),
            outgoing: vec![],
        }],
    }
}

/// What must hold after the upgrade.
async fn check(j: &AnyJournal, written: &[(NewMessage, u64, bool)]) {
    for (m, offset, answered) in written {
        let stored = j.reply(&m.entity, m.message_id).await.unwrap();
        assert_eq!(stored.is_some(), *answered, "reply of {}", m.message_id);
        if let Some(r) = stored {
            assert_eq!(r.payload.decode::<i64>().unwrap(), *offset as i64 * 10);
            assert_eq!(r.offset, *offset);
        }
        // Sent again: a duplicate, with its reply when it has one.
        match &j.append(vec![m.clone()]).await.unwrap()[0] {
            AppendOutcome::Duplicate { reply, .. } => assert_eq!(reply.is_some(), *answered),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }
    // inspect: the replies of `a` only, in offset order.
    let records = j.entity_records(&key("a")).await.unwrap();
    let ids: Vec<Uuid> = records.replies.iter().map(|r| r.message_id).collect();
    assert_eq!(ids, vec![written[0].0.message_id]);
    assert_eq!(records.entries.len(), 2, "both messages of a");
    // A second reply to an answered message is refused, as before.
    let (m, offset, _) = &written[0];
    let again = j.commit(batch(j, m, *offset)).await;
    assert!(
        matches!(again, Err(JournalError::SeqConflict { .. })),
        "{again:?}"
    );
    // The unanswered one can still be answered.
    let (m, offset, _) = &written[1];
    j.commit(batch(j, m, *offset)).await.unwrap();
    assert!(j.reply(&m.entity, m.message_id).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_replies_survive_the_upgrade() {
    let dir = std::env::temp_dir().join(format!("entlog-upgrade-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    let j = SqliteJournal::open(SqliteOptions::new(&path).shard_count(4))
        .await
        .unwrap();
    let written = write(&j).await;
    // Back to the layout before 0009: a rowid table keyed by entity first.
    sqlx::raw_sql(
        r#"CREATE TABLE replies_old (
               entity_type TEXT NOT NULL, entity_id TEXT NOT NULL, message_id BLOB NOT NULL,
               shard INTEGER NOT NULL, "offset" INTEGER NOT NULL, type_tag TEXT NOT NULL,
               schema_version INTEGER NOT NULL, payload BLOB NOT NULL, crc INTEGER NOT NULL,
               created_at INTEGER NOT NULL,
               PRIMARY KEY (entity_type, entity_id, message_id));
           INSERT INTO replies_old SELECT entity_type, entity_id, message_id, shard, "offset",
               type_tag, schema_version, payload, crc, created_at FROM replies;
           DROP TABLE replies;
           ALTER TABLE replies_old RENAME TO replies;
           DELETE FROM _sqlx_migrations WHERE version = 9;"#,
    )
    .execute(j.writer())
    .await
    .unwrap();
    j.close().await;
    drop(j);

    let j = SqliteJournal::open(SqliteOptions::new(&path).shard_count(4))
        .await
        .unwrap();
    let key_columns: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM pragma_index_info('sqlite_autoindex_replies_1') ORDER BY seqno",
    )
    .fetch_all(j.writer())
    .await
    .unwrap();
    assert_eq!(key_columns, ["message_id", "entity_type", "entity_id"]);
    check(&AnyJournal::Sqlite(j.clone()), &written).await;
    j.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_replies_survive_the_upgrade() {
    let url = database_url().await;
    let schema = format!("t_{}", Uuid::now_v7().simple());
    let options = || {
        PgOptions::new(&url)
            .schema(&schema)
            .shard_count(4)
            .max_connections(4)
    };
    let j = PgJournal::open(options()).await.unwrap();
    let written = write(&j).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        r#"ALTER TABLE "{schema}".replies DROP CONSTRAINT replies_pkey;
           ALTER TABLE "{schema}".replies ADD CONSTRAINT replies_pkey
               PRIMARY KEY (entity_type, entity_id, message_id);
           DELETE FROM "{schema}"._sqlx_migrations WHERE version = 9;"#
    )))
    .execute(j.pool())
    .await
    .unwrap();
    drop(j);

    let j = PgJournal::open(options()).await.unwrap();
    let key_columns: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        r#"SELECT a.attname::text FROM pg_index i
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = '"{schema}".replies'::regclass AND i.indisprimary
            ORDER BY k.n"#
    )))
    .fetch_all(j.pool())
    .await
    .unwrap();
    assert_eq!(key_columns, ["message_id", "entity_type", "entity_id"]);
    check(&AnyJournal::Postgres(j.clone()), &written).await;
    drop(j);
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP SCHEMA "{schema}" CASCADE"#)))
        .execute(&mut admin)
        .await
        .unwrap();
}
