//! The SQLite run store: an embedded file (`.flowc/runs.db` by default).
//!
//! A step's result is committed before any step that depends on it starts;
//! steps that complete together commit in one transaction. A row holds one
//! step's value, so a checkpoint grows with the step's output, never with the
//! size of the graph. WAL mode; `synchronous=FULL` by default, so a committed
//! step survives a power cut.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{now, Durability, GateRecord, RunRecord, StoreError};
use crate::run::budget::Spend;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Versioned schema: migration `i` brings the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    flow TEXT NOT NULL,
    program TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    trace TEXT NOT NULL,
    replay TEXT
);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT,
    completed_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE intents (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE replies (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reply TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (run_id, key, attempt)
) WITHOUT ROWID;
CREATE TABLE gates (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    flow TEXT NOT NULL,
    gate TEXT NOT NULL,
    show TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    reason TEXT,
    created_at REAL NOT NULL,
    timeout_at REAL,
    on_timeout TEXT NOT NULL,
    decided_at REAL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
"#];

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            if durability == Durability::Full {
                "FULL"
            } else {
                "NORMAL"
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version =
            usize::try_from(version).map_err(|_| StoreError("bad schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "the store was written by a newer flowc (schema {version}, this flowc knows {})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn create_run(&self, r: &RunRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO runs (id, file, flow, program, input, status, created_at, updated_at, trace, replay)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
            params![r.id, r.file, r.flow, r.program.to_string(), r.input.to_string(), r.status, r.created_at, r.trace, r.replay],
        )?;
        Ok(())
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        Ok(self
            .conn
            .query_row("SELECT * FROM runs WHERE id = ?1", [id], run_row)
            .optional()?)
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM runs ORDER BY created_at DESC")?;
        let rows = stmt.query_map([], run_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn finish_run(
        &self,
        id: &str,
        status: &str,
        output: Option<&Value>,
        error: Option<&str>,
        spend: Spend,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET status = ?2, output = ?3, error = ?4, updated_at = ?5,
             tokens = ?6, cost = ?7, steps = ?8, tool_calls = ?9 WHERE id = ?1",
            params![
                id,
                status,
                output.map(Value::to_string),
                error,
                now(),
                spend.tokens as i64,
                spend.cost,
                spend.steps as i64,
                spend.tool_calls as i64
            ],
        )?;
        Ok(())
    }

    /// Completed steps: key → value (`None` for a step that was skipped).
    pub fn steps(&self, run: &str) -> Result<HashMap<String, Option<Value>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value FROM steps WHERE run_id = ?1")?;
        let rows = stmt.query_map([run], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (key, value) = row?;
            let value = match value {
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError(format!("step {key}: {e}")))?,
                ),
                None => None,
            };
            out.insert(key, value);
        }
        Ok(out)
    }

    /// Commits steps that completed together, and the run's spend so far, in
    /// one transaction.
    pub fn commit_steps(
        &mut self,
        run: &str,
        batch: &[(String, Option<Value>)],
        spend: Spend,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO steps (run_id, key, value, completed_at) VALUES (?1, ?2, ?3, ?4)")?;
            let at = now();
            for (key, value) in batch {
                stmt.execute(params![run, key, value.as_ref().map(Value::to_string), at])?;
            }
            save_spend(&tx, run, spend, at)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the intent to call a tool with an effect, before the call.
    pub fn intent(&self, run: &str, key: &str, idempotency_key: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO intents (run_id, key, idempotency_key, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![run, key, idempotency_key, now()],
        )?;
        Ok(())
    }

    /// The idempotency key recorded for an intent, if the call was attempted before.
    pub fn intent_key(&self, run: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT idempotency_key FROM intents WHERE run_id = ?1 AND key = ?2",
                [run, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a model reply and, in the same transaction, the run's spend
    /// so far (which includes the reply): a resume reads the reply back for
    /// free, so what it cost must already be in the run's spend.
    #[allow(clippy::too_many_arguments)]
    pub fn record_reply(
        &mut self,
        run: &str,
        key: &str,
        attempt: u32,
        reply: &str,
        input_tokens: u64,
        output_tokens: u64,
        spend: Spend,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO replies (run_id, key, attempt, reply, input_tokens, output_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run, key, attempt, reply, input_tokens as i64, output_tokens as i64],
        )?;
        save_spend(&tx, run, spend, now())?;
        tx.commit()?;
        Ok(())
    }

    /// A model reply recorded for a step's attempt: (text, input tokens, output tokens).
    pub fn reply(&self, run: &str, key: &str, attempt: u32) -> Result<Option<(String, u64, u64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT reply, input_tokens, output_tokens FROM replies WHERE run_id = ?1 AND key = ?2 AND attempt = ?3",
                params![run, key, attempt],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )
            .optional()?)
    }

    pub fn gate(&self, run: &str, key: &str) -> Result<Option<GateRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT * FROM gates WHERE run_id = ?1 AND key = ?2",
                [run, key],
                gate_row,
            )
            .optional()?)
    }

    /// Records a gate the run is waiting at (once).
    pub fn pending_gate(&self, g: &GateRecord) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO gates (run_id, key, flow, gate, show, status, created_at, timeout_at, on_timeout)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8)",
            params![g.run_id, g.key, g.flow, g.gate, g.show.to_string(), g.created_at, g.timeout_at, g.on_timeout],
        )?;
        Ok(())
    }

    /// Decides a pending gate; `false` if it was not pending.
    pub fn decide_gate(
        &self,
        run: &str,
        key: &str,
        approve: bool,
        value: Option<&Value>,
        reason: Option<&str>,
    ) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE gates SET status = ?3, value = ?4, reason = ?5, decided_at = ?6
             WHERE run_id = ?1 AND key = ?2 AND status = 'pending'",
            params![
                run,
                key,
                if approve { "approved" } else { "rejected" },
                value.map(Value::to_string),
                reason,
                now()
            ],
        )?;
        Ok(changed == 1)
    }

    /// Gates of one run (or of every run), oldest first.
    pub fn gates(&self, run: Option<&str>) -> Result<Vec<GateRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM gates WHERE (?1 IS NULL OR run_id = ?1) ORDER BY created_at")?;
        let rows = stmt.query_map([run], gate_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// The run's spend so far (everything this and earlier processes paid for).
/// Runs with every checkpoint: the statement is prepared once per connection.
fn save_spend(conn: &Connection, run: &str, spend: Spend, at: f64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE runs SET tokens = ?2, cost = ?3, steps = ?4, tool_calls = ?5, updated_at = ?6 WHERE id = ?1",
    )?
    .execute(params![run, spend.tokens as i64, spend.cost, spend.steps as i64, spend.tool_calls as i64, at])?;
    Ok(())
}

fn json_col(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get("id")?,
        file: r.get("file")?,
        flow: r.get("flow")?,
        program: json_col(r.get("program")?),
        input: json_col(r.get("input")?),
        status: r.get("status")?,
        output: r
            .get::<_, Option<String>>("output")?
            .map(|t| json_col(Some(t))),
        error: r.get("error")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        spend: Spend {
            tokens: r.get::<_, i64>("tokens")? as u64,
            cost: r.get("cost")?,
            steps: r.get::<_, i64>("steps")? as u64,
            tool_calls: r.get::<_, i64>("tool_calls")? as u64,
        },
        trace: r.get("trace")?,
        replay: r.get("replay")?,
    })
}

fn gate_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GateRecord> {
    Ok(GateRecord {
        run_id: r.get("run_id")?,
        key: r.get("key")?,
        flow: r.get("flow")?,
        gate: r.get("gate")?,
        show: json_col(r.get("show")?),
        status: r.get("status")?,
        value: r
            .get::<_, Option<String>>("value")?
            .map(|t| json_col(Some(t))),
        reason: r.get("reason")?,
        created_at: r.get("created_at")?,
        timeout_at: r.get("timeout_at")?,
        on_timeout: r.get("on_timeout")?,
    })
}
