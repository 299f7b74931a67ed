//! The JSON API (every endpoint with examples in docs/team.md). Every
//! request carries a reviewer's token (`Authorization: Bearer TOKEN`)
//! unless serve runs without tokens on a loopback address.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Reviewer;
use super::state::{ApiError, App};
use super::view::{self, Verdict};
use crate::run::status::RunStatus;
use crate::snapshot::ProgramSnapshot;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/me", get(me))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{run}", get(one_run))
        .route("/api/runs/{run}/steps", get(steps))
        .route("/api/runs/{run}/trace", get(trace))
        .route("/api/runs/{run}/gates/{gate}", post(decide))
        .route("/api/inbox", get(inbox))
        .route("/api/reviews", get(reviews))
        .route("/api/runs/{run}/reviews/{gate}", post(review))
}

/// The reviewer a request speaks for, or 401.
pub(super) fn who(app: &App, headers: &HeaderMap) -> Result<Reviewer, ApiError> {
    app.auth.reviewer(headers).map_err(ApiError::Unauthorized)
}

/// A JSON request body, or 400 saying why it is not one.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not the JSON expected: {e}")))
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    Ok(Json(
        json!({"reviewer": who.name, "flows": who.flows, "gates": who.gates}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    status: Option<String>,
    flow: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let filter = filter(q.status, q.flow, q.since.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let runs = app
        .blocking(move |app, store| runs(app, store, &who, &filter, limit))
        .await?;
    Ok(Json(json!({"runs": runs})))
}

/// The runs a filter admits (`status`, `flow`, `since` as in `flowc runs`).
pub(super) fn filter(
    status: Option<String>,
    flow: Option<String>,
    since: Option<&str>,
) -> Result<crate::stats::Filter, ApiError> {
    let status = status.filter(|s| !s.is_empty());
    if let Some(s) = &status {
        if RunStatus::from_name(s).is_none() {
            return Err(ApiError::BadRequest(format!(
                "`{s}` is not a run status ({})",
                RunStatus::ALL.map(RunStatus::as_str).join(", ")
            )));
        }
    }
    let since = match since.filter(|s| !s.is_empty()) {
        Some(text) => Some(
            crate::store::now()
                - crate::stats::parse_duration(text).map_err(ApiError::BadRequest)?,
        ),
        None => None,
    };
    Ok(crate::stats::Filter {
        flow: flow.filter(|f| !f.is_empty()),
        since,
        status,
    })
}

/// Newest first, at most `limit`, only the reviewer's flows.
pub(super) fn runs(
    app: &App,
    store: &crate::store::Store,
    who: &Reviewer,
    filter: &crate::stats::Filter,
    limit: usize,
) -> Result<Vec<Value>, ApiError> {
    let runs: Vec<crate::store::RunRecord> = store
        .runs()?
        .into_iter()
        .filter(|r| who.sees(&r.flow) && filter.admits(r))
        .take(limit)
        .collect();
    Ok(runs
        .iter()
        .map(|r| {
            // Compiled so its secrets are known to the scrubber.
            let program = app.program(store, r);
            let mut doc = view::run_json(r);
            if let Value::Object(map) = &mut doc {
                map.insert("budget".into(), view::spend_json(r, &program));
            }
            doc
        })
        .collect())
}

/// `POST /api/runs`: one of `source` (one file's text), `program` (a
/// snapshot: `root` and `files`) or `like` (a submitted run whose program
/// to reuse), with `input` and `flow` (needed when the program declares
/// several flows; `like` reuses its run's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    source: Option<String>,
    program: Option<SnapshotBody>,
    like: Option<String>,
    flow: Option<String>,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    root: String,
    files: BTreeMap<String, String>,
}

/// The root path a posted `source` is known by.
const POSTED_ROOT: &str = "posted.flow";

async fn start_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let who = who(&app, &headers)?;
    let request: StartRun = body(&bytes)?;
    let record = app
        .blocking(move |_, store| {
            let (snapshot, flow) = match (request.source, request.program, request.like) {
                (Some(source), None, None) => (
                    ProgramSnapshot {
                        root: POSTED_ROOT.into(),
                        files: BTreeMap::from([(POSTED_ROOT.to_string(), source)]),
                    },
                    request.flow,
                ),
                (None, Some(p), None) => {
                    if !p.files.contains_key(&p.root) {
                        return Err(ApiError::BadRequest(format!(
                            "`program.files` has no file `{}` (the root)",
                            p.root
                        )));
                    }
                    (ProgramSnapshot { root: p.root, files: p.files }, request.flow)
                }
                (None, None, Some(like)) => {
                    let run = view::visible_run(store, &who, &like)?;
                    let text = store.program(&like)?.ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "run {like} was started by `flowc run`, not submitted: it has no stored program"
                        ))
                    })?;
                    let snapshot = ProgramSnapshot::from_json(&text)
                        .map_err(|e| ApiError::Unprocessable(json!({"error": e.to_string()})))?;
                    (snapshot, request.flow.or(Some(run.flow)))
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "give exactly one of `source`, `program` and `like`".into(),
                    ))
                }
            };
            let c = crate::compile_snapshot(&snapshot)
                .map_err(|e| ApiError::Unprocessable(json!({"error": e.to_string()})))?;
            if c.program.is_none() {
                let problems = c.problems.sorted();
                return Err(ApiError::Unprocessable(json!({
                    "error": "the program has errors",
                    "diagnostics": crate::render::json(&c.sources, &c.roots, &problems),
                })));
            }
            let flow = crate::submit::choose_flow(&c, &snapshot.root, flow)
                .map_err(|m| ApiError::BadRequest(m.replace("--flow", "`flow`")))?;
            if !who.sees(&flow) {
                return Err(ApiError::Forbidden(format!(
                    "{} may not start runs of flow `{flow}`",
                    who.name
                )));
            }
            crate::submit::submit(store, &c, &snapshot, flow, request.input).map_err(|e| match e {
                crate::submit::SubmitError::Invalid(m) => ApiError::Unprocessable(json!({"error": m})),
                crate::submit::SubmitError::Store(e) => ApiError::Store(e),
            })
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "flow": record.flow,
            "status": record.status,
            "links": {"run": format!("/api/runs/{}", record.id), "page": format!("/runs/{}", record.id)},
        })),
    )
        .into_response())
}

async fn one_run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let view = app
        .blocking(move |app, store| view::run_view(app, store, &who, &run))
        .await?;
    Ok(Json(view.json()))
}

async fn steps(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let view = app
        .blocking(move |app, store| view::run_view(app, store, &who, &run))
        .await?;
    Ok(Json(
        json!({"run": view.run.id, "steps": view::steps_json(&view.steps)}),
    ))
}

async fn trace(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let run = app
        .blocking(move |app, store| {
            let run = view::visible_run(store, &who, &run)?;
            app.program(store, &run);
            Ok(run)
        })
        .await?;
    let events = tokio::task::spawn_blocking(move || view::trace(&run).map(|e| (run.id, e)))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match events {
        Ok((id, events)) => Ok(Json(json!({"run": id, "events": events}))),
        Err(m) => Err(ApiError::NotFound(m)),
    }
}

async fn inbox(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let cards = app
        .blocking(move |app, store| view::inbox(app, store, &who))
        .await?;
    Ok(Json(
        json!({"gates": cards.iter().map(|c| c.json()).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/runs/RUN/gates/GATE`: `{"decision": "approve"}`,
/// `{"decision": "approve", "value": …}` (edit, then approve) or
/// `{"decision": "reject", "reason": "…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: Choice,
    value: Option<Value>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Choice {
    Approve,
    Reject,
}

async fn decide(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((run, gate)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let request: DecisionBody = body(&bytes)?;
    let verdict = match (request.decision, request.value, request.reason) {
        (Choice::Approve, None, None) => Verdict::Approve,
        (Choice::Approve, Some(v), None) => Verdict::Edit(v),
        (Choice::Reject, None, reason) => Verdict::Reject(reason.unwrap_or_default()),
        (Choice::Approve, _, Some(_)) => {
            return Err(ApiError::BadRequest("an approval takes no `reason`".into()))
        }
        (Choice::Reject, Some(_), _) => {
            return Err(ApiError::BadRequest("a rejection takes no `value`".into()))
        }
    };
    let decided = app
        .blocking(move |app, store| view::decide(app, store, &who, &run, &gate, verdict))
        .await?;
    Ok(Json(json!({"gate": view::gate_json(&decided)})))
}

async fn reviews(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let cards = app
        .blocking(move |app, store| view::reviews(app, store, &who))
        .await?;
    Ok(Json(
        json!({"reviews": cards.iter().map(|c| c.json()).collect::<Vec<_>>()}),
    ))
}

/// `POST /api/runs/RUN/reviews/GATE`: `{"verdict": "agree"}` or
/// `{"verdict": "disagree", "note": "…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    verdict: String,
    note: Option<String>,
}

async fn review(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((run, gate)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = who(&app, &headers)?;
    let request: ReviewBody = body(&bytes)?;
    let verdict = crate::store::Verdict::from_name(&request.verdict).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`{}` is not a verdict: `agree` or `disagree`",
            request.verdict
        ))
    })?;
    let reviewed = app
        .blocking(move |_, store| {
            view::review(store, &who, &run, &gate, verdict, request.note.as_deref())
        })
        .await?;
    Ok(Json(json!({"review": view::review_json(&reviewed)})))
}

/// Query strings of the pages, as given.
pub(super) type Params = HashMap<String, String>;
