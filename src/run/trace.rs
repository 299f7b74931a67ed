//! Every decision of a run as structured events, one JSON object per line.
//! Spans (run, step, attempt, model_call, tool_call) carry `id`, `parent`,
//! start and end times, so they map onto OpenTelemetry spans; point events
//! (validation, budget, cut, gate) hang off a span.
//!
//! Secrets never reach the file: every line is scrubbed of the values of the
//! environment variables the program reads (API keys, tool tokens) before it
//! is written, whatever field they ended up in.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::secrets::Secrets;

pub type SpanId = u64;

pub struct Trace {
    run_id: String,
    started: Instant,
    next: AtomicU64,
    out: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
    /// Whether `out` is a file (it is from the start or never).
    writes_file: bool,
    /// Values that must never appear in the trace.
    secrets: Secrets,
    /// Every event written, for evals and tests (unless `keep` is off).
    /// Shared with the exporter, which encodes them on its own thread.
    events: Mutex<Vec<Arc<Value>>>,
    /// Whether `events` keeps them: a command writing its trace to a file
    /// has no use for a second copy in memory, which grows with every step.
    keep: bool,
    /// Called with every event as it is written (progress displays).
    observer: Option<Observer>,
    /// The run's OpenTelemetry trace id (see [`super::otel::trace_id`]).
    trace_id: u128,
    /// OTLP export of every span, when on.
    export: Option<super::otel::Export>,
    /// Why the trace file could not be written (the first failure); the run
    /// ends with it.
    failed: Mutex<Option<String>>,
    /// Woken at the first failed write, so the run stops at once.
    failure: tokio::sync::Notify,
}

/// Sees every trace event as it happens.
pub type Observer = Box<dyn Fn(&Value) + Send + Sync>;

/// A root span id chosen before any process of a run writes its trace
/// (`flowc submit`). Its low 32 bits are zero, which no [`Trace`]'s counter
/// (it starts at 1) produces, so it never collides with a process's spans;
/// it stays below 2^53 as they do.
pub fn root_span_id() -> SpanId {
    u64::from(fastrand::u32(1..1 << 20)) << 32
}

impl Trace {
    /// A trace written to `path` (created, with its folders), or kept in
    /// memory only when `path` is `None`; with `export`, every span is sent
    /// to an OTLP collector too. Where events may go is fixed here, before
    /// any span begins (`discard_events` only narrows it): a span keeps its
    /// name only when its end is recorded.
    pub fn new(
        run_id: &str,
        path: Option<&std::path::Path>,
        secrets: Vec<String>,
        observer: Option<Observer>,
        export: Option<super::otel::Export>,
    ) -> std::io::Result<Trace> {
        let out = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // Appending: a resumed run continues the same trace.
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(p)?;
                drop_torn_tail(&mut file)?;
                Some(std::io::BufWriter::new(file))
            }
            None => None,
        };
        let secrets = Secrets::new(secrets);
        Ok(Trace {
            run_id: run_id.to_string(),
            started: Instant::now(),
            // A resumed run appends to its trace from another process: ids
            // carry a per-process prefix so they never collide (and stay
            // below 2^53, exact in JSON readers).
            next: AtomicU64::new((u64::from(fastrand::u32(..1 << 20)) << 32) | 1),
            writes_file: out.is_some(),
            out: Mutex::new(out),
            secrets,
            events: Mutex::default(),
            keep: true,
            observer,
            trace_id: super::otel::trace_id(run_id),
            export,
            failed: Mutex::default(),
            failure: tokio::sync::Notify::new(),
        })
    }

    /// The W3C `traceparent` of span `span`, for an outgoing call made in it.
    pub fn traceparent(&self, span: SpanId) -> String {
        super::otel::traceparent(self.trace_id, span, self.export.is_some())
    }

    /// Waits (at most the export timeout) for the exporter to send what it
    /// holds; `None` when export is off.
    pub fn finish_export(&self) -> Option<super::otel::ExportSummary> {
        self.export.as_ref().map(super::otel::Export::finish)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Milliseconds since the Unix epoch: comparable across the processes of
    /// a resumed run.
    fn ms(&self) -> f64 {
        let _ = self.started;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (now * 1e6).round() / 1e3
    }

    /// Opens a span; close it with [`Trace::end`].
    pub fn begin(&self, parent: Option<SpanId>, kind: &'static str, name: &str) -> Span {
        Span {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            parent,
            kind,
            name: self.span_name(name),
            start_ms: self.ms(),
        }
    }

    /// A span's name, kept only where its end is recorded: a fan-out's
    /// branch opens two spans, and a run that records nothing need not copy
    /// their names.
    fn span_name(&self, name: &str) -> String {
        if self.records() {
            name.to_string()
        } else {
            String::new()
        }
    }

    /// Opens a span under an id chosen earlier: the root `run` span of a
    /// resumed run whose first process died before writing it (the id is in
    /// the run store, and the spans that process did write hang under it).
    pub fn begin_as(&self, id: SpanId, kind: &'static str, name: &str) -> Span {
        Span {
            id,
            parent: None,
            kind,
            name: self.span_name(name),
            start_ms: self.ms(),
        }
    }

    /// Whether an event written now goes anywhere: to the trace file, to
    /// memory, to an observer or to an exporter. A run with none of them
    /// (`flowc run --ephemeral` with no spinner on stderr, `--quiet` or not
    /// a terminal) has no use for its events, and a caller need not gather
    /// their details.
    pub fn records(&self) -> bool {
        self.keep || self.writes_file || self.observer.is_some() || self.export.is_some()
    }

    /// Closes a span with its outcome and details.
    pub fn end(&self, span: Span, status: &str, data: Map<String, Value>) {
        if !self.records() {
            return;
        }
        let mut event = json!({
            "run": self.run_id,
            "id": span.id,
            "parent": span.parent,
            "kind": span.kind,
            "name": span.name,
            "start_ms": span.start_ms,
            "end_ms": self.ms(),
            "status": status,
        });
        if let Value::Object(map) = &mut event {
            map.extend(data);
        }
        self.write(event);
    }

    /// A point event under `parent`.
    pub fn event(&self, parent: Option<SpanId>, kind: &str, name: &str, data: Map<String, Value>) {
        if !self.records() {
            return;
        }
        let mut event = json!({
            "run": self.run_id,
            "id": self.next.fetch_add(1, Ordering::Relaxed),
            "parent": parent,
            "kind": kind,
            "name": name,
            "at_ms": self.ms(),
        });
        if let Value::Object(map) = &mut event {
            map.extend(data);
        }
        self.write(event);
    }

    fn write(&self, mut event: Value) {
        // Scrubbed in place, before anything sees it: the file, memory, the
        // observer and the exporter all get the same redacted event, and no
        // event is printed only to be searched (most runs have a secret to
        // hide: every provider's key).
        self.secrets.scrub(&mut event);
        if let Some(out) = self.out.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // A trace that cannot be written is a run that cannot be
            // audited: the run stops with the error (see `failed`).
            // Straight into the buffer: `Display` would go through two
            // adapters for every token.
            let written = serde_json::to_writer(&mut *out, &event)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(e) = written {
                self.fail(e);
            }
        }
        if let Some(observe) = &self.observer {
            observe(&event);
        }
        let event = Arc::new(event);
        if let Some(export) = &self.export {
            export.record(&event);
        }
        if self.keep {
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event);
        }
    }

    /// Stops keeping events in memory (`Report.events` is then empty).
    pub fn discard_events(&mut self) {
        self.keep = false;
    }

    /// Writes out what is buffered; a failure is recorded like any other
    /// failed write.
    pub fn flush(&self) {
        let result = match self.out.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn fail(&self, e: std::io::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_none() {
            *failed = Some(e.to_string());
            // A stored permit: whoever waits later still wakes.
            self.failure.notify_one();
        }
    }

    /// Why the trace file could not be written, if it could not.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves at the first failed write.
    pub async fn failure(&self) {
        self.failure.notified().await;
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| Value::clone(e))
            .collect()
    }

    /// Every event so far, moved out of the trace (which keeps none): the
    /// run's report takes them without copying.
    pub fn take_events(&self) -> Vec<Value> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            // Still shared only while an exporter that gave up holds it.
            .map(|e| Arc::try_unwrap(e).unwrap_or_else(|e| Value::clone(&e)))
            .collect()
    }
}

/// An open span.
#[derive(Debug)]
pub struct Span {
    pub id: SpanId,
    pub parent: Option<SpanId>,
    kind: &'static str,
    name: String,
    start_ms: f64,
}

/// `{"a": 1, …}` as a `Map`, for event details.
#[macro_export]
macro_rules! fields {
    ($($key:literal : $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = serde_json::Map::new();
        $( map.insert($key.to_string(), serde_json::json!($value)); )*
        map
    }};
}

/// The id of the earliest-started root `run` span in a trace file (the
/// first process of a resumed run to have finished its span), if any.
pub fn root_span(path: &std::path::Path) -> Option<SpanId> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["kind"] == "run" && e["parent"].is_null())
        .filter_map(|e| Some((e["start_ms"].as_f64()?, e["id"].as_u64()?)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| id)
}

/// How many levels [`render_tree`] indents: more than any run nests (flow
/// calls are at most 32 deep, G003), fewer than a hand-made file may.
const MAX_INDENT: usize = 64;

/// Renders a trace file as an indented tree with timings and cost.
pub fn render_tree(events: &[Value]) -> String {
    use std::borrow::Cow;
    use std::collections::{BTreeMap, HashMap};
    // A span written twice under one id is shown once, over the time of
    // both: the root of a run whose first process was killed after writing
    // it and before the store recorded so, which the resume writes again.
    let mut spans: Vec<Cow<'_, Value>> = Vec::with_capacity(events.len());
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for e in events {
        let id = e["id"].as_u64().filter(|_| e.get("start_ms").is_some());
        match id.and_then(|id| seen.get(&id).copied()) {
            Some(i) => {
                let first = spans[i]["start_ms"].as_f64();
                let mut later = e.clone();
                if let (Some(a), Some(b)) = (first, e["start_ms"].as_f64()) {
                    later["start_ms"] = serde_json::json!(a.min(b));
                }
                spans[i] = Cow::Owned(later);
            }
            None => {
                if let Some(id) = id {
                    seen.insert(id, spans.len());
                }
                spans.push(Cow::Borrowed(e));
            }
        }
    }
    let mut children: BTreeMap<Option<u64>, Vec<&Value>> = BTreeMap::new();
    for e in &spans {
        children.entry(e["parent"].as_u64()).or_default().push(e);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| {
            let t = |e: &Value| {
                e["start_ms"]
                    .as_f64()
                    .or(e["at_ms"].as_f64())
                    .unwrap_or(0.0)
            };
            t(a).total_cmp(&t(b))
                .then(a["id"].as_u64().cmp(&b["id"].as_u64()))
        });
    }
    // Depth first, with the path on the heap: a trace file is input, and a
    // hand-made one may nest as deep as it likes, or name an event as its own
    // ancestor; an event is drawn once.
    let mut out = String::new();
    let mut drawn: std::collections::HashSet<*const Value> = std::collections::HashSet::new();
    let mut path: Vec<std::slice::Iter<'_, &Value>> = Vec::new();
    if let Some(roots) = children.get(&None) {
        path.push(roots.iter());
    }
    while let Some(list) = path.last_mut() {
        let Some(&e) = list.next() else {
            path.pop();
            continue;
        };
        if !drawn.insert(e as *const Value) {
            continue;
        }
        // Indented up to a depth a terminal shows; deeper lines say their
        // depth, so a deep file's tree grows with its events, not their square.
        let depth = path.len() - 1;
        let mut indent = "  ".repeat(depth.min(MAX_INDENT));
        if depth > MAX_INDENT {
            indent.push_str(&format!("(depth {depth}) "));
        }
        let kind = e["kind"].as_str().unwrap_or("?");
        let name = e["name"].as_str().unwrap_or("");
        let mut line = format!("{indent}{kind} {name}");
        if let (Some(s), Some(t)) = (e["start_ms"].as_f64(), e["end_ms"].as_f64()) {
            line.push_str(&format!("  {:.1} ms", t - s));
        }
        if let Some(decision) = e["decision"].as_str() {
            line.push_str(&format!("  [{decision}]"));
        }
        if let Some(status) = e["status"].as_str() {
            line.push_str(&format!("  [{status}]"));
        }
        if let Some(tokens) = e["tokens"].as_u64() {
            line.push_str(&format!("  {tokens} tokens"));
        }
        if let Some(cost) = e["cost"].as_f64() {
            if cost > 0.0 {
                line.push_str(&format!("  ${cost:.5}"));
            }
        }
        if let Some(err) = e["error"].as_str() {
            line.push_str(&format!("  — {err}"));
        }
        out.push_str(&line);
        out.push('\n');
        if let Some(list) = e["id"].as_u64().and_then(|id| children.get(&Some(id))) {
            path.push(list.iter());
        }
    }
    out
}

/// Cuts off a last line that has no newline: what a process killed while
/// writing an event left behind. Appending after it would glue the next
/// process's first event onto the torn one and make both unreadable.
fn drop_torn_tail(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(at) = buf.iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    // No newline at all: the only line is torn.
    if len > 0 {
        file.set_len(0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_and_memory_get_the_same_scrubbed_event() {
        let dir = std::env::temp_dir().join(format!("flowc-scrub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("trace.jsonl");
        let _ = std::fs::remove_file(&path);
        // A key JSON prints escaped, and one made of digits only.
        let (quoted, digits) = ("k\"e\\y-7f3a", "9876543");
        let trace = Trace::new(
            "r",
            Some(&path),
            vec![quoted.into(), digits.into()],
            None,
            None,
        )
        .expect("trace");
        let span = trace.begin(None, "tool_call", "t");
        let mut data = Map::new();
        data.insert(
            "result".into(),
            json!({"echo": format!("got {quoted}"), "n": 19876543210u64}),
        );
        trace.end(span, "ok", data);
        trace.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        let line: Value = serde_json::from_str(text.trim_end()).expect("the line is JSON");
        assert_eq!(
            line["result"],
            json!({"echo": "got [redacted]", "n": "[redacted]"})
        );
        assert_eq!(trace.events(), vec![line]);
        let escaped = serde_json::to_string(quoted).expect("prints");
        for secret in [quoted, escaped.trim_matches('"'), digits] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let dir = std::env::temp_dir().join(format!("flowc-torn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("trace.jsonl");
        for (before, kept) in [
            ("{\"id\":1}\n{\"id\":2,\"na", "{\"id\":1}\n"),
            ("{\"id\":1}\n", "{\"id\":1}\n"),
            ("{\"id\":2,\"na", ""),
            ("", ""),
        ] {
            std::fs::write(&path, before).expect("write");
            let trace = Trace::new("r", Some(&path), Vec::new(), None, None).expect("trace");
            trace.event(None, "note", "n", Map::new());
            trace.flush();
            drop(trace);
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.starts_with(kept), "{before:?} → {text:?}");
            let rest = &text[kept.len()..];
            assert_eq!(rest.lines().count(), 1, "{text:?}");
            for line in text.lines() {
                serde_json::from_str::<Value>(line).expect("every line is an event");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_span_written_twice_is_shown_once_over_both_times() {
        let events = [
            json!({"id": 1, "parent": null, "kind": "run", "name": "f", "start_ms": 10.0, "end_ms": 20.0, "status": "interrupted"}),
            json!({"id": 2, "parent": 1, "kind": "step", "name": "a", "start_ms": 11.0, "end_ms": 12.0, "status": "ok"}),
            json!({"id": 1, "parent": null, "kind": "run", "name": "f", "start_ms": 30.0, "end_ms": 45.0, "status": "completed"}),
            json!({"id": 3, "parent": 1, "kind": "step", "name": "b", "start_ms": 31.0, "end_ms": 33.0, "status": "ok"}),
        ];
        assert_eq!(
            render_tree(&events),
            "run f  35.0 ms  [completed]\n  step a  1.0 ms  [ok]\n  step b  2.0 ms  [ok]\n"
        );
    }

    /// A trace file is input: a chain of 200,000 spans each inside the one
    /// before, drawn on a test thread's 2 MiB stack, and an event that names
    /// itself as its parent, drawn once.
    #[test]
    fn a_deep_or_looping_trace_file_is_drawn_without_recursion() {
        let deep: Vec<Value> = (0..200_000u64)
            .map(|i| {
                let parent = if i == 0 { Value::Null } else { json!(i - 1) };
                json!({"id": i, "parent": parent, "kind": "step", "name": "s", "start_ms": 0.0, "end_ms": 1.0})
            })
            .collect();
        let tree = render_tree(&deep);
        assert_eq!(tree.lines().count(), 200_000);
        assert!(tree.ends_with(&format!(
            "{}(depth 199999) step s  1.0 ms\n",
            "  ".repeat(64)
        )));
        let looping = [
            json!({"id": 5, "parent": null, "kind": "note", "name": "n", "at_ms": 1.0}),
            json!({"id": 5, "parent": 5, "kind": "step", "name": "s", "start_ms": 2.0, "end_ms": 3.0}),
        ];
        assert_eq!(render_tree(&looping), "note n\n  step s  1.0 ms\n");
    }
}
