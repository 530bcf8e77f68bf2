//! Scenario 7: scheduled-message lateness on an idle runner: messages sent with
//! `tell_at` to the `Late` entity at spread-out times ahead, each handler recording its
//! wall clock minus the due time (in `LATENESS`); p50/p99/max on PostgreSQL and SQLite.

use std::sync::Mutex;
use std::time::Duration;

use entlog_engine::{Cluster, Context, Entity, Outcome, Rejection};
use entlog_journal::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{
    Lat, Report, Settings, config, drop_schema, ms, ready, schema_name, sqlite_config, wait_until,
};

/// How late each scheduled message ran, in microseconds (negative: early).
static LATENESS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Records how late it runs: its wall clock minus the due time its command carries (the
/// instant its message was scheduled for).
struct Late;

#[derive(Serialize, Deserialize)]
struct Due(i64);

impl Entity for Late {
    const TYPE: &'static str = "late";
    type Command = Due;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(&self, _: &(), due: Due, _: &mut Context) -> Result<Outcome<Self>, Rejection> {
        let late = Timestamp::now().as_micros() - due.0;
        LATENESS.lock().unwrap().push(late);
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

/// A small deterministic generator (xorshift64*): the bench needs spread, not quality.
struct Spread(u64);

impl Spread {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo + 1)
    }
}

/// Schedules `late_messages` messages on `cluster` (its runner idle otherwise) and waits
/// for them; returns the lateness of each.
async fn lateness_run(cluster: &Cluster, s: &Settings, what: &str, report: &mut Report) -> Lat {
    LATENESS.lock().unwrap().clear();
    let (lo, hi) = s.late_spread_ms;
    let mut spread = Spread(0x9E37_79B9_7F4A_7C15);
    for i in 0..s.late_messages {
        let at = Timestamp::now().after(Duration::from_millis(spread.next(lo, hi)));
        let sent = cluster
            .entity::<Late>(&format!("late-{i:03}"))
            .tell_at(at, Due(at.as_micros()))
            .await;
        if let Err(e) = sent {
            report.anomaly(format!("lateness ({what}): tell_at failed: {e}"));
            return Lat::new(Vec::new());
        }
    }
    let all_in = wait_until(Duration::from_millis(hi + 10_000), || {
        LATENESS.lock().unwrap().len() >= s.late_messages
    })
    .await;
    // A little longer, for a duplicate delivery to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = std::mem::take(&mut *LATENESS.lock().unwrap());
    if !all_in || late.len() != s.late_messages {
        report.anomaly(format!(
            "lateness ({what}): {} deliveries of {} scheduled messages",
            late.len(),
            s.late_messages
        ));
    }
    let early = late.iter().filter(|&&l| l < 0).count();
    if early > 0 {
        report.anomaly(format!("lateness ({what}): {early} messages handled early"));
    }
    let lat = Lat::new(
        late.iter()
            .map(|&l| Duration::from_micros(l.max(0) as u64))
            .collect(),
    );
    println!(
        "  {what}: {} scheduled messages {lo}–{hi} ms ahead: lateness p50 {}  p99 {}  max {}  \
         (target p99 < 50 ms: {})",
        lat.0.len(),
        ms(lat.pct(0.5)),
        ms(lat.pct(0.99)),
        ms(lat.max()),
        if lat.pct(0.99) < Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
    lat
}

pub(crate) async fn lateness(url: &str, admin: &PgPool, s: &Settings, report: &mut Report) {
    let schema = schema_name("late");
    drop_schema(admin, &schema).await;
    let cluster = Cluster::builder()
        .postgres_schema(url, &schema)
        .config(config())
        .entity(Late)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a cluster on schema {schema}: {e}"));
    ready(&cluster, report, "lateness (postgres)").await;
    let lat = lateness_run(&cluster, s, "postgres", report).await;
    report.lateness.push(("postgres", lat));
    cluster.shutdown().await.unwrap();
    drop_schema(admin, &schema).await;

    let dir = std::env::temp_dir().join(format!(
        "entlog-late-{}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster::builder()
        .sqlite(dir.join("late.db"))
        .config(sqlite_config())
        .entity(Late)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a SQLite cluster: {e}"));
    ready(&cluster, report, "lateness (sqlite)").await;
    let lat = lateness_run(&cluster, s, "sqlite", report).await;
    report.lateness.push(("sqlite", lat));
    cluster.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
