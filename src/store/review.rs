//! After-the-fact review of the cases a gate's policy decided (`sample …`):
//! a sampled case is a review item until a reviewer marks it agreed or not.

/// A reviewer's verdict on a sampled policy decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The reviewer would have decided the same.
    Agree,
    /// The reviewer would not have: the policy may have drifted.
    Disagree,
}

impl Verdict {
    pub const ALL: [Verdict; 2] = [Verdict::Agree, Verdict::Disagree];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Disagree => "disagree",
        }
    }

    pub fn from_name(name: &str) -> Option<Verdict> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// One sampled case: the gate instance (run and key, as in `gates`) the
/// policy decided, and the review once it is done.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewRecord {
    pub run_id: String,
    /// The gate instance's key (its place in the run, as `flowc inbox` shows).
    pub key: String,
    pub flow: String,
    pub gate: String,
    /// When the case was sampled (seconds since the Unix epoch).
    pub sampled_at: f64,
    /// The UTC day it was sampled on (`YYYY-MM-DD`), which `N per day` counts.
    pub day: String,
    /// `None` until reviewed.
    pub verdict: Option<Verdict>,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<f64>,
    pub note: Option<String>,
}

impl ReviewRecord {
    /// A case sampled now, not reviewed yet.
    pub fn sampled(run_id: &str, key: &str, flow: &str, gate: &str) -> ReviewRecord {
        let now = super::now();
        ReviewRecord {
            run_id: run_id.to_string(),
            key: key.to_string(),
            flow: flow.to_string(),
            gate: gate.to_string(),
            sampled_at: now,
            day: utc_day(now),
            verdict: None,
            reviewed_by: None,
            reviewed_at: None,
            note: None,
        }
    }
}

/// The UTC calendar day of a time (seconds since the Unix epoch).
pub fn utc_day(seconds: f64) -> String {
    let days = (seconds / 86_400.0).floor() as i64;
    let (y, m, d) = crate::run::http::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}
