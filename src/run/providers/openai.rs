//! OpenAI-compatible chat completions (also local servers and gateways).

use serde_json::{json, Value};

use super::chat::{
    base_body, count, kind_of, text_of, truncate, ChatRequest, Malformed, Message, Parsed,
    ToolCall, Usage,
};

pub(crate) fn request_body(request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        messages.push(match message {
            Message::User(text) => json!({"role": "user", "content": text}),
            Message::Assistant { text, tool_calls } => {
                let mut m = json!({"role": "assistant", "content": text});
                if tool_calls.is_empty() {
                    if text.is_none() {
                        m["content"] = json!("");
                    }
                } else {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": arguments_string(&call.arguments)},
                            })
                        })
                        .collect();
                }
                m
            }
            Message::ToolResult { call_id, content } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        });
    }
    let mut body = base_body(request);
    body.insert("messages".into(), Value::Array(messages));
    if let Some(schema) = &request.response_schema {
        let schema = &*schema.document;
        body.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": false}}),
        );
    }
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

/// Arguments as OpenAI expects them: a JSON string. Arguments that
/// failed to parse (kept as a string) go back exactly as the model sent
/// them.
fn arguments_string(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn parse(reply: &Value) -> Result<Parsed, Malformed> {
    let choice = reply
        .get("choices")
        .ok_or("the reply has no `choices`")?
        .get(0)
        .ok_or("the reply's `choices` is empty or not a list")?;
    let message = choice
        .get("message")
        .ok_or("the reply has no `choices[0].message`")?;
    let text = text_of(
        message.get("content").unwrap_or(&Value::Null),
        "choices[0].message.content",
    )?;
    let mut tool_calls = Vec::new();
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (i, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        format!("`choices[0].message.tool_calls[{i}].function.name` is missing")
                    })?;
                let arguments = match function.and_then(|f| f.get("arguments")) {
                    None | Some(Value::Null) => json!({}),
                    Some(Value::String(raw)) if raw.trim().is_empty() => json!({}),
                    Some(Value::String(raw)) => {
                        serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
                    }
                    Some(other) => other.clone(),
                };
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{i}"), str::to_string);
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
        }
        Some(other) => {
            return Err(Malformed(format!(
                "`choices[0].message.tool_calls` is {}, not a list",
                kind_of(other)
            )))
        }
    }
    if text.is_none() && tool_calls.is_empty() {
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            return Err(Malformed(format!(
                "the model refused: {}",
                truncate(refusal)
            )));
        }
        let finish = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(Malformed(format!(
            "the reply has neither content nor tool calls (finish_reason: {finish})"
        )));
    }
    let usage = reply.get("usage").and_then(|u| {
        Some(Usage {
            input_tokens: count(u, "prompt_tokens")?,
            output_tokens: count(u, "completion_tokens")?,
        })
    });
    let finish_reasons = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(|r| vec![r.to_string()])
        .unwrap_or_default();
    Ok(Parsed {
        text,
        tool_calls,
        usage,
        finish_reasons,
    })
}
