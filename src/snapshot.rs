//! A program as `flowc submit` stores it with a run: the root file's path
//! and the text of every file the compilation read (imported modules,
//! `schema` files, MCP lock files), by the path each was read at. A worker
//! compiles the snapshot, never the disk, so it runs exactly the program
//! that was checked at submission, on any machine, whatever the files say
//! later. The standard library is not in it: it is part of flowc, and the
//! run's fingerprint (which hashes it) tells a worker whose flowc differs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The files of a submitted program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSnapshot {
    /// The path of the file that was submitted.
    pub root: String,
    /// Every file read, by the path it was read at.
    pub files: BTreeMap<String, String>,
}

/// Why a stored snapshot cannot be read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the stored program is malformed: {}", self.0)
    }
}

/// The format's version, so a later flowc can tell an older snapshot.
const VERSION: u64 = 1;

impl ProgramSnapshot {
    /// The snapshot as the run store keeps it (JSON text).
    pub fn to_json(&self) -> String {
        json!({"version": VERSION, "root": self.root, "files": self.files}).to_string()
    }

    /// Reads a stored snapshot back; anything malformed is an error, never
    /// a program with a file missing.
    pub fn from_json(text: &str) -> Result<ProgramSnapshot, SnapshotError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| SnapshotError(format!("not JSON: {e}")))?;
        let version = doc.get("version").and_then(Value::as_u64);
        if version != Some(VERSION) {
            return Err(SnapshotError(format!(
                "version {} (this flowc reads version {VERSION})",
                doc.get("version").unwrap_or(&Value::Null)
            )));
        }
        let root = doc
            .get("root")
            .and_then(Value::as_str)
            .ok_or_else(|| SnapshotError("no `root` path".into()))?
            .to_string();
        let mut files = BTreeMap::new();
        for (path, text) in doc
            .get("files")
            .and_then(Value::as_object)
            .ok_or_else(|| SnapshotError("no `files` object".into()))?
        {
            let text = text
                .as_str()
                .ok_or_else(|| SnapshotError(format!("file `{path}` is not text")))?;
            files.insert(path.clone(), text.to_string());
        }
        if !files.contains_key(&root) {
            return Err(SnapshotError(format!("the root file `{root}` is missing")));
        }
        Ok(ProgramSnapshot { root, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let s = ProgramSnapshot {
            root: "/a/b.flow".into(),
            files: BTreeMap::from([
                ("/a/b.flow".into(), "flow f() -> int { return 1 }".into()),
                ("/a/s.json".into(), "{}".into()),
            ]),
        };
        assert_eq!(ProgramSnapshot::from_json(&s.to_json()), Ok(s));
    }

    #[test]
    fn a_malformed_snapshot_is_an_error_saying_what_is_wrong() {
        for (text, says) in [
            ("nope", "not JSON"),
            (r#"{"version": 9}"#, "version 9"),
            (r#"{"version": 1, "files": {}}"#, "no `root`"),
            (r#"{"version": 1, "root": "/r"}"#, "no `files`"),
            (
                r#"{"version": 1, "root": "/r", "files": {"/r": 3}}"#,
                "not text",
            ),
            (r#"{"version": 1, "root": "/r", "files": {}}"#, "missing"),
        ] {
            let e = ProgramSnapshot::from_json(text).expect_err(text);
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
