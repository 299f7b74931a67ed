//! How a run ended, with what its last commit takes ([`RunEnd`]).

use serde_json::Value;

use super::{Reply, StepRow};
use crate::run::budget::Spend;

/// How a run ended (`Backend::finish_run`), and what its last commit takes.
pub struct RunEnd<'a> {
    pub status: &'a str,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub spend: Spend,
    /// This process wrote the trace's root span.
    pub root_written: bool,
    /// Steps that completed and were not committed yet: what the run's
    /// last steps queued (nothing waited for them), or what completed
    /// beside a failure.
    pub steps: &'a [StepRow],
    /// Replies of steps that did not complete, for a resume to read.
    pub replies: &'a [Reply],
    /// The run's counts, which the step rows carry (`commit_steps`).
    pub counted: Spend,
}

impl<'a> RunEnd<'a> {
    /// A run's end with no steps or replies to commit with it.
    pub fn bare(status: &'a str, error: Option<&'a str>, spend: Spend) -> RunEnd<'a> {
        RunEnd {
            status,
            output: None,
            error,
            spend,
            root_written: false,
            steps: &[],
            replies: &[],
            counted: Spend::default(),
        }
    }
}
