//! A run's MCP servers (`crate::mcp::client`, the `rmcp` SDK): each is
//! started the first time one of its tools is called, checked against the
//! lock (the live server must still offer every tool the program binds to
//! it), and shared by every call of the run; [`McpServers::stop_all`] stops
//! them at the run's end and hands back what each wrote to stderr, for the
//! trace. A server that went away (it crashed, or closed its stdio) is
//! forgotten, so the next attempt of a retried call starts it again.

use std::sync::Arc;

use serde_json::Value;

use crate::exec::{McpServer, McpTransport, Program, ServerId, ToolKind};
use crate::mcp::client::{Connection, McpError, ServerSpec};
use crate::run::error::{CallError, ErrorClass};
use crate::run::eval::{render, Scope};

/// How `env.NAME` is read (the same lookup tools use).
type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// How much of a server's stderr the trace keeps (its end).
const STDERR_TRACE_CHARS: usize = 4000;

/// The last `n` characters of `s`.
fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

/// The servers of one run, by `ServerId`.
pub struct McpServers {
    slots: Vec<Slot>,
}

struct Slot {
    server: ServerSeal,
    /// The live connection, once started; `None` again after it went away.
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// What earlier connections wrote to stderr before they went away.
    stderr: std::sync::Mutex<String>,
    starts: std::sync::atomic::AtomicU32,
}

/// What starting a server needs from its sealed declaration.
struct ServerSeal {
    name: String,
    argv: Vec<crate::exec::StrTemplate>,
    env: Vec<(String, crate::exec::StrTemplate)>,
    start_timeout: std::time::Duration,
    /// The tools the program binds to this server.
    needed: Vec<String>,
}

/// A server the run started, as it ended.
pub struct StoppedServer {
    pub name: String,
    pub starts: u32,
    /// The end of what it wrote to stderr (every start, in order).
    pub stderr: String,
}

impl McpServers {
    pub fn new(program: &Program) -> McpServers {
        let slots = program
            .servers
            .iter()
            .map(|s| Slot {
                server: seal_of(program, s),
                conn: tokio::sync::Mutex::new(None),
                stderr: std::sync::Mutex::new(String::new()),
                starts: std::sync::atomic::AtomicU32::new(0),
            })
            .collect();
        McpServers { slots }
    }

    /// Stops every server that was started.
    pub async fn stop_all(&self) -> Vec<StoppedServer> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let starts = slot.starts.load(std::sync::atomic::Ordering::Relaxed);
            if starts == 0 {
                continue;
            }
            let conn = slot.conn.lock().await.take();
            let mut stderr = slot
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(conn) = conn {
                let tail = match Arc::try_unwrap(conn) {
                    Ok(conn) => conn.stop().await,
                    Err(shared) => shared.stderr(),
                };
                stderr.push_str(&tail);
            }
            out.push(StoppedServer {
                name: slot.server.name.clone(),
                starts,
                stderr: tail(&stderr, STDERR_TRACE_CHARS),
            });
        }
        out
    }

    /// The server's live connection, started (and checked) if need be.
    pub(super) async fn connection(
        &self,
        id: ServerId,
        env: &Env,
        secrets: &mut Vec<String>,
    ) -> Result<Arc<Connection>, CallError> {
        let slot = self.slots.get(id.index()).ok_or_else(|| {
            CallError::new(
                ErrorClass::Client,
                "an MCP server the program does not declare",
            )
        })?;
        let mut guard = slot.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let server = &slot.server;
        let spec = render_spec(server, env, secrets)?;
        slot.starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = Connection::start(&spec, server.start_timeout)
            .await
            .map_err(|e| start_error(server, e))?;
        // The lock is what `flowc check` compared the declarations with; a
        // server that changed since must not be called as if it had not.
        let listed = match conn.list_tools(server.start_timeout).await {
            Ok(listed) => listed,
            Err(e) => {
                let stderr = conn.stop().await;
                self.keep_stderr(slot, &stderr);
                return Err(start_error(server, e));
            }
        };
        let missing: Vec<&str> = server
            .needed
            .iter()
            .filter(|t| !listed.tools.contains_key(*t))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let stderr = conn.stop().await;
            self.keep_stderr(slot, &stderr);
            return Err(CallError::new(
                ErrorClass::Client,
                format!(
                    "MCP server `{}` no longer offers {} the lock recorded; run `flowc mcp lock` on the flow and review the change",
                    server.name,
                    missing
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let conn = Arc::new(conn);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a connection that went away (if it is still the current
    /// one), keeping what it wrote to stderr.
    pub(super) async fn forget(&self, id: ServerId, gone: &Arc<Connection>) {
        let Some(slot) = self.slots.get(id.index()) else {
            return;
        };
        let mut guard = slot.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, gone)) {
            *guard = None;
            self.keep_stderr(slot, &gone.stderr());
        }
    }

    fn keep_stderr(&self, slot: &Slot, stderr: &str) {
        let mut kept = slot.stderr.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_str(stderr);
    }
}

fn seal_of(program: &Program, s: &McpServer) -> ServerSeal {
    let McpTransport::Stdio { argv } = &s.transport;
    let mut needed: Vec<String> = program
        .tools
        .iter()
        .filter_map(|t| match &t.kind {
            ToolKind::Mcp { server, name, .. } if *server == s.id => Some(name.clone()),
            _ => None,
        })
        .collect();
    needed.sort();
    needed.dedup();
    ServerSeal {
        name: s.name.clone(),
        argv: argv.clone(),
        env: s.env.clone(),
        start_timeout: s.start_timeout,
        needed,
    }
}

/// The server's command and environment with `env.NAME` filled in; every
/// environment value used is a secret.
fn render_spec(
    server: &ServerSeal,
    env: &Env,
    secrets: &mut Vec<String>,
) -> Result<ServerSpec, CallError> {
    let scope = EnvScope {
        env,
        seen: std::cell::RefCell::new(Vec::new()),
    };
    let failed = |what: &str, e: crate::run::eval::EvalError| {
        CallError::new(
            ErrorClass::Failed,
            format!(
                "MCP server `{}`: cannot render its {what}: {e}",
                server.name
            ),
        )
    };
    let argv = server
        .argv
        .iter()
        .map(|t| render(t, &scope).map_err(|e| failed("command", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut vars = Vec::with_capacity(server.env.len());
    for (name, t) in &server.env {
        vars.push((
            name.clone(),
            render(t, &scope).map_err(|e| failed(&format!("env `{name}`"), e))?,
        ));
    }
    secrets.extend(scope.seen.into_inner());
    Ok(ServerSpec::Stdio { argv, env: vars })
}

struct EnvScope<'a> {
    env: &'a Env,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Scope for EnvScope<'_> {
    fn param(&self, _: usize) -> Option<&Value> {
        None
    }
    fn step(&self, _: petgraph::graph::NodeIndex) -> Option<&Value> {
        None
    }
    fn env(&self, name: &str) -> Option<String> {
        let value = (self.env)(name)?;
        self.seen.borrow_mut().push(value.clone());
        Some(value)
    }
}

fn start_error(server: &ServerSeal, e: McpError) -> CallError {
    let class = match e {
        McpError::Timeout(_) => ErrorClass::Timeout,
        _ => ErrorClass::Connection,
    };
    CallError::new(class, format!("MCP server `{}`: {e}", server.name))
}
