//! OTLP export of a run's trace: every span the JSON-lines trace closes
//! becomes an OpenTelemetry span, sent over OTLP/HTTP (protobuf) by the SDK's
//! batch processor on its own thread.
//!
//! Spans keep the ids the trace gave them (a trace span id is 64 bits, like
//! an OpenTelemetry one), so the `traceparent` header an outgoing call
//! carries names the very span the backend receives. The trace id is a
//! function of the run id ([`trace_id`]): every process of a run (a resume, a
//! worker) computes the same one from what the store keeps, with nothing to
//! coordinate.
//!
//! Names and attributes follow the OpenTelemetry GenAI semantic conventions
//! (`chat {model}`, `execute_tool {tool}`, `invoke_agent {agent}`,
//! `gen_ai.*`), plus `flowc.*` for what they do not cover. Events reach this
//! module already scrubbed of secrets (see [`super::trace`]); prompt and
//! completion content is exported only when asked for
//! (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`).
//!
//! Export never slows or fails a run: spans go into a bounded queue (a full
//! queue drops them), a background thread sends them in batches, and the end
//! of a run waits at most the export timeout. What did not reach the
//! collector is counted and reported.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use serde_json::{Map, Value};

use super::error::SetupError;

/// Turns prompt and completion content on in exported spans (the GenAI
/// conventions' opt-in).
pub const CAPTURE_CONTENT_VAR: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// The export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to export; `None` from [`OtlpSettings::resolve`] means
/// export is off.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// The collector's base URL (`/v1/traces` is added), from `--otlp`;
    /// `None`: the standard `OTEL_EXPORTER_OTLP_*` variables decide.
    pub endpoint: Option<String>,
    /// Export prompts, completions, tool arguments and results.
    pub capture_content: bool,
    /// How long one export request may take (and so the end of a run).
    pub timeout: Duration,
}

impl OtlpSettings {
    /// Export is on with `--otlp URL`, or when `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn resolve(
        flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<OtlpSettings> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return None;
        }
        let endpoint = flag.map(|f| f.trim().to_string()).filter(|f| !f.is_empty());
        if endpoint.is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return None;
        }
        let timeout = set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Some(OtlpSettings {
            endpoint,
            capture_content: set(CAPTURE_CONTENT_VAR)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            timeout,
        })
    }
}

/// The trace id of a run: FNV-1a (128-bit) of its id, never zero.
pub fn trace_id(run_id: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in run_id.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h.max(1)
}

/// A W3C `traceparent` header value naming span `span` of trace `trace`.
pub fn traceparent(trace: u128, span: u64, sampled: bool) -> String {
    format!(
        "00-{trace:032x}-{span:016x}-{}",
        if sampled { "01" } else { "00" }
    )
}

/// What export did, for the run's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    /// Spans handed to the exporter.
    pub spans: u64,
    /// Spans the collector accepted.
    pub delivered: u64,
    /// Spans that did not reach it: queue full, collector down or too slow.
    pub dropped: u64,
}

/// The OTLP exporter wrapped to count what the collector accepted.
#[derive(Debug)]
struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    delivered: Arc<AtomicU64>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_ok() {
            self.delivered.fetch_add(n, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A run's OTLP export.
pub struct Export {
    processor: BatchSpanProcessor,
    trace: TraceId,
    scope: InstrumentationScope,
    capture_content: bool,
    timeout: Duration,
    /// Spans handed to the processor.
    ended: AtomicU64,
    delivered: Arc<AtomicU64>,
    /// Point events waiting for their span to end.
    events: Mutex<HashMap<u64, Vec<Event>>>,
    finished: Mutex<Option<ExportSummary>>,
}

impl Export {
    /// Starts the exporter's thread for the run with trace id `trace`.
    pub fn start(settings: &OtlpSettings, trace: u128) -> Result<Export, SetupError> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(settings.timeout);
        if let Some(base) = &settings.endpoint {
            builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
        }
        // Headers come from OTEL_EXPORTER_OTLP_HEADERS (the builder reads it).
        let inner = builder
            .build()
            .map_err(|e| SetupError::Start(format!("cannot start the OTLP exporter: {e}")))?;
        let delivered = Arc::new(AtomicU64::new(0));
        let exporter = CountingExporter {
            inner,
            delivered: delivered.clone(),
        };
        let mut resource = Resource::builder();
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
        if !named {
            resource = resource.with_service_name("flowc");
        }
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().build())
            .build();
        processor.set_resource(&resource.build());
        Ok(Export {
            processor,
            trace: TraceId::from(trace),
            scope: InstrumentationScope::builder("flowc")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            capture_content: settings.capture_content,
            timeout: settings.timeout,
            ended: AtomicU64::new(0),
            delivered,
            events: Mutex::default(),
            finished: Mutex::default(),
        })
    }

    /// Takes one trace event (already scrubbed): a closed span is exported,
    /// a point event waits for its span.
    pub fn record(&self, event: &Value) {
        let Some(e) = event.as_object() else {
            return;
        };
        let Some(kind) = e.get("kind").and_then(Value::as_str) else {
            return;
        };
        match SpanKindName::of(kind) {
            Some(span) => self.span(span, e),
            None => self.point(kind, e),
        }
    }

    fn point(&self, kind: &str, e: &Map<String, Value>) {
        let Some(parent) = e.get("parent").and_then(Value::as_u64) else {
            return;
        };
        let at = time(e.get("at_ms"));
        let mut attributes = Vec::new();
        if let Some(name) = str_of(e, "name") {
            let key = match kind {
                "gate" => "flowc.gate.name",
                "validation" | "check" | "fallback" | "budget" => "flowc.step.name",
                _ => "flowc.name",
            };
            attributes.push(KeyValue::new(key, name.to_string()));
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
            if let Some(v) = attribute(value) {
                attributes.push(KeyValue::new(name, v));
            }
        }
        let event = Event::new(kind.to_string(), at, attributes, 0);
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(parent)
            .or_default()
            .push(event);
    }

    fn span(&self, kind: SpanKindName, e: &Map<String, Value>) {
        let Some(id) = e.get("id").and_then(Value::as_u64) else {
            return;
        };
        let parent = e.get("parent").and_then(Value::as_u64);
        let name = str_of(e, "name").unwrap_or("");
        let status = str_of(e, "status").unwrap_or("ok");
        let mut attributes: Vec<KeyValue> = Vec::with_capacity(16);
        let mut span_kind = SpanKind::Internal;
        let num = |key: &str| e.get(key).and_then(Value::as_f64);
        let int = |key: &str| e.get(key).and_then(Value::as_i64);
        let title: String = match kind {
            SpanKindName::Run => {
                attributes.push(KeyValue::new("flowc.flow", name.to_string()));
                if let Some(run) = str_of(e, "run") {
                    attributes.push(KeyValue::new("flowc.run.id", run.to_string()));
                }
                attributes.push(KeyValue::new("flowc.run.status", status.to_string()));
                format!("run {name}")
            }
            SpanKindName::Flow => {
                attributes.push(KeyValue::new("flowc.flow", name.to_string()));
                format!("flow {name}")
            }
            SpanKindName::Step => {
                attributes.push(KeyValue::new("flowc.step.name", name.to_string()));
                if let Some(path) = str_of(e, "path") {
                    attributes.push(KeyValue::new("flowc.step.path", path.to_string()));
                }
                if let Some(remaining) = e.get("budget_remaining").and_then(Value::as_object) {
                    for (what, key) in [
                        ("cost", "flowc.budget.remaining.cost"),
                        ("tokens", "flowc.budget.remaining.tokens"),
                        ("steps", "flowc.budget.remaining.steps"),
                        ("tool_calls", "flowc.budget.remaining.tool_calls"),
                    ] {
                        if let Some(v) = remaining.get(what).and_then(attribute) {
                            attributes.push(KeyValue::new(key, v));
                        }
                    }
                }
                if let Some(fallback) = e.get("fallback").and_then(Value::as_bool) {
                    attributes.push(KeyValue::new("flowc.fallback", fallback));
                }
                format!("step {name}")
            }
            SpanKindName::Agent => {
                attributes.push(KeyValue::new("gen_ai.operation.name", "invoke_agent"));
                attributes.push(KeyValue::new("gen_ai.agent.name", name.to_string()));
                if let Some(m) = str_of(e, "model") {
                    attributes.push(KeyValue::new("gen_ai.request.model", m.to_string()));
                }
                if let Some(p) = str_of(e, "provider") {
                    attributes.push(KeyValue::new("gen_ai.provider.name", p.to_string()));
                }
                format!("invoke_agent {name}")
            }
            SpanKindName::Model => {
                span_kind = SpanKind::Client;
                let model = str_of(e, "model").unwrap_or(name);
                attributes.push(KeyValue::new("gen_ai.operation.name", "chat"));
                if let Some(p) = str_of(e, "provider") {
                    attributes.push(KeyValue::new("gen_ai.provider.name", p.to_string()));
                }
                attributes.push(KeyValue::new("gen_ai.request.model", model.to_string()));
                if let Some(m) = str_of(e, "response_model") {
                    attributes.push(KeyValue::new("gen_ai.response.model", m.to_string()));
                }
                if let Some(params) = e.get("parameters") {
                    if let Some(t) = params.get("max_tokens").and_then(Value::as_i64) {
                        attributes.push(KeyValue::new("gen_ai.request.max_tokens", t));
                    }
                    if let Some(t) = params.get("temperature").and_then(Value::as_f64) {
                        attributes.push(KeyValue::new("gen_ai.request.temperature", t));
                    }
                }
                if let Some(t) = int("input_tokens") {
                    attributes.push(KeyValue::new("gen_ai.usage.input_tokens", t));
                }
                if let Some(t) = int("output_tokens") {
                    attributes.push(KeyValue::new("gen_ai.usage.output_tokens", t));
                }
                if let Some(reasons) = e.get("finish_reasons").and_then(attribute) {
                    attributes.push(KeyValue::new("gen_ai.response.finish_reasons", reasons));
                }
                if let Some(c) = num("cost") {
                    attributes.push(KeyValue::new("flowc.cost", c));
                }
                if self.capture_content {
                    for (key, otel) in [
                        ("system", "gen_ai.system_instructions"),
                        ("prompt", "gen_ai.input.messages"),
                        ("response", "gen_ai.output.messages"),
                    ] {
                        if let Some(v) = e.get(key).filter(|v| !v.is_null()) {
                            attributes.push(KeyValue::new(otel, v.to_string()));
                        }
                    }
                }
                format!("chat {model}")
            }
            SpanKindName::Tool => {
                attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                attributes.push(KeyValue::new("gen_ai.tool.name", name.to_string()));
                attributes.push(KeyValue::new("gen_ai.tool.type", "function"));
                if self.capture_content {
                    for (key, otel) in [
                        ("arguments", "gen_ai.tool.call.arguments"),
                        ("result", "gen_ai.tool.call.result"),
                    ] {
                        if let Some(v) = e.get(key).filter(|v| !v.is_null()) {
                            attributes.push(KeyValue::new(otel, v.to_string()));
                        }
                    }
                }
                format!("execute_tool {name}")
            }
        };
        // Common to every span that has them.
        if matches!(kind, SpanKindName::Model | SpanKindName::Tool) {
            if let Some(step) = str_of(e, "step") {
                attributes.push(KeyValue::new("flowc.step.name", step.to_string()));
            }
            if let Some(a) = int("attempt") {
                attributes.push(KeyValue::new("flowc.attempt", a));
            }
        }
        if matches!(kind, SpanKindName::Run | SpanKindName::Flow) {
            if let Some(c) = num("cost") {
                attributes.push(KeyValue::new("flowc.cost", c));
            }
            if let Some(t) = int("tokens") {
                attributes.push(KeyValue::new("flowc.tokens", t));
            }
            if let Some(t) = int("steps") {
                attributes.push(KeyValue::new("flowc.steps", t));
            }
        }
        if let Some(class) = str_of(e, "class") {
            attributes.push(KeyValue::new("error.type", class.to_string()));
            attributes.push(KeyValue::new("flowc.retry.class", class.to_string()));
        }
        let events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .unwrap_or_default();
        if kind == SpanKindName::Step {
            let rejections = events.iter().filter(|e| e.name == "validation").count();
            let outcome = ValidationOutcome::of(status, rejections);
            attributes.push(KeyValue::new(
                "flowc.validation.rejections",
                rejections as i64,
            ));
            attributes.push(KeyValue::new("flowc.validation.outcome", outcome.as_str()));
        }
        let failed = !matches!(status, "ok" | "completed" | "waiting");
        let status = if failed {
            Status::error(str_of(e, "error").map_or_else(|| status.to_string(), str::to_string))
        } else {
            Status::Unset
        };
        let flags = TraceFlags::SAMPLED;
        let data = SpanData {
            span_context: SpanContext::new(
                self.trace,
                SpanId::from(id),
                flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: false,
            span_kind,
            name: Cow::Owned(title),
            start_time: time(e.get("start_ms")),
            end_time: time(e.get("end_ms")),
            attributes,
            dropped_attributes_count: 0,
            events: span_events(events),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        };
        self.ended.fetch_add(1, Ordering::Relaxed);
        self.processor.on_end(data);
    }

    /// Sends what is queued and stops the exporter's thread, waiting at most
    /// the export timeout (plus a moment for the last batch to be taken).
    /// Later calls return the first summary.
    pub fn finish(&self) -> ExportSummary {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(summary) = *finished {
            return summary;
        }
        let _ = self
            .processor
            .shutdown_with_timeout(self.timeout + Duration::from_millis(250));
        let spans = self.ended.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed).min(spans);
        let summary = ExportSummary {
            spans,
            delivered,
            dropped: spans - delivered,
        };
        *finished = Some(summary);
        summary
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The kinds of trace span that become OpenTelemetry spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpanKindName {
    Run,
    Flow,
    Step,
    Agent,
    Model,
    Tool,
}

impl SpanKindName {
    fn of(kind: &str) -> Option<SpanKindName> {
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

fn span_events(events: Vec<Event>) -> SpanEvents {
    let mut out = SpanEvents::default();
    out.events = events;
    out
}

fn str_of<'a>(e: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str)
}

/// Milliseconds since the epoch (as the trace writes them) as a time.
fn time(ms: Option<&Value>) -> SystemTime {
    let ms = ms.and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
    UNIX_EPOCH + Duration::from_micros((ms * 1e3) as u64)
}

/// A JSON value as an attribute value: scalars as themselves, lists of
/// strings as string arrays, anything else as its JSON text.
fn attribute(v: &Value) -> Option<opentelemetry::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            opentelemetry::Value::Array(opentelemetry::Array::String(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| StringValue::from(s.to_string()))
                    .collect(),
            ))
        }
        other => other.to_string().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_w3c() {
        let t = trace_id("r1");
        let header = traceparent(t, 0xabc, true);
        assert_eq!(header.len(), 55);
        assert!(header.starts_with("00-"));
        assert!(header.ends_with("-0000000000000abc-01"));
        assert_eq!(trace_id("r1"), t);
        assert_ne!(trace_id("r2"), t);
    }

    #[test]
    fn export_is_off_unless_asked_for() {
        let none = |_: &str| None;
        assert!(OtlpSettings::resolve(None, &none).is_none());
        assert!(OtlpSettings::resolve(Some("http://127.0.0.1:1"), &none).is_some());
        let env = |n: &str| match n {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://x".to_string()),
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("1500".to_string()),
            _ => None,
        };
        let s = OtlpSettings::resolve(None, &env).expect("on");
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert!(!s.capture_content);
        let off = |n: &str| match n {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://x".to_string()),
            "OTEL_SDK_DISABLED" => Some("true".to_string()),
            _ => None,
        };
        assert!(OtlpSettings::resolve(None, &off).is_none());
    }
}
