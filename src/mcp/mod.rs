//! MCP (Model Context Protocol) tool servers: the lock file that records
//! the servers' tool schemas (`lock`), the comparison of a tool's declared
//! Flow types with its locked schemas (pure: `flowc check` runs it without
//! starting anything), and the client that starts servers and calls their
//! tools (`client`, the only part that does IO).

pub mod client;
pub mod lock;

use serde_json::Value;

use crate::ir::Param;
use crate::schema;
use crate::types::{Boundary, Ty, TypeTable};

/// One difference between a tool's declared types and the server's
/// schemas, saying which field differs and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Where: `parameter `a``, `parameter `a.b``, `result `.user.login``.
    pub place: String,
    pub message: String,
}

/// Compares a tool's declared parameters and result with the schemas the
/// server published (as locked). Only what the Flow side declares is
/// compared, field by field, plus the server's required parameters: a
/// result may carry more than the flow declares (records are open), a call
/// must send what the server requires.
pub fn compare(
    types: &TypeTable,
    params: &[Param],
    output: &Ty,
    input_schema: &Value,
    output_schema: Option<&Value>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let props = input_schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for p in params {
        let place = format!("parameter `{}`", p.name);
        match props.and_then(|m| m.get(&p.name)) {
            None => out.push(Mismatch {
                place,
                message: "the server's tool takes no such parameter".into(),
            }),
            Some(theirs) => {
                let ours = schema::document(types, &p.ty, Boundary::Outgoing);
                compare_value(
                    &ours,
                    &ours,
                    theirs,
                    input_schema,
                    &p.name,
                    "parameter",
                    &mut out,
                );
                if p.optional && required.contains(&p.name.as_str()) {
                    out.push(Mismatch {
                        place: format!("parameter `{}`", p.name),
                        message: "declared optional, but the server requires it".into(),
                    });
                }
            }
        }
    }
    for r in &required {
        if !params.iter().any(|p| p.name == *r) {
            out.push(Mismatch {
                place: format!("parameter `{r}`"),
                message: "the server requires it, the tool does not declare it".into(),
            });
        }
    }
    if let Some(theirs) = output_schema {
        let ours = schema::document(types, output, Boundary::Incoming);
        compare_value(&ours, &ours, theirs, theirs, "", "result", &mut out);
    }
    out
}

/// The JSON types a schema allows (`type` as a string or a list), resolving
/// a local `$ref` in `root`; `None` when it does not say (anything goes).
fn json_types(schema: &Value, root: &Value) -> Option<Vec<String>> {
    let schema = resolve(schema, root);
    if let Some(anyof) = schema.get("anyOf").and_then(Value::as_array) {
        let mut all = Vec::new();
        for s in anyof {
            all.extend(json_types(s, root)?);
        }
        return Some(all);
    }
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
        ),
        _ => None,
    }
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(pointer) => match root.pointer(pointer) {
                Some(next) => s = next,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

/// Whether a declared JSON type fits where the server's schema allows
/// `theirs` (an `integer` is a `number`; going out, a declared `number`
/// where the server wants an `integer` may not fit).
fn fits(ours: &str, theirs: &[String]) -> bool {
    theirs
        .iter()
        .any(|t| t == ours || (ours == "integer" && t == "number"))
}

fn compare_value(
    ours: &Value,
    our_root: &Value,
    theirs: &Value,
    their_root: &Value,
    path: &str,
    what: &str,
    out: &mut Vec<Mismatch>,
) {
    let place = |path: &str| match what {
        "parameter" => format!("parameter `{path}`"),
        _ if path.is_empty() => "result".to_string(),
        _ => format!("result field `{path}`"),
    };
    let (Some(our_types), Some(their_types)) =
        (json_types(ours, our_root), json_types(theirs, their_root))
    else {
        return;
    };
    let bad: Vec<&String> = our_types
        .iter()
        .filter(|t| *t != "null" && !fits(t, &their_types))
        .collect();
    if !bad.is_empty() {
        out.push(Mismatch {
            place: place(path),
            message: format!(
                "declared {}, the server's schema says {}",
                bad.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                their_types.join(" or ")
            ),
        });
        return;
    }
    let ours = non_null(resolve(ours, our_root), our_root);
    let theirs = non_null(resolve(theirs, their_root), their_root);
    if let (Some(our_props), Some(their_props)) = (
        ours.get("properties").and_then(Value::as_object),
        theirs.get("properties").and_then(Value::as_object),
    ) {
        let closed = theirs.get("additionalProperties") == Some(&Value::Bool(false));
        for (name, our_field) in our_props {
            let sub = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match their_props.get(name) {
                Some(their_field) => compare_value(
                    our_field,
                    our_root,
                    their_field,
                    their_root,
                    &sub,
                    what,
                    out,
                ),
                None if what == "parameter" && closed => out.push(Mismatch {
                    place: place(&sub),
                    message: "the server's schema has no such field".into(),
                }),
                None if what == "result" => out.push(Mismatch {
                    place: place(&sub),
                    message: "the server's result schema has no such field".into(),
                }),
                None => {}
            }
        }
    }
    if let (Some(our_items), Some(their_items)) = (ours.get("items"), theirs.get("items")) {
        let sub = format!("{path}[]");
        compare_value(
            our_items,
            our_root,
            their_items,
            their_root,
            &sub,
            what,
            out,
        );
    }
}

/// The non-null member of an `anyOf [T, null]` (an optional), else itself.
fn non_null<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("anyOf").and_then(Value::as_array) {
        Some(members) => members
            .iter()
            .map(|m| resolve(m, root))
            .find(|m| m.get("type") != Some(&Value::String("null".into())))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The server as the client starts it: its templates (which read only
/// `env.NAME`) rendered with `env`.
pub fn spec(
    server: &crate::ir::McpServer,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<client::ServerSpec, String> {
    use crate::ir::McpTransport;
    let scope = EnvScope(env);
    let render = |t: &crate::ir::Template| {
        crate::run::eval::render(t, &scope)
            .map_err(|e| format!("server `{}`: {}", server.name, e.0))
    };
    let pairs = |list: &[(String, crate::ir::Template)]| -> Result<Vec<(String, String)>, String> {
        list.iter()
            .map(|(n, t)| Ok((n.clone(), render(t)?)))
            .collect()
    };
    match &server.transport {
        McpTransport::Stdio { argv } => Ok(client::ServerSpec::Stdio {
            argv: argv.iter().map(render).collect::<Result<_, _>>()?,
            env: pairs(&server.env)?,
        }),
        McpTransport::Http { url } => Ok(client::ServerSpec::Http {
            url: render(url)?,
            headers: pairs(&server.headers)?,
        }),
        McpTransport::Missing => Err(format!(
            "server `{}` has no `command` or `url`",
            server.name
        )),
    }
}

/// How long starting a server and listing its tools may take, unless its
/// declaration says otherwise (`npx` may need a while on a cold cache).
pub fn start_timeout(server: &crate::ir::McpServer) -> std::time::Duration {
    std::time::Duration::from_secs_f64(server.timeout_seconds.unwrap_or(60.0))
}

struct EnvScope<'a>(&'a (dyn Fn(&str) -> Option<String> + Sync));

impl crate::run::eval::Scope for EnvScope<'_> {
    fn param(&self, _: usize) -> Option<&Value> {
        None
    }
    fn step(&self, _: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// `flowc mcp lock FILE`: starts every server FILE declares, lists its
/// tools and writes their schemas to the lock file beside FILE. Returns the
/// exit status (0 written, 1 a server failed or the file has errors).
pub fn lock_command(file: &std::path::Path) -> Result<i32, String> {
    let mut loader = crate::loader::Loader::new();
    let root = loader
        .load_path(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let ws = loader.finish();
    let mut problems = ws.problems.clone();
    let program = crate::lower::lower(&ws, &mut problems);
    let errors: Vec<_> = problems
        .iter()
        .filter(|d| d.code.severity() == crate::code::Severity::Error)
        .collect();
    if !errors.is_empty() {
        for d in errors {
            eprint!("{}", crate::render::human(&ws.sources, d, false));
        }
        return Ok(1);
    }
    let root_file = ws.modules[root].file;
    let servers: Vec<_> = program
        .servers
        .iter()
        .filter(|s| s.span.file == root_file)
        .collect();
    if servers.is_empty() {
        return Err(format!("{} declares no `server`", file.display()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let env = |name: &str| std::env::var(name).ok();
    let mut lock = lock::LockFile {
        version: lock::VERSION,
        servers: Default::default(),
    };
    let mut failed = false;
    for server in servers {
        let result = rt.block_on(async {
            let spec = spec(server, &env)?;
            let timeout = start_timeout(server);
            let conn = client::Connection::start(&spec, timeout)
                .await
                .map_err(|e| format!("server `{}`: {e}", server.name))?;
            let listed = conn.list_tools(timeout).await;
            let stderr = conn.stop().await;
            listed.map_err(|e| {
                let tail = stderr.lines().rev().take(5).collect::<Vec<_>>();
                format!(
                    "server `{}`: listing its tools failed: {e}{}",
                    server.name,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "\n  its stderr ends:\n    {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                        )
                    }
                )
            })
        });
        match result {
            Ok(locked) => {
                eprintln!(
                    "locked server `{}`{}: {} tools",
                    server.name,
                    locked
                        .server_info
                        .as_ref()
                        .map(|i| format!(" ({i})"))
                        .unwrap_or_default(),
                    locked.tools.len()
                );
                lock.servers.insert(server.name.clone(), locked);
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Ok(1);
    }
    let path = lock::path_for(file);
    std::fs::write(&path, lock.to_text())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(0)
}
