//! The `Projection` trait an application implements, and its object-safe form.

use std::future::Future;
use std::pin::Pin;

use entlog_journal::{AnyTx, Entry, JournalError};

/// What a projection's handler can fail with. A failure stops the projection at that
/// event (it is retried with back-off, never skipped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The handler's own reason.
    #[error("{0}")]
    Handler(String),
    /// A read-model query failed.
    #[error("read-model query failed: {0}")]
    Sql(#[from] sqlx::Error),
    /// The journal failed (or an event did not decode).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A read model folded from the journal's events.
///
/// `apply` receives events of one shard in offset order and writes the read model inside
/// `tx`; the projector moves the projection's checkpoint in the same transaction, so each
/// event is applied exactly once, whatever crashes in between (invariant 9).
///
/// The same statements run on SQLite and PostgreSQL (`$n` parameters):
///
/// ```
/// use entlog_journal::{AnyTx, Entry, sql};
/// use entlog_projections::{Projection, ProjectionError};
///
/// /// Visits per page, from the `page` entities' events (each a `u64`: visits added).
/// struct Visits;
///
/// impl Projection for Visits {
///     fn name(&self) -> &str {
///         "visits"
///     }
///
///     fn wants(&self, entity_type: &str) -> bool {
///         entity_type == "page"
///     }
///
///     async fn setup(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
///         tx.execute(sql("CREATE TABLE IF NOT EXISTS visits (page TEXT PRIMARY KEY, n BIGINT NOT NULL)"))
///             .await?;
///         Ok(())
///     }
///
///     async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
///         for e in events {
///             let added: u64 = e.payload.decode()?;
///             tx.execute(
///                 sql("INSERT INTO visits (page, n) VALUES ($1, $2)
///                      ON CONFLICT (page) DO UPDATE SET n = visits.n + $2")
///                 .bind(e.entity.entity_id())
///                 .bind(added as i64),
///             )
///             .await?;
///         }
///         Ok(())
///     }
///
///     async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
///         tx.execute(sql("DELETE FROM visits")).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the key of the projection's checkpoints.
    fn name(&self) -> &str;

    /// Whether events of this entity type concern the projection.
    fn wants(&self, entity_type: &str) -> bool;

    /// Applies events (one shard, offset order, only wanted types) to the read model.
    fn apply(
        &self,
        tx: &mut AnyTx,
        events: &[Entry],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Empties the read model, for a rebuild.
    fn reset(&self, tx: &mut AnyTx) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Creates the read model's tables if they are missing (`CREATE TABLE IF NOT EXISTS`,
    /// so it may run any number of times). The cluster runs it at start, before any event
    /// is applied, and a rebuild before it resets. Does nothing by default.
    fn setup(&self, tx: &mut AnyTx) -> impl Future<Output = Result<(), ProjectionError>> + Send {
        let _ = tx;
        async { Ok(()) }
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Projection`] with boxed futures, so projections of different types share a list.
pub trait DynProjection: Send + Sync + 'static {
    /// See [`Projection::name`].
    fn name(&self) -> &str;
    /// See [`Projection::wants`].
    fn wants(&self, entity_type: &str) -> bool;
    /// See [`Projection::apply`].
    fn apply<'a>(
        &'a self,
        tx: &'a mut AnyTx,
        events: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
    /// See [`Projection::reset`].
    fn reset<'a>(&'a self, tx: &'a mut AnyTx) -> BoxFuture<'a, Result<(), ProjectionError>>;
    /// See [`Projection::setup`].
    fn setup<'a>(&'a self, tx: &'a mut AnyTx) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

impl<P: Projection> DynProjection for P {
    fn name(&self) -> &str {
        Projection::name(self)
    }

    fn wants(&self, entity_type: &str) -> bool {
        Projection::wants(self, entity_type)
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut AnyTx,
        events: &'a [Entry],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(Projection::apply(self, tx, events))
    }

    fn reset<'a>(&'a self, tx: &'a mut AnyTx) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(Projection::reset(self, tx))
    }

    fn setup<'a>(&'a self, tx: &'a mut AnyTx) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(Projection::setup(self, tx))
    }
}

/// Runs `projection`'s [`setup`](Projection::setup) in a transaction of its own.
pub async fn set_up(
    journal: &entlog_journal::AnyJournal,
    projection: &dyn DynProjection,
) -> Result<(), ProjectionError> {
    let mut tx = journal.begin().await?;
    projection.setup(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Prefix of every projection's checkpoint consumer name.
const CHECKPOINT_PREFIX: &str = "projection:";

/// The checkpoint consumer name of a projection.
pub fn checkpoint_name(projection: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{projection}")
}

/// The projection a checkpoint consumer name belongs to, if it is one's.
pub fn projection_of(consumer: &str) -> Option<&str> {
    consumer.strip_prefix(CHECKPOINT_PREFIX)
}
