//! The PostgreSQL backend, for teams and for several TraceLLM instances sharing one database.
//!
//! Every ingest call is one transaction on a pooled connection: the reply comes after COMMIT, so
//! a 2xx means committed. PostgreSQL handles concurrent writers itself, so there is no writer
//! task as in SQLite; writers of one trace are serialized by a transaction-scoped advisory lock
//! on (project, trace id), taken in a fixed order within a call so that two calls cannot
//! deadlock. OTLP merges read the stored spans under that lock, so two instances merging spans
//! of one trace never lose each other's spans.
//!
//! Events: the writing instance publishes to its own subscribers right after COMMIT (so an
//! event is out before ingest returns, as with SQLite), and the same transaction sends
//! `NOTIFY tracellm_events` with a small payload (instance, project, trace id, kind), which
//! PostgreSQL delivers on commit. Every instance LISTENs, fetches the summary of traces written
//! by other instances and publishes it to its subscribers.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tracellm_core::api::{
    self, Analytics, AnalyticsQuery, AnalyticsRow, Cursor, Failure, FailurePage, TokenTotals,
    TracePage, TraceQuery,
};
use tracellm_core::otel::SpanBatch;
use tracellm_core::{
    Assembler, Span, SpanEvent, Status, Tokens, Trace, TraceInput, TraceSummary, text, time,
};

use crate::merge::{self, Kept, Merging};
use crate::{
    ApiKey, EventKind, Ingested, NewApiKey, Project, Result, StorageFault, Store, StoreError,
    StoreEvent, StoreInfo,
};

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections this instance opens (the LISTEN connection comes on top).
    pub pool_size: usize,
    /// Prices and limits for re-assembling traces whose spans arrive over many requests.
    pub assembler: Arc<Assembler>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self { pool_size: 16, assembler: Arc::new(Assembler::default()) }
    }
}

/// The channel of trace events between instances.
const CHANNEL: &str = "tracellm_events";

/// The advisory lock held while migrating, so that instances starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7472_6163_656c_6c6d; // "tracellm"

/// Versioned schema migrations; `tracellm_schema.version` records how many ran. Times are
/// microseconds since the epoch in BIGINT columns, as in SQLite (the keyset cursor is one), and
/// every trace query leads with (project_id, ts), which also suits partitioning by time later.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE traces (
    pk                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id        TEXT NOT NULL,
    id                TEXT NOT NULL,
    environment       TEXT,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    ts                BIGINT NOT NULL,
    end_ts            BIGINT,
    latency_ms        DOUBLE PRECISION,
    model             TEXT,
    provider          TEXT,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    tokens_estimated  BOOLEAN NOT NULL,
    cached_tokens     BIGINT,
    cost_usd          DOUBLE PRECISION,
    retries           BIGINT NOT NULL,
    failure_reason    TEXT,
    session_id        TEXT,
    user_id           TEXT,
    tags              TEXT NOT NULL,
    span_count        BIGINT NOT NULL,
    error_count       BIGINT NOT NULL,
    prompt_preview    TEXT,
    response_preview  TEXT,
    prompt            TEXT,
    response          TEXT,
    metadata          TEXT NOT NULL,
    input             TEXT,
    updated_us        BIGINT NOT NULL,
    fts               TSVECTOR NOT NULL,
    UNIQUE (project_id, id)
);
CREATE INDEX traces_by_time    ON traces (project_id, ts DESC, pk DESC);
CREATE INDEX traces_by_status  ON traces (project_id, status, ts DESC, pk DESC);
CREATE INDEX traces_by_model   ON traces (project_id, model, ts DESC, pk DESC);
CREATE INDEX traces_by_session ON traces (project_id, session_id, ts DESC, pk DESC)
    WHERE session_id IS NOT NULL;
CREATE INDEX traces_by_user    ON traces (project_id, user_id, ts DESC, pk DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX traces_fts        ON traces USING GIN (fts);

CREATE TABLE trace_tags (
    trace_pk   BIGINT NOT NULL,
    tag        TEXT NOT NULL,
    project_id TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (trace_pk, tag)
);
CREATE INDEX trace_tags_by_tag ON trace_tags (project_id, tag, ts DESC, trace_pk DESC);

CREATE TABLE spans (
    trace_pk BIGINT NOT NULL,
    id       TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    doc      TEXT NOT NULL,
    PRIMARY KEY (trace_pk, id)
);

-- Events from OTLP logs whose span has not arrived yet.
CREATE TABLE pending_events (
    project_id  TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    span_id     TEXT NOT NULL,
    doc         TEXT NOT NULL,
    received_us BIGINT NOT NULL
);
CREATE INDEX pending_by_trace ON pending_events (project_id, trace_id);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT,
    created_us  BIGINT NOT NULL
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
    hash         BYTEA NOT NULL UNIQUE,
    created_us   BIGINT NOT NULL,
    revoked_us   BIGINT,
    last_used_us BIGINT
);
CREATE INDEX api_keys_by_project ON api_keys (project_id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
-- Values TOAST compresses are compressed with lz4 rather than pglz (several times faster; pglz
-- showed in ingest profiles), when the server was built with lz4.
DO $$ DECLARE c record; BEGIN
    FOR c IN SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND table_name IN ('traces', 'spans', 'pending_events')
               AND data_type IN ('text', 'tsvector')
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET COMPRESSION lz4', c.table_name, c.column_name);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
-- A trace row (summary, prompt, response, search terms) is often a little over 2 KB: keep rows
-- up to a page inline and uncompressed rather than compressing and moving values out of line on
-- every write.
ALTER TABLE traces SET (toast_tuple_target = 8160);
-- Plans for search and filters depend on fresh statistics; a table that grows from empty (every
-- new install) would otherwise be planned as tiny for a long while.
ALTER TABLE traces SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 500);
"#,
    r#"
-- Analytics read nine numbers of every trace in a time range: with them in the index, the scan
-- need not visit the wide trace rows (an index-only scan once autovacuum has marked pages).
CREATE INDEX traces_for_analytics ON traces (project_id, ts) INCLUDE (environment, status, model,
    latency_ms, prompt_tokens, completion_tokens, total_tokens, cost_usd, span_count);
"#,
    r#"
-- Log events whose span never arrives are dropped after a while, oldest first.
CREATE INDEX pending_by_age ON pending_events (received_us);
"#,
];

/// Most text indexed for full-text search per trace. Smaller than SQLite's: a tsvector is
/// limited to 1 MB, positions included.
const MAX_FTS_BYTES: usize = 256 << 10;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            // the server's disk is full: 507, as with SQLite, until space is freed
            if *code == SqlState::DISK_FULL {
                return StoreError::Storage(StorageFault::Full);
            }
            let unavailable = code.code().starts_with("08") // connection exceptions
                || code.code().starts_with("53") // insufficient resources (disk full, …)
                || code.code().starts_with("57P") // shutdown, cannot connect now
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
            return if unavailable {
                StoreError::Unavailable(format!("database: {}", db.message()))
            } else {
                StoreError::Internal(format!("database: {} ({})", db.message(), code.code()))
            };
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            StoreError::Unavailable(format!("database connection: {e}"))
        } else {
            StoreError::Internal(e.to_string())
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Closed => StoreError::Closed,
            PoolError::Backend(e) => e.into(),
            e => StoreError::Unavailable(format!("database: {e}")),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A span's stored document (the same text as [`json`] writes, written faster).
fn span_json(s: &Span) -> Result<String> {
    String::from_utf8(tracellm_core::json::span_to_vec(s))
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// A trace ready to write, serialized before the transaction starts.
struct Prepared {
    summary: TraceSummary,
    input: Option<String>,
    tags: String,
    metadata: String,
    prompt: Option<String>,
    response: Option<String>,
    span_ids: Vec<String>,
    span_starts: Vec<i64>,
    span_docs: Vec<String>,
    fts: Lexemes,
    /// The span lists hold only spans that changed, upserted into the stored ones (an OTLP
    /// merge); otherwise they are the whole trace and replace what is stored.
    merged: bool,
}

fn prepare(t: Trace, input: Option<&TraceInput>) -> Result<Prepared> {
    let mut span_ids = Vec::with_capacity(t.spans.len());
    let mut span_starts = Vec::with_capacity(t.spans.len());
    let mut span_docs = Vec::with_capacity(t.spans.len());
    for s in &t.spans {
        span_ids.push(s.id.clone());
        span_starts.push(time::to_micros(s.start_time));
        span_docs.push(span_json(s)?);
    }
    Ok(Prepared {
        input: input.map(json).transpose()?,
        tags: json(&t.tags)?,
        metadata: json(&t.metadata)?,
        fts: lexemes(&t),
        span_ids,
        span_starts,
        span_docs,
        summary: t.summary(),
        prompt: t.prompt,
        response: t.response,
        merged: false,
    })
}

/// The search terms of a trace (`text::each_term` over everything search covers), sorted and
/// unique, sent to PostgreSQL as a binary `tsvector` without positions: PostgreSQL's own text
/// parser would cost more than half of its CPU at ingest, and splitting here means the index and
/// the queries split words exactly alike (and fold accents as SQLite does).
#[derive(Debug, Default)]
struct Lexemes {
    /// The terms, one after another.
    text: String,
    /// The byte ranges of the distinct terms in `text`, in the order of their bytes (the order
    /// of a `tsvector`).
    terms: Vec<(u32, u32)>,
}

/// A `tsvector` lexeme is at most 2,047 bytes (longer words are not indexed, as with
/// `to_tsvector`).
const MAX_LEXEME_BYTES: usize = 2047;

fn lexemes(t: &Trace) -> Lexemes {
    lexemes_of(|f| text::each_searchable_text(t, f))
}

/// The lexemes of the texts `each` gives.
fn lexemes_of(each: impl FnOnce(&mut dyn FnMut(&str))) -> Lexemes {
    let mut text = String::new();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut word = String::new();
    each(&mut |s| {
        text::each_term(s, &mut word, |w| {
            if w.len() <= MAX_LEXEME_BYTES && text.len() < MAX_FTS_BYTES {
                let start = text.len() as u32;
                text.push_str(w);
                ranges.push((start, text.len() as u32));
            }
        });
    });
    // Words repeat a lot: keep the first of each, then sort the few distinct ones.
    let at = |&(a, b): &(u32, u32)| &text[a as usize..b as usize];
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(ranges.len(), Default::default());
    let mut terms: Vec<(u32, u32)> =
        ranges.iter().copied().filter(|r| seen.insert(at(r))).collect();
    drop(seen);
    terms.sort_unstable_by(|x, y| at(x).cmp(at(y)));
    Lexemes { text, terms }
}

impl ToSql for Lexemes {
    /// The binary `tsvector` format: the count of lexemes, then each lexeme NUL-terminated with
    /// its count of positions (none here). Terms hold only letters and digits, so no NUL.
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_u32(u32::try_from(self.terms.len())?);
        for &(a, b) in &self.terms {
            out.put_slice(&self.text.as_bytes()[a as usize..b as usize]);
            out.put_u8(0);
            out.put_u16(0);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TS_VECTOR
    }

    to_sql_checked!();
}

/// Turns a user's search words into a `tsquery` of quoted lexemes: every word must occur; a
/// trailing `*` makes a prefix search. Words are split and folded as the indexed text was
/// (`text::each_term`), so only letters and digits reach PostgreSQL and none of its operators
/// can be injected; the query is cast to `tsquery` without going through a text parser.
fn ts_query(q: &str) -> Option<String> {
    let mut terms = Vec::new();
    let mut word = String::new();
    for w in q.split_whitespace() {
        let first = terms.len();
        text::each_term(w, &mut word, |t| terms.push(format!("'{t}'")));
        if w.ends_with('*') && terms.len() > first {
            terms.last_mut().expect("a term").push_str(":*");
        }
    }
    (!terms.is_empty()).then(|| terms.join(" & "))
}

/// One trace's change.
enum Op {
    Replace(Prepared),
    Merge { project_id: String, batch: SpanBatch, fresh: Option<Box<Prepared>> },
}

impl Op {
    fn key(&self) -> (&str, &str) {
        match self {
            Op::Replace(p) => (&p.summary.project_id, &p.summary.id),
            Op::Merge { project_id, batch, .. } => (project_id, &batch.trace_id),
        }
    }
}

/// The ops for a request's batches (see [`merge_op`]).
fn merge_ops(asm: &Assembler, project_id: &str, batches: Vec<SpanBatch>) -> Result<Vec<Op>> {
    batches.into_iter().map(|batch| merge_op(asm, project_id, batch)).collect()
}

/// Like SQLite's: a batch that can stand alone is assembled before the transaction.
fn merge_op(asm: &Assembler, project_id: &str, mut batch: SpanBatch) -> Result<Op> {
    let standalone = !batch.spans.is_empty()
        && batch.log_events.iter().all(|(id, _)| batch.spans.iter().any(|s| &s.id == id));
    if !standalone {
        return Ok(Op::Merge { project_id: project_id.to_string(), batch, fresh: None });
    }
    let mut spans = std::mem::take(&mut batch.spans);
    merge::fold_events(&mut spans, std::mem::take(&mut batch.log_events));
    let mut input = batch.input.clone();
    input.id = Some(batch.trace_id.clone());
    let trace = asm
        .partial(project_id, input.clone(), spans)
        .map_err(|e| StoreError::Invalid(format!("trace {}: {e}", batch.trace_id)))?;
    let fresh = Some(Box::new(prepare(trace, Some(&input))?));
    Ok(Op::Merge { project_id: project_id.to_string(), batch, fresh })
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The advisory lock key of one trace.
fn lock_key(project_id: &str, trace_id: &str) -> i64 {
    // FNV-1a: stable across instances and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project_id.bytes().chain([0u8]).chain(trace_id.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

const UPSERT: &str = "INSERT INTO traces (project_id, id, name, status, ts, end_ts, latency_ms,
    model, provider, prompt_tokens, completion_tokens, total_tokens, tokens_estimated,
    cached_tokens, cost_usd, retries, failure_reason, session_id, user_id, tags, span_count,
    error_count, prompt_preview, response_preview, prompt, response, metadata, input, updated_us,
    environment, fts)
 SELECT project_id, id, name, status, ts, end_ts, latency_ms, model, provider, prompt_tokens,
    completion_tokens, total_tokens, tokens_estimated, cached_tokens, cost_usd, retries,
    failure_reason, session_id, user_id, tags, span_count, error_count, prompt_preview,
    response_preview, prompt, response, metadata, input, $29, environment, fts
 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
    $7::float8[], $8::text[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::bool[],
    $14::int8[], $15::float8[], $16::int8[], $17::text[], $18::text[], $19::text[], $20::text[],
    $21::int8[], $22::int8[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[],
    $28::text[], $30::text[], $31::tsvector[])
    AS u(project_id, id, name, status, ts, end_ts, latency_ms, model, provider, prompt_tokens,
    completion_tokens, total_tokens, tokens_estimated, cached_tokens, cost_usd, retries,
    failure_reason, session_id, user_id, tags, span_count, error_count, prompt_preview,
    response_preview, prompt, response, metadata, input, environment, fts)
 ON CONFLICT (project_id, id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status,
    ts = EXCLUDED.ts, end_ts = EXCLUDED.end_ts, latency_ms = EXCLUDED.latency_ms,
    model = EXCLUDED.model, provider = EXCLUDED.provider,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    total_tokens = EXCLUDED.total_tokens, tokens_estimated = EXCLUDED.tokens_estimated,
    cached_tokens = EXCLUDED.cached_tokens, cost_usd = EXCLUDED.cost_usd,
    retries = EXCLUDED.retries, failure_reason = EXCLUDED.failure_reason,
    session_id = EXCLUDED.session_id, user_id = EXCLUDED.user_id, tags = EXCLUDED.tags,
    span_count = EXCLUDED.span_count, error_count = EXCLUDED.error_count,
    prompt_preview = EXCLUDED.prompt_preview, response_preview = EXCLUDED.response_preview,
    prompt = EXCLUDED.prompt, response = EXCLUDED.response, metadata = EXCLUDED.metadata,
    input = EXCLUDED.input, updated_us = GREATEST(EXCLUDED.updated_us, traces.updated_us + 1),
    environment = EXCLUDED.environment, fts = EXCLUDED.fts
 RETURNING pk, (xmax = 0) AS created, project_id, id, updated_us";

/// What writing a trace's row did.
#[derive(Clone, Copy)]
struct RowWritten {
    pk: i64,
    /// A new row.
    created: bool,
    /// Its `updated_us`: `now_us`, or one more than the row had if that was not earlier, so
    /// that every write of a trace leaves a value of its own (a merge's kept state is known to
    /// be the row's by it, whichever instance wrote last).
    stamp: i64,
}

/// Inserts or replaces one trace (the caller holds its lock).
async fn write_trace(tx: &Tx<'_>, p: &Prepared, now_us: i64) -> Result<RowWritten> {
    Ok(write_many(tx, &[p], now_us).await?[0])
}

/// Inserts or replaces traces of distinct (project, id), whose locks the caller holds, in a
/// fixed number of statements (multi-row, from arrays).
async fn write_many(tx: &Tx<'_>, ps: &[&Prepared], now_us: i64) -> Result<Vec<RowWritten>> {
    fn col<'a, T>(ps: &[&'a Prepared], f: impl Fn(&'a Prepared) -> T) -> Vec<T> {
        ps.iter().map(|p| f(p)).collect()
    }
    fn s(p: &Prepared) -> &TraceSummary {
        &p.summary
    }
    let project: Vec<&str> = col(ps, |p| s(p).project_id.as_str());
    let id: Vec<&str> = col(ps, |p| s(p).id.as_str());
    let name: Vec<&str> = col(ps, |p| s(p).name.as_str());
    let status: Vec<&str> = col(ps, |p| s(p).status.as_str());
    let ts: Vec<i64> = col(ps, |p| time::to_micros(s(p).timestamp));
    let end_ts: Vec<Option<i64>> = col(ps, |p| s(p).end_time.map(time::to_micros));
    let latency: Vec<Option<f64>> = col(ps, |p| s(p).latency_ms);
    let model: Vec<Option<&str>> = col(ps, |p| s(p).model.as_deref());
    let provider: Vec<Option<&str>> = col(ps, |p| s(p).provider.as_deref());
    let prompt_tokens: Vec<i64> = col(ps, |p| s(p).tokens.prompt as i64);
    let completion_tokens: Vec<i64> = col(ps, |p| s(p).tokens.completion as i64);
    let total_tokens: Vec<i64> = col(ps, |p| s(p).tokens.total as i64);
    let estimated: Vec<bool> = col(ps, |p| s(p).tokens.estimated);
    let cached: Vec<Option<i64>> = col(ps, |p| s(p).tokens.cached.map(|c| c as i64));
    let cost: Vec<Option<f64>> = col(ps, |p| s(p).cost_usd);
    let retries: Vec<i64> = col(ps, |p| s(p).retries as i64);
    let failure: Vec<Option<&str>> = col(ps, |p| s(p).failure_reason.as_deref());
    let session: Vec<Option<&str>> = col(ps, |p| s(p).session_id.as_deref());
    let user: Vec<Option<&str>> = col(ps, |p| s(p).user_id.as_deref());
    let tags: Vec<&str> = col(ps, |p| p.tags.as_str());
    let span_count: Vec<i64> = col(ps, |p| s(p).span_count as i64);
    let error_count: Vec<i64> = col(ps, |p| s(p).error_count as i64);
    let prompt_preview: Vec<Option<&str>> = col(ps, |p| s(p).prompt_preview.as_deref());
    let response_preview: Vec<Option<&str>> = col(ps, |p| s(p).response_preview.as_deref());
    let prompt: Vec<Option<&str>> = col(ps, |p| p.prompt.as_deref());
    let response: Vec<Option<&str>> = col(ps, |p| p.response.as_deref());
    let metadata: Vec<&str> = col(ps, |p| p.metadata.as_str());
    let input: Vec<Option<&str>> = col(ps, |p| p.input.as_deref());
    let environment: Vec<Option<&str>> = col(ps, |p| s(p).environment.as_deref());
    let fts: Vec<&Lexemes> = col(ps, |p| &p.fts);
    let values: [&(dyn ToSql + Sync); 31] = [
        &project,
        &id,
        &name,
        &status,
        &ts,
        &end_ts,
        &latency,
        &model,
        &provider,
        &prompt_tokens,
        &completion_tokens,
        &total_tokens,
        &estimated,
        &cached,
        &cost,
        &retries,
        &failure,
        &session,
        &user,
        &tags,
        &span_count,
        &error_count,
        &prompt_preview,
        &response_preview,
        &prompt,
        &response,
        &metadata,
        &input,
        &now_us,
        &environment,
        &fts,
    ];
    let stmt = tx.prepare_cached(UPSERT).await?;
    let rows = tx.query(&stmt, &values).await?;
    let mut written = HashMap::with_capacity(rows.len());
    for r in &rows {
        let key: (&str, &str) = (r.get(2), r.get(3));
        written.insert(key, RowWritten { pk: r.get(0), created: r.get(1), stamp: r.get(4) });
    }
    let mut pks = Vec::with_capacity(ps.len());
    let mut out = Vec::with_capacity(ps.len());
    let (mut replaced, mut rewritten) = (Vec::new(), Vec::new());
    for p in ps {
        let &row =
            written.get(&(p.summary.project_id.as_str(), p.summary.id.as_str())).ok_or_else(
                || StoreError::Internal(format!("trace {} was not written", p.summary.id)),
            )?;
        let pk = row.pk;
        pks.push(pk);
        out.push(row);
        if !row.created {
            rewritten.push(pk);
            if !p.merged {
                replaced.push(pk);
            }
        }
    }
    if !replaced.is_empty() {
        let del = tx.prepare_cached("DELETE FROM spans WHERE trace_pk = ANY($1)").await?;
        tx.execute(&del, &[&replaced]).await?;
    }
    if !rewritten.is_empty() {
        let del = tx.prepare_cached("DELETE FROM trace_tags WHERE trace_pk = ANY($1)").await?;
        tx.execute(&del, &[&rewritten]).await?;
    }
    let (mut tag_pk, mut tag, mut tag_project, mut tag_ts) = (vec![], vec![], vec![], vec![]);
    let (mut span_pk, mut span_id, mut span_start, mut span_doc) = (vec![], vec![], vec![], vec![]);
    for ((p, &pk), &t) in ps.iter().zip(&pks).zip(&ts) {
        for name in &p.summary.tags {
            tag_pk.push(pk);
            tag.push(name.as_str());
            tag_project.push(p.summary.project_id.as_str());
            tag_ts.push(t);
        }
        for i in 0..p.span_ids.len() {
            span_pk.push(pk);
            span_id.push(p.span_ids[i].as_str());
            span_start.push(p.span_starts[i]);
            span_doc.push(p.span_docs[i].as_str());
        }
    }
    if !tag.is_empty() {
        let ins = tx
            .prepare_cached(
                "INSERT INTO trace_tags (trace_pk, tag, project_id, ts)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&ins, &[&tag_pk, &tag, &tag_project, &tag_ts]).await?;
    }
    if !span_id.is_empty() {
        let ins = tx
            .prepare_cached(
                "INSERT INTO spans (trace_pk, id, start_us, doc)
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[])
                 ON CONFLICT (trace_pk, id)
                 DO UPDATE SET start_us = excluded.start_us, doc = excluded.doc",
            )
            .await?;
        tx.execute(&ins, &[&span_pk, &span_id, &span_start, &span_doc]).await?;
    }
    Ok(out)
}

/// The state of stored trace `pk` for merging (`crate::merge`), read from its spans.
async fn load_merging(
    tx: &Tx<'_>,
    pk: i64,
    project_id: &str,
    trace_id: &str,
    input: TraceInput,
) -> Result<Merging> {
    let mut m = Merging::new(project_id, trace_id, input, MERGE_TEXT_BYTES);
    m.pk = pk;
    let stmt = tx.prepare_cached("SELECT doc FROM spans WHERE trace_pk = $1").await?;
    let rows = tx.query_raw(&stmt, &[&pk]).await?;
    futures::pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r?;
        let doc: &str = r.get(0);
        m.load(&parse_span(doc, trace_id)?, crate::doc::digest(doc.as_bytes()));
    }
    m.loaded();
    Ok(m)
}

/// Stored spans of trace `pk` by id.
async fn stored_spans(tx: &Tx<'_>, pk: i64, trace_id: &str, ids: &[String]) -> Result<Vec<Span>> {
    let stmt =
        tx.prepare_cached("SELECT doc FROM spans WHERE trace_pk = $1 AND id = ANY($2)").await?;
    let rows = tx.query(&stmt, &[&pk, &ids]).await?;
    rows.iter().map(|r| parse_span(r.get(0), trace_id)).collect()
}

/// Text kept for a growing trace; its lexemes stop at `MAX_FTS_BYTES`, of terms alone.
const MERGE_TEXT_BYTES: usize = 4 * MAX_FTS_BYTES;

/// Mirrors SQLite's `merge_trace`; the caller holds the trace's advisory lock. Also returns the
/// trace's state (`crate::merge`), to be kept once the transaction commits.
async fn merge_trace(
    tx: &Tx<'_>,
    project_id: &str,
    batch: &SpanBatch,
    fresh: Option<&Prepared>,
    asm: &Assembler,
    now: i64,
    kept: &Mutex<Kept>,
) -> Result<(Ingested, Option<TraceSummary>, Option<Merging>)> {
    let trace_id = &batch.trace_id;
    let stmt = tx
        .prepare_cached(
            "SELECT pk, input, updated_us FROM traces WHERE project_id = $1 AND id = $2",
        )
        .await?;
    let existing: Option<(i64, Option<String>, i64)> = tx
        .query_opt(&stmt, &[&project_id, trace_id])
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let stmt = tx
        .prepare_cached(
            "SELECT span_id, doc FROM pending_events WHERE project_id = $1 AND trace_id = $2",
        )
        .await?;
    let pending = tx.query(&stmt, &[&project_id, trace_id]).await?;
    if existing.is_none()
        && pending.is_empty()
        && let Some(p) = fresh
    {
        let row = write_trace(tx, p, now).await?;
        return Ok((
            Ingested { id: trace_id.clone(), created: row.created },
            Some(p.summary.clone()),
            None,
        ));
    }
    let mut events: Vec<(String, SpanEvent)> = pending
        .iter()
        .filter_map(|r| Some((r.get(0), serde_json::from_str(r.get::<_, &str>(1)).ok()?)))
        .collect();
    events.extend(batch.log_events.iter().cloned());
    // The batch's spans: as assembled and serialized before the transaction when it could stand
    // alone (each id once, derived), else as sent (a span sent twice is the later one).
    let (mut arrived, ready): (Vec<Span>, Vec<Option<&str>>) = match fresh {
        Some(p) => {
            let spans = p
                .span_docs
                .iter()
                .map(|doc| parse_span(doc, trace_id))
                .collect::<Result<Vec<_>>>()?;
            (spans, p.span_docs.iter().map(|d| Some(d.as_str())).collect())
        }
        None => (merge::sent_spans(batch), Vec::new()),
    };
    let events_before: Vec<usize> = arrived.iter().map(|s| s.events.len()).collect();
    let mut left = merge::fold_events(&mut arrived, events);
    if let Some((pk, _, _)) = &existing
        && !left.is_empty()
    {
        // events for stored spans: those spans change, and are stored again
        let mut named: Vec<String> = left.iter().map(|(id, _)| id.clone()).collect();
        named.sort_unstable();
        named.dedup();
        arrived.extend(stored_spans(tx, *pk, trace_id, &named).await?);
        left = merge::fold_events(&mut arrived, left);
    }
    if !pending.is_empty() {
        let del = tx
            .prepare_cached("DELETE FROM pending_events WHERE project_id = $1 AND trace_id = $2")
            .await?;
        tx.execute(&del, &[&project_id, trace_id]).await?;
    }
    if !left.is_empty() {
        let ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
        let docs = left.iter().map(|(_, e)| json(e)).collect::<Result<Vec<_>>>()?;
        let ins = tx
            .prepare_cached(
                "INSERT INTO pending_events (project_id, trace_id, span_id, doc, received_us)
                 SELECT $1, $2, span_id, doc, $5 FROM unnest($3::text[], $4::text[]) AS e(span_id, doc)",
            )
            .await?;
        tx.execute(&ins, &[&project_id, trace_id, &ids, &docs, &now]).await?;
    }
    // What is new or changed here is serialized; what was serialized before the transaction
    // and no event changed is stored as it is.
    let settled = merge::settle(&mut arrived, ready, &events_before, asm);
    let docs = arrived
        .iter()
        .zip(settled)
        .map(|(s, doc)| doc.map_or_else(|| span_json(s), |d| Ok(d.to_string())))
        .collect::<Result<Vec<String>>>()?;

    let mut m = match &existing {
        Some((pk, input, stamp)) => {
            let kept = kept.lock().expect("kept merges").take(*pk, project_id, trace_id, *stamp);
            match kept {
                Some(m) => m,
                None => {
                    let stored: TraceInput = input
                        .as_deref()
                        .and_then(|i| serde_json::from_str(i).ok())
                        .unwrap_or_default();
                    load_merging(tx, *pk, project_id, trace_id, stored).await?
                }
            }
        }
        None => Merging::new(project_id, trace_id, TraceInput::default(), MERGE_TEXT_BYTES),
    };
    if arrived.is_empty() && m.heads().is_empty() {
        // Only log events, for spans not seen yet: kept until their spans arrive.
        return Ok((Ingested { id: trace_id.clone(), created: false }, None, None));
    }
    let mut input = m.input.clone().merge(batch.input.clone());
    input.id = Some(trace_id.clone());
    let digests: Vec<(&Span, u64)> =
        arrived.iter().zip(&docs).map(|(s, d)| (s, crate::doc::digest(d.as_bytes()))).collect();
    let arrival = m.arrive(&digests);
    if let Some(replaced) = m.reworded(&arrival) {
        // a span replaced by one of other words: its words go, so the text is read again
        m.forget_text();
        let stmt = tx.prepare_cached("SELECT id, doc FROM spans WHERE trace_pk = $1").await?;
        let rows = tx.query_raw(&stmt, &[&m.pk]).await?;
        futures::pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            if !replaced.contains(r.get::<_, &str>(0)) {
                m.reread(&parse_span(r.get(1), trace_id)?);
            }
        }
    }
    let spans: Vec<&Span> = arrived.iter().collect();
    let write = m.add(&spans, arrival);
    let invalid =
        |e: tracellm_core::ValidationError| StoreError::Invalid(format!("trace {trace_id}: {e}"));
    tracellm_core::check_span_count(m.heads().len(), &asm.opts).map_err(invalid)?;
    // The run's prompt and response come from at most three spans: from this batch, as the last
    // request read them, or read back.
    let mut fetched = foldhash::HashMap::default();
    let trace = loop {
        // the texts are stored whole here, whichever spans they come from
        let (trace, _, missing) =
            m.roll_up(project_id, input.clone(), &arrived, &fetched).map_err(invalid)?;
        if missing.is_empty() {
            break trace;
        }
        let found = stored_spans(tx, m.pk, trace_id, &missing).await?;
        for id in missing {
            fetched.insert(id, None);
        }
        for s in found {
            fetched.insert(s.id.clone(), Some(s));
        }
    };
    let body = m.body(&merge::own_texts(&trace));
    let mut p = Prepared {
        input: Some(json(&input)?),
        tags: json(&trace.tags)?,
        metadata: json(&trace.metadata)?,
        fts: lexemes_of(|f| f(&body)),
        span_ids: Vec::new(),
        span_starts: Vec::new(),
        span_docs: Vec::new(),
        summary: trace.summary(),
        prompt: trace.prompt,
        response: trace.response,
        merged: existing.is_some(),
    };
    for ((s, doc), w) in arrived.iter().zip(docs).zip(write) {
        if w {
            p.span_ids.push(s.id.clone());
            p.span_starts.push(time::to_micros(s.start_time));
            p.span_docs.push(doc);
        }
    }
    let row = write_trace(tx, &p, now).await?;
    m.input = input;
    m.written(row.pk, row.stamp);
    Ok((Ingested { id: trace_id.clone(), created: row.created }, Some(p.summary), Some(m)))
}

pub struct PostgresStore {
    location: String,
    instance: String,
    pool: Pool,
    assembler: Arc<Assembler>,
    events: broadcast::Sender<StoreEvent>,
    closed: AtomicBool,
    /// Traces this instance created, and that count when it last analyzed the tables.
    created: AtomicU64,
    analyzed_at: AtomicU64,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// States of traces growing over many requests (`crate::merge`), as this instance last
    /// wrote them; one is used only while its trace's row holds the `updated_us` it wrote.
    merges: Mutex<Kept>,
}

/// The URL without its password, for logs and the settings page.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn migrate(client: &mut deadpool_postgres::Client) -> Result<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let out = async {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS tracellm_schema (version INTEGER NOT NULL)")
            .await?;
        let version: i64 = client
            .query_one("SELECT COALESCE(max(version), 0)::int8 FROM tracellm_schema", &[])
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Invalid(format!(
                "the database has schema version {version}, newer than this tracellm ({known}); upgrade tracellm"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = client.transaction().await?;
            tx.batch_execute(sql).await?;
            let v = (i + 1) as i32;
            tx.execute("DELETE FROM tracellm_schema", &[]).await?;
            tx.execute("INSERT INTO tracellm_schema (version) VALUES ($1)", &[&v]).await?;
            tx.commit().await?;
            tracing::info!(version = i + 1, "applied migration");
        }
        Ok(())
    }
    .await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    out
}

impl PostgresStore {
    pub async fn open(url: &str, opts: PostgresOptions) -> Result<PostgresStore> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let mut listen_config = config.clone();
        listen_config.connect_timeout(Duration::from_secs(5));
        let mut config = config;
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(5)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut client = pool.get().await?;
        migrate(&mut client).await?;
        drop(client);

        let (events, _) = broadcast::channel(4096);
        let instance = format!("{:016x}", {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one((std::process::id(), chrono::Utc::now()))
        });
        let store = PostgresStore {
            location: redact(url),
            instance: instance.clone(),
            pool: pool.clone(),
            assembler: Arc::clone(&opts.assembler),
            events: events.clone(),
            closed: AtomicBool::new(false),
            created: AtomicU64::new(0),
            analyzed_at: AtomicU64::new(0),
            listener: Mutex::new(None),
            merges: Mutex::new(Kept::default()),
        };
        // Listen before returning, so no event committed after open() is missed.
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let task = tokio::spawn(listen(listen_config, pool, events, instance, ready_tx));
        match tokio::time::timeout(Duration::from_secs(10), ready_rx.recv()).await {
            Ok(Some(())) => {}
            _ => {
                task.abort();
                return Err(StoreError::Unavailable(
                    "cannot LISTEN for events from other instances".into(),
                ));
            }
        }
        *store.listener.lock().expect("listener lock") = Some(task);
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.pool.get().await?)
    }

    /// Writes the ops in one transaction; after COMMIT, publishes their events.
    async fn write(&self, ops: Vec<Op>) -> Result<Vec<Ingested>> {
        // Lock traces in one order in every call, so that concurrent calls cannot deadlock.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| lock_key(ops[i].key().0, ops[i].key().1));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write_once(&ops, &order).await {
                Err(StoreError::Unavailable(m)) if attempt < 3 && m.contains("deadlock") => {
                    tracing::warn!("retrying a write after a deadlock");
                }
                Ok(written) => {
                    let new = written.iter().filter(|(i, _)| i.created).count() as u64;
                    self.analyze_if_grown(new);
                    let mut out = Vec::with_capacity(written.len());
                    for (ingested, summary) in written {
                        let kind =
                            if ingested.created { EventKind::Created } else { EventKind::Updated };
                        if let Some(summary) = summary {
                            let _ = self.events.send(StoreEvent { kind, trace: Arc::new(summary) });
                        }
                        out.push(ingested);
                    }
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Autovacuum analyzes a table once a share of it changed, checking once a minute: a store
    /// that grows from empty is planned as nearly empty for that minute, and a search then
    /// reads every row instead of the full-text index. This instance analyzes the trace tables
    /// itself whenever the traces it created doubled, up to a million (beyond that, the table
    /// is large enough for autovacuum's own thresholds).
    fn analyze_if_grown(&self, new: u64) {
        const FIRST: u64 = 1000;
        const LAST: u64 = 1_000_000;
        let total = self.created.fetch_add(new, Ordering::Relaxed) + new;
        let at = self.analyzed_at.load(Ordering::Relaxed);
        if total < FIRST.max(at * 2) || at >= LAST {
            return;
        }
        if self
            .analyzed_at
            .compare_exchange(at, total, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another write just started one
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let outcome = async {
                let client = pool.get().await?;
                client.batch_execute("ANALYZE traces; ANALYZE trace_tags").await?;
                Ok::<_, StoreError>(())
            }
            .await;
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "analyzing the trace tables failed");
            }
        });
    }

    async fn write_once(
        &self,
        ops: &[Op],
        order: &[usize],
    ) -> Result<Vec<(Ingested, Option<TraceSummary>)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = chrono::Utc::now().timestamp_micros();
        // Every trace's lock, in one statement, in the order of the keys.
        let mut keys: Vec<i64> =
            order.iter().map(|&i| lock_key(ops[i].key().0, ops[i].key().1)).collect();
        keys.dedup();
        let lock = tx
            .prepare_cached("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k")
            .await?;
        tx.execute(&lock, &[&keys]).await?;
        let mut out: Vec<Option<(Ingested, Option<TraceSummary>)>> =
            (0..ops.len()).map(|_| None).collect();
        // states of growing traces, kept once this transaction commits
        let mut states = Vec::new();
        // Traces written whole: native ingest, and new OTLP traces that came in one request.
        // When every trace of the call is distinct they are written together; the others are
        // merged one by one.
        let mut direct: Vec<usize> = Vec::new();
        if keys.len() == ops.len() {
            let mut candidates: HashMap<&str, Vec<&str>> = Default::default();
            for op in ops {
                if let Op::Merge { project_id, batch, fresh: Some(_) } = op {
                    candidates.entry(project_id).or_default().push(&batch.trace_id);
                }
            }
            let mut seen: std::collections::HashSet<(String, String)> = Default::default();
            if !candidates.is_empty() {
                let stmt = tx
                    .prepare_cached(
                        "SELECT id FROM traces WHERE project_id = $1 AND id = ANY($2)
                         UNION SELECT trace_id FROM pending_events
                         WHERE project_id = $1 AND trace_id = ANY($2)",
                    )
                    .await?;
                for (project, ids) in &candidates {
                    for r in tx.query(&stmt, &[project, ids]).await? {
                        seen.insert((project.to_string(), r.get(0)));
                    }
                }
            }
            for (i, op) in ops.iter().enumerate() {
                let whole = match op {
                    Op::Replace(_) => true,
                    Op::Merge { project_id, batch, fresh: Some(_) } => {
                        !seen.contains(&(project_id.clone(), batch.trace_id.clone()))
                    }
                    Op::Merge { .. } => false,
                };
                if whole {
                    direct.push(i);
                }
            }
            let prepared: Vec<&Prepared> = direct
                .iter()
                .map(|&i| match &ops[i] {
                    Op::Replace(p) => p,
                    Op::Merge { fresh, .. } => fresh.as_deref().expect("a whole trace"),
                })
                .collect();
            if !prepared.is_empty() {
                let rows = write_many(&tx, &prepared, now).await?;
                for ((&i, p), row) in direct.iter().zip(prepared).zip(rows) {
                    out[i] = Some((
                        Ingested { id: p.summary.id.clone(), created: row.created },
                        Some(p.summary.clone()),
                    ));
                }
            }
        }
        for &i in order {
            if out[i].is_some() {
                continue;
            }
            let w = match &ops[i] {
                Op::Replace(p) => {
                    let row = write_trace(&tx, p, now).await?;
                    let ingested = Ingested { id: p.summary.id.clone(), created: row.created };
                    (ingested, Some(p.summary.clone()))
                }
                Op::Merge { project_id, batch, fresh } => {
                    let (ingested, summary, state) = merge_trace(
                        &tx,
                        project_id,
                        batch,
                        fresh.as_deref(),
                        &self.assembler,
                        now,
                        &self.merges,
                    )
                    .await?;
                    states.extend(state);
                    (ingested, summary)
                }
            };
            out[i] = Some(w);
        }
        let out: Vec<_> = out.into_iter().map(|w| w.expect("every op written")).collect();
        // NOTIFY payloads are limited to 8000 bytes; ids that long are not announced to other
        // instances. PostgreSQL delivers them at COMMIT.
        let payloads: Vec<String> = out
            .iter()
            .zip(ops)
            .filter(|((_, summary), _)| summary.is_some())
            .map(|((ingested, _), op)| {
                let kind = if ingested.created { "created" } else { "updated" };
                let (project, id) = op.key();
                format!("{}\t{project}\t{id}\t{kind}", self.instance)
            })
            .filter(|p| p.len() < 8000)
            .collect();
        if !payloads.is_empty() {
            let notify = tx
                .prepare_cached("SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p")
                .await?;
            tx.execute(&notify, &[&CHANNEL, &payloads]).await?;
        }
        tx.commit().await?;
        let mut kept = self.merges.lock().expect("kept merges");
        for m in states {
            kept.keep(m);
        }
        Ok(out)
    }
}

/// Keeps a LISTEN connection open (reconnecting after failures) and publishes the traces that
/// other instances wrote. Events committed while the connection is down are not replayed.
async fn listen(
    config: tokio_postgres::Config,
    pool: Pool,
    events: broadcast::Sender<StoreEvent>,
    instance: String,
    ready: mpsc::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "event connection to PostgreSQL lost");
                                break;
                            }
                        }
                    }
                });
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).await.is_ok() {
                    if let Some(r) = ready.take() {
                        let _ = r.send(()).await;
                    }
                    while let Some(payload) = rx.recv().await {
                        announce(&pool, &events, &instance, &payload).await;
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the event connection to PostgreSQL"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn announce(
    pool: &Pool,
    events: &broadcast::Sender<StoreEvent>,
    instance: &str,
    payload: &str,
) {
    let mut parts = payload.splitn(4, '\t');
    let (Some(from), Some(project), Some(id), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    // Our own writes were published when they committed.
    if from == instance || events.receiver_count() == 0 {
        return;
    }
    let kind = if kind == "created" { EventKind::Created } else { EventKind::Updated };
    let fetched = async {
        let client = pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM traces t WHERE t.project_id = $1 AND t.id = $2"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&project, &id]).await?;
        Ok::<_, StoreError>(row.map(|r| summary_from_row(&r).0))
    }
    .await;
    match fetched {
        Ok(Some(summary)) => {
            let _ = events.send(StoreEvent { kind, trace: Arc::new(summary) });
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot fetch a trace announced by another instance"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

const SUMMARY_COLUMNS: &str = "t.id, t.project_id, t.name, t.status, t.ts, t.end_ts, t.latency_ms,
    t.model, t.provider, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.tokens_estimated,
    t.cached_tokens, t.cost_usd, t.retries, t.failure_reason, t.span_count, t.error_count,
    t.session_id, t.user_id, t.tags, t.prompt_preview, t.response_preview, t.pk, t.environment";

fn status_of(s: &str) -> Status {
    Status::parse(s).unwrap_or(Status::Success)
}

fn summary_from_row(r: &Row) -> (TraceSummary, i64) {
    let summary = TraceSummary {
        id: r.get(0),
        project_id: r.get(1),
        name: r.get(2),
        status: status_of(r.get(3)),
        timestamp: time::from_micros(r.get(4)),
        end_time: r.get::<_, Option<i64>>(5).map(time::from_micros),
        latency_ms: r.get(6),
        model: r.get(7),
        provider: r.get(8),
        tokens: Tokens {
            prompt: r.get::<_, i64>(9) as u64,
            completion: r.get::<_, i64>(10) as u64,
            total: r.get::<_, i64>(11) as u64,
            estimated: r.get(12),
            cached: r.get::<_, Option<i64>>(13).map(|c| c as u64),
        },
        cost_usd: r.get(14),
        retries: r.get::<_, i64>(15) as u32,
        failure_reason: r.get(16),
        span_count: r.get::<_, i64>(17) as u32,
        error_count: r.get::<_, i64>(18) as u32,
        session_id: r.get(19),
        user_id: r.get(20),
        tags: serde_json::from_str(r.get(21)).unwrap_or_default(),
        prompt_preview: r.get(22),
        response_preview: r.get(23),
        environment: r.get(25),
    };
    (summary, r.get(24))
}

type Param = Box<dyn ToSql + Sync + Send>;

/// The WHERE clause and its parameters for a trace query (as SQLite's `where_clause`).
fn where_clause(q: &TraceQuery, extra_status: Option<&[Status]>) -> (String, Vec<Param>) {
    let mut p: Vec<Param> = vec![Box::new(q.project_id.clone())];
    let mut sql = String::from("t.project_id = $1");
    let mut push = |sql: &mut String, fragment: &str, v: Param| {
        p.push(v);
        sql.push_str(&fragment.replace('?', &format!("${}", p.len())));
    };
    if let Some(env) = &q.environment {
        push(&mut sql, " AND t.environment = ?", Box::new(env.clone()));
    }
    let statuses: Vec<Status> = match extra_status {
        Some(only) if q.statuses.is_empty() => only.to_vec(),
        Some(only) => q.statuses.iter().copied().filter(|s| only.contains(s)).collect(),
        None => q.statuses.clone(),
    };
    if !statuses.is_empty() || (extra_status.is_some() && !q.statuses.is_empty()) {
        if statuses.is_empty() {
            sql.push_str(" AND FALSE");
        } else {
            let names: Vec<String> = statuses.iter().map(|s| s.as_str().to_string()).collect();
            push(&mut sql, " AND t.status = ANY(?)", Box::new(names));
        }
    }
    for (col, v) in [("model", &q.model), ("session_id", &q.session_id), ("user_id", &q.user_id)] {
        if let Some(v) = v {
            push(&mut sql, &format!(" AND t.{col} = ?"), Box::new(v.clone()));
        }
    }
    if let Some(since) = q.since {
        push(&mut sql, " AND t.ts >= ?", Box::new(time::to_micros(since)));
    }
    if let Some(until) = q.until {
        push(&mut sql, " AND t.ts < ?", Box::new(time::to_micros(until)));
    }
    if let Some(tag) = &q.tag {
        push(
            &mut sql,
            " AND t.pk IN (SELECT trace_pk FROM trace_tags WHERE project_id = $1 AND tag = ?)",
            Box::new(tag.clone()),
        );
    }
    if let Some(words) = q.q.as_deref().filter(|w| !w.trim().is_empty()) {
        match ts_query(words) {
            Some(m) => push(&mut sql, " AND t.fts @@ ?::text::tsquery", Box::new(m)),
            // Only punctuation: nothing can match.
            None => sql.push_str(" AND FALSE"),
        }
    }
    if let Some(c) = q.cursor {
        push(&mut sql, " AND (t.ts, t.pk) < (?", Box::new(c.ts_micros));
        push(&mut sql, ", ?)", Box::new(c.key));
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

const KEY_COLUMNS: &str =
    "id, project_id, environment, name, prefix, created_us, revoked_us, last_used_us";

fn key_from_row(r: &Row) -> ApiKey {
    ApiKey {
        id: r.get(0),
        project_id: r.get(1),
        environment: r.get(2),
        name: r.get(3),
        prefix: r.get(4),
        created_at: time::from_micros(r.get(5)),
        revoked_at: r.get::<_, Option<i64>>(6).map(time::from_micros),
        last_used_at: r.get::<_, Option<i64>>(7).map(time::from_micros),
    }
}

impl PostgresStore {
    async fn list_summaries(
        &self,
        q: &TraceQuery,
        only: Option<&[Status]>,
    ) -> Result<(Vec<TraceSummary>, Option<String>)> {
        let limit = q.limit.clamp(1, api::MAX_PAGE);
        let (clause, params) = where_clause(q, only);
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM traces t WHERE {clause} ORDER BY t.ts DESC, t.pk DESC LIMIT {}",
            limit + 1
        );
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client
            .query(&stmt, &refs)
            .await?
            .iter()
            .map(|r| {
                let (s, pk) = summary_from_row(r);
                let ts = time::to_micros(s.timestamp);
                (s, ts, pk)
            })
            .collect();
        Ok(page_of(rows, limit))
    }
}

/// A trace's row as the trace without spans (`span_count` says how many), and its row key.
async fn trace_head(
    client: &deadpool_postgres::Client,
    project_id: &str,
    id: &str,
) -> Result<Option<(Trace, i64)>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, t.prompt, t.response, t.metadata FROM traces t
             WHERE t.project_id = $1 AND t.id = $2"
        ))
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&project_id, &id]).await? else {
        return Ok(None);
    };
    let (s, pk) = summary_from_row(&row);
    let metadata = serde_json::from_str(row.get::<_, &str>(28)).unwrap_or_default();
    Ok(Some((s.into_trace(row.get(26), row.get(27), metadata, Vec::new()), pk)))
}

fn parse_span(doc: &str, trace_id: &str) -> Result<Span> {
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Internal(format!("span of trace {trace_id} is unreadable: {e}")))
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ingest(&self, traces: Vec<Trace>) -> Result<Vec<Ingested>> {
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
        let prep = move || -> Result<Vec<Op>> {
            traces.into_iter().map(|t| prepare(t, None).map(Op::Replace)).collect()
        };
        let ops = if spans > 64 {
            tokio::task::spawn_blocking(prep)
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??
        } else {
            prep()?
        };
        self.write(ops).await
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
        let ops = if spans > 64 {
            tokio::task::spawn_blocking(prep)
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))??
        } else {
            prep()?
        };
        self.write(ops).await
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
        tokio::runtime::Handle::current().block_on(self.write(ops))
    }

    async fn list_traces(&self, q: TraceQuery) -> Result<TracePage> {
        let (traces, next_cursor) = self.list_summaries(&q, None).await?;
        Ok(TracePage { traces, next_cursor })
    }

    async fn get_trace(&self, project_id: &str, id: &str) -> Result<Option<Trace>> {
        let client = self.client().await?;
        let Some((mut trace, pk)) = trace_head(&client, project_id, id).await? else {
            return Ok(None);
        };
        let stmt = client
            .prepare_cached("SELECT doc FROM spans WHERE trace_pk = $1 ORDER BY start_us, id")
            .await?;
        trace.spans = client
            .query(&stmt, &[&pk])
            .await?
            .iter()
            .map(|r| parse_span(r.get(0), id))
            .collect::<Result<Vec<Span>>>()?;
        Ok(Some(trace))
    }

    async fn get_trace_head(&self, project_id: &str, id: &str) -> Result<Option<Trace>> {
        let client = self.client().await?;
        Ok(trace_head(&client, project_id, id).await?.map(|(head, _)| head))
    }

    async fn get_span_ids(&self, project_id: &str, trace_id: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.id FROM traces t JOIN spans s ON s.trace_pk = t.pk
                 WHERE t.project_id = $1 AND t.id = $2 ORDER BY s.start_us, s.id",
            )
            .await?;
        Ok(client.query(&stmt, &[&project_id, &trace_id]).await?.iter().map(|r| r.get(0)).collect())
    }

    async fn get_spans(
        &self,
        project_id: &str,
        trace_id: &str,
        span_ids: Vec<String>,
    ) -> Result<Vec<Span>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.id, s.doc FROM traces t JOIN spans s ON s.trace_pk = t.pk
                 WHERE t.project_id = $1 AND t.id = $2 AND s.id = ANY($3)",
            )
            .await?;
        let rows = client.query(&stmt, &[&project_id, &trace_id, &span_ids]).await?;
        let mut by_id: HashMap<&str, &str> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        span_ids
            .iter()
            .filter_map(|id| by_id.remove(id.as_str()))
            .map(|doc| parse_span(doc, trace_id))
            .collect()
    }

    async fn get_span(
        &self,
        project_id: &str,
        trace_id: &str,
        span_id: &str,
    ) -> Result<Option<(Span, Option<String>)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.doc, t.environment FROM traces t JOIN spans s ON s.trace_pk = t.pk
                 WHERE t.project_id = $1 AND t.id = $2 AND s.id = $3",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&project_id, &trace_id, &span_id]).await?;
        row.map(|r| Ok((parse_span(r.get(0), trace_id)?, r.get(1)))).transpose()
    }

    async fn failures(&self, q: TraceQuery) -> Result<FailurePage> {
        let (rows, next_cursor) =
            self.list_summaries(&q, Some(&[Status::Error, Status::Retried])).await?;
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
    }

    async fn analytics(&self, q: AnalyticsQuery) -> Result<Analytics> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT ts, model, status, latency_ms, prompt_tokens, completion_tokens,
                        total_tokens, cost_usd, span_count
                 FROM traces WHERE project_id = $1 AND ts >= $2 AND ts < $3
                   AND ($4::text IS NULL OR environment = $4)",
            )
            .await?;
        let (since, until) = q.range_micros();
        let rows = client.query(&stmt, &[&q.project_id, &since, &until, &q.environment]).await?;
        let rows = rows
            .iter()
            .map(|r| AnalyticsRow {
                ts_micros: r.get(0),
                model: r.get(1),
                status: status_of(r.get(2)),
                latency_ms: r.get(3),
                tokens: TokenTotals {
                    prompt: r.get::<_, i64>(4) as u64,
                    completion: r.get::<_, i64>(5) as u64,
                    total: r.get::<_, i64>(6) as u64,
                },
                cost_usd: r.get(7),
                span_count: r.get::<_, i64>(8) as u64,
            })
            .collect();
        Ok(api::aggregate(rows, q.since, q.until, q.bucket_secs))
    }

    async fn info(&self) -> Result<StoreInfo> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*), COALESCE(sum(span_count), 0)::int8 FROM traces", &[])
            .await?;
        Ok(StoreInfo {
            backend: "postgres",
            location: self.location.clone(),
            traces: row.get::<_, i64>(0) as u64,
            spans: row.get::<_, i64>(1) as u64,
        })
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
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO projects (id, name, description, created_us) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &project.id,
                    &project.name,
                    &project.description,
                    &time::to_micros(project.created_at),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("project {:?} already exists", project.id)));
        }
        Ok(project)
    }

    async fn list_projects(&self) -> Result<Vec<Project>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, name, description, created_us FROM projects ORDER BY created_us, id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Project {
                id: r.get(0),
                name: r.get(1),
                description: r.get(2),
                created_at: time::from_micros(r.get(3)),
            })
            .collect())
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        let created = chrono::Utc::now();
        let client = self.client().await?;
        // Inserting only when the project exists, in one statement: no race with a delete.
        let n = client
            .execute(
                "INSERT INTO api_keys (id, project_id, environment, name, prefix, hash, created_us)
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM projects WHERE id = $2)",
                &[&key.id, &key.project_id, &key.environment, &key.name, &key.prefix, &key.hash, &time::to_micros(created)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no project {:?}", key.project_id)));
        }
        Ok(ApiKey {
            id: key.id,
            project_id: key.project_id,
            environment: key.environment,
            name: key.name,
            prefix: key.prefix,
            created_at: created,
            revoked_at: None,
            last_used_at: None,
        })
    }

    async fn list_api_keys(&self, project_id: Option<&str>) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR project_id = $1
                     ORDER BY created_us DESC, id"
                ),
                &[&project_id],
            )
            .await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let client = self.client().await?;
        let now = time::to_micros(chrono::Utc::now());
        let row = client
            .query_opt(
                &format!(
                    "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, $2) WHERE id = $1
                     RETURNING {KEY_COLUMNS}"
                ),
                &[&id, &now],
            )
            .await?;
        Ok(row.as_ref().map(key_from_row))
    }

    async fn note_key_use(&self, uses: Vec<(String, i64)>) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE api_keys SET last_used_us = GREATEST(last_used_us, $2) WHERE id = $1",
            )
            .await?;
        for (id, at) in &uses {
            client.execute(&stmt, &[id, at]).await?;
        }
        Ok(())
    }

    async fn tidy(&self) -> Result<()> {
        // a growing trace's state, not used since the last round, goes with its memory
        self.merges.lock().expect("kept merges").sweep();
        Ok(())
    }

    async fn expire_pending_events(&self, before_us: i64) -> Result<u64> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM pending_events WHERE received_us < $1", &[&before_us])
            .await?)
    }

    async fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKey>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1"))
            .await?;
        Ok(client.query_opt(&stmt, &[&hash]).await?.as_ref().map(key_from_row))
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?
            .map(|r| r.get(0)))
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(task) = self.listener.lock().expect("listener lock").take() {
            task.abort();
        }
        // Writes in flight hold their connection and finish; new ones get `Closed`.
        self.pool.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, ts_query};

    #[test]
    fn search_words_become_an_and_of_lexemes() {
        assert_eq!(ts_query("Rate limit").as_deref(), Some("'rate' & 'limit'"));
        assert_eq!(ts_query("trans*").as_deref(), Some("'trans':*"));
        assert_eq!(ts_query("a'b | !c").as_deref(), Some("'a' & 'b' & 'c'"));
        assert_eq!(ts_query("rate-limit*").as_deref(), Some("'rate' & 'limit':*"));
        assert_eq!(ts_query("Crème").as_deref(), Some("'creme'"));
        assert_eq!(ts_query("  -- ** ").as_deref(), None);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
