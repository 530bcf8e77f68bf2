//! Opening a PostgreSQL journal: options, schema, migrations, and the stored metadata.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::OnceCell;

use super::{Inner, PgJournal};
use crate::common::Common;
use crate::envelope::DEFAULT_MAX_PAYLOAD_BYTES;
use crate::error::{JournalError, Result};
use crate::liveness::Liveness;
use crate::meta::{FORMAT_VERSION, Meta, adopt_shape, check_meta};
use crate::pool::Pool;
use crate::read;
use crate::shard_groups::{ShardGroup, ShardLayout, ShardMap};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How to reach and shape a PostgreSQL journal. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connection URL (`postgres://user@host:port/db`).
    pub url: String,
    /// Schema holding the journal's tables. Default `entlog`.
    pub schema: String,
    /// Number of shards; fixed when the journal is created, checked on every later open.
    /// Default 0: an existing journal's count, [`PgOptions::NEW_SHARD_COUNT`] for a new one.
    pub shard_count: u32,
    /// Named shard groups at the end of the shards (see [`crate::shard_groups`]); fixed
    /// with the shard count. Default none: every shard in the default group. With none
    /// configured and a shard count of 0, an existing journal's groups are adopted.
    pub shard_groups: Vec<ShardGroup>,
    /// Largest accepted payload in bytes. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Pooled connections (shard locks use their own, outside the pools). Default 10.
    /// Two thirds (at least one) serve the journal's own single statements, the rest (at
    /// least one) transactions and the application's statements (see [`PgJournal::pool`]).
    pub max_connections: u32,
    /// Send NOTIFY on append so tailers in other processes wake at once. Default true.
    /// Without it, other processes find new entries only by polling.
    pub notify: bool,
    /// How soon a runner that stopped answering loses its shards, on its side and on the
    /// server's (see [`Liveness`]). Default: heartbeat every 250 ms, the runner stops
    /// writing 1.75 s after its last good one, the server frees its locks after 3 s.
    pub liveness: Liveness,
    /// Where the lock session connects, when not at `url`. Session advisory locks need a
    /// real server session: with a transaction-mode pooler (PgBouncer) in front of the
    /// pool, point this at PostgreSQL itself. Default `None`: `url`.
    pub lock_url: Option<String>,
}

impl PgOptions {
    /// Shards of a journal created with a shard count of 0: enough to spread over a few
    /// dozen runners.
    pub const NEW_SHARD_COUNT: u32 = 64;

    /// Options for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            schema: "entlog".into(),
            shard_count: 0,
            shard_groups: Vec::new(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: 10,
            notify: true,
            liveness: Liveness::default(),
            lock_url: None,
        }
    }

    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    crate::meta::shape_setters!();

    /// Sets the pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Turns NOTIFY on append on or off.
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// Sets the liveness bounds of lock sessions.
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// Sets where the lock session connects.
    pub fn lock_url(mut self, url: impl Into<String>) -> Self {
        self.lock_url = Some(url.into());
        self
    }

    /// Connection options of the pool: the journal's schema on the search path, JIT off,
    /// and a transaction left idle longer than the liveness bound ended by the server.
    ///
    /// Why the idle-transaction bound: a stalled process's open transaction holds row
    /// locks (a shard's head row) that the next owner needs; the server ends it so that
    /// failover does not wait for the process.
    ///
    /// Why JIT off: the journal's statements are short index walks, but the planner's cost
    /// estimate for a custom plan of the many-shard mailbox read (and of the array-taking
    /// functions) passes `jit_above_cost`, and compiling takes far longer than the query:
    /// measured here, 206 ms with JIT against 14 ms without for the same mailbox read.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        self.options_for(&self.url, self.liveness.pool_settings())
    }

    /// Connection options of the lock session: as the pool's, with the lock session's
    /// timeouts (see [`Liveness`]).
    pub(crate) fn lock_connect_options(&self) -> Result<PgConnectOptions> {
        let url = self.lock_url.as_deref().unwrap_or(&self.url);
        self.options_for(url, self.liveness.lock_session_settings())
    }

    fn options_for(
        &self,
        url: &str,
        settings: Vec<(&'static str, String)>,
    ) -> Result<PgConnectOptions> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| JournalError::Config(format!("bad PostgreSQL URL: {e}")))?;
        let mut all = vec![
            ("search_path", self.schema.clone()),
            ("jit", "off".to_owned()),
        ];
        all.extend(settings);
        Ok(opts.options(all))
    }
}

fn check_schema_name(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 50
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(JournalError::Config(format!(
            "schema name {schema:?} must be 1-50 characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

pub(super) async fn open(mut options: PgOptions) -> Result<PgJournal> {
    check_schema_name(&options.schema)?;
    options.liveness.check()?;
    if options.shard_count > i32::MAX as u32 {
        return Err(JournalError::Config(format!(
            "shard count {} is out of range",
            options.shard_count
        )));
    }
    let pool = connect(&options).await?;

    // Look before touching anything: a journal of another shard count or format version
    // is refused with nothing changed.
    let existing = read::meta(Pool::Postgres(&pool)).await?;
    adopt_shape(
        &mut options.shard_count,
        &mut options.shard_groups,
        existing.as_ref(),
        PgOptions::NEW_SHARD_COUNT,
    );
    let layout = ShardLayout::new(options.shard_count, &options.shard_groups)?;
    if let Some(meta) = &existing {
        check_meta(meta, options.shard_count, &options.shard_groups)?;
    }

    let create_schema = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", options.schema);
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create_schema.clone()))
        .execute(&pool)
        .await
    {
        // Two creators racing on IF NOT EXISTS: the loser sees a unique violation; retry.
        tracing::debug!(error = %e, "CREATE SCHEMA raced; retrying");
        sqlx::query(sqlx::AssertSqlSafe(create_schema))
            .execute(&pool)
            .await?;
    }
    MIGRATOR.run(&pool).await?;

    let mut tx = pool.begin().await?;
    let namespace = (uuid::Uuid::now_v7().as_u128() & 0x7fff_ffff) as i32;
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('format_version', $1), ('shard_count', $2), ('lock_namespace', $3),
                                             ('shard_groups', $4)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(FORMAT_VERSION.to_string())
    .bind(options.shard_count.to_string())
    .bind(namespace.to_string())
    .bind(layout.encode())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let meta = read::meta(Pool::Postgres(&pool))
        .await?
        .ok_or_else(|| JournalError::Internal("journal metadata vanished after creation".into()))?;
    check_meta(&meta, options.shard_count, &options.shard_groups)?;
    sqlx::query(
        "INSERT INTO shards (shard) SELECT generate_series(0, $1 - 1) ON CONFLICT (shard) DO NOTHING",
    )
    .bind(options.shard_count as i32)
    .execute(&pool)
    .await?;

    assemble(pool, options, meta).await
}

/// Opens a journal that must already exist and be fully migrated, with the shard count
/// it was created with; changes nothing in the database (tools use this).
pub(super) async fn open_existing(mut options: PgOptions) -> Result<PgJournal> {
    check_schema_name(&options.schema)?;
    options.liveness.check()?;
    let pool = connect(&options).await?;
    let location = format!("schema {:?}", options.schema);
    let meta = read::existing_meta(Pool::Postgres(&pool), &location, &MIGRATOR).await?;
    options.shard_count = meta.shard_count;
    options.shard_groups = meta.layout.named();
    assemble(pool, options, meta).await
}

/// The journal's pool, after one plain connection: a pool alone would report an
/// unreachable server or a refused login only as a 10 s acquire timeout.
async fn connect(options: &PgOptions) -> Result<PgPool> {
    let connect_options = options.connect_options()?;
    let probe = <sqlx::PgConnection as sqlx::Connection>::connect_with(&connect_options);
    let waited = Duration::from_secs(10);
    let conn =
        tokio::time::timeout(waited, probe)
            .await
            .map_err(|_| JournalError::Unreachable {
                location: format!(
                    "{}:{}",
                    connect_options.get_host(),
                    connect_options.get_port()
                ),
                waited,
            })??;
    sqlx::Connection::close(conn).await?;
    let (_, size) = pool_sizes(options.max_connections);
    Ok(pool_options(size)
        .after_release(|conn, _| Box::pin(released_outside_transaction(conn)))
        .connect_with(connect_options)
        .await?)
}

/// `max_connections` split between the statements pool (two thirds) and the main pool
/// (the rest), each at least one: together no more than configured, except that a budget
/// of one still gets one connection in each.
fn pool_sizes(max_connections: u32) -> (u32, u32) {
    let main = (max_connections / 3).max(1);
    (max_connections.saturating_sub(main).max(1), main)
}

/// What both pools share: an acquire timeout, a ping only after idling.
fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| Box::pin(alive_after_idle(conn, meta.idle_for)))
}

/// The pool of the journal's own single statements: as the main pool, without the
/// release check (nothing run on it opens a transaction), connecting on first use.
fn statements_pool(options: &PgOptions) -> Result<PgPool> {
    let (size, _) = pool_sizes(options.max_connections);
    Ok(pool_options(size).connect_lazy_with(options.connect_options()?))
}

/// Whether the session is outside any transaction block: in one, `now()` is the time the
/// block began, earlier than this statement's start; outside, both are this statement's
/// start (PostgreSQL starts the implicit transaction with the statement's timestamp, as
/// the simple-query protocol sends the statement in one message). A transaction that
/// wrote has an xid, which no bare `SELECT` outside a block has: that case, where an
/// acknowledged write could be lost, does not even rest on the clock.
///
/// Sent with the simple-query protocol on purpose (`raw_sql`): with the extended protocol
/// the statement timestamp is taken again at Execute, after the transaction began.
const OUTSIDE_TRANSACTION: &str =
    "SELECT now() = statement_timestamp() AND txid_current_if_assigned() IS NULL";

/// `after_release`: a connection that comes back inside a transaction is closed, never
/// reused.
///
/// # Why
///
/// sqlx does not roll back a `begin()` whose future was cancelled after `BEGIN` was sent
/// but before the server's reply: the connection returns to the pool inside an open
/// transaction, and a later `append` on it returned `Ok(offset)` for a write that was
/// never committed. Closing the connection makes the server roll that transaction back.
///
/// # Cost
///
/// sqlx 0.9 keeps a PostgreSQL connection's transaction status (from `ReadyForQuery`)
/// private, and its public `is_in_transaction()` counts only transactions it finished
/// beginning — exactly not this case. Only a query can tell, so this adds one round trip
/// per release. In exchange the pool no longer pings every connection on acquire (sqlx's
/// `test_before_acquire`): a connection checked on its release is pinged again only if it
/// sat idle (see [`alive_after_idle`]). A busy connection thus costs the same round trips
/// per use as before (release check + sqlx's own release ping, instead of acquire ping +
/// release ping).
async fn released_outside_transaction(conn: &mut sqlx::PgConnection) -> sqlx::Result<bool> {
    let row = sqlx::raw_sql(OUTSIDE_TRANSACTION)
        .fetch_one(&mut *conn)
        .await?;
    let outside: Option<bool> = row.try_get(0)?;
    let outside = outside.unwrap_or(false);
    if !outside {
        tracing::warn!("a pooled connection came back inside a transaction; closing it");
    }
    Ok(outside)
}

/// A connection idle for longer than this is pinged before it is handed out (a shorter
/// idle one was checked by [`released_outside_transaction`] moments ago).
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// `before_acquire`: pings a connection that sat idle for [`PING_AFTER_IDLE`] or longer,
/// so that one the server or the network dropped meanwhile is replaced, not handed out.
async fn alive_after_idle(conn: &mut sqlx::PgConnection, idle_for: Duration) -> sqlx::Result<bool> {
    if idle_for >= PING_AFTER_IDLE {
        sqlx::Connection::ping(conn).await?;
    }
    Ok(true)
}

async fn assemble(pool: PgPool, options: PgOptions, meta: Meta) -> Result<PgJournal> {
    let channel = format!("entlog_{}", options.schema);
    let clock = Arc::new(super::clock::ServerClock::measure(&pool).await?);
    let shard_map = Arc::new(ShardMap::new(meta.layout, &meta.types)?);
    Ok(PgJournal {
        inner: Arc::new(Inner {
            statements: statements_pool(&options)?,
            pool,
            common: Common::new(shard_map, options.max_payload_bytes),
            lock_namespace: meta.lock_namespace,
            channel,
            held_here: Arc::new(super::held_here::HeldHere::new(options.shard_count)),
            listener: OnceCell::new(),
            clock,
            options,
        }),
    })
}
