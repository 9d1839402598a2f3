//! Storage of traces behind one [`Store`] trait. The backend is chosen by the URL scheme of
//! `--store`: `sqlite://PATH` (embedded, the default) or, later, `postgres://…`. Every backend
//! runs the same conformance suite (`tests/conformance.rs`).

mod doc;
pub use doc::release_thread_state;
mod merge;
pub mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;
use tracellm_core::api::{Analytics, AnalyticsQuery, FailurePage, TracePage, TraceQuery};
use tracellm_core::otel::SpanBatch;
use tracellm_core::{Span, Trace, TraceSummary};

pub use sqlite::{SqliteOptions, SqliteStore, one_c_allocator_arena};

/// What can go wrong in a store, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is wrong (a bad cursor, an impossible range): a 4xx.
    #[error("{0}")]
    Invalid(String),
    /// The store cannot take writes right now (queue full, disk full, database down): retry.
    #[error("{0}")]
    Unavailable(String),
    /// Already exists (a project of that name).
    #[error("{0}")]
    Conflict(String),
    /// Names something that does not exist (a project, a key).
    #[error("{0}")]
    NotFound(String),
    /// The disk refused a write (full, read-only, failing). Reads keep working; writes resume
    /// once the cause is fixed, without a restart.
    #[error("{0}")]
    Storage(StorageFault),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// A bug or corruption: logged, answered with a generic 500.
    #[error("{0}")]
    Internal(String),
}

/// Why the disk refused a write. The messages are what clients see: they name the cause and
/// never the server's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// No space left (SQLite's SQLITE_FULL, PostgreSQL's disk_full).
    Full,
    /// The data directory or its filesystem is read-only.
    ReadOnly,
    /// Writes fail with I/O errors.
    Io,
}

impl std::fmt::Display for StorageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageFault::Full => {
                "the server's disk is full: ingest resumes once space is freed (reads still work)"
            }
            StorageFault::ReadOnly => {
                "the server's data directory is read-only: ingest resumes once it is writable \
                 (reads still work)"
            }
            StorageFault::Io => {
                "the server's disk reports I/O errors: ingest resumes once writes succeed \
                 (reads still work)"
            }
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Storage(StorageFault::Full),
            Some(ErrorCode::ReadOnly) => StoreError::Storage(StorageFault::ReadOnly),
            Some(ErrorCode::SystemIoFailure) => StoreError::Storage(StorageFault::Io),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable("database is busy".into())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What happened to a trace, published after the change is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    #[serde(rename = "trace.created")]
    Created,
    #[serde(rename = "trace.updated")]
    Updated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreEvent {
    pub kind: EventKind,
    pub trace: Arc<TraceSummary>,
}

/// The outcome of ingesting one trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingested {
    pub id: String,
    pub created: bool,
}

/// A project: the unit of isolation. `default` always exists.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An API key as listed: never its secret, only the first characters to recognise it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub project_id: String,
    pub environment: String,
    pub name: Option<String>,
    /// `tlm_sk_` and the first 4 characters of the secret.
    pub prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A key to create: the server generates the secret and passes only its hash.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub project_id: String,
    pub environment: String,
    pub name: Option<String>,
    pub prefix: String,
    pub hash: Vec<u8>,
}

/// Figures about the store for the health route and the settings page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreInfo {
    pub backend: &'static str,
    pub location: String,
    pub traces: u64,
    pub spans: u64,
}

/// Puts each arrived span in place of the stored one with its id, or adds it: what both stores
/// do when a batch of spans merges into a trace (one pass, however big the trace).
pub(crate) fn upsert_spans(spans: &mut Vec<Span>, arrived: Vec<Span>) {
    let mut at: foldhash::HashMap<String, usize> =
        spans.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
    for s in arrived {
        match at.get(&s.id) {
            Some(&i) => spans[i] = s,
            None => {
                at.insert(s.id.clone(), spans.len());
                spans.push(s);
            }
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Stores whole traces, replacing any earlier version with the same project and id. Returns
    /// only once the data is durable; then publishes one event per trace.
    async fn ingest(&self, traces: Vec<Trace>) -> Result<Vec<Ingested>>;

    /// Merges spans that arrive over many requests in any order (OTLP): each batch holds spans
    /// of one trace; spans already stored with the same id are replaced, and the trace is
    /// re-assembled. Returns once durable; publishes `trace.created` on a trace's first sight and
    /// `trace.updated` after.
    async fn ingest_spans(
        &self,
        project_id: &str,
        batches: Vec<SpanBatch>,
    ) -> Result<Vec<Ingested>>;

    /// [`Store::ingest_spans`] for a caller on a thread that may block (tokio's blocking pool,
    /// inside a runtime): whatever the store does to the batches before its write runs on the
    /// calling thread, which made them, and the thread then waits for the write. A request
    /// decoded, mapped and prepared on one thread frees its many small allocations on the
    /// thread that made them, instead of the allocator handing them back across threads.
    fn ingest_spans_blocking(
        &self,
        project_id: &str,
        batches: Vec<SpanBatch>,
    ) -> Result<Vec<Ingested>>;

    /// Trace summaries, newest first, filtered and paged by keyset.
    async fn list_traces(&self, q: TraceQuery) -> Result<TracePage>;

    /// The whole trace, spans ordered by start time.
    async fn get_trace(&self, project_id: &str, id: &str) -> Result<Option<Trace>>;

    /// The trace without its spans (`spans` empty, `span_count` says how many it has): the
    /// head from which a big trace is read in pages.
    async fn get_trace_head(&self, project_id: &str, id: &str) -> Result<Option<Trace>>;

    /// The ids of a trace's spans, ordered as [`Store::get_trace`] orders the spans.
    async fn get_span_ids(&self, project_id: &str, trace_id: &str) -> Result<Vec<String>>;

    /// Spans of one trace by id, in the order of `span_ids`; ids not stored are skipped.
    async fn get_spans(
        &self,
        project_id: &str,
        trace_id: &str,
        span_ids: Vec<String>,
    ) -> Result<Vec<Span>>;

    /// One span of a trace, whole (for clients that fetched the trace without payloads).
    /// Returns the span and its trace's environment.
    async fn get_span(
        &self,
        project_id: &str,
        trace_id: &str,
        span_id: &str,
    ) -> Result<Option<(Span, Option<String>)>>;

    /// Failed and retried traces, newest first.
    async fn failures(&self, q: TraceQuery) -> Result<FailurePage>;

    async fn analytics(&self, q: AnalyticsQuery) -> Result<Analytics>;

    async fn info(&self) -> Result<StoreInfo>;

    /// Creates a project; `Conflict` when the id is taken.
    async fn create_project(
        &self,
        id: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<Project>;

    async fn list_projects(&self) -> Result<Vec<Project>>;

    /// Stores a key's hash; `NotFound` when the project does not exist.
    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey>;

    /// Keys, newest first, of one project or all.
    async fn list_api_keys(&self, project_id: Option<&str>) -> Result<Vec<ApiKey>>;

    /// Marks a key revoked (idempotent); `None` when no such key.
    async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKey>>;

    /// The key whose secret hashes to `hash`, revoked or not.
    async fn find_api_key(&self, hash: &[u8]) -> Result<Option<ApiKey>>;

    /// Records when keys were last used (`(key id, micros)`); a time never moves backwards.
    async fn note_key_use(&self, uses: Vec<(String, i64)>) -> Result<()>;

    /// Drops log events held for a span that never arrived, received before `before_us`;
    /// returns how many.
    async fn expire_pending_events(&self, before_us: i64) -> Result<u64>;

    /// Housekeeping the store does while ingest is quiet (called every 30 s).
    async fn tidy(&self) -> Result<()> {
        Ok(())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>>;

    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;

    /// Events of every durable change, for the WebSocket hub.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// Finishes every accepted write, then refuses new ones.
    async fn close(&self) -> Result<()>;
}

/// Opens the store named by `url`: `sqlite://PATH` (or a bare path) today.
pub async fn open(url: &str, sqlite: SqliteOptions) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteStore::open(path.as_ref(), sqlite).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The assembler (prices, limits) is the server's, whichever the backend.
        let opts = postgres::PostgresOptions {
            assembler: Arc::clone(&sqlite.assembler),
            ..Default::default()
        };
        return Ok(Arc::new(postgres::PostgresStore::open(url, opts).await?));
    }
    if url.contains("://") {
        return Err(StoreError::Invalid(format!(
            "unknown store scheme in {url:?}: expected sqlite://PATH or postgres://…"
        )));
    }
    Ok(Arc::new(SqliteStore::open(url.as_ref(), sqlite).await?))
}
