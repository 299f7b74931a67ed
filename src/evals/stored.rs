//! Eval results kept beside the run store (`.flowc/evals/ID.json` next to
//! `.flowc/runs.db`), so a later `flowc eval --baseline REF` can compare:
//! each row links to its run in the store by run id.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::EvalResult;

/// The folder eval results go in: beside a SQLite run store; `.flowc/evals`
/// when the store is a PostgreSQL URL.
pub fn folder(store: &Path) -> PathBuf {
    if store.to_string_lossy().contains("://") {
        return PathBuf::from(".flowc/evals");
    }
    store.parent().unwrap_or(Path::new(".")).join("evals")
}

/// Keeps one `flowc eval` invocation's results under its id.
pub fn save(store: &Path, id: &str, doc: &Value) -> Result<PathBuf, String> {
    let dir = folder(store);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{id}.json"));
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The results a `--baseline` names: a results file (`--format json`
/// output), a stored eval id, or `latest` (the newest stored one). Returns
/// the id it resolved to and its evals.
pub fn load(store: &Path, reference: &str) -> Result<(String, Vec<EvalResult>), String> {
    let path = if Path::new(reference).is_file() {
        PathBuf::from(reference)
    } else if reference == "latest" {
        let dir = folder(store);
        let mut ids: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("no stored evals in {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        // Ids are UUIDv7: their order is their start order.
        ids.sort();
        ids.pop()
            .ok_or_else(|| format!("no stored evals in {}", dir.display()))?
    } else {
        folder(store).join(format!("{reference}.json"))
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("baseline {reference}: cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("baseline {}: not JSON: {e}", path.display()))?;
    let evals: Vec<EvalResult> = serde_json::from_value(doc["evals"].clone())
        .map_err(|e| format!("baseline {}: not eval results: {e}", path.display()))?;
    let id = doc["id"].as_str().unwrap_or(reference).to_string();
    Ok((id, evals))
}
