//! The journal's stored metadata: format version, shard count and groups, lock namespace,
//! and the shard group of each entity type registered.

use crate::error::{JournalError, Result};
use crate::shard_groups::{ShardGroup, ShardLayout, encode_groups};

/// The storage format this build writes and reads. Bump with any incompatible change of
/// tables, checksum layout or shard function.
pub const FORMAT_VERSION: u32 = 1;

/// Metadata stored in the journal when it is created.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub format_version: u32,
    pub shard_count: u32,
    /// First key of the two-key advisory locks of this journal (PostgreSQL).
    pub lock_namespace: i32,
    /// The shards' groups (one default group in journals created without any).
    pub layout: ShardLayout,
    /// (entity type, group) of every type registered so far.
    pub types: Vec<(String, String)>,
}

/// The metadata key of the named shard groups.
pub(crate) const SHARD_GROUPS_KEY: &str = "shard_groups";

/// Parses the key/value rows; `None` when the journal was never initialised.
pub(crate) fn parse_meta(pairs: &[(String, String)]) -> Result<Option<Meta>> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let Some(version) = get("format_version") else {
        return Ok(None);
    };
    let bad = |k: &str, v: &str| {
        JournalError::Config(format!("journal metadata {k} = {v:?} is unreadable"))
    };
    let format_version = version
        .parse()
        .map_err(|_| bad("format_version", version))?;
    if format_version != FORMAT_VERSION {
        return Err(JournalError::UnsupportedFormat {
            found: format_version,
            supported: FORMAT_VERSION,
        });
    }
    let shards = get("shard_count").unwrap_or("");
    let namespace = get("lock_namespace").unwrap_or("0");
    let shard_count = shards.parse().map_err(|_| bad("shard_count", shards))?;
    let types = pairs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("group:")?.to_owned(), v.clone())))
        .collect();
    Ok(Some(Meta {
        format_version,
        shard_count,
        lock_namespace: namespace
            .parse()
            .map_err(|_| bad("lock_namespace", namespace))?,
        layout: ShardLayout::decode(shard_count, get(SHARD_GROUPS_KEY).unwrap_or(""))?,
        types,
    }))
}

/// Refuses a journal of another format version, shard count or shard groups.
pub(crate) fn check_meta(meta: &Meta, shard_count: u32, groups: &[ShardGroup]) -> Result<()> {
    if meta.format_version != FORMAT_VERSION {
        return Err(JournalError::UnsupportedFormat {
            found: meta.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if meta.shard_count != shard_count {
        return Err(JournalError::ShardCountMismatch {
            stored: meta.shard_count,
            requested: shard_count,
        });
    }
    if meta.layout.named() != groups {
        return Err(JournalError::ShardGroupsMismatch {
            stored: meta.layout.encode(),
            requested: encode_groups(groups),
        });
    }
    Ok(())
}

/// Counts the migrations applied to a journal's database.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT count(*) FROM _sqlx_migrations WHERE success";

/// Refuses a journal with fewer migrations applied than `migrator` knows.
pub(crate) fn check_migrated(
    location: &str,
    applied: i64,
    migrator: &sqlx::migrate::Migrator,
) -> Result<()> {
    let applied = u64::try_from(applied).unwrap_or(0);
    let expected = migrator.iter().count() as u64;
    if applied < expected {
        return Err(JournalError::Outdated {
            location: location.to_owned(),
            applied,
            expected,
        });
    }
    Ok(())
}

/// The shard count and groups to open with. A count of 0 (the options' default) takes an
/// existing journal's count, and its groups too unless some are configured (those are then
/// checked against the stored ones); with no journal there yet, 0 is `new_journal`, the
/// backend's count for a journal it creates.
pub(crate) fn adopt_shape(
    shard_count: &mut u32,
    groups: &mut Vec<ShardGroup>,
    existing: Option<&Meta>,
    new_journal: u32,
) {
    match (*shard_count, existing) {
        (0, Some(meta)) => {
            *shard_count = meta.shard_count;
            if groups.is_empty() {
                *groups = meta.layout.named();
            }
        }
        (0, None) => *shard_count = new_journal,
        _ => {}
    }
}

/// The setters both backends' options have, for the fields that shape a journal and
/// limit its payloads (`shard_count`, `shard_groups`, `max_payload_bytes`); expanded
/// inside `impl PgOptions` and `impl SqliteOptions`.
macro_rules! shape_setters {
    () => {
        /// Sets the shard count.
        pub fn shard_count(mut self, n: u32) -> Self {
            self.shard_count = n;
            self
        }

        /// Sets the named shard groups.
        pub fn shard_groups(mut self, groups: Vec<crate::shard_groups::ShardGroup>) -> Self {
            self.shard_groups = groups;
            self
        }

        /// Sets the payload limit.
        pub fn max_payload_bytes(mut self, n: usize) -> Self {
            self.max_payload_bytes = n;
            self
        }
    };
}
pub(crate) use shape_setters;
