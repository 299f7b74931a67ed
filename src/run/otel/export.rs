//! A run's OTLP export: the bounded queue the run's thread hands its trace
//! events to, and the thread that encodes them (see [`super::span`]) and
//! sends them to the collector in batches over OTLP/HTTP (protobuf).
//!
//! The run's share of export is one reference-count increment and a push
//! per event: encoding, building requests and every network wait happen on
//! the export thread. Export never slows or fails a run: a full queue drops
//! spans, and the end of a run waits at most the export timeout (plus a
//! moment for the last batch to be taken). What did not reach the
//! collector is counted and reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::settings::{Batch, OtlpSettings};
use super::span::{PendingEvents, SpanKindName, SpanWriter};
use super::wire;
use crate::run::error::SetupError;

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

/// A run's OTLP export.
pub struct Export {
    shared: Arc<Shared>,
    batch: Batch,
    timeout: Duration,
    /// Disconnected when the export thread is done.
    done: Mutex<Option<mpsc::Receiver<()>>>,
    finished: Mutex<Option<ExportSummary>>,
}

/// What the run's thread and the export thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the export thread: a batch is full, or the run is over.
    wake: Condvar,
    /// Spans the collector accepted.
    delivered: AtomicU64,
}

#[derive(Default)]
struct Queue {
    /// Trace events waiting to be encoded, in the order they happened:
    /// spans in the order they ended, point events before their span.
    events: Vec<Arc<Value>>,
    /// How many of `events` are spans.
    spans: usize,
    /// Spans handed to export, queued or dropped.
    ended: u64,
    /// The run is over: send what is left, then stop.
    closing: bool,
    /// The run stopped waiting: send nothing more.
    abandoned: bool,
}

/// Where to send, and what every request carries.
struct Target {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    /// The encoded `Resource` and `InstrumentationScope`.
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Export {
    /// Starts the export thread for the run with trace id `trace`; a URL,
    /// header or resource attribute that cannot be used is an error.
    pub fn start(settings: &OtlpSettings, trace: u128) -> Result<Export, SetupError> {
        let bad =
            |what: String| SetupError::Start(format!("cannot start the OTLP exporter: {what}"));
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| bad(format!("`{}` is not a URL ({e})", settings.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("`{url}` is not an http or https URL")));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-protobuf"),
        );
        for (name, value) in settings.header_pairs()? {
            let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("`{name}` is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("the value of header `{name}` is not valid")))?;
            headers.insert(key, value);
        }
        let mut resource = Vec::new();
        for (key, value) in settings.resource()? {
            wire::attr_str(&mut resource, 1, &key, &value);
        }
        let mut scope = Vec::new();
        wire::bytes(&mut scope, 1, b"flowc");
        wire::bytes(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
        let target = Target {
            url,
            headers,
            timeout: settings.timeout,
            resource,
            scope,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            delivered: AtomicU64::new(0),
        });
        let (done_tx, done) = mpsc::channel::<()>();
        let batch = settings.batch;
        let thread_shared = shared.clone();
        let writer = SpanWriter::new(trace, settings.capture_content);
        std::thread::Builder::new()
            .name("flowc-otlp".into())
            .spawn(move || {
                send_loop(&thread_shared, &target, &writer, batch);
                drop(done_tx);
            })
            .map_err(|e| bad(format!("cannot start its thread ({e})")))?;
        Ok(Export {
            shared,
            batch,
            timeout: settings.timeout,
            done: Mutex::new(Some(done)),
            finished: Mutex::default(),
        })
    }

    /// Takes one trace event (already scrubbed): queued for the export
    /// thread, which encodes a closed span with the point events that
    /// happened in it.
    pub fn record(&self, event: &Arc<Value>) {
        let is_span = event
            .get("kind")
            .and_then(Value::as_str)
            .and_then(SpanKindName::of)
            .is_some();
        let mut queue = lock(&self.shared.queue);
        if is_span {
            queue.ended += 1;
        }
        // A full queue drops the event: the run never waits for export.
        if queue.spans >= self.batch.max_queue || queue.closing {
            return;
        }
        queue.events.push(Arc::clone(event));
        if is_span {
            queue.spans += 1;
            // Woken once per full batch, not per span.
            if queue.spans == self.batch.max_export {
                self.shared.wake.notify_one();
            }
        }
    }

    /// Sends what is queued and stops the export thread, waiting at most
    /// the export timeout (plus a moment for the last batch to be taken).
    /// Later calls return the first summary.
    pub fn finish(&self) -> ExportSummary {
        let mut finished = lock(&self.finished);
        if let Some(summary) = *finished {
            return summary;
        }
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        if let Some(done) = lock(&self.done).take() {
            // Disconnected when the thread is done; a timeout leaves it to
            // finish (or time out) its last request on its own.
            let _ = done.recv_timeout(self.timeout + Duration::from_millis(250));
        }
        let spans = {
            let mut queue = lock(&self.shared.queue);
            queue.abandoned = true;
            queue.ended
        };
        let delivered = self.shared.delivered.load(Ordering::Relaxed).min(spans);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The export thread: encodes and sends a batch when one is full, what is
/// queued every schedule delay, and what is left when the run is over.
fn send_loop(shared: &Shared, target: &Target, writer: &SpanWriter, batch: Batch) {
    // Swapped with the queue's, so both keep their capacity.
    let mut events = Vec::new();
    let mut bytes = Vec::new();
    // Point events waiting for their span to end, by span id.
    let mut pending: HashMap<u64, PendingEvents> = HashMap::new();
    let mut queue = lock(&shared.queue);
    loop {
        let deadline = Instant::now() + batch.delay;
        while !queue.closing && queue.spans < batch.max_export {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            queue = shared
                .wake
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if queue.abandoned || (queue.closing && queue.events.is_empty()) {
            return;
        }
        if queue.events.is_empty() {
            continue;
        }
        std::mem::swap(&mut queue.events, &mut events);
        queue.spans = 0;
        drop(queue);
        let mut spans = 0usize;
        for event in events.drain(..) {
            spans += encode(writer, &event, &mut pending, &mut bytes);
            if spans == batch.max_export {
                shared
                    .delivered
                    .fetch_add(send(target, &bytes, spans as u64), Ordering::Relaxed);
                bytes.clear();
                spans = 0;
                if lock(&shared.queue).abandoned {
                    return;
                }
            }
        }
        if spans > 0 {
            shared
                .delivered
                .fetch_add(send(target, &bytes, spans as u64), Ordering::Relaxed);
            bytes.clear();
        }
        queue = lock(&shared.queue);
    }
}

/// Encodes trace event `event` into `out` when it is a closed span (with
/// the point events `pending` holds for it), or keeps a point event in
/// `pending` for its span; how many spans were written (0 or 1).
fn encode(
    writer: &SpanWriter,
    event: &Value,
    pending: &mut HashMap<u64, PendingEvents>,
    out: &mut Vec<u8>,
) -> usize {
    let Some(e) = event.as_object() else {
        return 0;
    };
    let Some(kind) = e.get("kind").and_then(Value::as_str) else {
        return 0;
    };
    let Some(span) = SpanKindName::of(kind) else {
        if let Some(parent) = e.get("parent").and_then(Value::as_u64) {
            writer.event(kind, e, pending.entry(parent).or_default());
        }
        return 0;
    };
    let Some(id) = e.get("id").and_then(Value::as_u64) else {
        return 0;
    };
    let events = if pending.is_empty() {
        None
    } else {
        pending.remove(&id)
    };
    writer.span(span, id, e, events.as_ref(), out);
    1
}

/// Sends `count` encoded spans in one request; how many the collector
/// accepted.
fn send(target: &Target, spans: &[u8], count: u64) -> u64 {
    let Some(client) = client() else {
        return 0;
    };
    let body = wire::request(&target.resource, &target.scope, spans);
    let response = client
        .post(target.url.clone())
        .headers(target.headers.clone())
        .timeout(target.timeout)
        .body(body)
        .send();
    let Ok(response) = response else {
        return 0;
    };
    if !response.status().is_success() {
        return 0;
    }
    // A collector that took some spans and not others says so in the body
    // (`partial_success`); a body that is not a response is no evidence of
    // a rejection.
    let rejected = response
        .bytes()
        .ok()
        .and_then(|b| wire::rejected_spans(&b))
        .unwrap_or(0);
    count.saturating_sub(rejected)
}

/// One HTTP client for every run of the process (its connection pool and
/// TLS set-up are made once); `None` when it cannot be built.
fn client() -> Option<&'static reqwest::blocking::Client> {
    static CLIENT: OnceLock<Option<reqwest::blocking::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .user_agent(concat!(
                    "flowc/",
                    env!("CARGO_PKG_VERSION"),
                    " (OTLP exporter)"
                ))
                .build()
                .ok()
        })
        .as_ref()
}
