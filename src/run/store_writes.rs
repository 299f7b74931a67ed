//! What a durable run wrote to its run store, by kind of write (for the
//! report, benchmarks and tests: one commit per durable step is a claim
//! worth checking).

/// Write transactions a durable run made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreWrites {
    /// Commits of completed steps (with their replies and the spend). A
    /// group commit of many steps is one.
    pub commits: u64,
    /// Of those commits, the ones that also wrote the run's row (its
    /// spend, with the allowance ahead, and the lease's renewal): most
    /// commits only check the lease's epoch and write their steps.
    pub rows: u64,
    /// Writes of the spend alone, made before a model call whose
    /// reservation the spend last written did not cover.
    pub reservations: u64,
}
