//! A runner process hosting the test counter on PostgreSQL: the engine's crash tests
//! start it and kill it with `kill -9`.
//!
//! `cargo run -p entlog-engine --example counter_runner -- <url> <schema> <runner-id> <shards>`
//! runs until SIGTERM/Ctrl-C (then hands its shards over) or until killed.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use entlog_engine::Cluster;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, schema, runner, shards] = &args[..] else {
        eprintln!("usage: counter_runner <url> <schema> <runner-id> <shards>");
        std::process::exit(2);
    };
    let cluster = Cluster::builder()
        .postgres_schema(url, schema)
        .config(common::config(shards.parse().unwrap()).runner_id(runner.clone()))
        .entity(common::Counter)
        .start()
        .await
        .unwrap();
    println!("runner {runner} started");
    cluster.run_until_signal().await.unwrap();
    println!("runner {runner} stopped");
}
