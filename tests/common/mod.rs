//! Helpers shared by the root integration tests: example binaries, a runtime, and (in
//! [`db`]) a journal of its own for a test that runs the CLI.
#![allow(dead_code, clippy::unwrap_used)]

pub mod db;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The examples the tests run as processes.
const EXAMPLES: &[&str] = &["quickstart", "bank", "cluster"];

/// Builds the examples (once per test binary) and returns the path of `name`.
pub fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let mut args = vec!["-p", "entlog"];
        for e in EXAMPLES {
            args.extend(["--example", e]);
        }
        build(&args).join("examples")
    });
    let exe = dir.join(name);
    assert!(exe.exists(), "no {}", exe.display());
    exe
}

/// Builds the plain `entlog` binary (once per test binary) and returns its path.
pub fn entlog_bin() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    let exe = EXE.get_or_init(|| build(&["-p", "entlog-cli", "--bin", "entlog"]).join("entlog"));
    assert!(exe.exists(), "no {}", exe.display());
    exe.clone()
}

/// `cargo build` of `targets` in this test's profile; returns the profile's directory.
fn build(targets: &[&str]) -> PathBuf {
    let mut args = vec![
        "build",
        "-q",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
    ];
    args.extend(targets);
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    // A stale binary would test old code: always ask cargo (a no-op when up to date).
    let built = Command::new(env!("CARGO")).args(&args).status().unwrap();
    assert!(built.success(), "cargo {args:?} failed");
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The test PostgreSQL server's URL (a private one is started where none answers).
pub fn database_url() -> String {
    block_on(entlog::journal::testing::database_url())
}
