//! Shared pieces of the projection benchmark: the run's `Settings` (quick or full) with
//! the `Size` of the data set each backend gets, the PostgreSQL URL, and number
//! formatting for the report lines (`grouped`, `rate`, `ms`, `pct`, `per`).

use std::time::Duration;

use crate::DEFAULT_URL;

// ---------------------------------------------------------------------------------------
// Settings

/// How much data one backend gets.
#[derive(Clone, Copy)]
pub(crate) struct Size {
    pub(crate) events: u64,
    pub(crate) entities: usize,
}

pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) pg: Size,
    pub(crate) sqlite: Size,
}

impl Settings {
    pub(crate) fn new() -> Self {
        let env_quick = std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
        // `cargo bench` passes `--bench`; `cargo test` runs this binary without it.
        let under_test = !std::env::args().any(|a| a == "--bench");
        if env_quick || under_test {
            let size = Size {
                events: 20_000,
                entities: 1_000,
            };
            Settings {
                quick: true,
                pg: size,
                sqlite: size,
            }
        } else {
            Settings {
                quick: false,
                pg: Size {
                    events: 1_000_000,
                    entities: 10_000,
                },
                sqlite: Size {
                    events: 1_000_000,
                    entities: 10_000,
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Formatting

pub(crate) fn grouped(v: f64) -> String {
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

pub(crate) fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn pct(part: Duration, whole: Duration) -> String {
    format!(
        "{:.0}%",
        100.0 * part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
    )
}

pub(crate) fn per(d: Duration, n: u64) -> Duration {
    d / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

pub(crate) fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}
