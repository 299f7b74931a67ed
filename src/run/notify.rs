//! Announcing a gate that waits for a person (`notify webhook …`), and its
//! escalation: a Slack-compatible incoming-webhook POST (`{"text": …}`)
//! with a link to the gate in the inbox.
//!
//! A notification never fails the run: it is sent on a task of its own,
//! retried a bounded number of times with backoff, and its outcome goes to
//! the trace (and, when it failed, to stderr). The store decides that each
//! stage is sent at most once per gate instance (`Store::claim_notice`), so
//! a resume or another worker never announces a gate twice.
//!
//! The address may be a secret (a Slack webhook URL is one): it never
//! appears in a trace event or a message, only how it was declared
//! (`env.SLACK_HOOK`, or the URL's scheme and host).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::trace::{SpanId, Trace};
use crate::exec::{Notify, NotifyKind, NotifyTarget};
use crate::store::NoticeStage;

/// The inbox's address when `FLOWC_INBOX_URL` is not set: where `flowc
/// serve` listens by default.
pub const DEFAULT_INBOX_URL: &str = "http://127.0.0.1:8080";

/// Attempts per notification, and the pause before the second (doubled
/// before each later one): at most 0.5 + 1 + 2 s of waiting.
const ATTEMPTS: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// One attempt's limit: a receiver that hangs does not hold the run's end.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a notification was not delivered.
#[derive(Clone, Debug, PartialEq)]
pub enum NoticeError {
    /// Its `env.` address is not set (the name, never a value).
    Unset(String),
    /// No answer: refused, timed out, broken (the text names no URL).
    Transport(String),
    /// The receiver answered with this non-2xx status.
    Status(u16),
}

impl std::fmt::Display for NoticeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoticeError::Unset(name) => write!(f, "the environment variable {name} is not set"),
            NoticeError::Transport(e) => write!(f, "{e}"),
            NoticeError::Status(code) => write!(f, "the receiver answered HTTP {code}"),
        }
    }
}

/// A notification ready to send: where, what, and how to name it safely.
pub struct Notice {
    pub kind: NotifyKind,
    /// The address (may be a secret: never shown).
    url: String,
    /// How the address was declared, safe to show.
    pub target: String,
    pub stage: NoticeStage,
    pub gate: String,
    pub body: Value,
}

/// What a gate's announcement says, and where its inbox page is.
pub struct GateNotice<'a> {
    pub run_id: &'a str,
    pub flow: &'a str,
    pub gate: &'a str,
    pub key: &'a str,
    /// The inbox's base URL (`FLOWC_INBOX_URL`).
    pub inbox: &'a str,
    /// For an escalation: when the gate is rejected unless decided.
    pub deadline: Option<f64>,
}

/// How a target was declared, safe to show: `env.NAME`, or the URL's scheme
/// and host (a webhook's path is often its secret).
pub fn describe(target: &NotifyTarget) -> String {
    match target {
        NotifyTarget::Env(name) => format!("env.{name}"),
        NotifyTarget::Url(url) => {
            let host_end = url
                .find("://")
                .map(|i| i + 3)
                .and_then(|start| {
                    url[start..]
                        .find(['/', '?', '#'])
                        .map(|j| start + j)
                        .or(Some(url.len()))
                })
                .unwrap_or(0);
            let shown = super::http::redact_url(&url[..host_end]);
            if host_end < url.len() {
                format!("{shown}/…")
            } else {
                shown
            }
        }
    }
}

/// The gate's card in the inbox (`flowc serve` gives each card the id
/// `gate-RUN-KEY`): `BASE/inbox#gate-RUN-KEY`, percent-encoded (a key holds
/// `/`, `>`, `[` …; a browser decodes the fragment to find the card).
pub fn inbox_link(inbox: &str, run_id: &str, key: &str) -> String {
    format!(
        "{}/inbox#gate-{}-{}",
        inbox.trim_end_matches('/'),
        percent_encode(run_id),
        percent_encode(key)
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Notice {
    /// The notice for `notify` at `stage`, its address read from the
    /// environment if it is an `env.` target; `Err` names what is missing
    /// (without any value).
    pub fn new(
        notify: &Notify,
        stage: NoticeStage,
        about: &GateNotice<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Notice, NoticeError> {
        let target = describe(&notify.target);
        let url = match &notify.target {
            NotifyTarget::Url(u) => u.clone(),
            NotifyTarget::Env(name) => match env(name) {
                Some(v) if !v.trim().is_empty() => v.trim().to_string(),
                _ => return Err(NoticeError::Unset(name.clone())),
            },
        };
        let link = inbox_link(about.inbox, about.run_id, about.key);
        let text = match (stage, about.deadline) {
            (NoticeStage::Escalated, Some(deadline)) => format!(
                "Escalated: approval gate `{}` in flow `{}` (run {}) has waited past its timeout; it is rejected at {} UTC unless someone decides. Review: {link}",
                about.gate,
                about.flow,
                about.run_id,
                utc_time(deadline)
            ),
            (NoticeStage::Escalated, None) => format!(
                "Escalated: approval gate `{}` in flow `{}` (run {}) has waited past its timeout. Review: {link}",
                about.gate, about.flow, about.run_id
            ),
            _ => format!(
                "Approval needed: gate `{}` in flow `{}` (run {}) is waiting for a decision. Review: {link}",
                about.gate, about.flow, about.run_id
            ),
        };
        Ok(Notice {
            kind: notify.kind,
            url,
            target,
            stage,
            gate: about.gate.to_string(),
            body: serde_json::json!({ "text": text }),
        })
    }
}

fn utc_time(seconds: f64) -> String {
    let secs = seconds.max(0.0) as i64;
    let (y, m, d) = super::http::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        t / 3600,
        (t % 3600) / 60
    )
}

/// What the stage is called in the trace.
pub fn stage_name(stage: NoticeStage) -> &'static str {
    match stage {
        NoticeStage::None => "none",
        NoticeStage::Pending => "pending",
        NoticeStage::Escalated => "escalated",
    }
}

/// Sends a notice, retrying, and records the outcome under `parent`.
pub async fn send(
    http: super::http_client::HttpClients,
    notice: Notice,
    trace: Arc<Trace>,
    parent: SpanId,
) {
    let mut pause = FIRST_PAUSE;
    let mut error: Option<NoticeError> = None;
    let mut attempts = 0;
    for attempt in 1..=ATTEMPTS {
        attempts = attempt;
        match post(&http, &notice).await {
            Ok(()) => {
                error = None;
                break;
            }
            Err(e) => error = Some(e),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    let mut data = crate::fields! {
        "channel": notice.kind.as_str(),
        "target": notice.target,
        "stage": stage_name(notice.stage),
        "attempts": attempts,
        "status": if error.is_none() { "sent" } else { "failed" },
    };
    if let Some(error) = error {
        eprintln!(
            "flowc: the notification for gate `{}` ({} {}) failed after {attempts} attempts: {error}; the run goes on",
            notice.gate,
            notice.kind.as_str(),
            notice.target
        );
        data.insert("error".into(), Value::String(error.to_string()));
    }
    trace.event(Some(parent), "notify", &notice.gate, data);
}

/// One attempt: a POST of the JSON body; any 2xx is delivered.
async fn post(http: &super::http_client::HttpClients, notice: &Notice) -> Result<(), NoticeError> {
    let sent = http
        .for_text(&notice.url)
        .post(&notice.url)
        .timeout(ATTEMPT_TIMEOUT)
        .json(&notice.body)
        .send()
        .await
        // The error's text would name the URL: the secret.
        .map_err(|e| NoticeError::Transport(e.without_url().to_string()))?;
    let status = sent.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(NoticeError::Status(status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_shown_without_its_secret() {
        assert_eq!(describe(&NotifyTarget::Env("HOOK".into())), "env.HOOK");
        assert_eq!(
            describe(&NotifyTarget::Url(
                "https://hooks.slack.com/services/T0/B0/SECRET".into()
            )),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            describe(&NotifyTarget::Url("https://user:pw@example.com".into())),
            "https://example.com"
        );
    }

    #[test]
    fn the_inbox_link_encodes_the_key() {
        assert_eq!(
            inbox_link("http://127.0.0.1:8080/", "r1", "orders[2]/ok"),
            "http://127.0.0.1:8080/inbox#gate-r1-orders%5B2%5D%2Fok"
        );
    }
}
