//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection and group-commits: it takes every request
//! waiting in its bounded queue (up to `max_batch_traces` traces), writes them in one
//! transaction and commits; a sync thread (`sqlite/durable.rs`) then syncs the WAL and only then
//! answers each request and publishes the events, while the writer writes the next transaction.
//! A 2xx on ingest therefore means committed and on disk. Reads go to a small pool of read-only
//! connections, which WAL lets run beside the writer. Two more threads keep work out of the
//! acknowledging commit: the search indexer (`sqlite/search.rs`, its own database file) and the
//! checkpointer (`sqlite/checkpoint.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, params};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracellm_core::api::{
    self, Analytics, AnalyticsQuery, AnalyticsRow, Cursor, Failure, FailurePage, TokenTotals,
    TracePage, TraceQuery,
};
use tracellm_core::model::{PREVIEW_CHARS, preview};
use tracellm_core::otel::SpanBatch;
use tracellm_core::{
    Assembler, Span, SpanEvent, SpanKind, Status, Tokens, Trace, TraceInput, TraceSummary, text,
    time,
};

use crate::merge::TextSources;

mod checkpoint;
mod durable;
mod ids;
mod merge;
mod search;
mod tokenizer;

use crate::doc;
use crate::{
    ApiKey, EventKind, Ingested, NewApiKey, Project, Result, StorageFault, Store, StoreError,
    StoreEvent, StoreInfo,
};

/// The statement `find_trace` runs to read `cols` of a trace's row, checked against the trace.
macro_rules! trace_row {
    ($cols:literal) => {
        concat!("SELECT ", $cols, " FROM traces WHERE pk = ?1 AND project_id = ?2 AND id = ?3")
    };
}

/// Tuning of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read connections (queries beyond this wait their turn).
    pub readers: usize,
    /// Ingest requests that may wait for the writer; beyond this, ingest answers "busy".
    pub queue_requests: usize,
    /// Bytes of prepared data that may wait for the writer (the memory bound of the queue);
    /// beyond this, ingest answers "busy".
    pub queue_bytes: usize,
    /// Most traces written in one transaction.
    pub max_batch_traces: usize,
    /// fsync the WAL before a commit is answered (durable across power loss, not only process
    /// crashes).
    pub sync_full: bool,
    /// Prices and limits for re-assembling traces whose spans arrive over many requests.
    pub assembler: Arc<Assembler>,
    /// Called on the writer's and the indexer's threads once ingest has gone quiet and they
    /// have released their caches, and on the checkpointer's when it closes its connection: a
    /// binary whose allocator keeps each thread's freed memory (mimalloc) hands it back to the
    /// OS here.
    pub on_quiet: Option<fn()>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            queue_requests: 1024,
            queue_bytes: 256 * 1024 * 1024,
            max_batch_traces: 2000,
            sync_full: true,
            assembler: Arc::new(Assembler::default()),
            on_quiet: None,
        }
    }
}

/// Versioned schema migrations; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE traces (
    pk                INTEGER PRIMARY KEY,
    project_id        TEXT NOT NULL,
    id                TEXT NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    ts                INTEGER NOT NULL,
    end_ts            INTEGER,
    latency_ms        REAL,
    model             TEXT,
    provider          TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    tokens_estimated  INTEGER NOT NULL,
    cached_tokens     INTEGER,
    cost_usd          REAL,
    retries           INTEGER NOT NULL,
    failure_reason    TEXT,
    session_id        TEXT,
    user_id           TEXT,
    tags              TEXT NOT NULL,
    span_count        INTEGER NOT NULL,
    error_count       INTEGER NOT NULL,
    prompt_preview    TEXT,
    response_preview  TEXT,
    prompt            TEXT,
    response          TEXT,
    metadata          TEXT NOT NULL,
    input             TEXT,
    updated_us        INTEGER NOT NULL,
    UNIQUE (project_id, id)
);
CREATE INDEX traces_by_time    ON traces (project_id, ts DESC, pk DESC);
CREATE INDEX traces_by_status  ON traces (project_id, status, ts DESC, pk DESC);
CREATE INDEX traces_by_model   ON traces (project_id, model, ts DESC, pk DESC);
CREATE INDEX traces_by_session ON traces (project_id, session_id, ts DESC, pk DESC)
    WHERE session_id IS NOT NULL;
CREATE INDEX traces_by_user    ON traces (project_id, user_id, ts DESC, pk DESC)
    WHERE user_id IS NOT NULL;

CREATE TABLE trace_tags (
    project_id TEXT NOT NULL,
    tag        TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    trace_pk   INTEGER NOT NULL,
    PRIMARY KEY (project_id, tag, ts, trace_pk)
) WITHOUT ROWID;

-- A rowid table, not WITHOUT ROWID: span documents run to kilobytes, and a WITHOUT ROWID
-- b-tree spills every row over ~1 KB into an overflow page of its own.
CREATE TABLE spans (
    trace_pk INTEGER NOT NULL,
    id       TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    doc      TEXT NOT NULL
);
CREATE UNIQUE INDEX spans_by_trace ON spans (trace_pk, id);

-- Events from OTLP logs whose span has not arrived yet.
CREATE TABLE pending_events (
    project_id  TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    span_id     TEXT NOT NULL,
    doc         TEXT NOT NULL,
    received_us INTEGER NOT NULL
);
CREATE INDEX pending_by_trace ON pending_events (project_id, trace_id);

-- Contentless (the text lives in traces and spans) and without positions (detail = none):
-- searches are sets of words, so positions would only cost index size and ingest time.
CREATE VIRTUAL TABLE trace_fts USING fts5(
    body, content = '', contentless_delete = 1, detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Merge index segments 16 at a time (the most FTS5 allows): merging was a third of the writer's
-- time at 8; search latency did not move (scripts/bench).
INSERT INTO trace_fts (trace_fts, rank) VALUES ('automerge', 16);
"#,
    r#"
ALTER TABLE traces ADD COLUMN environment TEXT;

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    created_us  INTEGER NOT NULL
);
INSERT INTO projects (id, name, description, created_us)
    VALUES ('default', 'default', 'Traces sent without an API key', 0);

-- Keys are stored as the SHA-256 of the secret, never the secret itself.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    environment  TEXT NOT NULL,
    name         TEXT,
    prefix       TEXT NOT NULL,
    hash         BLOB NOT NULL UNIQUE,
    created_us   INTEGER NOT NULL,
    revoked_us   INTEGER,
    last_used_us INTEGER
);
CREATE INDEX api_keys_by_project ON api_keys (project_id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
-- Analytics read nine numbers of every trace in a time range. From the table they were spread
-- over rows of kilobytes (prompts, responses, metadata): 183 ms p95 for the last 24 h over 1 M
-- spans. This index holds those numbers alone, in time order, and answers the query by itself.
CREATE INDEX traces_for_analytics ON traces (project_id, ts, environment, status, model,
    latency_ms, prompt_tokens, completion_tokens, total_tokens, cost_usd, span_count);
"#,
    r#"
-- FTS5 merges a level's segments all at once (a "crisis merge", inside the committing
-- transaction) when the level holds `crisismerge` of them, 16 by default: the same number as
-- our automerge, so every merge was a crisis merge, and every ~40 s at 10,000 spans/s one commit
-- took 0.8 s while it merged the upper levels. Well above automerge, the incremental merging
-- (bounded work per commit) does all of it.
INSERT INTO trace_fts (trace_fts, rank) VALUES ('crisismerge', 128);
"#,
    r#"
-- Log events whose span never arrives are dropped after a while, oldest first.
CREATE INDEX pending_by_age ON pending_events (received_us);
"#,
    r#"
-- Full-text search moves to a database of its own, written by a thread of its own (see
-- sqlite/search.rs): the transaction that acknowledges ingest only queues the trace here.
-- AUTOINCREMENT: numbers are never reused once the indexed rows are trimmed.
DROP TABLE trace_fts;
CREATE TABLE fts_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pk  INTEGER NOT NULL
);
"#,
    r#"
-- The indexes by session and by user move to the search database (`trace_keys`, see
-- sqlite/search.rs): their random keys cost a 16 KB page per index and trace in every commit.
DROP INDEX traces_by_session;
DROP INDEX traces_by_user;
"#,
    r#"
-- Trace ids leave the traces table's UNIQUE index: W3C ids are random, and indexing each on
-- arrival dirtied a 16 KB page per trace (most of the writer's bytes at millions of traces).
-- New ids are appended to `recent_ids` and merged into `trace_ids` in sorted runs (see
-- sqlite/ids.rs). Row keys are kept, so spans, tags and the search index stay as they are.
-- SQLite's ALTER TABLE cannot drop a UNIQUE constraint: `traces` is rebuilt, its columns restated
-- as migrations 1-7 left them but for `UNIQUE (project_id, id)`, copied, and renamed into place
-- (SQLite's own recipe for other schema changes); no table refers to it by foreign key.
CREATE TABLE trace_ids (
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL,
    pk         INTEGER NOT NULL,
    PRIMARY KEY (project_id, id)
) WITHOUT ROWID;
INSERT INTO trace_ids (project_id, id, pk) SELECT project_id, id, pk FROM traces ORDER BY 1, 2;
CREATE TABLE recent_ids (
    pk         INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL
);
CREATE TABLE traces_rebuilt (
    pk                INTEGER PRIMARY KEY,
    project_id        TEXT NOT NULL,
    id                TEXT NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    ts                INTEGER NOT NULL,
    end_ts            INTEGER,
    latency_ms        REAL,
    model             TEXT,
    provider          TEXT,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    tokens_estimated  INTEGER NOT NULL,
    cached_tokens     INTEGER,
    cost_usd          REAL,
    retries           INTEGER NOT NULL,
    failure_reason    TEXT,
    session_id        TEXT,
    user_id           TEXT,
    tags              TEXT NOT NULL,
    span_count        INTEGER NOT NULL,
    error_count       INTEGER NOT NULL,
    prompt_preview    TEXT,
    response_preview  TEXT,
    prompt            TEXT,
    response          TEXT,
    metadata          TEXT NOT NULL,
    input             TEXT,
    updated_us        INTEGER NOT NULL,
    environment       TEXT
);
INSERT INTO traces_rebuilt SELECT * FROM traces;
DROP TABLE traces;
ALTER TABLE traces_rebuilt RENAME TO traces;
CREATE INDEX traces_by_time    ON traces (project_id, ts DESC, pk DESC);
CREATE INDEX traces_by_status  ON traces (project_id, status, ts DESC, pk DESC);
CREATE INDEX traces_by_model   ON traces (project_id, model, ts DESC, pk DESC);
CREATE INDEX traces_for_analytics ON traces (project_id, ts, environment, status, model,
    latency_ms, prompt_tokens, completion_tokens, total_tokens, cost_usd, span_count);
"#,
    r#"
-- A trace's prompt, response, metadata and merge input as one document, compressed as span
-- documents are (see `RowTexts`): kept in columns of their own, with previews repeating the
-- first 200 characters of the prompt and the response, they were 1.3 KB of a row's 1.5 KB.
-- Rows written before keep those columns; rows written since leave them empty.
ALTER TABLE traces ADD COLUMN texts BLOB;
"#,
    r#"
-- The lists' indexes in ascending order. In descending order the newest traces went first in
-- each index (or in each status's and model's part of it), where SQLite splits a full leaf in
-- two: the leaves stayed half empty and every commit dirtied more of them. Appended last
-- instead, SQLite fills a leaf before it starts the next; it reads them backwards for the
-- newest-first lists, and the row key, which ends every entry of an index, orders equal start
-- times (it was also written a second time as a column of its own).
DROP INDEX traces_by_time;
DROP INDEX traces_by_status;
DROP INDEX traces_by_model;
CREATE INDEX traces_by_time   ON traces (project_id, ts);
CREATE INDEX traces_by_status ON traces (project_id, status, ts);
CREATE INDEX traces_by_model  ON traces (project_id, model, ts);
"#,
];

/// Most text indexed for full-text search per trace.
const MAX_FTS_BYTES: usize = 1 << 20;

struct WriteRequest {
    ops: Vec<Op>,
    ack: oneshot::Sender<Result<Vec<Ingested>>>,
}

/// A small write outside ingest (projects, keys, settings), run by the writer thread in its own
/// transaction so that it never contends with ingest for the database lock.
type AdminJob = Box<dyn FnOnce(&Connection) -> Result<serde_json::Value> + Send>;

enum Job {
    Write(WriteRequest),
    Admin(AdminJob, oneshot::Sender<Result<serde_json::Value>>),
    /// Merge the trace ids waiting in memory, if ingest is quiet (see `settle_ids`).
    Tidy,
}

/// One trace's change, as the writer applies it.
enum Op {
    /// A whole trace, replacing any earlier version (native ingest).
    Replace(Prepared),
    /// Spans and log events to merge into what the trace already has (OTLP). `fresh` is the
    /// trace assembled from this batch alone, used as-is when the trace is new.
    Merge { project_id: String, batch: SpanBatch, fresh: Option<Box<Prepared>> },
}

impl Op {
    /// Approximate bytes held while waiting for the writer.
    fn size(&self) -> usize {
        let prepared = |p: &Prepared| {
            p.spans.iter().map(|(id, _, doc)| id.len() + doc.len()).sum::<usize>()
                + p.fts.len()
                + p.texts.len()
                + 512
        };
        match self {
            Op::Replace(p) => prepared(p),
            Op::Merge { batch, fresh, .. } => {
                fresh.as_deref().map_or(0, prepared)
                    + batch.spans.len() * 2048
                    + batch.log_events.len() * 512
                    + 256
            }
        }
    }
}

/// A trace with everything the writer needs already serialized, so that the single writer
/// thread spends its time in SQLite only; preparing runs on the callers' threads in parallel.
struct Prepared {
    summary: TraceSummary,
    tags: String,
    texts: doc::Packed,
    spans: Vec<(String, i64, doc::Packed)>,
    fts: Arc<str>,
    /// `spans` holds only what a merge added or changed: the trace's other spans stay stored.
    merged: bool,
}

fn prepare(t: Trace, input: Option<&TraceInput>) -> Result<Prepared> {
    let mut spans = Vec::with_capacity(t.spans.len());
    for s in &t.spans {
        let text = tracellm_core::json::span_to_vec(s);
        spans.push((s.id.clone(), time::to_micros(s.start_time), doc::pack_json(text)));
    }
    Ok(Prepared {
        texts: RowTexts::pack(&t, &text_sources(&t), input)?,
        tags: json(&t.tags)?,
        fts: fts_body(&t).into(),
        spans,
        summary: t.summary(),
        merged: false,
    })
}

/// The spans of a whole trace whose texts its prompt and response are, when they are longer
/// than their previews (see [`RowTexts`]). The roll-up took them from the first LLM call or a
/// root (the prompt) and from a root or the last LLM call (the response), but a native trace's
/// texts may since have been redacted apart from its spans': so they are compared, with the
/// first few spans that can be such a source from either end.
fn text_sources(t: &Trace) -> TextSources {
    const TRIES: usize = 4;
    let long = |text: &Option<String>| text.as_ref().is_some_and(|s| s.len() > PREVIEW_CHARS);
    let can_be = |s: &&Span| s.kind == SpanKind::Llm || s.parent_id.is_none();
    let mut sources = TextSources::default();
    if long(&t.prompt) {
        sources.prompt = (t.spans.iter().filter(can_be).take(TRIES))
            .find(|s| text::prompt_text(&s.input) == t.prompt)
            .map(|s| s.id.clone());
    }
    if long(&t.response) {
        sources.response = (t.spans.iter().rev().filter(can_be).take(TRIES))
            .find(|s| text::response_text(&s.output) == t.response)
            .map(|s| s.id.clone());
    }
    sources
}

/// What a trace's row keeps beside its summary, as one document in its `texts` column: the
/// run's prompt and response, the trace's metadata, and (OTLP traces) what a later merge starts
/// from. Compressed with the span documents' dictionary, a row of `otlp_load.py`'s traces is
/// ~745 bytes instead of ~1,490, and the previews of lists are cut from it when read.
///
/// A prompt or response longer than its preview that is the text of one of the trace's spans
/// (as the roll-up takes them: the last user message of an LLM call's input, a root's output)
/// is not kept twice: the row keeps the span's id and the preview (`prompt_of`, `response_of`),
/// and reading the trace takes the text from that span again.
#[derive(Default, serde::Deserialize)]
struct RowTexts {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    prompt_of: Option<(String, String)>,
    #[serde(default)]
    response_of: Option<(String, String)>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    input: Option<TraceInput>,
}

/// A trace's prompt and response, in that order.
type TextPair = [Option<String>; 2];

/// [`RowTexts`] to write, borrowed from the trace (fields left out when empty).
#[derive(serde::Serialize)]
struct RowTextsOf<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_of: Option<(&'a str, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_of: Option<(&'a str, String)>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    metadata: &'a serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a TraceInput>,
}

impl RowTexts {
    fn pack(t: &Trace, sources: &TextSources, input: Option<&TraceInput>) -> Result<doc::Packed> {
        // a text longer than its preview is kept as a reference when a span holds it
        fn split<'a>(
            text: &'a Option<String>,
            span: &'a Option<String>,
        ) -> (Option<&'a str>, Option<(&'a str, String)>) {
            match (text, span) {
                (Some(text), Some(span)) => {
                    let cut = preview(text, PREVIEW_CHARS);
                    if cut.len() < text.len() {
                        (None, Some((span.as_str(), cut)))
                    } else {
                        (Some(text.as_str()), None)
                    }
                }
                (text, _) => (text.as_deref(), None),
            }
        }
        let (prompt, prompt_of) = split(&t.prompt, &sources.prompt);
        let (response, response_of) = split(&t.response, &sources.response);
        let of =
            RowTextsOf { prompt, response, prompt_of, response_of, metadata: &t.metadata, input };
        let json = serde_json::to_vec(&of).map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(doc::pack_json(json))
    }

    /// The texts of a row read with its `texts` column at `at`; None for a row written before
    /// that column, whose texts are in columns of their own.
    fn read(r: &Row, at: usize) -> rusqlite::Result<Option<RowTexts>> {
        read_texts(r, at, |json| serde_json::from_slice(json))
    }

    /// The prompt and response whole, and their previews: read from the spans they are when
    /// the row keeps a reference (only the preview when that span is gone).
    fn resolve(self, conn: &Connection, pk: i64) -> Result<(TextPair, TextPair)> {
        let mut texts = [self.prompt, self.response];
        let mut previews = [None, None];
        for (i, of) in [self.prompt_of, self.response_of].into_iter().enumerate() {
            match of {
                Some((span, cut)) => {
                    let span = merge::stored_span(conn, pk, &span)?;
                    texts[i] = span.and_then(|s| match i {
                        0 => text::prompt_text(&s.input),
                        _ => text::response_text(&s.output),
                    });
                    previews[i] = Some(cut);
                    if texts[i].is_none() {
                        texts[i] = previews[i].clone();
                    }
                }
                None => previews[i] = texts[i].as_deref().map(|t| preview(t, PREVIEW_CHARS)),
            }
        }
        Ok((texts, previews))
    }
}

/// The previews of the prompt and response of a row's [`RowTexts`], for a list: borrowed where
/// they need no unescaping, the rest of the document skipped.
#[derive(serde::Deserialize)]
struct Previews<'a> {
    #[serde(default, borrow)]
    prompt: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    response: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    prompt_of: Option<PreviewOf<'a>>,
    #[serde(default, borrow)]
    response_of: Option<PreviewOf<'a>>,
}

/// The preview kept beside a span's id in `prompt_of` and `response_of`.
#[derive(serde::Deserialize)]
struct PreviewOf<'a>(serde::de::IgnoredAny, #[serde(borrow)] std::borrow::Cow<'a, str>);

impl Previews<'_> {
    /// The previews of the prompt and the response of a row read with its `texts` column at
    /// `at`; None for a row written before that column, whose previews are columns.
    fn read(r: &Row, at: usize) -> rusqlite::Result<Option<(Option<String>, Option<String>)>> {
        read_texts(r, at, |json| {
            let p: Previews = serde_json::from_slice(json)?;
            let cut = |whole: Option<std::borrow::Cow<'_, str>>, of: Option<PreviewOf<'_>>| {
                of.map(|of| of.1.into_owned()).or_else(|| whole.map(|c| preview(&c, PREVIEW_CHARS)))
            };
            Ok((cut(p.prompt, p.prompt_of), cut(p.response, p.response_of)))
        })
    }
}

/// Reads the `texts` document at column `at` of a row with `read`; None when it is NULL.
fn read_texts<T>(
    r: &Row,
    at: usize,
    read: impl FnOnce(&[u8]) -> serde_json::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let v = r.get_ref(at)?;
    if v == rusqlite::types::ValueRef::Null {
        return Ok(None);
    }
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(at, v.data_type(), e)
    };
    let json = doc::json_text(v).map_err(|e| failed(Box::new(e)))?;
    read(&json).map(Some).map_err(|e| failed(Box::new(e)))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

pub struct SqliteStore {
    path: PathBuf,
    /// One permit per KiB of prepared data waiting for the writer.
    queued_kib: Arc<Semaphore>,
    queue_kib: usize,
    assembler: Arc<Assembler>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    progress: Arc<search::Progress>,
    readers: Arc<ReaderPool>,
    ids: Arc<ids::TraceIds>,
    events: broadcast::Sender<StoreEvent>,
}

fn configure(conn: &Connection, sync_full: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", if sync_full { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "cache_size", -16_000)?; // 16 MB
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {version}, newer than this tracellm ({known}); upgrade tracellm"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied migration");
    }
    Ok(())
}

impl SqliteStore {
    pub async fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let p = path.clone();
        let o = opts.clone();
        let checkpoints = Arc::new(checkpoint::Checkpoints::default());
        let ckpt = Arc::clone(&checkpoints);
        let (conn, search_conn, progress, ids) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let checkpoints = ckpt;
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let mut conn = Connection::open(&p).map_err(|e| {
                    StoreError::Unavailable(format!("cannot open {}: {e}", p.display()))
                })?;
                // Span documents are 1-3 KB: 16 KB pages hold several per page where 4 KB pages
                // hold one and waste the rest. Takes effect on a new database only.
                conn.pragma_update(None, "page_size", 16384)?;
                let mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::Internal(format!(
                        "cannot enable WAL (journal mode {mode})"
                    )));
                }
                // the writer's commits are synced by the sync thread (see sqlite/durable.rs)
                configure(&conn, false)?;
                migrate(&mut conn)?;
                let ids = Arc::new(ids::TraceIds::load(&p)?);
                checkpoints.install(&mut conn)?;
                // texts waiting for the indexer: a quarter of the ingest queue's memory bound
                let (search_conn, progress) = search::open(&p, &conn, o.queue_bytes / 4)?;
                Ok((conn, search_conn, progress, ids))
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;

        // the filter of the ids `trace_ids` holds is filled while ingest is heavy
        ids.start_filler(path.clone())?;
        let (events, _) = broadcast::channel(4096);
        let (tx, rx) = mpsc::channel(opts.queue_requests.max(1));
        let max_batch = opts.max_batch_traces.max(1);
        let asm = Arc::clone(&opts.assembler);
        let readers = Arc::new(ReaderPool::new(path.clone(), opts.readers.max(1)));
        let indexer = search::Indexer {
            conn: search_conn,
            main: path.clone(),
            progress: Arc::clone(&progress),
            readers: Arc::clone(&readers),
            on_quiet: opts.on_quiet,
        };
        let indexer = std::thread::Builder::new()
            .name("sqlite-indexer".into())
            .spawn(move || indexer.run())
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let checkpointer = {
            let (c, p, sync_full) = (Arc::clone(&checkpoints), path.clone(), opts.sync_full);
            let on_quiet = opts.on_quiet;
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || {
                    let open = |path: &Path| {
                        let conn = Connection::open(path)?;
                        configure(&conn, sync_full)?;
                        Ok(conn)
                    };
                    c.run(p, open, on_quiet)
                })
                .map_err(|e| StoreError::Internal(e.to_string()))?
        };
        let syncer = {
            let (mut wal, sync_full) = (durable::WalFile::new(&path), opts.sync_full);
            let sync = move || if sync_full { wal.sync() } else { Ok(()) };
            durable::Syncer::start(sync, Arc::clone(&progress), events.clone(), opts.on_quiet)
                .map_err(|e| StoreError::Internal(e.to_string()))?
        };
        let w = Writer {
            checkpoints,
            conn,
            path: path.clone(),
            syncer,
            readers: Arc::clone(&readers),
            stale: false,
            progress: Arc::clone(&progress),
            trimmed: 0,
            ids: Arc::clone(&ids),
            on_quiet: opts.on_quiet,
            merges: merge::Merges::default(),
        };
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(w, rx, max_batch, asm))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(SqliteStore {
            queued_kib: Arc::new(Semaphore::new(
                (opts.queue_bytes / 1024).clamp(1, u32::MAX as usize),
            )),
            queue_kib: (opts.queue_bytes / 1024).clamp(1, u32::MAX as usize),
            assembler: Arc::clone(&opts.assembler),
            readers,
            path,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            indexer: Mutex::new(Some(indexer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            progress,
            ids,
            events,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

impl SqliteStore {
    async fn off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Runs an admin write on the writer thread; waits for room in the queue (admin writes are
    /// rare and must not fail because ingest is busy).
    async fn admin<T: serde::de::DeserializeOwned>(
        &self,
        job: impl FnOnce(&Connection) -> Result<serde_json::Value> + Send + 'static,
    ) -> Result<T> {
        let queue = self.queue.lock().expect("queue lock").clone().ok_or(StoreError::Closed)?;
        let (ack, done) = oneshot::channel();
        queue.send(Job::Admin(Box::new(job), ack)).await.map_err(|_| StoreError::Closed)?;
        let v = done.await.map_err(|_| StoreError::Closed)??;
        serde_json::from_value(v).map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// A query with search words, or by session or user, waits for the search database to hold
    /// every commit made before it. Says whether the query filters by session or user and their
    /// index may answer it: not while it is being rebuilt or far behind (the filter then reads
    /// `traces` itself, slower but complete).
    async fn search_ready(&self, q: &TraceQuery) -> bool {
        let by_keys = q.session_id.is_some() || q.user_id.is_some();
        let caught_up = (q.q.is_some() || by_keys) && self.progress.caught_up(by_keys).await;
        by_keys && caught_up
    }

    /// Queues ops for the writer and waits for their commit; a full queue is "busy", not a wait.
    async fn submit(&self, ops: Vec<Op>) -> Result<Vec<Ingested>> {
        let queue = self.queue.lock().expect("queue lock").clone().ok_or(StoreError::Closed)?;
        let kib = ops.iter().map(Op::size).sum::<usize>().div_ceil(1024).max(1);
        // A request larger than the whole bound may still pass alone.
        let kib = u32::try_from(kib.min(self.queue_kib)).unwrap_or(u32::MAX);
        // Held until the writer has answered: the bytes waiting in the queue stay bounded.
        let _permit = Arc::clone(&self.queued_kib).try_acquire_many_owned(kib).map_err(|_| {
            StoreError::Unavailable(
                "ingest queue is full (memory bound reached); retry shortly".into(),
            )
        })?;
        let (ack, done) = oneshot::channel();
        queue.try_send(Job::Write(WriteRequest { ops, ack })).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("ingest queue is full; retry shortly".into())
            }
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        done.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer's ops for a request's batches (see [`merge_op`]).
fn merge_ops(asm: &Assembler, project_id: &str, batches: Vec<SpanBatch>) -> Result<Vec<Op>> {
    batches.into_iter().map(|batch| merge_op(asm, project_id, batch)).collect()
}

/// Turns a batch into the writer's op. When the batch can stand alone (the common case: a new
/// trace whose spans all came in one request), the trace is assembled and serialized here, off
/// the writer thread, and the batch keeps only what a merge would still need.
fn merge_op(asm: &Assembler, project_id: &str, mut batch: SpanBatch) -> Result<Op> {
    let standalone = !batch.spans.is_empty()
        && batch.log_events.iter().all(|(id, _)| batch.spans.iter().any(|s| &s.id == id));
    if !standalone {
        return Ok(Op::Merge { project_id: project_id.to_string(), batch, fresh: None });
    }
    let mut spans = std::mem::take(&mut batch.spans);
    crate::merge::fold_events(&mut spans, std::mem::take(&mut batch.log_events));
    let mut input = batch.input.clone();
    input.id = Some(batch.trace_id.clone());
    let trace = asm
        .partial(project_id, input.clone(), spans)
        .map_err(|e| StoreError::Invalid(format!("trace {}: {e}", batch.trace_id)))?;
    let fresh = Some(Box::new(prepare(trace, Some(&input))?));
    Ok(Op::Merge { project_id: project_id.to_string(), batch, fresh })
}

/// The write connection and what it takes to open it again.
struct Writer {
    conn: Connection,
    path: PathBuf,
    /// Makes the commits durable, then answers them (see sqlite/durable.rs).
    syncer: durable::Syncer,
    readers: Arc<ReaderPool>,
    /// A write was refused as read-only: open the connections again before the next job.
    stale: bool,
    /// How far indexing is, and the hand-off where committed texts go to be indexed.
    progress: Arc<search::Progress>,
    /// `fts_log` is trimmed up to here.
    trimmed: i64,
    /// Trace ids to row keys (see sqlite/ids.rs).
    ids: Arc<ids::TraceIds>,
    checkpoints: Arc<checkpoint::Checkpoints>,
    on_quiet: Option<fn()>,
    /// What traces that grow over many requests need between them (see sqlite/merge.rs).
    merges: merge::Merges,
}

impl Writer {
    /// A connection opened while the data directory was read-only stays read-only, and so does
    /// the shared-memory index that every connection of the process shares; once the directory
    /// is writable again, new connections take writes, without a restart.
    fn reopen_if_read_only(&mut self) {
        if !self.stale && !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return;
        }
        // every connection must be closed for the shared-memory index to be opened anew
        self.readers.close_idle();
        self.merges.clear();
        let placeholder = Connection::open_in_memory().expect("in-memory connection");
        drop(std::mem::replace(&mut self.conn, placeholder));
        let opened = Connection::open(&self.path).and_then(|mut c| {
            configure(&c, false)?;
            self.checkpoints.install(&mut c)?;
            Ok(c)
        });
        match opened {
            Ok(c) => {
                self.stale = c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true);
                if !self.stale {
                    tracing::info!("data directory is writable again: ingest resumes");
                }
                self.conn = c;
            }
            Err(e) => tracing::warn!(error = %e, "write connection cannot be opened again yet"),
        }
    }

    /// While ingest is quiet: the trace id filter is dropped (filled again once ingest is heavy),
    /// the write connection, the idle read connections and the indexer hand back the memory of
    /// their page caches (up to 16 MB each; the files stay in the OS's cache), and the C
    /// allocator returns what they freed to the OS (the indexer, last).
    fn release_memory(&mut self) {
        self.merges.clear();
        let bytes = self.ids.drop_filter();
        if bytes > 0 {
            tracing::debug!(bytes, "trace id filter dropped");
        }
        let _ = self.conn.release_memory();
        self.readers.release_idle();
        if let Some(f) = self.on_quiet {
            f();
        }
        self.progress.handoff().ask_release();
    }

    /// SQLite reports some refused writes as a bare I/O error; a probe write beside the database
    /// tells a full disk or a read-only filesystem from a failing one.
    fn diagnose(&mut self, e: StoreError) -> StoreError {
        let e = self.classify(e);
        if matches!(e, StoreError::Storage(StorageFault::ReadOnly)) {
            self.stale = true;
        }
        e
    }

    fn classify(&self, e: StoreError) -> StoreError {
        let StoreError::Storage(StorageFault::Io) = e else { return e };
        let probe = self.path.with_extension("write-probe");
        let outcome = std::fs::write(&probe, b"probe");
        let _ = std::fs::remove_file(&probe);
        match outcome {
            Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::Storage(StorageFault::ReadOnly)
            }
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::Storage(StorageFault::Full)
            }
            _ => StoreError::Storage(StorageFault::Io),
        }
    }
}

fn writer_loop(mut w: Writer, mut rx: mpsc::Receiver<Job>, max_batch: usize, asm: Arc<Assembler>) {
    let mut held: Option<Job> = None;
    let mut docs = Vec::new();
    let mut last_write = std::time::Instant::now();
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => break,
            },
        };
        w.reopen_if_read_only();
        let first = match first {
            Job::Admin(job, ack) => {
                match run_admin(&mut w.conn, job) {
                    Ok(out) => w.syncer.send(durable::Committed::Admin(ack, out)),
                    Err(e) => {
                        let _ = ack.send(Err(w.diagnose(e)));
                    }
                }
                continue;
            }
            Job::Tidy => {
                // a growing trace's state not used since the last round goes
                w.merges.sweep();
                if last_write.elapsed() >= QUIET {
                    held = settle_ids(&mut w, &mut rx);
                    if held.is_none() {
                        w.release_memory();
                    }
                }
                continue;
            }
            Job::Write(r) => r,
        };
        let mut n = first.ops.len();
        let mut batch = vec![first];
        while n < max_batch {
            match rx.try_recv() {
                Ok(Job::Write(r)) => {
                    n += r.ops.len();
                    batch.push(r);
                }
                Ok(admin) => {
                    held = Some(admin);
                    break;
                }
                Err(_) => break,
            }
        }
        // an indexer behind by its bound holds the writer back (and so ingest, with 503s)
        w.progress.handoff().wait_for_room();
        // the log is trimmed in steps, not at every commit, up to what the search database holds
        // (texts and keys)
        let written = w.progress.written();
        let trim_to = (written - w.trimmed >= 1024).then_some(written);
        last_write = std::time::Instant::now();
        match write_batch(&mut w.conn, &batch, &asm, &mut docs, trim_to, &w.ids, &mut w.merges) {
            Ok(outcomes) => {
                if let Some(seq) = trim_to {
                    w.trimmed = seq;
                }
                // answered, announced and indexed once the WAL holding the commit is on disk,
                // while the next transaction is written
                let mut events = Vec::new();
                let replies = batch
                    .into_iter()
                    .zip(outcomes)
                    .map(|(req, outcome)| {
                        let reply = outcome.map(|written| {
                            let mut ids = Vec::with_capacity(written.len());
                            for (ingested, summary) in written {
                                let kind = if ingested.created {
                                    EventKind::Created
                                } else {
                                    EventKind::Updated
                                };
                                if let Some(summary) = summary {
                                    events.push(StoreEvent { kind, trace: Arc::new(summary) });
                                }
                                ids.push(ingested);
                            }
                            ids
                        });
                        (req.ack, reply)
                    })
                    .collect();
                let docs = std::mem::take(&mut docs);
                w.syncer.send(durable::Committed::Write { replies, events, docs });
            }
            Err(e) => {
                let e = w.diagnose(e);
                tracing::error!(error = %e, traces = n, path = %w.path.display(), "write transaction failed");
                for req in batch {
                    let _ = req.ack.send(Err(clone_err(&e)));
                }
            }
        }
        w.checkpoints.writer_turn(&w.conn);
    }
    // every commit answered and its texts handed over before the indexer is told to stop
    w.syncer.stop();
    w.progress.handoff().close();
    w.checkpoints.close();
    if let Err(e) = w.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    tracing::debug!("sqlite writer stopped");
}

/// Hands back to the OS what a thread freed on releasing its SQLite caches: the binary's
/// allocator's share through `on_quiet`, then the C allocator's, which SQLite allocates with and
/// which keeps freed memory (after a load, tens of MB of page caches) until trimmed.
pub(crate) fn hand_back_freed(on_quiet: Option<fn()>) {
    if let Some(f) = on_quiet {
        f();
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// SQLite allocates with the C library's malloc, not the binary's allocator. glibc gives a thread
/// that finds the arenas busy one of its own (up to eight per core), and each arena keeps free
/// space of its own after a load: SQLite's threads (writer, indexer, checkpointer, readers) made
/// seven, holding 1.9-2.3 MiB when idle after a load where one arena holds 1.5-1.6. SQLite
/// calls the allocator about ten times per span stored, so the lock they share instead is
/// rarely contended (server CPU for a load did not move). Call before the threads start;
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment win.
pub fn one_c_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets a limit that glibc reads when it next creates an arena.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Ingest is quiet after this long without a write: the writer may settle trace ids then.
const QUIET: Duration =
    if cfg!(test) { Duration::from_millis(300) } else { Duration::from_secs(10) };

/// While ingest is quiet, merges every trace id waiting in memory into `trace_ids`, a slice per
/// transaction, so a quiet server holds none in memory and a restart has none to read back.
/// Stops at the first job that arrives, which it returns to be run next.
fn settle_ids(w: &mut Writer, rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    const SLICE: usize = 8192;
    loop {
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if !w.ids.freeze_waiting() {
            return None;
        }
        let step = (|| -> Result<ids::MergeStep> {
            let tx = w.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = w.ids.merge_step(&tx, SLICE)?;
            tx.commit()?;
            Ok(n)
        })();
        match step {
            Ok(n) => w.ids.merged(n),
            Err(e) => {
                tracing::debug!(error = %e, "merging trace ids failed");
                return None;
            }
        }
    }
}

fn run_admin(conn: &mut Connection, job: AdminJob) -> Result<serde_json::Value> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = job(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Storage(f) => StoreError::Storage(*f),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
    }
}

/// What each op did, and the summary to announce (none when nothing became visible).
type Written = Vec<(Ingested, Option<TraceSummary>)>;

/// One transaction for the whole batch. A request that fails (an invalid merge) must not fail
/// the others, but savepoints cost every page a copy into the sub-journal, so the batch is first
/// written without them; only when a request fails is that transaction rolled back and the
/// batch written again with each request in its own savepoint. A refused write (disk full,
/// read-only, I/O error) fails the whole batch instead: SQLite may already have rolled the
/// transaction back, and nothing of it may then be acknowledged.
///
/// `docs` receives the texts to index of what was committed; `trim_to` trims `fts_log` of what
/// the search index holds. Each commit also carries a step of the trace-id merge (twice the
/// batch's traces, so merging keeps ahead of arrivals; see sqlite/ids.rs).
fn write_batch(
    conn: &mut Connection,
    batch: &[WriteRequest],
    asm: &Assembler,
    docs: &mut Vec<search::Doc>,
    trim_to: Option<i64>,
    ids: &ids::TraceIds,
    merges: &mut merge::Merges,
) -> Result<Vec<Result<Written>>> {
    let traces: usize = batch.iter().map(|r| r.ops.len()).sum();
    let step = (2 * traces).max(32);
    if !conn.is_autocommit() {
        // left open by an earlier failure whose rollback failed too: never build on it
        conn.execute_batch("ROLLBACK")?;
    }
    let trim = |tx: &Connection| -> Result<()> {
        if let Some(seq) = trim_to {
            tx.prepare_cached("DELETE FROM fts_log WHERE seq <= ?1")?.execute([seq])?;
        }
        Ok(())
    };
    docs.clear();
    // left by a transaction that failed
    merges.rolled_back();
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        trim(&tx)?;
        let now = chrono::Utc::now().timestamp_micros();
        let mut w = Writes { asm, now, docs: &mut *docs, ids, merges: &mut *merges };
        let mut out = Vec::with_capacity(batch.len());
        let mut failed = None;
        'requests: for req in batch {
            let mut written = Vec::with_capacity(req.ops.len());
            for op in &req.ops {
                match write_op(&tx, op, &mut w) {
                    Ok(done) => written.push(done),
                    Err(e @ StoreError::Storage(_)) => return Err(e),
                    Err(e) => {
                        failed = Some(e);
                        break 'requests;
                    }
                }
            }
            out.push(Ok(written));
        }
        match failed {
            None => {
                let merged = ids.merge_step(&tx, step)?;
                tx.commit()?;
                ids.merged(merged);
                w.merges.committed();
                return Ok(out);
            }
            // the batch was this one request: its error is the answer
            Some(e) if batch.len() == 1 => {
                w.docs.clear();
                w.merges.rolled_back();
                return Ok(vec![Err(e)]);
            }
            Some(_) => w.merges.rolled_back(), // dropping `tx` rolls the batch back
        }
    }
    docs.clear();
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    trim(&tx)?;
    let now = chrono::Utc::now().timestamp_micros();
    let mut w = Writes { asm, now, docs, ids, merges };
    let mut out = Vec::with_capacity(batch.len());
    for req in batch {
        let sp = tx.savepoint()?;
        let mut written = Vec::with_capacity(req.ops.len());
        let mut result = Ok(());
        let kept = w.docs.len();
        let mark = w.merges.mark();
        for op in &req.ops {
            match write_op(&sp, op, &mut w) {
                Ok(done) => written.push(done),
                Err(e @ StoreError::Storage(_)) => return Err(e),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                sp.commit()?;
                out.push(Ok(written));
            }
            Err(e) => {
                drop(sp); // rolls back this request only
                w.docs.truncate(kept);
                w.merges.roll_back_to(mark);
                out.push(Err(e));
            }
        }
    }
    let merged = ids.merge_step(&tx, step)?;
    tx.commit()?;
    ids.merged(merged);
    w.merges.committed();
    Ok(out)
}

/// What the writes of one transaction share.
struct Writes<'a> {
    asm: &'a Assembler,
    /// The transaction's time, Unix microseconds.
    now: i64,
    /// Receives the texts to index of what is written.
    docs: &'a mut Vec<search::Doc>,
    ids: &'a ids::TraceIds,
    /// States of growing traces (sqlite/merge.rs), staged until the transaction commits.
    merges: &'a mut merge::Merges,
}

fn write_op(
    conn: &Connection,
    op: &Op,
    w: &mut Writes<'_>,
) -> Result<(Ingested, Option<TraceSummary>)> {
    match op {
        Op::Replace(t) => {
            let (project_id, id) = (&t.summary.project_id, &t.summary.id);
            let stored = find_trace(conn, w.ids, project_id, id, trace_row!("tags, ts"), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .map(|(pk, (tags, ts))| Stored { pk, tags, ts });
            if let Some(s) = &stored {
                w.merges.forget(s.pk);
            }
            let (_, created) = write_trace(conn, t, stored, w)?;
            Ok((Ingested { id: t.summary.id.clone(), created }, Some(t.summary.clone())))
        }
        Op::Merge { project_id, batch, fresh } => {
            merge_trace(conn, project_id, batch, fresh.as_deref(), w)
        }
    }
}

/// A stored trace's text for search and its session and user, by row key (for the indexer
/// catching up).
fn stored_text(conn: &Connection, pk: i64) -> Result<Option<(String, search::Keys)>> {
    let row: Option<(String, search::Keys)> = conn
        .prepare_cached("SELECT id, project_id, ts, session_id, user_id FROM traces WHERE pk = ?1")?
        .query_row([pk], |r| {
            let keys = search::Keys {
                project_id: r.get(1)?,
                ts: r.get(2)?,
                session_id: r.get(3)?,
                user_id: r.get(4)?,
            };
            Ok((r.get(0)?, keys))
        })
        .optional()?;
    let Some((id, keys)) = row else { return Ok(None) };
    Ok(trace_at(conn, pk, &keys.project_id, &id)?.map(|t| (fts_body(&t), keys)))
}

fn fts_body(t: &Trace) -> String {
    let mut body = String::new();
    text::each_searchable_text(t, |s| {
        if body.len() >= MAX_FTS_BYTES {
            return;
        }
        let mut cut = s.len().min(MAX_FTS_BYTES - body.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        body.push_str(&s[..cut]);
        body.push('\n');
    });
    body
}

/// What a write replaces of a stored trace's row: its key, and the tags and time its
/// `trace_tags` rows were filed under.
struct Stored {
    pk: i64,
    tags: String,
    ts: i64,
}

/// Inserts or replaces one trace: its row key, and true when it is new (a new row, not over the
/// row `stored`, read by `find_trace` in this transaction). Its text for search is queued in
/// `fts_log` and in `w.docs`, for the indexer once committed.
fn write_trace(
    conn: &Connection,
    p: &Prepared,
    stored: Option<Stored>,
    w: &mut Writes<'_>,
) -> Result<(i64, bool)> {
    let t = &p.summary;
    let ts = time::to_micros(t.timestamp);
    let tags = &p.tags;
    // the texts' own columns (and the previews, cut from the texts when read) stay empty
    let (none, no_metadata) = (None::<&str>, "");
    let values: [&dyn ToSql; 31] = [
        &t.project_id,
        &t.id,
        &t.name,
        &t.status.as_str(),
        &ts,
        &t.end_time.map(time::to_micros),
        &t.latency_ms,
        &t.model,
        &t.provider,
        &(t.tokens.prompt as i64),
        &(t.tokens.completion as i64),
        &(t.tokens.total as i64),
        &t.tokens.estimated,
        &t.tokens.cached.map(|c| c as i64),
        &t.cost_usd,
        &t.retries,
        &t.failure_reason,
        &t.session_id,
        &t.user_id,
        &tags,
        &t.span_count,
        &t.error_count,
        &none,
        &none,
        &none,
        &none,
        &no_metadata,
        &none,
        &w.now,
        &t.environment,
        &p.texts,
    ];
    let (pk, created) = match stored {
        None => {
            conn.prepare_cached(
                "INSERT INTO traces (project_id, id, name, status, ts, end_ts, latency_ms, model,
                 provider, prompt_tokens, completion_tokens, total_tokens, tokens_estimated,
                 cached_tokens, cost_usd, retries, failure_reason, session_id, user_id, tags,
                 span_count, error_count, prompt_preview, response_preview, prompt, response,
                 metadata, input, updated_us, environment, texts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
            )?
            .execute(&values[..])?;
            let pk = conn.last_insert_rowid();
            w.ids.add(conn, &t.project_id, &t.id, pk)?;
            (pk, true)
        }
        Some(Stored { pk, tags: old_tags, ts: old_ts }) => {
            let old: Vec<String> = serde_json::from_str(&old_tags).unwrap_or_default();
            let mut del = conn.prepare_cached(
                "DELETE FROM trace_tags WHERE project_id = ?1 AND tag = ?2 AND ts = ?3 AND trace_pk = ?4",
            )?;
            for tag in &old {
                del.execute(params![t.project_id, tag, old_ts, pk])?;
            }
            if !p.merged {
                conn.prepare_cached("DELETE FROM spans WHERE trace_pk = ?1")?.execute([pk])?;
            }
            let mut v: Vec<&dyn ToSql> = values[2..].to_vec();
            v.push(&pk);
            conn.prepare_cached(
                "UPDATE traces SET name = ?1, status = ?2, ts = ?3, end_ts = ?4, latency_ms = ?5,
                 model = ?6, provider = ?7, prompt_tokens = ?8, completion_tokens = ?9,
                 total_tokens = ?10, tokens_estimated = ?11, cached_tokens = ?12, cost_usd = ?13,
                 retries = ?14, failure_reason = ?15, session_id = ?16, user_id = ?17, tags = ?18,
                 span_count = ?19, error_count = ?20, prompt_preview = ?21, response_preview = ?22,
                 prompt = ?23, response = ?24, metadata = ?25, input = ?26, updated_us = ?27,
                 environment = ?28, texts = ?29 WHERE pk = ?30",
            )?
            .execute(&v[..])?;
            (pk, false)
        }
    };
    let mut tag_stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO trace_tags (project_id, tag, ts, trace_pk) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for tag in &t.tags {
        tag_stmt.execute(params![t.project_id, tag, ts, pk])?;
    }
    let mut span_stmt = conn.prepare_cached(if p.merged {
        "INSERT INTO spans (trace_pk, id, start_us, doc) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (trace_pk, id) DO UPDATE SET start_us = excluded.start_us, doc = excluded.doc"
    } else {
        "INSERT INTO spans (trace_pk, id, start_us, doc) VALUES (?1, ?2, ?3, ?4)"
    })?;
    for (id, start_us, doc) in &p.spans {
        span_stmt.execute(params![pk, id, start_us, doc])?;
    }
    conn.prepare_cached("INSERT INTO fts_log (pk) VALUES (?1)")?.execute([pk])?;
    w.docs.push(search::Doc {
        seq: conn.last_insert_rowid(),
        pk,
        fresh: created,
        body: Arc::clone(&p.fts),
        keys: search::Keys {
            project_id: t.project_id.clone(),
            ts,
            session_id: t.session_id.clone(),
            user_id: t.user_id.clone(),
        },
    });
    Ok((pk, created))
}

fn load_pending(
    conn: &Connection,
    project_id: &str,
    trace_id: &str,
) -> Result<Vec<(String, SpanEvent)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT span_id, doc FROM pending_events WHERE project_id = ?1 AND trace_id = ?2",
    )?;
    let rows = stmt
        .query_map(params![project_id, trace_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, doc)| Some((id, serde_json::from_str(&doc).ok()?)))
        .collect())
}

fn save_pending(
    conn: &Connection,
    project_id: &str,
    trace_id: &str,
    events: &[(String, SpanEvent)],
    now: i64,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM pending_events WHERE project_id = ?1 AND trace_id = ?2")?
        .execute(params![project_id, trace_id])?;
    let mut ins = conn.prepare_cached(
        "INSERT INTO pending_events (project_id, trace_id, span_id, doc, received_us) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (span_id, e) in events {
        ins.execute(params![project_id, trace_id, span_id, json(e)?, now])?;
    }
    Ok(())
}

/// Merges OTLP spans (and log events) into a trace: new spans replace stored ones with the same
/// id (a retrying exporter's duplicates are stored once), and the trace is rolled up again from
/// all its spans' heads (sqlite/merge.rs), kept in memory between requests: only what a request
/// brings is decoded, packed and written, not the whole trace.
fn merge_trace(
    conn: &Connection,
    project_id: &str,
    batch: &SpanBatch,
    fresh: Option<&Prepared>,
    w: &mut Writes<'_>,
) -> Result<(Ingested, Option<TraceSummary>)> {
    let trace_id = &batch.trace_id;
    let existing = find_trace(
        conn,
        w.ids,
        project_id,
        trace_id,
        trace_row!("input, tags, ts, updated_us, texts"),
        |r| {
            let input = r.get::<_, Option<String>>(0)?;
            Ok((input, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, Value>(4)?))
        },
    )?;
    let has_pending = conn
        .prepare_cached(
            "SELECT 1 FROM pending_events WHERE project_id = ?1 AND trace_id = ?2 LIMIT 1",
        )?
        .exists(params![project_id, trace_id])?;
    if existing.is_none()
        && !has_pending
        && let Some(p) = fresh
    {
        let (_, created) = write_trace(conn, p, None, w)?;
        return Ok((Ingested { id: trace_id.clone(), created }, Some(p.summary.clone())));
    }
    let mut events =
        if has_pending { load_pending(conn, project_id, trace_id)? } else { Vec::new() };
    events.extend(batch.log_events.iter().cloned());
    // The batch's spans: as assembled and packed off-thread when it could stand alone (each id
    // once, derived), else as sent (a span sent twice is the later one).
    let (mut arrived, ready): (Vec<Span>, Vec<Option<merge::Doc>>) = match fresh {
        Some(p) => {
            let mut spans = Vec::with_capacity(p.spans.len());
            let mut docs = Vec::with_capacity(p.spans.len());
            for (_, _, packed) in &p.spans {
                let (span, digest) = doc::unpack_packed_digest(packed)?;
                spans.push(span);
                docs.push(Some(merge::Doc { digest, body: Ok(packed.clone()) }));
            }
            (spans, docs)
        }
        None => (crate::merge::sent_spans(batch), Vec::new()),
    };
    let events_before: Vec<usize> = arrived.iter().map(|s| s.events.len()).collect();
    let mut left = crate::merge::fold_events(&mut arrived, events);
    if let Some((pk, _)) = &existing
        && !left.is_empty()
    {
        // events for stored spans: those spans change, and are stored again
        let mut named: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
        named.sort_unstable();
        named.dedup();
        for id in named {
            if let Some(s) = merge::stored_span(conn, *pk, id)? {
                arrived.push(s);
            }
        }
        left = crate::merge::fold_events(&mut arrived, left);
    }
    save_pending(conn, project_id, trace_id, &left, w.now)?;
    // What is new or changed here is serialized; what was packed off-thread and no event
    // changed is stored as it was packed.
    let settled = crate::merge::settle(&mut arrived, ready, &events_before, w.asm);
    let mut docs = Vec::with_capacity(arrived.len());
    for (s, packed) in arrived.iter().zip(settled) {
        match packed {
            Some(d) => docs.push(d),
            None => docs.push(merge::Doc::json(tracellm_core::json::span_to_vec(s))),
        }
    }

    let mut m = match &existing {
        Some((pk, (input, _, _, stamp, texts))) => {
            match w.merges.take(*pk, project_id, trace_id, *stamp) {
                Some(m) => m,
                None => {
                    let stored: TraceInput = match texts {
                        Value::Null => input.as_deref().and_then(|i| serde_json::from_str(i).ok()),
                        texts => doc::unpack::<RowTexts>(texts.into())?.input,
                    }
                    .unwrap_or_default();
                    merge::load(conn, *pk, project_id, trace_id, stored)?
                }
            }
        }
        None => {
            crate::merge::Merging::new(project_id, trace_id, TraceInput::default(), MAX_FTS_BYTES)
        }
    };
    if arrived.is_empty() && m.heads().is_empty() {
        // Only log events, for spans not seen yet: kept until their spans arrive.
        return Ok((Ingested { id: trace_id.clone(), created: false }, None));
    }
    let mut input = m.input.clone().merge(batch.input.clone());
    input.id = Some(trace_id.clone());
    let docs = arrived.iter().zip(docs).collect();
    let spans = merge::add(conn, &mut m, docs)?;
    let invalid =
        |e: tracellm_core::ValidationError| StoreError::Invalid(format!("trace {trace_id}: {e}"));
    tracellm_core::check_span_count(m.heads().len(), &w.asm.opts).map_err(invalid)?;
    // The run's prompt and response come from at most three spans: from this batch, as the last
    // request read them, or read back.
    let mut fetched = foldhash::HashMap::default();
    let (trace, sources) = loop {
        let (trace, sources, missing) =
            m.roll_up(project_id, input.clone(), &arrived, &fetched).map_err(invalid)?;
        if missing.is_empty() {
            break (trace, sources);
        }
        for id in missing {
            let span = merge::stored_span(conn, m.pk, &id)?;
            fetched.insert(id, span);
        }
    };
    let fts: Arc<str> = m.body(&crate::merge::own_texts(&trace)).into();
    let p = Prepared {
        texts: RowTexts::pack(&trace, &sources, Some(&input))?,
        tags: json(&trace.tags)?,
        fts,
        spans,
        summary: trace.summary(),
        merged: existing.is_some(),
    };
    let stored = existing.map(|(pk, (_, tags, ts, _, _))| Stored { pk, tags, ts });
    let (pk, created) = write_trace(conn, &p, stored, w)?;
    m.input = input;
    m.written(pk, w.now);
    w.merges.stage(m);
    Ok((Ingested { id: trace_id.clone(), created }, Some(p.summary)))
}

// ---------------------------------------------------------------------------------------------
// Reading

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    fn new(path: PathBuf, size: usize) -> Self {
        ReaderPool { path, idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    /// Has the idle connections hand back their page caches' memory.
    fn release_idle(&self) {
        for c in self.idle.lock().expect("reader pool lock").iter() {
            let _ = c.release_memory();
        }
    }

    /// Closes the idle connections: SQLite opens a file's shared-memory index anew only once
    /// every connection to it is closed (one opened on a read-only directory stays read-only).
    fn close_idle(&self) {
        self.idle.lock().expect("reader pool lock").clear();
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -16_000)?;
        search::attach(&conn, &self.path)?;
        // the search index's terms, for prefixes spelled out (see `match_query`)
        conn.execute_batch(
            "CREATE VIRTUAL TABLE temp.trace_vocab USING fts5vocab(search, trace_fts, instance)",
        )?;
        Ok(conn)
    }

    /// Runs `f` on a read connection on the blocking pool.
    async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().expect("reader pool lock").pop() {
                Some(c) => c,
                None => pool.connect()?,
            };
            let r = f(&conn);
            pool.idle.lock().expect("reader pool lock").push(conn);
            r
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

const KEY_COLUMNS: &str =
    "id, project_id, environment, name, prefix, created_us, revoked_us, last_used_us";

fn key_from_row(r: &Row) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        project_id: r.get(1)?,
        environment: r.get(2)?,
        name: r.get(3)?,
        prefix: r.get(4)?,
        created_at: time::from_micros(r.get(5)?),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(time::from_micros),
        last_used_at: r.get::<_, Option<i64>>(7)?.map(time::from_micros),
    })
}

const SUMMARY_COLUMNS: &str = "t.id, t.project_id, t.name, t.status, t.ts, t.end_ts, t.latency_ms,
    t.model, t.provider, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.tokens_estimated,
    t.cached_tokens, t.cost_usd, t.retries, t.failure_reason, t.span_count, t.error_count,
    t.session_id, t.user_id, t.tags, t.prompt_preview, t.response_preview, t.pk, t.environment,
    t.texts";

fn status_of(s: &str) -> Status {
    Status::parse(s).unwrap_or(Status::Success)
}

fn summary_from_row(r: &Row) -> rusqlite::Result<(TraceSummary, i64)> {
    let (mut summary, pk) = summary_columns(r)?;
    if let Some((prompt, response)) = Previews::read(r, 26)? {
        (summary.prompt_preview, summary.response_preview) = (prompt, response);
    }
    Ok((summary, pk))
}

/// A row's summary as its columns hold it: the previews are NULL there for a row that keeps
/// its texts in `texts` (see `RowTexts`).
fn summary_columns(r: &Row) -> rusqlite::Result<(TraceSummary, i64)> {
    let tags: String = r.get(21)?;
    let summary = TraceSummary {
        id: r.get(0)?,
        project_id: r.get(1)?,
        name: r.get(2)?,
        status: status_of(&r.get::<_, String>(3)?),
        timestamp: time::from_micros(r.get(4)?),
        end_time: r.get::<_, Option<i64>>(5)?.map(time::from_micros),
        latency_ms: r.get(6)?,
        model: r.get(7)?,
        provider: r.get(8)?,
        tokens: Tokens {
            prompt: r.get::<_, i64>(9)? as u64,
            completion: r.get::<_, i64>(10)? as u64,
            total: r.get::<_, i64>(11)? as u64,
            estimated: r.get(12)?,
            cached: r.get::<_, Option<i64>>(13)?.map(|c| c as u64),
        },
        cost_usd: r.get(14)?,
        retries: r.get(15)?,
        failure_reason: r.get(16)?,
        span_count: r.get(17)?,
        error_count: r.get(18)?,
        session_id: r.get(19)?,
        user_id: r.get(20)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        prompt_preview: r.get(22)?,
        response_preview: r.get(23)?,
        environment: r.get(25)?,
    };
    Ok((summary, r.get(24)?))
}

/// A user's search words as index terms: every word must occur; a trailing `*` makes the last
/// term of its word a prefix.
fn search_terms(q: &str) -> Vec<(&str, bool)> {
    let mut terms = Vec::new();
    for w in q.split_whitespace() {
        let prefix = w.ends_with('*');
        // Split on what the tokenizer splits on, so every term is one token (the index keeps
        // no positions, so multi-token phrases cannot be matched).
        let words: Vec<&str> =
            w.split(|c: char| !c.is_alphanumeric()).filter(|s| !s.is_empty()).collect();
        let last = words.len().saturating_sub(1);
        for (i, word) in words.into_iter().enumerate() {
            terms.push((word, prefix && i == last));
        }
    }
    terms
}

/// Turns a user's search words into an FTS5 query (see `search_terms`). Quoting each word keeps
/// FTS5 syntax characters from being interpreted.
#[cfg(test)]
fn fts_query(q: &str) -> Option<String> {
    let terms: Vec<String> = search_terms(q)
        .into_iter()
        .map(|(word, prefix)| format!("\"{word}\"{}", if prefix { "*" } else { "" }))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Most index terms a prefix is spelled out into (see `match_query`); a prefix of more is wide
/// (see `newest_by_text`). Each term costs a seek in every segment to find it (0.15–0.4 ms at
/// 3–4 M spans, 20–25 segments) and another to read it: at 3.2 M spans `s*`, 57 terms, took
/// 112 ms spelled out, 17 ms checked by text as a wide prefix (1.17 s left to FTS5), `b*`, 20
/// terms, 32 ms either way.
const PREFIX_TERMS_MAX: usize = 32;

/// The FTS5 query for a user's search words, each prefix spelled out as the terms the
/// index holds that start with it (`bill*` → `("billing" OR "bills")`); `None` when nothing can
/// match (only punctuation, or a prefix no term starts with).
///
/// FTS5 answers a prefix query by reading the whole list of every term that starts with it and
/// merging them into one, whatever rows the query asks for: at 4 M spans, 320 ms for `bill*`
/// where `billing` takes 4 ms. An OR of terms is read lazily like a single term. The terms are
/// looked up in the index's vocabulary one seek each, the next after the last; past
/// `PREFIX_TERMS_MAX` of them the prefix is left to FTS5. A prefix is folded as the index folds
/// its terms: ASCII to lower case, anything else by the tokenizer itself (`Über*` → `uber`).
fn match_query(conn: &Connection, q: &str) -> Result<Option<SearchMatch>> {
    // each part of the query, and whether it is a wide prefix
    let mut parts: Vec<(String, bool)> = Vec::new();
    let mut folded = Some(Vec::new());
    for (word, prefix) in search_terms(q) {
        // folded as FTS5 folds the word of a query; a word it splits is left to it
        let term = if word.is_ascii() {
            Some(word.to_ascii_lowercase())
        } else {
            match &tokenizer::query_terms(conn, &tokenizer::SEARCH_ARGS, word)?[..] {
                [term] => Some(term.clone()),
                _ => None,
            }
        };
        match (&term, folded.as_mut()) {
            (Some(t), Some(f)) => f.push((t.clone(), prefix)),
            _ => folded = None,
        }
        let Some(stem) = term.filter(|_| prefix) else {
            parts.push((format!("\"{word}\"{}", if prefix { "*" } else { "" }), false));
            continue;
        };
        let terms = terms_starting_with(conn, &stem, PREFIX_TERMS_MAX + 1)?;
        match terms.len() {
            0 => return Ok(None),
            n if n > PREFIX_TERMS_MAX => parts.push((format!("\"{stem}\"*"), true)),
            _ => {
                let alternatives: Vec<String> =
                    terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect();
                parts.push((format!("({})", alternatives.join(" OR ")), false));
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    // explicit ANDs: FTS5 joins phrases implicitly, but not a phrase and a parenthesis
    let and = |wide: Option<bool>| {
        let chosen: Vec<&str> = parts
            .iter()
            .filter(|(_, w)| wide.is_none_or(|wide| *w == wide))
            .map(|(p, _)| p.as_str())
            .collect();
        (!chosen.is_empty()).then(|| chosen.join(" AND "))
    };
    Ok(Some(SearchMatch {
        fts: and(None).unwrap_or_default(),
        wide: parts.iter().any(|(_, w)| *w),
        narrow: and(Some(false)),
        folded,
    }))
}

/// A user's search as the index is asked it (see `match_query`).
#[derive(Debug, PartialEq)]
struct SearchMatch {
    /// The FTS5 query.
    fts: String,
    /// A prefix of more than `PREFIX_TERMS_MAX` terms is left to FTS5, which reads the whole
    /// list of each of them in every query.
    wide: bool,
    /// The FTS5 query of the parts that are not wide prefixes, if any.
    narrow: Option<String>,
    /// Each word as a term of the index, and whether it is a prefix; `None` when a word is not
    /// one term.
    folded: Option<Vec<(String, bool)>>,
}

/// Most of the newest traces a search with a wide prefix checks by their text before it reads
/// the index (see `newest_by_text`).
const TEXT_CHECK_MAX: usize = 256;
/// A trace of more spans than this is not read whole to check its text: the search goes on
/// with the index from there.
const TEXT_CHECK_SPANS_MAX: i64 = 200;

/// The first `want` of the newest traces the query selects whose text holds every one of
/// `words` (terms, and whether each is a prefix), read from the traces themselves and tokenized
/// as the index tokenizes them; and what is left to read from the index.
///
/// A wide prefix (`te*`, hundreds of terms) is in most traces, and FTS5 reads every list of it
/// whole to find any: seconds at millions of spans. The newest few hundred traces hold a page
/// of such matches; a prefix found in fewer is left to the index after them. With `narrow`
/// (the query's other words), the traces checked are the newest that match those, read from
/// the index as any search is: every trace the whole query matches is among them.
fn newest_by_text(
    conn: &Connection,
    q: &TraceQuery,
    only: Option<&[Status]>,
    keys: bool,
    words: &[(String, bool)],
    narrow: Option<&str>,
    want: usize,
) -> Result<(Vec<(i64, i64)>, Rest)> {
    // the newest traces the query selects, or the newest of them that match its narrow parts
    let step = TraceQuery { q: None, ..q.clone() };
    let batch: Vec<(i64, i64)> = match narrow {
        Some(m) => search_page(conn, q, only, keys, m, TEXT_CHECK_MAX, SEARCH_FEW)?,
        None => {
            let (sql, params) = select_sql(&step, only, keys, "{by}.pk, {by}.ts", TEXT_CHECK_MAX);
            conn.prepare_cached(&sql)?
                .query_map(&param_refs(&params)[..], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        }
    };
    let mut span_count = conn.prepare_cached("SELECT span_count FROM traces WHERE pk = ?1")?;
    let mut found = Vec::new();
    let mut checked = q.cursor;
    for &(pk, ts) in &batch {
        let spans: i64 = span_count.query_row([pk], |r| r.get(0))?;
        if spans > TEXT_CHECK_SPANS_MAX {
            return Ok((found, Rest::From(checked)));
        }
        if let Some((body, _)) = stored_text(conn, pk)? {
            let terms = tokenizer::document_terms(conn, &tokenizer::SEARCH_ARGS, &body)?;
            let holds = |(word, prefix): &(String, bool)| {
                terms.iter().any(|t| if *prefix { t.starts_with(word.as_str()) } else { t == word })
            };
            if words.iter().all(holds) {
                found.push((pk, ts));
                if found.len() == want {
                    return Ok((found, Rest::Done));
                }
            }
        }
        checked = Some(Cursor { ts_micros: ts, key: pk });
    }
    Ok((found, if batch.len() == TEXT_CHECK_MAX { Rest::From(checked) } else { Rest::Done }))
}

/// What `newest_by_text` leaves to the index.
#[derive(Debug, PartialEq)]
enum Rest {
    /// Nothing: the page is full, or every trace was checked.
    Done,
    /// The traces after this cursor (`None`: from the newest).
    From(Option<Cursor>),
}

/// Up to `most` terms of the search index that start with `stem`, in order: each the first term
/// at or after the one before it and a NUL (`trace_vocab` reads no row lists to find it).
fn terms_starting_with(conn: &Connection, stem: &str, most: usize) -> Result<Vec<String>> {
    let mut next =
        conn.prepare_cached("SELECT term FROM temp.trace_vocab WHERE term >= ?1 LIMIT 1")?;
    let mut terms: Vec<String> = Vec::new();
    let mut from = stem.to_string();
    while terms.len() < most {
        let Some(term) = next.query_row([&from], |r| r.get::<_, String>(0)).optional()? else {
            break;
        };
        if !term.starts_with(stem) {
            break;
        }
        from = format!("{term}\0");
        terms.push(term);
    }
    Ok(terms)
}

/// The WHERE clause and its parameters for a trace query, all but its search words (see
/// `search_page`). With `keys`, the query reads the
/// traces of a session or user from `search.trace_keys` (as `k`, joined to `t`): the session,
/// user, time range and cursor are its terms, in the order of its indexes.
fn where_clause(
    q: &TraceQuery,
    extra_status: Option<&[Status]>,
    keys: bool,
) -> (String, Vec<Box<dyn ToSql + Send>>) {
    let mut sql = String::from("t.project_id = ?");
    let mut p: Vec<Box<dyn ToSql + Send>> = vec![Box::new(q.project_id.clone())];
    // the table whose session, user, start time and row key the filters read
    let by = if keys {
        sql.push_str(" AND k.project_id = ?");
        p.push(Box::new(q.project_id.clone()));
        "k"
    } else {
        "t"
    };
    if let Some(env) = &q.environment {
        sql.push_str(" AND t.environment = ?");
        p.push(Box::new(env.clone()));
    }
    let statuses: Vec<Status> = match extra_status {
        Some(only) if q.statuses.is_empty() => only.to_vec(),
        Some(only) => q.statuses.iter().copied().filter(|s| only.contains(s)).collect(),
        None => q.statuses.clone(),
    };
    if !statuses.is_empty() || (extra_status.is_some() && !q.statuses.is_empty()) {
        if statuses.is_empty() {
            sql.push_str(" AND 0");
        } else {
            sql.push_str(" AND t.status IN (");
            sql.push_str(&vec!["?"; statuses.len()].join(", "));
            sql.push(')');
            for s in statuses {
                p.push(Box::new(s.as_str()));
            }
        }
    }
    for (tab, col, v) in
        [("t", "model", &q.model), (by, "session_id", &q.session_id), (by, "user_id", &q.user_id)]
    {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {tab}.{col} = ?"));
            p.push(Box::new(v.clone()));
        }
    }
    if let Some(since) = q.since {
        sql.push_str(&format!(" AND {by}.ts >= ?"));
        p.push(Box::new(time::to_micros(since)));
    }
    if let Some(until) = q.until {
        sql.push_str(&format!(" AND {by}.ts < ?"));
        p.push(Box::new(time::to_micros(until)));
    }
    if let Some(tag) = &q.tag {
        sql.push_str(
            " AND t.pk IN (SELECT trace_pk FROM trace_tags WHERE project_id = ? AND tag = ?)",
        );
        p.push(Box::new(q.project_id.clone()));
        p.push(Box::new(tag.clone()));
    }
    if let Some(c) = q.cursor {
        sql.push_str(&format!(" AND ({by}.ts, {by}.pk) < (?, ?)"));
        p.push(Box::new(c.ts_micros));
        p.push(Box::new(c.key));
    }
    (sql, p)
}

fn page_of<T>(mut rows: Vec<(T, i64, i64)>, limit: usize) -> (Vec<T>, Option<String>) {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, ts, key)| Cursor { ts_micros: *ts, key: *key }.encode())
    } else {
        None
    };
    (rows.into_iter().map(|(t, _, _)| t).collect(), next)
}

/// The query of `list_summaries` and its parameters. `keys` only with a session or user filter.
fn summaries_sql(
    q: &TraceQuery,
    only: Option<&[Status]>,
    keys: bool,
    limit: usize,
) -> (String, Vec<Box<dyn ToSql + Send>>) {
    select_sql(q, only, keys, SUMMARY_COLUMNS, limit + 1)
}

/// `columns` of the first `limit` traces the query selects (its search words aside), newest
/// first; `{by}` in `columns` names the table that orders them (see `where_clause`).
fn select_sql(
    q: &TraceQuery,
    only: Option<&[Status]>,
    keys: bool,
    columns: &str,
    limit: usize,
) -> (String, Vec<Box<dyn ToSql + Send>>) {
    debug_assert!(!keys || q.session_id.is_some() || q.user_id.is_some());
    let (clause, params) = where_clause(q, only, keys);
    // by session or user: their index, newest first, drives the join (CROSS JOIN keeps it outer)
    let (from, by) = if keys {
        ("search.trace_keys k CROSS JOIN traces t ON t.pk = k.pk", "k")
    } else {
        ("traces t", "t")
    };
    let columns = columns.replace("{by}", by);
    let sql = format!(
        "SELECT {columns} FROM {from} WHERE {clause} ORDER BY {by}.ts DESC, {by}.pk DESC LIMIT {limit}"
    );
    (sql, params)
}

fn param_refs(params: &[Box<dyn ToSql + Send>]) -> Vec<&dyn ToSql> {
    params.iter().map(|b| b.as_ref() as &dyn ToSql).collect()
}

/// A page of trace summaries. `keys`: the query filters by session or user and their index
/// covers every commit made before it (see `search_ready`).
fn list_summaries(
    conn: &Connection,
    q: &TraceQuery,
    only: Option<&[Status]>,
    keys: bool,
) -> Result<(Vec<TraceSummary>, Option<String>)> {
    let limit = q.limit.clamp(1, api::MAX_PAGE);
    if let Some(words) = q.q.as_deref().filter(|w| !w.trim().is_empty()) {
        // Only punctuation, or a prefix of no term: nothing can match.
        let Some(m) = match_query(conn, words)? else { return Ok((Vec::new(), None)) };
        let found = match &m.folded {
            Some(words) if m.wide => {
                let narrow = m.narrow.as_deref();
                let (mut found, rest) =
                    newest_by_text(conn, q, only, keys, words, narrow, limit + 1)?;
                if let Rest::From(cursor) = rest {
                    let rest = TraceQuery { cursor, ..q.clone() };
                    let want = limit + 1 - found.len();
                    found.extend(search_page(conn, &rest, only, keys, &m.fts, want, SEARCH_FEW)?);
                }
                found
            }
            _ => search_page(conn, q, only, keys, &m.fts, limit + 1, SEARCH_FEW)?,
        };
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {SUMMARY_COLUMNS} FROM traces t WHERE t.pk = ?1"))?;
        let mut rows = Vec::with_capacity(found.len());
        for (pk, ts) in found {
            if let Some((s, _)) = stmt.query_row([pk], summary_from_row).optional()? {
                rows.push((s, ts, pk));
            }
        }
        return Ok(page_of(rows, limit));
    }
    let (sql, params) = summaries_sql(q, only, keys, limit);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(&param_refs(&params)[..], |r| {
            let (s, pk) = summary_from_row(r)?;
            let ts = time::to_micros(s.timestamp);
            Ok((s, ts, pk))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(page_of(rows, limit))
}

/// Searches matching fewer traces than this read every match from the index and sort them by
/// time; more, and the traces are read in time order, their words checked a stretch at a time.
const SEARCH_FEW: usize = 5_000;
/// Most traces read in time order in one step of a search with many matches (the first step
/// reads twice the page, each next one twice as many as the last).
const SEARCH_STEP_MAX: usize = 16_384;

/// The row keys and start times of the first `want` traces the query selects that match the
/// FTS5 query `m`, newest first. Which way is cheaper depends on how many traces match, which a
/// count of up to `few` matches tells: a handful is best looked up and sorted, while a word in
/// most traces (at 10 M spans, "error" can match a million) is best checked on the newest
/// traces until enough match, without reading its whole list.
fn search_page(
    conn: &Connection,
    q: &TraceQuery,
    only: Option<&[Status]>,
    keys: bool,
    m: &str,
    want: usize,
    few: usize,
) -> Result<Vec<(i64, i64)>> {
    let matches: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM search.trace_fts WHERE trace_fts MATCH ?1 LIMIT ?2)",
        )?
        .query_row(params![m, few as i64], |r| r.get(0))?;
    if (matches as usize) < few {
        // the index drives (CROSS JOIN keeps it outer): each match looked up, then sorted
        let (clause, mut params) = where_clause(q, only, false);
        params.insert(0, Box::new(m.to_string()));
        let sql = format!(
            "SELECT t.pk, t.ts FROM search.trace_fts f CROSS JOIN traces t ON t.pk = f.rowid
             WHERE f.trace_fts MATCH ? AND {clause} ORDER BY t.ts DESC, t.pk DESC LIMIT {want}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(&param_refs(&params)[..], |r| Ok((r.get(0)?, r.get(1)?)))?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    }
    let mut in_range = conn.prepare_cached(
        "SELECT rowid FROM search.trace_fts WHERE trace_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
    )?;
    let mut found = Vec::with_capacity(want);
    let mut step = TraceQuery { q: None, ..q.clone() };
    // a word in most traces fills the page from the first step
    let mut n = (2 * want).max(64);
    loop {
        let (sql, params) = select_sql(&step, only, keys, "{by}.pk, {by}.ts", n);
        let mut stmt = conn.prepare_cached(&sql)?;
        let batch: Vec<(i64, i64)> = stmt
            .query_map(&param_refs(&params)[..], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        // Row keys follow arrival, so traces near in time are near in keys: the batch's keys
        // fall into a few runs, and each run's matches are one range of the index.
        let mut pks: Vec<i64> = batch.iter().map(|&(pk, _)| pk).collect();
        pks.sort_unstable();
        let mut hits = HashSet::with_capacity(pks.len());
        let mut i = 0;
        while i < pks.len() {
            let mut j = i;
            while j + 1 < pks.len() && pks[j + 1] - pks[j] <= n as i64 {
                j += 1;
            }
            for pk in in_range.query_map(params![m, pks[i], pks[j]], |r| r.get::<_, i64>(0))? {
                hits.insert(pk?);
            }
            i = j + 1;
        }
        for &(pk, ts) in &batch {
            if hits.contains(&pk) {
                found.push((pk, ts));
                if found.len() == want {
                    return Ok(found);
                }
            }
        }
        match batch.last() {
            Some(&(pk, ts)) if batch.len() == n => {
                step.cursor = Some(Cursor { ts_micros: ts, key: pk });
                n = (n * 2).min(SEARCH_STEP_MAX);
            }
            _ => return Ok(found),
        }
    }
}

/// A trace's row as the trace without spans (`span_count` says how many), and its row key.
fn trace_head(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    id: &str,
) -> Result<Option<(Trace, i64)>> {
    let Some(pk) = ids.find(conn, project_id, id)? else { return Ok(None) };
    Ok(head_at(conn, pk, project_id, id)?.map(|head| (head, pk)))
}

/// The row `pk` as the trace without spans, if it is `id` of `project_id`.
fn head_at(conn: &Connection, pk: i64, project_id: &str, id: &str) -> Result<Option<Trace>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, t.prompt, t.response, t.metadata FROM traces t
             WHERE t.pk = ?1 AND t.project_id = ?2 AND t.id = ?3"
        ))?
        .query_row(params![pk, project_id, id], |r| {
            let (s, _) = summary_columns(r)?;
            // a row written before the `texts` column: its texts and previews are columns
            Ok(match RowTexts::read(r, 26)? {
                Some(t) => (s, t, false),
                None => {
                    let metadata =
                        serde_json::from_str(&r.get::<_, String>(29)?).unwrap_or_default();
                    let (prompt, response) = (r.get(27)?, r.get(28)?);
                    let t = RowTexts { prompt, response, metadata, ..RowTexts::default() };
                    (s, t, true)
                }
            })
        })
        .optional()?;
    let Some((mut s, mut t, columns)) = row else { return Ok(None) };
    let metadata = std::mem::take(&mut t.metadata);
    let ([prompt, response], [p, r]) = t.resolve(conn, pk)?;
    if !columns {
        (s.prompt_preview, s.response_preview) = (p, r);
    }
    Ok(Some(s.into_trace(prompt, response, metadata, Vec::new())))
}

fn get_trace(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    id: &str,
) -> Result<Option<Trace>> {
    let Some(pk) = ids.find(conn, project_id, id)? else { return Ok(None) };
    trace_at(conn, pk, project_id, id)
}

/// The row `pk` as the whole trace, if it is `id` of `project_id`.
fn trace_at(conn: &Connection, pk: i64, project_id: &str, id: &str) -> Result<Option<Trace>> {
    let Some(mut trace) = head_at(conn, pk, project_id, id)? else {
        return Ok(None);
    };
    let mut stmt =
        conn.prepare_cached("SELECT doc FROM spans WHERE trace_pk = ?1 ORDER BY start_us, id")?;
    trace.spans.reserve(trace.span_count as usize);
    let mut rows = stmt.query([pk])?;
    while let Some(r) = rows.next()? {
        trace.spans.push(doc::unpack(r.get_ref(0)?)?);
    }
    Ok(Some(trace))
}

/// The row of `trace_id` in `project_id`: its key and what `read` takes from `sql`, a
/// `trace_row!` statement. The trace-id map gives a candidate key, read only if its row is this
/// trace: an entry left by a rolled-back transaction names a row that holds another trace, or
/// none.
fn find_trace<T>(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    trace_id: &str,
    sql: &'static str,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<(i64, T)>> {
    let Some(pk) = ids.find(conn, project_id, trace_id)? else { return Ok(None) };
    let row =
        conn.prepare_cached(sql)?.query_row(params![pk, project_id, trace_id], read).optional()?;
    Ok(row.map(|row| (pk, row)))
}

/// The row key of `trace_id` in `project_id`, checked against its row (`find_trace`).
fn trace_pk(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    trace_id: &str,
) -> Result<Option<i64>> {
    Ok(find_trace(conn, ids, project_id, trace_id, trace_row!("1"), |_| Ok(()))?.map(|(pk, ())| pk))
}

fn get_span_ids(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    trace_id: &str,
) -> Result<Vec<String>> {
    let Some(pk) = trace_pk(conn, ids, project_id, trace_id)? else { return Ok(Vec::new()) };
    // sorted here from the keys alone, not by SQLite with the documents
    let mut keys = conn
        .prepare_cached("SELECT start_us, id FROM spans WHERE trace_pk = ?1")?
        .query_map([pk], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    keys.sort_unstable();
    Ok(keys.into_iter().map(|(_, id)| id).collect())
}

fn get_spans(
    conn: &Connection,
    ids: &ids::TraceIds,
    project_id: &str,
    trace_id: &str,
    span_ids: &[String],
) -> Result<Vec<Span>> {
    let Some(pk) = trace_pk(conn, ids, project_id, trace_id)? else { return Ok(Vec::new()) };
    let mut stmt = conn.prepare_cached("SELECT doc FROM spans WHERE trace_pk = ?1 AND id = ?2")?;
    let mut spans = Vec::with_capacity(span_ids.len());
    for id in span_ids {
        let mut rows = stmt.query(params![pk, id])?;
        if let Some(r) = rows.next()? {
            spans.push(doc::unpack(r.get_ref(0)?)?);
        }
    }
    Ok(spans)
}

/// Start times of the first and last trace an analytics query covers: two probes of the
/// `(project_id, ts)` index.
fn analytics_bounds(conn: &Connection, q: &AnalyticsQuery) -> Result<Option<(i64, i64)>> {
    let (since, until) = q.range_micros();
    let edge = |order: &str| -> Result<Option<i64>> {
        let sql = format!(
            "SELECT ts FROM traces WHERE project_id = ?1 AND ts >= ?2 AND ts < ?3
               AND (?4 IS NULL OR environment = ?4) ORDER BY ts {order} LIMIT 1"
        );
        Ok(conn
            .prepare_cached(&sql)?
            .query_row(params![q.project_id, since, until, q.environment], |r| r.get(0))
            .optional()?)
    };
    Ok(edge("ASC")?.zip(edge("DESC")?))
}

/// Feeds the traces of `q` starting in `from..to` into `agg`, straight from the cursor of the
/// covering index `traces_for_analytics`.
fn analytics_part(
    conn: &Connection,
    q: &AnalyticsQuery,
    from: i64,
    to: i64,
    agg: &mut api::Aggregator,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, model, status = 'error', latency_ms, prompt_tokens, completion_tokens,
                total_tokens, cost_usd, span_count
         FROM traces WHERE project_id = ?1 AND ts >= ?2 AND ts < ?3
           AND (?4 IS NULL OR environment = ?4)",
    )?;
    let mut rows = stmt.query(params![q.project_id, from, to, q.environment])?;
    fn text(v: rusqlite::types::ValueRef<'_>) -> Option<&str> {
        match v {
            rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok(),
            _ => None,
        }
    }
    while let Some(r) = rows.next()? {
        agg.add(&AnalyticsRow {
            ts_micros: r.get(0)?,
            model: text(r.get_ref(1)?),
            // aggregation tells errors from the rest, nothing more
            status: if r.get(2)? { Status::Error } else { Status::Success },
            latency_ms: r.get(3)?,
            tokens: TokenTotals {
                prompt: r.get::<_, i64>(4)? as u64,
                completion: r.get::<_, i64>(5)? as u64,
                total: r.get::<_, i64>(6)? as u64,
            },
            cost_usd: r.get(7)?,
            span_count: r.get::<_, i64>(8)? as u64,
        });
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ingest(&self, traces: Vec<Trace>) -> Result<Vec<Ingested>> {
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        let prep = move || traces.into_iter().map(|t| prepare(t, None).map(Op::Replace)).collect();
        let ops = if spans > 64 { self.off_thread(prep).await? } else { prep()? };
        self.submit(ops).await
    }

    async fn ingest_spans(
        &self,
        project_id: &str,
        batches: Vec<SpanBatch>,
    ) -> Result<Vec<Ingested>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let spans: usize = batches.iter().map(|b| b.spans.len()).sum();
        let asm = Arc::clone(&self.assembler);
        let project = project_id.to_string();
        let prep = move || merge_ops(&asm, &project, batches);
        let ops = if spans > 64 { self.off_thread(prep).await? } else { prep()? };
        self.submit(ops).await
    }

    fn ingest_spans_blocking(
        &self,
        project_id: &str,
        batches: Vec<SpanBatch>,
    ) -> Result<Vec<Ingested>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let ops = merge_ops(&self.assembler, project_id, batches)?;
        tokio::runtime::Handle::current().block_on(self.submit(ops))
    }

    async fn list_traces(&self, q: TraceQuery) -> Result<TracePage> {
        let keys = self.search_ready(&q).await;
        self.readers
            .run(move |c| {
                let (traces, next_cursor) = list_summaries(c, &q, None, keys)?;
                Ok(TracePage { traces, next_cursor })
            })
            .await
    }

    async fn get_trace(&self, project_id: &str, id: &str) -> Result<Option<Trace>> {
        let (p, i) = (project_id.to_string(), id.to_string());
        let ids = Arc::clone(&self.ids);
        self.readers.run(move |c| get_trace(c, &ids, &p, &i)).await
    }

    async fn get_trace_head(&self, project_id: &str, id: &str) -> Result<Option<Trace>> {
        let (p, i) = (project_id.to_string(), id.to_string());
        let ids = Arc::clone(&self.ids);
        self.readers.run(move |c| Ok(trace_head(c, &ids, &p, &i)?.map(|(head, _)| head))).await
    }

    async fn get_span_ids(&self, project_id: &str, trace_id: &str) -> Result<Vec<String>> {
        let (p, t) = (project_id.to_string(), trace_id.to_string());
        let ids = Arc::clone(&self.ids);
        self.readers.run(move |c| get_span_ids(c, &ids, &p, &t)).await
    }

    async fn get_spans(
        &self,
        project_id: &str,
        trace_id: &str,
        span_ids: Vec<String>,
    ) -> Result<Vec<Span>> {
        let (p, t) = (project_id.to_string(), trace_id.to_string());
        let ids = Arc::clone(&self.ids);
        self.readers.run(move |c| get_spans(c, &ids, &p, &t, &span_ids)).await
    }

    async fn get_span(
        &self,
        project_id: &str,
        trace_id: &str,
        span_id: &str,
    ) -> Result<Option<(Span, Option<String>)>> {
        let (p, t, s) = (project_id.to_string(), trace_id.to_string(), span_id.to_string());
        let ids = Arc::clone(&self.ids);
        self.readers
            .run(move |c| {
                let Some(pk) = ids.find(c, &p, &t)? else { return Ok(None) };
                let mut stmt = c.prepare_cached(
                    "SELECT s.doc, t.environment FROM traces t JOIN spans s ON s.trace_pk = t.pk
                     WHERE t.pk = ?1 AND t.project_id = ?2 AND t.id = ?3 AND s.id = ?4",
                )?;
                let mut rows = stmt.query(params![pk, p, t, s])?;
                match rows.next()? {
                    Some(r) => Ok(Some((doc::unpack(r.get_ref(0)?)?, r.get(1)?))),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn failures(&self, q: TraceQuery) -> Result<FailurePage> {
        let keys = self.search_ready(&q).await;
        self.readers
            .run(move |c| {
                let (rows, next_cursor) =
                    list_summaries(c, &q, Some(&[Status::Error, Status::Retried]), keys)?;
                let failures = rows
                    .into_iter()
                    .map(|s| Failure {
                        id: s.id,
                        name: s.name,
                        status: s.status,
                        failure_reason: s.failure_reason,
                        timestamp: s.timestamp,
                        model: s.model,
                        retries: s.retries,
                        error_count: s.error_count,
                    })
                    .collect();
                Ok(FailurePage { failures, next_cursor })
            })
            .await
    }

    async fn analytics(&self, q: AnalyticsQuery) -> Result<Analytics> {
        let q = Arc::new(q);
        let bounds = {
            let q = Arc::clone(&q);
            self.readers.run(move |c| analytics_bounds(c, &q)).await?
        };
        let Some((first, last)) = bounds else {
            return Ok(api::Aggregator::new(q.since, q.until, q.bucket_secs, None).finish());
        };
        // Two halves of the range on two read connections, side by side: the scan is most of
        // the time and the machine has two cores. The outer edges are the query's own, so a
        // trace stored after the bounds were read is still counted.
        let mid = api::Aggregator::cuts(first, last.saturating_add(1), 2)[0];
        let (since, until) = q.range_micros();
        let part = |from: i64, to: i64| {
            let q = Arc::clone(&q);
            self.readers.run(move |c| {
                let mut agg =
                    api::Aggregator::new(q.since, q.until, q.bucket_secs, Some((first, last)));
                analytics_part(c, &q, from, to, &mut agg)?;
                Ok(agg)
            })
        };
        let (mut early, late) = futures::try_join!(part(since, mid), part(mid, until))?;
        tokio::task::spawn_blocking(move || {
            early.merge(late);
            early.finish()
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn info(&self) -> Result<StoreInfo> {
        let location = self.path.display().to_string();
        self.readers
            .run(move |c| {
                let (traces, spans): (i64, Option<i64>) =
                    c.query_row("SELECT count(*), sum(span_count) FROM traces", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                Ok(StoreInfo {
                    backend: "sqlite",
                    location,
                    traces: traces as u64,
                    spans: spans.unwrap_or(0) as u64,
                })
            })
            .await
    }

    async fn create_project(
        &self,
        id: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<Project> {
        let project = Project {
            id: id.to_string(),
            name: name.to_string(),
            description: description.map(String::from),
            created_at: chrono::Utc::now(),
        };
        let p = project.clone();
        self.admin::<serde_json::Value>(move |c| {
            let exists =
                c.prepare_cached("SELECT 1 FROM projects WHERE id = ?1")?.exists([&p.id])?;
            if exists {
                return Err(StoreError::Conflict(format!("project {:?} already exists", p.id)));
            }
            c.prepare_cached(
                "INSERT INTO projects (id, name, description, created_us) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                p.id,
                p.name,
                p.description,
                time::to_micros(p.created_at)
            ])?;
            Ok(serde_json::Value::Null)
        })
        .await?;
        Ok(project)
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        self.readers
            .run(|c| {
                let mut stmt = c.prepare_cached("SELECT id, name, description, created_us FROM projects ORDER BY created_us, id")?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(Project { id: r.get(0)?, name: r.get(1)?, description: r.get(2)?, created_at: time::from_micros(r.get(3)?) })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        let created = chrono::Utc::now();
        let out = ApiKey {
            id: key.id.clone(),
            project_id: key.project_id.clone(),
            environment: key.environment.clone(),
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            created_at: created,
            revoked_at: None,
            last_used_at: None,
        };
        self.admin::<serde_json::Value>(move |c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM projects WHERE id = ?1")?
                .exists([&key.project_id])?;
            if !exists {
                return Err(StoreError::NotFound(format!("no project {:?}", key.project_id)));
            }
            c.prepare_cached(
                "INSERT INTO api_keys (id, project_id, environment, name, prefix, hash, created_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                key.id,
                key.project_id,
                key.environment,
                key.name,
                key.prefix,
                key.hash,
                time::to_micros(created)
            ])?;
            Ok(serde_json::Value::Null)
        })
        .await?;
        Ok(out)
    }

    async fn list_api_keys(&self, project_id: Option<&str>) -> Result<Vec<ApiKey>> {
        let project = project_id.map(String::from);
        self.readers
            .run(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR project_id = ?1 ORDER BY created_us DESC, id"
                ))?;
                let rows = stmt.query_map([project], key_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let id = id.to_string();
        self.admin(move |c| {
            let now = time::to_micros(chrono::Utc::now());
            c.prepare_cached(
                "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, ?2) WHERE id = ?1",
            )?
            .execute(params![id, now])?;
            let key = c
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))?
                .query_row([&id], key_from_row)
                .optional()?;
            serde_json::to_value(key).map_err(|e| StoreError::Internal(e.to_string()))
        })
        .await
    }

    async fn note_key_use(&self, uses: Vec<(String, i64)>) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.admin::<()>(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE api_keys SET last_used_us = max(coalesce(last_used_us, ?2), ?2)
                 WHERE id = ?1",
            )?;
            for (id, at) in &uses {
                stmt.execute(params![id, at])?;
            }
            Ok(serde_json::Value::Null)
        })
        .await
    }

    async fn tidy(&self) -> Result<()> {
        let queue = self.queue.lock().expect("queue lock").clone().ok_or(StoreError::Closed)?;
        // a full queue is not quiet: nothing to do this round
        let _ = queue.try_send(Job::Tidy);
        Ok(())
    }

    async fn expire_pending_events(&self, before_us: i64) -> Result<u64> {
        self.admin::<u64>(move |c| {
            let n = c
                .prepare_cached("DELETE FROM pending_events WHERE received_us < ?1")?
                .execute([before_us])?;
            Ok(serde_json::Value::from(n))
        })
        .await
    }

    async fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKey>> {
        let hash = hash.to_vec();
        self.readers
            .run(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
                ))?
                .query_row([hash], key_from_row)
                .optional()?)
            })
            .await
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.readers
            .run(move |c| {
                Ok(c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?)
            })
            .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (key.to_string(), value.to_string());
        self.admin::<serde_json::Value>(move |c| {
            c.prepare_cached("INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2")?
                .execute(params![k, v])?;
            Ok(serde_json::Value::Null)
        })
        .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    async fn close(&self) -> Result<()> {
        self.ids.close();
        drop(self.queue.lock().expect("queue lock").take());
        let handle = self.writer.lock().expect("writer lock").take();
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?
                .map_err(|_| StoreError::Internal("writer thread panicked".into()))?;
        }
        // The writer closed the hand-off and the checkpoints on its way out: the indexer drains
        // what it holds and stops, and so does the checkpoint thread.
        for (name, slot) in [("indexer", &self.indexer), ("checkpoint", &self.checkpointer)] {
            let handle = slot.lock().expect("thread handle lock").take();
            if let Some(h) = handle {
                tokio::task::spawn_blocking(move || h.join())
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))?
                    .map_err(|_| StoreError::Internal(format!("{name} thread panicked")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// `words` hex words from a xorshift generator: ~16 bytes a word that LZ4 cannot shrink.
    fn incompressible(x: &mut u64, words: usize) -> String {
        let words: Vec<String> = (0..words)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                format!("{x:x}")
            })
            .collect();
        words.join(" ")
    }

    /// A trace of the default project from a native JSON document, as ingest would store it.
    fn normalized(doc: serde_json::Value) -> Trace {
        tracellm_core::normalize_trace(
            doc,
            "default",
            &tracellm_core::PriceTable::builtin(),
            &tracellm_core::NormalizeOptions::default(),
        )
        .unwrap()
    }

    /// A database from before the trace-id map (schema 7, ids in a UNIQUE index of `traces`)
    /// is upgraded in place: its traces are found by id, whole, and a trace sent again under
    /// the same id is updated, not stored twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_7_database_keeps_its_traces_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let trace = |id: &str, name: &str| {
            let doc = serde_json::json!({"id": id, "name": name, "spans": [{"id": "a",
                "name": name, "kind": "agent", "start_time": "2026-05-31T10:00:00Z",
                "end_time": "2026-05-31T10:00:01Z"}]});
            normalized(doc)
        };
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "page_size", 16384).unwrap();
            for sql in &MIGRATIONS[..7] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 7).unwrap();
            for (i, id) in ["old-1", "old-2"].into_iter().enumerate() {
                let t = trace(id, "before");
                conn.execute(
                    "INSERT INTO traces (pk, project_id, id, name, status, ts, prompt_tokens,
                     completion_tokens, total_tokens, tokens_estimated, retries, tags, span_count,
                     error_count, metadata, updated_us)
                     VALUES (?1, 'default', ?2, 'before', 'success', ?3, 0, 0, 0, 0, 0, '[]', 1, 0, '{}', 0)",
                    params![i as i64 + 1, id, time::to_micros(t.timestamp)],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO spans (trace_pk, id, start_us, doc) VALUES (?1, 'a', 0, ?2)",
                    params![i as i64 + 1, serde_json::to_string(&t.spans[0]).unwrap()],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        for id in ["old-1", "old-2"] {
            let t = store.get_trace("default", id).await.unwrap().expect(id);
            assert_eq!((t.name.as_str(), t.spans.len()), ("before", 1));
        }
        assert!(store.get_trace("other", "old-1").await.unwrap().is_none());
        store.ingest(vec![trace("old-2", "after"), trace("new-1", "after")]).await.unwrap();
        assert_eq!(store.get_trace("default", "old-2").await.unwrap().unwrap().name, "after");
        assert_eq!(store.get_trace("default", "new-1").await.unwrap().unwrap().name, "after");
        let q = TraceQuery { project_id: "default".into(), limit: 50, ..Default::default() };
        let mut names: Vec<_> =
            store.list_traces(q).await.unwrap().traces.into_iter().map(|t| t.id).collect();
        names.sort();
        assert_eq!(names, ["new-1", "old-1", "old-2"]);
        store.close().await.unwrap();
    }

    /// A native trace and an OTLP trace (with a session, kept for later merges).
    fn texts_traces() -> (Trace, SpanBatch) {
        let prompt = "Summarize the refund policy for the customer, citing the clause. ".repeat(5);
        let native = normalized(serde_json::json!({"id": "native", "metadata": {"team": "ml"},
            "spans": [{"id": "a", "name": "chat", "kind": "llm", "model": "gpt-4o",
            "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:01Z",
            "input": {"messages": [{"role": "user", "content": prompt}]},
            "output": {"messages": [{"role": "assistant", "content": "Refunds within 30 days."}]}}]}));
        let mut span: Span = native.spans[0].clone();
        span.id = "root".into();
        let mut otlp = SpanBatch {
            trace_id: "otlp".into(),
            input: TraceInput::default(),
            spans: vec![span],
            log_events: Vec::new(),
        };
        otlp.input.session_id = Some("s-1".into());
        (native, otlp)
    }

    /// A store at `path` holding [`texts_traces`], and the native one as sent.
    async fn store_texts_traces(path: &Path) -> (SqliteStore, Trace) {
        let store = SqliteStore::open(path, SqliteOptions::default()).await.unwrap();
        let (native, otlp) = texts_traces();
        store.ingest(vec![native.clone()]).await.unwrap();
        store.ingest_spans("default", vec![otlp]).await.unwrap();
        (store, native)
    }

    /// A second span of the OTLP trace, sent without a session, joins the trace that keeps its
    /// stored one.
    async fn a_second_request_keeps_the_session(store: &SqliteStore) {
        let (_, mut more) = texts_traces();
        more.input = TraceInput::default();
        more.spans[0].id = "second".into();
        store.ingest_spans("default", vec![more]).await.unwrap();
        let t = store.get_trace("default", "otlp").await.unwrap().unwrap();
        assert_eq!((t.span_count, t.session_id.as_deref()), (2, Some("s-1")));
    }

    /// The summary and whole trace of each of `ids`, as read through the store.
    async fn read_back(store: &SqliteStore, ids: &[&str]) -> Vec<(TraceSummary, Trace)> {
        let q = TraceQuery { project_id: "default".into(), limit: 50, ..Default::default() };
        let listed = store.list_traces(q).await.unwrap().traces;
        let mut out = Vec::new();
        for id in ids {
            let summary = listed.iter().find(|t| t.id == *id).expect(id).clone();
            out.push((summary, store.get_trace("default", id).await.unwrap().expect(id)));
        }
        out
    }

    /// A trace's row keeps its prompt, response, metadata and merge input once, compressed, in
    /// `texts`: the columns that held them and the previews stay empty, and the trace, its
    /// previews (cut with an ellipsis) and a later merge read as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trace_row_keeps_its_texts_once_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let (store, native) = store_texts_traces(&path).await;
        let read = read_back(&store, &["native", "otlp"]).await;
        let (summary, whole) = &read[0];
        assert_eq!(whole, &native, "the trace reads back exactly");
        let prompt = native.prompt.as_deref().unwrap();
        assert!(prompt.chars().count() > PREVIEW_CHARS);
        let cut: String = prompt.chars().take(PREVIEW_CHARS).collect();
        assert_eq!(summary.prompt_preview.as_deref(), Some(format!("{cut}…").as_str()));
        assert_eq!(summary.response_preview.as_deref(), Some("Refunds within 30 days."));
        assert_eq!(read[1].1.session_id.as_deref(), Some("s-1"));
        {
            let conn = Connection::open(&path).unwrap();
            let (empty, metadata, texts): (bool, String, Vec<u8>) = conn
                .query_row(
                    "SELECT coalesce(prompt, response, prompt_preview, response_preview, input)
                     IS NULL, metadata, texts FROM traces WHERE id = 'native'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            assert!(empty && metadata.is_empty(), "the texts' own columns are left empty");
            assert!(texts.len() < prompt.len() / 2, "compressed: {} bytes", texts.len());
        }
        // a later request of the OTLP trace starts from its stored input (its session)
        store.close().await.unwrap();
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        a_second_request_keeps_the_session(&store).await;
        store.close().await.unwrap();
    }

    /// Rows written before the `texts` column, their texts in columns of their own, read as
    /// they did, and a merge into such an OTLP trace starts from the input it stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_written_before_the_texts_column_read_as_they_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let (store, _) = store_texts_traces(&path).await;
        let before = read_back(&store, &["native", "otlp"]).await;
        store.close().await.unwrap();
        {
            // the row as the version before this column wrote it
            let conn = Connection::open(&path).unwrap();
            let rows: Vec<(i64, Vec<u8>)> = conn
                .prepare("SELECT pk, texts FROM traces")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(rows.len(), 2);
            for (pk, texts) in rows {
                let mut t: RowTexts = doc::unpack(rusqlite::types::ValueRef::Blob(&texts)).unwrap();
                let (metadata, input) = (std::mem::take(&mut t.metadata), t.input.take());
                let ([prompt, response], _) = t.resolve(&conn, pk).unwrap();
                let cut = |s: &Option<String>| s.as_deref().map(|s| preview(s, PREVIEW_CHARS));
                conn.execute(
                    "UPDATE traces SET prompt = ?1, response = ?2, prompt_preview = ?3,
                     response_preview = ?4, metadata = ?5, input = ?6, texts = NULL WHERE pk = ?7",
                    params![
                        prompt,
                        response,
                        cut(&prompt),
                        cut(&response),
                        serde_json::to_string(&metadata).unwrap(),
                        input.map(|i| serde_json::to_string(&i).unwrap()),
                        pk
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        assert_eq!(read_back(&store, &["native", "otlp"]).await, before);
        a_second_request_keeps_the_session(&store).await;
        store.close().await.unwrap();
    }

    /// The `texts` document of trace `id`'s row, as JSON.
    fn row_texts(path: &Path, id: &str) -> serde_json::Value {
        let conn = Connection::open(path).unwrap();
        let texts: Vec<u8> =
            conn.query_row("SELECT texts FROM traces WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        doc::unpack(rusqlite::types::ValueRef::Blob(&texts)).unwrap()
    }

    /// A prompt or response longer than its preview that is a span's text is kept once, in the
    /// span: the row holds the span's id and the preview, and the trace reads back whole, after
    /// a restart too. A native trace's text changed apart from its span (as redaction may) is
    /// kept whole; an OTLP trace merged over two requests refers to spans of either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_text_that_is_a_spans_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let long = |what: &str| format!("{what}: ").repeat(60);
        let spans = serde_json::json!([
            {"id": "root", "name": "agent", "kind": "agent",
             "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:03Z",
             "input": {"question": "short"}, "output": long("the answer")},
            {"id": "call", "parent_id": "root", "name": "chat", "kind": "llm", "model": "gpt-4o",
             "start_time": "2026-05-31T10:00:01Z", "end_time": "2026-05-31T10:00:02Z",
             "input": {"messages": [{"role": "system", "content": long("the rules")},
                                    {"role": "user", "content": long("the question")}]},
             "output": {"messages": [{"role": "assistant", "content": "Refunds."}]}}]);
        let native = normalized(serde_json::json!({"id": "native", "spans": spans}));
        assert_eq!(native.prompt.as_deref(), Some(long("the question").as_str()));
        assert_eq!(native.response.as_deref(), Some(long("the answer").as_str()));
        let mut apart = normalized(serde_json::json!({"id": "apart", "spans": spans}));
        apart.prompt = Some(long("the [REDACTED] question"));
        // the OTLP trace: its LLM call in one request, its root in the next
        let batch = |span: &Span| SpanBatch {
            trace_id: "otlp".into(),
            input: TraceInput::default(),
            spans: vec![span.clone()],
            log_events: Vec::new(),
        };
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        store.ingest(vec![native.clone(), apart.clone()]).await.unwrap();
        store.ingest_spans("default", vec![batch(&native.spans[1])]).await.unwrap();
        let first = row_texts(&path, "otlp");
        store.ingest_spans("default", vec![batch(&native.spans[0])]).await.unwrap();
        store.close().await.unwrap();

        let of =
            |id: &str, text: &str| serde_json::json!([id, preview(&long(text), PREVIEW_CHARS)]);
        let texts = row_texts(&path, "native");
        assert_eq!(texts.get("prompt"), None);
        assert_eq!(texts.get("response"), None);
        assert_eq!(texts["prompt_of"], of("call", "the question"));
        assert_eq!(texts["response_of"], of("root", "the answer"));
        let texts = row_texts(&path, "apart");
        assert_eq!(texts["prompt"], long("the [REDACTED] question"), "not a span's: kept whole");
        assert_eq!(
            (texts.get("prompt_of"), &texts["response_of"]),
            (None, &of("root", "the answer"))
        );
        // alone, the LLM call was its trace's root: both texts its own (its output is short)
        assert_eq!(
            (&first["prompt_of"], &first["response"]),
            (&of("call", "the question"), &serde_json::json!("Refunds."))
        );
        let texts = row_texts(&path, "otlp");
        assert_eq!(
            texts["prompt_of"],
            of("call", "the question"),
            "read back from the first request"
        );
        assert_eq!(texts["response_of"], of("root", "the answer"));

        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let read = read_back(&store, &["native", "apart", "otlp"]).await;
        assert_eq!(read[0].1, native, "the trace reads back exactly");
        assert_eq!(read[1].1, apart, "the trace reads back exactly");
        for (summary, whole) in &read {
            let cut = |t: &Option<String>| t.as_deref().map(|t| preview(t, PREVIEW_CHARS));
            assert_eq!(summary.prompt_preview, cut(&whole.prompt), "{}", whole.id);
            assert_eq!(summary.response_preview, cut(&whole.response), "{}", whole.id);
        }
        let (head, whole) =
            (store.get_trace_head("default", "otlp").await.unwrap().unwrap(), &read[2].1);
        assert_eq!(
            (whole.prompt.as_deref(), whole.response.as_deref()),
            (native.prompt.as_deref(), native.response.as_deref())
        );
        assert_eq!((head.prompt, head.response), (whole.prompt.clone(), whole.response.clone()));
        store.close().await.unwrap();
    }

    /// The texts are indexed in every batch; the sessions and users wait in the indexer's memory
    /// until a filter by them waits, ingest goes quiet or the store closes. Until then the search
    /// database's number for them stays behind and the writer keeps the log from it on, so a
    /// crash loses none of them (the next start reads them back from the traces' rows).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_and_users_wait_for_a_filter_or_a_quiet_moment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let trace = |i: usize| {
            normalized(serde_json::json!({"id": format!("t{i:04}"),
                "session_id": format!("s{}", i % 3), "user_id": "u",
                "spans": [{"id": "a", "name": "agent", "kind": "agent",
                    "input": format!("word{i} common"),
                    "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:01Z"}]}))
        };
        let search_db = search::path_for(&path);
        // (keys written, the number whose keys the index holds, the number whose texts it holds)
        let search_state = || -> (i64, i64, i64) {
            let c =
                Connection::open_with_flags(&search_db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let keys = c.query_row("SELECT count(*) FROM trace_keys", [], |r| r.get(0)).unwrap();
            let (seq, texts) = c
                .query_row("SELECT seq, texts_seq FROM indexed", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            (keys, seq, texts)
        };
        let log = || -> i64 {
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            c.query_row("SELECT count(*) FROM fts_log", [], |r| r.get(0)).unwrap()
        };
        let found = |q: TraceQuery| {
            let store = &store;
            async move {
                let page = store.list_traces(q).await.unwrap();
                page.traces.into_iter().map(|t| t.id).collect::<Vec<_>>()
            }
        };
        let by_words = |w: &str| TraceQuery {
            project_id: "default".into(),
            q: Some(w.into()),
            limit: 50,
            ..Default::default()
        };
        let by_session = |s: &str| TraceQuery {
            project_id: "default".into(),
            session_id: Some(s.into()),
            limit: 500,
            ..Default::default()
        };

        // more than the writer trims the log by, in one commit
        store.ingest((0..1100).map(trace).collect()).await.unwrap();
        assert_eq!(found(by_words("word1099")).await, ["t1099"], "the texts are indexed");
        store.ingest(vec![trace(1100)]).await.unwrap();
        assert_eq!(found(by_words("word1100")).await, ["t1100"]);
        assert_eq!(search_state(), (0, 0, 1101), "texts indexed, no key written");
        assert_eq!(log(), 1101, "the writer keeps the log from the mark on");

        // a filter waits for the keys: all written, and the mark moves to the end of the log
        let s1 = found(by_session("s1")).await;
        assert_eq!(s1.len(), 367);
        assert!(s1.contains(&"t1099".to_string()) && s1.contains(&"t0001".to_string()));
        assert_eq!(search_state(), (1101, 1101, 1101));
        // the next commit trims the log up to the mark
        store.ingest(vec![trace(1101)]).await.unwrap();
        assert_eq!(log(), 1);

        // a quiet moment writes them too
        assert_eq!(found(by_words("word1101")).await, ["t1101"]);
        assert_eq!(search_state(), (1101, 1101, 1102));
        tokio::time::sleep(QUIET + Duration::from_millis(100)).await;
        store.tidy().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while search_state() != (1102, 1102, 1102) {
            assert!(std::time::Instant::now() < deadline, "{:?}", search_state());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // and closing the store
        store.ingest(vec![trace(1102)]).await.unwrap();
        assert_eq!(found(by_words("word1102")).await, ["t1102"]);
        assert_eq!(search_state(), (1102, 1102, 1103));
        store.close().await.unwrap();
        assert_eq!(search_state(), (1103, 1103, 1103));
    }

    /// Once ingest is quiet, the writer merges the trace ids waiting in memory, the writer and
    /// the indexer release their caches, and the checkpointer, its WAL copied, closes its
    /// connection; each calls `on_quiet` on its own thread, and so does the sync thread. Every
    /// trace is still found by id and by search, and ingest goes on after (the checkpointer
    /// opens its connection again). Not before: a tidy while writes are recent leaves the ids
    /// waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_store_merges_waiting_ids_and_hands_back_memory() {
        static CALLED_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());
        fn record() {
            let name = std::thread::current().name().unwrap_or("").to_string();
            CALLED_ON.lock().unwrap().push(name);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let opts = SqliteOptions { on_quiet: Some(record), ..Default::default() };
        let store = SqliteStore::open(&path, opts).await.unwrap();
        let trace = |i: usize| {
            let doc = serde_json::json!({"id": format!("{i:032x}"), "spans": [{"id": "a",
                "name": "agent", "kind": "agent", "input": "quietly done",
                "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:01Z"}]});
            normalized(doc)
        };
        let count = |table: &str| -> i64 {
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
        };
        // 6 MB of text that does not compress, for a checkpoint pass (it starts at 4 MB of WAL)
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut bulky = |i: usize| {
            let doc = serde_json::json!({"id": format!("b{i:031x}"), "spans": [{"id": "a",
                "name": "agent", "kind": "agent", "input": incompressible(&mut x, 1000),
                "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:01Z"}]});
            normalized(doc)
        };
        for chunk in 0..15 {
            store.ingest((0..24).map(|i| bulky(chunk * 24 + i)).collect()).await.unwrap();
        }
        store.ingest((1..=20).map(trace).collect()).await.unwrap();
        // not quiet yet: the tidy is a no-op (the write queued behind it shows it ran)
        store.tidy().await.unwrap();
        store.ingest(vec![trace(21)]).await.unwrap();
        assert_eq!((count("recent_ids"), count("trace_ids")), (381, 0));
        let called = CALLED_ON.lock().unwrap().clone();
        // (the sync thread's own quiet spell is QUIET without commits, which a slow machine
        // may find between two of these writes)
        let early = |c: &String| c != "sqlite-checkpoint" && c != "sqlite-sync";
        assert!(!called.iter().any(early), "on_quiet called on {called:?}");

        tokio::time::sleep(QUIET + Duration::from_millis(100)).await;
        store.tidy().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let called = CALLED_ON.lock().unwrap().clone();
            let threads = ["sqlite-writer", "sqlite-indexer", "sqlite-checkpoint", "sqlite-sync"];
            if threads.iter().all(|t| called.iter().any(|c| c == t)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "on_quiet called on {called:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((count("recent_ids"), count("trace_ids")), (0, 381));
        // the ids merged went to the trace id filter, dropped with the caches
        assert_eq!(store.ids.filter_bytes(), 0);
        for i in 1..=21 {
            let id = format!("{i:032x}");
            assert!(store.get_trace("default", &id).await.unwrap().is_some(), "{id}");
        }
        let q = TraceQuery {
            project_id: "default".into(),
            q: Some("quietly".into()),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(store.list_traces(q.clone()).await.unwrap().traces.len(), 21);
        store.ingest(vec![trace(22)]).await.unwrap();
        assert!(store.get_trace("default", &format!("{:032x}", 22)).await.unwrap().is_some());
        assert_eq!(store.list_traces(q).await.unwrap().traces.len(), 22);

        // the checkpointer, asleep since it closed its connection, wakes for the next commits:
        // it copies the WAL again (into the database file, which only a checkpoint makes grow),
        // and closes its connection again when they stop
        let closed =
            |called: &[String]| called.iter().filter(|c| *c == "sqlite-checkpoint").count();
        assert_eq!(closed(&CALLED_ON.lock().unwrap()), 1);
        let db_len = || std::fs::metadata(&path).unwrap().len();
        let before = db_len();
        for chunk in 15..30 {
            store.ingest((0..24).map(|i| bulky(chunk * 24 + i)).collect()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while closed(&CALLED_ON.lock().unwrap()) < 2 {
            assert!(std::time::Instant::now() < deadline, "the checkpointer did not run again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 6 MB of text that does not compress: copied, it is more than 2 MB of the file
        let grown = db_len() - before;
        assert!(grown > 2 << 20, "the database grew by {grown} bytes");
        store.close().await.unwrap();
    }

    /// A search answers the same whichever way it reads the index (every match looked up and
    /// sorted, or the newest traces checked a stretch at a time), through every page, with
    /// row keys that do not follow time (traces sent out of order), and with a filter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn search_reads_the_index_either_way_with_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("traces.db"), SqliteOptions::default())
            .await
            .unwrap();
        let n = 400;
        let minute = |i: usize| (i * 37) % n; // arrival order is not time order
        let mut traces = Vec::new();
        for i in 0..n {
            let mut words = vec!["common".to_string()];
            if i % 7 == 0 {
                words.push("seventh".into());
            }
            if [5, 200, 390].contains(&i) {
                words.push("rare".into());
            }
            let m = minute(i);
            let doc = serde_json::json!({"id": format!("t{i:03}"), "session_id": format!("s{}", i % 3),
                "spans": [{"id": "a", "name": "agent", "kind": "agent", "input": words.join(" "),
                    "start_time": format!("2026-05-31T{:02}:{:02}:00Z", m / 60, m % 60),
                    "end_time": format!("2026-05-31T{:02}:{:02}:30Z", m / 60, m % 60)}]});
            let t = normalized(doc);
            traces.push(t);
        }
        for chunk in traces.chunks(50) {
            store.ingest(chunk.to_vec()).await.unwrap();
        }
        let base = TraceQuery {
            project_id: "default".into(),
            q: Some("common".into()),
            limit: 7,
            ..Default::default()
        };
        // answered once the index holds every commit
        assert_eq!(store.list_traces(base.clone()).await.unwrap().traces.len(), 7);
        let conn = store.readers.connect().unwrap();
        let id_of: HashMap<i64, String> = conn
            .prepare("SELECT pk, id FROM traces")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (words, session, expect) in [
            ("common", None, (0..n).collect::<Vec<_>>()),
            ("seventh", None, (0..n).filter(|i| i % 7 == 0).collect()),
            ("rare", None, vec![5, 200, 390]),
            ("common seventh", Some("s1"), (0..n).filter(|i| i % 7 == 0 && i % 3 == 1).collect()),
            ("absent", None, vec![]),
        ] {
            let mut expect: Vec<usize> = expect;
            expect.sort_by_key(|&i| std::cmp::Reverse(minute(i)));
            let expect: Vec<String> = expect.iter().map(|i| format!("t{i:03}")).collect();
            let m = fts_query(words).unwrap();
            // few = 1: always the newest traces first; few = n + 1: always every match
            for few in [1, n + 1] {
                let mut q = TraceQuery {
                    q: Some(words.into()),
                    session_id: session.map(String::from),
                    ..base.clone()
                };
                let mut got = Vec::new();
                loop {
                    let rows = search_page(&conn, &q, None, false, &m, q.limit + 1, few).unwrap();
                    got.extend(rows.iter().take(q.limit).map(|(pk, _)| id_of[pk].clone()));
                    if rows.len() <= q.limit {
                        break;
                    }
                    let (pk, ts) = rows[q.limit - 1];
                    q.cursor = Some(Cursor { ts_micros: ts, key: pk });
                }
                assert_eq!(got, expect, "{words:?} in session {session:?}, few = {few}");
            }
        }
        store.close().await.unwrap();
    }

    fn fts(conn: &Connection, q: &str) -> Option<String> {
        match_query(conn, q).unwrap().map(|m| m.fts)
    }

    /// A search with a wide prefix (more terms than are spelled out) reads the newest traces'
    /// texts, then the index after them, and pages through the same traces in the same order
    /// as FTS5's own prefix query finds: when the newest hold a page, when they hold none
    /// (every match older than the traces checked by text), and past a trace too big to read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wide_prefix_reads_the_newest_texts_then_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("traces.db"), SqliteOptions::default())
            .await
            .unwrap();
        let n = TEXT_CHECK_MAX + 150;
        let mut traces = Vec::new();
        for i in 0..n {
            // "wid…" in every trace; "old…" only in the oldest 80; "Déjà" in every third
            let mut text = format!("common wid{:03} w{i}", i % (PREFIX_TERMS_MAX + 10));
            if i < 80 {
                text.push_str(&format!(" old{i:03}"));
            }
            if i % 3 == 0 {
                text.push_str(" Déjà");
            }
            let spans: Vec<serde_json::Value> = (0..if i == 100 { 201 } else { 1 })
                .map(|s| {
                    serde_json::json!({"id": format!("s{s}"), "name": "step", "kind": "agent",
                        "input": text, "start_time": format!("2026-05-31T{:02}:{:02}:{:02}Z",
                        i / 3600, (i / 60) % 60, i % 60)})
                })
                .collect();
            traces.push(normalized(serde_json::json!({"id": format!("t{i:03}"), "spans": spans})));
        }
        for chunk in traces.chunks(100) {
            store.ingest(chunk.to_vec()).await.unwrap();
        }
        let all = TraceQuery { project_id: "default".into(), limit: 7, ..Default::default() };
        let q = TraceQuery { q: Some("w1".into()), ..all.clone() };
        assert_eq!(store.list_traces(q).await.unwrap().traces.len(), 1); // indexed
        let conn = store.readers.connect().unwrap();
        let newest_first: Vec<(i64, String)> = conn
            .prepare("SELECT pk, id FROM traces ORDER BY ts DESC, pk DESC")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // the newest hold a page; they hold none, and the index goes on after them
        let words = |q: &str| match_query(&conn, q).unwrap().unwrap().folded.unwrap();
        let (found, rest) =
            newest_by_text(&conn, &all, None, false, &words("wid*"), None, 8).unwrap();
        assert_eq!((found.len(), rest), (8, Rest::Done));
        let (found, rest) =
            newest_by_text(&conn, &all, None, false, &words("old*"), None, 8).unwrap();
        let pk = newest_first[TEXT_CHECK_MAX - 1].0;
        let ts: i64 =
            conn.query_row("SELECT ts FROM traces WHERE pk = ?1", [pk], |r| r.get(0)).unwrap();
        assert_eq!((found.len(), rest), (0, Rest::From(Some(Cursor { ts_micros: ts, key: pk }))));
        for (words, fts5, at_least) in [
            ("wid*", r#""wid"*"#, n),
            ("old*", r#""old"*"#, 80),
            ("WID* déjà", r#""wid"* AND "deja""#, n / 3),
            ("old* w1*", r#""old"* AND "w1"*"#, 11),
            // the other words narrow the traces checked by text
            ("wid* w1", r#""wid"* AND "w1""#, 1),
            ("old* déjà", r#""old"* AND "deja""#, 80 / 3),
            ("common old*", r#""common" AND "old"*"#, 80),
        ] {
            let m = match_query(&conn, words).unwrap().unwrap();
            assert!(m.wide, "{words}");
            let matching: HashSet<i64> = conn
                .prepare("SELECT rowid FROM search.trace_fts WHERE trace_fts MATCH ?1")
                .unwrap()
                .query_map([fts5], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let expect: Vec<String> = newest_first
                .iter()
                .filter(|(pk, _)| matching.contains(pk))
                .map(|(_, id)| id.clone())
                .collect();
            assert!(expect.len() >= at_least, "{words}: FTS5 finds {}", expect.len());
            let mut q = TraceQuery { q: Some(words.into()), ..all.clone() };
            let mut got = Vec::new();
            loop {
                let page = store.list_traces(q.clone()).await.unwrap();
                got.extend(page.traces.into_iter().map(|t| t.id));
                let Some(next) = page.next_cursor else { break };
                q.cursor = Cursor::decode(&next);
            }
            assert_eq!(got, expect, "{words}");
        }
        store.close().await.unwrap();
    }

    /// A prefix spelled out as the index's terms finds the same traces as FTS5's own prefix
    /// query, whether it is spelled out, left to FTS5 (too many terms) or starts no term at
    /// all; and words in upper case or with accents find what FTS5 finds for them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefix_searches_find_what_fts5s_prefix_query_finds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("traces.db"), SqliteOptions::default())
            .await
            .unwrap();
        let words = ["billing", "Bills", "billboard", "bill", "refund", "Über", "naïve", "ünder"];
        let many = PREFIX_TERMS_MAX + 6; // "pre000" … more terms than are spelled out
        let mut traces = Vec::new();
        for i in 0..200usize {
            let text = format!("{} pre{:03} w{i}", words[i % words.len()], i % many);
            let doc = serde_json::json!({"id": format!("t{i:03}"), "spans": [{"id": "a",
                "name": "agent", "kind": "agent", "input": text,
                "start_time": format!("2026-05-31T10:{:02}:{:02}Z", i / 60, i % 60)}]});
            traces.push(normalized(doc));
        }
        store.ingest(traces).await.unwrap();
        let all = TraceQuery { project_id: "default".into(), limit: 500, ..Default::default() };
        // answered once the index holds the commit
        let q = TraceQuery { q: Some("billing".into()), ..all.clone() };
        assert_eq!(store.list_traces(q).await.unwrap().traces.len(), 25);

        let conn = store.readers.connect().unwrap();
        assert_eq!(
            fts(&conn, "Bill* refund").as_deref(),
            Some(r#"("bill" OR "billboard" OR "billing" OR "bills") AND "refund""#)
        );
        assert_eq!(fts(&conn, "pre*").as_deref(), Some(r#""pre"*"#));
        let wide = match_query(&conn, "Naïve pre*").unwrap().unwrap();
        assert!(wide.wide);
        assert_eq!(wide.folded, Some(vec![("naive".into(), false), ("pre".into(), true)]));
        assert_eq!(wide.narrow.as_deref(), Some(r#""Naïve""#));
        // "pre030" … "pre037": `many` is PREFIX_TERMS_MAX + 6
        let pre03: Vec<String> = (0..8).map(|i| format!("\"pre03{i}\"")).collect();
        let pre03 = format!("({})", pre03.join(" OR "));
        assert_eq!(fts(&conn, "pre03*"), Some(pre03));
        assert!(!match_query(&conn, "pre03*").unwrap().unwrap().wide);
        // folded by the tokenizer: case and accents
        assert_eq!(fts(&conn, "ÜN*").as_deref(), Some(r#"("under")"#));
        assert_eq!(fts(&conn, "naï*").as_deref(), Some(r#"("naive")"#));
        assert_eq!(match_query(&conn, "billing zzz*").unwrap(), None);
        assert_eq!(match_query(&conn, "-*").unwrap(), None);

        let id_of: HashMap<i64, String> = conn
            .prepare("SELECT pk, id FROM traces")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let fts5_finds = |stem: &str| -> HashSet<String> {
            let mut stmt = conn
                .prepare("SELECT rowid FROM search.trace_fts WHERE trace_fts MATCH ?1")
                .unwrap();
            stmt.query_map([format!("\"{stem}\"*")], |r| r.get::<_, i64>(0))
                .unwrap()
                .map(|pk| id_of[&pk.unwrap()].clone())
                .collect()
        };
        for (prefix, stem, at_least) in [
            ("bill*", "bill", 100),
            ("BILL*", "bill", 100),
            ("bills*", "bills", 25),
            ("b*", "b", 100),
            ("ref*", "ref", 25),
            ("pre*", "pre", 200),
            ("pre03*", "pre03", 20),
            ("ub*", "ub", 25),
            ("üb*", "üb", 25),
            ("ÜB*", "üb", 25),
            ("naï*", "naï", 25),
            ("na*", "na", 25),
            ("w19*", "w19", 11),
            ("zzz*", "zzz", 0),
        ] {
            let expect = fts5_finds(stem);
            assert!(expect.len() >= at_least, "{prefix}: FTS5 finds {}", expect.len());
            let q = TraceQuery { q: Some(prefix.into()), ..all.clone() };
            let got: HashSet<String> =
                store.list_traces(q).await.unwrap().traces.into_iter().map(|t| t.id).collect();
            assert_eq!(got, expect, "{prefix}");
        }
        store.close().await.unwrap();
    }

    /// The list statement for `query` and SQLite's plan for it, its steps joined by " | ".
    fn summaries_plan(
        conn: &Connection,
        query: &TraceQuery,
        keys: bool,
        limit: usize,
    ) -> (String, String) {
        let (sql, params) = summaries_sql(query, None, keys, limit);
        let refs: Vec<&dyn ToSql> = params.iter().map(|b| b.as_ref() as &dyn ToSql).collect();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(&refs[..], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        (sql, plan.join(" | "))
    }

    /// A filter by session or user is answered from its index in the search database, newest
    /// first straight from the index (no sort, no scan of `traces`), and the same as from
    /// `traces` itself (the way while that index is rebuilt).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_and_user_filters_walk_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let mut traces = Vec::new();
        for i in 0..30 {
            let doc = serde_json::json!({"id": format!("t{i:02}"),
                "session_id": format!("s{}", i % 3), "user_id": format!("u{}", i % 4),
                "spans": [{"id": "a", "name": "agent", "kind": "agent",
                    "start_time": format!("2026-05-31T10:{i:02}:00Z"),
                    "end_time": format!("2026-05-31T10:{i:02}:01Z")}]});
            traces.push(normalized(doc));
        }
        store.ingest(traces).await.unwrap();
        // the index has caught up once a filtered list answers
        let q = TraceQuery {
            project_id: "default".into(),
            session_id: Some("s1".into()),
            limit: 50,
            ..Default::default()
        };
        assert_eq!(store.list_traces(q.clone()).await.unwrap().traces.len(), 10);
        let conn = store.readers.connect().unwrap();
        let by_user = TraceQuery { session_id: None, user_id: Some("u2".into()), ..q.clone() };
        let both = TraceQuery { user_id: Some("u2".into()), ..q.clone() };
        let since = TraceQuery {
            since: Some("2026-05-31T10:10:00Z".parse().unwrap()),
            statuses: vec![Status::Success],
            ..q.clone()
        };
        for (query, index) in [
            (&q, "keys_by_session"),
            (&by_user, "keys_by_user"),
            (&both, "keys_by_"),
            (&since, "keys_by_session"),
        ] {
            let (sql, plan) = summaries_plan(&conn, query, true, 10);
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
            assert!(plan.contains("INTEGER PRIMARY KEY"), "traces by row key: {plan}");
            let ids = |keys| {
                let (rows, _) = list_summaries(&conn, query, None, keys).unwrap();
                rows.into_iter().map(|s| s.id).collect::<Vec<_>>()
            };
            let from_index = ids(true);
            assert!(!from_index.is_empty());
            assert_eq!(from_index, ids(false), "{sql}");
        }
        store.close().await.unwrap();
    }

    /// Lists newest first, whole or by status or model, walk their index backwards with no sort,
    /// and page through traces that started at the same moment in row-key order, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_walk_their_ascending_index_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let mut traces = Vec::new();
        for i in 0..30 {
            // three traces a minute, each of a model and status of its own
            let (model, error) = (["gpt-4o", "claude-3-5-sonnet"][i % 2], i % 3 == 0);
            let doc = serde_json::json!({"id": format!("t{i:02}"),
                "spans": [{"id": "a", "name": "chat", "kind": "llm", "model": model,
                    "start_time": format!("2026-05-31T10:{:02}:00Z", i / 3),
                    "end_time": format!("2026-05-31T10:{:02}:01Z", i / 3),
                    "error": if error { Some("boom") } else { None }}]});
            traces.push(normalized(doc));
        }
        store.ingest(traces).await.unwrap();
        let conn = store.readers.connect().unwrap();
        let all = TraceQuery { project_id: "default".into(), limit: 4, ..Default::default() };
        let errors = TraceQuery { statuses: vec![Status::Error], ..all.clone() };
        let model = TraceQuery { model: Some("gpt-4o".into()), ..all.clone() };
        for (query, index, filter) in [
            (&all, "traces_by_time", "1"),
            (&errors, "traces_by_status", "status = 'error'"),
            (&model, "traces_by_model", "model = 'gpt-4o'"),
        ] {
            let cursor = Cursor { ts_micros: i64::MAX, key: i64::MAX };
            let paged = TraceQuery { cursor: Some(cursor), ..query.clone() };
            let (_, plan) = summaries_plan(&conn, &paged, false, 4);
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
            let expect: Vec<String> = conn
                .prepare(&format!("SELECT id FROM traces WHERE {filter} ORDER BY ts DESC, pk DESC"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let mut paged = Vec::new();
            let mut q = query.clone();
            loop {
                let page = store.list_traces(q.clone()).await.unwrap();
                paged.extend(page.traces.into_iter().map(|t| t.id));
                match page.next_cursor {
                    Some(c) => q.cursor = Cursor::decode(&c),
                    None => break,
                }
            }
            assert!(expect.len() >= 10, "{index}: {expect:?}");
            assert_eq!(paged, expect, "{index}");
        }
        store.close().await.unwrap();
    }

    #[test]
    fn search_words_are_quoted_and_anded() {
        assert_eq!(fts_query("rate limit").as_deref(), Some("\"rate\" \"limit\""));
        assert_eq!(fts_query("trans*").as_deref(), Some("\"trans\"*"));
        assert_eq!(fts_query("a\"b OR").as_deref(), Some("\"a\" \"b\" \"OR\""));
        assert_eq!(fts_query("rate-limit*").as_deref(), Some("\"rate\" \"limit\"*"));
        assert_eq!(fts_query("  -- ** ").as_deref(), None);
    }

    /// Under heavy ingest, what a checkpoint appends to the database leaves the page cache once
    /// synced (see `checkpoint::AppendedPages`), and reads back from the disk.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_a_heavy_checkpoint_appends_leave_the_page_cache() {
        let dir = checkpoint::tests::tempdir_on_disk();
        let path = dir.path().join("traces.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        // 6 MB of span documents that LZ4 cannot shrink, in one transaction
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let traces: Vec<Trace> = (0..450)
            .map(|i| {
                normalized(serde_json::json!({"id": format!("t{i}"), "name": "bulk", "spans": [{
                    "id": "a", "name": "bulk", "kind": "agent",
                    "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:01Z",
                    "output": incompressible(&mut x, 1000)}]}))
            })
            .collect();
        let sent = traces[123].clone();
        store.ingest(traces).await.unwrap();
        // the checkpoint thread copies the transaction within 250 ms; 10 s bounds the wait
        let (mut len, mut left) = (0, 1.0);
        for _ in 0..100 {
            len = std::fs::metadata(&path).unwrap().len();
            if len > 6_000_000 {
                left = checkpoint::tests::resident(&path, 0, len);
                if left < 0.5 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(left < 0.5, "{left:.2} of the database ({len} bytes) stays cached");
        let back = store.get_trace("default", "t123").await.unwrap().unwrap();
        assert_eq!(back.spans[0].output, sent.spans[0].output);
    }
}
