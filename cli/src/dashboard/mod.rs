//! `dashboard`: a read-only web page of the cluster — runners, the shard map, projections,
//! failures with their causes, throughput and backlog over the last minutes, and an
//! entity's history with the state after each event.
//!
//! The page is static HTML and script built into the binary; it reads JSON endpoints
//! that return what the CLI's `--json` prints (`/api/status` as `status --json`,
//! `/api/inspect/TYPE/ID` as `inspect --json`, `/api/replay/TYPE/ID` as `replay
//! --json`), so a script can use either. It binds to 127.0.0.1 by default; beyond this
//! machine it needs an access token, passed as `?token=` or `Authorization: Bearer`.

mod api;
pub(crate) mod command;
mod history;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use entlog_journal::AnyJournal;
use tokio::net::TcpListener;

use crate::error::CliError;
use crate::registry::Registry;

pub use history::SAMPLE_EVERY;

/// A dashboard over one journal, decoding payloads with an application's registry.
///
/// The `dashboard` command serves one; an application can serve its own beside its
/// cluster, with [`Dashboard::serve`] on a listener it binds.
pub struct Dashboard {
    registry: Registry,
    journal: AnyJournal,
    token: Option<String>,
    stuck_after: Duration,
    title: String,
}

impl Dashboard {
    /// A dashboard of `journal`, with payloads decoded by `registry`.
    pub fn new(registry: Registry, journal: AnyJournal) -> Self {
        Dashboard {
            registry,
            journal,
            token: None,
            stuck_after: Duration::from_secs(60),
            title: "entlog".into(),
        }
    }

    /// What the page calls the journal (its file or server; default "entlog").
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Requires this token on every request (`?token=` or `Authorization: Bearer`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A shard whose oldest unanswered message waited this long is listed as stuck
    /// (as `status --stuck-after`; default 60 s).
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.stuck_after = after;
        self
    }

    /// Serves the dashboard on `listener` until `shutdown` completes. Refuses a listener
    /// reachable beyond this machine when no token is set.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), CliError> {
        let addr = listener.local_addr()?;
        check_exposure(addr, self.token.is_some())?;
        let state = Arc::new(api::State::new(
            self.registry,
            self.journal,
            self.token,
            self.stuck_after,
            self.title,
        ));
        let sampler = tokio::spawn(api::sample(state.clone()));
        let served = axum::serve(listener, api::router(state))
            .with_graceful_shutdown(shutdown)
            .await;
        sampler.abort();
        Ok(served?)
    }
}

/// A dashboard on anything but a loopback address needs a token: it shows every payload.
fn check_exposure(addr: SocketAddr, has_token: bool) -> Result<(), CliError> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(CliError::BadArgument {
        what: "--bind",
        value: addr.to_string(),
        reason: "a dashboard reachable beyond this machine shows every payload; \
                 give it --token (or ENTLOG_DASHBOARD_TOKEN)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let at = |s: &str| {
            s.parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        assert!(check_exposure(at("127.0.0.1:7777"), false).is_ok());
        assert!(check_exposure(at("[::1]:7777"), false).is_ok());
        assert!(matches!(
            check_exposure(at("0.0.0.0:7777"), false),
            Err(CliError::BadArgument { what: "--bind", .. })
        ));
        assert!(check_exposure(at("0.0.0.0:7777"), true).is_ok());
    }
}
