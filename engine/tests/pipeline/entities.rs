//! The entities the scenarios run: `Trouble`, which misbehaves on demand (oversized
//! outcomes, a handler that hangs or is slow, `apply` panicking on replay), `BigCmd`, the
//! target of an oversized send, and `Failing`, an inline projection that fails on demand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use entlog_engine::{Context, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};

use crate::common::{Cmd, Counter};

/// The journal's payload limit in these tests: small, so a test can exceed it cheaply.
pub(crate) const LIMIT: usize = 4_096;

/// When set, `Trouble::apply` panics on a `Marked` event (as a bug shipped in a new build
/// would, on events already in the journal).
pub(crate) static APPLY_PANICS: AtomicBool = AtomicBool::new(false);

/// An entity that misbehaves on demand.
pub(crate) struct Trouble;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ask {
    /// Replies with the number of events so far.
    Ping,
    /// Emits one event larger than the journal's limit.
    BigEvent,
    /// Replies with more bytes than the journal's limit.
    BigReply,
    /// Sends a command larger than the journal's limit to another entity.
    BigSend,
    /// Never returns.
    Hang,
    /// Takes this long, then replies.
    Slow(u64),
    /// Emits a `Marked` event.
    Mark,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ev {
    Blob(Vec<u8>),
    Marked,
}

impl Entity for Trouble {
    const TYPE: &'static str = "trouble";
    type Command = Ask;
    type Event = Ev;
    type Reply = Vec<u8>;
    type State = u64;

    async fn handle(
        &self,
        state: &u64,
        cmd: Ask,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        Ok(match cmd {
            Ask::Ping => Outcome::reply(state.to_le_bytes().to_vec()),
            Ask::BigEvent => Outcome::new(vec![Ev::Blob(vec![7; LIMIT * 2])], Vec::new()),
            Ask::BigReply => Outcome::reply(vec![7; LIMIT * 2]),
            Ask::BigSend => {
                ctx.send::<Counter>(
                    "receiver",
                    &Cmd::Add {
                        n: 1,
                        tag: u64::MAX,
                    },
                );
                ctx.send::<Trouble>("receiver", &Ask::Slow(0));
                // The second message is fine; make the first one too large instead.
                ctx.send::<BigCmd>("receiver", &vec![1; LIMIT * 2]);
                Outcome::reply(Vec::new())
            }
            Ask::Hang => std::future::pending().await,
            Ask::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Outcome::reply(Vec::new())
            }
            Ask::Mark => Outcome::new(vec![Ev::Marked], Vec::new()),
        })
    }

    fn apply(state: &mut u64, event: &Ev) {
        if matches!(event, Ev::Marked) && APPLY_PANICS.load(Ordering::SeqCst) {
            panic!("apply cannot read a Marked event");
        }
        *state += 1;
    }
}

/// An entity type whose command is raw bytes (the target of an oversized send).
pub(crate) struct BigCmd;

impl Entity for BigCmd {
    const TYPE: &'static str = "bigcmd";
    type Command = Vec<u8>;
    type Event = ();
    type Reply = ();
    type State = ();

    async fn handle(
        &self,
        _: &(),
        _: Vec<u8>,
        _: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        Ok(Outcome::reply(()))
    }

    fn apply(_: &mut (), _: &()) {}
}

/// When set, `Failing::apply` fails.
pub(crate) static PROJECTION_FAILS: AtomicBool = AtomicBool::new(false);

/// An inline projection that fails while `PROJECTION_FAILS` is set.
pub(crate) struct Failing;

impl entlog_engine::Projection for Failing {
    fn name(&self) -> &str {
        "failing"
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == "counter"
    }

    async fn apply(
        &self,
        _: &mut entlog_journal::AnyTx,
        _: &[entlog_journal::Entry],
    ) -> Result<(), entlog_engine::ProjectionError> {
        if PROJECTION_FAILS.load(Ordering::SeqCst) {
            return Err(entlog_engine::ProjectionError::Handler(
                "the read model is down".into(),
            ));
        }
        Ok(())
    }

    async fn reset(
        &self,
        _: &mut entlog_journal::AnyTx,
    ) -> Result<(), entlog_engine::ProjectionError> {
        Ok(())
    }
}
