//! What every request shares: connections to the run store, each run's
//! compiled program, the reviewers, and the secrets no response may carry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::{Auth, Refusal, Tokens};
use super::program::RunProgram;
use crate::store::{Durability, RunRecord, Store, StoreError};

/// Connections kept for reuse; more are opened under load and dropped past this.
const POOL: usize = 8;

/// The largest response the secret scrubber reads (a trace can be long).
const MAX_BODY: usize = 64 << 20;

pub(super) struct App {
    store_path: PathBuf,
    durability: Durability,
    pool: Mutex<Vec<Store>>,
    pub auth: Auth,
    /// Each program runs were started with, compiled once.
    programs: Mutex<HashMap<String, Arc<RunProgram>>>,
    /// The values of every environment variable a program serve has
    /// compiled reads, longest first: scrubbed from every response.
    secrets: Mutex<Vec<String>>,
}

/// Why a request failed, as the API answers it (`{"error": …}` and more).
#[derive(Debug)]
pub(super) enum ApiError {
    /// 401: no token, or a token no reviewer has.
    Unauthorized(Refusal),
    /// 403: the reviewer may not see or decide this.
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    /// 409: the gate was decided meanwhile (the body says by whom).
    Conflict(Value),
    /// 422: the request is well-formed but its content is refused (an
    /// edited value that does not type-check, a program with errors).
    Unprocessable(Value),
    Store(StoreError),
    /// 500: serve's own failure.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body: always an `error` message, and what else the case has.
    pub fn body(&self) -> Value {
        match self {
            ApiError::Unauthorized(Refusal::Missing) => json!({
                "error": "no token: send `Authorization: Bearer TOKEN` (or log in at /login)"
            }),
            ApiError::Unauthorized(Refusal::Unknown) => json!({"error": "unknown token"}),
            ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::BadRequest(m)
            | ApiError::Internal(m) => json!({"error": m}),
            ApiError::Store(e) => json!({"error": e.to_string()}),
            ApiError::Conflict(v) | ApiError::Unprocessable(v) => v.clone(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowc\""),
            );
        }
        response
    }
}

impl App {
    pub fn new(
        store_path: PathBuf,
        durability: Durability,
        store: Store,
        tokens: Option<Tokens>,
    ) -> App {
        App {
            store_path,
            durability,
            pool: Mutex::new(vec![store]),
            auth: Auth::new(tokens),
            programs: Mutex::default(),
            secrets: Mutex::default(),
        }
    }

    /// Runs `f` with a store connection on the blocking pool (store calls
    /// block; the async workers never wait on them).
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&App, &Store) -> Result<T, ApiError> + Send + 'static,
    {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = app.take_store()?;
            let result = f(&app, &store);
            app.give_back(store);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("a request failed: {e}")))?
    }

    fn take_store(&self) -> Result<Store, ApiError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => Ok(Store::open(&self.store_path, self.durability)?),
        }
    }

    fn give_back(&self, store: Store) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(store);
        }
    }

    /// The run's program, compiled once; its secrets join the scrubbed set.
    pub fn program(&self, store: &Store, run: &RunRecord) -> Arc<RunProgram> {
        // Runs of one program share its compilation: the key is the
        // program's fingerprint (a hash per declaration).
        let key = format!("{}\n{}", run.file, run.program);
        if let Some(p) = self
            .programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return p.clone();
        }
        let program = Arc::new(RunProgram::load(store, run));
        if !program.secrets.is_empty() {
            let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
            for s in &program.secrets {
                if !secrets.contains(s) {
                    secrets.push(s.clone());
                }
            }
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        self.programs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, program.clone());
        program
    }

    /// `text` with every secret replaced, as written, JSON-escaped and
    /// HTML-escaped (the forms it can take in a response body).
    fn scrub(&self, text: &str) -> Option<String> {
        let secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Option<String> = None;
        for s in secrets.iter() {
            let json_form = serde_json::to_string(s).unwrap_or_default();
            let json_form = json_form.trim_matches('"').to_string();
            for form in [s.clone(), json_form, super::render::escape(s)] {
                let current = out.as_deref().unwrap_or(text);
                if current.contains(&form) {
                    out = Some(current.replace(&form, "[redacted]"));
                }
            }
        }
        out
    }
}

/// Every response body passes here: no value of an environment variable a
/// run's program reads leaves serve, whichever handler built the body (a
/// tool that echoed a key into its result, an error quoting a header).
pub(super) async fn scrub_secrets(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the response was too large",
            )
                .into_response()
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    match app.scrub(&text) {
        Some(clean) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(clean))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}
