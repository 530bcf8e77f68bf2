//! The summary printed after every scenario has run: one line per figure of the
//! `Report` (throughput, sequential asks, memory, failover, activation, lateness, RSS),
//! then the anomalies and the bench's wall time.

use std::time::Duration;

use crate::child::Strike;
use crate::common::{FailoverRun, Report, Settings, grouped, list, median, ms, pg_url};
use crate::{ENTITIES, IN_FLIGHT};

pub(crate) fn print_summary(r: &Report, s: &Settings, wall: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // The URL without user and password.
    let host = pg_url().rsplit('@').next().unwrap_or_default().to_owned();
    println!();
    println!(
        "load benchmark ({}medians of this run; PostgreSQL {} at {host}, {cores} cores)",
        if s.quick { "QUICK mode, " } else { "" },
        r.pg_version
    );
    let col = |name: &str, rest: String| println!("{name:<52} {rest}");
    if let Some(pg) = &r.pg {
        let raw = match r.raw {
            Some(raw) => format!(
                "   (raw rows limit {} asks/s; ratio {:.2})",
                grouped(raw),
                pg.rate() / raw
            ),
            None => String::new(),
        };
        col(
            &format!("persisted asks, {ENTITIES} entities, {IN_FLIGHT} in flight"),
            format!("{}{raw}", pg.line()),
        );
        col("", pg.costs());
        col("", pg.stages());
    }
    for (name, load) in &r.variants {
        col(&format!("  same, {name}"), load.line());
    }
    if let Some(pg64) = &r.pg64 {
        let raw = match r.raw {
            Some(raw) => format!("   (ratio {:.2} of the raw limit)", pg64.rate() / raw),
            None => String::new(),
        };
        col("same, 64 in flight", format!("{}{raw}", pg64.line()));
        col("", pg64.costs());
        col("", pg64.stages());
    }
    if let Some(sq) = &r.sqlite {
        col(
            &format!(
                "sqlite, same ({} shards, its default)",
                entlog::SqliteOptions::NEW_SHARD_COUNT
            ),
            sq.line(),
        );
        col("", sq.stages());
    }
    for (name, seq) in [("postgres", &r.seq), ("sqlite", &r.seq_sqlite)] {
        if let Some(seq) = seq {
            col(
                &format!("sequential ask, one entity ({name})"),
                format!(
                    "p50 {}  p99 {}  max {}",
                    ms(seq.pct(0.5)),
                    ms(seq.pct(0.99)),
                    ms(seq.max())
                ),
            );
        }
    }
    if let [(n0, m0, Some(r0)), .., (n1, m1, Some(r1))] = r.memory.as_slice() {
        col(
            "RSS, many distinct entities (cap 10,000)",
            format!(
                "{:.1} MB after {} ({} in memory), {:.1} MB after {} ({} in memory): ratio {:.2}",
                *r0 as f64 / 1024.0,
                grouped(*n0 as f64),
                grouped(*m0 as f64),
                *r1 as f64 / 1024.0,
                grouped(*n1 as f64),
                grouped(*m1 as f64),
                *r1 as f64 / *r0 as f64
            ),
        );
    }
    if !r.failover.is_empty() {
        let by_b: Vec<Duration> = r.failover.iter().filter_map(|f| f.b_reply).collect();
        let owned: Vec<Duration> = r.failover.iter().filter_map(|f| f.b_owned).collect();
        let back: Vec<Duration> = r.failover.iter().filter_map(|f| f.a_again).collect();
        let gaps: Vec<Duration> = r.failover.iter().map(|f| f.gap).collect();
        col(
            "failover (lock connection killed → first reply from B)",
            if by_b.is_empty() {
                format!("no kill of {} ended with B taking over", r.failover.len())
            } else {
                format!(
                    "median {}  ({} of {} kills; runs: {}; B listed the shard after {})",
                    ms(median(&by_b)),
                    by_b.len(),
                    r.failover.len(),
                    list(&by_b),
                    if owned.is_empty() {
                        "-".to_owned()
                    } else {
                        list(&owned)
                    }
                )
            },
        );
        if !back.is_empty() {
            col(
                "  … or A re-opened its lock session first",
                format!(
                    "{} of {} kills; first reply from A's new lease after {}",
                    back.len(),
                    r.failover.len(),
                    list(&back)
                ),
            );
        }
        col(
            "  longest gap without a handled probe",
            format!("median {}  (all kills: {})", ms(median(&gaps)), list(&gaps)),
        );
    }
    for strike in Strike::ALL {
        let runs: Vec<&FailoverRun> = r
            .failover_process
            .iter()
            .filter(|(s, _)| *s == strike)
            .map(|(_, f)| f)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let by_b: Vec<Duration> = runs.iter().filter_map(|f| f.b_reply).collect();
        let gaps: Vec<Duration> = runs.iter().map(|f| f.gap).collect();
        let max = by_b.iter().max().copied().unwrap_or_default();
        col(
            &format!("failover ({} → first reply from B)", strike.label()),
            format!(
                "median {}  max {}  (runs: {}; longest gaps {})",
                ms(median(&by_b)),
                ms(max),
                list(&by_b),
                list(&gaps)
            ),
        );
    }
    if let Some(a) = &r.activation {
        col(
            &format!("activation of a {}-event entity", grouped(a.events as f64)),
            format!(
                "snapshot every 100 (+{} events replayed): median {} (hot {}); without: {} \
                 (hot {})",
                a.replayed,
                ms(median(&a.snap_cold)),
                ms(median(&a.snap_hot)),
                ms(median(&a.full_cold)),
                ms(median(&a.full_hot))
            ),
        );
    }
    for (backend, lat) in &r.lateness {
        let (lo, hi) = s.late_spread_ms;
        col(
            &format!("scheduled-message lateness, idle runner, {backend}"),
            format!(
                "p50 {}  p99 {}  max {}  ({} messages {lo}–{hi} ms ahead)",
                ms(lat.pct(0.5)),
                ms(lat.pct(0.99)),
                ms(lat.max()),
                lat.0.len()
            ),
        );
    }
    if let Some(kb) = r.rss_after_kb {
        col(
            &format!("RSS after {ENTITIES} active entities"),
            format!(
                "{:.1} MB (at start {:.1} MB; client, runtime and pools included)",
                kb as f64 / 1024.0,
                r.rss_start_kb.unwrap_or(0) as f64 / 1024.0
            ),
        );
    }
    if r.anomalies.is_empty() {
        println!("anomalies: none");
    } else {
        println!("anomalies ({}):", r.anomalies.len());
        for a in &r.anomalies {
            println!("  - {a}");
        }
    }
    println!("bench wall time: {:.1} s", wall.as_secs_f64());
}
