//! The HTTP plumbing model providers and `http` tools share, written once:
//! reading a body with a cap, classifying transport failures, `Retry-After`
//! (seconds or any of the three HTTP-date formats), URLs fit for a message,
//! and cutting quoted text.
//!
//! Nothing here knows about tools or models: callers say what they were
//! doing (`what`), and get [`CallError`]s classified for retry policies.

use std::fmt::Display;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::{CallError, ErrorClass};

/// Sent with every request flowc makes (tools may set their own): some APIs
/// (GitHub's among them) refuse requests without one.
pub const USER_AGENT: &str = concat!("flowc/", env!("CARGO_PKG_VERSION"));

/// The header an effectful tool call carries its idempotency key in: the
/// request sets it, and a request carrying it may be sent again after a
/// broken connection (the server deduplicates it).
pub const IDEMPOTENCY_KEY: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("idempotency-key");

/// The largest response body read, in bytes; no tool result or chat reply
/// is this big.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// A body read up to a cap.
pub struct Body {
    pub bytes: Vec<u8>,
    /// The body was larger than the cap; `bytes` holds what came before.
    pub too_large: bool,
}

/// Reads a response body, stopping at `cap` bytes.
pub async fn read_body(
    response: &mut reqwest::Response,
    cap: usize,
    what: &(impl Display + ?Sized),
    timeout: Duration,
) -> Result<Body, CallError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&e, what, timeout))?
    {
        if bytes.len() + chunk.len() > cap {
            return Ok(Body {
                bytes,
                too_large: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        too_large: false,
    })
}

/// A request that took longer than its timeout.
pub fn timeout_error(what: &(impl Display + ?Sized), timeout: Duration) -> CallError {
    CallError::new(
        ErrorClass::Timeout,
        format!("{what} did not finish within {}", seconds_text(timeout)),
    )
}

/// A failure below HTTP (connecting, sending, reading), classified; the
/// message never holds a URL's query or user information.
pub fn transport_error(
    e: &reqwest::Error,
    what: &(impl Display + ?Sized),
    timeout: Duration,
) -> CallError {
    if e.is_timeout() {
        return timeout_error(what, timeout);
    }
    let class = if e.is_builder() || e.is_redirect() {
        ErrorClass::Client
    } else {
        ErrorClass::Connection
    };
    let doing = if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the response"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_builder() {
        "the request could not be built"
    } else {
        "the request failed"
    };
    // The innermost cause says what happened ("Connection refused"); the
    // outer ones repeat the URL.
    let mut cause = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    let cause = cause
        .map(|c| format!(" ({})", redact_urls_in(&c)))
        .unwrap_or_default();
    CallError::new(class, format!("{what}: {doing}{cause}"))
}

/// A reply with a status other than 2xx: its class, and the server's wait.
pub fn status_error(status: u16, retry_after: Option<Duration>, message: String) -> CallError {
    CallError {
        class: ErrorClass::from_status(status),
        message,
        retry_after,
        status: Some(status),
    }
}

/// The `Retry-After` header of a reply, as a wait from now.
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// `Retry-After`: delay-seconds, or an HTTP-date (any of the three formats
/// HTTP allows), as a wait from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP date (IMF-fixdate, RFC 850 or asctime), always GMT.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (mut day, mut month, mut year, mut time) = (None, None, None, None);
    for token in text.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        if token.contains(':') {
            let mut parts = token.split(':').map(|p| p.parse::<u32>().ok());
            let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
            if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
                return None;
            }
            time = Some(h * 3600 + m * 60 + s);
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = token.parse().ok()?;
            if day.is_none() && token.len() <= 2 {
                day = Some(n);
            } else if token.len() == 4 {
                year = Some(n);
            } else if token.len() == 2 {
                year = Some(if n < 70 { 2000 + n } else { 1900 + n });
            } else {
                return None;
            }
        } else if token.len() >= 3 {
            let prefix = token[..3].to_ascii_lowercase();
            if let Some(i) = MONTHS.iter().position(|m| *m == prefix) {
                month = Some(i as i64 + 1);
            }
        }
    }
    let (day, month, year, time) = (day?, month?, year?, time?);
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)?.checked_add(i64::from(time))?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A URL fit for a message: no query string, fragment or user information.
/// Works on template text too (`{env.API}/x?key={env.K}` → `{env.API}/x`).
pub fn redact_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{}",
            &url[..authority_start],
            &url[authority_start + at + 1..]
        ),
        None => url.to_string(),
    }
}

/// Text a library wrote, with every URL in it redacted.
pub fn redact_urls_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains("://") {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most `n` characters, with `mark` appended when something was cut.
pub fn truncate(s: &str, n: usize, mark: &str) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}{mark}", &s[..i]),
        None => s.to_string(),
    }
}

/// A duration as messages show it: `30s`, `0.400s`.
pub fn seconds_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s}s")
    } else {
        format!("{s:.3}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_both_ways() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        for days in [-800_000i64, -1, 0, 59, 11_016, 19_675, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        let now = UNIX_EPOCH + Duration::from_secs(784_111_700);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(77))
        );
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("https://u:p@h.example/x/y?key=1#f"),
            "https://h.example/x/y"
        );
        assert_eq!(redact_url("{env.API}/x?key={env.K}"), "{env.API}/x");
    }

    #[test]
    fn truncation_is_on_char_boundaries() {
        let long = "é".repeat(310);
        let short = truncate(&long, 300, "…");
        assert!(short.ends_with('…'));
        assert_eq!(short.chars().filter(|c| *c == 'é').count(), 300);
    }
}
