//! `migrate` and bad input: `migrate` creates a journal and keeps an existing one
//! (refusing another shard count), commands on a missing journal say so, and a refused
//! connection, a bad or mistyped address and a bad age are clear errors with exit
//! status 1 (JSON under `--json`); an unknown command is a usage error (exit status 2),
//! and `--help` shows examples.

use serde_json::Value;

use crate::common::db::Db;
use crate::entlog;

fn migrate(db: &Db) {
    db.fails(&entlog(), &["status"], "no entlog journal at");
    db.fails(&entlog(), &["inspect", "account/a"], "no entlog journal at");
    let made = db.ok(&entlog(), &["migrate", "--shards", "4"]);
    assert!(made.contains("journal ready: 4 shards"), "{made}");
    assert!(db.ok(&entlog(), &["migrate"]).contains("4 shards"));
    db.fails(
        &entlog(),
        &["migrate", "--shards", "5"],
        "the journal has 4 shards",
    );
    let status = db.json_ok(&entlog(), &["status"]);
    assert_eq!(status["shards"].as_array().unwrap().len(), 4);
}

#[test]
fn migrate_creates_and_keeps_on_sqlite() {
    migrate(&Db::sqlite());
}

#[test]
fn migrate_creates_and_keeps_on_postgres() {
    migrate(&Db::postgres());
}

#[test]
fn bad_addresses_are_clear_errors() {
    let db = Db::sqlite();
    let mut refused = Db::sqlite();
    refused.db = "postgres://postgres@127.0.0.1:1/test".into();
    refused.fails(&entlog(), &["status"], "Connection refused");
    let mut bad = Db::sqlite();
    bad.db = "postgres://:::bad".into();
    bad.fails(&entlog(), &["status"], "bad PostgreSQL URL");
    db.fails(&entlog(), &["prune", "--older-than", "soon"], "bad age");
    let mut typo = Db::sqlite();
    typo.db = "postgres:/oops".into();
    typo.fails(&entlog(), &["status"], "neither a PostgreSQL URL");
    assert!(
        !typo.dir.join("postgres:").exists(),
        "no file was created for it"
    );
    // With --json, the error is JSON as well.
    let out = typo.run(&entlog(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("neither a PostgreSQL URL"),
        "{err}"
    );
    let usage = db.run(&entlog(), &["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let help = db.ok(&entlog(), &["replay", "--help"]);
    assert!(help.contains("Examples:") && help.contains("--from-snapshot"));
}
