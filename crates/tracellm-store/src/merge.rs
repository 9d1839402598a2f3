//! Traces that grow over many requests: a long agent run's exporter sends its spans as they end,
//! a few hundred per request, for minutes or hours.
//!
//! Each request's spans are merged into the stored trace, and the trace's figures are rolled up
//! again from all its spans. Reading every stored span back for that made a trace of n spans
//! cost n²/batch span reads: 100,000 spans in requests of 1,000 took 124 s and 695 MiB. A store
//! now keeps, for traces of many spans, what the roll-ups read of each span (a [`Head`]: ids,
//! kind, status, times, tokens, cost, model, error) and the trace's searchable text between
//! requests (a [`Merging`]): a request's spans are decoded, packed and stored, the heads rolled
//! up again in memory, and only the spans the run's prompt and response come from are read back.
//!
//! A kept state is used only when it is what the trace's row holds (row key, ids, and the
//! `updated_us` it wrote), and is read again from the stored spans whenever it is missing: a
//! restart, a trace of fewer than [`KEEP_FROM`] spans, one pushed out by others, a request whose
//! transaction was rolled back, or (PostgreSQL) a write by another instance.

use std::borrow::Cow;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tracellm_core::otel::{SpanBatch, apply_message_events};
use tracellm_core::{
    Assembler, Orphans, Span, SpanEvent, SpanFacts, SpanKind, SpanText, Status, Tokens, Trace,
    TraceInput, ValidationError, text,
};

/// A trace's state is kept between requests from this many spans: below it, reading the spans
/// back costs less than the memory.
pub(crate) const KEEP_FROM: usize = 256;

/// Memory the kept states of a store may take together (estimated), enough for a trace at the
/// default limit of 100,000 spans; the least recently merged go first.
pub(crate) const KEEP_BYTES: usize = 64 << 20;

/// Estimated bytes of one head: the struct and its strings' allocations.
const HEAD_BYTES: usize = std::mem::size_of::<Head>() + 96;

fn hash(s: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6d65_7267_6564_7478).hash_one(s)
}

/// What the roll-ups read of one stored span, and the digests that tell whether a span arriving
/// again changed.
pub(crate) struct Head {
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

/// The searchable text of a trace's spans, each distinct text once, up to `max` bytes.
struct Text {
    seen: HashSet<u64>,
    body: String,
    max: usize,
}

impl Text {
    fn add_span(&mut self, s: &Span) {
        text::each_span_text(s, |t| self.add(t));
    }

    fn add(&mut self, t: &str) {
        if t.is_empty() || self.body.len() >= self.max || !self.seen.insert(hash(t)) {
            return;
        }
        push_capped(&mut self.body, t, self.max);
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

/// The spans a request sent for a trace, each id once (a span sent twice is the later one).
pub(crate) fn sent_spans(batch: &SpanBatch) -> Vec<Span> {
    let mut spans = Vec::with_capacity(batch.spans.len());
    crate::upsert_spans(&mut spans, batch.spans.clone());
    spans
}

/// Adds events to the spans they name; returns those whose span is not among `spans`.
pub(crate) fn fold_events(
    spans: &mut [Span],
    events: Vec<(String, SpanEvent)>,
) -> Vec<(String, SpanEvent)> {
    let mut left = Vec::new();
    let mut touched = Vec::new();
    for (span_id, e) in events {
        match spans.iter().position(|s| s.id == span_id) {
            Some(i) => {
                spans[i].events.push(e);
                touched.push(i);
            }
            None => left.push((span_id, e)),
        }
    }
    touched.sort_unstable();
    touched.dedup();
    for i in touched {
        apply_message_events(&mut spans[i]);
    }
    left
}

/// Settles the arrived spans of a merge. The first `ready.len()` came with their document
/// serialized before the transaction (`Some`, already derived), the rest are stored spans read
/// back for their events; `events_before` holds how many events the first had before events
/// were folded in. A span whose document is still its own keeps it; every other one is derived
/// (again) and gets `None`: its document is to be serialized.
pub(crate) fn settle<D>(
    arrived: &mut [Span],
    ready: Vec<Option<D>>,
    events_before: &[usize],
    asm: &Assembler,
) -> Vec<Option<D>> {
    let mut ready = ready.into_iter();
    let mut out = Vec::with_capacity(arrived.len());
    for (i, s) in arrived.iter_mut().enumerate() {
        match ready.next().flatten() {
            Some(d) if s.events.len() == events_before[i] => out.push(Some(d)),
            _ => {
                if s.parent_id.as_deref() == Some("") {
                    s.parent_id = None;
                }
                tracellm_core::derive_span(s, &asm.prices, &asm.opts);
                out.push(None);
            }
        }
    }
    out
}

/// A trace's own searchable texts, beside its spans': name, prompt, response, failure reason.
pub(crate) fn own_texts(t: &Trace) -> [&str; 4] {
    [
        t.name.as_str(),
        t.prompt.as_deref().unwrap_or(""),
        t.response.as_deref().unwrap_or(""),
        t.failure_reason.as_deref().unwrap_or(""),
    ]
}

/// The spans (by id) whose texts a trace's prompt and response are, when a roll-up took them
/// from spans (`text::prompt_text` of the one's input, `text::response_text` of the other's
/// output) rather than from what the client said of the trace.
#[derive(Debug, Default)]
pub(crate) struct TextSources {
    pub prompt: Option<String>,
    pub response: Option<String>,
}

/// One trace's state between the requests that bring its spans.
pub(crate) struct Merging {
    /// The trace's row key (0 until it is stored).
    pub(crate) pk: i64,
    project_id: String,
    trace_id: String,
    /// `updated_us` of the row as this state last wrote it.
    stamp: i64,
    /// What the requests so far said about the trace, as stored in its row.
    pub(crate) input: TraceInput,
    /// By start time, then id (the order `assemble` rolls spans up in).
    heads: Vec<Head>,
    text: Text,
    /// The prompt or response texts the last roll-up read of spans, by the digest of the
    /// document they were read from: the next roll-up most often reads the same spans.
    read: HashMap<(u64, SpanText), Option<String>>,
}

/// The arrived spans of a request, matched against a state's heads.
pub(crate) struct Arrival {
    heads: Vec<Head>,
    /// Where each arrived span's head is among the state's, if it was stored already.
    at: Vec<Option<usize>>,
}

impl Merging {
    /// The state of a trace with no spans yet, whose searchable text stops at `text_max` bytes.
    pub(crate) fn new(
        project_id: &str,
        trace_id: &str,
        input: TraceInput,
        text_max: usize,
    ) -> Self {
        Merging {
            pk: 0,
            project_id: project_id.to_string(),
            trace_id: trace_id.to_string(),
            stamp: 0,
            input,
            heads: Vec::new(),
            text: Text { seen: HashSet::new(), body: String::new(), max: text_max },
            read: HashMap::new(),
        }
    }

    /// Takes in a stored span while the state is read from the store (`digest`: its stored
    /// document's); `loaded` follows the last.
    pub(crate) fn load(&mut self, span: &Span, digest: u64) {
        self.text.add_span(span);
        self.heads.push(Head::of(span, digest));
    }

    pub(crate) fn loaded(&mut self) {
        self.sort();
    }

    fn sort(&mut self) {
        self.heads.sort_by(|a, b| a.start_time.cmp(&b.start_time).then_with(|| a.id.cmp(&b.id)));
    }

    pub(crate) fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// Whether this is the state of trace `pk` (`project_id`, `trace_id`) as written with
    /// `stamp`.
    pub(crate) fn is(&self, pk: i64, project_id: &str, trace_id: &str, stamp: i64) -> bool {
        self.pk == pk
            && self.project_id == project_id
            && self.trace_id == trace_id
            && self.stamp == stamp
    }

    /// Records the row key and the `updated_us` this state was written with.
    pub(crate) fn written(&mut self, pk: i64, stamp: i64) {
        self.pk = pk;
        self.stamp = stamp;
    }

    /// Whether the state is worth keeping until the next request.
    pub(crate) fn worth_keeping(&self) -> bool {
        self.heads.len() >= KEEP_FROM
    }

    /// Matches the arrived spans (each id once, with the digest of its document) against the
    /// stored ones.
    pub(crate) fn arrive(&self, arrived: &[(&Span, u64)]) -> Arrival {
        let mut index = HashMap::with_capacity(self.heads.len());
        for (i, h) in self.heads.iter().enumerate() {
            index.insert(h.id.as_str(), i);
        }
        Arrival {
            at: arrived.iter().map(|(s, _)| index.get(s.id.as_str()).copied()).collect(),
            heads: arrived.iter().map(|(s, digest)| Head::of(s, *digest)).collect(),
        }
    }

    /// The stored spans that `arrival` replaces with other words, when there are any: their
    /// old words must go, so the text is read again without them (`forget_text`, `reread`).
    pub(crate) fn reworded(&self, arrival: &Arrival) -> Option<HashSet<String>> {
        let pairs = || arrival.heads.iter().zip(&arrival.at);
        if !pairs().any(|(h, i)| i.is_some_and(|i| self.heads[i].text != h.text)) {
            return None;
        }
        Some(pairs().filter(|(_, i)| i.is_some()).map(|(h, _)| h.id.clone()).collect())
    }

    /// Starts the text again, for the stored spans to be given to `reread` one by one.
    pub(crate) fn forget_text(&mut self) {
        self.text.seen.clear();
        self.text.body.clear();
    }

    /// Takes in the text of a stored span, read again after `forget_text`.
    pub(crate) fn reread(&mut self, span: &Span) {
        self.text.add_span(span);
    }

    /// Takes in the arrived spans, in the order given to `arrive`: their heads replace or join
    /// the stored ones, and their text joins the trace's. Returns, for each, whether its document
    /// is to be stored (new, or changed).
    pub(crate) fn add(&mut self, arrived: &[&Span], arrival: Arrival) -> Vec<bool> {
        let mut write = Vec::with_capacity(arrived.len());
        for ((s, h), i) in arrived.iter().zip(arrival.heads).zip(arrival.at) {
            self.text.add_span(s);
            write.push(i.is_none_or(|i| self.heads[i].doc != h.doc));
            match i {
                Some(i) => self.heads[i] = h,
                None => self.heads.push(h),
            }
        }
        self.sort();
        write
    }

    /// The text to index: the trace's own texts (`tail`: its name, prompt, response and failure
    /// reason) not among the spans', then the spans' text, within the state's bound in all.
    pub(crate) fn body(&self, tail: &[&str]) -> String {
        let max = self.text.max;
        let mut out = String::new();
        let mut own = HashSet::new();
        for t in tail {
            let h = hash(t);
            if t.is_empty() || self.text.seen.contains(&h) || !own.insert(h) {
                continue;
            }
            push_capped(&mut out, t, max);
        }
        let room = max.saturating_sub(out.len());
        let mut cut = self.text.body.len().min(room);
        while !self.text.body.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&self.text.body[..cut]);
        out
    }

    /// Rolls the heads up into the trace's figures (the trace without its spans). The run's
    /// prompt and response are read from this request's spans (`arrived`), from what the last
    /// roll-up read, or from `fetched`: stored spans read back by id (None: not stored). When a
    /// stored span must be read, its id is among those returned, and the roll-up is to be made
    /// again with it in `fetched`. Also returns which spans the prompt and response are.
    pub(crate) fn roll_up(
        &mut self,
        project_id: &str,
        input: TraceInput,
        arrived: &[Span],
        fetched: &HashMap<String, Option<Span>>,
    ) -> Result<(Trace, TextSources, Vec<String>), ValidationError> {
        let mut by_id: HashMap<&str, &Span> = HashMap::with_capacity(arrived.len());
        for s in arrived.iter().chain(fetched.values().flatten()) {
            by_id.insert(s.id.as_str(), s);
        }
        let (mut read, mut missing) = (Vec::new(), Vec::new());
        let mut sources = TextSources::default();
        let trace = tracellm_core::roll_up(
            project_id,
            input,
            &self.heads,
            Orphans::KeepAsRoots,
            |h, want| {
                let key = (h.doc, want);
                let t = match (by_id.get(h.id.as_str()), self.read.get(&key)) {
                    (Some(s), _) => match want {
                        SpanText::Prompt => text::prompt_text(&s.input),
                        SpanText::Response => text::response_text(&s.output),
                    },
                    (None, Some(t)) => t.clone(),
                    (None, None) if fetched.contains_key(&h.id) => None,
                    (None, None) => {
                        missing.push(h.id.clone());
                        return None;
                    }
                };
                read.push((key, t.clone()));
                if t.is_some() {
                    // the roll-up takes the first text it is given of each kind
                    let of = match want {
                        SpanText::Prompt => &mut sources.prompt,
                        SpanText::Response => &mut sources.response,
                    };
                    *of = Some(h.id.clone());
                }
                t
            },
        )?;
        if missing.is_empty() {
            self.read = read.into_iter().collect();
        }
        Ok((trace, sources, missing))
    }

    /// Memory this state holds, estimated.
    pub(crate) fn bytes(&self) -> usize {
        let read: usize = self.read.values().flatten().map(String::capacity).sum();
        read + self.heads.len() * HEAD_BYTES
            + self.text.seen.capacity() * 16
            + self.text.body.capacity()
            + std::mem::size_of::<Merging>()
    }
}

/// Kept states by row key, within a memory bound, the least recently kept going first.
pub(crate) struct Kept {
    states: HashMap<i64, (u64, Merging)>,
    bytes: usize,
    /// `KEEP_BYTES`, but in tests.
    pub(crate) limit: usize,
    clock: u64,
    /// `clock` at the last `sweep`.
    swept_at: u64,
}

impl Default for Kept {
    fn default() -> Self {
        Kept { states: HashMap::new(), bytes: 0, limit: KEEP_BYTES, clock: 0, swept_at: 0 }
    }
}

impl Kept {
    /// The kept state of trace `pk`, if it is the one written as `stamp`; taken out either way.
    pub(crate) fn take(
        &mut self,
        pk: i64,
        project_id: &str,
        trace_id: &str,
        stamp: i64,
    ) -> Option<Merging> {
        let (_, m) = self.states.remove(&pk)?;
        self.bytes -= m.bytes();
        m.is(pk, project_id, trace_id, stamp).then_some(m)
    }

    /// Keeps `m` (written, and committed) if it is worth keeping.
    pub(crate) fn keep(&mut self, m: Merging) {
        if !m.worth_keeping() {
            return;
        }
        self.clock += 1;
        self.bytes += m.bytes();
        if let Some((_, old)) = self.states.insert(m.pk, (self.clock, m)) {
            self.bytes -= old.bytes();
        }
        while self.bytes > self.limit {
            let Some(&oldest) =
                self.states.iter().min_by_key(|(_, (used, _))| *used).map(|(pk, _)| pk)
            else {
                break;
            };
            self.forget(oldest);
        }
    }

    /// Drops trace `pk`'s state.
    pub(crate) fn forget(&mut self, pk: i64) {
        if let Some((_, m)) = self.states.remove(&pk) {
            self.bytes -= m.bytes();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.states = HashMap::new();
        self.bytes = 0;
    }

    /// Drops the states not kept again since the last sweep: their traces stopped growing.
    pub(crate) fn sweep(&mut self) {
        let before = self.swept_at;
        let idle: Vec<i64> = self
            .states
            .iter()
            .filter(|(_, (used, _))| *used <= before)
            .map(|(pk, _)| *pk)
            .collect();
        for pk in idle {
            self.forget(pk);
        }
        if self.states.is_empty() {
            self.states = HashMap::new();
        }
        self.swept_at = self.clock;
    }

    #[cfg(test)]
    pub(crate) fn len_and_bytes(&self) -> (usize, usize) {
        (self.states.len(), self.bytes)
    }
}
