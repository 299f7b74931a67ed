//! `flowc reviews` and `flowc review`: the cases a gate's policy decided and
//! `sample …` sent to review after the fact, and a reviewer's verdict on
//! each (agreed or not); `flowc stats` reports the agreement rate.

use std::path::Path;

use serde_json::{json, Value};

use crate::execute::{finish, open_store, Failure};
use crate::ListFormat;
use flowc::store::{ReviewRecord, Store, Verdict};

/// `flowc reviews [--all]`: the sampled cases not reviewed yet (every one
/// with `--all`), oldest first.
pub fn list_command(store_path: &Path, all: bool, format: ListFormat) -> Result<i32, String> {
    finish(list(store_path, all, format))
}

fn list(store_path: &Path, all: bool, format: ListFormat) -> Result<i32, Failure> {
    let store = open_store(store_path)?;
    let items = store.reviews(None, !all)?;
    if format == ListFormat::Json {
        let items: Vec<Value> = items.iter().map(review_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"version": 1, "reviews": items}))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    if items.is_empty() {
        println!(
            "{}",
            if all {
                "no sampled case"
            } else {
                "no case waits for review"
            }
        );
    }
    for r in &items {
        let state = match (r.verdict, &r.reviewed_by) {
            (Some(v), Some(by)) => format!("{} by {by}", v.as_str()),
            (Some(v), None) => v.as_str().to_string(),
            (None, _) => "open".to_string(),
        };
        println!(
            "run {}  gate {}  (flow {}, sampled {}, {state})",
            r.run_id, r.key, r.flow, r.day
        );
        if r.verdict.is_none() {
            println!(
                "  flowc review {} {} --agree   |   flowc review {} {} --disagree --note …",
                r.run_id, r.gate, r.run_id, r.gate
            );
        }
    }
    Ok(0)
}

/// `flowc review RUN GATE --agree|--disagree [--by NAME] [--note TEXT]`.
pub fn mark_command(
    store_path: &Path,
    run: &str,
    gate: &str,
    verdict: Verdict,
    by: Option<String>,
    note: Option<String>,
) -> Result<i32, String> {
    finish(mark(store_path, run, gate, verdict, by, note))
}

fn mark(
    store_path: &Path,
    run: &str,
    gate: &str,
    verdict: Verdict,
    by: Option<String>,
    note: Option<String>,
) -> Result<i32, Failure> {
    let by = by.unwrap_or_else(flowc::run::os_user);
    let store = open_store(store_path)?;
    let item = sampled_case(&store, run, gate)?;
    if let Some(done) = item.verdict {
        return Err(already(&item, done).into());
    }
    if !store.record_review(run, &item.key, verdict, &by, note.as_deref())? {
        // Someone else marked it between the read and the write.
        let now = sampled_case(&store, run, gate)?;
        return Err(already(&now, now.verdict.unwrap_or(verdict)).into());
    }
    eprintln!(
        "{} the policy's decision at gate {} of run {run} (recorded, by {by})",
        match verdict {
            Verdict::Agree => "agreed with",
            Verdict::Disagree => "disagreed with",
        },
        item.key
    );
    Ok(0)
}

fn already(item: &ReviewRecord, verdict: Verdict) -> String {
    format!(
        "the case at gate {} of run {} was already reviewed ({}{})",
        item.key,
        item.run_id,
        verdict.as_str(),
        item.reviewed_by
            .as_ref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default()
    )
}

/// The sampled case a name refers to: a gate name, or its key.
fn sampled_case(store: &Store, run: &str, gate: &str) -> Result<ReviewRecord, Failure> {
    let items = store.reviews(Some(run), false)?;
    let matching: Vec<&ReviewRecord> = items
        .iter()
        .filter(|r| r.key == gate || r.gate == gate)
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] if items.is_empty() => Err(format!("run {run} has no case sampled for review").into()),
        [] => Err(format!(
            "run {run} has no case sampled at `{gate}`; it has: {}",
            items
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into()),
        many => Err(format!(
            "`{gate}` names {} sampled cases; name one by its key: {}",
            many.len(),
            many.iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into()),
    }
}

/// A review item as `--format json` shows it (docs/json-output.md).
pub fn review_json(r: &ReviewRecord) -> Value {
    json!({
        "run": r.run_id,
        "key": r.key,
        "flow": r.flow,
        "gate": r.gate,
        "sampled_at": r.sampled_at,
        "day": r.day,
        "verdict": r.verdict.map(Verdict::as_str),
        "reviewed_by": r.reviewed_by,
        "reviewed_at": r.reviewed_at,
        "note": r.note,
    })
}
