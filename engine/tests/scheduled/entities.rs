//! The `timer` entity: it records when each `Fire` ran (and on which runner) in its
//! event, and arms durable timers from its handler — also from handlers that then panic
//! or reject, whose timers must vanish with them.

use std::time::Duration;

use entlog_engine::{Context, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Records when each `Fire` ran; arms durable timers from its handler.
pub(crate) struct Timer {
    /// Which runner hosts it.
    pub(crate) node: u8,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Cmd {
    /// Record a delivery.
    Fire { tag: u64 },
    /// Schedule `Fire { tag }` to this entity `after_ms` from now with `ctx.schedule`.
    Arm { tag: u64, after_ms: u64 },
    /// Schedule like `Arm`, then panic (on every attempt): the timer must vanish.
    ArmThenPanic { tag: u64, after_ms: u64 },
    /// Schedule like `Arm`, then reject: the timer must vanish.
    ArmThenReject { tag: u64, after_ms: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Event {
    Fired { tag: u64, at: i64, node: u8 },
    Armed { tag: u64, timer: Uuid, at: i64 },
}

impl Entity for Timer {
    const TYPE: &'static str = "timer";
    type Command = Cmd;
    type Event = Event;
    type Reply = Uuid;
    type State = u64;

    async fn handle(
        &self,
        _: &u64,
        cmd: Cmd,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        let now = ctx.now().as_micros();
        let me = ctx.entity_id().to_owned();
        let mut arm = |tag, after_ms| {
            ctx.schedule::<Timer>(Duration::from_millis(after_ms), &me, &Cmd::Fire { tag })
        };
        match cmd {
            Cmd::Fire { tag } => {
                let fired = Event::Fired {
                    tag,
                    at: now,
                    node: self.node,
                };
                Ok(Outcome::new(vec![fired], Uuid::nil()))
            }
            Cmd::Arm { tag, after_ms } => {
                let timer = arm(tag, after_ms);
                let armed = Event::Armed {
                    tag,
                    timer,
                    at: now,
                };
                Ok(Outcome::new(vec![armed], timer))
            }
            Cmd::ArmThenPanic { tag, after_ms } => {
                arm(tag, after_ms);
                panic!("armed, then failed");
            }
            Cmd::ArmThenReject { tag, after_ms } => {
                arm(tag, after_ms);
                Err(Rejection::new("armed, then said no"))
            }
        }
    }

    fn apply(fired: &mut u64, event: &Event) {
        if let Event::Fired { .. } = event {
            *fired += 1;
        }
    }
}
