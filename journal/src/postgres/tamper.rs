//! Damage for the conformance suite: edits rows behind the journal's back.

use crate::envelope::EntityKey;
use crate::testing::conformance::Tamper;

use super::PgJournal;

impl Tamper for PgJournal {
    async fn flip_payload_bit(&self, shard: u32, offset: u64) {
        let n = sqlx::query(
            r#"UPDATE journal SET payload = set_byte(payload, 0, get_byte(payload, 0) # 1)
                WHERE shard = $1 AND "offset" = $2"#,
        )
        .bind(shard as i32)
        .bind(offset as i64)
        .execute(self.pool())
        .await
        .expect("tamper")
        .rows_affected();
        assert_eq!(n, 1, "no entry at {shard}/{offset}");
    }

    async fn rewrite_entity_id(&self, shard: u32, offset: u64, id: &str) {
        sqlx::query(r#"UPDATE journal SET entity_id = $3 WHERE shard = $1 AND "offset" = $2"#)
            .bind(shard as i32)
            .bind(offset as i64)
            .bind(id)
            .execute(self.pool())
            .await
            .expect("tamper");
    }

    async fn rewrite_headers(&self, shard: u32, offset: u64, headers: Option<Vec<u8>>) {
        sqlx::query(r#"UPDATE journal SET headers = $3 WHERE shard = $1 AND "offset" = $2"#)
            .bind(shard as i32)
            .bind(offset as i64)
            .bind(headers)
            .execute(self.pool())
            .await
            .expect("tamper");
    }

    async fn set_kind_code(&self, shard: u32, offset: u64, code: i16) {
        sqlx::query(r#"UPDATE journal SET kind = $3 WHERE shard = $1 AND "offset" = $2"#)
            .bind(shard as i32)
            .bind(offset as i64)
            .bind(code)
            .execute(self.pool())
            .await
            .expect("tamper");
    }

    async fn flip_snapshot_bit(&self, entity: &EntityKey) {
        sqlx::query(
            "UPDATE snapshots SET payload = set_byte(payload, 0, get_byte(payload, 0) # 1)
              WHERE entity_type = $1 AND entity_id = $2",
        )
        .bind(entity.entity_type())
        .bind(entity.entity_id())
        .execute(self.pool())
        .await
        .expect("tamper");
    }

    async fn set_format_version(&self, version: u32) {
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'format_version'")
            .bind(version.to_string())
            .execute(self.pool())
            .await
            .expect("tamper");
    }
}
