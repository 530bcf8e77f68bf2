//! The conformance suite on SQLite files, plus what only SQLite has: one owner per file.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use entlog_journal::testing::conformance::{self as suite, Backend};
use entlog_journal::{
    Access, EntityKey, Journal, JournalError, NewMessage, Payload, SqliteJournal, SqliteOptions,
};

struct Sqlite {
    dir: PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("entlog-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Sqlite { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.db", uuid::Uuid::now_v7()))
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Backend for Sqlite {
    type J = SqliteJournal;

    async fn fresh(&self, shards: u32) -> SqliteJournal {
        SqliteJournal::open(SqliteOptions::new(self.path()).shard_count(shards))
            .await
            .unwrap()
    }

    async fn reopen(
        &self,
        journal: SqliteJournal,
        shards: u32,
    ) -> entlog_journal::Result<SqliteJournal> {
        let path = journal.path().to_owned();
        journal.close().await;
        drop(journal);
        SqliteJournal::open(SqliteOptions::new(path).shard_count(shards)).await
    }
}

macro_rules! conformance {
    ($($name:ident $(($($arg:expr),*))?;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                suite::$name(&Sqlite::new() $($(, $arg)*)?).await;
            }
        )*
    };
}

conformance! {
    durable_ack;
    dedup;
    atomic_batch_commit;
    open_commit_wakes_once_committed;
    cancelled_commits_are_all_or_nothing(200);
    seq_fencing(20, 4);
    lease_fencing;
    no_skipped_entries(5, 8, 40);
    checked_bytes;
    snapshots;
    bad_input;
    wrong_shard_count_and_format;
    scheduled_messages;
    cancel_scheduled;
    headers_round_trip;
    cancel_races_promotion(400);
    event_stream;
    cursors_move_forward;
    wakeups;
    batched_replies;
    runner_registry;
    mailbox_reads;
    damaged_mailbox_entries;
    mailbox_bad_input;
    commit_many_all_or_none;
}

/// A second opener of a journal file gets a clear error, not a second writer; once the
/// owner is gone, the file opens again.
#[tokio::test]
async fn one_process_owns_the_file() {
    let b = Sqlite::new();
    let path = b.path();
    let first = SqliteJournal::open(SqliteOptions::new(&path))
        .await
        .unwrap();
    let err = SqliteJournal::open(SqliteOptions::new(&path))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::Locked { path: p } if *p == path),
        "got {err:?}"
    );
    assert_eq!(first.head(0).await.unwrap(), 0, "the owner is unaffected");
    first.close().await;
    drop(first);
    SqliteJournal::open(SqliteOptions::new(&path))
        .await
        .unwrap();
}

/// A second process (not just a second handle) is refused too: the lock is an OS file lock.
#[tokio::test]
async fn another_process_is_refused() {
    let b = Sqlite::new();
    let path = b.path();
    let _owner = SqliteJournal::open(SqliteOptions::new(&path))
        .await
        .unwrap();
    let link = path.with_extension("hardlink.db");
    std::fs::hard_link(&path, &link).unwrap();
    for reached in [&path, &link] {
        // flock(1) from util-linux, non-blocking: exits 1 when the lock is held elsewhere.
        let status = tokio::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(reached)
            .arg("true")
            .status()
            .await
            .unwrap();
        assert!(
            !status.success(),
            "another process could take the owner lock through {}",
            reached.display()
        );
    }
}

/// The same file through a symlink, a hard link or a path with `..` in it has one owner:
/// each second opener is refused, and the owner goes on writing and reading (a refused
/// opener must not disturb the owner's SQLite locks). A read-only handle sees the owner.
/// A file with two names is refused once it has no owner: its write-ahead log is named
/// after the name used.
#[tokio::test]
async fn every_path_to_the_file_has_one_owner() {
    let b = Sqlite::new();
    let path = b.path();
    let dir = path.parent().unwrap().to_owned();
    let owner = SqliteJournal::open(SqliteOptions::new(&path).shard_count(4))
        .await
        .unwrap();
    let symlink = dir.join("symlink.db");
    std::os::unix::fs::symlink(&path, &symlink).unwrap();
    let hard = dir.join("hard.db");
    std::fs::hard_link(&path, &hard).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let dotted = dir.join("sub").join("..").join(path.file_name().unwrap());
    let key = EntityKey::new("counter", "c").unwrap();
    for (n, other) in [&symlink, &hard, &dotted].into_iter().enumerate() {
        let err = SqliteJournal::open(SqliteOptions::new(other).shard_count(4))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, JournalError::Locked { .. }),
            "{}: got {err:?}",
            other.display()
        );
        let appended = owner
            .append(vec![NewMessage::new(
                key.clone(),
                Payload::encode("counter.cmd", 1, &(n as u64)).unwrap(),
            )])
            .await;
        assert!(appended.is_ok(), "the owner writes on: {appended:?}");
    }
    let shard = owner.shard_of(&key);
    assert_eq!(
        owner.head(shard).await.unwrap(),
        3,
        "the owner reads its writes"
    );
    let err = SqliteJournal::open_existing(SqliteOptions::new(&hard), Access::ReadOnly)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::HardLinked { links: 2, .. }),
        "got {err:?}"
    );
    std::fs::remove_file(&hard).unwrap();
    let viewer = SqliteJournal::open_existing(SqliteOptions::new(&symlink), Access::ReadOnly)
        .await
        .unwrap();
    assert!(
        viewer.owner_alive().await.unwrap(),
        "the owner is seen through a symlink"
    );
    owner.close().await;
    drop(owner);
    assert!(
        !viewer.owner_alive().await.unwrap(),
        "a closed owner is not"
    );
    viewer.close().await;
    std::fs::hard_link(&path, &hard).unwrap();
    let err = SqliteJournal::open(SqliteOptions::new(&path).shard_count(4))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::HardLinked { links: 2, .. }),
        "got {err:?}"
    );
    std::fs::remove_file(&hard).unwrap();
    let again = SqliteJournal::open(SqliteOptions::new(&symlink).shard_count(4))
        .await
        .unwrap();
    assert_eq!(again.head(shard).await.unwrap(), 3);
}

/// A file that is not an entlog journal — a SQLite database of other tables, or not
/// SQLite at all — is refused with `NotAJournal`, and left as it was (no journal mode
/// change, no write-ahead log, no entlog tables). An empty file becomes a journal.
#[tokio::test]
async fn a_foreign_file_is_refused_and_left_alone() {
    use sqlx::Connection as _;
    let b = Sqlite::new();
    let theirs = b.path();
    {
        let mut conn = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&theirs)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let before = std::fs::read(&theirs).unwrap();
    let err = SqliteJournal::open(SqliteOptions::new(&theirs))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::NotAJournal { found, .. } if found.contains("invoices")),
        "got {err:?}"
    );
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        before,
        "the file is untouched"
    );
    let mut wal = theirs.clone().into_os_string();
    wal.push("-wal");
    assert!(!std::path::Path::new(&wal).exists(), "no write-ahead log");

    let garbage = b.path();
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let err = SqliteJournal::open(SqliteOptions::new(&garbage))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::NotAJournal { found, .. } if found == "not a SQLite database"),
        "got {err:?}"
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), vec![0x5a; 8192]);

    let empty = b.path();
    std::fs::write(&empty, b"").unwrap();
    let j = SqliteJournal::open(SqliteOptions::new(&empty).shard_count(2))
        .await
        .unwrap();
    assert_eq!(j.shard_count(), 2);
}

/// A column SQLite stores with the wrong type (it does not enforce column types) does not
/// decode: the mailbox read delivers the row as damaged at its place, with its neighbours.
#[tokio::test]
async fn undecodable_column_is_a_damaged_entry() {
    use entlog_journal::{Delivery, EntityKey, NewMessage, Payload};
    let b = Sqlite::new();
    let j = b.fresh(1).await;
    let to = EntityKey::new("counter", "c").unwrap();
    j.append(
        (0..3i64)
            .map(|n| NewMessage::new(to.clone(), Payload::encode("t.Cmd", 1, &n).unwrap()))
            .collect(),
    )
    .await
    .unwrap();
    sqlx::query(r#"UPDATE journal SET message_id = 'not-a-uuid' WHERE shard = 0 AND "offset" = 2"#)
        .execute(j.writer())
        .await
        .unwrap();
    let got = j.read_mailboxes(&[(0, 0)], 10).await.unwrap();
    let places: Vec<(u64, bool)> = got
        .iter()
        .map(|d| (d.offset(), matches!(d, Delivery::Damaged(_))))
        .collect();
    assert_eq!(places, [(1, false), (2, true), (3, false)]);
    let Delivery::Damaged(d) = &got[1] else {
        unreachable!()
    };
    assert!(d.reason.contains("does not decode"), "{d:?}");
    assert!(
        j.read_shard(0, 0, 10, None).await.is_err(),
        "read_shard still fails"
    );
}

/// The WAL is checkpointed beside the writer: pages reach the database file while the
/// WAL is far below the writer's own checkpoint threshold, so no commit waits for a
/// checkpoint.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer() {
    let b = Sqlite::new();
    let path = b.path();
    let j = SqliteJournal::open(SqliteOptions::new(&path).shard_count(4))
        .await
        .unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    // About 1 MB of messages: a few hundred WAL pages, far below the writer's threshold.
    for round in 0..20 {
        let batch = (0..50)
            .map(|i| {
                NewMessage::new(
                    EntityKey::new("counter", format!("c{round}-{i}")).unwrap(),
                    Payload::encode("test.Cmd", 1, &vec![7u8; 1000]).unwrap(),
                )
            })
            .collect();
        j.append(batch).await.unwrap();
    }
    let wal = path.with_extension("db-wal");
    let wal_pages = std::fs::metadata(&wal).unwrap().len() / 4096;
    assert!(wal_pages < 5_000, "{wal_pages} WAL pages");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now >= before + 1_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes (from {before}): no checkpoint ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    j.close().await;
}

/// A journal created with the default options has `SqliteOptions::NEW_SHARD_COUNT` shards;
/// a file created with another count opens with the default options and keeps its count
/// and its entries (files made before the default changed), while an explicit other count
/// is refused.
#[tokio::test]
async fn default_shard_count_creates_few_and_adopts_any() {
    let b = Sqlite::new();
    let new = SqliteJournal::open(SqliteOptions::new(b.path()))
        .await
        .unwrap();
    assert_eq!(new.shard_count(), SqliteOptions::NEW_SHARD_COUNT);
    assert_eq!(SqliteOptions::NEW_SHARD_COUNT, 8);
    new.close().await;

    let path = b.path();
    let old = SqliteJournal::open(SqliteOptions::new(&path).shard_count(64))
        .await
        .unwrap();
    let key = EntityKey::new("counter", "c").unwrap();
    let message = NewMessage::new(
        key.clone(),
        Payload::encode("counter.cmd", 1, &1u64).unwrap(),
    );
    old.append(vec![message]).await.unwrap();
    let shard = old.shard_of(&key);
    old.close().await;
    drop(old);
    let reopened = SqliteJournal::open(SqliteOptions::new(&path))
        .await
        .unwrap();
    assert_eq!(reopened.shard_count(), 64, "the stored count is adopted");
    assert_eq!(reopened.shard_of(&key), shard);
    assert_eq!(
        reopened.head(shard).await.unwrap(),
        1,
        "the entry is still there"
    );
    reopened.close().await;
    drop(reopened);
    let err = SqliteJournal::open(SqliteOptions::new(&path).shard_count(8))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::ShardCountMismatch {
                stored: 64,
                requested: 8
            }
        ),
        "got {err:?}"
    );
}
