//! One trace event as OTLP protobuf: a closed span becomes an encoded
//! `Span`, a point event an encoded `Span.Event` that waits for its span.
//!
//! This runs on the export thread, over the events the run's trace keeps:
//! it reads each event in place and writes bytes straight into the batch's
//! buffer: no intermediate span structs, no per-attribute strings.
//!
//! Names and attributes follow the OpenTelemetry GenAI semantic conventions
//! (`chat {model}`, `execute_tool {tool}`, `invoke_agent {agent}`,
//! `gen_ai.*`), plus `flowc.*` for what they do not cover. Events arrive
//! already scrubbed of secrets (see [`crate::run::trace`]); prompt and
//! completion content is written only when asked for.

use serde_json::{Map, Value};

use super::wire::{self, any};

/// `opentelemetry.proto.trace.v1.Span` fields.
mod field {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const EVENTS: u32 = 11;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    /// `Span.Event` fields.
    pub const EVENT_TIME: u32 = 1;
    pub const EVENT_NAME: u32 = 2;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    /// `Status` fields.
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    /// `ScopeSpans.spans`.
    pub const SCOPE_SPANS: u32 = 2;
}

/// `Span.SpanKind`.
const KIND_INTERNAL: u64 = 1;
const KIND_CLIENT: u64 = 3;
/// `Status.StatusCode`.
const STATUS_ERROR: u64 = 2;
/// `Span.flags`: sampled, and "the parent's remoteness is known" (it is
/// local), as the OpenTelemetry SDKs write it.
const FLAGS: u32 = 0x01 | 0x100;

/// The kinds of trace span that become OpenTelemetry spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SpanKindName {
    Run,
    Flow,
    Step,
    Agent,
    Model,
    Tool,
}

impl SpanKindName {
    pub(super) fn of(kind: &str) -> Option<SpanKindName> {
        Some(match kind {
            "run" => SpanKindName::Run,
            "flow" => SpanKindName::Flow,
            "step" => SpanKindName::Step,
            "agent" => SpanKindName::Agent,
            "model_call" => SpanKindName::Model,
            "tool_call" => SpanKindName::Tool,
            _ => return None,
        })
    }
}

/// How a step's validation went (`flowc.validation.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValidationOutcome {
    /// Every argument, result and output was valid at once.
    Passed,
    /// Something was invalid, and a retry produced a valid one.
    Repaired,
    /// Something was invalid and the step failed.
    Rejected,
}

impl ValidationOutcome {
    fn of(status: &str, rejections: usize) -> ValidationOutcome {
        match (status, rejections) {
            (_, 0) => ValidationOutcome::Passed,
            ("ok", _) => ValidationOutcome::Repaired,
            _ => ValidationOutcome::Rejected,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ValidationOutcome::Passed => "passed",
            ValidationOutcome::Repaired => "repaired",
            ValidationOutcome::Rejected => "rejected",
        }
    }
}

/// Point events waiting for the span they happened in.
#[derive(Debug, Default)]
pub(super) struct PendingEvents {
    /// Encoded `Span.events` fields.
    pub bytes: Vec<u8>,
    /// How many were validation failures (`flowc.validation.rejections`).
    pub validations: usize,
}

/// Writes the spans of one trace.
#[derive(Debug)]
pub(super) struct SpanWriter {
    /// The trace id, big-endian, as OTLP carries it.
    trace: [u8; 16],
    capture_content: bool,
}

impl SpanWriter {
    pub(super) fn new(trace: u128, capture_content: bool) -> SpanWriter {
        SpanWriter {
            trace: trace.to_be_bytes(),
            capture_content,
        }
    }

    /// Appends point event `e` of kind `kind` to `pending`.
    pub(super) fn event(&self, kind: &str, e: &Map<String, Value>, pending: &mut PendingEvents) {
        if kind == "validation" {
            pending.validations += 1;
        }
        wire::message(&mut pending.bytes, field::EVENTS, |out| {
            wire::fixed64(out, field::EVENT_TIME, nanos(e.get("at_ms")));
            wire::bytes(out, field::EVENT_NAME, kind.as_bytes());
            let attrs = field::EVENT_ATTRIBUTES;
            if let Some(name) = str_of(e, "name") {
                let key = match kind {
                    "gate" => "flowc.gate.name",
                    "validation" | "check" | "fallback" | "budget" => "flowc.step.name",
                    _ => "flowc.name",
                };
                wire::attr_str(out, attrs, key, name);
            }
            for (key, value) in e {
                let name: &'static str = match (kind, key.as_str()) {
                    ("gate", "decision") => "flowc.gate.decision",
                    ("gate", "reason") => "flowc.gate.reason",
                    ("validation", "what") => "flowc.validation.subject",
                    ("validation", "errors") => "flowc.validation.errors",
                    ("validation", "attempt") => "flowc.attempt",
                    ("check", "status") => "flowc.check.outcome",
                    ("check", "message") => "flowc.check.message",
                    ("budget", "budget") => "flowc.budget.exhausted",
                    ("budget", "limit") => "flowc.budget.limit",
                    ("budget", "used") => "flowc.budget.used",
                    ("fallback", "error") => "error.message",
                    ("agent_error", "tool") => "gen_ai.tool.name",
                    ("agent_error", "error") => "error.message",
                    _ => continue,
                };
                attribute(out, attrs, name, value);
            }
        });
    }

    /// Appends span `e` (of kind `kind`, with id `id`) to `out` as a
    /// `ScopeSpans.spans` field, with the point events that happened in it.
    pub(super) fn span(
        &self,
        kind: SpanKindName,
        id: u64,
        e: &Map<String, Value>,
        events: Option<&PendingEvents>,
        out: &mut Vec<u8>,
    ) {
        wire::message(out, field::SCOPE_SPANS, |out| {
            self.span_fields(kind, id, e, events, out);
        });
    }

    fn span_fields(
        &self,
        kind: SpanKindName,
        id: u64,
        e: &Map<String, Value>,
        events: Option<&PendingEvents>,
        out: &mut Vec<u8>,
    ) {
        const A: u32 = field::ATTRIBUTES;
        let f = EventFields::of(e);
        let name = f.name.unwrap_or("");
        let status = f.status.unwrap_or("ok");
        wire::bytes(out, field::TRACE_ID, &self.trace);
        wire::bytes(out, field::SPAN_ID, &id.to_be_bytes());
        if let Some(parent) = f.parent {
            wire::bytes(out, field::PARENT_SPAN_ID, &parent.to_be_bytes());
        }
        let (title, span_kind): (&str, u64) = match kind {
            SpanKindName::Run => ("run ", KIND_INTERNAL),
            SpanKindName::Flow => ("flow ", KIND_INTERNAL),
            SpanKindName::Step => ("step ", KIND_INTERNAL),
            SpanKindName::Agent => ("invoke_agent ", KIND_INTERNAL),
            SpanKindName::Model => ("chat ", KIND_CLIENT),
            SpanKindName::Tool => ("execute_tool ", KIND_INTERNAL),
        };
        let named = match kind {
            SpanKindName::Model => f.model.unwrap_or(name),
            _ => name,
        };
        wire::string_of(out, field::NAME, &[title, named]);
        wire::uint(out, field::KIND, span_kind);
        wire::fixed64(out, field::START, nanos(f.start_ms));
        wire::fixed64(out, field::END, nanos(f.end_ms));
        match kind {
            SpanKindName::Run => {
                wire::attr_str(out, A, "flowc.flow", name);
                if let Some(run) = f.run {
                    wire::attr_str(out, A, "flowc.run.id", run);
                }
                wire::attr_str(out, A, "flowc.run.status", status);
            }
            SpanKindName::Flow => wire::attr_str(out, A, "flowc.flow", name),
            SpanKindName::Step => {
                wire::attr_str(out, A, "flowc.step.name", name);
                if let Some(path) = f.path {
                    wire::attr_str(out, A, "flowc.step.path", path);
                }
                if let Some(remaining) = f.budget_remaining {
                    for (what, key) in [
                        ("cost", "flowc.budget.remaining.cost"),
                        ("tokens", "flowc.budget.remaining.tokens"),
                        ("steps", "flowc.budget.remaining.steps"),
                        ("tool_calls", "flowc.budget.remaining.tool_calls"),
                    ] {
                        if let Some(v) = remaining.get(what) {
                            attribute(out, A, key, v);
                        }
                    }
                }
                if let Some(fallback) = f.fallback {
                    wire::attr_bool(out, A, "flowc.fallback", fallback);
                }
                let rejections = events.map_or(0, |p| p.validations);
                wire::attr_int(out, A, "flowc.validation.rejections", rejections as i64);
                let outcome = ValidationOutcome::of(status, rejections);
                wire::attr_str(out, A, "flowc.validation.outcome", outcome.as_str());
            }
            SpanKindName::Agent => {
                wire::attr_str(out, A, "gen_ai.operation.name", "invoke_agent");
                wire::attr_str(out, A, "gen_ai.agent.name", name);
                if let Some(m) = f.model {
                    wire::attr_str(out, A, "gen_ai.request.model", m);
                }
                if let Some(p) = f.provider {
                    wire::attr_str(out, A, "gen_ai.provider.name", p);
                }
            }
            SpanKindName::Model => {
                wire::attr_str(out, A, "gen_ai.operation.name", "chat");
                if let Some(p) = f.provider {
                    wire::attr_str(out, A, "gen_ai.provider.name", p);
                }
                wire::attr_str(out, A, "gen_ai.request.model", named);
                if let Some(m) = f.response_model {
                    wire::attr_str(out, A, "gen_ai.response.model", m);
                }
                if let Some(params) = f.parameters {
                    if let Some(t) = params.get("max_tokens").and_then(Value::as_i64) {
                        wire::attr_int(out, A, "gen_ai.request.max_tokens", t);
                    }
                    if let Some(t) = params.get("temperature").and_then(Value::as_f64) {
                        wire::attr_double(out, A, "gen_ai.request.temperature", t);
                    }
                }
                if let Some(t) = f.input_tokens {
                    wire::attr_int(out, A, "gen_ai.usage.input_tokens", t);
                }
                if let Some(t) = f.output_tokens {
                    wire::attr_int(out, A, "gen_ai.usage.output_tokens", t);
                }
                if let Some(reasons) = f.finish_reasons {
                    attribute(out, A, "gen_ai.response.finish_reasons", reasons);
                }
                if let Some(c) = f.cost {
                    wire::attr_double(out, A, "flowc.cost", c);
                }
                if self.capture_content {
                    for (v, otel) in [
                        (f.system, "gen_ai.system_instructions"),
                        (f.prompt, "gen_ai.input.messages"),
                        (f.response, "gen_ai.output.messages"),
                    ] {
                        if let Some(v) = v.filter(|v| !v.is_null()) {
                            json_attribute(out, A, otel, v);
                        }
                    }
                }
            }
            SpanKindName::Tool => {
                wire::attr_str(out, A, "gen_ai.operation.name", "execute_tool");
                wire::attr_str(out, A, "gen_ai.tool.name", name);
                wire::attr_str(out, A, "gen_ai.tool.type", "function");
                if self.capture_content {
                    for (v, otel) in [
                        (f.arguments, "gen_ai.tool.call.arguments"),
                        (f.result, "gen_ai.tool.call.result"),
                    ] {
                        if let Some(v) = v.filter(|v| !v.is_null()) {
                            json_attribute(out, A, otel, v);
                        }
                    }
                }
            }
        }
        // Common to every span that has them.
        if matches!(kind, SpanKindName::Model | SpanKindName::Tool) {
            if let Some(step) = f.step {
                wire::attr_str(out, A, "flowc.step.name", step);
            }
            if let Some(a) = f.attempt {
                wire::attr_int(out, A, "flowc.attempt", a);
            }
        }
        if matches!(kind, SpanKindName::Run | SpanKindName::Flow) {
            if let Some(c) = f.cost {
                wire::attr_double(out, A, "flowc.cost", c);
            }
            if let Some(t) = f.tokens {
                wire::attr_int(out, A, "flowc.tokens", t);
            }
            if let Some(t) = f.steps {
                wire::attr_int(out, A, "flowc.steps", t);
            }
        }
        if let Some(class) = f.class {
            wire::attr_str(out, A, "error.type", class);
            wire::attr_str(out, A, "flowc.retry.class", class);
        }
        if let Some(events) = events {
            out.extend_from_slice(&events.bytes);
        }
        let failed = !matches!(status, "ok" | "completed" | "waiting");
        if failed {
            let message = f.error.unwrap_or(status);
            wire::message(out, field::STATUS, |out| {
                wire::bytes(out, field::STATUS_MESSAGE, message.as_bytes());
                wire::uint(out, field::STATUS_CODE, STATUS_ERROR);
            });
        }
        wire::fixed32(out, field::FLAGS, FLAGS);
    }
}

/// The fields of a span's trace event that export reads, found in one pass
/// over the event (a lookup per field cost more than the encoding: a chain
/// step's two spans made some thirty string comparisons each).
#[derive(Default)]
struct EventFields<'a> {
    name: Option<&'a str>,
    status: Option<&'a str>,
    parent: Option<u64>,
    model: Option<&'a str>,
    start_ms: Option<&'a Value>,
    end_ms: Option<&'a Value>,
    run: Option<&'a str>,
    path: Option<&'a str>,
    budget_remaining: Option<&'a Map<String, Value>>,
    fallback: Option<bool>,
    provider: Option<&'a str>,
    response_model: Option<&'a str>,
    parameters: Option<&'a Value>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    finish_reasons: Option<&'a Value>,
    cost: Option<f64>,
    tokens: Option<i64>,
    steps: Option<i64>,
    system: Option<&'a Value>,
    prompt: Option<&'a Value>,
    response: Option<&'a Value>,
    arguments: Option<&'a Value>,
    result: Option<&'a Value>,
    step: Option<&'a str>,
    attempt: Option<i64>,
    class: Option<&'a str>,
    error: Option<&'a str>,
}

impl<'a> EventFields<'a> {
    fn of(e: &'a Map<String, Value>) -> EventFields<'a> {
        let mut f = EventFields::default();
        for (key, v) in e {
            match key.as_str() {
                "name" => f.name = v.as_str(),
                "status" => f.status = v.as_str(),
                "parent" => f.parent = v.as_u64(),
                "model" => f.model = v.as_str(),
                "start_ms" => f.start_ms = Some(v),
                "end_ms" => f.end_ms = Some(v),
                "run" => f.run = v.as_str(),
                "path" => f.path = v.as_str(),
                "budget_remaining" => f.budget_remaining = v.as_object(),
                "fallback" => f.fallback = v.as_bool(),
                "provider" => f.provider = v.as_str(),
                "response_model" => f.response_model = v.as_str(),
                "parameters" => f.parameters = Some(v),
                "input_tokens" => f.input_tokens = v.as_i64(),
                "output_tokens" => f.output_tokens = v.as_i64(),
                "finish_reasons" => f.finish_reasons = Some(v),
                "cost" => f.cost = v.as_f64(),
                "tokens" => f.tokens = v.as_i64(),
                "steps" => f.steps = v.as_i64(),
                "system" => f.system = Some(v),
                "prompt" => f.prompt = Some(v),
                "response" => f.response = Some(v),
                "arguments" => f.arguments = Some(v),
                "result" => f.result = Some(v),
                "step" => f.step = v.as_str(),
                "attempt" => f.attempt = v.as_i64(),
                "class" => f.class = v.as_str(),
                "error" => f.error = v.as_str(),
                _ => {}
            }
        }
        f
    }
}

fn str_of<'a>(e: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str)
}

/// Milliseconds since the epoch (as the trace writes them) as nanoseconds,
/// to the microsecond the trace keeps.
fn nanos(ms: Option<&Value>) -> u64 {
    let ms = ms.and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
    ((ms * 1e3) as u64).saturating_mul(1_000)
}

/// A JSON value as an attribute: scalars as themselves, lists of strings as
/// string arrays, anything else as its JSON text; nothing for `null`.
fn attribute(out: &mut Vec<u8>, field: u32, key: &str, v: &Value) {
    match v {
        Value::Null => {}
        Value::Bool(b) => wire::attr_bool(out, field, key, *b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => wire::attr_int(out, field, key, i),
            (None, Some(f)) => wire::attr_double(out, field, key, f),
            (None, None) => {}
        },
        Value::String(s) => wire::attr_str(out, field, key, s),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            wire::key_value(out, field, key, |out| {
                wire::message(out, any::ARRAY, |out| {
                    for item in items.iter().filter_map(Value::as_str) {
                        wire::message(out, any::ARRAY_VALUES, |out| {
                            wire::bytes(out, any::STRING, item.as_bytes());
                        });
                    }
                });
            });
        }
        other => json_attribute(out, field, key, other),
    }
}

/// A JSON value as a string attribute holding its JSON text, written in
/// place.
fn json_attribute(out: &mut Vec<u8>, field: u32, key: &str, v: &Value) {
    wire::key_value(out, field, key, |out| {
        wire::message(out, any::STRING, |out| {
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, v);
        });
    });
}
