//! HTTP tools send the request their clauses describe (`query`, `body
//! json|form`, `raw`, the default body, `User-Agent`, `Accept`) and read the
//! response as their `format` says. Every test asserts on what the loopback
//! server received.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::mock_server::{MockServer, RecordedRequest, Reply};

use flowc::exec::Tool;
use flowc::run::error::{CallError, ErrorClass};
use flowc::run::http_client::HttpClients;
use flowc::run::tools::{invoke, ToolContext};
use flowc::Compilation;

const TOOLS: &str = r#"
type File { filename: string, status: string }

tool list_files(owner: string, repo: string, number: int, per_page?: int,
                labels?: [string], q: string) -> [File] {
  http GET "{env.API}/repos/{owner}/{repo}/pulls/{number}/files?fixed=1"
  query { per_page: per_page, labels: labels, q: q, state: "open" }
  effect read
  timeout 5s
}

tool create_comment(owner: string, repo: string, number: int, body: string,
                    draft?: bool, token: string) -> json {
  http POST "{env.API}/repos/{owner}/{repo}/issues/{number}/comments"
  header "Authorization" "Bearer {token}"
  effect write
  timeout 5s
}

tool create_review(owner: string, number: int, text: string) -> json {
  http POST "{env.API}/repos/{owner}/pulls/{number}/reviews"
  body { event: "COMMENT", body: text, comments: [] }
  effect write
  timeout 5s
}

tool send_form(text: string, tags: [string], missing?: string) -> json {
  http POST "{env.API}/form"
  body form { text: text, tag: tags, missing: missing, n: 3 }
  effect write
  timeout 5s
}

tool get_content(path: string) -> json {
  http GET "{env.API}/contents/{path}"
  raw path
  effect read
  timeout 5s
}

tool get_segment(path: string) -> json {
  http GET "{env.API}/contents/{path}"
  effect read
  timeout 5s
}

tool get_diff(number: int) -> string {
  http GET "{env.API}/pulls/{number}.diff"
  effect read
  timeout 5s
}

tool get_json(number: int) -> { title: string } {
  http GET "{env.API}/pulls/{number}.diff"
  effect read
  timeout 5s
}

tool get_quoted(number: int) -> string {
  http GET "{env.API}/quoted/{number}"
  format json
  effect read
  timeout 5s
}

tool as_bot(number: int) -> json {
  http GET "{env.API}/bot/{number}"
  header "User-Agent" "review-bot/2 (+https://example.com)"
  header "Accept" "application/vnd.github+json"
  effect read
  timeout 5s
}

tool search(filter: json) -> json {
  http GET "{env.API}/search"
  query { filter: filter }
  effect read
  timeout 5s
}
"#;

struct Program(Compilation);

impl Program {
    fn new() -> Program {
        let c = support::program::compiled(&[support::program::text("http_requests.flow", TOOLS)]);
        Program(c)
    }

    fn tool(&self, name: &str) -> &Tool {
        let program = self.0.program.as_ref().expect("checked").sealed();
        program
            .tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool `{name}`"))
    }
}

async fn call(server: &MockServer, tool: &Tool, args: Value) -> Result<Value, CallError> {
    let http = HttpClients::new(None).expect("the run's clients");
    let api = server.base_url();
    let env = move |name: &str| (name == "API").then(|| api.clone());
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let ctx = ToolContext {
        http: &http,
        env: &env,
        idempotency_key: None,
        timeout: Duration::from_secs(5),
        traceparent: None,
        mcp: None,
    };
    invoke(tool, &args, &ctx).await
}

fn only(server: &MockServer) -> RecordedRequest {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().expect("one request")
}

const USER_AGENT: &str = concat!("flowc/", env!("CARGO_PKG_VERSION"));

#[tokio::test]
async fn query_parameters_are_appended_absent_ones_left_out_lists_repeated() {
    let server = MockServer::start();
    server.always("GET /repos/octo/hello/pulls/7/files", Reply::ok(json!([])));
    let p = Program::new();
    let out = call(
        &server,
        p.tool("list_files"),
        json!({"owner": "octo", "repo": "hello", "number": 7,
               "labels": ["bug", "needs review", "a&b=c"], "q": "x y"}),
    )
    .await
    .expect("call succeeds");
    assert_eq!(out, json!([]));
    let seen = only(&server);
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.query.as_deref(),
        Some("fixed=1&labels=bug&labels=needs+review&labels=a%26b%3Dc&q=x+y&state=open"),
        "the URL's own query first, then the clause's in order; per_page absent"
    );
    assert!(seen.raw_body.is_empty(), "a GET without `body` sends none");
    assert_eq!(seen.header("user-agent"), Some(USER_AGENT));
    assert_eq!(seen.header("accept"), Some("application/json"));
}

#[tokio::test]
async fn a_record_in_the_query_fails_before_anything_is_sent() {
    let server = MockServer::start();
    let p = Program::new();
    let e = call(
        &server,
        p.tool("search"),
        json!({"filter": {"state": "open"}}),
    )
    .await
    .expect_err("a record has no query form");
    assert_eq!(e.class, ErrorClass::Client, "{e}");
    assert!(e.message.contains("`filter` is a record"), "{e}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_default_body_holds_only_the_arguments_the_url_and_headers_do_not_use() {
    let server = MockServer::start();
    server.always(
        "POST /repos/octo/hello/issues/7/comments",
        Reply::json(201, json!({"id": 1})),
    );
    let p = Program::new();
    call(
        &server,
        p.tool("create_comment"),
        json!({"owner": "octo", "repo": "hello", "number": 7,
               "body": "Looks good", "token": "t-123"}),
    )
    .await
    .expect("call succeeds");
    let seen = only(&server);
    assert_eq!(
        seen.body,
        json!({"body": "Looks good"}),
        "owner, repo, number (URL) and token (header) are not in the body; draft is absent"
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("authorization"), Some("Bearer t-123"));
    assert_eq!(seen.header("user-agent"), Some(USER_AGENT));
}

#[tokio::test]
async fn a_json_body_is_the_clause_value() {
    let server = MockServer::start();
    server.always("POST /repos/octo/pulls/7/reviews", Reply::ok(json!({})));
    let p = Program::new();
    call(
        &server,
        p.tool("create_review"),
        json!({"owner": "octo", "number": 7, "text": "Two nits"}),
    )
    .await
    .expect("call succeeds");
    let seen = only(&server);
    assert_eq!(
        seen.body,
        json!({"event": "COMMENT", "body": "Two nits", "comments": []})
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn a_form_body_is_url_encoded() {
    let server = MockServer::start();
    server.always("POST /form", Reply::ok(json!({"ok": true})));
    let p = Program::new();
    call(
        &server,
        p.tool("send_form"),
        json!({"text": "hello world & more", "tags": ["a", "b"]}),
    )
    .await
    .expect("call succeeds");
    let seen = only(&server);
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // serde_json's map keeps keys sorted; an absent field is left out.
    assert_eq!(seen.raw_body, "n=3&tag=a&tag=b&text=hello+world+%26+more");
}

#[tokio::test]
async fn raw_parameters_keep_slashes_others_are_one_segment() {
    let server = MockServer::start();
    server.always(
        "/contents/docs/a%20b/%41.md",
        Reply::ok(json!({"raw": true})),
    );
    server.always(
        "/contents/docs%2Fa%20b%2F%2541.md",
        Reply::ok(json!({"raw": false})),
    );
    let p = Program::new();
    let path = json!({"path": "docs/a b/%41.md"});
    let raw = call(&server, p.tool("get_content"), path.clone()).await;
    let segment = call(&server, p.tool("get_segment"), path).await;
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/contents/docs/a%20b/%41.md",
            "/contents/docs%2Fa%20b%2F%2541.md"
        ],
        "as received, before any decoding"
    );
    assert_eq!(raw.expect("raw call"), json!({"raw": true}));
    assert_eq!(segment.expect("segment call"), json!({"raw": false}));

    for (tool, value) in [
        ("get_content", "docs/../../admin"),
        ("get_content", "%2e%2E"),
        ("get_segment", ".."),
    ] {
        let e = call(&server, p.tool(tool), json!({"path": value}))
            .await
            .expect_err("a dot segment moves the request");
        assert!(e.message.contains("`..` segment"), "{value}: {e}");
    }
    assert_eq!(server.requests().len(), 2, "nothing sent for dot segments");
}

#[tokio::test]
async fn a_string_tool_over_a_text_endpoint_returns_the_text() {
    let server = MockServer::start();
    let diff = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new ü\n";
    server.always(
        "/pulls/7.diff",
        Reply::raw(200, diff).with_header("content-type", "text/x-diff; charset=utf-8"),
    );
    let p = Program::new();
    let out = call(&server, p.tool("get_diff"), json!({"number": 7}))
        .await
        .expect("text is read as text");
    assert_eq!(out, Value::String(diff.into()));
    let seen = only(&server);
    assert!(
        seen.header("accept")
            .is_some_and(|a| a.starts_with("text/plain")),
        "{:?}",
        seen.header("accept")
    );
    assert_eq!(seen.header("user-agent"), Some(USER_AGENT));
}

#[tokio::test]
async fn a_json_tool_over_a_text_endpoint_fails_naming_the_content_type() {
    let server = MockServer::start();
    server.always(
        "/pulls/7.diff",
        Reply::raw(200, "<html><body>Sign in</body></html>")
            .with_header("content-type", "text/html; charset=utf-8"),
    );
    let p = Program::new();
    let e = call(&server, p.tool("get_json"), json!({"number": 7}))
        .await
        .expect_err("HTML is not JSON");
    assert_eq!(e.class, ErrorClass::Invalid);
    assert_eq!(e.status, Some(200));
    assert!(
        e.message.contains("`text/html; charset=utf-8`") && e.message.contains("not JSON"),
        "{e}"
    );
    assert_eq!(only(&server).header("accept"), Some("application/json"));
}

#[tokio::test]
async fn format_json_on_a_string_tool_parses_a_json_string() {
    let server = MockServer::start();
    server.always("/quoted/1", Reply::ok(json!("a \"quoted\" answer")));
    let p = Program::new();
    let out = call(&server, p.tool("get_quoted"), json!({"number": 1}))
        .await
        .expect("JSON string");
    assert_eq!(out, json!("a \"quoted\" answer"));
}

#[tokio::test]
async fn headers_the_tool_sets_replace_the_defaults() {
    let server = MockServer::start();
    server.always("/bot/1", Reply::ok(json!({})));
    let p = Program::new();
    call(&server, p.tool("as_bot"), json!({"number": 1}))
        .await
        .expect("call succeeds");
    let seen = only(&server);
    let agents: Vec<_> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "user-agent")
        .collect();
    assert_eq!(agents.len(), 1, "one User-Agent: {:?}", seen.headers);
    assert_eq!(
        seen.header("user-agent"),
        Some("review-bot/2 (+https://example.com)")
    );
    assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
}

#[tokio::test]
async fn an_error_status_quotes_the_apis_message() {
    let server = MockServer::start();
    server.always(
        "/bot/404",
        Reply::json(
            404,
            json!({"message": "Not Found",
                   "documentation_url": "https://docs.github.com/rest/pulls/pulls#get-a-pull-request"}),
        ),
    );
    let p = Program::new();
    let e = call(&server, p.tool("as_bot"), json!({"number": 404}))
        .await
        .expect_err("404");
    assert_eq!(e.class, ErrorClass::Client);
    assert_eq!(e.status, Some(404));
    assert!(
        e.message.ends_with("returned 404 Not Found: Not Found"),
        "{e}"
    );
}

/// What has no text form is refused at check time where the types say so.
#[test]
fn check_refuses_records_in_queries_and_forms_and_text_for_a_record() {
    let src = r#"
tool q(filter: { state: string }) -> json {
  http GET "https://api.example.com/search"
  query { filter: filter }
  effect read
  timeout 5s
}
tool f(nested: { a: int }) -> json {
  http POST "https://api.example.com/form"
  body form { nested: nested }
  effect write
  timeout 5s
}
tool t() -> { title: string } {
  http GET "https://api.example.com/page"
  format text
  effect read
  timeout 5s
}
"#;
    let c = flowc::compile(&[support::program::text("bad.flow", src)]).expect("loads");
    assert!(c.program.is_none());
    let messages: Vec<String> = c
        .problems
        .errors
        .iter()
        .map(|d| format!("{} {}", d.code.as_str(), d.message))
        .collect();
    assert_eq!(
        messages,
        [
            "T007 query parameter `filter` is a record, which has no text form in a URL",
            "T007 form field `nested` is a record, which has no form encoding",
            "T007 `format text` reads the response as text, but the tool returns something else",
        ],
        "{messages:#?}"
    );
}

/// Lowering's rule for the default body, seen from the sealed program: the
/// parameters the URL, query and headers do not read.
#[test]
fn the_sealed_default_body_names_the_unused_parameters() {
    let p = Program::new();
    let tool = p.tool("create_comment");
    let flowc::exec::ToolKind::Http { body, .. } = &tool.kind else {
        panic!("an http tool")
    };
    let flowc::exec::HttpBody::Args(indices) = body else {
        panic!("the default body: {body:?}")
    };
    let names: Vec<&str> = indices
        .iter()
        .map(|&i| tool.params[i].name.as_str())
        .collect();
    assert_eq!(names, ["body", "draft"]);
}
