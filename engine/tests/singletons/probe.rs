//! The probe singleton and what it leaves behind: each run writes its own rows on its own
//! connection, timestamped by the server, and the tests read them back as runs to check
//! that no two copies ever ran at once.

use std::collections::BTreeMap;
use std::time::Duration;

use entlog_engine::SingletonContext;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::db::Db;

/// The probe singleton: each run (an instance) writes a start row, a beat every 40 ms
/// and, when it stops cooperatively, a stop row — on its own connection, timestamped by
/// the server.
pub(crate) fn probe(
    url: String,
    table: String,
) -> impl Fn(SingletonContext) -> futures_util::future::BoxFuture<'static, ()> {
    move |ctx: SingletonContext| {
        let url = url.clone();
        let table = table.clone();
        Box::pin(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let instance = Uuid::now_v7().to_string();
            let runner = ctx.runner_id().to_owned();
            let insert = format!(
                "INSERT INTO {table} (instance, runner, kind, at)
                 VALUES ($1, $2, $3, extract(epoch FROM clock_timestamp())::FLOAT8)"
            );
            let mut kind = "start";
            loop {
                sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                    .bind(&instance)
                    .bind(&runner)
                    .bind(kind)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                if kind == "stop" {
                    return;
                }
                kind = if ctx.sleep(Duration::from_millis(40)).await {
                    "stop"
                } else {
                    "beat"
                };
            }
        })
    }
}

/// One run of the probe as the database saw it.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) runner: String,
    pub(crate) first: f64,
    pub(crate) last: f64,
    pub(crate) stopped: bool,
}

pub(crate) async fn runs(db: &Db, table: &str) -> Vec<Run> {
    let mut admin = db.admin().await;
    let rows: Vec<(String, String, String, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT instance, runner, kind, at FROM {table} ORDER BY at"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let mut by: BTreeMap<String, Run> = BTreeMap::new();
    for (instance, runner, kind, at) in rows {
        let run = by.entry(instance).or_insert(Run {
            runner,
            first: at,
            last: at,
            stopped: false,
        });
        run.first = run.first.min(at);
        run.last = run.last.max(at);
        run.stopped |= kind == "stop";
    }
    let mut runs: Vec<Run> = by.into_values().collect();
    runs.sort_by(|a, b| a.first.total_cmp(&b.first));
    runs
}

/// No two runs overlap: each starts after the previous one's last row.
pub(crate) fn assert_disjoint(runs: &[Run]) {
    for pair in runs.windows(2) {
        assert!(
            pair[1].first > pair[0].last,
            "two copies ran at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// The run going on now (a row in the last 300 ms), if exactly one is.
pub(crate) async fn current(db: &Db, table: &str) -> Option<Run> {
    let now = db.now().await;
    let live: Vec<Run> = runs(db, table)
        .await
        .into_iter()
        .filter(|r| !r.stopped && now - r.last < 0.3)
        .collect();
    assert!(live.len() <= 1, "two copies beating: {live:?}");
    live.into_iter().next()
}

pub(crate) fn db_age(run: &Run) -> f64 {
    run.last - run.first
}
