//! `flowc fmt`: every example and standard-library module is in canonical
//! form, formatting is idempotent, keeps every comment and never changes what
//! a file means (the checked program is the same before and after); and the
//! layout rules, tricky strings and comments in odd places, one by one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flowc::format::{comments, format_source};
use flowc::ir::{self, Program, StepKind, ToolKind};
use flowc::{compile, Compilation, Input};
use petgraph::visit::EdgeRef;

// ---------------------------------------------------------------- helpers

/// Every `.flow` file in examples/ (recursively) and stdlib/.
fn corpus() -> Vec<PathBuf> {
    let mut files = flowc::flow_files(Path::new("examples")).expect("examples/");
    files.extend(flowc::flow_files(Path::new("stdlib")).expect("stdlib/"));
    assert!(files.len() >= 10, "{files:?}");
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fmt(text: &str) -> String {
    match format_source(text) {
        Ok(out) => out,
        Err(diagnostics) => {
            let messages: Vec<String> = diagnostics.iter().map(|d| d.message.clone()).collect();
            panic!("not formatted: {messages:#?}\n{text}")
        }
    }
}

fn sorted_comments(text: &str) -> Vec<String> {
    let mut c = comments(text);
    c.sort();
    c
}

/// Formats `text` and checks what every formatting must keep: a second
/// pass changes nothing and every comment is still there.
fn fmt_checked(text: &str) -> String {
    let once = fmt(text);
    assert_eq!(
        fmt(&once),
        once,
        "formatting twice changed the text:\n{once}"
    );
    assert_eq!(
        sorted_comments(&once),
        sorted_comments(text),
        "comments changed:\n{once}"
    );
    assert!(
        !once.lines().any(|l| l.ends_with(' ')),
        "trailing spaces:\n{once}"
    );
    once
}

fn flowc(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowc runs");
    let input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut input = input;
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("flowc exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh folder under the target's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("format-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("folder");
    }
    std::fs::write(path, text).expect("write");
}

fn compile_file(path: &Path) -> Compilation {
    compile(&[Input::Path(path.to_path_buf())]).expect("loads")
}

// ---------------------------------------------------------------- fingerprint

/// What a checked program means, without positions: for each flow its steps
/// (name, kind, type and what the step does), its edges (source, target,
/// why), and the tools, agents, models and types with their JSON schemas.
/// A file that does not check gives its diagnostics instead.
fn fingerprint(c: &Compilation) -> String {
    let Some(checked) = &c.program else {
        let mut problems: Vec<String> = c
            .problems
            .sorted()
            .iter()
            .map(|d| format!("{} {}", d.code.as_str(), d.message))
            .collect();
        problems.sort();
        return format!("does not check:\n{}", problems.join("\n"));
    };
    let p = checked.program();
    let types = &p.types;
    let mut out = Vec::new();
    for (i, def) in types.defs.iter().enumerate() {
        let ty = flowc::types::Ty::Named(flowc::types::TypeId(i as u32));
        out.push(format!(
            "type {} = {} schema {}",
            def.name,
            types.display(&ty),
            flowc::schema::document(types, &ty, flowc::types::Boundary::Incoming)
        ));
    }
    for m in &p.models {
        out.push(format!(
            "model {} provider {} id {:?} temperature {:?} max_tokens {:?} fallback {:?} extra {:?} price {:?}",
            m.name,
            p.providers[m.provider.index()].name,
            m.model_id,
            m.temperature,
            m.max_tokens,
            m.fallback.map(|f| &p.models[f.index()].name),
            m.extra,
            m.price
        ));
    }
    for pr in &p.providers {
        out.push(format!(
            "provider {} {:?} {:?} {:?} {:?} {:?}",
            pr.name, pr.protocol, pr.base_url_env, pr.base_url, pr.api_key_env, pr.prices
        ));
    }
    for r in &p.resources {
        out.push(format!("resource {}", r.name));
    }
    for t in &p.tools {
        let params: Vec<_> = t
            .params
            .iter()
            .map(|q| (q.name.clone(), q.ty.clone(), q.optional))
            .collect();
        let kind = match &t.kind {
            Some(ToolKind::Http {
                method,
                url,
                headers,
                query,
                body,
                format,
                raw,
            }) => {
                let headers: Vec<String> = headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", template(p, None, v)))
                    .collect();
                let query: Vec<String> = query
                    .iter()
                    .map(|(n, v)| format!("{n}={}", expr(p, None, v)))
                    .collect();
                let body = match body {
                    ir::HttpBody::None => "none".to_string(),
                    ir::HttpBody::Args(args) => format!("args {args:?}"),
                    ir::HttpBody::Value(encoding, v) => {
                        format!("{} {}", encoding.as_str(), expr(p, None, v))
                    }
                };
                format!(
                    "http {method} {} {headers:?} query {query:?} body {body} format {} raw {raw:?}",
                    template(p, None, url),
                    format.as_str()
                )
            }
            Some(ToolKind::Exec { argv }) => {
                let argv: Vec<String> = argv.iter().map(|a| template(p, None, a)).collect();
                format!("exec {argv:?}")
            }
            Some(ToolKind::Builtin { name }) => format!("builtin {name}"),
            Some(ToolKind::Mcp { server, name }) => {
                format!("mcp {} {name}", p.servers[server.index()].name)
            }
            None => "no kind".into(),
        };
        let names = |ids: &[ir::ResourceId]| -> Vec<String> {
            ids.iter()
                .map(|r| p.resources[r.index()].name.clone())
                .collect()
        };
        out.push(format!(
            "tool {} {} effect {:?} reads {:?} writes {:?} timeout {:?} retry {} idempotency {:?} limit {:?} \
             arguments {} result {}",
            t.name,
            kind,
            t.effect,
            names(&t.reads),
            names(&t.writes),
            t.timeout_seconds,
            retry(t.retry.as_ref()),
            t.idempotency.as_ref().map(|i| template(p, None, i)),
            t.limit_tokens,
            flowc::schema::params_document(types, &params),
            flowc::schema::document(types, &t.output, flowc::types::Boundary::Incoming),
        ));
    }
    for a in &p.agents {
        let params: Vec<String> = a
            .params
            .iter()
            .map(|q| {
                format!(
                    "{}{}: {}",
                    q.name,
                    if q.optional { "?" } else { "" },
                    types.display(&q.ty)
                )
            })
            .collect();
        let tools: Vec<&str> = a
            .tools
            .iter()
            .map(|(t, _)| p.tools[t.index()].name.as_str())
            .collect();
        out.push(format!(
            "agent {}({}) -> {} model {:?} tools {tools:?} may {:?} max_steps {:?} max_repeat {:?} \
             instructions {:?} budget {} timeout {:?}",
            a.name,
            params.join(", "),
            types.display(&a.output),
            a.model.map(|m| &p.models[m.index()].name),
            a.may,
            a.max_steps,
            a.max_repeat,
            a.instructions.as_ref().map(|i| template(p, None, i)),
            budget(a.budget.as_ref()),
            a.timeout_seconds,
        ));
    }
    for f in &p.flows {
        let params: Vec<String> = f
            .params
            .iter()
            .map(|q| {
                format!(
                    "{}{}: {}",
                    q.name,
                    if q.optional { "?" } else { "" },
                    types.display(&q.ty)
                )
            })
            .collect();
        out.push(format!(
            "flow {}({}) -> {} budget {}",
            f.name,
            params.join(", "),
            types.display(&f.output),
            budget(f.budget.as_ref())
        ));
        let g = &f.graph;
        let mut steps: Vec<String> = g
            .node_indices()
            .map(|n| {
                let s = &g[n];
                let fallback = match s.fallback.as_deref() {
                    None => String::new(),
                    Some(ir::Fallback::Value(e)) => format!(" fallback {}", expr(p, Some(f), e)),
                    Some(ir::Fallback::Call(target, args, _)) => {
                        format!(" fallback {}({})", target.name(p), arguments(p, f, args))
                    }
                };
                format!(
                    "  step {} {} : {} = {}{fallback}",
                    s.name,
                    kind_name(&s.kind),
                    types.display(&s.ty),
                    step_detail(p, f, &s.kind)
                )
            })
            .collect();
        steps.sort();
        out.extend(steps);
        let mut edges: Vec<String> = g
            .edge_references()
            .map(|e| {
                format!(
                    "  edge {} -> {} {:?}",
                    g[e.source()].name,
                    g[e.target()].name,
                    e.weight()
                )
            })
            .collect();
        edges.sort();
        out.extend(edges);
    }
    for t in &p.tests {
        let flow = t.flow.map(|id| &p.flows[id.index()]);
        let args: Vec<String> = t
            .args
            .iter()
            .map(|(n, e)| format!("{n}: {}", expr(p, None, e)))
            .collect();
        let expects: Vec<String> = t.expects.iter().map(|e| expr(p, None, e)).collect();
        let calls: Vec<String> = t
            .expect_calls
            .iter()
            .map(|(c, n, _)| format!("{} {n}", c.name(p)))
            .collect();
        out.push(format!(
            "test {:?} run {:?}({}) givens {} expects {expects:?} calls {calls:?} failure {:?}",
            t.name,
            flow.map(|f| &f.name),
            args.join(", "),
            t.givens.len(),
            t.expect_failure
        ));
    }
    out.join("\n")
}

fn kind_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Value(_) => "value",
        StepKind::Call { .. } => "call",
        StepKind::Llm(_) => "llm",
        StepKind::Approve(_) => "approve",
        StepKind::LoopItem { .. } => "loop-item",
        StepKind::Loop { .. } => "loop",
        StepKind::Decide { .. } => "decide",
        StepKind::Branch { .. } => "branch",
        StepKind::Check { .. } => "check",
        StepKind::Output(_) => "output",
    }
}

fn step_detail(p: &Program, f: &ir::Flow, kind: &StepKind) -> String {
    let e = |x: &ir::Expr| expr(p, Some(f), x);
    match kind {
        StepKind::Value(x) | StepKind::Output(x) => e(x),
        StepKind::LoopItem { iterable } => e(iterable),
        StepKind::Decide { subject } => e(subject),
        StepKind::Call { target, args } => format!("{}({})", target.name(p), arguments(p, f, args)),
        StepKind::Llm(l) => format!(
            "{} -> {} prompt {:?} system {:?} retry {} max_tokens {:?} timeout {:?} budget {}",
            p.models[l.model.index()].name,
            p.types.display(&l.output),
            l.prompt.as_ref().map(|t| template(p, Some(f), t)),
            l.system.as_ref().map(|t| template(p, Some(f), t)),
            retry(l.retry.as_ref()),
            l.max_tokens,
            l.timeout_seconds,
            budget(l.budget.as_ref())
        ),
        StepKind::Approve(a) => {
            let ir::Approve {
                gate,
                show,
                timeout_seconds,
                on_timeout,
                escalation,
                policy,
                notify,
            } = &**a;
            let show: Vec<String> = show.iter().map(e).collect();
            let policy = policy
                .as_ref()
                .map(|p| format!("{} sample {:?}", e(&p.when), p.sample));
            format!("{gate} show {show:?} timeout {timeout_seconds:?} on_timeout {on_timeout:?} escalation {escalation:?} policy {policy:?} notify {notify:?}")
        }
        StepKind::Loop {
            item,
            result,
            parallel,
            ..
        } => {
            format!(
                "item {} result {} parallel {parallel}",
                f.graph[*item].name, f.graph[*result].name
            )
        }
        StepKind::Branch { decide, arms } => {
            let arms: Vec<String> = arms
                .iter()
                .map(|a| {
                    format!(
                        "{:?} => {:?}",
                        a.pattern.as_ref().map(|l| l.to_string()),
                        a.result.map(|r| &f.graph[r].name)
                    )
                })
                .collect();
            format!("on {} {arms:?}", f.graph[*decide].name)
        }
        StepKind::Check { requires } => {
            let requires: Vec<String> = requires
                .iter()
                .map(|(c, m)| format!("{} else {}", e(c), template(p, Some(f), m)))
                .collect();
            format!("{requires:?}")
        }
    }
}

fn arguments(p: &Program, f: &ir::Flow, args: &[(String, ir::Expr)]) -> String {
    args.iter()
        .map(|(n, x)| format!("{n}: {}", expr(p, Some(f), x)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn retry(r: Option<&ir::RetryPolicy>) -> String {
    match r {
        None => "none".into(),
        Some(r) => format!(
            "{} on {:?} base {} factor {} cap {:?} jitter {}",
            r.retries, r.on, r.base_seconds, r.factor, r.cap_seconds, r.jitter
        ),
    }
}

fn budget(b: Option<&ir::Budget>) -> String {
    match b {
        None => "none".into(),
        Some(b) => format!(
            "tokens {:?} cost {:?} steps {:?} tool_calls {:?} wall {:?}",
            b.tokens, b.cost, b.steps, b.tool_calls, b.wall_seconds
        ),
    }
}

fn template(p: &Program, f: Option<&ir::Flow>, t: &ir::Template) -> String {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            ir::TemplatePart::Text(s) => out.push_str(&format!("{s:?}")),
            ir::TemplatePart::Expr(x) => out.push_str(&format!("{{{}}}", expr(p, f, x))),
        }
    }
    out
}

fn expr(p: &Program, f: Option<&ir::Flow>, x: &ir::Expr) -> String {
    use ir::ExprKind as K;
    let e = |y: &ir::Expr| expr(p, f, y);
    match &x.kind {
        K::Str(t) => template(p, f, t),
        K::Number(n) => format!("{n}"),
        K::Bool(b) => format!("{b}"),
        K::Null => "null".into(),
        K::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", e(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        K::List(items) => format!("[{}]", items.iter().map(e).collect::<Vec<_>>().join(", ")),
        K::Env(n) => format!("env.{n}"),
        K::Param(i) => match f {
            Some(f) => format!("param {}", f.params[*i].name),
            None => format!("param #{i}"),
        },
        K::Step(n) => match f {
            Some(f) => format!("step {}", f.graph[*n].name),
            None => format!("step #{}", n.index()),
        },
        K::Member(a, field) => format!("({}).{field}", e(a)),
        K::Len(a) => format!("({}).len", e(a)),
        K::Index(a, i) => format!("({})[{}]", e(a), e(i)),
        K::Not(a) => format!("not ({})", e(a)),
        K::And(a, b) => format!("({}) and ({})", e(a), e(b)),
        K::Or(a, b) => format!("({}) or ({})", e(a), e(b)),
        K::Compare(a, op, b) => format!("({}) {} ({})", e(a), op.as_str(), e(b)),
        K::Error => "<error>".into(),
    }
}

/// The whole program's debug form without positions: a second, blunter
/// comparison next to [`fingerprint`].
fn shape(c: &Compilation) -> Option<String> {
    let program = c.program.as_ref()?.program();
    let debug = format!("{program:?}");
    let mut out = String::new();
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("Span { file: FileId(") {
        out.push_str(&rest[..at]);
        let close = rest[at..].find(" }").expect("span closes");
        rest = &rest[at + close + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// Compiles `original` and `formatted` as the file `rel` of two copies of
/// the examples and standard library, and compares what they mean.
fn assert_same_meaning(root: &Path, rel: &Path) {
    let a = compile_file(&root.join("original").join(rel));
    let b = compile_file(&root.join("formatted").join(rel));
    let (fa, fb) = (fingerprint(&a), fingerprint(&b));
    assert!(
        !fa.starts_with("does not check") || rel.starts_with("tests"),
        "{}: {fa}",
        rel.display()
    );
    assert_eq!(
        fa,
        fb,
        "{}: formatting changed what the file means",
        rel.display()
    );
    assert_eq!(
        shape(&a),
        shape(&b),
        "{}: formatting changed the checked program",
        rel.display()
    );
}

// ---------------------------------------------------------------- the corpus

#[test]
fn formatting_every_example_twice_changes_nothing() {
    for path in corpus() {
        let once = fmt(&read(&path));
        assert_eq!(fmt(&once), once, "{}: not idempotent", path.display());
    }
}

#[test]
fn examples_and_stdlib_are_in_canonical_form() {
    let out = flowc(&["fmt", "--check", "examples/", "stdlib/"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "would change:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    for path in corpus() {
        let source = read(&path);
        assert_eq!(fmt(&source), source, "{}", path.display());
    }
}

#[test]
fn formatting_keeps_every_comment() {
    let mut total = 0;
    for path in corpus() {
        let source = read(&path);
        // Formatted from a squeezed layout too, so comments must be re-placed.
        let squeezed: String = source
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        for input in [source, squeezed] {
            let before = sorted_comments(&input);
            total += before.len();
            assert_eq!(sorted_comments(&fmt(&input)), before, "{}", path.display());
        }
    }
    assert!(total > 100, "only {total} comments in the corpus");
}

#[test]
fn formatting_never_changes_what_an_example_means() {
    let root = temp_dir("meaning");
    let files = corpus();
    for path in &files {
        let source = read(path);
        write(&root.join("original").join(path), &source);
        write(&root.join("formatted").join(path), &fmt(&source));
    }
    // The datasets evals read, beside the files that name them.
    for path in &files {
        let dir = path.parent().unwrap_or(Path::new("."));
        for entry in std::fs::read_dir(dir).expect("corpus folder").flatten() {
            let data = entry.path();
            if data.extension().is_some_and(|x| x == "jsonl" || x == "csv") {
                let rel = dir.join(entry.file_name());
                for side in ["original", "formatted"] {
                    write(&root.join(side).join(&rel), &read(&data));
                }
            }
        }
    }
    for path in &files {
        assert_same_meaning(&root, path);
    }
    // The examples' layouts squeezed flat, then formatted.
    for path in &files {
        let source = read(path);
        let squeezed: String = source
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        write(&root.join("original").join(path), &squeezed);
        write(&root.join("formatted").join(path), &fmt(&squeezed));
    }
    for path in &files {
        assert_same_meaning(&root, path);
    }
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------- every construct

/// Every construct of the language, in odd layouts. It checks clean.
const EVERY: &str = r#"// Every construct of the language, in odd layouts.

use std.models.{openai, anthropic} // two providers
use std.tools.{now}
type Id = string matching /^ID-[0-9]{3}\/x$/ len 6..20
type Level = "low" | "high" // levels
type Score = number >= 0 <= 1.50
type Big = int >= -3 <= 2k
type Maybe = string? len ..10
type Item { id: Id, level: Level, tags?: [string] len 1.., note: string? // why
}
type Wrapper {
  items: [Item] len ..5


  // the item count
  count: int >= 0
}
type External = schema "./every.schema.json"
type Strict exact {a: int,
  b?: exact { c: string }}

model fast = openai("gpt-4o-mini") { temperature: 0.20, max_tokens: 1k }
model careful = anthropic("claude-sonnet-4-5") {temperature: 0, max_tokens: 800,
  fallback: fast}

resource store resource inbox

provider mirror {
  protocol openai
  base_url env.MIRROR_URL or "http://127.0.0.1:9/v1"
  api_key env.MIRROR_KEY
  price "m-small" { input $0.10 output $0.40 }
  price * { input $1, output $2.00 }
}

tool lookup(id: Id, verbose?: bool) -> Item {
  http GET "https://api.example.com/items/{id}?v={verbose}&q={{x}}"
  header "Authorization" "Bearer {env.API_TOKEN}"
  effect read reads store
  timeout 1500ms
  retry 3 on rate_limit,timeout backoff 1s * 2.0 cap 30s jitter
  limit 1.5k tokens
}
tool save(item: Item) -> { ok: bool } {
  exec ["/usr/bin/save", "--id", "{item.id}", "--level", "{item.level}", "--store", "primary", "--verbose"]
  effect write writes store
  timeout 10s
  idempotency "save:{item.id}"
}

tool publish(path: string, page?: int, note: string) -> string {
  http PUT "https://api.example.com/files/{path}"
  query {page: page,   per_page: 100}
  body form { text: note }   format text raw path
  timeout 5s
}

tool notify(text: string len 1..500) -> { sent: bool } {
  builtin "fs.write"
  effect irreversible
  writes inbox
  timeout 5s
}

agent helper(topic: string) -> Item {
  model fast tools [lookup] may read max_steps 4 max_repeat 2 timeout 2m retry 1 on rate_limit, server_error backoff 2s
  budget { tokens 60k, cost $0.05 }
  instructions """
    Find the item about {topic}.
      Indented line, "quoted", {{braces}} and a backslash \\.

    Stop when done.
  """
}

flow process(id: Id, topic: string) -> Wrapper {
  budget { tokens 100k, cost $1.00, steps 40, tool_calls 30, wall 2h }

  let first = lookup(id: id) fallback lookup(id: "ID-000/x", verbose: true) // with a fallback
  let found = helper(topic: topic)
  let judged = llm careful -> { level: Level, reason: string len ..200 } {
    system "Judge \"fairly\".\n{{strict}}"
    prompt """
      Item: {first}
      Other: {found}
    """
    retry 1 on invalid
    max_tokens 300
    timeout 30s
    budget { tokens 8k }
  }

  check sane {
    require not (judged.reason == "") and first.id != "", "empty reason for {id}"
    require (judged.level == "low" or judged.level == "high"), "bad level"
  }

  let rechecked = for x in [first, found] parallel 2 tolerate 1 { lookup(id: x.id) }
  check mostly { require rechecked.failed.len <= 1 and rechecked.ok.len >= 1, "too few rechecked" }
  let items = for x in [first, found] parallel 2 {
    let level = if x.level == "high" { x.level } else if x.level == "low" { x.level } else { x.level }
    { id: x.id, level: level, note: x.note }
  }
  let label = match judged.level {
    "low" => "L"
    "high" => {
      let stamp = now()
      "H {stamp}"
    }
    _ => "?"
  }
  let approved = approve review { show { items: items, label: label }, timeout 1h, on_timeout reject }
  let saved = save(item: { id: approved.items[0].id, level: "low", note: label }) after sane, mostly
  let sent = notify(text: "saved {saved.ok} as {label}") after saved, approved
  return { items: items, count: items.len }
}

test "the happy path" {
  run process(id: "ID-001/x", topic: "widgets")
  given lookup returns { id: "ID-001/x", level: "low", note: null }
  given helper returns { id: "ID-002/x", level: "high", note: "x" }
  given careful returns { level: "low", reason: "fine" }
  given fast returns { id: "ID-003/x", level: "low", note: null }
  given save returns { ok: true }
  given notify returns { sent: true }
  given approve review approves
  expect output.count == 2
  expect save called 1 times
}

test "a rejection saves nothing" {
  run process(id: "ID-001/x", topic: "widgets")
  given lookup fails "503"
  given helper returns { id: "ID-002/x", level: "high", note: null }
  given careful returns { level: "high", reason: "risky" }
  given fast returns { id: "ID-003/x", level: "low", note: null }
  given save returns { ok: true }
  given notify returns { sent: true }
  given approve review rejects "no"
  expect save called 0 times
  expect failure "rejected"
}

test "an edited approval" {
  run process(id: "ID-001/x", topic: "widgets")
  given lookup returns { id: "ID-001/x", level: "low", note: null }
  given helper returns { id: "ID-002/x", level: "low", note: null }
  given careful returns { level: "low", reason: "ok" }
  given fast returns { id: "ID-003/x", level: "low", note: null }
  given save returns { ok: true }
  given notify returns { sent: true }
  given approve review approves with { items: [], label: "L" }
  expect failure
}
"#;

#[test]
fn a_file_with_every_construct_formats_without_changing_its_meaning() {
    let out = fmt_checked(EVERY);
    let root = temp_dir("every");
    for (side, text) in [("original", EVERY), ("formatted", out.as_str())] {
        write(&root.join(side).join("tests/every.flow"), text);
        write(
            &root.join(side).join("tests/every.schema.json"),
            r#"{"type": "object"}"#,
        );
    }
    let original = compile_file(&root.join("original/tests/every.flow"));
    assert!(
        original.program.is_some(),
        "the fixture must check clean: {}",
        fingerprint(&original)
    );
    assert_same_meaning(&root, Path::new("tests/every.flow"));
    let _ = std::fs::remove_dir_all(&root);

    for expected in [
        "use std.models.{openai, anthropic} // two providers\nuse std.tools.{now}\n\ntype Id = ",
        "type Item {\n  id: Id\n  level: Level\n  tags?: [string] len 1..\n  note: string? // why\n}\n",
        "type Wrapper {\n  items: [Item] len ..5\n\n  // the item count\n  count: int >= 0\n}\n",
        "type Score = number >= 0 <= 1.50\ntype Big = int >= -3 <= 2k\n",
        "model careful = anthropic(\"claude-sonnet-4-5\") { temperature: 0, max_tokens: 800, fallback: fast }\n",
        "resource store\nresource inbox\n",
        "  price \"m-small\" { input $0.10, output $0.40 }\n  price *         { input $1, output $2.00 }\n",
        "  retry 3 on rate_limit, timeout backoff 1s * 2.0 cap 30s jitter\n  limit 1.5k tokens\n",
        "  exec [\n    \"/usr/bin/save\", \"--id\", \"{item.id}\", \"--level\", \"{item.level}\", \"--store\", \"primary\",\n    \"--verbose\",\n  ]\n",
        "  effect irreversible writes inbox\n",
        "  query { page: page, per_page: 100 }\n  body form { text: note }\n  format text\n  raw path\n",
        "type Strict exact { a: int, b?: exact { c: string } }\n",
        "  model fast\n  tools [lookup]\n  may read\n  max_steps 4\n  max_repeat 2\n  timeout 2m\n  retry 1 on rate_limit, server_error backoff 2s\n",
        "  let rechecked = for x in [first, found] parallel 2 tolerate 1 {\n    lookup(id: x.id)\n  }\n",
        "    Find the item about {topic}.\n      Indented line, \"quoted\", {{braces}} and a backslash \\\\.\n\n    Stop when done.\n  \"\"\"\n",
        "    require judged.level == \"low\" or judged.level == \"high\", \"bad level\"\n",
        "    let level = if x.level == \"high\" {\n      x.level\n    } else if x.level == \"low\" {\n",
        "  let approved = approve review {\n    show { items: items, label: label }\n    timeout 1h\n    on_timeout reject\n  }\n",
        "  given approve review rejects \"no\"\n  expect save called 0 times\n  expect failure \"rejected\"\n",
    ] {
        assert!(out.contains(expected), "expected\n{expected}\nin\n{out}");
    }
}

// ---------------------------------------------------------------- strings

fn in_flow(body: &str) -> String {
    format!("flow f(x: string) -> string {{\n{body}}}\n")
}

#[test]
fn plain_strings_are_re_escaped() {
    let src = in_flow("  let a = \"q \\\"x\\\" \\\\ {{lit}} \\{also\\} \\t\\r\\n \\u{1F600} \\u{7} {x}\"\n  return a\n");
    let out = fmt_checked(&src);
    assert!(
        out.contains("let a = \"q \\\"x\\\" \\\\ {{lit}} {{also}} \\t\\r\\n 😀 \\u{7} {x}\"\n"),
        "{out}"
    );
}

#[test]
fn interpolations_are_printed_flat_and_never_read_as_escapes() {
    let src = in_flow("  let a = \"{ {k: x}.k } and {x == \"a\"} and {{{x}}}\"\n  return a\n");
    let out = fmt_checked(&src);
    assert!(
        out.contains("let a = \"{ { k: x }.k } and {x == \"a\"} and {{{x}}}\"\n"),
        "{out}"
    );
}

#[test]
fn triple_quoted_strings_are_re_indented_with_their_content_unchanged() {
    let src = "flow f(x: string) -> string {\nlet a = llm m -> string {\nprompt \"\"\"\n        Hello {x}\n          indented\n\n        {x}\n        \"\"\"\n}\nreturn a\n}\n";
    let out = fmt_checked(src);
    assert!(
        out.contains("  let a = llm m -> string {\n    prompt \"\"\"\n      Hello {x}\n        indented\n\n      {x}\n    \"\"\"\n  }\n"),
        "{out}"
    );
}

#[test]
fn triple_quoted_strings_keep_quotes_braces_and_first_line_text() {
    let src = in_flow(concat!(
        "  let a = \"\"\"  first line kept\n  second\"\"\"\n",
        "  let b = \"\"\"say \"hi\\\"\"\"\"\n",
        "  let c = \"\"\"\n    runs: \\\"\\\"\\\" and \"\" and {{x}} and \\\\\n  \"\"\"\n",
        "  return \"{a}{b}{c}\"\n",
    ));
    let out = fmt_checked(&src);
    assert!(
        out.contains("  let a = \"\"\"\n      first line kept\n    second\n  \"\"\"\n"),
        "{out}"
    );
    assert!(
        out.contains("  let b = \"\"\"say \"hi\\\"\"\"\"\n"),
        "{out}"
    );
    assert!(
        out.contains("    runs: \\\"\\\"\\\" and \"\" and {{x}} and \\\\\n"),
        "{out}"
    );
}

#[test]
fn a_triple_quoted_string_that_cannot_be_re_indented_becomes_a_plain_string() {
    // Every line indented: re-indenting would strip the common indentation.
    let src = in_flow("  let a = \"\"\"  a\n  \"\"\"\n  return a\n");
    let out = fmt_checked(&src);
    assert!(
        out.contains("let a = \"  a\"") || out.contains("let a = \"\"\""),
        "{out}"
    );
}

#[test]
fn numbers_and_quantities_keep_their_source_text() {
    let src = "type T = number >= -1.50 <= 2k\nflow f() -> number {\n  budget { tokens 1.5M, cost $1.00, wall 90m }\n  let a = 1250.00\n  let b = -0.5\n  return a\n}\n";
    let out = fmt_checked(src);
    for needle in [
        "number >= -1.50 <= 2k",
        "tokens 1.5M, cost $1.00, wall 90m",
        "let a = 1250.00",
        "let b = -0.5",
    ] {
        assert!(out.contains(needle), "{needle} in\n{out}");
    }
}

// ---------------------------------------------------------------- comments

#[test]
fn comments_at_the_end_of_record_field_lines_and_before_the_closing_brace() {
    let src = "type R {\n  a: int      // first\n  b: string   // second, longer\n  // before the brace\n}\n";
    let out = fmt_checked(src);
    assert_eq!(
        out,
        "type R {\n  a: int    // first\n  b: string // second, longer\n  // before the brace\n}\n"
    );
}

#[test]
fn comments_between_statements_keep_their_place_and_blank_lines() {
    let src = in_flow(concat!(
        "  let a = x // trailing\n",
        "\n\n\n",
        "  // leading, after blank lines\n",
        "  let b = a\n",
        "  // dangling before the brace\n",
    ))
    .replace("}\n", "  return b\n  // after return\n}\n");
    let out = fmt_checked(&src);
    assert_eq!(
        out,
        in_flow(concat!(
            "  let a = x // trailing\n",
            "\n",
            "  // leading, after blank lines\n",
            "  let b = a\n",
            "  // dangling before the brace\n",
            "  return b\n",
            "  // after return\n",
        ))
    );
}

#[test]
fn comments_inside_expressions_move_before_their_statement() {
    let src = in_flow(concat!(
        "  let a = // after the equals sign\n",
        "    x\n",
        "  let b = not // inside not\n",
        "    (a == \"x\")\n",
        "  let c = \"text {a // in an interpolation\n",
        "  } more\"\n",
        "  return c\n",
    ));
    let out = fmt_checked(&src);
    assert_eq!(
        out,
        in_flow(concat!(
            "  // after the equals sign\n",
            "  let a = x\n",
            "  // inside not\n",
            "  let b = not (a == \"x\")\n",
            "  // in an interpolation\n",
            "  let c = \"text {a} more\"\n",
            "  return c\n",
        ))
    );
}

#[test]
fn comments_in_lists_arguments_and_parameters_break_them_one_per_line() {
    let src = concat!(
        "tool t(a: string, // the a\n b: int) -> string {\n",
        "  exec [\"x\", // the program\n \"y\"]\n",
        "}\n",
        "flow f(x: string) -> string {\n",
        "  let a = t(a: x, // first\n b: 1)\n",
        "  let l = [1, // one\n 2]\n",
        "  return a\n",
        "}\n",
    );
    let out = fmt_checked(src);
    assert!(
        out.contains("tool t(\n  a: string, // the a\n  b: int,\n) -> string {\n"),
        "{out}"
    );
    assert!(
        out.contains("  exec [\n    \"x\", // the program\n    \"y\",\n  ]\n"),
        "{out}"
    );
    assert!(
        out.contains("  let a = t(\n    a: x, // first\n    b: 1,\n  )\n"),
        "{out}"
    );
    assert!(
        out.contains("  let l = [\n    1, // one\n    2\n  ]\n"),
        "{out}"
    );
}

#[test]
fn comments_in_clause_bodies_match_arms_and_tests() {
    let src = concat!(
        "tool t() -> string { // after the brace\n  effect read // why\n  timeout 1s\n}\n",
        "flow f(x: string) -> string {\n",
        "  let m = match x {\n    // the a case\n    \"a\" => \"A\" // trailing\n    _ => \"B\"\n  }\n",
        "  return m\n}\n",
        "test \"t\" {\n  // run it\n  run f(x: \"a\")\n  expect output == \"A\" // yes\n}\n",
        "// the end\n",
    );
    let out = fmt_checked(src);
    assert!(
        out.contains(
            "tool t() -> string {\n  // after the brace\n  effect read // why\n  timeout 1s\n}\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("    // the a case\n    \"a\" => \"A\" // trailing\n    _   => \"B\"\n"),
        "{out}"
    );
    assert!(out.contains("test \"t\" {\n  // run it\n  run f(x: \"a\")\n  expect output == \"A\" // yes\n}\n// the end\n"), "{out}");
}

#[test]
fn an_open_range_before_a_comment_keeps_its_comma() {
    // `len 1..` followed by a comment is read as a malformed range.
    let src = "type R {\n  a: [string] len 1.., // c\n  b: int len ..,\n  // d\n}\ntype S {\n  a: [string] len 1..,\n  b: int\n}\n";
    assert_eq!(
        fmt_checked(src),
        "type R {\n  a: [string] len 1.., // c\n  b: int len ..,\n  // d\n}\n\ntype S {\n  a: [string] len 1..\n  b: int\n}\n"
    );
}

#[test]
fn a_file_of_comments_only_is_kept() {
    assert_eq!(fmt_checked("// one\n\n\n// two\n"), "// one\n\n// two\n");
    assert_eq!(fmt_checked(""), "");
}

// ---------------------------------------------------------------- layout

#[test]
fn records_stay_on_one_line_only_when_written_so_and_short() {
    let src = concat!(
        "type A { x: int, y: int }\n",
        "type B {\n  x: int\n  y: int\n}\n",
        "type C { alpha: string len 1..200, beta: string len 1..200, gamma: string len 1..200, delta: int >= 0 }\n",
    );
    let out = fmt_checked(src);
    assert!(out.contains("type A { x: int, y: int }\n"), "{out}");
    assert!(out.contains("type B {\n  x: int\n  y: int\n}\n"), "{out}");
    assert!(
        out.contains("type C {\n  alpha: string len 1..200\n  beta:"),
        "{out}"
    );
}

#[test]
fn long_calls_break_one_argument_per_line_and_hug_a_last_record() {
    let src = in_flow(concat!(
        "  let a = lookup_customer_record(customer_identifier: x, include_history: true, include_notes: false)\n",
        "  let b = save(id: x, record: {\n name: x, title: \"a rather long title that does not fit\", notes: \"some notes\" })\n",
        "  return a\n",
    ));
    let out = fmt_checked(&src);
    assert!(
        out.contains("  let a = lookup_customer_record(\n    customer_identifier: x,\n    include_history: true,\n    include_notes: false,\n  )\n"),
        "{out}"
    );
    assert!(
        out.contains("  let b = save(id: x, record: {\n    name: x,\n"),
        "{out}"
    );
    assert!(out.contains("    notes: \"some notes\"\n  })\n"), "{out}");
}

#[test]
fn blank_lines_between_items_and_statements() {
    let src = "resource a\nresource b\ntype X = int\ntool t() -> int {\n  effect read\n}\nflow f() -> int {\n\n  let a = 1\n\n\n\n  let b = 2\n  return b\n\n}\n";
    let out = fmt_checked(src);
    assert_eq!(
        out,
        "resource a\nresource b\n\ntype X = int\n\ntool t() -> int {\n  effect read\n}\n\nflow f() -> int {\n  let a = 1\n\n  let b = 2\n  return b\n}\n"
    );
}

#[test]
fn parentheses_are_kept_only_where_precedence_needs_them() {
    let src = in_flow("  let a = (x == \"a\") or (x == \"b\" and (x != \"c\"))\n  let b = not (x == \"a\" or x == \"b\")\n  let c = (x == \"a\") == (x == \"b\")\n  return x\n");
    let out = fmt_checked(&src);
    assert!(
        out.contains("let a = x == \"a\" or x == \"b\" and x != \"c\"\n"),
        "{out}"
    );
    assert!(
        out.contains("let b = not (x == \"a\" or x == \"b\")\n"),
        "{out}"
    );
    assert!(
        out.contains("let c = x == \"a\" == (x == \"b\")\n"),
        "{out}"
    );
}

#[test]
fn consecutive_match_arms_align_their_arrows() {
    let src = in_flow(
        "  let a = match x {\n    \"a\" => 1\n    \"long\" => 2\n\n    _ => 3\n  }\n  return x\n",
    );
    let out = fmt_checked(&src);
    assert!(
        out.contains("    \"a\"    => 1\n    \"long\" => 2\n\n    _ => 3\n"),
        "{out}"
    );
}

#[test]
fn windows_line_endings_are_kept() {
    let src = "flow f() -> string {\r\n  let x = \"\"\"\r\n    a\r\n    b\r\n  \"\"\"\r\n  return x // done\r\n}\r\n";
    let out = fmt_checked(src);
    assert_eq!(out, src);
}

#[test]
fn a_file_with_syntax_errors_is_not_formatted() {
    let errors = format_source("flow f( -> x\n").expect_err("syntax error");
    assert!(
        errors.iter().all(|d| d.code.as_str() == "S001"),
        "{errors:?}"
    );
    assert!(!errors.is_empty());
}

// ---------------------------------------------------------------- the command

#[test]
fn fmt_check_lists_files_that_would_change_and_writes_nothing() {
    let dir = temp_dir("check");
    let messy = "flow f() -> int {\nreturn 1\n}\n";
    let clean = "flow g() -> int {\n  return 1\n}\n";
    write(&dir.join("messy.flow"), messy);
    write(&dir.join("sub/clean.flow"), clean);
    let folder = dir.display().to_string();
    let out = flowc(&["fmt", "--check", &folder], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("messy.flow") && !stdout.contains("clean.flow"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("+  return 1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read(&dir.join("messy.flow")), messy);

    let out = flowc(&["fmt", &folder], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        read(&dir.join("messy.flow")),
        "flow f() -> int {\n  return 1\n}\n"
    );
    assert_eq!(read(&dir.join("sub/clean.flow")), clean);
    let out = flowc(&["fmt", "--check", &folder], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fmt_reads_standard_input_and_writes_standard_output() {
    let out = flowc(&["fmt", "-"], Some("resource   r\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "resource r\n");
    let out = flowc(&["fmt", "--check", "-"], Some("resource   r\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).trim(), "<stdin>");
}

#[test]
fn fmt_leaves_a_file_with_syntax_errors_alone() {
    let dir = temp_dir("syntax");
    let broken = "flow f( -> int {\n}\n";
    let path = dir.join("broken.flow");
    write(&path, broken);
    let out = flowc(&["fmt", &path.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("S001"), "{}", text(&out.stderr));
    assert_eq!(read(&path), broken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fmt_refuses_a_file_with_a_repeated_clause_and_says_why() {
    let dir = temp_dir("repeated");
    // Formatting must not pick one of the two fallbacks (it once dropped the first).
    let source = "flow f(x: string) -> string {\n  budget { steps 5 }\n  let a = g(x: x) fallback \"one\" fallback \"two\"\n  return a\n}\n";
    let path = dir.join("repeated.flow");
    write(&path, source);
    let out = flowc(&["fmt", &path.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("T007"), "{stderr}");
    assert!(stderr.contains("`fallback` is given twice"), "{stderr}");
    assert_eq!(read(&path), source);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fmt_reports_a_missing_path_as_a_usage_error() {
    let out = flowc(&["fmt", "no/such/file.flow"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no such file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_fingerprint_sees_a_change_in_meaning() {
    let root = temp_dir("fingerprint");
    let a = "flow f(x: string) -> string {\n  budget { tokens 10k }\n  let a = \"\"\"\n    hello {x}\n  \"\"\"\n  return a\n}\n";
    let b = a.replace("hello", "hello,");
    write(&root.join("a.flow"), a);
    write(&root.join("b.flow"), &b);
    let (fa, fb) = (
        fingerprint(&compile_file(&root.join("a.flow"))),
        fingerprint(&compile_file(&root.join("b.flow"))),
    );
    assert_ne!(fa, fb);
    assert!(fa.contains("step a value : string"), "{fa}");
    let _ = std::fs::remove_dir_all(&root);
}
