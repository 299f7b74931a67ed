//! How a run and a gate stand: closed sets, with the names the run store
//! and the JSON report use. Stored names are read back here only.

/// How a run ended (or stands, while it waits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Submitted (`flowc submit`), not yet claimed by a worker.
    Queued,
    Running,
    Completed,
    Failed,
    BudgetExhausted,
    Waiting,
    Rejected,
    /// Stopped by SIGINT or SIGTERM; a durable run can be resumed.
    Interrupted,
    /// The trace could not be written; a durable run can be resumed.
    TraceFailed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::BudgetExhausted,
        RunStatus::Waiting,
        RunStatus::Rejected,
        RunStatus::Interrupted,
        RunStatus::TraceFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::BudgetExhausted => "budget_exhausted",
            RunStatus::Waiting => "waiting",
            RunStatus::Rejected => "rejected",
            RunStatus::Interrupted => "interrupted",
            RunStatus::TraceFailed => "trace_failed",
        }
    }

    pub fn from_name(name: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Where an approval gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateStatus {
    Pending,
    Approved,
    Rejected,
}

impl GateStatus {
    pub const ALL: [GateStatus; 3] = [
        GateStatus::Pending,
        GateStatus::Approved,
        GateStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Pending => "pending",
            GateStatus::Approved => "approved",
            GateStatus::Rejected => "rejected",
        }
    }

    pub fn from_name(name: &str) -> Option<GateStatus> {
        GateStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A gate decision by its name in the run store and recordings.
pub fn decision_named(name: &str) -> Option<crate::exec::Decision> {
    use crate::exec::Decision;
    [(Decision::Approve, "approve"), (Decision::Reject, "reject")]
        .into_iter()
        .find(|(_, n)| *n == name)
        .map(|(d, _)| d)
}

/// A gate decision's name in the run store and recordings.
pub fn decision_name(decision: crate::exec::Decision) -> &'static str {
    match decision {
        crate::exec::Decision::Approve => "approve",
        crate::exec::Decision::Reject => "reject",
    }
}
