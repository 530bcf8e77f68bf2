//! Cron: a message to an entity, or a task, at every tick of a cron expression.
//!
//! Each schedule is driven by a [singleton](crate::SingletonContext) named
//! `cron:<schedule name>`, so one runner at a time drives it and it moves with its shard.
//! The driver keeps the last tick it handled in the `cron_schedules` table; on start it
//! goes on from there.
//!
//! # Once per tick
//!
//! - **Messages** ([`ClusterBuilder::cron_message`](crate::ClusterBuilder::cron_message)): a tick's message has a deterministic
//!   id, a uuid v5 of the schedule name and the tick time, so sending it twice — a driver
//!   that crashed between sending and recording, or two drivers overlapping during a
//!   failover — journals it once: the entity handles each tick once (effectively once).
//! - **Tasks** ([`ClusterBuilder::cron_task`](crate::ClusterBuilder::cron_task)): the driver first claims the tick in the
//!   table (a compare-and-set that moves `last_tick` forward), then runs the task. At most
//!   once per tick: a tick whose task was cut off by a crash is not run again.
//!
//! # Missed ticks
//!
//! Ticks missed while no driver ran (no runner alive, a failover, a driver that fell
//! behind) are **coalesced**: only the most recent missed tick fires, once, late — and
//! only if it is at most `max_catch_up` late ([`DEFAULT_MAX_CATCH_UP`], 1 hour, settable
//! per schedule); otherwise it is skipped and recorded as handled. A tick counts as on
//! time within one second whatever `max_catch_up` says, so `max_catch_up` of zero means
//! "never catch up". The ticks before the most recent one never fire. A schedule that was
//! never driven before starts at its first tick after the driver's start.
//!
//! Expressions are read by [`croner`]: five fields (minute granularity) or six with
//! seconds first (`"*/5 * * * * *"`: every 5 seconds), POSIX weekdays (0 = Sunday),
//! `L`, `W`, `#` and `@daily`-style nicknames. Times are UTC.
//!
//! ```no_run
//! # use entlog_engine::{Cluster, CronSchedule, EngineError, Entity};
//! # async fn demo<Report: Entity>(cmd: Report::Command) -> Result<(), EngineError> {
//! let nightly = CronSchedule::new("nightly-report", "0 0 2 * * *")?; // 02:00:00 UTC
//! let cluster = Cluster::builder()
//!     .postgres("postgres://app@db/app")
//!     .cron_message::<Report>(nightly, "report-1", cmd)
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entlog_journal::{
    AnyJournal, AppendOutcome, EntityKey, Journal, JournalError, NewMessage, Payload, Timestamp,
    sql,
};
use uuid::Uuid;

use crate::entity::Entity;
use crate::error::EngineError;
use crate::metrics as m;
use crate::singleton::{BoxFuture, SingletonContext, TaskFn};

/// How late a missed tick may fire by default: 1 hour.
pub const DEFAULT_MAX_CATCH_UP: Duration = Duration::from_secs(3600);

/// A tick fired within this of its time is on time, whatever `max_catch_up` says: the
/// driver's wake-up is never exact.
const ON_TIME: Duration = Duration::from_secs(1);

/// Pause before retrying after a failed read, send or record.
const RETRY: Duration = Duration::from_millis(500);

/// Namespace of the uuid v5 ids of cron messages. Part of the format: the ids of firings
/// already journaled derive from it, and dedup across a restart depends on getting the
/// same id again. **Do not change.**
const FIRING_NAMESPACE: Uuid = Uuid::from_u128(0x6c2e_1f5a_9a3b_4e0d_8f61_2b7c_d4e5_f601);

/// A named cron schedule: when to fire, and how late a missed tick may still fire.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    name: String,
    expression: String,
    cron: croner::Cron,
    max_catch_up: Duration,
}

impl CronSchedule {
    /// Parses `expression` (see the module docs) for the schedule `name`, which must be
    /// unique in the cluster and 1 to 200 bytes.
    pub fn new(name: impl Into<String>, expression: &str) -> Result<Self, EngineError> {
        let name = name.into();
        let invalid = |reason: String| EngineError::InvalidSchedule {
            name: name.clone(),
            expression: expression.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("the name must be 1 to 200 bytes".into()));
        }
        let cron = croner::Cron::from_str(expression).map_err(|e| invalid(e.to_string()))?;
        Ok(CronSchedule {
            expression: expression.to_owned(),
            name,
            cron,
            max_catch_up: DEFAULT_MAX_CATCH_UP,
        })
    }

    /// How late a missed tick may fire (see the module docs); default 1 hour.
    pub fn max_catch_up(mut self, max: Duration) -> Self {
        self.max_catch_up = max;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `t`; `None` if there is none.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let next = self.cron.find_next_occurrence(&to_utc(t)?, false).ok()?;
        let next = from_utc(next);
        // Sub-second parts are below the pattern's resolution: never answer `t` itself.
        if next > t {
            Some(next)
        } else {
            self.cron
                .find_next_occurrence(&to_utc(t.after(ON_TIME))?, true)
                .ok()
                .map(from_utc)
                .filter(|n| *n > t)
        }
    }

    /// The last tick at or before `t`; `None` if there is none.
    fn latest_until(&self, t: Timestamp) -> Option<Timestamp> {
        let prev = self.cron.find_previous_occurrence(&to_utc(t)?, true).ok()?;
        Some(from_utc(prev)).filter(|p| *p <= t)
    }

    /// What a driver whose last handled tick is `last` does at `now`.
    fn step(&self, last: Timestamp, now: Timestamp) -> Step {
        let Some(next) = self.next_after(last) else {
            return Step::Done;
        };
        if next > now {
            return Step::Wait(next);
        }
        // Every tick in (last, now] is due; the latest stands for them all.
        let latest = self
            .latest_until(now)
            .filter(|t| *t >= next)
            .unwrap_or(next);
        if now.since(latest) > self.max_catch_up.max(ON_TIME) {
            Step::Skip(latest)
        } else {
            Step::Fire(latest)
        }
    }
}

fn to_utc(t: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(t.as_micros())
}

fn from_utc(t: DateTime<Utc>) -> Timestamp {
    Timestamp(t.timestamp_micros())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing is due before this tick.
    Wait(Timestamp),
    /// Fire this tick (standing for every earlier tick not yet handled).
    Fire(Timestamp),
    /// This tick (and every earlier one) is too late to fire: record it as handled.
    Skip(Timestamp),
    /// The expression has no further ticks.
    Done,
}

/// The id of the message a schedule sends for a tick: the same on every runner and after
/// every restart, so the journal keeps one message per tick.
pub fn firing_id(schedule: &str, tick: Timestamp) -> Uuid {
    Uuid::new_v5(
        &FIRING_NAMESPACE,
        format!("{schedule}\n{}", tick.as_micros()).as_bytes(),
    )
}

/// Makes a tick's message payload from the tick's time.
pub(crate) type MakePayload = dyn Fn(Timestamp) -> Result<Payload, JournalError> + Send + Sync;
/// A cron task, as registered: given the singleton's context and the tick's time.
pub(crate) type CronTaskFn = dyn Fn(SingletonContext, Timestamp) -> BoxFuture + Send + Sync;

/// What a schedule does at a tick.
enum Action {
    Message {
        to: EntityKey,
        payload: Box<MakePayload>,
    },
    Task(Box<CronTaskFn>),
}

/// The driver of `schedule` sending entity `id` of type `E` the payload `make` gives
/// for each tick: the name and task of its singleton. An invalid id is an error.
pub(crate) fn message_driver<E: Entity>(
    schedule: CronSchedule,
    id: String,
    make: Box<MakePayload>,
) -> Result<(String, TaskFn), EngineError> {
    let to = EntityKey::new(E::TYPE, id)?;
    Ok(driver(schedule, Action::Message { to, payload: make }))
}

/// The driver of `schedule` running `task` at each tick: the name and task of its
/// singleton.
pub(crate) fn task_driver(schedule: CronSchedule, task: Box<CronTaskFn>) -> (String, TaskFn) {
    driver(schedule, Action::Task(task))
}

/// The singleton `cron:<schedule name>` that drives `schedule`.
fn driver(schedule: CronSchedule, action: Action) -> (String, TaskFn) {
    let name = format!("cron:{}", schedule.name);
    let schedule = Arc::new(schedule);
    let action = Arc::new(action);
    let task: TaskFn = Arc::new(move |ctx| Box::pin(drive(schedule.clone(), action.clone(), ctx)));
    (name, task)
}

/// The singleton that drives one schedule.
async fn drive(schedule: Arc<CronSchedule>, action: Arc<Action>, ctx: SingletonContext) {
    let journal = ctx.client().journal().clone();
    let runner = ctx.runner_id().to_owned();
    let name = schedule.name.as_str();
    let mut last = loop {
        match load_or_create(&journal, name, &runner, journal.now()).await {
            Ok(t) => break t,
            Err(e) => {
                tracing::warn!(schedule = name, error = %e, "cannot read the schedule's last tick; retrying");
                if ctx.sleep(RETRY).await {
                    return;
                }
            }
        }
    };
    while !ctx.is_stopping() {
        let now = journal.now();
        let result = match schedule.step(last, now) {
            Step::Done => {
                tracing::info!(schedule = name, "the expression has no further ticks");
                ctx.stopped().await;
                return;
            }
            Step::Wait(tick) => {
                if ctx
                    .sleep(tick.since(now).max(Duration::from_millis(1)))
                    .await
                {
                    return;
                }
                continue;
            }
            Step::Skip(tick) => {
                tracing::warn!(schedule = name, late = ?now.since(tick), max_catch_up = ?schedule.max_catch_up,
                    "missed tick too late to fire; skipped");
                advance(&journal, name, tick, false, &runner)
                    .await
                    .map(|_| tick)
                    .map_err(EngineError::from)
            }
            Step::Fire(tick) => fire(&journal, &schedule, &action, &ctx, &runner, tick)
                .await
                .map(|()| tick),
        };
        match result {
            Ok(tick) => last = tick,
            Err(e) => {
                tracing::warn!(schedule = name, error = %e, "cron tick failed; retrying");
                if ctx.sleep(RETRY).await {
                    return;
                }
            }
        }
    }
}

/// Fires one tick and records it as handled.
async fn fire(
    journal: &AnyJournal,
    schedule: &CronSchedule,
    action: &Action,
    ctx: &SingletonContext,
    runner: &str,
    tick: Timestamp,
) -> Result<(), EngineError> {
    match action {
        Action::Message { to, payload } => {
            // Send, then record: a crash in between re-sends the same id, which the
            // journal drops.
            let message = NewMessage {
                entity: to.clone(),
                message_id: firing_id(&schedule.name, tick),
                payload: payload(tick)?,
                deliver_at: None,
                headers: Default::default(),
            };
            let outcomes = journal.append(vec![message]).await?;
            for o in &outcomes {
                match o {
                    AppendOutcome::Duplicate { .. } => {
                        metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1)
                    }
                    _ => metrics::counter!(m::MESSAGES_APPENDED).increment(1),
                }
            }
            advance(journal, &schedule.name, tick, true, runner).await?;
        }
        Action::Task(task) => {
            // Claim, then run: a driver that overlaps this one cannot claim the tick too.
            if advance(journal, &schedule.name, tick, true, runner).await? {
                task(ctx.clone(), tick).await;
            } else {
                tracing::info!(schedule = %schedule.name, "tick already handled by another driver");
            }
        }
    }
    Ok(())
}

/// The last tick handled by schedule `name`; a schedule seen for the first time starts at
/// `now` (nothing before its first driver fires).
async fn load_or_create(
    journal: &AnyJournal,
    name: &str,
    runner: &str,
    now: Timestamp,
) -> Result<Timestamp, JournalError> {
    journal
        .execute(
            sql(
                "INSERT INTO cron_schedules (name, last_tick, fired, runner, updated_at)
                 VALUES ($1, $2, FALSE, $3, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now.as_micros())
            .bind(runner),
        )
        .await?;
    let last: i64 = journal
        .fetch_optional(sql("SELECT last_tick FROM cron_schedules WHERE name = $1").bind(name))
        .await?
        .ok_or_else(|| JournalError::Internal(format!("cron schedule {name} vanished")))?
        .get(0)?;
    Ok(Timestamp(last))
}

/// Moves the schedule's last handled tick forward to `tick`; `false` if it already was
/// there or later (another driver got there first).
async fn advance(
    journal: &AnyJournal,
    name: &str,
    tick: Timestamp,
    fired: bool,
    runner: &str,
) -> Result<bool, JournalError> {
    let moved = journal
        .execute(
            sql(
                "UPDATE cron_schedules SET last_tick = $2, fired = $3, runner = $4, updated_at = $5
                  WHERE name = $1 AND last_tick < $2",
            )
            .bind(name)
            .bind(tick.as_micros())
            .bind(fired)
            .bind(runner)
            .bind(journal.now().as_micros()),
        )
        .await?;
    Ok(moved == 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 2026-01-01T00:00:00Z plus `secs` seconds and `micros` microseconds.
    fn at(secs: i64, micros: i64) -> Timestamp {
        Timestamp((1_767_225_600 + secs) * 1_000_000 + micros)
    }

    #[test]
    fn next_and_latest_ticks() {
        let every_second = CronSchedule::new("s", "* * * * * *").unwrap();
        assert_eq!(every_second.next_after(at(10, 0)), Some(at(11, 0)));
        assert_eq!(every_second.next_after(at(10, 500_000)), Some(at(11, 0)));
        assert_eq!(every_second.latest_until(at(10, 500_000)), Some(at(10, 0)));
        assert_eq!(every_second.latest_until(at(10, 0)), Some(at(10, 0)));
        let minutely = CronSchedule::new("m", "* * * * *").unwrap();
        assert_eq!(minutely.next_after(at(0, 1)), Some(at(60, 0)));
        assert_eq!(minutely.latest_until(at(119, 999_999)), Some(at(60, 0)));
    }

    #[test]
    fn steps_wait_fire_coalesce_and_skip() {
        let s = CronSchedule::new("s", "*/10 * * * * *")
            .unwrap()
            .max_catch_up(Duration::from_secs(30));
        // On time.
        assert_eq!(s.step(at(0, 0), at(5, 0)), Step::Wait(at(10, 0)));
        assert_eq!(s.step(at(0, 0), at(10, 2_000)), Step::Fire(at(10, 0)));
        // Down from 5 s to 45 s: ticks 10..40 missed; only 40 fires, 5 s late.
        assert_eq!(s.step(at(0, 0), at(45, 0)), Step::Fire(at(40, 0)));
        // Down until 100 s, where the latest missed tick (100) is on time.
        assert_eq!(s.step(at(0, 0), at(100, 0)), Step::Fire(at(100, 0)));
        // A 31-second-late tick is past max_catch_up: skipped.
        let daily = CronSchedule::new("d", "0 0 0 * * *")
            .unwrap()
            .max_catch_up(Duration::from_secs(30));
        assert_eq!(
            daily.step(at(-3 * 86_400, 0), at(31, 0)),
            Step::Skip(at(0, 0))
        );
        assert_eq!(
            daily.step(at(-3 * 86_400, 0), at(29, 0)),
            Step::Fire(at(0, 0))
        );
        // Zero max_catch_up still fires ticks that are on time.
        let eager = s.clone().max_catch_up(Duration::ZERO);
        assert_eq!(eager.step(at(0, 0), at(10, 900_000)), Step::Fire(at(10, 0)));
        assert_eq!(eager.step(at(0, 0), at(21, 500_000)), Step::Skip(at(20, 0)));
    }

    #[test]
    fn bad_expressions_and_names_are_refused() {
        for (name, expr) in [("x", "not cron"), ("x", "61 * * * *"), ("", "* * * * *")] {
            match CronSchedule::new(name, expr) {
                Err(EngineError::InvalidSchedule { .. }) => {}
                other => panic!("{name:?} {expr:?}: {other:?}"),
            }
        }
    }

    /// Pinned: the id of a tick's message must never change (dedup across versions).
    #[test]
    fn firing_ids_are_stable() {
        assert_eq!(firing_id("a", at(0, 0)), firing_id("a", at(0, 0)));
        assert_ne!(firing_id("a", at(0, 0)), firing_id("a", at(1, 0)));
        assert_ne!(firing_id("a", at(0, 0)), firing_id("b", at(0, 0)));
        assert_eq!(firing_id("a", at(0, 0)).get_version_num(), 5);
        // uuid5(FIRING_NAMESPACE, "nightly\n1767225600000000"), computed independently.
        assert_eq!(
            firing_id("nightly", at(0, 0)).to_string(),
            "78f3092b-97ea-589b-9ea9-7ffce7f3ea53"
        );
    }
}
