//! The summary printed after the criterion groups: journal/raw ratios computed from
//! criterion's own medians of this run (`Medians`, read from
//! `target/criterion/<group>/<function>/new/estimates.json`), and number formatting.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::READ_PAGE;
use crate::common::Settings;

/// Where criterion writes its results (its own rule, minus the `cargo metadata` step).
pub(crate) fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Medians of this run's benchmarks, in ns per iteration; stale files are ignored.
pub(crate) struct Medians {
    pub(crate) dir: PathBuf,
    pub(crate) since: SystemTime,
}

impl Medians {
    fn ns(&self, id: &str) -> Option<f64> {
        let path = self.dir.join(id).join("new").join("estimates.json");
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        if modified < self.since {
            return None;
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        json["median"]["point_estimate"].as_f64()
    }

    /// Entries per second of a benchmark that handles `n` entries per iteration.
    fn rate(&self, id: &str, n: usize) -> Option<f64> {
        self.ns(id).map(|ns| n as f64 / (ns / 1e9))
    }
}

fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |r| format!("{}/s", grouped(r)))
}

fn ms_cell(ns: Option<f64>) -> String {
    ns.map_or_else(|| "n/a".into(), |ns| format!("{:.3} ms", ns / 1e6))
}

fn ratio_cell(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

pub(crate) fn print_summary(m: &Medians, s: &Settings) {
    let row = |name: &str, value: String, ratio: String, note: String| {
        println!("{name:<30} {value:>14} {ratio:>9}  {note}");
    };
    println!();
    println!(
        "summary (medians of this run{})   throughput ratio = journal/raw (higher is better); latency ratio = journal/raw (lower is better)",
        if s.quick { ", QUICK mode" } else { "" }
    );
    row("", "entries/s".into(), "vs raw".into(), String::new());
    for backend in ["pg", "sqlite"] {
        for n in [256, 16, 1] {
            let j = m.rate(&format!("append/{backend}/{n}"), n);
            let r = m.rate(&format!("raw/{backend}/{n}"), n);
            let what = if backend == "pg" {
                "raw multi-row INSERT … UNNEST"
            } else {
                "raw multi-row INSERT, 1 tx"
            };
            row(
                &format!("append/{backend}/{n}"),
                rate_cell(j),
                ratio_cell(j, r),
                format!("({what} {})", rate_cell(r)),
            );
        }
        let jl = m.ns(&format!("append/{backend}/1"));
        let (rl, what) = if backend == "pg" {
            (m.ns("raw/pg-single-row/1"), "raw single-row INSERT")
        } else {
            (m.ns("raw/sqlite/1"), "raw 1-row INSERT, 1 tx")
        };
        row(
            &format!("append/{backend}/1  latency"),
            ms_cell(jl),
            ratio_cell(jl, rl),
            format!("({what} {})", ms_cell(rl)),
        );
        if backend == "pg" {
            let multi1 = m.ns("raw/pg/1");
            row(
                "raw/pg/1 (UNNEST) latency",
                ms_cell(multi1),
                String::new(),
                String::new(),
            );
            let on = m.rate("append/pg/256", 256);
            let off = m.rate("append/pg-nonotify/256", 256);
            let r = m.rate("raw/pg/256", 256);
            row(
                "append/pg-nonotify/256",
                rate_cell(off),
                ratio_cell(off, r),
                format!(
                    "(notify on: {}, on/off {})",
                    rate_cell(on),
                    ratio_cell(on, off)
                ),
            );
        } else {
            let full = m.rate("append/sqlite/256", 256);
            let normal = m.rate("append/sqlite-normal/256", 256);
            let r = m.rate("raw/sqlite/256", 256);
            row(
                "append/sqlite-normal/256",
                rate_cell(normal),
                ratio_cell(normal, r),
                format!(
                    "(synchronous=NORMAL; FULL: {}, normal/full {}; raw is FULL)",
                    rate_cell(full),
                    ratio_cell(normal, full)
                ),
            );
        }
    }
    for backend in ["pg", "sqlite"] {
        let r = m.rate(&format!("read/{backend}"), s.read_entries);
        row(
            &format!("read/{backend}"),
            rate_cell(r),
            String::new(),
            format!(
                "(one shard of {} entries, pages of {READ_PAGE}, crc verified)",
                grouped(s.read_entries as f64)
            ),
        );
    }
}
