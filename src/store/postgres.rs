//! The PostgreSQL run store: many processes on many machines share one
//! server (`--store postgres://…` or `FLOWC_STORE`).
//!
//! The client is `tokio_postgres` (TLS by rustls) driven on the calling
//! thread (`inline_client`): the caller blocks on the answer, as it does on
//! SQLite's disk writes, with no thread between it and the socket.
//!
//! Every write of a run is one statement (one round trip): a data-modifying
//! `WITH` that first moves the run's row (fence on the lease's epoch, spend,
//! lease renewal) and then inserts only if that row matched, so a checkpoint
//! is fenced, atomic and a single network exchange.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::inline_client::InlineClient;
use super::lease::owner_is_dead;
use super::{
    now, Acquired, Backend, GateRecord, Lease, NoticeStage, Reply, ReviewRecord, RunEnd, RunRecord,
    StepRow, StepTexts, Store, StoreError, Verdict, CLAIMABLE,
};
use crate::run::budget::Spend;

type Result<T> = std::result::Result<T, StoreError>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => StoreError::Failed(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Failed(e.to_string()),
        }
    }
}

/// Versioned schema: migration `i` brings the database from version `i` to
/// `i + 1`; `flowc_schema` holds the version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    flow TEXT NOT NULL,
    program TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    steps BIGINT NOT NULL DEFAULT 0,
    tool_calls BIGINT NOT NULL DEFAULT 0,
    trace TEXT NOT NULL,
    replay TEXT,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    epoch BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT,
    completed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE intents (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE replies (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    reply TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    PRIMARY KEY (run_id, key, attempt)
);
CREATE TABLE gates (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    flow TEXT NOT NULL,
    gate TEXT NOT NULL,
    show TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    timeout_at DOUBLE PRECISION,
    on_timeout TEXT NOT NULL,
    decided_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX runs_created ON runs (created_at);
"#,
    r#"
ALTER TABLE runs ADD COLUMN wall DOUBLE PRECISION NOT NULL DEFAULT 0;
"#,
    r#"
ALTER TABLE gates ADD COLUMN decided_by TEXT;
"#,
    r#"
ALTER TABLE runs ADD COLUMN root_span BIGINT;
ALTER TABLE runs ADD COLUMN root_written BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    r#"
CREATE TABLE programs (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    snapshot TEXT NOT NULL
);
CREATE INDEX runs_status ON runs (status);
"#,
    r#"
CREATE TABLE model_rates (key TEXT PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL);
CREATE TABLE model_slots (
    key TEXT NOT NULL,
    slot TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, slot)
);
"#,
    r#"
ALTER TABLE gates ADD COLUMN source TEXT;
ALTER TABLE gates ADD COLUMN policy_read TEXT;
ALTER TABLE gates ADD COLUMN notified BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gates ADD COLUMN escalated_at DOUBLE PRECISION;
CREATE TABLE reviews (
    run_id TEXT NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    flow TEXT NOT NULL,
    gate TEXT NOT NULL,
    sampled_at DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    verdict TEXT,
    reviewed_by TEXT,
    reviewed_at DOUBLE PRECISION,
    note TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX reviews_day ON reviews (flow, gate, day);
"#,
    // A worker's claim walks this index in submission order and stops at
    // the first claimable run: finished runs are not in it, so a claim
    // reads the open runs, not the store's history.
    r#"
CREATE INDEX runs_open ON runs (created_at) WHERE status IN ('queued', 'running', 'interrupted', 'waiting');
"#,
    // A checkpoint writes its rows only through the fence (`COMMIT_STEPS`
    // inserts nothing unless the lease's run row matched, and no run row is
    // ever deleted), so the run exists; the foreign keys checked it again,
    // a row lock on the run for every inserted row: about a fifth of the
    // server's time per checkpoint. Room left on each page of `runs` lets
    // a checkpoint's update of the run's spend stay on its page (a HOT
    // update: no index touched).
    r#"
ALTER TABLE steps DROP CONSTRAINT IF EXISTS steps_run_id_fkey;
ALTER TABLE replies DROP CONSTRAINT IF EXISTS replies_run_id_fkey;
ALTER TABLE runs SET (fillfactor = 70);
"#,
    // Sealed programs a resume runs without compiling (`program_cache.rs`),
    // by key.
    r#"
CREATE TABLE sealed_programs (
    key TEXT PRIMARY KEY,
    program BYTEA NOT NULL,
    kept_at DOUBLE PRECISION NOT NULL
);
"#,
    // The run's steps, tool calls and active time when the step committed
    // (`Backend::commit_steps`): a commit need not write the run's row to
    // keep them, and a resume after a crash reads them exactly.
    r#"
ALTER TABLE steps ADD COLUMN run_steps BIGINT, ADD COLUMN run_tool_calls BIGINT,
    ADD COLUMN run_wall DOUBLE PRECISION;
"#,
];

/// An arbitrary constant: the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x0066_6c6f_7763;

/// The connection and its prepared statements (prepared once, then every
/// call is a single round trip), inside transactions too.
struct Connection {
    client: InlineClient,
    statements: HashMap<Box<str>, Statement>,
}

impl Connection {
    fn open(url: &str) -> Result<Connection> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Failed(format!("bad PostgreSQL URL: {e}")))?;
        let mut conn = Connection {
            client: InlineClient::connect(&config)?,
            statements: HashMap::new(),
        };
        migrate(&mut conn)?;
        Ok(conn)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql.into(), s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    /// The one row `sql` returns (an error if it returns none).
    fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        self.query(sql, params)?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Failed(format!("no row from: {sql}")))
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    /// Runs `body` in a transaction: committed when it returns `Ok`, rolled
    /// back when it returns an error. Its statements use the cache like any
    /// other call's, so each is one round trip, not a prepare and a run.
    fn transaction<T>(&mut self, body: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.client.batch_execute("BEGIN")?;
        match body(self) {
            Ok(out) => {
                self.client.batch_execute("COMMIT")?;
                Ok(out)
            }
            Err(e) => {
                // A connection that failed cannot roll back; the server
                // rolls back a transaction whose connection is gone.
                if !self.client.is_closed() {
                    let _ = self.client.batch_execute("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// A fenced write: the statement's one row counts the run rows the
    /// lease's epoch matched.
    fn fenced(
        &mut self,
        lease: &Lease,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<()> {
        let rows = self.query(sql, params)?;
        let matched: i64 = match rows.first() {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        if matched == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.run_id.clone()))
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.transaction(|tx| {
        tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.client
            .batch_execute("CREATE TABLE IF NOT EXISTS flowc_schema (version INTEGER NOT NULL)")?;
        let version: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM flowc_schema", &[])?
            .try_get(0)?;
        let version = usize::try_from(version)
            .map_err(|_| StoreError::Failed("bad schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Failed(format!(
                "the store was written by a newer flowc (schema {version}, this flowc knows {})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.client.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO flowc_schema (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )?;
        }
        Ok(())
    })
}

/// A checkpoint in one statement: the fence on the lease's epoch (with the
/// spend and the lease's renewal), the steps (each with the run's steps,
/// tool calls and wall, as the run's row gets them) and the model replies.
/// Parameters: run, epoch, tokens, cost, steps, tool calls, now, lease
/// expiry, step keys, step values, wall, then the replies' keys, attempts,
/// texts, input and output tokens. Public for `benches/store.rs`, which
/// times this statement on a plain connection.
pub const COMMIT_STEPS: &str = "WITH fence AS (
    UPDATE runs SET tokens = $3, cost = $4, steps = $5, tool_calls = $6,
        updated_at = $7, lease_until = $8, wall = $11
    WHERE id = $1 AND epoch = $2 RETURNING id
 ), saved AS (
    INSERT INTO steps (run_id, key, value, completed_at, run_steps, run_tool_calls, run_wall)
    SELECT fence.id, s.key, s.value, $7, $5, $6, $11 FROM fence, unnest($9::text[], $10::text[]) AS s(key, value)
    ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value, completed_at = EXCLUDED.completed_at,
        run_steps = EXCLUDED.run_steps, run_tool_calls = EXCLUDED.run_tool_calls, run_wall = EXCLUDED.run_wall
    RETURNING 1
 ), answered AS (
    INSERT INTO replies (run_id, key, attempt, reply, input_tokens, output_tokens)
    SELECT fence.id, r.key, r.attempt, r.reply, r.input_tokens, r.output_tokens
    FROM fence, unnest($12::text[], $13::int4[], $14::text[], $15::int8[], $16::int8[])
        AS r(key, attempt, reply, input_tokens, output_tokens)
    ON CONFLICT (run_id, key, attempt) DO UPDATE SET reply = EXCLUDED.reply,
        input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens
    RETURNING 1
 )
 SELECT count(*) FROM fence";

/// `COMMIT_STEPS` for a commit that leaves the run's row alone (no spend
/// to write, no renewal due): the fence reads the epoch under a row lock
/// (`FOR SHARE`, which conflicts with the update that takes a run over, so
/// a takeover either waits for this commit or makes it find the new epoch
/// and insert nothing), instead of writing a new version of the row.
pub const COMMIT_STEPS_READ_FENCE: &str = "WITH fence AS (
    SELECT id FROM runs WHERE id = $1 AND epoch = $2 FOR SHARE
 ), saved AS (
    INSERT INTO steps (run_id, key, value, completed_at, run_steps, run_tool_calls, run_wall)
    SELECT fence.id, s.key, s.value, $3::float8, $11::int8, $12::int8, $13::float8
    FROM fence, unnest($4::text[], $5::text[]) AS s(key, value)
    ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value, completed_at = EXCLUDED.completed_at,
        run_steps = EXCLUDED.run_steps, run_tool_calls = EXCLUDED.run_tool_calls, run_wall = EXCLUDED.run_wall
    RETURNING 1
 ), answered AS (
    INSERT INTO replies (run_id, key, attempt, reply, input_tokens, output_tokens)
    SELECT fence.id, r.key, r.attempt, r.reply, r.input_tokens, r.output_tokens
    FROM fence, unnest($6::text[], $7::int4[], $8::text[], $9::int8[], $10::int8[])
        AS r(key, attempt, reply, input_tokens, output_tokens)
    ON CONFLICT (run_id, key, attempt) DO UPDATE SET reply = EXCLUDED.reply,
        input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens
    RETURNING 1
 )
 SELECT count(*) FROM fence";

pub struct PostgresStore {
    url: String,
    /// `None` only while the store is dropped (its connection kept or
    /// closed).
    conn: Mutex<Option<Connection>>,
}

/// Connections kept for reuse, per URL. `None` (the default) keeps none,
/// so a one-shot command closes its connection cleanly at exit; a worker,
/// which would otherwise connect twice per run (the run's store and its
/// heartbeat's), each connection a new server process and a migration
/// check, turns it on.
static IDLE: Mutex<Option<HashMap<String, Vec<Connection>>>> = Mutex::new(None);

/// At most this many idle connections are kept per URL.
const IDLE_PER_URL: usize = 64;

/// Keeps the PostgreSQL connections of dropped stores for the next
/// `Store::open` of the same URL in this process.
pub fn keep_connections() {
    if let Ok(mut idle) = IDLE.lock() {
        idle.get_or_insert_with(HashMap::new);
    }
}

impl PostgresStore {
    /// Connects (and migrates); or takes a kept connection to the same URL
    /// (see [`keep_connections`]), already migrated.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let kept = IDLE
            .lock()
            .ok()
            .and_then(|mut idle| idle.as_mut()?.get_mut(url)?.pop());
        let conn = match kept {
            Some(conn) => conn,
            None => Connection::open(url)?,
        };
        Ok(PostgresStore {
            url: url.to_string(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// Runs `f` on the connection, on this thread. A connection the server
    /// dropped is opened again first (the call that found it gone reported
    /// its error).
    fn call<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Failed("a PostgreSQL call panicked".into()))?;
        let conn = conn
            .as_mut()
            .ok_or_else(|| StoreError::Failed("the PostgreSQL store is closed".into()))?;
        if conn.client.is_closed() {
            *conn = Connection::open(&self.url)?;
        }
        f(conn)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let conn = match self.conn.get_mut() {
            Ok(conn) => conn.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(conn) = conn {
            keep(&self.url, conn);
        }
    }
}

/// Keeps a live connection for reuse if connections are kept and there is
/// room; else closes it.
fn keep(url: &str, conn: Connection) {
    if conn.client.is_closed() {
        return;
    }
    let Ok(mut idle) = IDLE.lock() else {
        return;
    };
    let Some(idle) = idle.as_mut() else {
        return;
    };
    let kept = idle.entry(url.to_string()).or_default();
    if kept.len() < IDLE_PER_URL {
        kept.push(conn);
    }
}

fn json_col(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn run_row(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.try_get("id")?,
        file: r.try_get("file")?,
        flow: r.try_get("flow")?,
        program: json_col(r.try_get("program")?),
        input: json_col(r.try_get("input")?),
        status: r.try_get("status")?,
        output: r
            .try_get::<_, Option<String>>("output")?
            .map(|t| json_col(Some(t))),
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        spend: Spend {
            tokens: r.try_get::<_, i64>("tokens")? as u64,
            cost: r.try_get("cost")?,
            steps: r.try_get::<_, i64>("steps")? as u64,
            tool_calls: r.try_get::<_, i64>("tool_calls")? as u64,
            wall: r.try_get("wall")?,
        },
        trace: r.try_get("trace")?,
        replay: r.try_get("replay")?,
        owner: r.try_get("owner")?,
        lease_until: r.try_get("lease_until")?,
        // Span ids stay below 2^53 (see `run::trace::Trace::new`).
        root_span: r
            .try_get::<_, Option<i64>>("root_span")?
            .map(|id| id as u64),
        root_written: r.try_get("root_written")?,
    })
}

fn gate_row(r: &Row) -> Result<GateRecord> {
    Ok(GateRecord {
        run_id: r.try_get("run_id")?,
        key: r.try_get("key")?,
        flow: r.try_get("flow")?,
        gate: r.try_get("gate")?,
        show: json_col(r.try_get("show")?),
        status: r.try_get("status")?,
        value: r
            .try_get::<_, Option<String>>("value")?
            .map(|t| json_col(Some(t))),
        reason: r.try_get("reason")?,
        created_at: r.try_get("created_at")?,
        timeout_at: r.try_get("timeout_at")?,
        on_timeout: r.try_get("on_timeout")?,
        source: super::source_of(
            r.try_get::<_, Option<String>>("source")?.as_deref(),
            &r.try_get::<_, String>("status")?,
            r.try_get::<_, Option<String>>("decided_by")?.as_deref(),
        ),
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        policy_read: r
            .try_get::<_, Option<String>>("policy_read")?
            .map(|t| json_col(Some(t))),
        notified: NoticeStage::from_number(r.try_get("notified")?),
        escalated_at: r.try_get("escalated_at")?,
    })
}

const RUN_COLUMNS: &str = "id, file, flow, program, input, status, output, error, created_at, updated_at, tokens, cost, steps, tool_calls, wall, trace, replay, owner, lease_until, root_span, root_written";

impl Backend for PostgresStore {
    fn reopen(&self) -> Result<Store> {
        Ok(Store(Box::new(PostgresStore::open(&self.url)?)))
    }

    fn create_run(&self, r: &RunRecord, lease: &Lease) -> Result<()> {
        let r = r.clone();
        let lease = lease.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO runs (id, file, flow, program, input, status, created_at, updated_at, trace, replay, owner, lease_until, epoch, root_span, root_written)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[&r.id, &r.file, &r.flow, &r.program.to_string(), &r.input.to_string(), &r.status, &r.created_at, &r.trace, &r.replay, &lease.owner, &lease.until(), &lease.epoch, &r.root_span.map(|id| id as i64), &r.root_written],
            )?;
            Ok(())
        })
    }

    fn acquire(&self, id: &str, owner: &str, ttl: Duration) -> Result<Acquired> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.call(move |c| {
            c.transaction(|tx| {
                let rows = tx.query(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"),
                    &[&id],
                )?;
                let Some(row) = rows.first() else {
                    return Ok(Acquired::Missing);
                };
                let record = run_row(row)?;
                if let (Some(holder), Some(until)) = (&record.owner, record.lease_until) {
                    if *holder != owner && until > now() && !owner_is_dead(holder) {
                        return Ok(Acquired::Held {
                            owner: holder.clone(),
                            until,
                        });
                    }
                }
                let epoch: i64 = tx
                    .query_one(
                        "UPDATE runs SET owner = $2, lease_until = $3, epoch = epoch + 1 WHERE id = $1 RETURNING epoch",
                        &[&id, &owner, &(now() + ttl.as_secs_f64())],
                    )?
                    .try_get(0)?;
                Ok(Acquired::Taken(
                    Box::new(record),
                    Lease {
                        run_id: id,
                        owner,
                        epoch,
                        ttl,
                    },
                ))
            })
        })
    }

    fn renew(&self, lease: &Lease) -> Result<bool> {
        let lease = lease.clone();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE runs SET lease_until = $3 WHERE id = $1 AND epoch = $2",
                &[&lease.run_id, &lease.epoch, &lease.until()],
            )?;
            Ok(n == 1)
        })
    }

    fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.call(move |c| {
            c.execute(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE id = $1 AND epoch = $2",
                &[&lease.run_id, &lease.epoch],
            )?;
            Ok(())
        })
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_string();
        self.call(move |c| {
            let rows = c.query(
                "SELECT id, file, flow, program, input, status, output, error, created_at, updated_at, tokens, cost, steps, tool_calls, wall, trace, replay, owner, lease_until, root_span, root_written FROM runs WHERE id = $1",
                &[&id],
            )?;
            rows.first().map(run_row).transpose()
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>> {
        self.call(move |c| {
            let rows = c.query(
                "SELECT id, file, flow, program, input, status, output, error, created_at, updated_at, tokens, cost, steps, tool_calls, wall, trace, replay, owner, lease_until, root_span, root_written FROM runs ORDER BY created_at DESC",
                &[],
            )?;
            rows.iter().map(run_row).collect()
        })
    }

    fn finish_run(&self, lease: &Lease, end: &RunEnd<'_>) -> Result<()> {
        if !end.steps.is_empty() || !end.replies.is_empty() {
            self.commit_steps(lease, end.steps, end.replies, end.counted, None)?;
        }
        let lease = lease.clone();
        let status = end.status.to_string();
        let output = end.output.map(Value::to_string);
        let error = end.error.map(str::to_string);
        let (spend, root_written) = (end.spend, end.root_written);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE runs SET status = $3, output = $4, error = $5, updated_at = $6,
                 tokens = $7, cost = $8, steps = $9, tool_calls = $10, wall = $11, owner = NULL, lease_until = NULL,
                 root_written = root_written OR $12
                 WHERE id = $1 AND epoch = $2",
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &status,
                    &output,
                    &error,
                    &now(),
                    &(spend.tokens as i64),
                    &spend.cost,
                    &(spend.steps as i64),
                    &(spend.tool_calls as i64),
                    &spend.wall,
                    &root_written,
                ],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::LeaseLost(lease.run_id.clone()))
            }
        })
    }

    fn step_texts(&self, run: &str) -> Result<StepTexts> {
        let run = run.to_string();
        self.call(move |c| {
            let rows = c.query(
                "SELECT key, value, run_steps, run_tool_calls, run_wall FROM steps WHERE run_id = $1",
                &[&run],
            )?;
            let mut texts = StepTexts::default();
            for r in &rows {
                let key: &str = r.try_get(0)?;
                let value: Option<&str> = r.try_get(1)?;
                texts.push(key.as_bytes(), value.map(str::as_bytes));
                if let (Some(steps), Some(tool_calls), Some(wall)) = (
                    r.try_get::<_, Option<i64>>(2)?,
                    r.try_get::<_, Option<i64>>(3)?,
                    r.try_get::<_, Option<f64>>(4)?,
                ) {
                    texts.count(steps as u64, tool_calls as u64, wall);
                }
            }
            Ok(texts)
        })
    }

    fn commit_steps(
        &self,
        lease: &Lease,
        batch: &[StepRow],
        replies: &[Reply],
        counted: Spend,
        spend: Option<Spend>,
    ) -> Result<()> {
        let lease = lease.clone();
        let keys: Vec<String> = batch.iter().map(|s| s.key.clone()).collect();
        let values: Vec<Option<String>> = batch.iter().map(|s| s.value.clone()).collect();
        let reply_keys: Vec<String> = replies.iter().map(|r| r.key.clone()).collect();
        let attempts: Vec<i32> = replies.iter().map(|r| r.attempt as i32).collect();
        let texts: Vec<String> = replies.iter().map(|r| r.text.clone()).collect();
        let input_tokens: Vec<i64> = replies.iter().map(|r| r.input_tokens as i64).collect();
        let output_tokens: Vec<i64> = replies.iter().map(|r| r.output_tokens as i64).collect();
        self.call(move |c| match spend {
            Some(spend) => c.fenced(
                &lease,
                COMMIT_STEPS,
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &(spend.tokens as i64),
                    &spend.cost,
                    // The statement gives the step rows the run row's
                    // counts: the counts as they stand.
                    &(counted.steps as i64),
                    &(counted.tool_calls as i64),
                    &now(),
                    &lease.until(),
                    &keys,
                    &values,
                    &counted.wall,
                    &reply_keys,
                    &attempts,
                    &texts,
                    &input_tokens,
                    &output_tokens,
                ],
            ),
            None => c.fenced(
                &lease,
                COMMIT_STEPS_READ_FENCE,
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &now(),
                    &keys,
                    &values,
                    &reply_keys,
                    &attempts,
                    &texts,
                    &input_tokens,
                    &output_tokens,
                    &(counted.steps as i64),
                    &(counted.tool_calls as i64),
                    &counted.wall,
                ],
            ),
        })
    }

    /// `synchronous_commit` off for this one transaction (`set_config`
    /// with `is_local`, evaluated before the commit it governs): the commit
    /// returns before the WAL reaches the disk, which the client dying
    /// cannot undo; the next synchronous commit flushes the WAL through it.
    fn record_spend(&self, lease: &Lease, spend: Spend) -> Result<()> {
        let lease = lease.clone();
        self.call(move |c| {
            c.fenced(
                &lease,
                "WITH relaxed AS (
                    SELECT set_config('synchronous_commit', 'off', true)
                 ), fence AS (
                    UPDATE runs SET tokens = $3, cost = $4, steps = $5, tool_calls = $6,
                        wall = $7, updated_at = $8, lease_until = $9
                    WHERE id = $1 AND epoch = $2 RETURNING id
                 )
                 SELECT count(*) FROM fence, relaxed",
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &(spend.tokens as i64),
                    &spend.cost,
                    &(spend.steps as i64),
                    &(spend.tool_calls as i64),
                    &spend.wall,
                    &now(),
                    &lease.until(),
                ],
            )
        })
    }

    fn intent(&self, lease: &Lease, key: &str, idempotency_key: &str) -> Result<()> {
        let lease = lease.clone();
        let (key, idem) = (key.to_string(), idempotency_key.to_string());
        self.call(move |c| {
            c.fenced(
                &lease,
                "WITH fence AS (
                    UPDATE runs SET lease_until = $3 WHERE id = $1 AND epoch = $2 RETURNING id
                 ), saved AS (
                    INSERT INTO intents (run_id, key, idempotency_key, started_at)
                    SELECT fence.id, $4, $5, $6 FROM fence
                    ON CONFLICT (run_id, key) DO NOTHING RETURNING 1
                 )
                 SELECT count(*) FROM fence",
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &lease.until(),
                    &key,
                    &idem,
                    &now(),
                ],
            )
        })
    }

    fn intent_key(&self, run: &str, key: &str) -> Result<Option<String>> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let rows = c.query(
                "SELECT idempotency_key FROM intents WHERE run_id = $1 AND key = $2",
                &[&run, &key],
            )?;
            rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
        })
    }

    fn reply(&self, run: &str, key: &str, attempt: u32) -> Result<Option<(String, u64, u64)>> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let rows = c.query(
                "SELECT reply, input_tokens, output_tokens FROM replies WHERE run_id = $1 AND key = $2 AND attempt = $3",
                &[&run, &key, &(attempt as i32)],
            )?;
            rows.first()
                .map(|r| {
                    Ok((
                        r.try_get::<_, String>(0)?,
                        r.try_get::<_, i64>(1)? as u64,
                        r.try_get::<_, i64>(2)? as u64,
                    ))
                })
                .transpose()
        })
    }

    fn gate(&self, run: &str, key: &str) -> Result<Option<GateRecord>> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let rows = c.query(
                "SELECT * FROM gates WHERE run_id = $1 AND key = $2",
                &[&run, &key],
            )?;
            rows.first().map(gate_row).transpose()
        })
    }

    fn pending_gate(&self, lease: &Lease, g: &GateRecord) -> Result<()> {
        let lease = lease.clone();
        let g = g.clone();
        self.call(move |c| {
            c.fenced(
                &lease,
                "WITH fence AS (
                    UPDATE runs SET lease_until = $3 WHERE id = $1 AND epoch = $2 RETURNING id
                 ), saved AS (
                    INSERT INTO gates (run_id, key, flow, gate, show, status, created_at, timeout_at, on_timeout)
                    SELECT fence.id, $4, $5, $6, $7, 'pending', $8, $9, $10 FROM fence
                    ON CONFLICT (run_id, key) DO NOTHING RETURNING 1
                 )
                 SELECT count(*) FROM fence",
                &[
                    &lease.run_id,
                    &lease.epoch,
                    &lease.until(),
                    &g.key,
                    &g.flow,
                    &g.gate,
                    &g.show.to_string(),
                    &g.created_at,
                    &g.timeout_at,
                    &g.on_timeout,
                ],
            )
        })
    }

    fn decide_gate(
        &self,
        run: &str,
        key: &str,
        approve: bool,
        value: Option<&Value>,
        reason: Option<&str>,
        by: &str,
    ) -> Result<bool> {
        let (run, key) = (run.to_string(), key.to_string());
        let value = value.map(Value::to_string);
        let reason = reason.map(str::to_string);
        let by = by.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE gates SET status = $3, value = $4, reason = $5, decided_at = $6, decided_by = $7, source = 'person'
                 WHERE run_id = $1 AND key = $2 AND status = 'pending'",
                &[
                    &run,
                    &key,
                    &(if approve { "approved" } else { "rejected" }),
                    &value,
                    &reason,
                    &now(),
                    &by,
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn submit_run(&self, r: &RunRecord, snapshot: &str) -> Result<()> {
        let r = r.clone();
        let snapshot = snapshot.to_string();
        self.call(move |c| {
            // One statement: the run and its program, or neither.
            c.execute(
                "WITH run AS (
                    INSERT INTO runs (id, file, flow, program, input, status, created_at, updated_at, trace, replay, epoch, root_span, root_written)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, 0, $10, $11) RETURNING id
                 )
                 INSERT INTO programs (run_id, snapshot) SELECT id, $12 FROM run",
                &[&r.id, &r.file, &r.flow, &r.program.to_string(), &r.input.to_string(), &r.status, &r.created_at, &r.trace, &r.replay, &r.root_span.map(|id| id as i64), &r.root_written, &snapshot],
            )?;
            Ok(())
        })
    }

    fn program(&self, run: &str) -> Result<Option<String>> {
        let run = run.to_string();
        self.call(move |c| {
            let rows = c.query("SELECT snapshot FROM programs WHERE run_id = $1", &[&run])?;
            rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
        })
    }

    fn cached_program(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        self.call(move |c| {
            let rows = c.query(
                "SELECT program FROM sealed_programs WHERE key = $1",
                &[&key],
            )?;
            rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
        })
    }

    fn has_cached_program(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        self.call(move |c| {
            let rows = c.query("SELECT 1 FROM sealed_programs WHERE key = $1", &[&key])?;
            Ok(!rows.is_empty())
        })
    }

    fn keep_program(&self, key: &str, program: &[u8]) -> Result<()> {
        let (key, program) = (key.to_string(), program.to_vec());
        self.call(move |c| {
            c.execute(
                "INSERT INTO sealed_programs (key, program, kept_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                &[&key, &program, &now()],
            )?;
            Ok(())
        })
    }

    /// `FOR UPDATE SKIP LOCKED` in the transaction that takes the lease:
    /// workers claiming at once each get a different run, and none waits
    /// for another's claim.
    /// One autocommitted statement (one round trip, one commit): the
    /// subquery finds and locks the oldest claimable run, skipping rows
    /// another worker holds, and the update takes its lease. The record
    /// returned is the row as it was before (its status says why it was
    /// claimable).
    fn claim(&self, owner: &str, ttl: Duration) -> Result<Option<(RunRecord, Lease)>> {
        static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            // The subquery stays narrow (sorting whole rows cost most of
            // the claim); the columns the update changes come from it, as
            // they were.
            let before = ["status", "owner", "lease_until"];
            let columns: Vec<String> = RUN_COLUMNS
                .split(", ")
                .map(|c| match before.contains(&c) {
                    true => format!("c.{c}"),
                    false => format!("u.{c}"),
                })
                .collect();
            format!(
                "UPDATE runs u SET owner = $2, lease_until = $3, epoch = u.epoch + 1, status = 'running'
                 FROM (SELECT r.id, {} FROM runs r WHERE {} ORDER BY r.created_at LIMIT 1 FOR UPDATE OF r SKIP LOCKED) c
                 WHERE u.id = c.id
                 RETURNING {}, u.epoch",
                before.map(|c| format!("r.{c}")).join(", "),
                CLAIMABLE.replace("$NOW", "$1"),
                columns.join(", ")
            )
        });
        let owner = owner.to_string();
        self.call(move |c| {
            let at = now();
            let rows = c.query(CLAIM.as_str(), &[&at, &owner, &(at + ttl.as_secs_f64())])?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let record = run_row(row)?;
            let lease = Lease {
                run_id: record.id.clone(),
                owner,
                epoch: row.try_get("epoch")?,
                ttl,
            };
            Ok(Some((record, lease)))
        })
    }

    /// One statement: the row's lock orders processes taking turns at once.
    fn rate_turn(&self, key: &str, spacing: f64) -> Result<f64> {
        let key = key.to_string();
        self.call(move |c| {
            let rows = c.query(
                "INSERT INTO model_rates (key, next_at) VALUES ($1, $2::float8 + $3::float8)
                 ON CONFLICT (key) DO UPDATE SET next_at = GREATEST(model_rates.next_at, $2::float8) + $3::float8
                 RETURNING next_at - $3::float8",
                &[&key, &now(), &spacing],
            )?;
            match rows.first() {
                Some(r) => Ok(r.try_get(0)?),
                None => Err(StoreError::Failed("no turn was taken".into())),
            }
        })
    }

    /// Under a transaction-scoped advisory lock on the key, so two
    /// processes never both take the last slot.
    fn take_slot(&self, key: &str, limit: u64, until: f64) -> Result<Option<String>> {
        let key = key.to_string();
        self.call(move |c| {
            c.transaction(|tx| {
                tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])?;
                tx.execute(
                    "DELETE FROM model_slots WHERE key = $1 AND until < $2",
                    &[&key, &now()],
                )?;
                let held: i64 = tx
                    .query_one("SELECT count(*) FROM model_slots WHERE key = $1", &[&key])?
                    .try_get(0)?;
                if held as u64 >= limit {
                    return Ok(None);
                }
                let slot = crate::run::new_run_id();
                tx.execute(
                    "INSERT INTO model_slots (key, slot, until) VALUES ($1, $2, $3)",
                    &[&key, &slot, &until],
                )?;
                Ok(Some(slot))
            })
        })
    }

    fn free_slot(&self, key: &str, slot: &str) -> Result<()> {
        let (key, slot) = (key.to_string(), slot.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM model_slots WHERE key = $1 AND slot = $2",
                &[&key, &slot],
            )?;
            Ok(())
        })
    }

    fn gates(&self, run: Option<&str>) -> Result<Vec<GateRecord>> {
        let run = run.map(str::to_string);
        self.call(move |c| {
            let rows = c.query(
                "SELECT * FROM gates WHERE ($1::text IS NULL OR run_id = $1) ORDER BY created_at",
                &[&run],
            )?;
            rows.iter().map(gate_row).collect()
        })
    }

    fn decide_gate_on_timeout(&self, run: &str, key: &str, approve: bool) -> Result<bool> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE gates SET status = $3, reason = $4, decided_at = $5, decided_by = 'timeout', source = 'timeout'
                 WHERE run_id = $1 AND key = $2 AND status = 'pending'",
                &[
                    &run,
                    &key,
                    &(if approve { "approved" } else { "rejected" }),
                    &(if approve { None } else { Some("timed out") }),
                    &now(),
                ],
            )?;
            Ok(n == 1)
        })
    }

    fn decide_gate_by_policy(&self, run: &str, key: &str, read: &Value) -> Result<bool> {
        let (run, key, read) = (run.to_string(), key.to_string(), read.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE gates SET status = 'approved', decided_at = $3, decided_by = 'policy', source = 'policy', policy_read = $4
                 WHERE run_id = $1 AND key = $2 AND status = 'pending'",
                &[&run, &key, &now(), &read],
            )?;
            Ok(n == 1)
        })
    }

    fn claim_notice(&self, run: &str, key: &str, stage: NoticeStage) -> Result<bool> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE gates SET notified = $3
                 WHERE run_id = $1 AND key = $2 AND status = 'pending' AND notified < $3",
                &[&run, &key, &stage.as_number()],
            )?;
            Ok(n == 1)
        })
    }

    fn escalate_gate(&self, run: &str, key: &str, timeout_at: f64) -> Result<bool> {
        let (run, key) = (run.to_string(), key.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE gates SET escalated_at = $3, timeout_at = $4
                 WHERE run_id = $1 AND key = $2 AND status = 'pending' AND escalated_at IS NULL",
                &[&run, &key, &now(), &timeout_at],
            )?;
            Ok(n == 1)
        })
    }

    fn sample_review(&self, r: &ReviewRecord, per_day: Option<u64>) -> Result<bool> {
        let r = r.clone();
        let cap = per_day.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.call(move |c| {
            // Under READ COMMITTED two processes could both count below the
            // cap; a transaction-scoped advisory lock per flow and gate
            // makes the count and the insert one step.
            c.transaction(|tx| {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    &[&format!("flowc-review:{}:{}", r.flow, r.gate)],
                )?;
                let n = tx.execute(
                    "INSERT INTO reviews (run_id, key, flow, gate, sampled_at, day)
                     SELECT $1, $2, $3, $4, $5, $6
                     WHERE (SELECT COUNT(*) FROM reviews WHERE flow = $3 AND gate = $4 AND day = $6) < $7
                     ON CONFLICT DO NOTHING",
                    &[&r.run_id, &r.key, &r.flow, &r.gate, &r.sampled_at, &r.day, &cap],
                )?;
                Ok(n == 1)
            })
        })
    }

    fn reviews(&self, run: Option<&str>, open_only: bool) -> Result<Vec<ReviewRecord>> {
        let run = run.map(str::to_string);
        self.call(move |c| {
            let rows = c.query(
                "SELECT * FROM reviews WHERE ($1::text IS NULL OR run_id = $1) AND (NOT $2 OR verdict IS NULL)
                 ORDER BY sampled_at",
                &[&run, &open_only],
            )?;
            rows.iter().map(review_row).collect()
        })
    }

    fn record_review(
        &self,
        run: &str,
        key: &str,
        verdict: Verdict,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool> {
        let (run, key, by) = (run.to_string(), key.to_string(), by.to_string());
        let note = note.map(str::to_string);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE reviews SET verdict = $3, reviewed_by = $4, reviewed_at = $5, note = $6
                 WHERE run_id = $1 AND key = $2 AND verdict IS NULL",
                &[&run, &key, &verdict.as_str(), &by, &now(), &note],
            )?;
            Ok(n == 1)
        })
    }
}

fn review_row(r: &Row) -> Result<ReviewRecord> {
    Ok(ReviewRecord {
        run_id: r.try_get("run_id")?,
        key: r.try_get("key")?,
        flow: r.try_get("flow")?,
        gate: r.try_get("gate")?,
        sampled_at: r.try_get("sampled_at")?,
        day: r.try_get("day")?,
        verdict: r
            .try_get::<_, Option<String>>("verdict")?
            .as_deref()
            .and_then(Verdict::from_name),
        reviewed_by: r.try_get("reviewed_by")?,
        reviewed_at: r.try_get("reviewed_at")?,
        note: r.try_get("note")?,
    })
}
