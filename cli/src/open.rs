//! Which journal a command talks to, and how it opens it.

use entlog_journal::{
    Access, AnyJournal, EntityKey, PgJournal, PgOptions, SqliteJournal, SqliteOptions,
};

use crate::error::CliError;

/// A journal location from `--db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A PostgreSQL URL and the journal's schema.
    Postgres { url: String, schema: String },
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
}

impl Location {
    /// Reads `--db`: `postgres://…` / `postgresql://…`, `sqlite://path`, `sqlite:path`, or
    /// a plain file path. Anything else that starts like a URL (`postgres:/oops`,
    /// `mysql://…`) is refused rather than taken for a file name.
    pub(crate) fn parse(db: &str, schema: &str) -> Result<Location, CliError> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Ok(Location::Postgres {
                url: db.to_owned(),
                schema: schema.to_owned(),
            });
        }
        if let Some(path) = db
            .strip_prefix("sqlite://")
            .or_else(|| db.strip_prefix("sqlite:"))
        {
            return Ok(Location::Sqlite(path.into()));
        }
        let scheme = db.split_once(':').map(|(s, _)| s);
        if scheme.is_some_and(|s| {
            s.len() > 1 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
        }) {
            return Err(CliError::BadArgument {
                what: "--db",
                value: db.to_owned(),
                reason: "neither a PostgreSQL URL (postgres://user@host/db) nor a SQLite file \
                         (a path, or sqlite:path)"
                    .into(),
            });
        }
        Ok(Location::Sqlite(db.into()))
    }
}

/// What a command needs to do with the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Look only; on SQLite, beside a running owner.
    Read,
    /// Write (prune, rebuild); on SQLite, the owning process must be stopped.
    Write,
}

/// Opens an existing, migrated journal (never creating one).
pub(crate) async fn existing(location: &Location, need: Need) -> Result<AnyJournal, CliError> {
    Ok(match location {
        Location::Postgres { url, schema } => PgJournal::open_existing(
            PgOptions::new(url.clone())
                .schema(schema.clone())
                .max_connections(4),
        )
        .await?
        .into(),
        Location::Sqlite(path) => {
            let access = match need {
                Need::Read => Access::ReadOnly,
                Need::Write => Access::ReadWrite,
            };
            SqliteJournal::open_existing(SqliteOptions::new(path.clone()), access)
                .await?
                .into()
        }
    })
}

/// Creates the journal or applies its pending migrations; `shards` for a new one (an
/// existing one keeps its count; `None` means the backend's default for a new one).
pub(crate) async fn migrate(
    location: &Location,
    shards: Option<u32>,
) -> Result<AnyJournal, CliError> {
    // 0 adopts an existing journal's count; a new one gets the backend's default.
    let count = shards.unwrap_or(0);
    Ok(match location {
        Location::Postgres { url, schema } => PgJournal::open(
            PgOptions::new(url.clone())
                .schema(schema.clone())
                .max_connections(2)
                .shard_count(count),
        )
        .await?
        .into(),
        Location::Sqlite(path) => {
            SqliteJournal::open(SqliteOptions::new(path.clone()).shard_count(count))
                .await?
                .into()
        }
    })
}

/// Parses `TYPE/ID`.
pub(crate) fn entity(address: &str) -> Result<EntityKey, CliError> {
    let (t, id) = address
        .split_once('/')
        .ok_or_else(|| CliError::BadAddress(address.to_owned()))?;
    Ok(EntityKey::new(t, id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_addresses() {
        assert_eq!(
            Location::parse("postgres://u@h/db", "s").unwrap(),
            Location::Postgres {
                url: "postgres://u@h/db".into(),
                schema: "s".into()
            }
        );
        assert_eq!(
            Location::parse("sqlite://a/b.db", "s").unwrap(),
            Location::Sqlite("a/b.db".into())
        );
        assert_eq!(
            Location::parse("b.db", "s").unwrap(),
            Location::Sqlite("b.db".into())
        );
        assert_eq!(
            Location::parse("./odd:name.db", "s").unwrap(),
            Location::Sqlite("./odd:name.db".into())
        );
        for bad in ["postgres:/oops", "postgresql:oops", "mysql://u@h/db"] {
            assert!(
                matches!(Location::parse(bad, "s"), Err(CliError::BadArgument { .. })),
                "{bad}"
            );
        }
        assert_eq!(entity("account/a/b").unwrap().entity_id(), "a/b");
        assert!(matches!(entity("account"), Err(CliError::BadAddress(_))));
        assert!(matches!(entity("account/"), Err(CliError::Journal(_))));
    }
}
