//! The values a trace must never hold (API keys, tool tokens: every
//! environment variable the program reads), and their removal from an
//! event before it goes anywhere.
//!
//! Scrubbing walks the event's tree rather than its printed text: a run
//! keeping its events in memory does not print each one to search it, and a
//! secret is found as it is, not as JSON escapes it (a key holding a quote
//! or a backslash is printed escaped, where a search of the text missed it).

use serde_json::{Map, Value};

/// What a secret becomes.
const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed: they would match everywhere
/// (`"1"`, `"true"`), and hide nothing worth hiding.
const SHORTEST: usize = 4;

#[derive(Debug)]
pub struct Secrets {
    /// Longest first, so a secret holding another is scrubbed whole.
    texts: Vec<String>,
    /// Whether some secret could be part of a printed number (digits, signs,
    /// points and exponents only); if none could, numbers are not printed.
    numeric: bool,
}

impl Secrets {
    pub fn new(texts: Vec<String>) -> Secrets {
        let mut texts: Vec<String> = texts.into_iter().filter(|s| s.len() >= SHORTEST).collect();
        texts.sort_by_key(|s| std::cmp::Reverse(s.len()));
        texts.dedup();
        let numeric = texts.iter().any(|s| {
            s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        });
        Secrets { texts, numeric }
    }

    /// Replaces every secret in `value` with [`REDACTED`]: within strings
    /// and object keys, and a number whose digits hold one becomes the
    /// string [`REDACTED`] (the event stays valid JSON). Iterative: an event
    /// carries step values of any depth.
    pub fn scrub(&self, value: &mut Value) {
        if self.texts.is_empty() {
            return;
        }
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(text) => {
                    if let Some(clean) = self.redacted(text) {
                        *text = clean;
                    }
                }
                Value::Number(n) if self.numeric => {
                    let printed = n.to_string();
                    if self.texts.iter().any(|s| printed.contains(s.as_str())) {
                        *value = Value::String(REDACTED.into());
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    self.scrub_keys(map);
                    stack.extend(map.values_mut());
                }
                _ => {}
            }
        }
    }

    /// `text` with its secrets replaced, or `None` when it holds none.
    fn redacted(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for secret in &self.texts {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(secret.as_str()) {
                out = Some(current.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    fn scrub_keys(&self, map: &mut Map<String, Value>) {
        let dirty: Vec<(String, String)> = map
            .keys()
            .filter_map(|k| self.redacted(k).map(|clean| (k.clone(), clean)))
            .collect();
        for (key, clean) in dirty {
            if let Some(v) = map.remove(&key) {
                map.insert(clean, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_leave_strings_keys_and_numbers_and_the_event_stays_json() {
        let secrets = Secrets::new(vec![
            "sk-live-1234".into(),
            "sk-live-12345678".into(),
            "a\"b\\c".into(),
            "98765".into(),
            "ab".into(),
        ]);
        let mut event = json!({
            "prompt": "key sk-live-12345678 and sk-live-1234!",
            "sk-live-1234": {"nested": ["x a\"b\\c y", 1098765.5, 42, true, null]},
            "latency_ms": 12.5,
            "short": "ab stays",
        });
        secrets.scrub(&mut event);
        assert_eq!(
            event,
            json!({
                "prompt": "key [redacted] and [redacted]!",
                "[redacted]": {"nested": ["x [redacted] y", "[redacted]", 42, true, null]},
                "latency_ms": 12.5,
                "short": "ab stays",
            })
        );
    }

    #[test]
    fn a_deep_value_is_scrubbed_without_recursion() {
        let secrets = Secrets::new(vec!["hunter22".into()]);
        let mut deep = json!("the hunter22 key");
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        secrets.scrub(&mut deep);
        let mut inner = &deep;
        while let Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, &json!("the [redacted] key"));
        // Dropped a level at a time: serde_json's own drop recurses.
        let mut v = deep;
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn no_secrets_no_change() {
        let mut event = json!({"a": "sk-1234", "n": 1234});
        Secrets::new(Vec::new()).scrub(&mut event);
        assert_eq!(event, json!({"a": "sk-1234", "n": 1234}));
    }
}
