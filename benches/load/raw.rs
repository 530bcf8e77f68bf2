//! Scenario 6, the raw PostgreSQL baseline: the rows a persisted ask writes (message,
//! event, reply), with payloads sampled from scenario 1's journal, inserted with
//! multi-row `INSERT … SELECT … FROM UNNEST` into plain copies of the journal's tables,
//! `RAW_CONNECTIONS` connections, `RAW_BATCH` asks' worth per transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use entlog_journal::shard_of;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::closed_loop::entity_ids;
use crate::common::{Settings, drop_schema, exec, micros_since_epoch, schema_name};
use crate::{RAW_BATCH, RAW_CONNECTIONS, SHARDS};

/// One sample row's payload columns.
type Sample = (String, i32, Vec<u8>, i64);

async fn sample(admin: &PgPool, sql: String) -> Result<Sample, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(sql)).fetch_one(admin).await
}

/// Multi-row inserts of (message, event, reply) rows like the engine's, into plain copies
/// of the journal's `journal` and `replies` tables; returns asks' worth per second.
pub(crate) async fn raw_baseline(
    url: &str,
    admin: &PgPool,
    source: &str,
    s: &Settings,
) -> Result<f64, sqlx::Error> {
    let raw = schema_name("raw");
    drop_schema(admin, &raw).await;
    exec(admin, format!("CREATE SCHEMA \"{raw}\"")).await;
    exec(
        admin,
        format!("CREATE TABLE \"{raw}\".journal (LIKE \"{source}\".journal INCLUDING ALL)"),
    )
    .await;
    exec(
        admin,
        format!("CREATE TABLE \"{raw}\".replies (LIKE \"{source}\".replies INCLUDING ALL)"),
    )
    .await;
    // Real payloads from scenario 1, so that the rows have the engine's sizes.
    let cols = "type_tag, schema_version, payload, crc";
    let message = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".journal WHERE kind = 1 LIMIT 1"),
    )
    .await?;
    let event = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".journal WHERE kind = 2 LIMIT 1"),
    )
    .await?;
    let reply = sample(
        admin,
        format!("SELECT {cols} FROM \"{source}\".replies LIMIT 1"),
    )
    .await?;
    let samples = Arc::new((message, event, reply));

    let insert_journal: Arc<str> = format!(
        r#"INSERT INTO "{raw}".journal
            (shard, "offset", kind, entity_type, entity_id, seq, message_id, type_tag,
             schema_version, payload, crc, deliver_at, created_at)
           SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::SMALLINT[], $4::TEXT[],
                                $5::TEXT[], $6::BIGINT[], $7::UUID[], $8::TEXT[],
                                $9::INTEGER[], $10::BYTEA[], $11::BIGINT[], $12::BIGINT[],
                                $13::BIGINT[])"#
    )
    .into();
    let insert_replies: Arc<str> = format!(
        r#"INSERT INTO "{raw}".replies
            (entity_type, entity_id, message_id, shard, "offset", type_tag, schema_version,
             payload, crc, created_at)
           SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::UUID[], $4::INTEGER[],
                                $5::BIGINT[], $6::TEXT[], $7::INTEGER[], $8::BYTEA[],
                                $9::BIGINT[], $10::BIGINT[])"#
    )
    .into();

    let pool = PgPoolOptions::new()
        .max_connections(RAW_CONNECTIONS as u32)
        .min_connections(RAW_CONNECTIONS as u32)
        .connect(url)
        .await?;
    let ids = entity_ids();
    let counter = Arc::new(AtomicI64::new(0));
    let warm_up = Duration::from_millis(if s.quick { 200 } else { 500 });
    let window_start = Instant::now() + warm_up;
    let end = window_start + s.raw_measure;
    let tasks: Vec<JoinHandle<Result<u64, sqlx::Error>>> = (0..RAW_CONNECTIONS)
        .map(|_| {
            let pool = pool.clone();
            let ids = ids.clone();
            let counter = counter.clone();
            let samples = samples.clone();
            let insert_journal = insert_journal.clone();
            let insert_replies = insert_replies.clone();
            tokio::spawn(async move {
                let (message, event, reply) = &*samples;
                let mut asks = 0u64;
                while Instant::now() < end {
                    let now = micros_since_epoch(Instant::now()) as i64;
                    let first = counter.fetch_add(RAW_BATCH as i64, Ordering::Relaxed);
                    // Journal rows: a message then an event per ask; a reply per ask.
                    let mut j_shard = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_offset = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_kind = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_type = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_id = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_seq = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_msg = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_tag = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_ver = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_payload = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_crc = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_due: Vec<Option<i64>> = Vec::with_capacity(2 * RAW_BATCH);
                    let mut j_at = Vec::with_capacity(2 * RAW_BATCH);
                    let mut r_type = Vec::with_capacity(RAW_BATCH);
                    let mut r_id = Vec::with_capacity(RAW_BATCH);
                    let mut r_msg = Vec::with_capacity(RAW_BATCH);
                    let mut r_shard = Vec::with_capacity(RAW_BATCH);
                    let mut r_offset = Vec::with_capacity(RAW_BATCH);
                    let mut r_tag = Vec::with_capacity(RAW_BATCH);
                    let mut r_ver = Vec::with_capacity(RAW_BATCH);
                    let mut r_payload = Vec::with_capacity(RAW_BATCH);
                    let mut r_crc = Vec::with_capacity(RAW_BATCH);
                    let mut r_at = Vec::with_capacity(RAW_BATCH);
                    for k in 0..RAW_BATCH as i64 {
                        let n = first + k;
                        let id = &ids[n as usize % ids.len()];
                        let shard = shard_of(id, SHARDS) as i32;
                        let message_id = Uuid::now_v7();
                        for (kind, seq, row, offset) in [
                            (1i16, None, message, 2 * n),
                            (2i16, Some(n), event, 2 * n + 1),
                        ] {
                            j_shard.push(shard);
                            j_offset.push(offset);
                            j_kind.push(kind);
                            j_type.push("counter");
                            j_id.push(id.as_str());
                            j_seq.push(seq);
                            j_msg.push(if kind == 1 {
                                message_id
                            } else {
                                Uuid::now_v7()
                            });
                            j_tag.push(row.0.as_str());
                            j_ver.push(row.1);
                            j_payload.push(row.2.as_slice());
                            j_crc.push(row.3);
                            j_due.push(None);
                            j_at.push(now);
                        }
                        r_type.push("counter");
                        r_id.push(id.as_str());
                        r_msg.push(message_id);
                        r_shard.push(shard);
                        r_offset.push(2 * n);
                        r_tag.push(reply.0.as_str());
                        r_ver.push(reply.1);
                        r_payload.push(reply.2.as_slice());
                        r_crc.push(reply.3);
                        r_at.push(now);
                    }
                    let mut tx = pool.begin().await?;
                    sqlx::query(AssertSqlSafe(insert_journal.clone()))
                        .bind(j_shard)
                        .bind(j_offset)
                        .bind(j_kind)
                        .bind(j_type)
                        .bind(j_id)
                        .bind(j_seq)
                        .bind(j_msg)
                        .bind(j_tag)
                        .bind(j_ver)
                        .bind(j_payload)
                        .bind(j_crc)
                        .bind(j_due)
                        .bind(j_at)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(insert_replies.clone()))
                        .bind(r_type)
                        .bind(r_id)
                        .bind(r_msg)
                        .bind(r_shard)
                        .bind(r_offset)
                        .bind(r_tag)
                        .bind(r_ver)
                        .bind(r_payload)
                        .bind(r_crc)
                        .bind(r_at)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    let done = Instant::now();
                    if done >= window_start && done < end {
                        asks += RAW_BATCH as u64;
                    }
                }
                Ok(asks)
            })
        })
        .collect();
    let mut asks = 0;
    let mut failure = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => asks += n,
            Err(e) => failure = Some(e),
        }
    }
    pool.close().await;
    drop_schema(admin, &raw).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(asks as f64 / s.raw_measure.as_secs_f64()),
    }
}
