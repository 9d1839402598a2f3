//! Traces that grow over many requests: a long agent run's exporter sends its spans as they end,
//! a few hundred per request, for minutes or hours.
//!
//! Each request's spans are merged into the stored trace, and the trace's figures are rolled up
//! again from all its spans. Reading every stored span back for that made a trace of n spans
//! cost n²/batch span reads: 100,000 spans in requests of 1,000 took 75 s and 700 MB. The writer
//! now keeps, for traces of many spans, what the roll-ups read of each span (a [`Head`]: ids,
//! kind, status, times, tokens, cost, model, error) and the trace's searchable text between
//! requests, so a request costs what it brings: its spans are stored, the heads rolled up again
//! in memory, and only the spans the run's prompt and response come from are read back.
//!
//! The kept state is checked against the trace's row before use (row key, ids, `updated_us`), is
//! only kept once its transaction commits, and is read again from the spans whenever it is
//! missing: a restart, a trace not kept (fewer than [`KEEP_FROM`] spans), one pushed out by
//! others, or a request whose transaction was rolled back.

use std::borrow::Cow;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use rusqlite::{Connection, params};
use tracellm_core::{Span, SpanFacts, SpanKind, Status, Tokens, TraceInput, text, time};

use super::MAX_FTS_BYTES;
use crate::Result;
use crate::doc;

/// A trace's state is kept between requests from this many spans: below it, reading the spans
/// back costs less than the memory.
pub(super) const KEEP_FROM: usize = 256;

/// Memory the kept states may take together (estimated), enough for a trace at the default limit
/// of 100,000 spans; the least recently merged go first.
const KEEP_BYTES: usize = 64 << 20;

/// Estimated bytes of one head: the struct and its strings' allocations.
const HEAD_BYTES: usize = std::mem::size_of::<Head>() + 96;

fn hash(s: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6d65_7267_6564_7478).hash_one(s)
}

/// What the roll-ups read of one stored span, and the digests that tell whether a span arriving
/// again changed.
pub(super) struct Head {
    id: String,
    parent_id: Option<String>,
    name: String,
    kind: SpanKind,
    status: Status,
    start_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
    tokens: Option<Tokens>,
    cost_usd: Option<f64>,
    model: Option<String>,
    provider: Option<String>,
    error: Option<String>,
    /// Digest of the stored document (`doc::digest`).
    doc: u64,
    /// Digest of the span's searchable text.
    text: u64,
}

impl Head {
    fn of(s: &Span, doc: u64) -> Head {
        Head {
            id: s.id.clone(),
            parent_id: s.parent_id.clone().filter(|p| !p.is_empty()),
            name: s.name.clone(),
            kind: s.kind,
            status: s.status,
            start_time: s.start_time,
            end_time: s.end_time,
            tokens: s.tokens,
            cost_usd: s.cost_usd,
            model: s.model.clone(),
            provider: s.provider.clone(),
            error: s.error.as_ref().map(|e| e.summary()),
            doc,
            text: text_digest(s),
        }
    }
}

impl SpanFacts for Head {
    fn id(&self) -> &str {
        &self.id
    }
    fn parent_id(&self) -> Option<&str> {
        self.parent_id.as_deref()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> SpanKind {
        self.kind
    }
    fn status(&self) -> Status {
        self.status
    }
    fn start_time(&self) -> DateTime<Utc> {
        self.start_time
    }
    fn end_time(&self) -> Option<DateTime<Utc>> {
        self.end_time
    }
    fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }
    fn cost_usd(&self) -> Option<f64> {
        self.cost_usd
    }
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
    fn error_summary(&self) -> Option<Cow<'_, str>> {
        self.error.as_deref().map(Cow::Borrowed)
    }
}

/// Digest of everything of a span that full-text search covers.
fn text_digest(s: &Span) -> u64 {
    let mut h = foldhash::quality::FixedState::with_seed(0x7465_7874_6469_6773).build_hasher();
    text::each_span_text(s, |t| {
        std::hash::Hash::hash(t, &mut h);
    });
    std::hash::Hasher::finish(&h)
}

/// The searchable text of a trace's spans, each distinct text once, up to `MAX_FTS_BYTES`.
#[derive(Default)]
struct Text {
    seen: HashSet<u64>,
    body: String,
}

impl Text {
    fn add_span(&mut self, s: &Span) {
        text::each_span_text(s, |t| self.add(t));
    }

    fn add(&mut self, t: &str) {
        if t.is_empty() || self.body.len() >= MAX_FTS_BYTES || !self.seen.insert(hash(t)) {
            return;
        }
        push_capped(&mut self.body, t, MAX_FTS_BYTES);
    }
}

/// Appends `t` and a newline, `t` cut at a character boundary to keep `out` within `max`.
fn push_capped(out: &mut String, t: &str, max: usize) {
    let mut cut = t.len().min(max.saturating_sub(out.len()));
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&t[..cut]);
    out.push('\n');
}

/// An arrived span's document: packed already (by the request's thread), or its JSON, packed
/// only if it is to be written.
pub(super) struct Doc {
    pub(super) digest: u64,
    pub(super) body: Result<doc::Packed, Vec<u8>>,
}

impl Doc {
    pub(super) fn json(json: Vec<u8>) -> Doc {
        Doc { digest: doc::digest(&json), body: Err(json) }
    }

    fn packed(self) -> doc::Packed {
        self.body.unwrap_or_else(doc::pack_json)
    }
}

/// One trace's state between the requests that bring its spans.
pub(super) struct Merging {
    pub(super) pk: i64,
    project_id: String,
    trace_id: String,
    /// `updated_us` of the row as this state last wrote it.
    stamp: i64,
    /// What the requests so far said about the trace, as stored in its row.
    pub(super) input: TraceInput,
    /// By start time, then id (the order `assemble` rolls spans up in).
    heads: Vec<Head>,
    text: Text,
}

impl Merging {
    /// The state of a trace not stored yet.
    pub(super) fn new(project_id: &str, trace_id: &str, input: TraceInput) -> Merging {
        Merging {
            pk: 0,
            project_id: project_id.to_string(),
            trace_id: trace_id.to_string(),
            stamp: 0,
            input,
            heads: Vec::new(),
            text: Text::default(),
        }
    }

    /// The state of stored trace `pk`, read from its spans.
    pub(super) fn load(
        conn: &Connection,
        pk: i64,
        project_id: &str,
        trace_id: &str,
        input: TraceInput,
    ) -> Result<Merging> {
        let mut m = Merging::new(project_id, trace_id, input);
        m.pk = pk;
        let mut stmt = conn.prepare_cached("SELECT doc FROM spans WHERE trace_pk = ?1")?;
        let mut rows = stmt.query([pk])?;
        while let Some(r) = rows.next()? {
            let (span, digest): (Span, u64) = doc::unpack_digest(r.get_ref(0)?)?;
            m.text.add_span(&span);
            m.heads.push(Head::of(&span, digest));
        }
        m.sort();
        Ok(m)
    }

    fn sort(&mut self) {
        self.heads.sort_by(|a, b| a.start_time.cmp(&b.start_time).then_with(|| a.id.cmp(&b.id)));
    }

    pub(super) fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// The text read again from the stored spans, leaving out those in `replaced`.
    fn reload_text(&mut self, conn: &Connection, replaced: &HashSet<&str>) -> Result<()> {
        self.text = Text::default();
        let mut stmt = conn.prepare_cached("SELECT id, doc FROM spans WHERE trace_pk = ?1")?;
        let mut rows = stmt.query([self.pk])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if replaced.contains(id.as_str()) {
                continue;
            }
            let span: Span = doc::unpack(r.get_ref(1)?)?;
            self.text.add_span(&span);
        }
        Ok(())
    }

    /// Takes in the arrived spans (each id once, with its document): their heads replace or
    /// join the kept ones, and their text joins the trace's. Returns the documents to store:
    /// those of spans that are new or changed.
    pub(super) fn add(
        &mut self,
        conn: &Connection,
        arrived: Vec<(&Span, Doc)>,
    ) -> Result<Vec<(String, i64, doc::Packed)>> {
        let at: Vec<Option<usize>> = {
            let mut index = HashMap::with_capacity(self.heads.len());
            for (i, h) in self.heads.iter().enumerate() {
                index.insert(h.id.as_str(), i);
            }
            arrived.iter().map(|(s, _)| index.get(s.id.as_str()).copied()).collect()
        };
        let heads: Vec<Head> = arrived.iter().map(|(s, d)| Head::of(s, d.digest)).collect();
        // a span replaced by one of other words: its words go, so the text is read again
        let reworded =
            heads.iter().zip(&at).any(|(h, i)| i.is_some_and(|i| self.heads[i].text != h.text));
        if reworded {
            let replaced: HashSet<&str> =
                heads.iter().zip(&at).filter(|(_, i)| i.is_some()).map(|(h, _)| h.id()).collect();
            self.reload_text(conn, &replaced)?;
        }
        let mut write = Vec::with_capacity(arrived.len());
        for (((s, d), h), i) in arrived.into_iter().zip(heads).zip(at) {
            self.text.add_span(s);
            if i.is_none_or(|i| self.heads[i].doc != h.doc) {
                write.push((h.id.clone(), time::to_micros(s.start_time), d.packed()));
            }
            match i {
                Some(i) => self.heads[i] = h,
                None => self.heads.push(h),
            }
        }
        self.sort();
        Ok(write)
    }

    /// The text to index: the trace's own texts (`tail`: its name, prompt, response and failure
    /// reason) not among the spans', then the spans' text, within `MAX_FTS_BYTES` in all.
    pub(super) fn body(&self, tail: &[&str]) -> String {
        let mut out = String::new();
        let mut own = HashSet::new();
        for t in tail {
            let h = hash(t);
            if t.is_empty() || self.text.seen.contains(&h) || !own.insert(h) {
                continue;
            }
            push_capped(&mut out, t, MAX_FTS_BYTES);
        }
        let room = MAX_FTS_BYTES.saturating_sub(out.len());
        let mut cut = self.text.body.len().min(room);
        while !self.text.body.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&self.text.body[..cut]);
        out
    }

    /// Memory this state holds, estimated.
    fn bytes(&self) -> usize {
        self.heads.len() * HEAD_BYTES
            + self.text.seen.capacity() * 16
            + self.text.body.capacity()
            + std::mem::size_of::<Merging>()
    }
}

/// The kept states, and those written by the open transaction (kept once it commits).
pub(super) struct Merges {
    kept: HashMap<i64, (u64, Merging)>,
    bytes: usize,
    /// `KEEP_BYTES`, but in tests.
    limit: usize,
    clock: u64,
    /// Written in the open transaction, in order; `None` where a later write took it again.
    staged: Vec<Option<Merging>>,
}

impl Default for Merges {
    fn default() -> Self {
        Merges { kept: HashMap::new(), bytes: 0, limit: KEEP_BYTES, clock: 0, staged: Vec::new() }
    }
}

impl Merges {
    /// The kept state of trace `pk`, if it is still the row's: written by the open transaction,
    /// or kept from an earlier one with the row's `updated_us`.
    pub(super) fn take(
        &mut self,
        pk: i64,
        project_id: &str,
        trace_id: &str,
        stamp: i64,
    ) -> Option<Merging> {
        let m = match self.staged.iter_mut().rev().find(|m| m.as_ref().is_some_and(|m| m.pk == pk))
        {
            Some(slot) => slot.take(),
            None => {
                let (_, m) = self.kept.remove(&pk)?;
                self.bytes -= m.bytes();
                Some(m)
            }
        }?;
        (m.project_id == project_id && m.trace_id == trace_id && m.stamp == stamp).then_some(m)
    }

    /// Holds `m`, written as `stamp` in the open transaction, until the transaction ends.
    pub(super) fn stage(&mut self, mut m: Merging, stamp: i64) {
        if m.heads.len() >= KEEP_FROM {
            m.stamp = stamp;
            self.staged.push(Some(m));
        }
    }

    /// Drops whatever state trace `pk` has: the trace is replaced whole.
    pub(super) fn forget(&mut self, pk: i64) {
        for slot in &mut self.staged {
            if slot.as_ref().is_some_and(|m| m.pk == pk) {
                *slot = None;
            }
        }
        if let Some((_, m)) = self.kept.remove(&pk) {
            self.bytes -= m.bytes();
        }
    }

    /// How many states the open transaction staged, to roll back to.
    pub(super) fn mark(&self) -> usize {
        self.staged.len()
    }

    /// A savepoint rolled back: what it staged is not stored.
    pub(super) fn roll_back_to(&mut self, mark: usize) {
        self.staged.truncate(mark);
    }

    /// The open transaction committed: keep what it staged, the least recently merged states
    /// going first when over the memory bound.
    pub(super) fn committed(&mut self) {
        for m in std::mem::take(&mut self.staged).into_iter().flatten() {
            self.clock += 1;
            self.bytes += m.bytes();
            if let Some((_, old)) = self.kept.insert(m.pk, (self.clock, m)) {
                self.bytes -= old.bytes();
            }
        }
        while self.bytes > self.limit {
            let Some(&oldest) =
                self.kept.iter().min_by_key(|(_, (used, _))| *used).map(|(pk, _)| pk)
            else {
                break;
            };
            if let Some((_, m)) = self.kept.remove(&oldest) {
                self.bytes -= m.bytes();
            }
        }
    }

    /// Everything dropped: the transaction failed, or ingest is quiet and memory goes back.
    pub(super) fn clear(&mut self) {
        self.staged.clear();
        self.kept = HashMap::new();
        self.bytes = 0;
    }

    /// The open transaction was rolled back whole.
    pub(super) fn rolled_back(&mut self) {
        self.staged.clear();
    }
}

/// One stored span of trace `pk`.
pub(super) fn stored_span(conn: &Connection, pk: i64, id: &str) -> Result<Option<Span>> {
    let mut stmt = conn.prepare_cached("SELECT doc FROM spans WHERE trace_pk = ?1 AND id = ?2")?;
    let mut rows = stmt.query(params![pk, id])?;
    match rows.next()? {
        Some(r) => Ok(Some(doc::unpack(r.get_ref(0)?)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: usize) -> Span {
        let s = serde_json::json!({"id": format!("s{id}"), "name": "chat", "kind": "llm",
            "start_time": "2026-05-31T10:00:00Z", "status": "success",
            "input": format!("question {id}"), "output": null});
        tracellm_core::normalize_trace(
            serde_json::json!({"id": "t", "spans": [s]}),
            "default",
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
        .spans
        .remove(0)
    }

    /// The state of trace `pk` with `n` spans.
    fn state(conn: &Connection, pk: i64, n: usize) -> Merging {
        let mut m = Merging::new("default", &format!("t{pk}"), TraceInput::default());
        m.pk = pk;
        let spans: Vec<Span> = (0..n).map(span).collect();
        let docs = spans.iter().map(|s| (s, Doc::json(serde_json::to_vec(s).unwrap()))).collect();
        let written = m.add(conn, docs).unwrap();
        assert_eq!(written.len(), n, "new spans are all written");
        m
    }

    #[test]
    fn a_state_is_kept_once_its_transaction_commits_and_only_as_the_row_it_wrote() {
        let conn = Connection::open_in_memory().unwrap();
        let mut merges = Merges::default();
        merges.stage(state(&conn, 1, KEEP_FROM), 100);
        // the same transaction merges the trace again: it finds what it staged
        let m = merges.take(1, "default", "t1", 100).expect("staged");
        merges.stage(m, 100);
        merges.rolled_back();
        assert!(merges.take(1, "default", "t1", 100).is_none(), "rolled back, not kept");

        merges.stage(state(&conn, 1, KEEP_FROM), 100);
        let mark = merges.mark();
        merges.stage(state(&conn, 2, KEEP_FROM), 100);
        merges.roll_back_to(mark); // the second request's savepoint is rolled back
        merges.committed();
        assert!(merges.take(2, "default", "t2", 100).is_none());
        assert!(merges.take(1, "default", "t1", 99).is_none(), "the row was written since");
        assert!(merges.take(1, "default", "t1", 100).is_none(), "and the state is gone");

        merges.stage(state(&conn, 1, KEEP_FROM), 100);
        merges.committed();
        assert!(merges.take(1, "default", "other", 100).is_none(), "another trace's row");
        merges.stage(state(&conn, 1, KEEP_FROM), 100);
        merges.committed();
        merges.forget(1);
        assert!(merges.take(1, "default", "t1", 100).is_none(), "replaced whole");
        merges.stage(state(&conn, 1, KEEP_FROM - 1), 100);
        merges.committed();
        assert!(merges.take(1, "default", "t1", 100).is_none(), "too few spans to keep");
        merges.stage(state(&conn, 1, KEEP_FROM), 100);
        merges.committed();
        let m = merges.take(1, "default", "t1", 100).expect("kept");
        assert_eq!(m.heads().len(), KEEP_FROM);
        assert_eq!(merges.bytes, 0, "taking it out takes its bytes");
    }

    #[test]
    fn kept_states_stay_within_their_memory_bound_least_recent_first() {
        let conn = Connection::open_in_memory().unwrap();
        let one = state(&conn, 1, KEEP_FROM).bytes();
        let mut merges = Merges { limit: 3 * one + one / 2, ..Merges::default() };
        for pk in 1..=5 {
            merges.stage(state(&conn, pk, KEEP_FROM), 100);
            merges.committed();
            assert!(merges.bytes <= merges.limit);
        }
        assert!(merges.take(1, "default", "t1", 100).is_none(), "the oldest went");
        assert!(merges.take(2, "default", "t2", 100).is_none());
        assert!(merges.take(5, "default", "t5", 100).is_some());
        assert_eq!(merges.kept.len(), 2);
        merges.clear();
        assert_eq!((merges.kept.len(), merges.bytes), (0, 0));
        assert!(KEEP_BYTES / one > 400, "a trace of 100,000 spans fits");
    }

    #[test]
    fn the_body_holds_each_text_once_and_the_traces_own_before_the_spans() {
        let conn = Connection::open_in_memory().unwrap();
        let m = state(&conn, 1, 3);
        let body = m.body(&["agent run", "question 1", "", "agent run"]);
        assert_eq!(body, "agent run\nchat\nquestion 0\nquestion 1\nquestion 2\n");
    }
}
