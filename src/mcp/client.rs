//! Starting MCP servers and calling their tools, with the official Rust SDK
//! (`rmcp`). A stdio server is a child process started with a clean
//! environment (`PATH` and `HOME`, plus what its `env` clauses set: a
//! server never sees the API keys flowc was given); its stderr is kept
//! (the last 64 KiB) for the trace.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, MetaObject, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use super::lock::{LockedServer, LockedTool};

/// How much of a server's stderr is kept (its end).
const STDERR_KEEP_BYTES: usize = 64 * 1024;

/// A server as the runtime starts it: templates already rendered.
#[derive(Debug, Clone)]
pub enum ServerSpec {
    Stdio {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// What went wrong talking to a server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpError {
    /// The server could not be started or did not answer the handshake.
    Start(String),
    /// The server went away (exited, closed the connection).
    Closed(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// The server answered the request with a protocol error.
    Protocol(String),
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpError::Start(m) => write!(f, "cannot start: {m}"),
            McpError::Closed(m) => write!(f, "the connection closed: {m}"),
            McpError::Timeout(d) => write!(f, "no answer within {}s", d.as_secs_f64()),
            McpError::Protocol(m) => write!(f, "{m}"),
        }
    }
}

/// A started server.
pub struct Connection {
    service: RunningService<RoleClient, ()>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// A tool call's answer: its content as a value, and whether the server
/// marked it an error (`isError`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// `structuredContent` when the server sent it; otherwise the text of
    /// its text content blocks, joined.
    pub structured: Option<Value>,
    pub text: String,
    pub is_error: bool,
}

impl Connection {
    /// Starts (stdio) or connects to (HTTP) a server and does the handshake.
    pub async fn start(spec: &ServerSpec, timeout: Duration) -> Result<Connection, McpError> {
        match spec {
            ServerSpec::Stdio { argv, env } => {
                let Some((program, args)) = argv.split_first() else {
                    return Err(McpError::Start("the command is empty".into()));
                };
                let mut command = tokio::process::Command::new(program);
                command.args(args).env_clear();
                for name in ["PATH", "HOME"] {
                    if let Some(v) = std::env::var_os(name) {
                        command.env(name, v);
                    }
                }
                for (name, value) in env {
                    command.env(name, value);
                }
                let (transport, stderr_pipe) = TokioChildProcess::builder(command)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| McpError::Start(format!("`{program}`: {e}")))?;
                let stderr = Arc::new(Mutex::new(Vec::new()));
                if let Some(mut pipe) = stderr_pipe {
                    let keep = stderr.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = pipe.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let mut kept = keep.lock().unwrap_or_else(|e| e.into_inner());
                            kept.extend_from_slice(&buf[..n]);
                            if kept.len() > STDERR_KEEP_BYTES {
                                let cut = kept.len() - STDERR_KEEP_BYTES;
                                kept.drain(..cut);
                            }
                        }
                    });
                }
                let service = tokio::time::timeout(timeout, ().serve(transport))
                    .await
                    .map_err(|_| McpError::Timeout(timeout))?
                    .map_err(|e| McpError::Start(e.to_string()))?;
                Ok(Connection { service, stderr })
            }
            ServerSpec::Http { url, .. } => Err(McpError::Start(format!(
                "{url}: Streamable HTTP servers are not supported by this build yet; use a `command` server"
            ))),
        }
    }

    /// The server's name and version, as it introduced itself.
    pub fn server_info(&self) -> Option<String> {
        self.service
            .peer_info()
            .and_then(|i| i.server_info.clone())
            .map(|s| format!("{} {}", s.name, s.version))
    }

    /// Every tool the server offers, with its schemas.
    pub async fn list_tools(&self, timeout: Duration) -> Result<LockedServer, McpError> {
        let tools = tokio::time::timeout(timeout, self.service.list_all_tools())
            .await
            .map_err(|_| McpError::Timeout(timeout))?
            .map_err(service_error)?;
        let mut out = BTreeMap::new();
        for t in tools {
            out.insert(
                t.name.to_string(),
                LockedTool {
                    input_schema: Value::Object((*t.input_schema).clone()),
                    output_schema: t.output_schema.map(|s| Value::Object((*s).clone())),
                },
            );
        }
        Ok(LockedServer {
            server_info: self.server_info(),
            tools: out,
        })
    }

    /// Calls a tool once. `meta` is sent as the request's `_meta` (the
    /// idempotency key travels there).
    pub async fn call(
        &self,
        name: &str,
        args: Map<String, Value>,
        meta: Option<Map<String, Value>>,
        timeout: Duration,
    ) -> Result<CallOutcome, McpError> {
        let mut params = CallToolRequestParams::new(name.to_string()).with_arguments(args);
        if let Some(meta) = meta {
            params.meta = Some(RequestMetaObject(MetaObject(meta)));
        }
        let result = tokio::time::timeout(timeout, self.service.call_tool(params))
            .await
            .map_err(|_| McpError::Timeout(timeout))?
            .map_err(service_error)?;
        // Read through the wire form: it is the protocol's stable shape.
        let value = serde_json::to_value(&result).unwrap_or(Value::Null);
        let text = value
            .get("content")
            .and_then(Value::as_array)
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        Ok(CallOutcome {
            structured: value.get("structuredContent").cloned(),
            text,
            is_error: value.get("isError").and_then(Value::as_bool) == Some(true),
        })
    }

    /// The end of what the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// Stops the server (closing stdio ends a stdio server) and returns the
    /// end of its stderr.
    pub async fn stop(self) -> String {
        let _ = self.service.cancel().await;
        // Give the stderr reader a moment to drain what the exit flushed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

fn service_error(e: rmcp::ServiceError) -> McpError {
    match e {
        rmcp::ServiceError::McpError(e) => McpError::Protocol(e.message.to_string()),
        rmcp::ServiceError::Timeout { timeout } => McpError::Timeout(timeout),
        rmcp::ServiceError::TransportClosed => McpError::Closed("the server exited".into()),
        other => McpError::Closed(other.to_string()),
    }
}
