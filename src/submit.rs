//! A run submitted for workers (`flowc submit`, and `POST /api/runs` of
//! `flowc serve`): the checked program's snapshot and the input stored as a
//! `queued` run, for any `flowc worker` on the store to claim. Both callers
//! go through [`submit`], so a run started over HTTP is stored exactly as
//! one submitted from a shell.

use serde_json::Value;

use crate::compile::Compilation;
use crate::run::{self, status::RunStatus};
use crate::snapshot::ProgramSnapshot;
use crate::store::{RunRecord, Store, StoreError};

/// Why a run was not submitted.
#[derive(Debug)]
pub enum SubmitError {
    /// The program has errors, names no such flow, or the input does not
    /// fit the flow's parameters: the caller's to fix.
    Invalid(String),
    /// The run store could not record the run.
    Store(StoreError),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Invalid(m) => f.write_str(m),
            SubmitError::Store(e) => write!(f, "{e}"),
        }
    }
}

/// The runnable flows the program's root file declares (not `eval` judges),
/// in declaration order.
pub fn root_flows(c: &Compilation) -> Vec<&str> {
    let Some(checked) = &c.program else {
        return Vec::new();
    };
    let root = c.roots.first().cloned().unwrap_or_default();
    checked
        .program()
        .flows
        .iter()
        .filter(|f| c.sources.get(f.span.file).name == root)
        .filter(|f| !f.judge)
        .map(|f| f.name.as_str())
        .collect()
}

/// The flow to run: the one asked for, or the one flow the root file
/// declares (`file` names the program in the message otherwise).
pub fn choose_flow(c: &Compilation, file: &str, asked: Option<String>) -> Result<String, String> {
    if c.program.is_none() {
        return Err("the program has errors".into());
    }
    match (asked, root_flows(c).as_slice()) {
        (Some(f), _) => Ok(f),
        (None, [only]) => Ok(only.to_string()),
        (None, []) => Err(format!("{file} declares no flow")),
        (None, many) => Err(format!(
            "{file} declares several flows ({}); choose one with --flow",
            many.join(", ")
        )),
    }
}

/// Stores a run of `flow` of the checked program `c` (compiled from
/// `snapshot`) with `input`, `queued`; returns it as stored. Checks the flow
/// and the input first: a run no worker could start is refused here.
pub fn submit(
    store: &Store,
    c: &Compilation,
    snapshot: &ProgramSnapshot,
    flow: String,
    input: Value,
) -> Result<RunRecord, SubmitError> {
    let Some(program) = &c.program else {
        return Err(SubmitError::Invalid("the program has errors".into()));
    };
    run::check_input(program, &flow, &input).map_err(|e| SubmitError::Invalid(e.to_string()))?;
    let id = run::new_run_id();
    let mut record = RunRecord::starting(
        id.clone(),
        snapshot.root.clone(),
        flow,
        run::fingerprint::fingerprint(&c.sources, &c.modules),
        input,
        std::path::PathBuf::from(".flowc/runs")
            .join(&id)
            .join("trace.jsonl")
            .display()
            .to_string(),
        None,
    );
    record.status = RunStatus::Queued.as_str().into();
    // The trace's root span id, chosen now: whichever worker drives the run
    // first writes the root under it, and later ones hang under it.
    record.root_span = Some(run::trace::root_span_id());
    store
        .submit_run(&record, &snapshot.to_json())
        .map_err(SubmitError::Store)?;
    Ok(record)
}
