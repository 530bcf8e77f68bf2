//! How long it takes to notice a runner that stopped answering — on its own side and on
//! the server's — and every bound derived from that.
//!
//! A runner owns its shards while its lock session holds their advisory locks. The server
//! frees the locks when the session ends, so a runner is live *while its lock session
//! answers*, not merely while its socket is open. Three numbers set every bound:
//!
//! | knob | default | what it bounds |
//! |---|---|---|
//! | `ping_interval` | 250 ms | the lock session runs one heartbeat statement this often |
//! | `ping_timeout` | 1.5 s | a heartbeat (with the wait for the session) that takes longer marks the session lost: the runner stops writing |
//! | `session_timeout` | 3 s | the server ends a lock session that sent nothing this long (`idle_session_timeout`), and any pooled session idle inside a transaction this long (`idle_in_transaction_session_timeout`); its socket gives up on unacknowledged data after as long (`tcp_user_timeout`) |
//!
//! What follows from them, with the defaults:
//!
//! - **A runner notices its own loss** within `ping_interval + ping_timeout` (1.75 s) of its
//!   last good heartbeat, and stops writing: every shard is dropped, singletons are
//!   aborted. This must be shorter than the server's bound, so that a runner that is
//!   merely cut off has stopped before anyone else may start — [`Liveness::check`]
//!   refuses settings where it is not.
//! - **The server frees a silent runner's locks** within `session_timeout` (3 s): a
//!   process stopped (SIGSTOP, a long GC-like pause, a frozen VM), a host that lost power
//!   or its network, a black-holed connection. Its open transactions end within the same
//!   bound, so the row locks they hold never stall the next owner. A process that dies
//!   outright releases everything at once (the kernel closes its sockets).
//! - **Failover** then takes one rebalance interval more (250 ms by default): about
//!   3.3 s for a silent runner, a fraction of a second for a dead one.
//! - **A singleton's takeover grace** ([`Liveness::takeover_grace`]): a new owner that
//!   finds the previous run not stopped cleanly waits `ping_interval + ping_timeout` plus
//!   a margin, so that the old runner has noticed its loss and aborted its copy even when
//!   its lock connection died silently on its side.
//! - **Lock-session statements** wait at most [`Liveness::lock_wait`] for a row lock:
//!   acquiring a shard whose row is locked by a stalled transaction gives up (and tries
//!   again at the next rebalance) instead of holding the session hostage.
//!
//! Safety does not rest on these timings: every commit carries its shard's epoch and a
//! stale owner's commit is refused. The timings decide how soon work moves, and how long
//! two copies of a singleton could overlap.

use std::time::Duration;

use crate::error::{JournalError, Result};

/// The liveness bounds of lock sessions; see the module docs for what each one sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// How often the lock session runs its heartbeat. Default 250 ms.
    pub ping_interval: Duration,
    /// How long a heartbeat may take before the runner counts its session lost.
    /// Default 1.5 s.
    pub ping_timeout: Duration,
    /// How long the server keeps a silent lock session (and a pooled session idle in a
    /// transaction) before ending it and freeing its locks. Default 3 s.
    pub session_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            ping_interval: Duration::from_millis(250),
            ping_timeout: Duration::from_millis(1500),
            session_timeout: Duration::from_secs(3),
        }
    }
}

impl Liveness {
    /// The longest a runner goes on writing after its last good heartbeat.
    pub fn self_detection(&self) -> Duration {
        self.ping_interval + self.ping_timeout
    }

    /// How long a new owner waits before starting a singleton whose previous run did not
    /// stop cleanly: the old runner's own detection time plus a margin of half of it.
    pub fn takeover_grace(&self) -> Duration {
        self.self_detection() + self.self_detection() / 2
    }

    /// How long a lock-session statement waits for a row lock before giving up.
    pub fn lock_wait(&self) -> Duration {
        (self.ping_timeout / 3).max(Duration::from_millis(100))
    }

    /// Refuses bounds under which a runner could go on writing after the server freed its
    /// locks, or under which a healthy session would be ended between two heartbeats.
    pub fn check(&self) -> Result<()> {
        let ok = !self.ping_interval.is_zero()
            && !self.ping_timeout.is_zero()
            && self.self_detection() < self.session_timeout;
        if ok {
            Ok(())
        } else {
            Err(JournalError::Config(format!(
                "liveness: ping_interval ({:?}) + ping_timeout ({:?}) must be non-zero and \
                 shorter than session_timeout ({:?}), so that a runner stops writing before \
                 the server frees its locks",
                self.ping_interval, self.ping_timeout, self.session_timeout
            )))
        }
    }

    /// The session settings of a lock session, as `(name, value)` startup options.
    pub(crate) fn lock_session_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("idle_session_timeout", millis(self.session_timeout)),
            ("tcp_user_timeout", millis(self.session_timeout)),
            ("lock_timeout", millis(self.lock_wait())),
            ("statement_timeout", millis(self.ping_timeout)),
            // A heartbeat or an epoch bump need not wait for the disk: a later commit that
            // does wait flushes them too, and a crash ends every lock session anyway.
            ("synchronous_commit", "off".into()),
        ]
    }

    /// The session settings of pooled connections, as `(name, value)` startup options.
    pub(crate) fn pool_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "idle_in_transaction_session_timeout",
                millis(self.session_timeout),
            ),
            ("tcp_user_timeout", millis(self.session_timeout)),
        ]
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_stop_the_runner_before_the_server_frees_its_locks() {
        let l = Liveness::default();
        l.check().unwrap();
        assert!(l.self_detection() < l.session_timeout);
        assert!(l.takeover_grace() > l.self_detection());
        assert!(l.lock_wait() < l.ping_timeout);
    }

    #[test]
    fn bounds_that_overlap_are_refused() {
        let l = Liveness {
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(2),
            session_timeout: Duration::from_secs(3),
        };
        assert!(matches!(l.check(), Err(JournalError::Config(_))));
        let zero = Liveness {
            ping_interval: Duration::ZERO,
            ..Liveness::default()
        };
        assert!(zero.check().is_err());
    }
}
