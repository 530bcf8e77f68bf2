//! Shared pieces of the journal benchmark: the run's `Settings` (full or quick), and the
//! messages every benchmark appends (`Gen`, which makes them from a ~100-byte `Cmd`).

use std::time::Duration;

use entlog_journal::{EntityKey, NewMessage, Payload, shard_of};
use serde::Serialize;

use crate::{ENTITIES, ENTITY_TYPE};

/// Run settings: full, or quick (`ENTLOG_BENCH_QUICK=1`) for a smoke test.
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) warm_up: Duration,
    pub(crate) measure: Duration,
    pub(crate) read_entries: usize,
}

impl Settings {
    pub(crate) fn from_env() -> Self {
        let quick = std::env::var("ENTLOG_BENCH_QUICK").is_ok_and(|v| v == "1");
        if quick {
            Settings {
                quick,
                warm_up: Duration::from_millis(100),
                measure: Duration::from_millis(300),
                read_entries: 10_000,
            }
        } else {
            Settings {
                quick,
                warm_up: Duration::from_secs(1),
                measure: Duration::from_secs(3),
                read_entries: 100_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Messages

/// The command every benchmark appends; about 100 bytes of postcard.
#[derive(Serialize)]
struct Cmd {
    account: String,
    amount: i64,
    counter: u64,
    note: String,
}

/// Makes batches of fresh messages (uuid v7 ids) spread over `ENTITIES` entities.
pub(crate) struct Gen {
    keys: Vec<EntityKey>,
    next: usize,
}

impl Gen {
    pub(crate) fn new() -> Self {
        let keys = (0..ENTITIES)
            .map(|i| EntityKey::new(ENTITY_TYPE, format!("account-{i:05}")).unwrap())
            .collect();
        Gen { keys, next: 0 }
    }

    /// Keys whose id falls into shard `shard` of `shard_count`, for filling one shard.
    pub(crate) fn for_shard(shard: u32, shard_count: u32) -> Self {
        let keys: Vec<EntityKey> = (0..)
            .map(|i| format!("account-{i:05}"))
            .filter(|id| shard_of(id, shard_count) == shard)
            .take(ENTITIES)
            .map(|id| EntityKey::new(ENTITY_TYPE, id).unwrap())
            .collect();
        Gen { keys, next: 0 }
    }

    pub(crate) fn message(&mut self) -> NewMessage {
        let i = self.next;
        self.next += 1;
        // A stride coprime with ENTITIES walks every entity before repeating one.
        let key = self.keys[(i * 7_919) % self.keys.len()].clone();
        let cmd = Cmd {
            account: key.entity_id().to_owned(),
            amount: (i as i64 % 10_000) - 5_000,
            counter: i as u64,
            note: "benchmark command payload, padded to about one hundred bytes of postcard".into(),
        };
        NewMessage::new(key, Payload::encode("bench.Cmd", 1, &cmd).unwrap())
    }

    pub(crate) fn batch(&mut self, n: usize) -> Vec<NewMessage> {
        (0..n).map(|_| self.message()).collect()
    }
}
