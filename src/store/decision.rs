//! Who or what decided a gate, and which announcements of it went out:
//! closed sets, stored by name (or number) and converted here only.

/// What decided a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionSource {
    /// A person: `flowc approve`/`reject`, `--approve`/`--reject` on the
    /// command line, `flowc serve`, a test's `given` (the name is in
    /// `decided_by`).
    Person,
    /// The gate's policy (`auto approve when …`), with the values it read.
    Policy,
    /// The gate's `timeout` passed (after its escalation, if any).
    Timeout,
}

impl DecisionSource {
    pub const ALL: [DecisionSource; 3] = [
        DecisionSource::Person,
        DecisionSource::Policy,
        DecisionSource::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionSource::Person => "person",
            DecisionSource::Policy => "policy",
            DecisionSource::Timeout => "timeout",
        }
    }

    pub fn from_name(name: &str) -> Option<DecisionSource> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How far a gate's announcements went: each stage is sent at most once
/// per gate instance (claimed in the store before it is sent), so a resume
/// or another worker never announces it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoticeStage {
    /// Nothing sent yet.
    None,
    /// The gate started waiting: its `notify` target was told.
    Pending,
    /// Its timeout passed: the escalation's target was told.
    Escalated,
}

impl NoticeStage {
    pub fn as_number(self) -> i64 {
        match self {
            NoticeStage::None => 0,
            NoticeStage::Pending => 1,
            NoticeStage::Escalated => 2,
        }
    }

    /// A stored stage; a number this flowc does not know counts as the
    /// furthest, so nothing is sent twice.
    pub fn from_number(n: i64) -> NoticeStage {
        match n {
            0 => NoticeStage::None,
            1 => NoticeStage::Pending,
            _ => NoticeStage::Escalated,
        }
    }
}
