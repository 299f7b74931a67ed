//! `exec` tools: a local program (argv, never a shell), JSON on stdin and
//! stdout, killed at the timeout.

use std::process::Stdio;

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::context::ToolContext;
use super::quote::{parse_json, redact, snippet};
use super::template::{render_plain, template_error, ToolScope};
use crate::exec::{Template, TemplatePart, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::http::{seconds_text, MAX_BODY_BYTES};

/// How much of a program's stderr is kept (its end).
const STDERR_KEEP_BYTES: usize = 64 * 1024;

pub(super) async fn call(
    tool: &Tool,
    argv: &[Template],
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let failed = |message: String| {
        CallError::new(
            ErrorClass::Failed,
            format!("tool `{}`: {message}", tool.name),
        )
    };
    let (rendered, secrets) = {
        let scope = ToolScope::new(tool, args, ctx.env);
        let mut rendered = Vec::with_capacity(argv.len());
        for (i, t) in argv.iter().enumerate() {
            let what = if i == 0 {
                "program".to_string()
            } else {
                format!("argument {i}")
            };
            rendered.push(render_plain(t, &scope).map_err(|e| template_error(tool, &what, e))?);
        }
        (rendered, scope.into_secrets())
    };
    let Some((program, rest)) = rendered.split_first() else {
        return Err(failed("its `exec` names no program".into()));
    };
    // Messages name the program as written in the tool, not as rendered.
    let shown_program = match argv[0].parts.as_slice() {
        [TemplatePart::Text(s)] => s.clone(),
        _ => redact(program, &secrets),
    };
    if program.is_empty() {
        return Err(failed("its program is empty".into()));
    }

    let input = serde_json::to_vec(args)
        .map_err(|e| failed(format!("cannot encode the arguments: {e}")))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match &ctx.idempotency_key {
        Some(key) => command.env("FLOWC_IDEMPOTENCY_KEY", key),
        // Not one inherited from a flowc that runs this one.
        None => command.env_remove("FLOWC_IDEMPOTENCY_KEY"),
    };
    let mut child = command.spawn().map_err(|e| {
        failed(match e.kind() {
            std::io::ErrorKind::NotFound => format!("the program `{shown_program}` was not found"),
            std::io::ErrorKind::PermissionDenied => {
                format!("the program `{shown_program}` cannot be run (permission denied)")
            }
            _ => format!("cannot start the program `{shown_program}`: {e}"),
        })
    })?;

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let io = async {
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input closes the pipe
                // early; that is its business.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let (_, out, err) = tokio::join!(
            write,
            read_capped(stdout, MAX_BODY_BYTES),
            read_tail(stderr)
        );
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, (out, out_too_large), err) = match tokio::time::timeout(ctx.timeout, io).await {
        Ok(done) => done,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(CallError::new(
                ErrorClass::Timeout,
                format!(
                    "tool `{}`: the program `{shown_program}` did not finish within {} and was killed",
                    tool.name,
                    seconds_text(ctx.timeout)
                ),
            ));
        }
    };
    let status =
        status.map_err(|e| failed(format!("lost track of the program `{shown_program}`: {e}")))?;

    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => {
                #[cfg(unix)]
                {
                    use std::os::unix::process::ExitStatusExt;
                    match status.signal() {
                        Some(sig) => format!("was killed by signal {sig}"),
                        None => "failed".to_string(),
                    }
                }
                #[cfg(not(unix))]
                {
                    "failed".to_string()
                }
            }
        };
        let tail = redact(&stderr_tail(&err), &secrets);
        let mut message = format!("the program `{shown_program}` {how}");
        if tail.is_empty() {
            message.push_str(" and wrote nothing to stderr");
        } else {
            message.push_str("; stderr:\n");
            message.push_str(&tail);
        }
        return Err(failed(message));
    }
    if out_too_large {
        return Err(CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the program `{shown_program}` printed more than {} MiB",
                tool.name,
                MAX_BODY_BYTES >> 20
            ),
        ));
    }
    parse_json(&out).map_err(|e| {
        CallError::new(
            ErrorClass::Invalid,
            format!(
                "tool `{}`: the program `{shown_program}` printed something that is not JSON ({e}): {}",
                tool.name,
                redact(&snippet(&out), &secrets)
            ),
        )
    })
}

/// Reads up to `cap` bytes and then drains the rest; `true` when it had to.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else {
        return (out, false);
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut over = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) if !over && out.len() + n <= cap => out.extend_from_slice(&buf[..n]),
            Ok(_) => over = true,
        }
    }
    (out, over)
}

/// Reads everything, keeping the last [`STDERR_KEEP_BYTES`].
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else { return out };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 2 * STDERR_KEEP_BYTES {
                    out.drain(..out.len() - STDERR_KEEP_BYTES);
                }
            }
        }
    }
    if out.len() > STDERR_KEEP_BYTES {
        out.drain(..out.len() - STDERR_KEEP_BYTES);
    }
    out
}

/// The last 20 lines of stderr, at most 2000 characters (the end is kept).
fn stderr_tail(bytes: &[u8]) -> String {
    const LINES: usize = 20;
    const CHARS: usize = 2000;
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let kept = lines[lines.len().saturating_sub(LINES)..].join("\n");
    let count = kept.chars().count();
    if count <= CHARS {
        return kept;
    }
    let start = kept.char_indices().nth(count - CHARS).map_or(0, |(i, _)| i);
    format!("…{}", &kept[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tails() {
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes());
        assert!(
            tail.starts_with("line 30\n") && tail.ends_with("line 49"),
            "{tail}"
        );
        let long = "x".repeat(5000);
        assert_eq!(stderr_tail(long.as_bytes()).chars().count(), 2001);
    }
}
