//! Anthropic messages.

use serde_json::{json, Value};

use super::chat::{
    base_body, count, kind_of, truncate, ChatRequest, Malformed, Message, Parsed, ToolCall, Usage,
};

pub(crate) fn request_body(request: &ChatRequest) -> Value {
    let mut system = request.system.clone();
    if let Some(schema) = &request.response_schema {
        // Anthropic has no JSON-schema mode: the instruction goes into
        // the system prompt and the caller validates the reply.
        let instruction = format!(
            "Reply with a single JSON value that conforms to the JSON Schema below, and nothing else: \
             no prose before or after it, no Markdown code fence.\nJSON Schema:\n{schema}"
        );
        system = Some(match system {
            Some(system) if !system.is_empty() => format!("{system}\n\n{instruction}"),
            _ => instruction,
        });
    }

    // Anthropic wants user and assistant turns to alternate, with tool
    // results inside a user turn: consecutive blocks of one role merge.
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message {
            Message::User(text) => ("user", vec![json!({"type": "text", "text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if let Some(text) = text.as_ref().filter(|t| !t.trim().is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": input_object(&call.arguments),
                    }));
                }
                ("assistant", blocks)
            }
            Message::ToolResult { call_id, content } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();

    let mut body = base_body(request);
    body.insert("messages".into(), Value::Array(messages));
    if let Some(system) = system {
        body.insert("system".into(), Value::String(system));
    }
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

/// `tool_use.input` must be an object; arguments from another protocol
/// that are a JSON string of an object are unwrapped, anything else is
/// sent as `{}`.
fn input_object(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        },
        _ => json!({}),
    }
}

pub(crate) fn parse(reply: &Value) -> Result<Parsed, Malformed> {
    let blocks = match reply.get("content") {
        Some(Value::Array(blocks)) => blocks,
        Some(other) => {
            return Err(Malformed(format!(
                "the reply's `content` is {}, not a list",
                kind_of(other)
            )))
        }
        None => return Err("the reply has no `content`".into()),
    };
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let part = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`content[{i}].text` is missing"))?;
                text.get_or_insert_with(String::new).push_str(part);
            }
            Some("tool_use") => {
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`content[{i}].name` is missing"))?;
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("toolu_{i}"), str::to_string);
                let arguments = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
            // thinking, redacted_thinking and later block kinds
            _ => {}
        }
    }
    let stop = reply
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    if stop == "refusal" {
        return Err(Malformed(format!(
            "the model refused: {}",
            truncate(text.as_deref().unwrap_or("(no text)"))
        )));
    }
    if text.is_none() && tool_calls.is_empty() {
        return Err(Malformed(format!(
            "the reply has neither text nor tool_use content (stop_reason: {stop})"
        )));
    }
    let usage = reply.get("usage").and_then(|u| {
        let cached = count(u, "cache_creation_input_tokens").unwrap_or(0)
            + count(u, "cache_read_input_tokens").unwrap_or(0);
        Some(Usage {
            input_tokens: count(u, "input_tokens")? + cached,
            output_tokens: count(u, "output_tokens")?,
        })
    });
    Ok(Parsed {
        text,
        tool_calls,
        usage,
        finish_reasons: reply
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(|r| vec![r.to_string()])
            .unwrap_or_default(),
    })
}
