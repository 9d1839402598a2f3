//! Full-text search of the SQLite backend: an FTS5 index in a database file of its own
//! (`traces.search.db` beside `traces.db`), written by a thread of its own.
//!
//! Indexing inside the transaction that acknowledges ingest made half of the writer's work and
//! most of its slow commits (FTS5 flushes and merges segments at commit). Now that transaction
//! only appends the trace's row key to `fts_log` in the main database, so what is acknowledged
//! is queued for indexing durably, and the writer hands the text to the indexer in memory after
//! the commit. The indexer writes what has gathered in one transaction of the search database
//! (its own write lock, WAL and checkpoints) with the last `fts_log` sequence number whose texts
//! it holds; the transactions that also write the sessions and users waiting (see below) move
//! the number whose keys it holds, and the writer trims the log up to that one. After a crash,
//! or when the hand-off overflowed, the indexer reads back from the stored traces the keys past
//! the one number and indexes the texts past the other. A search waits until the index has
//! caught up with every commit made before it started (one indexer batch), so an acknowledged
//! trace is found at once.
//!
//! The same database holds the index of traces by session and by user (`trace_keys`). Their
//! ids are random to the B-tree: in the main database each new trace dirtied a 16 KB page of
//! each index in every commit (a third of all bytes written, 10 % of the server's CPU at
//! ingest). Here they are written onto 4 KB pages, and not with every batch of texts: they wait
//! in the indexer's memory (`KEYS_BATCH`) until a filter by session or user waits for them, which
//! has the indexer write them at once, as a search has it index the texts gathered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::watch;

use crate::{Result, StoreError};

/// Texts gather this long before they are indexed, unless a search is waiting for them: each
/// FTS5 commit costs a segment flush, merge work and a sync, so many small ones cost several
/// times the CPU of one large one. At 10,000 spans/s, gathering 1 s instead of 200 ms wrote 40 %
/// fewer bytes (800 MB a minute instead of 1.36 GB, merges included), and the ingest answers
/// beside it, which wait on the same two cores and the same disk, p99 6.6-6.8 ms instead of
/// 8.1-8.5 ms.
const GATHER: Duration = Duration::from_millis(1000);
/// ... or until this many bytes of text have gathered (or half the hand-off's bound).
const GATHER_BYTES: usize = 8 * 1024 * 1024;
/// Sessions' and users' keys wait in the indexer's memory for this many traces, or this long,
/// or until a filter by session or user waits for them, or ingest goes quiet, before they are
/// written. Written with every text batch, each batch rewrote the newest 4 KB leaf of every
/// session and user it touched (otlp_load.py's 1,000 sessions: ~1,000 leaves a batch whatever its
/// size), 13-18 % of all the bytes the store wrote at full speed. The texts are indexed as before;
/// only the keys wait, and `indexed.seq` stays at the last batch that wrote them (after a crash,
/// the keys after it are read back from the traces' rows).
const KEYS_BATCH: usize = 32_768;
const KEYS_GATHER: Duration = Duration::from_secs(30);
/// Traces read back per transaction when catching up from `fts_log`.
const CATCH_UP_BATCH: i64 = 512;
/// Longest a search waits for the index to catch up with the commits before it.
const SEARCH_WAIT: Duration = Duration::from_secs(2);
/// Traces behind beyond which a search answers from what is indexed rather than wait (a
/// rebuild of the whole index after an upgrade or a lost index file).
const SEARCH_WAIT_MAX_BEHIND: i64 = 20_000;

const SCHEMA: &str = r#"
-- Which main database this index belongs to, the last fts_log sequence number whose texts and
-- keys it holds (`seq`), and the last whose texts it holds (`texts_seq`, NULL: `seq`).
CREATE TABLE indexed (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    main_id   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    texts_seq INTEGER
);
-- Each trace's session and user, and start time (as in `traces`), for the filters by them.
-- Traces with neither have no row.
CREATE TABLE trace_keys (
    pk         INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL,
    ts         INTEGER NOT NULL,
    session_id TEXT,
    user_id    TEXT
);
CREATE INDEX keys_by_session ON trace_keys (project_id, session_id, ts DESC, pk DESC)
    WHERE session_id IS NOT NULL;
CREATE INDEX keys_by_user    ON trace_keys (project_id, user_id, ts DESC, pk DESC)
    WHERE user_id IS NOT NULL;
-- Contentless (the text lives in the main database) and without positions (detail = none):
-- searches are sets of words, so positions would only cost index size and indexing time.
CREATE VIRTUAL TABLE trace_fts USING fts5(
    body, content = '', contentless_delete = 1, detail = none,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Merge index segments 16 at a time (the most FTS5 allows): merging at 8 was a third of the
-- indexing time, and search latency did not move (scripts/bench).
INSERT INTO trace_fts (trace_fts, rank) VALUES ('automerge', 16);
-- FTS5 merges a whole level at once when it holds `crisismerge` segments (16 by default, our
-- automerge): a 0.8 s pause every ~40 s at 10,000 spans/s. Above automerge, incremental merging
-- does all of it in bounded steps.
INSERT INTO trace_fts (trace_fts, rank) VALUES ('crisismerge', 128);
"#;

/// The search database beside the main one: `traces.db` → `traces.search.db`.
pub(crate) fn path_for(main: &Path) -> PathBuf {
    let stem = main.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    main.with_file_name(format!("{stem}.search.db"))
}

/// One trace's text to index, as the writer committed it.
pub(crate) struct Doc {
    /// Its `fts_log` sequence number.
    pub seq: i64,
    pub pk: i64,
    /// The trace was new in that commit: nothing of it is indexed yet.
    pub fresh: bool,
    pub body: Arc<str>,
    pub keys: Keys,
}

/// What the filters by session and user need of a trace.
#[derive(Clone)]
pub(crate) struct Keys {
    pub project_id: String,
    /// Start time, Unix microseconds (`traces.ts`).
    pub ts: i64,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

impl Keys {
    fn len(&self) -> usize {
        self.project_id.len()
            + self.session_id.as_ref().map_or(0, String::len)
            + self.user_id.as_ref().map_or(0, String::len)
    }
}

/// Texts passed from the writer to the indexer, bounded in bytes (waiting and being indexed).
/// When the indexer falls behind by the bound, the writer waits for it before its next
/// transaction, its queue fills, and ingest answers 503: search stays within its visibility
/// bound and memory within the configured one. While the indexer reads a backlog from the
/// database (after a crash, or rebuilding the index), the writer drops the texts instead, which
/// the backlog includes: ingest never waits for a rebuild.
pub(crate) struct Handoff {
    state: Mutex<HandoffState>,
    /// The indexer waits here for texts.
    ready: Condvar,
    /// The writer waits here for room.
    room: Condvar,
    bound: usize,
}

#[derive(Default)]
struct HandoffState {
    docs: Vec<Doc>,
    /// Bytes waiting and being indexed.
    bytes: usize,
    /// Bytes waiting.
    waiting: usize,
    /// The indexer reads a backlog from the database: texts are dropped, not kept.
    catching_up: bool,
    /// Texts were dropped: the indexer must read `fts_log` to find them.
    gap: bool,
    closed: bool,
    /// A search waits for what has gathered: index it now.
    hurry: bool,
    /// A filter by session or user waits: write the keys waiting too.
    hurry_keys: bool,
    /// When the oldest text waiting arrived.
    since: Option<std::time::Instant>,
    /// Ingest is quiet: the indexer should hand back its page cache's memory.
    release: bool,
}

impl HandoffState {
    /// A search or a filter waits for the texts gathered, or the store is closing.
    fn waited(&self) -> bool {
        self.hurry || self.hurry_keys || self.closed
    }
}

impl Handoff {
    pub fn new(bound: usize) -> Self {
        Handoff {
            state: Mutex::default(),
            ready: Condvar::new(),
            room: Condvar::new(),
            bound: bound.max(1),
        }
    }

    fn gather_bytes(&self) -> usize {
        GATHER_BYTES.min(self.bound / 2)
    }

    /// Passes one commit's texts (dropped, marking a gap, while the indexer reads a backlog).
    pub fn push(&self, docs: Vec<Doc>) {
        if docs.is_empty() {
            return;
        }
        let bytes: usize = docs.iter().map(|d| d.body.len() + d.keys.len() + 96).sum();
        let mut s = self.state.lock().expect("handoff lock");
        if s.catching_up {
            s.gap = true;
        } else {
            s.bytes += bytes;
            s.waiting += bytes;
            s.docs.extend(docs);
            s.since.get_or_insert_with(std::time::Instant::now);
        }
        let now = s.gap || s.hurry || s.waiting >= self.gather_bytes();
        drop(s);
        if now {
            self.ready.notify_one();
        }
    }

    /// The writer, before a transaction: waits while the texts not yet indexed exceed the bound.
    pub fn wait_for_room(&self) {
        let mut s = self.state.lock().expect("handoff lock");
        while s.bytes > self.bound && !s.catching_up && !s.closed {
            s.hurry = true;
            self.ready.notify_one();
            s = self.room.wait_timeout(s, Duration::from_millis(100)).expect("handoff lock").0;
        }
    }

    /// The indexer is done with `bytes` it took: room for the writer.
    fn finished(&self, bytes: usize) {
        let mut s = self.state.lock().expect("handoff lock");
        s.bytes = s.bytes.saturating_sub(bytes);
        drop(s);
        self.room.notify_all();
    }

    /// The indexer starts or ends reading a backlog from the database.
    fn catching_up(&self, on: bool) {
        self.state.lock().expect("handoff lock").catching_up = on;
        self.room.notify_all();
    }

    /// A search waits: index what has gathered without waiting for more (and, for a filter by
    /// session or user, write the keys waiting in the indexer).
    fn hurry(&self, keys: bool) {
        let mut s = self.state.lock().expect("handoff lock");
        s.hurry = true;
        s.hurry_keys |= keys;
        drop(s);
        self.ready.notify_one();
    }

    /// Whether a batch being indexed at the lowest priority should be cut short and indexed at
    /// once: a search or a filter waits, the store is closing, or a whole batch has gathered
    /// behind it (ingest is no longer light).
    fn pressing(&self) -> Pressing {
        let s = self.state.lock().expect("handoff lock");
        if s.waited() {
            Pressing::Waited
        } else if s.waiting >= self.gather_bytes() {
            Pressing::Heavy
        } else {
            Pressing::No
        }
    }

    fn is_closed(&self) -> bool {
        self.state.lock().expect("handoff lock").closed
    }

    /// No more texts will come; the indexer finishes what it holds and stops.
    pub fn close(&self) {
        self.state.lock().expect("handoff lock").closed = true;
        self.ready.notify_one();
    }

    /// Ingest is quiet: asks the indexer to hand back the memory it holds (see `release_memory`).
    pub fn ask_release(&self) {
        self.state.lock().expect("handoff lock").release = true;
        self.ready.notify_one();
    }

    /// Waits for texts to have gathered (`GATHER`, `GATHER_BYTES`, a waiting search or writer,
    /// the end), a gap, a filter waiting for the keys, or a request to release memory; `None`
    /// once closed and drained.
    fn take(&self) -> Option<Taken> {
        let mut s = self.state.lock().expect("handoff lock");
        loop {
            let due = s.since.map(|t| t + GATHER);
            let ready = s.gap
                || s.release
                || s.hurry_keys
                || (!s.docs.is_empty()
                    && (s.hurry
                        || s.closed
                        || s.waiting >= self.gather_bytes()
                        || due.is_some_and(|d| d <= std::time::Instant::now())));
            if ready {
                let light = !(s.docs.is_empty() || s.gap || s.release || s.waited())
                    && s.since.is_some_and(|t| t.elapsed() >= LIGHT_GATHER);
                if !s.docs.is_empty() {
                    // (a search waiting for texts not handed over yet still hurries them)
                    s.hurry = false;
                    s.since = None;
                }
                return Some(Taken {
                    light,
                    docs: std::mem::take(&mut s.docs),
                    gap: std::mem::take(&mut s.gap),
                    bytes: std::mem::take(&mut s.waiting),
                    release: std::mem::take(&mut s.release),
                    keys: std::mem::take(&mut s.hurry_keys),
                });
            }
            if s.closed {
                return None;
            }
            s = match due {
                Some(d) => {
                    let wait = d.saturating_duration_since(std::time::Instant::now());
                    self.ready.wait_timeout(s, wait).expect("handoff lock").0
                }
                None => self.ready.wait(s).expect("handoff lock"),
            };
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pressing {
    No,
    /// Somebody waits for the batch.
    Waited,
    /// Ingest is heavy again.
    Heavy,
}

/// A batch of texts for `index`.
#[derive(Clone, Copy)]
struct Batch<'a> {
    docs: &'a [Doc],
    upto: i64,
    write_keys: bool,
}

impl Batch<'_> {
    /// Indexes the batch in one transaction on `conn` (see `index`).
    fn write(self, conn: &mut Connection, pending: &mut PendingKeys) -> Result<()> {
        index(conn, self.docs, &[], pending, self.upto, self.write_keys)
    }
}

/// Where a batch was indexed.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    Here,
    /// On a thread of the lowest priority.
    Low,
    /// Begun there, cut short and indexed here, for this reason.
    Cut(Pressing),
}

/// A batch that took at least this long to gather (a whole `GATHER`, or `GATHER_BYTES` at up to
/// 32 MB of text a second) with nobody waiting for it is light ingest's, indexed at the lowest
/// CPU priority. Full-speed ingest fills a batch in less (otlp_load.py's traces at 80,000
/// spans/s: ~0.15 s); 10,000 spans/s of `paced`'s agent traces, whose texts are larger, in ~0.6 s.
const LIGHT_GATHER: Duration = Duration::from_millis(250);
/// How often the indexer looks whether a batch at the lowest priority must be cut short.
const LOW_POLL: Duration = Duration::from_millis(2);
/// After a batch was cut short by heavy ingest, batches are indexed at normal priority this long.
const DIRECT_AFTER_HEAVY: Duration = Duration::from_secs(10);

/// The calling thread runs only when a core has nothing else to run (Linux's `SCHED_IDLE`; a
/// thread cannot raise itself back without privilege, so it is a thread of its own).
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets the calling thread's own policy; `param` outlives the call
        let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_IDLE refused");
        }
    }
}

/// What the indexer takes from the hand-off.
struct Taken {
    docs: Vec<Doc>,
    /// Texts were dropped: read `fts_log`.
    gap: bool,
    /// Bytes of `docs`, to hand back with `finished`.
    bytes: usize,
    /// Ingest is quiet: hand back memory (and write the keys waiting).
    release: bool,
    /// A filter by session or user waits: write the keys waiting.
    keys: bool,
    /// Gathered for at least `LIGHT_GATHER`, and nobody waits for it: ingest is light, and the
    /// batch may be indexed at the lowest CPU priority.
    light: bool,
}

/// How far the writer has committed and the indexer has indexed, in `fts_log` numbers.
pub(crate) struct Progress {
    committed: AtomicI64,
    /// Texts searchable up to here (`indexed.texts_seq`).
    indexed: watch::Sender<i64>,
    /// Texts and keys written up to here (`indexed.seq` in the search database): what the log
    /// may be trimmed to, and what filters by session or user wait for.
    written: watch::Sender<i64>,
    handoff: Arc<Handoff>,
}

impl Progress {
    fn new(committed: i64, written: i64, indexed: i64, handoff_bytes: usize) -> Self {
        Progress {
            committed: AtomicI64::new(committed),
            indexed: watch::Sender::new(indexed),
            written: watch::Sender::new(written),
            handoff: Arc::new(Handoff::new(handoff_bytes)),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Progress::new(0, 0, 0, 1 << 20)
    }

    /// Where the writer passes texts to the indexer.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }

    /// The writer committed up to `seq`.
    pub fn committed(&self, seq: i64) {
        self.committed.fetch_max(seq, Ordering::AcqRel);
    }

    pub fn indexed(&self) -> i64 {
        *self.indexed.borrow()
    }

    /// Texts and keys written to the search database up to here: the log may be trimmed to it.
    pub fn written(&self) -> i64 {
        *self.written.borrow()
    }

    /// Waits until every trace committed before this call is indexed (bounded by `SEARCH_WAIT`;
    /// not at all while the indexer works through a backlog as large as a rebuild), its texts
    /// or, with `keys`, its session and user as well. True when the index then covers them all.
    pub async fn caught_up(&self, keys: bool) -> bool {
        let target = self.committed.load(Ordering::Acquire);
        let watched = if keys { &self.written } else { &self.indexed };
        if *watched.borrow() >= target {
            return true;
        }
        // the keys waiting are written in one transaction: only texts are a backlog
        if target - self.indexed() > SEARCH_WAIT_MAX_BEHIND {
            return false;
        }
        let deadline = tokio::time::Instant::now() + SEARCH_WAIT;
        // The texts, with the keys waiting written in the same transaction. Texts not handed
        // over yet when the indexer takes what has gathered are indexed in the next one, and
        // once they are the indexer holds the keys of every trace before `target`: one more
        // transaction writes them.
        let steps: &[&watch::Sender<i64>] =
            if keys { &[&self.indexed, &self.written] } else { &[&self.indexed] };
        for &progress in steps {
            let mut rx = progress.subscribe();
            if *rx.borrow_and_update() >= target {
                continue;
            }
            self.handoff.hurry(keys);
            let reached = rx.wait_for(|&s| s >= target);
            if tokio::time::timeout_at(deadline, reached).await.is_err() {
                tracing::warn!(
                    target,
                    indexed = self.indexed(),
                    written = self.written(),
                    "search answered before the index caught up"
                );
                return false;
            }
        }
        true
    }
}

fn open_search_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // 4 KB pages (on a new file): the session and user indexes take a page per trace written
    // once they are large, FTS5 segments are written whole either way.
    conn.pragma_update(None, "page_size", 4096)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Losing the index's last transactions would lose nothing (fts_log has them) only if the
    // log still held them: the writer trims the log up to what this database has committed, so
    // its commits must be as durable as the main database's.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    // the indexer tokenizes every trace's text: unicode61 with its fast path for ASCII (the
    // same terms; the read connections tokenize only queries, with the built-in). The search
    // table keeps terms without positions, so a text's repeated words are given to it once.
    super::tokenizer::register(&conn, super::tokenizer::Detail::TermsOnly)?;
    Ok(conn)
}

/// Opens (creating or rebuilding as needed) the search database paired with the main database
/// `main`, whose write connection is `writer` (not yet shared: called before the writer thread
/// starts). Returns the indexer's connection and its progress. `handoff_bytes` bounds the texts
/// in memory between the writer and the indexer.
pub(crate) fn open(
    main: &Path,
    writer: &Connection,
    handoff_bytes: usize,
) -> Result<(Connection, Arc<Progress>)> {
    let path = path_for(main);
    let main_id: String = match writer
        .query_row("SELECT value FROM settings WHERE key = 'search_index'", [], |r| r.get(0))
        .optional()?
    {
        Some(id) => id,
        None => {
            let id = format!(
                "{:x}-{:x}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
                std::process::id()
            );
            writer
                .execute("INSERT INTO settings (key, value) VALUES ('search_index', ?1)", [&id])?;
            id
        }
    };
    let last_seq = log_end(writer)?;
    let unavailable = |e: rusqlite::Error| {
        StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
    };
    let mut conn = open_search_db(&path).map_err(unavailable)?;
    // an index file from before `trace_keys` is rebuilt like a lost one
    let has_schema: bool = conn
        .query_row(
            "SELECT count(*) = 2 FROM sqlite_master WHERE name IN ('indexed', 'trace_keys')",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false);
    if has_schema {
        // a file from before `texts_seq`: its `seq` covers both
        let columns: i64 = conn.query_row(
            "SELECT count(*) FROM pragma_table_info('indexed') WHERE name = 'texts_seq'",
            [],
            |r| r.get(0),
        )?;
        if columns == 0 {
            conn.execute("ALTER TABLE indexed ADD COLUMN texts_seq INTEGER", [])?;
        }
    }
    let state: Option<(String, i64, i64)> = if has_schema {
        // (an earlier binary moves `seq` alone, with texts and keys)
        conn.query_row(
            "SELECT main_id, seq, max(seq, coalesce(texts_seq, seq)) FROM indexed",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
    } else {
        None
    };
    let (written, indexed) = match state {
        // ours, and not ahead of the log (a main database restored from an older copy)
        Some((id, seq, texts)) if id == main_id && texts <= last_seq => (seq, texts),
        other => {
            if other.is_some() {
                tracing::warn!(path = %path.display(), "search index belongs to another database state: rebuilding it");
            }
            drop(conn);
            for suffix in ["", "-wal", "-shm"] {
                let f = PathBuf::from(format!("{}{suffix}", path.display()));
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(StoreError::Unavailable(format!(
                            "cannot remove {}: {e}",
                            f.display()
                        )));
                    }
                    _ => {}
                }
            }
            conn = open_search_db(&path).map_err(unavailable)?;
            let tx = conn.transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO indexed (id, main_id, seq) VALUES (1, ?1, ?2)",
                params![main_id, last_seq],
            )?;
            tx.commit()?;
            // every stored trace is to be indexed: queue them all after the current end
            let queued =
                writer.execute("INSERT INTO fts_log (pk) SELECT pk FROM traces ORDER BY pk", [])?;
            if queued > 0 {
                tracing::info!(traces = queued, "building the search index from stored traces");
            }
            (last_seq, last_seq)
        }
    };
    let progress = Progress::new(log_end(writer)?, written, indexed, handoff_bytes);
    Ok((conn, Arc::new(progress)))
}

/// The last number `fts_log` has given (kept by AUTOINCREMENT when the rows are trimmed).
fn log_end(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'fts_log'", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Attaches the search database to a read connection as `search`.
pub(crate) fn attach(conn: &Connection, main: &Path) -> rusqlite::Result<()> {
    let path = path_for(main);
    conn.execute("ATTACH DATABASE ?1 AS search", [path.to_string_lossy()])?;
    Ok(())
}

pub(crate) struct Indexer {
    pub conn: Connection,
    pub main: PathBuf,
    pub progress: Arc<Progress>,
    /// The read connections, which attach the search database.
    pub readers: Arc<super::ReaderPool>,
    /// See `SqliteOptions::on_quiet`.
    pub on_quiet: Option<fn()>,
}

impl Indexer {
    fn handoff(&self) -> &Handoff {
        &self.progress.handoff
    }

    pub fn run(mut self) {
        // texts indexed up to `done`; their keys written up to `progress.written()`
        let mut done = self.progress.indexed();
        let mut pending = PendingKeys::default();
        let mut behind = true; // the log may hold what an earlier run did not index
        // light batches are indexed at once after one was cut short by heavy ingest, until then
        let mut direct_until: Option<Instant> = None;
        loop {
            if behind {
                // what is not written is read back from the log: the keys past the search
                // database's number, the texts past its texts' number
                pending = PendingKeys::default();
                done = self.progress.indexed();
                self.handoff().catching_up(true);
                let caught_up = self.catch_up(&mut done, &mut pending);
                self.handoff().catching_up(false);
                match caught_up {
                    Ok(true) => behind = false,
                    // closing with a backlog: what the hand-off holds comes after it
                    Ok(false) => break,
                    Err(e) => {
                        if self.recover(e) {
                            continue;
                        }
                        break;
                    }
                }
            }
            let Some(taken) = self.handoff().take() else { break };
            if taken.gap {
                self.handoff().finished(taken.bytes);
                behind = true;
                continue;
            }
            let docs: Vec<Doc> = taken.docs.into_iter().filter(|d| d.seq > done).collect();
            let upto = docs.iter().map(|d| d.seq).max().unwrap_or(done);
            let write_keys =
                taken.keys || taken.release || pending.due(docs.len(), std::time::Instant::now());
            let written = self.progress.written();
            let result = if !docs.is_empty() || (write_keys && upto > written) {
                let batch = Batch { docs: &docs, upto, write_keys };
                let low = taken.light && direct_until.is_none_or(|t| t <= Instant::now());
                match self.index_batch(batch, &mut pending, low) {
                    Ok(Ran::Cut(Pressing::Heavy)) => {
                        direct_until = Some(Instant::now() + DIRECT_AFTER_HEAVY);
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            } else {
                Ok(())
            };
            drop(docs);
            self.handoff().finished(taken.bytes);
            if let Err(e) = result {
                // these texts are in the log too: read them back from there
                behind = true;
                if self.recover(e) {
                    continue;
                }
                break;
            }
            done = upto;
            self.progress.indexed.send_replace(done);
            if write_keys {
                self.progress.written.send_replace(done);
            }
            if taken.release {
                let _ = self.conn.release_memory();
                crate::sqlite::hand_back_freed(self.on_quiet);
            }
        }
        if !behind && done > self.progress.written() {
            match index(&mut self.conn, &[], &[], &mut pending, done, true) {
                Ok(()) => {
                    self.progress.written.send_replace(done);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "sessions and users waiting not written: indexed again at the next start"
                ),
            }
        }
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::warn!(error = %e, "search index checkpoint at shutdown failed");
        }
        tracing::debug!("search indexer stopped");
    }

    /// Indexes a batch: on this thread, or, when `low`, on a thread at the lowest CPU priority
    /// (Linux's `SCHED_IDLE`), which runs only on a core nothing else wants. At light ingest the
    /// batch's CPU (FTS5's tokens, merges and flush: 30-40 ms each second at 10,000 spans/s) then
    /// never makes a request's thread wait for a core: measured at 10,000 spans/s, the ingest
    /// answers' p99 4.2-4.5 ms in most runs instead of 5.3-5.9 ms (docs/BENCHMARKS.md). Such a
    /// thread may wait long on a busy machine, so it is cut short (its transaction interrupted
    /// and rolled back, the batch indexed here) as soon as a search waits for it, the store
    /// closes, or a whole batch gathers behind it.
    fn index_batch(&mut self, b: Batch<'_>, pending: &mut PendingKeys, low: bool) -> Result<Ran> {
        if low && cfg!(target_os = "linux") {
            let traces = pending.traces;
            match self.index_low(b, pending)? {
                None => return Ok(Ran::Low),
                Some(cut) => {
                    // cut short (or never begun): the same batch again, here, its keys' count as
                    // it was
                    pending.traces = traces;
                    tracing::debug!(?cut, texts = b.docs.len(), "low-priority indexing cut short");
                    // (an interrupted write rolls its transaction back; a ROLLBACK cut short too
                    // would leave it open)
                    if !self.conn.is_autocommit() {
                        self.conn.execute_batch("ROLLBACK")?;
                    }
                    let committed: i64 = self.conn.query_row(
                        "SELECT coalesce(texts_seq, seq) FROM indexed WHERE id = 1",
                        [],
                        |r| r.get(0),
                    )?;
                    if committed < b.upto {
                        b.write(&mut self.conn, pending)?;
                    }
                    return Ok(if cut == Pressing::No { Ran::Here } else { Ran::Cut(cut) });
                }
            }
        }
        b.write(&mut self.conn, pending)?;
        Ok(Ran::Here)
    }

    /// The batch on a thread of the lowest priority: `None` once done there; else why it was cut
    /// short (nothing of it committed, unless its commit was already made when the cut came), or
    /// `Pressing::No` when no thread could be started.
    fn index_low(&mut self, b: Batch<'_>, pending: &mut PendingKeys) -> Result<Option<Pressing>> {
        let interrupt = self.conn.get_interrupt_handle();
        let handoff = Arc::clone(&self.progress.handoff);
        let driver = std::thread::current();
        let conn = &mut self.conn;
        std::thread::scope(|s| {
            let helper = std::thread::Builder::new().name("sqlite-index-lo".into()).spawn_scoped(
                s,
                move || {
                    lowest_cpu_priority();
                    let r = b.write(conn, pending);
                    driver.unpark();
                    r
                },
            );
            let helper = match helper {
                Ok(h) => h,
                Err(e) => {
                    // (the batch is indexed here instead: nothing of it was begun)
                    tracing::warn!(error = %e, "no low-priority indexing thread");
                    return Ok(Some(Pressing::No));
                }
            };
            let mut cut = None;
            while !helper.is_finished() {
                std::thread::park_timeout(LOW_POLL);
                let pressing = handoff.pressing();
                if pressing != Pressing::No {
                    // (again at each poll: an interrupt reaches only a statement running)
                    interrupt.interrupt();
                    cut.get_or_insert(pressing);
                }
            }
            match helper.join() {
                Ok(Ok(())) => Ok(None),
                Ok(Err(_)) if cut.is_some() => Ok(cut),
                Ok(Err(e)) => Err(e),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// After a failed write (disk full, read-only, I/O): waits, then opens the search database
    /// again (a connection opened read-only stays so). False when the store is closing: what is
    /// not indexed stays queued in `fts_log` for the next start.
    fn recover(&mut self, e: StoreError) -> bool {
        tracing::error!(error = %e, "search indexing failed; retrying");
        std::thread::sleep(Duration::from_secs(1));
        if self.handoff().is_closed() {
            tracing::warn!("search indexing stopped behind; it resumes at the next start");
            return false;
        }
        // the idle read connections attach the file too
        self.readers.close_idle();
        let placeholder = Connection::open_in_memory().expect("in-memory connection");
        drop(std::mem::replace(&mut self.conn, placeholder));
        match open_search_db(&path_for(&self.main)) {
            Ok(c) => self.conn = c,
            Err(e) => tracing::warn!(error = %e, "search database cannot be opened again yet"),
        }
        true
    }

    /// Indexes what `fts_log` holds past `done`, reading the traces back from the database.
    /// Stops early when the store closes (a rebuild can take minutes): the rest stays queued,
    /// and the answer is false.
    fn catch_up(&mut self, done: &mut i64, pending: &mut PendingKeys) -> Result<bool> {
        let main = Connection::open_with_flags(
            &self.main,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        main.busy_timeout(Duration::from_secs(5))?;
        // the keys of traces whose texts are indexed but keys not written: from their rows
        let written = self.progress.written();
        if written < *done {
            let mut rows = main.prepare_cached(
                "SELECT l.pk, t.project_id, t.ts, t.session_id, t.user_id
                 FROM fts_log l LEFT JOIN traces t ON t.pk = l.pk
                 WHERE l.seq > ?1 AND l.seq <= ?2",
            )?;
            let mut rows = rows.query(params![written, *done])?;
            while let Some(r) = rows.next()? {
                let keys = match r.get::<_, Option<String>>(1)? {
                    Some(project_id) => Some(Keys {
                        project_id,
                        ts: r.get(2)?,
                        session_id: r.get(3)?,
                        user_id: r.get(4)?,
                    })
                    .filter(|k| k.session_id.is_some() || k.user_id.is_some()),
                    None => None,
                };
                pending.keys.insert(r.get(0)?, keys);
                pending.traces += 1;
            }
            pending.since.get_or_insert_with(std::time::Instant::now);
            tracing::info!(
                traces = pending.traces,
                "sessions and users read back for the search index"
            );
        }
        let mut total = 0usize;
        loop {
            if self.handoff().is_closed() && total > 0 {
                tracing::info!(
                    indexed = total,
                    "search indexing stops for shutdown; the rest resumes at the next start"
                );
                return Ok(false);
            }
            let rows: Vec<(i64, i64)> = main
                .prepare_cached("SELECT seq, pk FROM fts_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![*done, CATCH_UP_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let Some(&(upto, _)) = rows.last() else { break };
            let mut docs = Vec::with_capacity(rows.len());
            let mut gone = Vec::new();
            for (seq, pk) in rows {
                match super::stored_text(&main, pk)? {
                    Some((body, keys)) => {
                        docs.push(Doc { seq, pk, fresh: false, body: body.into(), keys })
                    }
                    None => gone.push(pk),
                }
            }
            total += docs.len();
            index(&mut self.conn, &docs, &gone, pending, upto, true)?;
            *done = upto;
            self.progress.indexed.send_replace(upto);
            self.progress.written.send_replace(upto);
        }
        if total > 0 {
            tracing::info!(traces = total, "search index caught up from the database");
        }
        Ok(true)
    }
}

/// Sessions and users of traces indexed since the keys were last written (see `KEYS_BATCH`).
#[derive(Default)]
struct PendingKeys {
    /// By row key; `None` removes the trace's row (it has neither now, or is gone).
    keys: std::collections::BTreeMap<i64, Option<Keys>>,
    /// Traces indexed since the keys were written, with keys or not: the log is trimmed only up
    /// to what is written, so a store without sessions writes its number as often.
    traces: usize,
    /// When the first of them was indexed.
    since: Option<std::time::Instant>,
}

impl PendingKeys {
    /// Whether a batch of `n` more traces is to write the keys.
    fn due(&self, n: usize, now: std::time::Instant) -> bool {
        self.traces + n >= KEYS_BATCH || self.since.is_some_and(|t| now >= t + KEYS_GATHER)
    }
}

/// One transaction: each trace's latest text replaces what was indexed of it, `gone` traces are
/// removed, and the index's texts are marked as covering the log up to `upto`. Their sessions
/// and users join `pending`; with `write_keys`, every key waiting is written and the keys are
/// marked as covering it too.
fn index(
    conn: &mut Connection,
    docs: &[Doc],
    gone: &[i64],
    pending: &mut PendingKeys,
    upto: i64,
    write_keys: bool,
) -> Result<()> {
    // A trace written several times since the last batch is indexed once, with its last text;
    // it was indexed before unless its first write here created it. In row key order: FTS5
    // writes its pending terms out as a segment of their own whenever a row key goes backwards,
    // and in commit order a trace updated after newer ones were written (a trace whose spans
    // came in two requests) does. (Deletions of `gone` traces come last: a step back with no
    // insert after it writes no segment of its own.)
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_unstable_by_key(|&i| (docs[i].pk, i));
    let latest: Vec<(&Doc, bool)> = order
        .chunk_by(|&a, &b| docs[a].pk == docs[b].pk)
        .map(|writes| (&docs[writes[writes.len() - 1]], !docs[writes[0]].fresh))
        .collect();
    for &(d, indexed_before) in &latest {
        let k = &d.keys;
        if k.session_id.is_some() || k.user_id.is_some() {
            pending.keys.insert(d.pk, Some(k.clone()));
        } else if indexed_before {
            pending.keys.insert(d.pk, None);
        }
    }
    for &pk in gone {
        pending.keys.insert(pk, None);
    }
    pending.traces += latest.len() + gone.len();
    if pending.traces > 0 {
        pending.since.get_or_insert_with(std::time::Instant::now);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if write_keys {
        // Sessions and users first: an INSERT OR REPLACE opens a statement savepoint, and once
        // FTS5 is part of the transaction each savepoint flushes its pending terms to disk as a
        // segment of its own (a batch of 2,000 traces made 2,000 segments to merge).
        let mut del_keys = tx.prepare_cached("DELETE FROM trace_keys WHERE pk = ?1")?;
        let mut put_keys = tx.prepare_cached(
            "INSERT OR REPLACE INTO trace_keys (pk, project_id, ts, session_id, user_id)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (pk, keys) in &pending.keys {
            match keys {
                Some(k) => {
                    put_keys.execute(params![pk, k.project_id, k.ts, k.session_id, k.user_id])?
                }
                None => del_keys.execute([pk])?,
            };
        }
    }
    {
        let mut del = tx.prepare_cached("DELETE FROM trace_fts WHERE rowid = ?1")?;
        let mut ins = tx.prepare_cached("INSERT INTO trace_fts (rowid, body) VALUES (?1, ?2)")?;
        for &(d, indexed_before) in &latest {
            if indexed_before {
                del.execute([d.pk])?;
            }
            ins.execute(params![d.pk, &*d.body])?;
        }
        for pk in gone {
            del.execute([pk])?;
        }
    }
    if write_keys {
        tx.prepare_cached("UPDATE indexed SET seq = ?1, texts_seq = ?1 WHERE id = 1")?
            .execute([upto])?;
    } else {
        tx.prepare_cached("UPDATE indexed SET texts_seq = ?1 WHERE id = 1")?.execute([upto])?;
    }
    tx.commit()?;
    if write_keys {
        *pending = PendingKeys::default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(seq: i64, pk: i64, fresh: bool, body: &str) -> Doc {
        let keys = Keys { project_id: "p".into(), ts: 0, session_id: None, user_id: None };
        Doc { seq, pk, fresh, body: body.into(), keys }
    }

    /// FTS5's segments (rows of `trace_fts_data` by segment id; tombstones not counted).
    fn segments(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT count(DISTINCT id >> 37) FROM trace_fts_data WHERE (id >> 37) BETWEEN 1 AND 65535",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn matches(conn: &Connection, q: &str) -> Vec<i64> {
        conn.prepare("SELECT rowid FROM trace_fts WHERE trace_fts MATCH ?1 ORDER BY rowid")
            .unwrap()
            .query_map([q], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_batch_with_older_traces_updated_is_written_as_one_segment() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute("INSERT INTO indexed (id, main_id, seq) VALUES (1, 'm', 0)", []).unwrap();
        let first: Vec<Doc> =
            (1..=8).map(|pk| doc(pk, pk, true, &format!("first text of {pk}"))).collect();
        index(&mut conn, &first, &[], &mut PendingKeys::default(), 8, true).unwrap();
        let before = segments(&conn);
        assert_eq!(before, 1);
        // new traces, with updates of older ones between them as commits hand them over
        let batch = [
            doc(9, 9, true, "new nine"),
            doc(10, 2, false, "second two"),
            doc(11, 10, true, "new ten"),
            doc(12, 5, false, "second five"),
            doc(13, 11, true, "new eleven"),
            doc(14, 7, false, "second seven"),
            doc(15, 12, true, "new twelve"),
            doc(16, 12, false, "new twelve again"),
        ];
        index(&mut conn, &batch, &[], &mut PendingKeys::default(), 16, true).unwrap();
        assert_eq!(segments(&conn), before + 1, "the batch is one segment");
        assert_eq!(matches(&conn, "first"), [1, 3, 4, 6, 8]);
        assert_eq!(matches(&conn, "second"), [2, 5, 7]);
        assert_eq!(matches(&conn, "new"), [9, 10, 11, 12]);
        assert_eq!(matches(&conn, "again"), [12]);
        let seq: i64 = conn.query_row("SELECT seq FROM indexed", [], |r| r.get(0)).unwrap();
        assert_eq!(seq, 16);
        // deleted traces, older than the batch's, removed after its inserts: still one segment
        let batch = [doc(17, 13, true, "new thirteen"), doc(18, 4, false, "second four")];
        index(&mut conn, &batch, &[3, 6], &mut PendingKeys::default(), 18, true).unwrap();
        assert_eq!(segments(&conn), before + 2, "the batch and its deletions are one segment");
        assert_eq!(matches(&conn, "first"), [1, 8]);
        assert_eq!(matches(&conn, "second"), [2, 4, 5, 7]);
    }

    /// An indexer on an in-memory search database, with a hand-off of `bound` bytes.
    fn indexer(bound: usize) -> Indexer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute("INSERT INTO indexed (id, main_id, seq) VALUES (1, 'm', 0)", []).unwrap();
        let main = PathBuf::from("unused.db");
        Indexer {
            conn,
            readers: Arc::new(super::super::ReaderPool::new(main.clone(), 1)),
            main,
            progress: Arc::new(Progress::new(0, 0, 0, bound)),
            on_quiet: None,
        }
    }

    /// `n` texts of 200 words, each with a word of its own (`own{pk}`).
    fn texts(n: i64) -> Vec<Doc> {
        (1..=n)
            .map(|pk| {
                let words: Vec<String> =
                    (0..200).map(|w| format!("w{}", (pk * 7 + w) % 5000)).collect();
                doc(pk, pk, true, &format!("own{pk} {}", words.join(" ")))
            })
            .collect()
    }

    fn texts_seq(conn: &Connection) -> i64 {
        conn.query_row("SELECT texts_seq FROM indexed WHERE id = 1", [], |r| r.get(0)).unwrap()
    }

    /// Every text is found by its own word, once; and the search database says so.
    fn assert_indexed_once(conn: &Connection, n: i64) {
        for pk in 1..=n {
            assert_eq!(matches(conn, &format!("own{pk}")), [pk], "text {pk}");
        }
        assert_eq!(texts_seq(conn), n);
    }

    #[test]
    fn a_light_batch_is_indexed_at_the_lowest_priority() {
        let mut ix = indexer(1 << 20);
        let docs = texts(50);
        let batch = Batch { docs: &docs, upto: 50, write_keys: false };
        let ran = ix.index_batch(batch, &mut PendingKeys::default(), true).unwrap();
        let expected = if cfg!(target_os = "linux") { Ran::Low } else { Ran::Here };
        assert_eq!(ran, expected);
        assert_indexed_once(&ix.conn, 50);
        // and a batch not light, on the indexer's own thread
        let more: Vec<Doc> = texts(60).into_iter().skip(50).collect();
        let batch = Batch { docs: &more, upto: 60, write_keys: true };
        assert_eq!(ix.index_batch(batch, &mut PendingKeys::default(), false).unwrap(), Ran::Here);
        assert_indexed_once(&ix.conn, 60);
    }

    /// A search waiting (or a closing store) cuts a batch at the lowest priority short: its
    /// transaction is rolled back and the batch indexed at once, each text once.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_batch_at_the_lowest_priority_is_cut_short_when_a_search_waits() {
        let mut ix = indexer(1 << 20);
        // a search is waiting from the start; a batch this large takes far longer than a poll
        ix.handoff().hurry(false);
        let docs = texts(3000);
        let batch = Batch { docs: &docs, upto: 3000, write_keys: false };
        let mut pending = PendingKeys::default();
        let ran = ix.index_batch(batch, &mut pending, true).unwrap();
        assert_eq!(ran, Ran::Cut(Pressing::Waited));
        assert_indexed_once(&ix.conn, 3000);
        assert_eq!(pending.traces, 3000, "the texts waiting for their keys counted once");
    }

    /// Texts enough for a whole batch gathered behind a batch at the lowest priority: ingest is
    /// heavy again, and it is cut short and indexed at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_batch_at_the_lowest_priority_is_cut_short_when_ingest_turns_heavy() {
        let mut ix = indexer(1000);
        // a whole batch (half the bound) waiting behind
        ix.handoff().push(vec![doc(3001, 3001, true, &"x".repeat(600))]);
        assert_eq!(ix.handoff().pressing(), Pressing::Heavy);
        let docs = texts(3000);
        let batch = Batch { docs: &docs, upto: 3000, write_keys: false };
        let ran = ix.index_batch(batch, &mut PendingKeys::default(), true).unwrap();
        assert_eq!(ran, Ran::Cut(Pressing::Heavy));
        assert_indexed_once(&ix.conn, 3000);
    }

    /// Only a batch that took its time to gather, with nobody waiting, is light.
    #[test]
    fn a_batch_is_light_only_when_it_took_its_time_to_gather_and_nobody_waits() {
        let h = Handoff::new(1 << 20);
        h.push(vec![doc(1, 1, true, "one")]);
        let t = h.take().unwrap();
        assert!(t.light, "gathered for GATHER");
        h.finished(t.bytes);
        h.push(vec![doc(2, 2, true, "two")]);
        h.hurry(false);
        let t = h.take().unwrap();
        assert!(!t.light, "a search waits for it");
        h.finished(t.bytes);
        // a whole batch's bytes at once: heavy ingest
        let small = Handoff::new(1000);
        small.push(vec![doc(3, 3, true, &"x".repeat(600))]);
        let t = small.take().unwrap();
        assert!(!t.light, "a whole batch's bytes at once");
        small.finished(t.bytes);
        // ... and the same bytes over more than LIGHT_GATHER: light ingest
        small.push(vec![doc(4, 4, true, "four")]);
        std::thread::sleep(LIGHT_GATHER);
        small.push(vec![doc(5, 5, true, &"x".repeat(600))]);
        let t = small.take().unwrap();
        assert!(t.light, "a whole batch's bytes, gathered slowly");
    }

    /// The indexer's tokenizer gives a text's repeated words once, which leaves an index the
    /// same only where it keeps no positions: every FTS5 table of the search database must.
    #[test]
    fn every_search_table_keeps_terms_without_positions() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!tables.is_empty());
        for sql in tables {
            let sql = sql.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
            if sql.contains("using fts5(") {
                assert!(sql.contains("detail = none"), "{sql}");
            }
        }
    }
}
