//! The examples a newcomer starts from, run as separate processes the way the comment at
//! the top of each says: `bank --quick` on SQLite and on PostgreSQL (its invariant check
//! must pass and print balanced totals), and the `cluster` demo with two runner processes
//! and a load process, one runner killed with `kill -9` while the load runs.
//!
//! Every child process is killed when its guard drops, so a failing test leaves none
//! behind; every PostgreSQL schema is unique to the run and dropped at the end.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{block_on, database_url, example};
use uuid::Uuid;

mod common;

/// Accounts and opening balance of `bank --quick`.
const QUICK_TOTAL: i64 = 8 * 1_000;

/// A child process with its stdout read line by line; killed and reaped on drop.
struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &str, exe: &Path, args: &[&str], dir: Option<&Path>) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `want`, and returns it; panics after `secs` or at
    /// the end of the output.
    fn wait_line(&mut self, secs: u64, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no line with {what} within {secs} s", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: output ended without a line with {what} (exit: {:?})",
                    self.name,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Waits for the process to exit (panics after `secs`) and reads the rest of its output.
    fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {secs} s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends at end of output; grandchildren could hold the pipe, so bound it.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    /// Sends SIGTERM, as `kill <pid>` or a service manager would.
    fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already exited: both fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL schema unique to this run, dropped (if it exists) on drop.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(prefix: &str) -> Schema {
        Schema {
            url: database_url(),
            name: format!("{prefix}_{}", Uuid::now_v7().simple()),
        }
    }

    fn exists(&self) -> bool {
        block_on(async {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            )
            .bind(&self.name)
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            n > 0
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A fresh thread: this may run while a test panics, and must not panic again.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            })
        })
        .join();
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The numbers a successful `bank --quick` prints.
fn check_bank_output(out: &str) {
    let fin = out
        .lines()
        .find_map(|l| l.strip_prefix("final: SUM(balance) = "))
        .unwrap_or_else(|| panic!("no final totals in:\n{out}"));
    let (sum, initial) = fin.split_once(", initial total = ").unwrap();
    assert_eq!(
        (sum.parse::<i64>().unwrap(), initial.parse::<i64>().unwrap()),
        (QUICK_TOTAL, QUICK_TOTAL),
        "{out}"
    );
    let highest = out
        .lines()
        .find_map(|l| l.split_once(", highest ")?.1.split(' ').next())
        .unwrap_or_else(|| panic!("no sampled sums in:\n{out}"));
    assert!(highest.parse::<i64>().unwrap() <= QUICK_TOTAL, "{out}");
    for line in [
        "entity states match bank_balances for 8 of 8 accounts",
        "invariant holds: money was neither created nor lost",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    assert!(!out.contains("VIOLATED"), "{out}");
}

/// `bank --quick` on its default SQLite file, in a directory of its own.
#[test]
fn bank_quick_on_sqlite() {
    let exe = example("bank");
    let dir = TempDir::new("entlog-bank");
    let mut bank = Proc::spawn("bank", &exe, &["--quick"], Some(&dir.0));
    let status = bank.wait_exit(60);
    assert!(
        status.success(),
        "bank exited with {status}:\n{}",
        bank.output()
    );
    check_bank_output(&bank.output());
    assert!(
        !dir.0.join("bank.db").exists(),
        "bank.db should be removed at the end"
    );
}

/// `bank --quick` on PostgreSQL, in a schema of its own that it drops at the end.
#[test]
fn bank_quick_on_postgres() {
    let exe = example("bank");
    let schema = Schema::new("bank_test");
    let mut bank = Proc::spawn(
        "bank-pg",
        &exe,
        &["--quick", "--schema", &schema.name, &schema.url],
        None,
    );
    let status = bank.wait_exit(60);
    assert!(
        status.success(),
        "bank exited with {status}:\n{}",
        bank.output()
    );
    check_bank_output(&bank.output());
    assert!(!schema.exists(), "the example should drop its schema");
}

/// `N` from a runner's "<id> owns N/16 shards: [...]" line.
fn owned(line: &str) -> Option<u32> {
    line.split_once(" owns ")?.1.split('/').next()?.parse().ok()
}

/// `X` from the load's "acked X/N" progress lines.
fn acked(line: &str) -> Option<u64> {
    line.strip_prefix("acked ")?.split('/').next()?.parse().ok()
}

/// Two runners and a load: one runner is killed with `kill -9` once a third of the asks
/// were acknowledged; the other takes every shard over, every ask is answered exactly once
/// (the load's counter check), and the survivor stops cleanly on SIGTERM.
#[test]
fn cluster_survives_a_killed_runner() {
    const ASKS: u64 = 2_000;
    let exe = example("cluster");
    let schema = Schema::new("cluster_test");
    let db = [
        "--url",
        schema.url.as_str(),
        "--schema",
        schema.name.as_str(),
    ];
    let runner = |id: &str| {
        let args: Vec<&str> = ["runner", "--id", id].iter().chain(&db).copied().collect();
        Proc::spawn(id, &exe, &args, None)
    };

    // One at a time: the first creates the schema.
    let mut a = runner("runner-a");
    a.wait_line(30, "owned shards", |l| owned(l).is_some_and(|n| n > 0));
    let mut b = runner("runner-b");
    b.wait_line(30, "a share of the shards", |l| {
        owned(l).is_some_and(|n| n > 0 && n < 16)
    });

    let asks = ASKS.to_string();
    let load_args: Vec<&str> = [
        "load",
        "--asks",
        &asks,
        "--entities",
        "40",
        "--concurrency",
        "32",
    ]
    .iter()
    .chain(&db)
    .copied()
    .collect();
    let mut load = Proc::spawn("load", &exe, &load_args, None);
    let line = load.wait_line(60, "a third acknowledged", |l| {
        acked(l).is_some_and(|n| n >= ASKS / 3)
    });
    a.child.kill().unwrap(); // SIGKILL
    let killed = a.child.wait().unwrap();
    eprintln!("killed runner-a ({killed}) at {line:?}");
    assert!(!killed.success());

    b.wait_line(30, "every shard after the kill", |l| owned(l) == Some(16));
    let status = load.wait_exit(90);
    let out = load.output();
    assert!(status.success(), "load exited with {status}:\n{out}");
    assert!(
        out.contains(&format!("acked {ASKS}/{ASKS} in")),
        "not every ask was acknowledged:\n{out}"
    );
    assert!(
        out.contains("counters ok: all 40 equal their acknowledged asks"),
        "{out}"
    );
    // The kill really happened under load: progress went on after the line that set it off.
    let progress_after = load
        .seen
        .iter()
        .skip_while(|l| **l != line)
        .skip(1)
        .filter(|l| acked(l).is_some_and(|n| n < ASKS))
        .count();
    assert!(
        progress_after > 0,
        "the load had finished before the kill:\n{out}"
    );

    b.terminate();
    let status = b.wait_exit(30);
    assert!(status.success(), "runner-b exited with {status} on SIGTERM");
    assert!(
        b.seen
            .iter()
            .any(|l| l == "runner-b stopped: shards released"),
        "{}",
        b.output()
    );
}
