//! OTLP export of a run's trace: every span the JSON-lines trace closes
//! becomes an OpenTelemetry span, sent over OTLP/HTTP (protobuf) in batches
//! from a thread of its own.
//!
//! Spans keep the ids the trace gave them (a trace span id is 64 bits, like
//! an OpenTelemetry one), so the `traceparent` header an outgoing call
//! carries names the very span the backend receives; the trace id is a
//! function of the run id ([`trace_id`]).
//!
//! - `settings.rs`: `--otlp` and the standard `OTEL_*` variables;
//! - `context.rs`: the trace id and `traceparent`;
//! - `span.rs`: a trace event as an encoded OTLP span (GenAI conventions);
//! - `wire.rs`: the protobuf encoding of the few OTLP messages sent;
//! - `export.rs`: the bounded queue, the export thread, the HTTP client.

mod context;
mod export;
mod settings;
mod span;
mod wire;

pub use context::{trace_id, traceparent};
pub use export::{Export, ExportSummary};
pub use settings::{Batch, OtlpSettings, CAPTURE_CONTENT_VAR, DEFAULT_MAX_QUEUE};
