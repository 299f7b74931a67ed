//! The HTML pages: a login form, the inbox (a card per pending gate, with
//! approve, reject with a reason, and edit-then-approve), the runs, and a
//! run (its steps as a timeline, spend against budget, gates, trace); the
//! stats page is stats_page.rs.
//! Server-rendered, no script: forms post back and the server answers with
//! the next page (303 after a decision; the inbox again, with the problems
//! beside their fields, when it is refused).

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::api::{self, Params};
use super::auth::{Reviewer, COOKIE};
use super::form::{self, Problems};
use super::render::{escape, value, value_in_order};
use super::state::{ApiError, App};
use super::view::{self, Card, RunView, Verdict};
use crate::exec::dollars;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/inbox", get(inbox))
        .route("/inbox/decide", post(decide))
        .route("/inbox/review", post(review))
        .route("/runs", get(runs))
        .route("/runs/{run}", get(run_page))
        .route("/stats", get(super::stats_page::stats))
        .route("/metrics", get(super::metrics::metrics))
}

const STYLE: &str = r#"
:root { --fg: #1d2330; --muted: #5d6677; --line: #d9dee7; --bg: #f5f7fa; --card: #fff;
  --ok: #1f7a3d; --bad: #b3261e; --accent: #2f5bd3; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header.top { display: flex; gap: 1.5rem; align-items: center; padding: .7rem 1.5rem; background: #1d2330; color: #fff; }
header.top a { color: #fff; text-decoration: none; font-weight: 600; }
header.top .who { margin-left: auto; color: #c9d1e0; }
header.top form { display: inline; }
header.top button { background: none; border: 1px solid #56607a; color: #c9d1e0; border-radius: 4px; padding: .1rem .5rem; cursor: pointer; }
main { max-width: 1100px; margin: 1.2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 0; }
h3 { font-size: .85rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 1rem 0 .3rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 1rem 1.2rem; margin-bottom: 1.2rem; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.card header { display: flex; flex-wrap: wrap; gap: .3rem 1rem; align-items: baseline; }
.meta { color: var(--muted); font-size: .9rem; }
.proposed { background: #fff6e5; border: 1px solid #f0d49b; border-radius: 6px; padding: .5rem .7rem; }
.proposed code { font-size: .95rem; }
.args { font-size: .9rem; color: var(--muted); margin-top: .2rem; }
.args b { color: var(--fg); }
.effect { font-size: .75rem; font-weight: 700; text-transform: uppercase; color: #8a5a00; margin-left: .4rem; }
table { border-collapse: collapse; margin: .2rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f3f8; font-weight: 600; }
table.record th { width: 1%; white-space: nowrap; }
.num { font-variant-numeric: tabular-nums; }
.none { color: var(--muted); font-style: italic; }
.count { color: var(--muted); font-size: .85rem; }
details > summary { cursor: pointer; }
details.long pre, pre.json { white-space: pre-wrap; background: #f6f8fb; padding: .5rem; border-radius: 4px; margin: .3rem 0; }
.actions { display: flex; flex-wrap: wrap; gap: 1rem; margin-top: 1rem; align-items: flex-start; }
.actions form { margin: 0; }
.actions details { flex: 1 1 100%; }
.field { display: block; margin: .4rem 0; font-weight: 600; }
.field input, .field textarea, .field select { display: block; width: 100%; max-width: 36rem; font: inherit; padding: .3rem .4rem; border: 1px solid #b9c1cf; border-radius: 4px; font-weight: normal; }
textarea { font-family: ui-monospace, monospace; }
.hint { color: var(--muted); font-weight: normal; font-size: .85rem; }
button { font: inherit; padding: .35rem .9rem; border-radius: 5px; border: 1px solid transparent; cursor: pointer; }
button.approve { background: var(--ok); color: #fff; }
button.reject { background: var(--bad); color: #fff; }
button.edit { background: var(--accent); color: #fff; }
.reject-form { display: flex; gap: .5rem; align-items: flex-start; }
.reject-form input { font: inherit; padding: .3rem .4rem; width: 22rem; border: 1px solid #b9c1cf; border-radius: 4px; }
.error { color: var(--bad); font-weight: 600; margin: .2rem 0; }
.banner { padding: .6rem .9rem; border-radius: 6px; margin-bottom: 1rem; }
.banner.ok { background: #e3f4e8; border: 1px solid #9fd3ae; }
.banner.bad { background: #fbe6e4; border: 1px solid #eba8a2; }
.status { display: inline-block; padding: .05rem .5rem; border-radius: 10px; font-size: .8rem; font-weight: 700; background: #e6eaf2; }
.status.completed, .status.approved { background: #dff2e4; color: var(--ok); }
.status.failed, .status.rejected, .status.budget_exhausted { background: #fbe3e1; color: var(--bad); }
.status.waiting, .status.pending { background: #fff1d6; color: #8a5a00; }
.timeline { width: 100%; }
.timeline td.bar { width: 50%; }
.timeline .track { position: relative; height: .8rem; background: #eef1f6; border-radius: 3px; }
.timeline .span { position: absolute; top: 0; bottom: 0; background: var(--accent); border-radius: 3px; min-width: 2px; }
.timeline .span.error { background: var(--bad); }
.timeline .span.wait { background: #d08b00; }
meter { width: 12rem; }
form.filters { display: flex; gap: .6rem; align-items: end; margin-bottom: 1rem; }
form.filters label { font-size: .85rem; color: var(--muted); }
form.filters input, form.filters select { display: block; font: inherit; padding: .2rem .3rem; }
.login { max-width: 26rem; margin: 4rem auto; }
"#;

/// A whole page around `body`.
pub(super) fn page(
    title: &str,
    who: Option<&Reviewer>,
    inbox_count: Option<usize>,
    body: &str,
) -> String {
    let nav = match who {
        Some(w) => format!(
            "<a href=\"/inbox\">Inbox{}</a><a href=\"/runs\">Runs</a><a href=\"/stats\">Stats</a><span class=\"who\">{}</span>\
             <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
            inbox_count.map(|n| format!(" ({n})")).unwrap_or_default(),
            escape(&w.name)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · flowc</title><style>{STYLE}</style></head><body>\
         <header class=\"top\"><a href=\"/inbox\">flowc</a>{nav}</header><main>{body}</main></body></html>",
        escape(title)
    )
}

/// A refusal as a page: to the login form without a (known) token, else
/// the error with its status.
pub(super) fn refused(e: ApiError) -> Response {
    match e {
        ApiError::Unauthorized(_) => Redirect::to("/login").into_response(),
        e => {
            let message = e.body()["error"].as_str().unwrap_or("failed").to_string();
            (
                e.status(),
                Html(page(
                    "Error",
                    None,
                    None,
                    &format!("<div class=\"banner bad\">{}</div>", escape(&message)),
                )),
            )
                .into_response()
        }
    }
}

async fn login_page(State(app): State<Arc<App>>) -> Response {
    if app.auth.is_open() {
        return Redirect::to("/inbox").into_response();
    }
    Html(login_html(None)).into_response()
}

fn login_html(error: Option<&str>) -> String {
    page(
        "Log in",
        None,
        None,
        &format!(
            "<div class=\"card login\"><h1>Log in</h1>{}\
             <form method=\"post\" action=\"/login\"><label class=\"field\">Reviewer token\
             <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\
             <button class=\"approve\">Log in</button></form>\
             <p class=\"hint\">Your token is kept in a cookie for this site only.</p></div>",
            error.map(|e| format!("<div class=\"error\">{}</div>", escape(e))).unwrap_or_default()
        ),
    )
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<Params>) -> Response {
    let token = form
        .get("token")
        .map_or("", String::as_str)
        .trim()
        .to_string();
    if app.auth.check(&token).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some("unknown token"))),
        )
            .into_response();
    }
    let mut response = Redirect::to("/inbox").into_response();
    // HttpOnly: no script reads it; SameSite=Strict: no other site's page
    // can make the browser send it (a forged decision).
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("flowc_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// A card's identity in the page (for links and the form that failed).
fn card_id(c: &Card) -> String {
    format!("gate-{}-{}", c.gate.run_id, c.gate.key)
}

/// What a refused decision left on one card: the entered values and the
/// problems, and which form they belong to.
struct Refusal {
    run: String,
    key: String,
    action: String,
    entered: Params,
    problems: Problems,
}

async fn inbox(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let banner = match (q.get("decided"), q.get("gate"), q.get("run")) {
        (Some(d), Some(g), Some(r)) => Some((true, format!("Gate {g} of run {r}: {d}."))),
        _ => None,
    };
    render_inbox(&app, who, banner, None, StatusCode::OK).await
}

async fn render_inbox(
    app: &Arc<App>,
    who: Reviewer,
    banner: Option<(bool, String)>,
    refusal: Option<Refusal>,
    status: StatusCode,
) -> Response {
    let reviewer = who.clone();
    let (cards, reviews) = match app
        .blocking(move |app, store| {
            Ok((
                view::inbox(app, store, &reviewer)?,
                view::reviews(app, store, &reviewer)?,
            ))
        })
        .await
    {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let mut body = String::from("<h1>Inbox</h1>");
    if let Some((ok, text)) = banner {
        body.push_str(&format!(
            "<div class=\"banner {}\" role=\"status\">{}</div>",
            if ok { "ok" } else { "bad" },
            escape(&text)
        ));
    }
    if cards.is_empty() {
        body.push_str("<p class=\"none\">No gate is waiting for you.</p>");
    }
    for c in &cards {
        let refusal = refusal
            .as_ref()
            .filter(|r| r.run == c.gate.run_id && r.key == c.gate.key);
        body.push_str(&card_html(c, refusal));
    }
    if !reviews.is_empty() {
        body.push_str(&format!(
            "<h1 id=\"reviews\">Sampled for review <span class=\"count\">({})</span></h1>\
             <p class=\"hint\">Cases a gate's policy approved without a person, sampled so that people \
             check it still decides as they would.</p>",
            reviews.len()
        ));
        for r in &reviews {
            body.push_str(&review_html(r));
        }
    }
    (
        status,
        Html(page("Inbox", Some(&who), Some(cards.len()), &body)),
    )
        .into_response()
}

/// A sampled policy decision: what the gate showed, what the policy read,
/// and agree / disagree (with a note).
fn review_html(r: &view::ReviewCard) -> String {
    let g = &r.gate;
    let order = r.program.gate(&g.flow, &g.gate).map_or(Vec::new(), |i| {
        form::form_for(&r.program.types, &i.ty).names()
    });
    let shown: String = g
        .show
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| value_in_order(v, &order))
        .collect();
    let hidden = format!(
        "<input type=\"hidden\" name=\"run\" value=\"{}\"><input type=\"hidden\" name=\"key\" value=\"{}\">",
        escape(&g.run_id),
        escape(&g.key)
    );
    format!(
        "<article class=\"card review\" id=\"review-{}-{}\" data-run=\"{}\" data-review=\"{}\"><header><h2>{}</h2>\
         <span class=\"meta\">flow <b>{}</b> · run <a href=\"/runs/{}\">{}</a> · {} by its policy {}</span></header>\
         <h3>The policy read</h3>{}<h3>Shown</h3>{shown}\
         <details><summary>The run's input</summary>{}</details>\
         <div class=\"actions\"><form method=\"post\" action=\"/inbox/review\">{hidden}\
         <button class=\"approve\" name=\"verdict\" value=\"agree\">Agree</button></form>\
         <form method=\"post\" action=\"/inbox/review\" class=\"reject-form\">{hidden}\
         <input type=\"text\" name=\"note\" placeholder=\"What would you have decided?\" aria-label=\"note\">\
         <button class=\"reject\" name=\"verdict\" value=\"disagree\">Disagree</button></form></div></article>",
        escape(&g.run_id),
        escape(&g.key),
        escape(&g.run_id),
        escape(&g.gate),
        escape(&g.gate),
        escape(&g.flow),
        escape(&g.run_id),
        escape(&g.run_id),
        escape(&g.status),
        g.decided_at.map(ago).unwrap_or_default(),
        g.policy_read.as_ref().map(value).unwrap_or_else(|| "<span class=\"none\">nothing recorded</span>".into()),
        value(&r.run.input),
    )
}

async fn review(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (run, key, note) = (field("run"), field("key"), field("note"));
    let Some(verdict) = crate::store::Verdict::from_name(&field("verdict")) else {
        return refused(ApiError::BadRequest(
            "the verdict is `agree` or `disagree`".into(),
        ));
    };
    let reviewer = who.clone();
    let result = app
        .blocking(move |_, store| view::review(store, &reviewer, &run, &key, verdict, Some(&note)))
        .await;
    match result {
        Ok(r) => Redirect::to(&format!(
            "/inbox?decided={}&gate={}&run={}#reviews",
            urlencode(&format!("reviewed, {}", verdict.as_str())),
            urlencode(&r.gate),
            urlencode(&r.run_id)
        ))
        .into_response(),
        Err(ApiError::Conflict(body)) => {
            let text = body["error"]
                .as_str()
                .unwrap_or("already reviewed")
                .to_string();
            render_inbox(&app, who, Some((false, text)), None, StatusCode::CONFLICT).await
        }
        Err(e) => refused(e),
    }
}

fn ago(at: f64) -> String {
    format!("{} ago", span(crate::store::now() - at))
}

/// A length of time for people: `40s`, `12 min`, `5 h`, `3 days`.
fn span(seconds: f64) -> String {
    match seconds.max(0.0) {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.0} h", s / 3600.0),
        s => format!("{:.0} days", s / 86400.0),
    }
}

fn card_html(c: &Card, refusal: Option<&Refusal>) -> String {
    let g = &c.gate;
    let info = c.info();
    let timeout = match g.timeout_at {
        Some(t) if t > crate::store::now() => format!(
            " · {} on timeout in {}",
            g.on_timeout,
            span(t - crate::store::now())
        ),
        Some(_) => format!(" · timed out: {} when a worker next looks", g.on_timeout),
        None => String::new(),
    };
    let mut out = format!(
        "<article class=\"card\" id=\"{}\" data-run=\"{}\" data-gate=\"{}\"><header><h2>{}</h2>\
         <span class=\"meta\">flow <b>{}</b> · run <a href=\"/runs/{}\">{}</a> · waiting since {}{}{}</span></header>",
        escape(&card_id(c)),
        escape(&g.run_id),
        escape(&g.gate),
        escape(&g.gate),
        escape(&g.flow),
        escape(&g.run_id),
        escape(&g.run_id),
        ago(g.created_at),
        escape(&timeout),
        // Only where the gate is one of several (loop iterations, branches).
        if g.key.contains(['[', '/']) { format!(" · at <code>{}</code>", escape(&g.key)) } else { String::new() },
    );
    if let Some(info) = info.filter(|i| !i.proposed.is_empty()) {
        out.push_str("<h3>Approving lets this run</h3><div class=\"proposed\">");
        for p in &info.proposed {
            out.push_str(&format!(
                "<div><code>{}</code><span class=\"effect\">{}</span></div>",
                escape(&p.call),
                p.effect.as_str()
            ));
            // The arguments' values, where the shown value and the input
            // tell them.
            let known: Vec<String> = p
                .args
                .iter()
                .filter_map(|a| {
                    let v = a.value(c.shown(), &c.run.input)?;
                    let text = match &v {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    Some(format!("{} <b>{}</b>", escape(&a.name), escape(&text)))
                })
                .collect();
            if !known.is_empty() {
                out.push_str(&format!(
                    "<div class=\"args\">approved as shown: {}</div>",
                    known.join(" · ")
                ));
            }
        }
        out.push_str("</div>");
    }
    out.push_str(&format!(
        "<h3>Shown for review{}</h3>",
        info.map(|i| format!(" <span class=\"hint\">({})</span>", escape(&i.ty_text)))
            .unwrap_or_default()
    ));
    let shown: Vec<Value> = g.show.as_array().cloned().unwrap_or_default();
    let order = info.map_or(Vec::new(), |i| {
        form::form_for(&c.program.types, &i.ty).names()
    });
    for v in &shown {
        out.push_str(&format!(
            "<div class=\"shown\">{}</div>",
            value_in_order(v, &order)
        ));
    }
    out.push_str(&format!(
        "<details><summary>The run's input</summary>{}</details>",
        value(&c.run.input)
    ));
    out.push_str(&format!(
        "<details><summary>Steps that led here ({})</summary>{}</details>",
        c.steps.len(),
        steps_table(&c.steps)
    ));
    if let Some(e) = &c.program.error {
        out.push_str(&format!(
            "<p class=\"error\">{}: the value cannot be edited here.</p>",
            escape(e)
        ));
    }
    let hidden = format!(
        "<input type=\"hidden\" name=\"run\" value=\"{}\"><input type=\"hidden\" name=\"key\" value=\"{}\">",
        escape(&g.run_id),
        escape(&g.key)
    );
    let mine = |action: &str| refusal.filter(|r| r.action == action);
    out.push_str("<div class=\"actions\">");
    out.push_str(&format!(
        "<form method=\"post\" action=\"/inbox/decide\">{hidden}<button class=\"approve\" name=\"action\" value=\"approve\">Approve</button></form>"
    ));
    let reject = mine("reject");
    out.push_str(&format!(
        "<form method=\"post\" action=\"/inbox/decide\" class=\"reject-form\">{hidden}\
         <div><input type=\"text\" name=\"reason\" placeholder=\"Why reject?\" aria-label=\"reason for rejecting\" value=\"{}\">{}</div>\
         <button class=\"reject\" name=\"action\" value=\"reject\">Reject</button></form>",
        escape(reject.and_then(|r| r.entered.get("reason")).map_or("", String::as_str)),
        reject
            .map(|r| r.problems.iter().map(|(_, m)| format!("<div class=\"error\" role=\"alert\">{}</div>", escape(m))).collect::<String>())
            .unwrap_or_default()
    ));
    if let Some(info) = info {
        let edit = mine("edit");
        let form = form::form_for(&c.program.types, &info.ty);
        let fields = form::html(
            &form,
            shown.first().unwrap_or(&Value::Null),
            edit.map(|r| &r.entered),
            edit.map_or(&Vec::new(), |r| &r.problems),
        );
        out.push_str(&format!(
            "<details class=\"edit\"{}><summary>Edit, then approve</summary>\
             <form method=\"post\" action=\"/inbox/decide\">{hidden}{fields}\
             <button class=\"edit\" name=\"action\" value=\"edit\">Approve the edited value</button></form></details>",
            if edit.is_some() { " open" } else { "" }
        ));
    }
    out.push_str("</div></article>");
    out
}

fn steps_table(steps: &[(String, Option<Value>)]) -> String {
    if steps.is_empty() {
        return "<p class=\"none\">No step completed yet.</p>".into();
    }
    let mut out = String::from("<table class=\"record\">");
    for (key, v) in steps {
        out.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(key),
            match v {
                Some(v) => value(v),
                None => "<span class=\"none\">skipped</span>".into(),
            }
        ));
    }
    out.push_str("</table>");
    out
}

async fn decide(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let (run, key, action) = (field("run"), field("key"), field("action"));
    // The edit form is read by the gate's type, which the run's program has.
    let entered = form.clone();
    let reviewer = who.clone();
    let (run2, key2, action2) = (run.clone(), key.clone(), action.clone());
    let result = app
        .blocking(move |app, store| {
            let verdict = match action2.as_str() {
                "approve" => Verdict::Approve,
                "reject" => Verdict::Reject(entered.get("reason").cloned().unwrap_or_default()),
                "edit" => {
                    let r = view::visible_run(store, &reviewer, &run2)?;
                    let g = store.gate(&run2, &key2)?.ok_or_else(|| {
                        ApiError::NotFound(format!("run {run2} has no gate {key2}"))
                    })?;
                    let program = app.program(store, &r);
                    let info = program.gate(&g.flow, &g.gate).ok_or_else(|| {
                        ApiError::Unprocessable(
                            serde_json::json!({"error": program.error.clone().unwrap_or_default()}),
                        )
                    })?;
                    let form = form::form_for(&program.types, &info.ty);
                    match form::read(&form, &entered) {
                        Ok(v) => Verdict::Edit(v),
                        Err(problems) => return Ok(Err(problems)),
                    }
                }
                other => return Err(ApiError::BadRequest(format!("unknown action `{other}`"))),
            };
            let decided = view::decide(app, store, &reviewer, &run2, &key2, verdict);
            match decided {
                Ok(g) => Ok(Ok(g)),
                Err(ApiError::Unprocessable(body)) if action2 == "edit" => {
                    // Tie the validator's messages to the form's fields.
                    let r = view::visible_run(store, &reviewer, &run2)?;
                    let program = app.program(store, &r);
                    let g = store.gate(&run2, &key2)?;
                    let errors: Vec<String> = body["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                    let mut problems = match g.as_ref().and_then(|g| program.gate(&g.flow, &g.gate))
                    {
                        Some(info) => {
                            form::attribute(&form::form_for(&program.types, &info.ty), &errors)
                        }
                        None => Vec::new(),
                    };
                    if problems.is_empty() {
                        problems.push((
                            None,
                            body["error"].as_str().unwrap_or("refused").to_string(),
                        ));
                    }
                    Ok(Err(problems))
                }
                Err(ApiError::Unprocessable(body)) => Ok(Err(vec![(
                    body["field"].as_str().map(str::to_string),
                    body["error"].as_str().unwrap_or("refused").to_string(),
                )])),
                Err(e) => Err(e),
            }
        })
        .await;
    match result {
        Ok(Ok(g)) => {
            let what = if g.status == "approved" && g.value.is_some() {
                "approved with an edited value".to_string()
            } else {
                g.status.clone()
            };
            Redirect::to(&format!(
                "/inbox?decided={}&gate={}&run={}",
                urlencode(&what),
                urlencode(&g.gate),
                urlencode(&g.run_id)
            ))
            .into_response()
        }
        Ok(Err(problems)) => {
            let refusal = Refusal {
                run,
                key,
                action,
                entered: form,
                problems,
            };
            render_inbox(
                &app,
                who,
                Some((
                    false,
                    "The decision was not recorded; see the card below.".into(),
                )),
                Some(refusal),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(ApiError::Conflict(body)) => {
            let text = body["error"]
                .as_str()
                .unwrap_or("already decided")
                .to_string();
            render_inbox(&app, who, Some((false, text)), None, StatusCode::CONFLICT).await
        }
        Err(e) => refused(e),
    }
}

/// Percent-encodes a query value.
fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn runs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let get = |k: &str| q.get(k).cloned().filter(|v| !v.is_empty());
    let filter = match api::filter(get("status"), get("flow"), get("since").as_deref()) {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    let reviewer = who.clone();
    let list = match app
        .blocking(move |app, store| api::runs(app, store, &reviewer, &filter, 200))
        .await
    {
        Ok(l) => l,
        Err(e) => return refused(e),
    };
    let mut body =
        String::from("<h1>Runs</h1><form class=\"filters\" method=\"get\" action=\"/runs\">");
    for (name, hint) in [("status", "waiting"), ("flow", ""), ("since", "7d")] {
        body.push_str(&format!(
            "<label>{name}<input name=\"{name}\" placeholder=\"{hint}\" value=\"{}\"></label>",
            escape(&get(name).unwrap_or_default())
        ));
    }
    body.push_str("<button>Filter</button></form>");
    body.push_str(&format!("<div class=\"count\">{} runs</div>", list.len()));
    body.push_str("<table><thead><tr><th>run</th><th>flow</th><th>status</th><th>cost</th><th>tokens</th><th>started</th></tr></thead><tbody>");
    for r in &list {
        let id = r["id"].as_str().unwrap_or("");
        body.push_str(&format!(
            "<tr><td><a href=\"/runs/{}\"><code>{}</code></a></td><td>{}</td><td><span class=\"status {}\">{}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(id),
            escape(id),
            escape(r["flow"].as_str().unwrap_or("")),
            escape(r["status"].as_str().unwrap_or("")),
            escape(r["status"].as_str().unwrap_or("")),
            dollars(r["spend"]["cost"].as_f64().unwrap_or(0.0)),
            r["spend"]["tokens"],
            ago(r["created_at"].as_f64().unwrap_or(0.0)),
        ));
    }
    body.push_str("</tbody></table>");
    Html(page("Runs", Some(&who), None, &body)).into_response()
}

async fn run_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let reviewer = who.clone();
    let view = match app
        .blocking(move |app, store| {
            let v = view::run_view(app, store, &reviewer, &run)?;
            let trace = view::trace(&v.run);
            Ok((v, trace))
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let (v, trace) = view;
    Html(page(
        &format!("Run {}", v.run.id),
        Some(&who),
        None,
        &run_html(&v, trace),
    ))
    .into_response()
}

fn run_html(v: &RunView, trace: Result<Vec<Value>, String>) -> String {
    let r = &v.run;
    let mut out = format!(
        "<h1>Run <code>{}</code> <span class=\"status {}\">{}</span></h1>\
         <p class=\"meta\">flow <b>{}</b> · started {} · updated {}</p>",
        escape(&r.id),
        escape(&r.status),
        escape(&r.status),
        escape(&r.flow),
        ago(r.created_at),
        ago(r.updated_at)
    );
    out.push_str("<section class=\"card\"><h2>Spend against budget</h2><table class=\"spend\"><thead><tr><th></th><th>spent</th><th>budget</th><th></th></tr></thead><tbody>");
    let spend = view::spend_json(r, &v.program);
    for (name, label, money) in [
        ("cost", "cost", true),
        ("tokens", "tokens", false),
        ("steps", "steps", false),
        ("tool_calls", "tool calls", false),
        ("wall_seconds", "active seconds", false),
    ] {
        let spent = spend[name]["spent"].as_f64().unwrap_or(0.0);
        let limit = spend[name]["limit"].as_f64();
        let show = |n: f64| {
            if money {
                dollars(n)
            } else if name == "wall_seconds" {
                format!("{n:.1}")
            } else {
                format!("{n:.0}")
            }
        };
        out.push_str(&format!(
            "<tr><th>{label}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            show(spent),
            limit.map(show).unwrap_or_else(|| "<span class=\"none\">none</span>".into()),
            limit
                .filter(|l| *l > 0.0)
                .map(|l| format!("<meter min=\"0\" max=\"{l}\" low=\"{}\" high=\"{}\" optimum=\"0\" value=\"{spent}\"></meter>", l * 0.7, l * 0.9))
                .unwrap_or_default()
        ));
    }
    out.push_str("</tbody></table></section>");
    out.push_str(&format!(
        "<section class=\"card\"><h2>Input</h2>{}",
        value(&r.input)
    ));
    if let Some(o) = &r.output {
        out.push_str(&format!("<h3>Output</h3>{}", value(o)));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!(
            "<h3>Error</h3><p class=\"error\">{}</p>",
            escape(e)
        ));
    }
    out.push_str("</section>");
    if !v.gates.is_empty() {
        out.push_str("<section class=\"card\"><h2>Gates</h2>");
        for g in &v.gates {
            let doc = view::gate_json(g);
            out.push_str(&format!(
                "<h3>{} <span class=\"status {}\">{}</span></h3><p class=\"meta\">{}{}</p>",
                escape(&if g.key.contains(['[', '/']) {
                    format!("{} at {}", g.gate, g.key)
                } else {
                    g.gate.clone()
                }),
                escape(&g.status),
                escape(&g.status),
                match (&g.decided_by, g.decided_at) {
                    (Some(by), Some(at)) =>
                        format!("by <b>{}</b> at {} ({})", escape(by), utc(at), ago(at)),
                    _ => format!("waiting since {}", ago(g.created_at)),
                },
                g.reason
                    .as_ref()
                    .map(|r| format!(" · reason: {}", escape(r)))
                    .unwrap_or_default()
            ));
            let order = v.program.gate(&g.flow, &g.gate).map_or(Vec::new(), |i| {
                form::form_for(&v.program.types, &i.ty).names()
            });
            let shown: String = g
                .show
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| value_in_order(s, &order))
                .collect();
            out.push_str(&format!(
                "<details><summary>Shown</summary>{shown}</details>"
            ));
            if !doc["released"].is_null() {
                out.push_str(&format!(
                    "<details open><summary>Released{}</summary>{}</details>",
                    if g.value.is_some() { " (edited)" } else { "" },
                    value_in_order(&doc["released"], &order)
                ));
            }
        }
        out.push_str("</section>");
    }
    out.push_str("<section class=\"card\"><h2>Steps</h2>");
    match &trace {
        Ok(events) => out.push_str(&timeline(events)),
        Err(m) => out.push_str(&format!(
            "<p class=\"hint\">{}; the steps as the store keeps them:</p>",
            escape(m)
        )),
    }
    out.push_str(&format!(
        "<details{}><summary>Completed steps ({})</summary>{}</details></section>",
        if trace.is_err() { " open" } else { "" },
        v.steps.len(),
        steps_table(&v.steps)
    ));
    if let Ok(events) = &trace {
        out.push_str(&format!(
            "<section class=\"card\"><h2>Trace</h2><details><summary>{} events</summary><table><thead><tr><th>kind</th><th>name</th><th>status</th><th>ms</th><th>details</th></tr></thead><tbody>",
            events.len()
        ));
        for e in events.iter().take(1000) {
            let duration = match (e["start_ms"].as_f64(), e["end_ms"].as_f64()) {
                (Some(s), Some(t)) => format!("{:.0}", t - s),
                _ => String::new(),
            };
            let mut details = e.clone();
            if let Value::Object(m) = &mut details {
                for k in [
                    "run", "id", "parent", "kind", "name", "start_ms", "end_ms", "at_ms", "status",
                ] {
                    m.remove(k);
                }
            }
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{duration}</td><td>{}</td></tr>",
                escape(e["kind"].as_str().unwrap_or("")),
                escape(e["name"].as_str().unwrap_or("")),
                escape(e["status"].as_str().or(e["decision"].as_str()).unwrap_or("")),
                if details.as_object().is_some_and(|m| m.is_empty()) { String::new() } else { value(&details) }
            ));
        }
        out.push_str("</tbody></table></details></section>");
    }
    out
}

/// The trace's spans (steps, calls, flows, agents) on one time axis.
fn timeline(events: &[Value]) -> String {
    // Spans, and the gates' point events (waiting, decided) as instants.
    let spans: Vec<&Value> = events
        .iter()
        .filter(|e| {
            (e["start_ms"].is_f64() && e["kind"] != "run")
                || (e["kind"] == "gate" && e["at_ms"].is_f64())
        })
        .collect();
    if spans.is_empty() {
        return "<p class=\"none\">No step has ended yet.</p>".into();
    }
    let begins = |e: &Value| e["start_ms"].as_f64().or(e["at_ms"].as_f64());
    let ends = |e: &Value| e["end_ms"].as_f64().or(e["at_ms"].as_f64());
    let start = spans
        .iter()
        .filter_map(|e| begins(e))
        .fold(f64::MAX, f64::min);
    let end = spans
        .iter()
        .filter_map(|e| ends(e))
        .fold(start + 1.0, f64::max);
    let mut sorted = spans.clone();
    sorted.sort_by(|a, b| {
        begins(a)
            .partial_cmp(&begins(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out = String::from("<table class=\"timeline\"><thead><tr><th>step</th><th>kind</th><th>status</th><th>ms</th><th class=\"bar\">when</th></tr></thead><tbody>");
    for e in sorted.iter().take(500) {
        let s = begins(e).unwrap_or(start);
        let t = ends(e).unwrap_or(s);
        let left = (s - start) / (end - start) * 100.0;
        let width = ((t - s) / (end - start) * 100.0).max(0.3);
        let status = e["status"]
            .as_str()
            .or(e["decision"].as_str())
            .unwrap_or("");
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.0}</td><td class=\"bar\"><div class=\"track\"><div class=\"span{}\" style=\"left:{left:.2}%;width:{width:.2}%\"></div></div></td></tr>",
            escape(e["name"].as_str().unwrap_or("")),
            escape(e["kind"].as_str().unwrap_or("")),
            escape(status),
            t - s,
            match status {
                "ok" | "completed" | "approved" => "",
                "waiting" => " wait",
                _ => " error",
            },
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(at: f64) -> String {
    let secs = at.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_796_464_800.0), "2026-12-05 10:00:00 UTC");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
    }
}
