//! Damage for the conformance suite: edits rows behind the journal's back, with the same
//! SQL on both backends.

use crate::any::AnyJournal;
use crate::envelope::EntityKey;
use crate::pool::{Pool, on_pool};
use crate::postgres::PgJournal;
use crate::sqlite::SqliteJournal;
use crate::testing::conformance::Tamper;

/// Runs `UPDATE journal SET $set WHERE (shard, offset) = ($1, $2)` with `$value` as `$3`,
/// and checks that it found the entry.
macro_rules! update_entry {
    ($pool:expr, $set:literal, $shard:expr, $offset:expr, $value:expr) => {
        on_pool!($pool, p => {
            let n = sqlx::query(concat!(
                "UPDATE journal SET ",
                $set,
                r#" WHERE shard = $1 AND "offset" = $2"#
            ))
            .bind($shard as i32)
            .bind($offset as i64)
            .bind($value)
            .execute(p)
            .await
            .expect("tamper")
            .rows_affected();
            assert_eq!(n, 1, "no entry at {}/{}", $shard, $offset);
        })
    };
}

/// `bytes` with the lowest bit of its first byte flipped.
fn flipped(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(b) = bytes.first_mut() {
        *b ^= 1;
    }
    bytes
}

async fn flip_payload_bit(pool: Pool<'_>, shard: u32, offset: u64) {
    let payload: Vec<u8> = on_pool!(pool, p => {
        sqlx::query_scalar(r#"SELECT payload FROM journal WHERE shard = $1 AND "offset" = $2"#)
            .bind(shard as i32)
            .bind(offset as i64)
            .fetch_one(p)
            .await
            .expect("tamper")
    });
    update_entry!(pool, "payload = $3", shard, offset, flipped(payload));
}

async fn flip_snapshot_bit(pool: Pool<'_>, entity: &EntityKey) {
    on_pool!(pool, p => {
        let payload: Vec<u8> = sqlx::query_scalar(
            "SELECT payload FROM snapshots WHERE entity_type = $1 AND entity_id = $2",
        )
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .fetch_one(p)
        .await
        .expect("tamper");
        sqlx::query("UPDATE snapshots SET payload = $3 WHERE entity_type = $1 AND entity_id = $2")
            .bind(entity.entity_type())
            .bind(entity.entity_id())
            .bind(flipped(payload))
            .execute(p)
            .await
            .expect("tamper");
    })
}

async fn set_format_version(pool: Pool<'_>, version: u32) {
    on_pool!(pool, p => {
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'format_version'")
            .bind(version.to_string())
            .execute(p)
            .await
            .expect("tamper");
    })
}

/// Implements [`Tamper`] for a backend through its pool of bookkeeping writes.
macro_rules! tamper_through_writes {
    ($journal:ty) => {
        impl Tamper for $journal {
            async fn flip_payload_bit(&self, shard: u32, offset: u64) {
                flip_payload_bit(self.writes(), shard, offset).await
            }

            async fn rewrite_entity_id(&self, shard: u32, offset: u64, id: &str) {
                update_entry!(self.writes(), "entity_id = $3", shard, offset, id)
            }

            async fn rewrite_headers(&self, shard: u32, offset: u64, headers: Option<Vec<u8>>) {
                update_entry!(self.writes(), "headers = $3", shard, offset, headers)
            }

            async fn set_kind_code(&self, shard: u32, offset: u64, code: i16) {
                update_entry!(self.writes(), "kind = $3", shard, offset, code)
            }

            async fn flip_snapshot_bit(&self, entity: &EntityKey) {
                flip_snapshot_bit(self.writes(), entity).await
            }

            async fn set_format_version(&self, version: u32) {
                set_format_version(self.writes(), version).await
            }
        }
    };
}

tamper_through_writes!(PgJournal);
tamper_through_writes!(SqliteJournal);
tamper_through_writes!(AnyJournal);

impl AnyJournal {
    /// The pool of the backend's bookkeeping writes.
    fn writes(&self) -> Pool<'_> {
        match self {
            AnyJournal::Postgres(j) => j.writes(),
            AnyJournal::Sqlite(j) => j.writes(),
        }
    }
}
