//! Anthropic messages.

use serde_json::{json, Value};

use super::chat::{
    base_body, count, kind_of, truncate, ChatRequest, Malformed, Message, Parsed, ToolCall, Usage,
};

/// The tool a typed `llm` step's reply comes through: Anthropic's own way
/// to get output that follows a JSON Schema is a forced tool call whose
/// `input_schema` is the schema.
pub(crate) const OUTPUT_TOOL: &str = "output";
/// The property a non-object output is wrapped in (`input_schema` must
/// describe an object).
const WRAPPED: &str = "value";

pub(crate) fn request_body(request: &ChatRequest) -> Value {
    let mut system = request.system.clone();
    let mut output_tool = None;
    if let Some(schema) = &request.response_schema {
        let schema = &*schema.document;
        if request.tools.is_empty() {
            output_tool = Some(json!({
                "name": OUTPUT_TOOL,
                "description": "Give your answer: call this tool once, with the answer as its input.",
                "input_schema": input_schema(schema),
            }));
        } else {
            // A model that may call other tools cannot be forced to this
            // one: the instruction goes into the system prompt and the
            // caller validates the reply.
            let instruction = format!(
                "Reply with a single JSON value that conforms to the JSON Schema below, and nothing else: \
                 no prose before or after it, no Markdown code fence.\nJSON Schema:\n{schema}"
            );
            system = Some(match system {
                Some(system) if !system.is_empty() => format!("{system}\n\n{instruction}"),
                _ => instruction,
            });
        }
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
    if let Some(tool) = output_tool {
        body.insert("tools".into(), json!([tool]));
        body.insert(
            "tool_choice".into(),
            json!({"type": "tool", "name": OUTPUT_TOOL}),
        );
    }
    Value::Object(body)
}

/// The output schema as a tool's `input_schema`: an object schema as it
/// is (a root `$ref` to an object definition is inlined, its `$defs` kept
/// beside it); anything else (a list, a number, a union) as the one
/// property `value`, with the schema's `$defs` kept at the root so its
/// `$ref`s still resolve.
fn input_schema(schema: &Value) -> Value {
    if let Some(object) = object_schema(schema) {
        return object;
    }
    let mut inner = schema.clone();
    let defs = inner.as_object_mut().and_then(|o| o.remove("$defs"));
    let root_meta = inner.as_object_mut().and_then(|o| o.remove("$schema"));
    let mut wrapper = json!({
        "type": "object",
        "properties": {WRAPPED: inner},
        "required": [WRAPPED],
        "additionalProperties": false,
    });
    if let Some(defs) = defs {
        wrapper["$defs"] = defs;
    }
    if let Some(meta) = root_meta {
        wrapper["$schema"] = meta;
    }
    wrapper
}

/// The schema as an object schema, when it describes objects: itself, or
/// the definition its root `$ref` names, with the `$defs` beside it.
fn object_schema(schema: &Value) -> Option<Value> {
    let is_object = |s: &Value| s.get("type").and_then(Value::as_str) == Some("object");
    if is_object(schema) {
        return Some(schema.clone());
    }
    let name = schema
        .get("$ref")
        .and_then(Value::as_str)?
        .strip_prefix("#/$defs/")?;
    let defs = schema.get("$defs")?;
    let target = defs.get(name).filter(|d| is_object(d))?;
    let mut object = target.clone();
    object["$defs"] = defs.clone();
    if let Some(meta) = schema.get("$schema") {
        object["$schema"] = meta.clone();
    }
    Some(object)
}

/// A typed step's answer from the forced tool call, as JSON text (what
/// the caller parses and validates, as it does any model's reply). `None`
/// when the reply did not call the output tool: a server that ignores
/// `tool_choice` may still have answered in text.
pub(crate) fn output_from_tool(request: &ChatRequest, tool_calls: &[ToolCall]) -> Option<String> {
    let schema = &*request.response_schema.as_ref()?.document;
    if !request.tools.is_empty() {
        return None;
    }
    let call = tool_calls.iter().find(|c| c.name == OUTPUT_TOOL)?;
    let input = input_object(&call.arguments);
    let wrapped = object_schema(schema).is_none();
    let value = if wrapped {
        input.get(WRAPPED).cloned().unwrap_or(Value::Null)
    } else {
        input
    };
    Some(value.to_string())
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
