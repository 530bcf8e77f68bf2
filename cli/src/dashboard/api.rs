//! The dashboard's routes: the page, its script and style, and JSON endpoints that answer
//! with what the CLI's `--json` prints; and the sampler that feeds its history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State as Shared};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use entlog_journal::{AnyJournal, EntityKey, Journal};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::history::{History, SAMPLE_EVERY};
use crate::commands::{inspect, replay, status};
use crate::error::CliError;
use crate::registry::Registry;

/// Entries an entity page shows at a time.
const PAGE: u64 = 200;

/// What every request shares.
pub(crate) struct State {
    pub registry: Registry,
    pub journal: AnyJournal,
    pub token: Option<String>,
    pub stuck_after: Duration,
    /// What the page calls the journal.
    pub title: String,
    pub history: Mutex<History>,
}

impl State {
    pub(crate) fn new(
        registry: Registry,
        journal: AnyJournal,
        token: Option<String>,
        stuck_after: Duration,
        title: String,
    ) -> Self {
        State {
            registry,
            journal,
            token,
            stuck_after,
            title,
            history: Mutex::new(History::default()),
        }
    }

    /// The `status --json` report, with at most `poison_limit` poison messages.
    pub(crate) async fn status(&self, poison_limit: usize) -> Result<Value, CliError> {
        status::gather(&self.journal, poison_limit, self.stuck_after).await
    }
}

/// Samples the journal every [`SAMPLE_EVERY`](super::SAMPLE_EVERY) for as long as the dashboard runs. A failed
/// reading is skipped (the page shows the journal's error through its own requests).
pub(crate) async fn sample(state: Arc<State>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        match state.status(0).await {
            Ok(status) => {
                let at = state.journal.now().0 as f64 / 1e6;
                state.history.lock().await.record(at, &status);
            }
            Err(e) => tracing::debug!(error = %e, "dashboard: cannot sample the journal"),
        }
        tracing::trace!(elapsed = ?started.elapsed(), "dashboard: sampled");
    }
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/api/status", get(status_json))
        .route("/api/history", get(history_json))
        .route("/api/types", get(types_json))
        .route("/api/inspect/{entity_type}/{*entity_id}", get(inspect_json))
        .route("/api/replay/{entity_type}/{*entity_id}", get(replay_json))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Lets a request through when no token is set, or when it carries the token.
async fn authorize(
    Shared(state): Shared<Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer == Some(token.as_str()) || query.get("token") == Some(token) {
        return next.run(request).await;
    }
    failure(
        StatusCode::UNAUTHORIZED,
        "this dashboard needs its token: add ?token=… to the address".into(),
    )
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("assets/index.html"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}

/// An error as JSON: `{"error": "..."}`, as the CLI prints one with `--json`.
fn failure(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A command's result as a response: bad requests and unknown entities are 4xx, the
/// journal's failures 500.
fn answer(result: Result<Value, CliError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let status = match e {
                CliError::UnknownEntity(_) | CliError::Unregistered { .. } => StatusCode::NOT_FOUND,
                CliError::BadAddress(_) | CliError::BadArgument { .. } => StatusCode::BAD_REQUEST,
                CliError::Journal(
                    entlog_journal::JournalError::Empty { .. }
                    | entlog_journal::JournalError::TooLong { .. },
                ) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            failure(status, e.to_string())
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    poison_limit: Option<usize>,
}

async fn status_json(Shared(state): Shared<Arc<State>>, Query(q): Query<StatusQuery>) -> Response {
    answer(state.status(q.poison_limit.unwrap_or(20)).await)
}

async fn history_json(Shared(state): Shared<Arc<State>>) -> Response {
    Json(state.history.lock().await.to_json()).into_response()
}

/// The entity types this dashboard decodes and replays.
async fn types_json(Shared(state): Shared<Arc<State>>) -> Response {
    Json(json!({
        "title": state.title,
        "shard_count": state.journal.shard_count(),
        "registered": state.registry.entity_types(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct InspectQuery {
    before: Option<u64>,
    limit: Option<u64>,
}

async fn inspect_json(
    Shared(state): Shared<Arc<State>>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    Query(q): Query<InspectQuery>,
) -> Response {
    answer(
        async {
            let key = EntityKey::new(entity_type, entity_id)?;
            let window = inspect::Window {
                before: q.before,
                limit: Some(q.limit.unwrap_or(PAGE)),
            };
            let page = inspect::load(&state.journal, &key, window).await?;
            let shard = state.journal.shard_of(&key);
            Ok(inspect::to_json(&state.registry, &key, shard, &page))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct ReplayQuery {
    to_seq: Option<u64>,
    last: Option<usize>,
}

async fn replay_json(
    Shared(state): Shared<Arc<State>>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    Query(q): Query<ReplayQuery>,
) -> Response {
    answer(
        async {
            let key = EntityKey::new(entity_type, entity_id)?;
            let until = replay::Until {
                to_seq: q.to_seq,
                at: None,
                last: q.last,
            };
            let r = replay::load(&state.registry, &state.journal, &key, until).await?;
            Ok(replay::to_json(&state.registry, &r))
        }
        .await,
    )
}
