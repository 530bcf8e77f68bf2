//! Appends messages to a SQLite journal and reads them back.
//!
//! Run with `cargo run --example journal_basics`. It creates `entlog-basics.db` in the
//! working directory; run it again to see the journal grow: offsets continue where the
//! last run stopped, and re-sent message ids are recognised as duplicates.
#![allow(clippy::unwrap_used)]

mod logs;

use entlog::journal::{AppendOutcome, EntryKind};
use entlog::{EntityKey, Journal, NewMessage, Payload, SqliteJournal, SqliteOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum CounterCmd {
    Add(i64),
    Reset,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Warnings and errors on stderr (RUST_LOG for more): see examples/logs/mod.rs.
    logs::init();
    let path = "entlog-basics.db";
    let journal = SqliteJournal::open(SqliteOptions::new(path).shard_count(4)).await?;
    println!("journal {path}: {} shards", journal.shard_count());

    // Three commands to two counters, appended in one transaction.
    let c1 = EntityKey::new("counter", "c-1")?;
    let c2 = EntityKey::new("counter", "c-2")?;
    let messages = vec![
        NewMessage::new(
            c1.clone(),
            Payload::encode("counter.Cmd", 1, &CounterCmd::Add(5))?,
        ),
        NewMessage::new(
            c2.clone(),
            Payload::encode("counter.Cmd", 1, &CounterCmd::Add(2))?,
        ),
        NewMessage::new(
            c1.clone(),
            Payload::encode("counter.Cmd", 1, &CounterCmd::Reset)?,
        ),
    ];
    let resend = messages[0].clone();
    for outcome in journal.append(messages).await? {
        println!("appended: {outcome:?}");
    }

    // Sending the same message id again writes nothing.
    match &journal.append(vec![resend]).await?[0] {
        AppendOutcome::Duplicate { shard, offset, .. } => {
            println!("re-sent message recognised: shard {shard}, offset {offset:?}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // Read every shard from the start, verifying each entry's checksum.
    for shard in 0..journal.shard_count() {
        let entries = journal
            .read_shard(shard, 0, 1_000, Some(EntryKind::Message))
            .await?;
        for e in entries {
            let cmd: CounterCmd = e.payload.decode()?;
            println!(
                "shard {shard} offset {:>3}  {}  {:?}  (message {})",
                e.offset, e.entity, cmd, e.message_id
            );
        }
    }
    journal.close().await;
    Ok(())
}
