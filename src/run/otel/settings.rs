//! Where and how to export, from `--otlp` and the standard `OTEL_*`
//! variables.

use std::time::Duration;

use crate::run::error::SetupError;

/// Turns prompt and completion content on in exported spans (the GenAI
/// conventions' opt-in).
pub const CAPTURE_CONTENT_VAR: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// The export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans held for export when `OTEL_BSP_MAX_QUEUE_SIZE` does not say. Not
/// the specification's 2,048: a 10,000-step run ends 20,000 spans faster
/// than one export request answers, so a queue of 2,048 dropped spans of
/// healthy runs. The queue holds references to events the run's trace
/// keeps anyway, so its size costs a pointer per span.
pub const DEFAULT_MAX_QUEUE: usize = 65_536;

/// Where and how to export; `None` from [`OtlpSettings::resolve`] means
/// export is off.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// The full traces URL (`…/v1/traces`).
    pub url: String,
    /// Export prompts, completions, tool arguments and results.
    pub capture_content: bool,
    /// How long one export request may take (and so the end of a run).
    pub timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
    /// (variable, text), read when export starts so a bad one is an error.
    pub headers: Vec<(&'static str, String)>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, read when export starts.
    pub resource_attributes: Option<String>,
    /// `OTEL_SERVICE_NAME`; `flowc` unless set here or in the attributes.
    pub service_name: Option<String>,
    /// The batching of exports.
    pub batch: Batch,
}

/// How spans are batched (the `OTEL_BSP_*` variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Spans held at most; more are dropped (and counted).
    pub max_queue: usize,
    /// Spans per export request at most.
    pub max_export: usize,
    /// How long a span waits at most before it is sent.
    pub delay: Duration,
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
        let base = |url: &str| format!("{}/v1/traces", url.trim().trim_end_matches('/'));
        let url = match flag.map(str::trim).filter(|f| !f.is_empty()) {
            Some(flag) => base(flag),
            None => match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(url) => url.trim().to_string(),
                None => base(&set("OTEL_EXPORTER_OTLP_ENDPOINT")?),
            },
        };
        let number = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| set(n))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let timeout = number(&[
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ])
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let max_queue =
            number(&["OTEL_BSP_MAX_QUEUE_SIZE"]).map_or(DEFAULT_MAX_QUEUE, |n| n.max(1) as usize);
        let batch = Batch {
            max_queue,
            max_export: number(&["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"])
                .map_or(512, |n| n.max(1) as usize)
                .min(max_queue),
            delay: number(&["OTEL_BSP_SCHEDULE_DELAY"])
                .map_or(Duration::from_secs(5), Duration::from_millis),
        };
        let headers = [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ]
        .into_iter()
        .filter_map(|name| Some((name, set(name)?)))
        .collect();
        Some(OtlpSettings {
            url,
            capture_content: set(CAPTURE_CONTENT_VAR)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            timeout,
            headers,
            resource_attributes: set("OTEL_RESOURCE_ATTRIBUTES"),
            service_name: set("OTEL_SERVICE_NAME").map(|s| s.trim().to_string()),
            batch,
        })
    }

    /// The headers each export sends; a later variable's value for a name
    /// replaces an earlier one's.
    pub fn header_pairs(&self) -> Result<Vec<(String, String)>, SetupError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (var, text) in &self.headers {
            for (name, value) in pairs(var, text)? {
                out.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                out.push((name, value));
            }
        }
        Ok(out)
    }

    /// The resource's attributes: `OTEL_RESOURCE_ATTRIBUTES`, with
    /// `service.name` from `OTEL_SERVICE_NAME` (or `flowc`), and the
    /// `telemetry.sdk.*` that say what exported them.
    pub fn resource(&self) -> Result<Vec<(String, String)>, SetupError> {
        let mut out = match &self.resource_attributes {
            Some(text) => pairs("OTEL_RESOURCE_ATTRIBUTES", text)?,
            None => Vec::new(),
        };
        if let Some(name) = &self.service_name {
            out.retain(|(k, _)| k != "service.name");
            out.push(("service.name".into(), name.clone()));
        } else if !out.iter().any(|(k, _)| k == "service.name") {
            out.push(("service.name".into(), "flowc".into()));
        }
        for (key, value) in [
            ("telemetry.sdk.name", "flowc"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ] {
            if !out.iter().any(|(k, _)| k == key) {
                out.push((key.into(), value.into()));
            }
        }
        Ok(out)
    }
}

/// `key=value,key2=value2` (values percent-encoded), as the OTLP variables
/// spell lists; an entry without `=` or a key that is empty is an error
/// naming the variable.
fn pairs(var: &str, text: &str) -> Result<Vec<(String, String)>, SetupError> {
    let bad = |entry: &str, why: &str| {
        SetupError::Start(format!(
            "{var}: `{entry}` {why} (expected key=value,key2=value2)"
        ))
    };
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(bad(entry, "has no `=`"));
        };
        let key = percent_decode(key.trim()).ok_or_else(|| bad(entry, "is not valid"))?;
        let value = percent_decode(value.trim()).ok_or_else(|| bad(entry, "is not valid"))?;
        if key.is_empty() {
            return Err(bad(entry, "has no key"));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn export_is_off_unless_asked_for() {
        let none = |_: &str| None;
        assert!(OtlpSettings::resolve(None, &none).is_none());
        let flag = OtlpSettings::resolve(Some("http://127.0.0.1:1/"), &none).expect("on");
        assert_eq!(flag.url, "http://127.0.0.1:1/v1/traces");
        assert_eq!(flag.batch.max_queue, DEFAULT_MAX_QUEUE);
        let env = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
        ]);
        let s = OtlpSettings::resolve(None, &env).expect("on");
        assert_eq!(s.url, "http://x/v1/traces");
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.batch.max_queue, 100);
        assert_eq!(s.batch.max_export, 100, "a batch never exceeds the queue");
        assert!(!s.capture_content);
        let traces = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://y/custom"),
        ]);
        let s = OtlpSettings::resolve(None, &traces).expect("on");
        assert_eq!(s.url, "http://y/custom", "the traces URL is used as is");
        let off = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(OtlpSettings::resolve(None, &off).is_none());
    }

    #[test]
    fn headers_and_resource_attributes_are_read_and_checked() {
        let env = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20abc, x-team = a",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Team=b"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ]);
        let s = OtlpSettings::resolve(None, &env).expect("on");
        let headers = s.header_pairs().expect("valid");
        assert_eq!(
            headers,
            [
                ("Authorization".to_string(), "Basic abc".to_string()),
                ("X-Team".to_string(), "b".to_string()),
            ]
        );
        let resource = s.resource().expect("valid");
        assert!(resource.contains(&("service.name".into(), "flowc".into())));
        assert!(resource.contains(&("deployment.environment".into(), "prod".into())));

        let named = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "b"),
        ]);
        let s = OtlpSettings::resolve(None, &named).expect("on");
        let resource = s.resource().expect("valid");
        assert_eq!(
            resource
                .iter()
                .filter(|(k, _)| k == "service.name")
                .collect::<Vec<_>>(),
            [&("service.name".to_string(), "b".to_string())]
        );

        let broken = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key"),
        ]);
        let s = OtlpSettings::resolve(None, &broken).expect("on");
        let error = s.header_pairs().expect_err("no `=`").to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_HEADERS: `api-key` has no `=`"),
            "{error}"
        );
    }
}
