//! The journal's stored metadata: format version, shard count, lock namespace.

use crate::error::{JournalError, Result};

/// The storage format this build writes and reads. Bump with any incompatible change of
/// tables, checksum layout or shard function.
pub const FORMAT_VERSION: u32 = 1;

/// Metadata stored in the journal when it is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub format_version: u32,
    pub shard_count: u32,
    /// First key of the two-key advisory locks of this journal (PostgreSQL).
    pub lock_namespace: i32,
}

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
    Ok(Some(Meta {
        format_version,
        shard_count: shards.parse().map_err(|_| bad("shard_count", shards))?,
        lock_namespace: namespace
            .parse()
            .map_err(|_| bad("lock_namespace", namespace))?,
    }))
}

/// Refuses a journal of another format version or shard count.
pub(crate) fn check_meta(meta: &Meta, shard_count: u32) -> Result<()> {
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

/// The shard count to open with: `requested`, or for 0 the existing journal's; 0 with no
/// journal there is [`JournalError::NotFound`] (creating one needs a count).
pub(crate) fn adopt_shard_count(
    requested: u32,
    existing: Option<&Meta>,
    location: impl FnOnce() -> String,
) -> Result<u32> {
    match (requested, existing) {
        (0, Some(meta)) => Ok(meta.shard_count),
        (0, None) => Err(JournalError::NotFound {
            location: location(),
        }),
        (n, _) => Ok(n),
    }
}
