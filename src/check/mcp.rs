//! M001: an MCP tool that the lock file beside its flow does not describe as
//! declared: there is no lock (or no entry for the server, or the server
//! does not offer the tool), or a declared parameter or result field differs
//! from the server's locked schema. Pure: the lock was read by the loader;
//! nothing is started here (`flowc mcp lock` writes the lock,
//! `flowc run` checks the live server against it).

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::{McpLock, Program, ToolKind};

pub(super) fn check(program: &Program, out: &mut Vec<Diagnostic>) {
    for tool in &program.tools {
        let Some(ToolKind::Mcp { server, name }) = &tool.kind else {
            continue;
        };
        let server = &program.servers[server.index()];
        let relock = format!(
            "run `flowc mcp lock` on this file to record server `{}`'s tools, and commit the lock file",
            server.name
        );
        let locked = match &server.lock {
            McpLock::Missing => {
                out.push(
                    Diagnostic::new(
                        Code::McpLockMismatch,
                        tool.span,
                        format!(
                            "tool `{}` is bound to server `{}`, which has no lock",
                            tool.name, server.name
                        ),
                    )
                    .label("its types cannot be checked against the server")
                    .help(relock),
                );
                continue;
            }
            McpLock::Invalid(e) => {
                out.push(
                    Diagnostic::new(
                        Code::McpLockMismatch,
                        tool.span,
                        format!("the lock file of server `{}` is unusable: {e}", server.name),
                    )
                    .label("bound to that server")
                    .help(relock),
                );
                continue;
            }
            McpLock::Locked(locked) => locked,
        };
        let Some(remote) = locked.tools.get(name) else {
            let mut offered: Vec<&str> = locked.tools.keys().map(String::as_str).collect();
            offered.truncate(20);
            out.push(
                Diagnostic::new(
                    Code::McpLockMismatch,
                    tool.span,
                    format!(
                        "server `{}` does not offer a tool `{name}` (as locked)",
                        server.name
                    ),
                )
                .label("bound here")
                .help(format!(
                    "the locked tools are: {}; if the server gained the tool, run `flowc mcp lock` again",
                    offered.join(", ")
                )),
            );
            continue;
        };
        let mismatches = crate::mcp::compare(
            &program.types,
            &tool.params,
            &tool.output,
            &remote.input_schema,
            remote.output_schema.as_ref(),
        );
        for m in mismatches {
            out.push(
                Diagnostic::new(
                    Code::McpLockMismatch,
                    tool.span,
                    format!(
                        "tool `{}` differs from `{name}` on server `{}`: {}: {}",
                        tool.name, server.name, m.place, m.message
                    ),
                )
                .label("declared here")
                .help("declare the type the server's schema has, or, if the server changed, run `flowc mcp lock` and review the lock file's diff"),
            );
        }
    }
}
