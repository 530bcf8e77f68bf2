//! The run's `Report`: each summary line is printed as it is made and kept, each
//! mismatch with the fold kept as an anomaly; `print_summary` prints them all again at the
//! end, with the bench's wall time.

use std::time::Duration;

use crate::common::Settings;

/// Summary lines and anomalies of the whole run.
#[derive(Default)]
pub(crate) struct Report {
    lines: Vec<String>,
    pub(crate) anomalies: Vec<String>,
}

impl Report {
    pub(crate) fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(s);
    }

    pub(crate) fn check(&mut self, found: Option<String>) {
        if let Some(f) = found {
            println!("MISMATCH: {f}");
            self.anomalies.push(f);
        }
    }
}

/// The summary printed after both backends have run.
pub(crate) fn print_summary(report: &Report, s: &Settings, wall: Duration) {
    println!();
    println!(
        "summary ({}events/s = journal events folded per second; the raw baselines write the \
         same rows with the same statements, without journal read or checkpoint)",
        if s.quick { "QUICK mode; " } else { "" }
    );
    for l in &report.lines {
        println!("{l}");
    }
    if report.anomalies.is_empty() {
        println!("read models = fold: yes, every table");
    } else {
        println!("MISMATCHES ({}):", report.anomalies.len());
        for a in &report.anomalies {
            println!("  - {a}");
        }
    }
    println!("bench wall time: {:.1} s", wall.as_secs_f64());
}
