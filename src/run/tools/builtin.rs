//! `builtin` tools: the standard library's own (time, files, JSON).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::context::ToolContext;
use crate::exec::{Builtin, Tool};
use crate::run::error::{CallError, ErrorClass};
use crate::run::http::{civil_from_days, seconds_text};

/// An instant as RFC 3339 in UTC, to the second: `2025-03-01T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

pub(super) async fn call(
    tool: &Tool,
    builtin: Builtin,
    args: &Map<String, Value>,
    ctx: &ToolContext<'_>,
) -> Result<Value, CallError> {
    let name = builtin.as_str();
    let run = async {
        match builtin {
            Builtin::TimeNow => Ok(Value::String(rfc3339(SystemTime::now()))),
            Builtin::TimeSleep => {
                let secs = number_arg(tool, name, args, 0, "seconds")?;
                if !secs.is_finite() || secs < 0.0 {
                    return Err(builtin_error(
                        tool,
                        name,
                        format!("cannot sleep {secs} seconds"),
                    ));
                }
                tokio::time::sleep(Duration::from_secs_f64(secs.min(1e9))).await;
                Ok(Value::Bool(true))
            }
            Builtin::FsRead => {
                let path = string_arg(tool, name, args, 0, "path")?;
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| builtin_error(tool, name, format!("cannot read `{path}`: {e}")))?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| builtin_error(tool, name, format!("`{path}` is not UTF-8 text")))
            }
            Builtin::FsWrite => {
                let path = string_arg(tool, name, args, 0, "path")?;
                let content = string_arg(tool, name, args, 1, "content")?;
                tokio::fs::write(path, content).await.map_err(|e| {
                    builtin_error(tool, name, format!("cannot write `{path}`: {e}"))
                })?;
                Ok(serde_json::json!({ "bytes": content.len() }))
            }
            Builtin::JsonParse => {
                let text = string_arg(tool, name, args, 0, "text")?;
                serde_json::from_str(text).map_err(|e| {
                    CallError::new(
                        ErrorClass::Invalid,
                        format!("tool `{}` ({name}): the text is not JSON: {e}", tool.name),
                    )
                })
            }
        }
    };
    match tokio::time::timeout(ctx.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(CallError::new(
            ErrorClass::Timeout,
            format!(
                "tool `{}` ({name}) did not finish within {}",
                tool.name,
                seconds_text(ctx.timeout)
            ),
        )),
    }
}

fn builtin_error(tool: &Tool, name: &str, message: String) -> CallError {
    CallError::new(
        ErrorClass::Failed,
        format!("tool `{}` ({name}): {message}", tool.name),
    )
}

/// A builtin's argument: by its usual name, or by position for a tool that
/// names its parameters differently.
fn arg<'a>(
    tool: &Tool,
    args: &'a Map<String, Value>,
    index: usize,
    name: &str,
) -> Option<&'a Value> {
    args.get(name)
        .or_else(|| tool.params.get(index).and_then(|p| args.get(&p.name)))
}

fn string_arg<'a>(
    tool: &Tool,
    builtin: &str,
    args: &'a Map<String, Value>,
    index: usize,
    name: &str,
) -> Result<&'a str, CallError> {
    arg(tool, args, index, name)
        .and_then(Value::as_str)
        .ok_or_else(|| builtin_error(tool, builtin, format!("needs a string argument `{name}`")))
}

fn number_arg(
    tool: &Tool,
    builtin: &str,
    args: &Map<String, Value>,
    index: usize,
    name: &str,
) -> Result<f64, CallError> {
    arg(tool, args, index, name)
        .and_then(Value::as_f64)
        .ok_or_else(|| builtin_error(tool, builtin, format!("needs a number argument `{name}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
