//! The journal's clock on PostgreSQL: the server's time, read without a round trip.
//!
//! Every member of a cluster stamps rows and decides which timers are due, so they must
//! agree on the time even when their hosts' clocks do not. The clock keeps the offset
//! between this host's clock and the server's `clock_timestamp()`, measured at open and
//! again every [`REFRESH`] in the background; [`ServerClock::now`] is the local time
//! plus that offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::error::Result;
use crate::time::Timestamp;

/// How often the offset is measured again.
pub(crate) const REFRESH: Duration = Duration::from_secs(30);

/// A measurement whose round trip took longer than this is not trusted.
const MAX_ROUND_TRIP: Duration = Duration::from_millis(500);

/// The server's clock as an offset from this host's.
#[derive(Debug)]
pub(crate) struct ServerClock {
    /// Server time minus local time, in microseconds.
    offset: AtomicI64,
    /// When the clock was made; `measured` counts from it.
    origin: Instant,
    /// When the offset was last measured (or tried), in milliseconds after `origin`:
    /// an atomic, since `now` runs for every handled message.
    measured: AtomicU64,
    refreshing: AtomicBool,
    /// Shifted by a test: no longer measured.
    shifted: AtomicBool,
}

impl ServerClock {
    /// A clock measured once against `pool`'s server.
    pub(crate) async fn measure(pool: &PgPool) -> Result<ServerClock> {
        let clock = ServerClock {
            offset: AtomicI64::new(0),
            origin: Instant::now(),
            measured: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            shifted: AtomicBool::new(false),
        };
        let (offset, _) = offset_of(pool).await?;
        clock.offset.store(offset, Ordering::Relaxed);
        Ok(clock)
    }

    /// The server's time now; starts a new measurement in the background when the last
    /// one is older than [`REFRESH`].
    pub(crate) fn now(self: &Arc<Self>, pool: &PgPool) -> Timestamp {
        let since = self
            .millis()
            .saturating_sub(self.measured.load(Ordering::Relaxed));
        if since >= REFRESH.as_millis() as u64 && !self.shifted.load(Ordering::Relaxed) {
            self.refresh(pool);
        }
        Timestamp(
            Timestamp::now()
                .as_micros()
                .saturating_add(self.offset.load(Ordering::Relaxed)),
        )
    }

    /// Moves this clock `micros` away from the server's (tests: a member whose clock
    /// disagrees with the host's, to show that every decision reads this one).
    #[cfg(feature = "testing")]
    pub(crate) fn shift(&self, micros: i64) {
        self.offset.fetch_add(micros, Ordering::Relaxed);
        self.shifted.store(true, Ordering::Relaxed);
    }

    /// Milliseconds since the clock was made.
    fn millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn refresh(self: &Arc<Self>, pool: &PgPool) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let (clock, pool) = (self.clone(), pool.clone());
        runtime.spawn(async move {
            match offset_of(&pool).await {
                Ok((offset, round_trip)) if round_trip <= MAX_ROUND_TRIP => {
                    clock.offset.store(offset, Ordering::Relaxed);
                }
                Ok((_, round_trip)) => {
                    tracing::debug!(?round_trip, "server clock not measured: slow round trip");
                }
                Err(e) => tracing::debug!(error = %e, "server clock not measured"),
            }
            // Measured or not, the next try is one period away.
            clock.measured.store(clock.millis(), Ordering::Relaxed);
            clock.refreshing.store(false, Ordering::Release);
        });
    }
}

/// One measurement: the server's `clock_timestamp()` against the midpoint of the round
/// trip on this host; the offset and its round trip (the best of up to three).
async fn offset_of(pool: &PgPool) -> Result<(i64, Duration)> {
    let mut best: Option<(Duration, i64)> = None;
    for _ in 0..3 {
        let sent = Instant::now();
        let local_before = Timestamp::now().as_micros();
        let server: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT")
                .fetch_one(pool)
                .await?;
        let round_trip = sent.elapsed();
        let local = local_before.saturating_add((round_trip.as_micros() / 2) as i64);
        let offset = server.saturating_sub(local);
        if best.is_none_or(|(rt, _)| round_trip < rt) {
            best = Some((round_trip, offset));
        }
        if round_trip < MAX_ROUND_TRIP / 10 {
            break;
        }
    }
    Ok(best.map_or((0, Duration::ZERO), |(rt, offset)| (offset, rt)))
}
