//! The lock file: what `flowc mcp lock` saw on each server, written beside
//! the flow as `NAME.mcp.lock` (JSON, committed like any lockfile). `flowc
//! check` compares declared types with it; `flowc run` compares the live
//! servers with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The lock file's format version; a file of another version is refused.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    /// By server name, as declared in the flow.
    pub servers: BTreeMap<String, LockedServer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockedServer {
    /// The server's own name and version, as it introduced itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<String>,
    /// Every tool the server offered, by its name on the server.
    pub tools: BTreeMap<String, LockedTool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedTool {
    pub input_schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// Where the lock of the flow file at `flow` lives: `review.flow` →
/// `review.mcp.lock`, in the same folder.
pub fn path_for(flow: &Path) -> PathBuf {
    flow.with_extension("mcp.lock")
}

impl LockFile {
    /// Parses a lock file's text.
    pub fn parse(text: &str) -> Result<LockFile, String> {
        let lock: LockFile =
            serde_json::from_str(text).map_err(|e| format!("it is not a valid lock file: {e}"))?;
        if lock.version != VERSION {
            return Err(format!(
                "it has version {}, this flowc reads version {VERSION}",
                lock.version
            ));
        }
        Ok(lock)
    }

    /// The text written to disk: stable (sorted keys), one trailing newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}
