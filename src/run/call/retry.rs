//! How long to wait before the next attempt.

use std::time::Duration;

use crate::exec::RetryPolicy;
use crate::run::error::CallError;

/// How long to wait before the next attempt, or `None` to stop retrying.
/// Exponential backoff from the policy, jittered down by up to half, capped;
/// a server's `Retry-After` is always honoured.
pub fn retry_delay(
    policy: Option<&RetryPolicy>,
    attempt: u32,
    err: &CallError,
) -> Option<Duration> {
    let policy = policy?;
    if attempt > policy.retries || !policy.retries_on(err.class) {
        return None;
    }
    let mut secs = policy.base.as_secs_f64() * policy.factor.powi(attempt.saturating_sub(1) as i32);
    if let Some(cap) = policy.cap {
        secs = secs.min(cap.as_secs_f64());
    }
    if policy.jitter {
        secs *= 0.5 + fastrand::f64() * 0.5;
    }
    let mut delay = Duration::from_secs_f64(secs.clamp(0.0, 86_400.0));
    if let Some(after) = err.retry_after {
        delay = delay.max(after);
    }
    Some(delay)
}
