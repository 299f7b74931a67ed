//! Before the first call: everything a run may read from its environment is
//! set, and every program an `exec` tool or an MCP server runs exists and is
//! executable. A
//! missing API key found after three paid calls costs the three calls (and
//! an irreversible one cannot be taken back), so a run checks everything it
//! can reach before it starts, and reports every missing thing at once.
//!
//! "May reach" is the flow, the flows it calls, their model chains, agents
//! and tools (fallback calls included), not the whole program: an unused
//! provider of `std.models` needs no key.

use std::collections::BTreeSet;
use std::path::Path;

use crate::exec::{
    CallTarget, Expr, ExprKind, Fallback, FlowId, HttpBody, McpTransport, ModelId, NotifyTarget,
    Program, StepKind, Template, TemplatePart, ToolId, ToolKind,
};

/// One thing the run needs and does not have.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// What is missing, for people ("the environment variable OPENAI_API_KEY").
    pub what: String,
    /// Who needs it ("the API key of provider `openai`, for model `fast`").
    pub needed_by: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.needed_by)
    }
}

/// What flow `root` may use, found by walking its calls.
#[derive(Default)]
struct Reach {
    flows: BTreeSet<FlowId>,
    models: BTreeSet<ModelId>,
    tools: BTreeSet<ToolId>,
    agents: BTreeSet<crate::exec::AgentId>,
}

/// Everything flow `root` may need from its environment that `env` does not
/// have, sorted; empty when the run can start.
pub fn check(
    program: &Program,
    root: FlowId,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Missing> {
    let reach = reach(program, root);
    let mut missing = BTreeSet::new();
    // Set is enough (an empty value is the runtime's to judge, as it is).
    let var = |name: &str| env(name).is_some();
    for &m in &reach.models {
        let model = &program.models[m.index()];
        let provider = &program.providers[model.provider.index()];
        if let Some(key) = &provider.api_key_env {
            if !var(key) {
                missing.insert(Missing {
                    what: format!("the environment variable {key}"),
                    needed_by: format!(
                        "the API key of provider `{}`, for model `{}`",
                        provider.name, model.name
                    ),
                });
            }
        }
        // A base URL variable with a declared default is optional.
        if let (Some(url), None) = (&provider.base_url_env, &provider.base_url) {
            if !var(url) {
                missing.insert(Missing {
                    what: format!("the environment variable {url}"),
                    needed_by: format!(
                        "the base URL of provider `{}`, for model `{}`",
                        provider.name, model.name
                    ),
                });
            }
        }
    }
    // A gate's notification targets read from the environment: a worker
    // that would announce or escalate a gate needs them.
    for &f in &reach.flows {
        let flow = &program.flows[f.index()];
        for step in flow.graph.node_weights() {
            let StepKind::Approve(gate) = &step.kind else {
                continue;
            };
            let targets = gate
                .notify
                .iter()
                .chain(gate.escalation.iter().map(|e| &e.notify));
            for notify in targets {
                if let NotifyTarget::Env(name) = &notify.target {
                    if !var(name) {
                        missing.insert(Missing {
                            what: format!("the environment variable {name}"),
                            needed_by: format!(
                                "`notify {} env.{name}` of gate `{}` in flow `{}`",
                                notify.kind.as_str(),
                                gate.name,
                                flow.name
                            ),
                        });
                    }
                }
            }
        }
    }
    let mut servers = BTreeSet::new();
    for &t in &reach.tools {
        let tool = &program.tools[t.index()];
        let mut names = Vec::new();
        match &tool.kind {
            ToolKind::Http {
                url,
                headers,
                query,
                body,
                ..
            } => {
                template_env(url, &mut names);
                headers
                    .iter()
                    .for_each(|(_, h)| template_env(h, &mut names));
                query.iter().for_each(|(_, e)| expr_env(e, &mut names));
                if let HttpBody::Value(_, e) = body {
                    expr_env(e, &mut names);
                }
            }
            ToolKind::Exec { argv } => {
                argv.iter().for_each(|a| template_env(a, &mut names));
                if let Some(problem) = argv.first().and_then(|p| program_problem(&p.parts)) {
                    missing.insert(Missing {
                        what: problem,
                        needed_by: format!("the program of tool `{}`", tool.name),
                    });
                }
            }
            ToolKind::Mcp { server, .. } => {
                servers.insert(*server);
            }
            ToolKind::Builtin(_) => {}
        }
        if let Some(key) = &tool.idempotency {
            template_env(key, &mut names);
        }
        for name in names {
            if !var(name) {
                missing.insert(Missing {
                    what: format!("the environment variable {name}"),
                    needed_by: format!("`env.{name}` in tool `{}`", tool.name),
                });
            }
        }
    }
    // An MCP server is started at its first call: its program and the
    // variables its environment reads are needed as much as a tool's.
    for id in servers {
        let server = &program.servers[id.index()];
        let mut names = Vec::new();
        server
            .env
            .iter()
            .for_each(|(_, value)| parts_env(&value.parts, &mut names));
        match &server.transport {
            McpTransport::Stdio { argv } => {
                argv.iter().for_each(|a| parts_env(&a.parts, &mut names));
                if let Some(problem) = argv.first().and_then(|p| program_problem(&p.parts)) {
                    missing.insert(Missing {
                        what: problem,
                        needed_by: format!("the command of MCP server `{}`", server.name),
                    });
                }
            }
        }
        for name in names {
            if !var(name) {
                missing.insert(Missing {
                    what: format!("the environment variable {name}"),
                    needed_by: format!("`env.{name}` in MCP server `{}`", server.name),
                });
            }
        }
    }
    missing.into_iter().collect()
}

fn reach(program: &Program, root: FlowId) -> Reach {
    let mut r = Reach::default();
    let mut todo = vec![root];
    while let Some(f) = todo.pop() {
        if !r.flows.insert(f) {
            continue;
        }
        let flow = &program.flows[f.index()];
        let target = |t: &CallTarget, r: &mut Reach, todo: &mut Vec<FlowId>| match *t {
            CallTarget::Tool(id) => {
                r.tools.insert(id);
            }
            CallTarget::Agent(id) => {
                if r.agents.insert(id) {
                    let agent = &program.agents[id.index()];
                    // Every model of its chain: a turn may fall back to any.
                    r.models.extend(agent.chain.iter().map(|c| c.model));
                    r.tools.extend(agent.tools.iter().copied());
                }
            }
            CallTarget::Flow(id) => todo.push(id),
        };
        for step in flow.graph.node_weights() {
            match &step.kind {
                StepKind::Call { target: t, .. } => target(t, &mut r, &mut todo),
                StepKind::Llm(l) => r.models.extend(l.chain.iter().map(|c| c.model)),
                _ => {}
            }
            if let Some(Fallback::Call(t, _)) = &step.fallback {
                target(t, &mut r, &mut todo);
            }
        }
    }
    r
}

fn template_env<'a>(t: &'a Template, out: &mut Vec<&'a str>) {
    parts_env(&t.parts, out);
}

fn parts_env<'a>(parts: &'a [TemplatePart], out: &mut Vec<&'a str>) {
    for part in parts {
        if let TemplatePart::Expr(e) = part {
            expr_env(e, out);
        }
    }
}

fn expr_env<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match &e.kind {
        ExprKind::Env(name) => out.push(name),
        ExprKind::Str(t) => parts_env(&t.parts, out),
        ExprKind::Object(fields) => fields.iter().for_each(|(_, v)| expr_env(v, out)),
        ExprKind::List(items) => items.iter().for_each(|v| expr_env(v, out)),
        ExprKind::Member(a, _) | ExprKind::Len(a) | ExprKind::Not(a) => expr_env(a, out),
        ExprKind::Index(a, b)
        | ExprKind::And(a, b)
        | ExprKind::Or(a, b)
        | ExprKind::Compare(a, _, b) => {
            expr_env(a, out);
            expr_env(b, out);
        }
        _ => {}
    }
}

/// Why an `exec` program written as plain text cannot be run, if it cannot.
/// A program computed from arguments is only known at the call.
fn program_problem(program: &[TemplatePart]) -> Option<String> {
    let [TemplatePart::Text(name)] = program else {
        return None;
    };
    let candidates: Vec<std::path::PathBuf> = if name.contains('/') {
        vec![Path::new(name).to_path_buf()]
    } else {
        // Tools' processes inherit flowc's own PATH.
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join(name)).collect()
    };
    if candidates.iter().any(|p| is_executable(p)) {
        return None;
    }
    Some(if name.contains('/') && Path::new(name).is_file() {
        format!("the program `{name}` is not executable")
    } else if name.contains('/') {
        format!("the program `{name}` does not exist")
    } else {
        format!("the program `{name}` is not on PATH")
    })
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}
