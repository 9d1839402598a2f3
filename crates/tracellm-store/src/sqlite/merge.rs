//! The SQLite writer's side of growing traces (see `crate::merge`): the states it keeps, staged
//! until their transaction commits, and reading a state back from the stored spans.

use foldhash::HashSet;
use rusqlite::{Connection, params};
use tracellm_core::{Span, TraceInput, time};

use super::MAX_FTS_BYTES;
use crate::Result;
use crate::doc;
use crate::merge::{Kept, Merging};

/// An arrived span's document: packed already (by the request's thread), or its JSON, packed
/// only if it is to be written.
pub(super) struct Doc {
    pub(super) digest: u64,
    pub(super) body: std::result::Result<doc::Packed, Vec<u8>>,
}

impl Doc {
    pub(super) fn json(json: Vec<u8>) -> Doc {
        Doc { digest: doc::digest(&json), body: Err(json) }
    }

    fn packed(self) -> doc::Packed {
        self.body.unwrap_or_else(doc::pack_json)
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
    let mut m = Merging::new(project_id, trace_id, input, MAX_FTS_BYTES);
    m.pk = pk;
    let mut stmt = conn.prepare_cached("SELECT doc FROM spans WHERE trace_pk = ?1")?;
    let mut rows = stmt.query([pk])?;
    while let Some(r) = rows.next()? {
        let (span, digest): (Span, u64) = doc::unpack_digest(r.get_ref(0)?)?;
        m.load(&span, digest);
    }
    m.loaded();
    Ok(m)
}

/// Takes the arrived spans (each id once, with its document) into `m`; returns the documents to
/// store: those of spans that are new or changed.
pub(super) fn add(
    conn: &Connection,
    m: &mut Merging,
    arrived: Vec<(&Span, Doc)>,
) -> Result<Vec<(String, i64, doc::Packed)>> {
    let digests: Vec<(&Span, u64)> = arrived.iter().map(|(s, d)| (*s, d.digest)).collect();
    let arrival = m.arrive(&digests);
    if let Some(replaced) = m.reworded(&arrival) {
        reread_text(conn, m, &replaced)?;
    }
    let spans: Vec<&Span> = arrived.iter().map(|(s, _)| *s).collect();
    let write = m.add(&spans, arrival);
    Ok(arrived
        .into_iter()
        .zip(write)
        .filter(|(_, w)| *w)
        .map(|((s, d), _)| (s.id.clone(), time::to_micros(s.start_time), d.packed()))
        .collect())
}

/// The text read again from the stored spans, leaving out those in `replaced`.
fn reread_text(conn: &Connection, m: &mut Merging, replaced: &HashSet<String>) -> Result<()> {
    m.forget_text();
    let mut stmt = conn.prepare_cached("SELECT id, doc FROM spans WHERE trace_pk = ?1")?;
    let mut rows = stmt.query([m.pk])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        if replaced.contains(id.as_str()) {
            continue;
        }
        let span: Span = doc::unpack(r.get_ref(1)?)?;
        m.reread(&span);
    }
    Ok(())
}

/// The kept states, and those written by the open transaction (kept once it commits).
#[derive(Default)]
pub(super) struct Merges {
    kept: Kept,
    /// Written in the open transaction, in order; `None` where a later write took it again.
    staged: Vec<Option<Merging>>,
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
        match self.staged.iter_mut().rev().find(|m| m.as_ref().is_some_and(|m| m.pk == pk)) {
            Some(slot) => slot.take().filter(|m| m.is(pk, project_id, trace_id, stamp)),
            None => self.kept.take(pk, project_id, trace_id, stamp),
        }
    }

    /// Holds `m`, written in the open transaction, until the transaction ends.
    pub(super) fn stage(&mut self, m: Merging) {
        if m.worth_keeping() {
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
        self.kept.forget(pk);
    }

    /// How many states the open transaction staged, to roll back to.
    pub(super) fn mark(&self) -> usize {
        self.staged.len()
    }

    /// A savepoint rolled back: what it staged is not stored.
    pub(super) fn roll_back_to(&mut self, mark: usize) {
        self.staged.truncate(mark);
    }

    /// The open transaction committed: keep what it staged.
    pub(super) fn committed(&mut self) {
        for m in std::mem::take(&mut self.staged).into_iter().flatten() {
            self.kept.keep(m);
        }
    }

    /// Everything dropped: ingest is quiet and memory goes back, or the connection is new.
    pub(super) fn clear(&mut self) {
        self.staged.clear();
        self.kept.clear();
    }

    /// Drops the kept states not used since the last sweep (`Kept::sweep`).
    pub(super) fn sweep(&mut self) {
        self.kept.sweep();
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
    use crate::merge::KEEP_FROM;

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

    /// The state of trace `pk` with `n` spans, as written with stamp 100.
    fn state(conn: &Connection, pk: i64, n: usize) -> Merging {
        let mut m = Merging::new("default", &format!("t{pk}"), TraceInput::default(), 1 << 20);
        let spans: Vec<Span> = (0..n).map(span).collect();
        let docs = spans.iter().map(|s| (s, Doc::json(serde_json::to_vec(s).unwrap()))).collect();
        let written = add(conn, &mut m, docs).unwrap();
        assert_eq!(written.len(), n, "new spans are all written");
        m.written(pk, 100);
        m
    }

    #[test]
    fn a_state_is_kept_once_its_transaction_commits_and_only_as_the_row_it_wrote() {
        let conn = Connection::open_in_memory().unwrap();
        let mut merges = Merges::default();
        merges.stage(state(&conn, 1, KEEP_FROM));
        // the same transaction merges the trace again: it finds what it staged
        let m = merges.take(1, "default", "t1", 100).expect("staged");
        merges.stage(m);
        merges.rolled_back();
        assert!(merges.take(1, "default", "t1", 100).is_none(), "rolled back, not kept");

        merges.stage(state(&conn, 1, KEEP_FROM));
        let mark = merges.mark();
        merges.stage(state(&conn, 2, KEEP_FROM));
        merges.roll_back_to(mark); // the second request's savepoint is rolled back
        merges.committed();
        assert!(merges.take(2, "default", "t2", 100).is_none());
        assert!(merges.take(1, "default", "t1", 99).is_none(), "the row was written since");
        assert!(merges.take(1, "default", "t1", 100).is_none(), "and the state is gone");

        merges.stage(state(&conn, 1, KEEP_FROM));
        merges.committed();
        assert!(merges.take(1, "default", "other", 100).is_none(), "another trace's row");
        merges.stage(state(&conn, 1, KEEP_FROM));
        merges.committed();
        merges.forget(1);
        assert!(merges.take(1, "default", "t1", 100).is_none(), "replaced whole");
        merges.stage(state(&conn, 1, KEEP_FROM - 1));
        merges.committed();
        assert!(merges.take(1, "default", "t1", 100).is_none(), "too few spans to keep");
        merges.stage(state(&conn, 1, KEEP_FROM));
        merges.committed();
        let m = merges.take(1, "default", "t1", 100).expect("kept");
        assert_eq!(m.heads().len(), KEEP_FROM);
        assert_eq!(merges.kept.len_and_bytes(), (0, 0), "taking it out takes its bytes");
    }

    #[test]
    fn kept_states_stay_within_their_memory_bound_least_recent_first() {
        let conn = Connection::open_in_memory().unwrap();
        let one = state(&conn, 1, KEEP_FROM).bytes();
        let mut kept = Kept::default();
        kept.limit = 3 * one + one / 2;
        for pk in 1..=5 {
            kept.keep(state(&conn, pk, KEEP_FROM));
            assert!(kept.len_and_bytes().1 <= kept.limit);
        }
        assert!(kept.take(1, "default", "t1", 100).is_none(), "the oldest went");
        assert!(kept.take(2, "default", "t2", 100).is_none());
        assert!(kept.take(5, "default", "t5", 100).is_some());
        assert_eq!(kept.len_and_bytes().0, 2);
        kept.clear();
        assert_eq!(kept.len_and_bytes(), (0, 0));
        assert!(crate::merge::KEEP_BYTES / one > 400, "a trace of 100,000 spans fits");
    }

    #[test]
    fn a_sweep_drops_the_states_not_kept_again_since_the_last() {
        let conn = Connection::open_in_memory().unwrap();
        let mut kept = Kept::default();
        kept.keep(state(&conn, 1, KEEP_FROM));
        kept.keep(state(&conn, 2, KEEP_FROM));
        kept.sweep();
        assert_eq!(kept.len_and_bytes().0, 2, "both were kept since the start");
        let again = kept.take(2, "default", "t2", 100).unwrap();
        kept.keep(again);
        kept.sweep();
        assert!(kept.take(1, "default", "t1", 100).is_none(), "trace 1 stopped growing");
        assert!(kept.take(2, "default", "t2", 100).is_some());
        assert_eq!(kept.len_and_bytes(), (0, 0));
    }

    #[test]
    fn the_body_holds_each_text_once_and_the_traces_own_before_the_spans() {
        let conn = Connection::open_in_memory().unwrap();
        let m = state(&conn, 1, 3);
        let body = m.body(&["agent run", "question 1", "", "agent run"]);
        assert_eq!(body, "agent run\nchat\nquestion 0\nquestion 1\nquestion 2\n");
    }
}
