//! One backend's run: `bench_backend` fills a journal and runs the scenarios on it in
//! order (fill, then at each batch size the catch-up next to the raw baselines, then the
//! phase breakdown and the journal read alone), checking every table against the fold;
//! `bench_pg` and `bench_sqlite` open the journal on PostgreSQL and on SQLite around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entlog_journal::{
    AnyJournal, PgJournal, PgOptions, Shard, SqliteJournal, SqliteOptions, shard_of,
};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::catch_up::run_projectors;
use crate::common::{Settings, Size, grouped, ms, pct, per, pg_url, rate};
use crate::fill::{Data, Fold, fill};
use crate::phases::{run_phases, run_read_only};
use crate::raw::run_raw;
use crate::report::Report;
use crate::rows::{Write, check_table, create_table};
use crate::totals::Totals;
use crate::{BATCHES, EVENTS_PER_MESSAGE, MESSAGES_PER_COMMIT, PG_SCHEMA, SHARDS};

/// Fill, catch-up at each batch size next to the raw baselines, then the phase breakdown.
async fn bench_backend(j: AnyJournal, label: &str, size: Size, quick: bool, r: &mut Report) {
    let data = Arc::new(Data::new(size));
    let filled = fill(&j, &data).await;
    r.line(format!(
        "{label} fill: {} events over {} entities, {SHARDS} shards concurrently: {:.1} s = {} events/s \
         ({} commits of {MESSAGES_PER_COMMIT} messages × {EVENTS_PER_MESSAGE} events)",
        grouped(data.events as f64),
        grouped(size.entities as f64),
        filled.elapsed.as_secs_f64(),
        grouped(rate(data.events, filled.elapsed)),
        grouped(filled.commits as f64),
    ));
    if let AnyJournal::Postgres(p) = &j {
        // A journal that has been sitting a while: hint bits set, visibility map and
        // statistics up to date, dirty pages flushed, so that the first catch-up does
        // not pay for what the ones after it would not.
        let t = Instant::now();
        sqlx::query("VACUUM ANALYZE journal")
            .execute(p.pool())
            .await
            .unwrap();
        if let Err(e) = sqlx::query("CHECKPOINT").execute(p.pool()).await {
            println!("note: CHECKPOINT failed (needs superuser): {e}");
        }
        println!(
            "{label} (VACUUM ANALYZE journal + CHECKPOINT after the fill: {:.1} s, not timed)",
            t.elapsed().as_secs_f64()
        );
    }
    let fold = &filled.fold;
    for batch in BATCHES {
        let upsert_table = format!("raw_upsert_b{batch}");
        let insert_table = format!("raw_insert_b{batch}");
        let proj_name = format!("totals_b{batch}");
        create_table(&j, &upsert_table, Write::Upsert).await;
        create_table(&j, &insert_table, Write::Insert).await;
        create_table(&j, &proj_name, Write::Upsert).await;

        let p = Totals::new(&proj_name);
        let pr = run_projectors(&j, &p, batch).await;
        r.check(check_table(&j, label, &proj_name, fold).await);
        if pr.events != data.events {
            r.check(Some(format!(
                "{label} projector b{batch} applied {} events of {}",
                pr.events, data.events
            )));
        }
        let up = run_raw(
            &j,
            &data,
            &filled.streams,
            &upsert_table,
            batch,
            Write::Upsert,
        )
        .await;
        r.check(check_table(&j, label, &upsert_table, fold).await);
        let ins = run_raw(
            &j,
            &data,
            &filled.streams,
            &insert_table,
            batch,
            Write::Insert,
        )
        .await;
        r.check(check_table(&j, label, &insert_table, fold).await);

        let proj_rate = rate(pr.events, pr.elapsed);
        let up_rate = rate(data.events, up.elapsed);
        let ins_rate = rate(data.events, ins.elapsed);
        r.line(format!("{label} batch {batch}:"));
        r.line(format!(
            "  projector catch-up ({SHARDS} Projectors concurrently) {:>7.2} s  {:>9} events/s  \
             ({} steps, {:.0} rows per upsert, {} rows/s)",
            pr.elapsed.as_secs_f64(),
            grouped(proj_rate),
            grouped(pr.steps as f64),
            pr.rows as f64 / pr.steps.max(1) as f64,
            grouped(rate(pr.rows, pr.elapsed)),
        ));
        r.line(format!(
            "  raw upsert, same statements              {:>7.2} s  {:>9} events/s  \
             ({} statements, {} rows/s)",
            up.elapsed.as_secs_f64(),
            grouped(up_rate),
            grouped(up.statements as f64),
            grouped(rate(up.rows, up.elapsed)),
        ));
        r.line(format!(
            "  raw plain multi-row INSERT, same rows    {:>7.2} s  {:>9} events/s  \
             ({} statements, {} rows/s)",
            ins.elapsed.as_secs_f64(),
            grouped(ins_rate),
            grouped(ins.statements as f64),
            grouped(rate(ins.rows, ins.elapsed)),
        ));
        r.line(format!(
            "  projection/raw upsert = {:.2} (target ≥ 0.50){}; projection/raw INSERT = {:.2}",
            proj_rate / up_rate,
            if quick {
                " (quick mode: too few steps to judge)"
            } else if proj_rate / up_rate >= 0.5 {
                ""
            } else {
                " BELOW TARGET"
            },
            proj_rate / ins_rate,
        ));
        let apply = pr.prep + pr.sql;
        let outside = pr.task_time.saturating_sub(apply);
        r.line(format!(
            "  projector task time {:.1} s (sum of {SHARDS} tasks): apply {} (decode+aggregate {}, \
             upsert {}), outside apply {} = {} per step",
            pr.task_time.as_secs_f64(),
            pct(apply, pr.task_time),
            pct(pr.prep, pr.task_time),
            pct(pr.sql, pr.task_time),
            pct(outside, pr.task_time),
            ms(per(outside, pr.steps)),
        ));
    }

    // Where a step's time goes, at the first batch size: the copy of `step` on every shard;
    // the same with the checkpoint kept in memory; and on one shard alone (no waiting for
    // pool connections or CPU, so the phases are plain latencies).
    let batch = BATCHES[0];
    let all: Vec<Shard> = (0..SHARDS).collect();
    let variants: [(&str, &str, &[Shard], bool); 3] = [
        (
            "phases",
            "step phases (hand-rolled copy of Projector::step, 8 shards concurrently)",
            &all,
            true,
        ),
        (
            "phases_kept",
            "same, checkpoint read once and kept in memory (no per-step read)",
            &all,
            false,
        ),
        (
            "phases_one",
            "same as the copy of step, shard 0 alone (uncontended latencies)",
            &[0],
            true,
        ),
    ];
    for (key, what, shards, reread) in variants {
        let name = format!("{key}_b{batch}");
        create_table(&j, &name, Write::Upsert).await;
        let p = Totals::new(&name);
        let (elapsed, ph) = run_phases(&j, &p, batch, shards, reread).await;
        let expected: Fold = fold
            .iter()
            .filter(|(id, _)| shards.contains(&shard_of(id, SHARDS)))
            .map(|(id, v)| (id.clone(), *v))
            .collect();
        r.check(check_table(&j, label, &name, &expected).await);
        let total = ph.total();
        let cell = |d: Duration| format!("{} ({})", ms(per(d, ph.steps)), pct(d, total));
        r.line(format!(
            "  {what}, batch {batch}: {:.2} s, {} events/s; per step:",
            elapsed.as_secs_f64(),
            grouped(rate(ph.events, elapsed)),
        ));
        r.line(format!(
            "    checkpoint read {}, read_shard {}, begin {}, apply {} [decode+aggregate {}, \
             upsert {}], checkpoint CAS {}, commit {}",
            cell(ph.cursor),
            cell(ph.read),
            cell(ph.begin),
            cell(ph.apply),
            ms(per(p.prep(), ph.steps)),
            ms(per(p.sql(), ph.steps)),
            cell(ph.checkpoint),
            cell(ph.commit),
        ));
    }
    let (read_elapsed, read) = run_read_only(&j, batch).await;
    r.line(format!(
        "  journal read alone (read_shard, pages of {batch}, {SHARDS} concurrently): {:.2} s, {} events/s",
        read_elapsed.as_secs_f64(),
        grouped(rate(read, read_elapsed)),
    ));
    if read != data.events {
        r.check(Some(format!(
            "{label}: read {read} events of {}",
            data.events
        )));
    }
}

pub(crate) async fn bench_pg(s: &Settings, r: &mut Report) {
    let url = pg_url();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await
        .unwrap_or_default();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&admin)
        .await
        .unwrap_or_default();
    let drop = format!("DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE");
    sqlx::query(AssertSqlSafe(drop.clone()))
        .execute(&admin)
        .await
        .unwrap();
    let j: AnyJournal = PgJournal::open(PgOptions::new(&url).schema(PG_SCHEMA).shard_count(SHARDS))
        .await
        .unwrap()
        .into();
    let host = url.rsplit('@').next().unwrap_or_default();
    r.line(format!(
        "== PostgreSQL {version} at {host}, schema {PG_SCHEMA}, synchronous_commit={sync}, \
         journal pool of 10 connections"
    ));
    let started = Instant::now();
    bench_backend(j.clone(), "pg", s.pg, s.quick, r).await;
    j.close().await;
    sqlx::query(AssertSqlSafe(drop))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    println!(
        "(PostgreSQL part: {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

pub(crate) async fn bench_sqlite(s: &Settings, r: &mut Report) {
    let dir = std::env::temp_dir().join(format!(
        "entlog-bench-projections-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let j: AnyJournal =
        SqliteJournal::open(SqliteOptions::new(dir.join("journal.db")).shard_count(SHARDS))
            .await
            .unwrap()
            .into();
    r.line(format!(
        "== SQLite (WAL, synchronous=FULL, one writer connection, 4 readers) in {}",
        dir.display()
    ));
    let started = Instant::now();
    bench_backend(j.clone(), "sqlite", s.sqlite, s.quick, r).await;
    j.close().await;
    drop(j);
    let _ = std::fs::remove_dir_all(&dir);
    println!("(SQLite part: {:.1} s)", started.elapsed().as_secs_f64());
}
