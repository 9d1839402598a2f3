//! Trace ids to row keys, written in sorted runs instead of one random page per trace.
//!
//! W3C trace ids are random, so an index of them takes each new trace on a random leaf: at
//! millions of traces every trace dirtied a 16 KB page of its own (and its parents) in the
//! acknowledging commit and again in the checkpoint, most of the bytes the writer wrote.
//! Here a new trace's id goes to `recent_ids`, appended in arrival order (row key order, so a
//! commit adds to the last page), and to a map in memory that lookups read first. When the map
//! holds a generation of ids it is frozen, sorted, and merged into `trace_ids` (the index of every
//! older id, in id order) a slice per ingest commit, inside that commit: consecutive slices are
//! consecutive keys, so each leaf of `trace_ids` is written about once per generation, however
//! random the ids. The commit holding the last slice also deletes the generation from
//! `recent_ids`; on start the map is loaded from what `recent_ids` still holds.
//!
//! A new trace's id is not in `trace_ids` (nearly every trace is new): while ingest is heavy, a
//! Bloom filter of what the table holds answers that without reading it (see `Merged`).
//!
//! A row key found here is a candidate: callers read the row and check its project and id, so
//! an entry left by a rolled-back transaction (its key reused by a later trace) finds nothing.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use fastbloom::BloomFilter;
use rusqlite::{Connection, OptionalExtension, params};

use crate::Result;

/// Ids held in memory before a generation is merged: one per `STORED_PER_ID` traces stored. A
/// 16 KB leaf of `trace_ids` holds ~250 ids, so a merge writes (and reads) a leaf for ~8 of them
/// (~0.125 pages per id, where a random insert costs a page and its parents) however big the
/// store; at least `GENERATION`, at most 8 times that. Two generations (one filling, one
/// merging) of 64 Ki take ~5 MB, of 512 Ki ~40 MB; the store needs 2 M traces (12 M spans)
/// before a generation grows past the least, 16 M (100 M spans) to reach the most. One per 64
/// wrote 8–10 % more WAL a span at full speed, and the writer read a third more. Ids waiting
/// when ingest goes quiet are merged then (see `freeze_waiting`), so an idle server holds none.
const GENERATION: usize = 1 << 16;
const STORED_PER_ID: usize = 32;

/// Ids read from `trace_ids` between two takings of the lock while the filter is filled.
const CHUNK: usize = 4096;

/// A trace id in memory. Ids as OpenTelemetry sends them (32 lowercase hex digits) are held as
/// their 16 bytes with the project's number: 24 bytes, where a string would take ~90 with its
/// allocation. Sorted by `Key`, a frozen generation is each project's hex ids, then every text
/// id, each run in `trace_ids`' order (hex digits order as the bytes do): a slice of it is a
/// run of neighbouring keys in `trace_ids`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Hex(u32, [u8; 16]),
    /// Any other id: "project\0id" (no project holds a NUL).
    Text(Box<str>),
}

#[derive(Default)]
struct Inner {
    /// Project ids by number (`Key::Hex`), and their numbers.
    projects: Vec<Box<str>>,
    numbers: HashMap<Box<str>, u32>,
    /// Ids added since the last freeze.
    young: HashMap<Key, i64>,
    /// A frozen generation in key order, merged into `trace_ids` up to `merged`.
    frozen: Vec<(Key, i64)>,
    merged: usize,
    /// The highest row key seen: about the number of traces stored (row keys follow arrival).
    last_pk: i64,
    /// Which ids `trace_ids` may hold.
    merged_ids: Merged,
    /// Counts the filter's drops: a fill that began before the last one stops.
    drops: u64,
}

/// Which ids `trace_ids` may hold. Without it, each new trace's id was looked up there, a random
/// 16 KB leaf read for nearly every trace once the store holds millions (~150 MB/s of reads on
/// the writer at full speed). A Bloom filter of ~10 bits an id (1 % false positives, which are
/// looked up as before), in layers that double as the store grows: ~1.2–2.4 bytes a trace.
/// It is wanted only while ingest is heavy: filled from `trace_ids` on a thread of its own once a
/// generation of new ids is frozen (until then every id is looked up), and dropped when ingest
/// goes quiet, so that a server at rest does not hold it for nothing (~10 MB at 7.8 M traces). Each
/// merged slice is added once its commit is made, filter complete or not: an id is added before
/// anything can look for it outside `Inner`'s generations.
#[derive(Default)]
struct Merged {
    layers: Vec<Layer>,
    /// Every id `trace_ids` held at start has been added: a "no" can be trusted.
    complete: bool,
}

struct Layer {
    bloom: BloomFilter,
    capacity: usize,
    held: usize,
}

/// False positives a layer allows.
const FALSE_POSITIVES: f64 = 0.01;

impl Merged {
    fn may_hold(&self, hash: u64) -> bool {
        !self.complete || self.layers.iter().any(|l| l.bloom.contains_hash(hash))
    }

    fn insert(&mut self, hash: u64) {
        self.reserve(1);
        let last = self.layers.last_mut().expect("a layer with room");
        last.bloom.insert_hash(hash);
        last.held += 1;
    }

    fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bloom.num_bits() / 8).sum()
    }

    /// Room for `n` more ids in the last layer: a new one, twice the last (and at least `n`).
    fn reserve(&mut self, n: usize) {
        let (room, last) = self.layers.last().map_or((0, 0), |l| (l.capacity - l.held, l.capacity));
        if room >= n {
            return;
        }
        let capacity = n.max(2 * last).max(GENERATION);
        let bloom = BloomFilter::with_false_pos(FALSE_POSITIVES).expected_items(capacity);
        self.layers.push(Layer { bloom, capacity, held: 0 });
    }
}

/// The filter's hash of an id: of the texts `trace_ids` holds, so that an id read from the table
/// and one found in memory hash alike.
fn id_hash(project_id: &str, id: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x7472_6163_656c_6c6d).hash_one((project_id, id))
}

impl Inner {
    /// The key of `id` in `project_id`; `None` when the project has no number yet (so no id of
    /// it is held as hex). `add` numbers it.
    fn key(&self, project_id: &str, id: &str) -> Option<Key> {
        match hex(id) {
            Some(bytes) => self.numbers.get(project_id).map(|&n| Key::Hex(n, bytes)),
            None => Some(Key::Text(text_key(project_id, id))),
        }
    }

    fn key_or_number(&mut self, project_id: &str, id: &str) -> Key {
        if let Some(k) = self.key(project_id, id) {
            return k;
        }
        let n = self.projects.len() as u32;
        self.projects.push(project_id.into());
        self.numbers.insert(project_id.into(), n);
        self.key(project_id, id).expect("numbered")
    }

    /// The project and id texts a key stands for (a hex id is written out in `buf`).
    fn parts<'a>(&'a self, key: &'a Key, buf: &'a mut [u8; 32]) -> (&'a str, &'a str) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        match key {
            Key::Hex(n, bytes) => {
                for (i, b) in bytes.iter().enumerate() {
                    buf[2 * i] = DIGITS[usize::from(b >> 4)];
                    buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
                }
                let id = std::str::from_utf8(buf).expect("hex digits are text");
                (&self.projects[*n as usize], id)
            }
            Key::Text(k) => k.split_once('\0').unwrap_or((k, "")),
        }
    }
}

/// The 16 bytes of a 32-digit lowercase hex id (whose text orders as its bytes do).
fn hex(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 32 || !b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return None;
    }
    Some(u128::from_str_radix(id, 16).ok()?.to_be_bytes())
}

fn text_key(project_id: &str, id: &str) -> Box<str> {
    let mut k = String::with_capacity(project_id.len() + 1 + id.len());
    k.push_str(project_id);
    k.push('\0');
    k.push_str(id);
    k.into()
}

/// The ids a `merge_step` wrote, by their filter hashes: added to the filter by `merged` once
/// the commit holding them is made.
pub(crate) struct MergeStep {
    hashes: Vec<u64>,
}

pub(crate) struct TraceIds {
    inner: RwLock<Inner>,
    /// The smallest generation: `GENERATION` but in tests.
    generation: usize,
    /// The store is closing: a fill still running stops.
    closing: AtomicBool,
    /// Asks the filling thread for a fill (see `start_filler`); taken by `close`.
    filler: Mutex<Option<mpsc::SyncSender<()>>>,
}

impl TraceIds {
    /// The ids `recent_ids` holds (all but those of a completed merge), read on a connection of
    /// its own so that its page cache goes with it.
    pub(crate) fn load(path: &std::path::Path) -> Result<TraceIds> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Self::load_with(&conn, GENERATION)
    }

    fn load_with(conn: &Connection, generation: usize) -> Result<TraceIds> {
        let mut inner = Inner::default();
        let n: i64 = conn.query_row("SELECT count(*) FROM recent_ids", [], |r| r.get(0))?;
        let mut all = Vec::with_capacity(n as usize);
        let mut stmt = conn.prepare("SELECT project_id, id, pk FROM recent_ids")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (project_id, id, pk): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            all.push((inner.key_or_number(&project_id, &id), pk));
            inner.last_pk = inner.last_pk.max(pk);
        }
        if all.len() >= generation_of(generation, inner.last_pk) {
            // a full generation (or more, from a crash mid-merge) is merged from the start
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            inner.frozen = all;
        } else {
            inner.young = all.into_iter().collect();
        }
        Ok(TraceIds {
            inner: RwLock::new(inner),
            generation,
            closing: AtomicBool::new(false),
            filler: Mutex::new(None),
        })
    }

    /// Starts the thread that fills the filter when asked (by `freeze_if_full`), each time on a
    /// read connection of its own, closed once done so that its page cache goes with it. It ends
    /// with `close`, or once the ids are dropped (it holds them weakly, so as not to keep them).
    pub(crate) fn start_filler(self: &Arc<Self>, path: PathBuf) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sqlite-ids".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let Some(ids) = weak.upgrade() else { break };
                    if ids.closing.load(Ordering::Relaxed) {
                        break;
                    }
                    if ids.inner.read().expect("trace ids lock").merged_ids.complete {
                        continue;
                    }
                    let started = std::time::Instant::now();
                    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
                    let filled = Connection::open_with_flags(&path, flags)
                        .map_err(crate::StoreError::from)
                        .and_then(|c| ids.fill(&c));
                    match filled {
                        Ok(done) => tracing::debug!(
                            done,
                            ms = started.elapsed().as_millis() as u64,
                            bytes = ids.filter_bytes(),
                            "trace id filter filled"
                        ),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "trace id filter not filled: new ids are looked up"
                        ),
                    }
                }
            })
            .map_err(|e| crate::StoreError::Internal(e.to_string()))?;
        *self.filler.lock().expect("filler lock") = Some(tx);
        Ok(())
    }

    /// Asks for a fill, unless one is already asked for.
    fn want_fill(&self) {
        if let Some(tx) = self.filler.lock().expect("filler lock").as_ref() {
            let _ = tx.try_send(());
        }
    }

    /// While ingest is quiet: drops the filter (every id is looked up until ingest is heavy
    /// again and it is filled anew). Returns the bytes it held.
    pub(crate) fn drop_filter(&self) -> usize {
        let mut inner = self.inner.write().expect("trace ids lock");
        let bytes = inner.merged_ids.bytes();
        inner.merged_ids = Merged::default();
        inner.drops += 1;
        bytes
    }

    /// The bytes the filter's layers hold.
    pub(crate) fn filter_bytes(&self) -> usize {
        self.inner.read().expect("trace ids lock").merged_ids.bytes()
    }

    /// Adds every id `trace_ids` holds to the filter, on a read connection (taken after the
    /// filter exists: an id merged before its snapshot is read here, one merged after is added by
    /// `merged`), a few thousand ids a lock. Once done, an id the filter rules out is not
    /// looked up. Returns false when stopped first by `close`, or by `drop_filter` (which may
    /// have dropped ids merged after this snapshot: the filter is not complete without them).
    pub(crate) fn fill(&self, conn: &Connection) -> Result<bool> {
        let drops = self.inner.read().expect("trace ids lock").drops;
        let tx = conn.unchecked_transaction()?;
        // row keys follow arrival: about as many ids as the store has traces
        let traces: i64 =
            tx.query_row("SELECT coalesce(max(pk), 0) FROM traces", [], |r| r.get(0))?;
        self.inner.write().expect("trace ids lock").merged_ids.reserve(traces.max(0) as usize);
        let mut stmt = tx.prepare("SELECT project_id, id FROM trace_ids")?;
        let mut rows = stmt.query([])?;
        let mut hashes = Vec::with_capacity(CHUNK);
        loop {
            let mut done = true;
            while let Some(r) = rows.next()? {
                let text = |i| r.get_ref(i)?.as_str().map_err(rusqlite::Error::from);
                hashes.push(id_hash(text(0)?, text(1)?));
                if hashes.len() == CHUNK {
                    done = false;
                    break;
                }
            }
            let mut inner = self.inner.write().expect("trace ids lock");
            if inner.drops != drops {
                return Ok(false);
            }
            for h in hashes.drain(..) {
                inner.merged_ids.insert(h);
            }
            if done {
                inner.merged_ids.complete = true;
                return Ok(true);
            }
            drop(inner);
            if self.closing.load(Ordering::Relaxed) {
                return Ok(false);
            }
        }
    }

    /// Stops a `fill` still running, and the filling thread.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.filler.lock().expect("filler lock").take();
    }

    /// The row key stored for `id`, if any (to be checked against the row).
    pub(crate) fn find(
        &self,
        conn: &Connection,
        project_id: &str,
        id: &str,
    ) -> Result<Option<i64>> {
        {
            let inner = self.inner.read().expect("trace ids lock");
            if let Some(k) = inner.key(project_id, id) {
                if let Some(&pk) = inner.young.get(&k) {
                    return Ok(Some(pk));
                }
                if let Ok(i) = inner.frozen.binary_search_by(|(f, _)| f.cmp(&k)) {
                    return Ok(Some(inner.frozen[i].1));
                }
            }
            if !inner.merged_ids.may_hold(id_hash(project_id, id)) {
                return Ok(None);
            }
        }
        Ok(conn
            .prepare_cached("SELECT pk FROM trace_ids WHERE project_id = ?1 AND id = ?2")?
            .query_row(params![project_id, id], |r| r.get(0))
            .optional()?)
    }

    /// A new trace, inside the writer's transaction: appended to `recent_ids`, and found in
    /// memory from now on (by a reader too, which finds its row once the commit is made).
    pub(crate) fn add(&self, conn: &Connection, project_id: &str, id: &str, pk: i64) -> Result<()> {
        conn.prepare_cached("INSERT INTO recent_ids (pk, project_id, id) VALUES (?1, ?2, ?3)")?
            .execute(params![pk, project_id, id])?;
        let mut inner = self.inner.write().expect("trace ids lock");
        let k = inner.key_or_number(project_id, id);
        inner.young.insert(k, pk);
        inner.last_pk = inner.last_pk.max(pk);
        Ok(())
    }

    /// Inside the writer's transaction, before its commit: merges the next `n` ids of a frozen
    /// generation into `trace_ids` (and, with the last of them, takes the generation out of
    /// `recent_ids`). Returns what was merged, for `merged` once the commit is made.
    pub(crate) fn merge_step(&self, conn: &Connection, n: usize) -> Result<MergeStep> {
        let inner = self.inner.read().expect("trace ids lock");
        let from = inner.merged;
        let to = (from + n).min(inner.frozen.len());
        let mut hashes = Vec::with_capacity(to - from);
        if from == to {
            return Ok(MergeStep { hashes });
        }
        let mut put = conn.prepare_cached(
            "INSERT OR REPLACE INTO trace_ids (project_id, id, pk) VALUES (?1, ?2, ?3)",
        )?;
        let mut buf = [0; 32];
        for (k, pk) in &inner.frozen[from..to] {
            let (project_id, id) = inner.parts(k, &mut buf);
            put.execute(params![project_id, id, pk])?;
            hashes.push(id_hash(project_id, id));
        }
        if to == inner.frozen.len() {
            let last = inner.frozen.iter().map(|&(_, pk)| pk).max().unwrap_or(0);
            conn.prepare_cached("DELETE FROM recent_ids WHERE pk <= ?1")?.execute([last])?;
        }
        Ok(MergeStep { hashes })
    }

    /// After the commit that held a `merge_step`: its ids are found in `trace_ids` (and held by
    /// the filter); a generation merged whole is dropped, and a full map frozen in its place.
    pub(crate) fn merged(&self, step: MergeStep) {
        {
            let mut inner = self.inner.write().expect("trace ids lock");
            for &h in &step.hashes {
                inner.merged_ids.insert(h);
            }
            inner.merged += step.hashes.len();
            if inner.merged >= inner.frozen.len() {
                inner.frozen = Vec::new();
                inner.merged = 0;
            }
        }
        self.freeze_if_full();
    }

    /// While ingest is quiet: freezes whatever the map holds (when no generation is being
    /// merged), so that it can be merged however small. False when no id waits at all.
    pub(crate) fn freeze_waiting(&self) -> bool {
        let mut inner = self.inner.write().expect("trace ids lock");
        if inner.frozen.is_empty() {
            if inner.young.is_empty() {
                return false;
            }
            let mut frozen: Vec<(Key, i64)> = inner.young.drain().collect();
            frozen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            inner.frozen = frozen;
            inner.merged = 0;
            inner.young.shrink_to_fit();
        }
        true
    }

    /// Freezes the map once it holds a generation and no other is being merged. A generation
    /// of new ids is heavy ingest: the filter is filled, if it is not.
    fn freeze_if_full(&self) {
        let mut inner = self.inner.write().expect("trace ids lock");
        let generation = generation_of(self.generation, inner.last_pk);
        if inner.young.len() < generation || !inner.frozen.is_empty() {
            return;
        }
        let mut frozen: Vec<(Key, i64)> = inner.young.drain().collect();
        frozen.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        inner.frozen = frozen;
        inner.merged = 0;
        inner.young.shrink_to(generation);
        let complete = inner.merged_ids.complete;
        drop(inner);
        if !complete {
            self.want_fill();
        }
    }
}

/// Ids in a generation, with `stored` traces: one per `STORED_PER_ID`, from `least` to 8 times that.
fn generation_of(least: usize, stored: i64) -> usize {
    (stored.max(0) as usize / STORED_PER_ID).clamp(least, 8 * least)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, table: &str) -> usize {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
            .unwrap() as usize
    }

    /// Ids added in commits as the writer makes them (ten a commit, a merge step in each) are
    /// found at every point: in memory, mid-merge, merged, after a restart mid-merge (a crash:
    /// the map dropped unsaved), and `recent_ids` keeps no more than it must.
    #[test]
    fn every_id_is_found_through_generations_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("traces.db")).unwrap();
        super::super::migrate(&mut conn).unwrap();
        // OpenTelemetry's hex ids, and every fifth one a native id of any text
        let id = |n: usize| match n % 5 {
            0 => format!("native-{n}"),
            _ => format!("{:032x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)),
        };
        let mut ids = TraceIds::load_with(&conn, 100).unwrap();
        let mut added = 0;
        for round in 0..60 {
            let tx = conn.transaction().unwrap();
            for _ in 0..10 {
                added += 1;
                let project = if added % 3 == 0 { "p-2" } else { "default" };
                ids.add(&tx, project, &id(added), added as i64).unwrap();
            }
            let n = ids.merge_step(&tx, 20).unwrap();
            tx.commit().unwrap();
            ids.merged(n);
            if round % 20 == 19 {
                // a restart: the map is gone, what was committed is all there is; the filter
                // of merged ids is filled after two of the three (ids are looked up until then)
                ids = TraceIds::load_with(&conn, 100).unwrap();
                if round != 39 {
                    assert!(ids.fill(&conn).unwrap());
                }
            }
            for k in 1..=added {
                let project = if k % 3 == 0 { "p-2" } else { "default" };
                assert_eq!(ids.find(&conn, project, &id(k)).unwrap(), Some(k as i64), "id {k}");
                let other = if k % 3 == 0 { "default" } else { "p-2" };
                assert_eq!(ids.find(&conn, other, &id(k)).unwrap(), None, "id {k} elsewhere");
            }
            // at most a generation filling and one being merged stay in recent_ids
            assert!(count(&conn, "recent_ids") <= 200 + 10, "{}", count(&conn, "recent_ids"));
        }
        assert_eq!(added, 600);
        assert!(count(&conn, "trace_ids") >= 400, "merged: {}", count(&conn, "trace_ids"));
        assert_eq!(ids.find(&conn, "default", &id(601)).unwrap(), None);
        // quiet: whatever waits is merged, however few, and nothing is left to read back
        while ids.freeze_waiting() {
            let tx = conn.transaction().unwrap();
            let n = ids.merge_step(&tx, 64).unwrap();
            tx.commit().unwrap();
            ids.merged(n);
        }
        assert_eq!((count(&conn, "recent_ids"), count(&conn, "trace_ids")), (0, 600));
        let ids = TraceIds::load_with(&conn, 100).unwrap();
        assert!(ids.fill(&conn).unwrap());
        for k in 1..=added {
            let project = if k % 3 == 0 { "p-2" } else { "default" };
            assert_eq!(ids.find(&conn, project, &id(k)).unwrap(), Some(k as i64), "id {k}");
        }
    }

    /// Once filled, the filter answers for new ids without a look in `trace_ids` (a connection
    /// without the table shows each look as an error), and never rules out one it holds.
    #[test]
    fn a_new_id_is_not_looked_up_once_the_filter_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("traces.db")).unwrap();
        super::super::migrate(&mut conn).unwrap();
        let no_table = Connection::open_in_memory().unwrap();
        let id = |n: u128| format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_0001));
        // 5,000 ids merged into trace_ids (a generation of 100, and the rest when quiet)
        let ids = TraceIds::load_with(&conn, 100).unwrap();
        let merge_all = |conn: &mut Connection, ids: &TraceIds, from: u128, to: u128| {
            let tx = conn.transaction().unwrap();
            for n in from..to {
                ids.add(&tx, "default", &id(n), n as i64).unwrap();
            }
            tx.commit().unwrap();
            while ids.freeze_waiting() {
                let tx = conn.transaction().unwrap();
                let n = ids.merge_step(&tx, 1000).unwrap();
                tx.commit().unwrap();
                ids.merged(n);
            }
        };
        merge_all(&mut conn, &ids, 1, 5001);
        let ids = Arc::new(TraceIds::load_with(&conn, 100).unwrap());
        let looked_up = |ids: &TraceIds, range: std::ops::Range<u128>| {
            range.filter(|&n| ids.find(&no_table, "default", &id(n)).is_err()).count()
        };
        assert_eq!(looked_up(&ids, 10_001..20_001), 10_000, "not filled: every id is looked up");
        // a drop while a fill reads (ids merged after its snapshot may have gone with it): the
        // fill stops, and the filter is not trusted
        let mut reader = Connection::open(dir.path().join("traces.db")).unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let (d, i) = (Arc::clone(&dropped), Arc::clone(&ids));
        reader
            .progress_handler(
                1000,
                Some(move || {
                    if !d.swap(true, Ordering::Relaxed) {
                        i.drop_filter();
                    }
                    false // go on reading
                }),
            )
            .unwrap();
        assert!(!ids.fill(&reader).unwrap(), "a fill across a drop is not done");
        assert!(dropped.load(Ordering::Relaxed));
        assert_eq!(looked_up(&ids, 10_001..20_001), 10_000, "not complete: every id looked up");
        assert!(ids.fill(&conn).unwrap());
        let fresh = looked_up(&ids, 10_001..20_001);
        assert!(fresh <= 200, "{fresh} of 10,000 new ids looked up (1 % expected)");
        assert_eq!(looked_up(&ids, 1..5001), 5000, "a stored id is always looked up");
        // ids merged after the fill are added as their slices are committed
        merge_all(&mut conn, &ids, 5001, 6001);
        assert_eq!(looked_up(&ids, 5001..6001), 1000);
        for n in (1..6001).step_by(7) {
            assert_eq!(ids.find(&conn, "default", &id(n)).unwrap(), Some(n as i64), "id {n}");
        }
        assert_eq!(ids.find(&conn, "p-2", &id(1)).unwrap(), None, "another project's");
    }

    /// The filter is filled by its thread once a generation of new ids is frozen (heavy ingest),
    /// dropped when asked (quiet), and filled again by the next generation; at every point each
    /// stored id is found, and once filled a new id is not looked up.
    #[test]
    fn the_filter_is_filled_while_ingest_is_heavy_and_dropped_when_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traces.db");
        let mut conn = Connection::open(&path).unwrap();
        super::super::migrate(&mut conn).unwrap();
        let no_table = Connection::open_in_memory().unwrap();
        let id = |n: u128| format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_0001));
        let ids = Arc::new(TraceIds::load_with(&conn, 100).unwrap());
        ids.start_filler(path).unwrap();
        // ids added ten a commit, a merge step in each, as the writer does
        let add = |conn: &mut Connection, from: u128, to: u128| {
            for n in (from..to).step_by(10) {
                let tx = conn.transaction().unwrap();
                for k in n..(n + 10).min(to) {
                    ids.add(&tx, "default", &id(k), k as i64).unwrap();
                }
                let step = ids.merge_step(&tx, 20).unwrap();
                tx.commit().unwrap();
                ids.merged(step);
            }
        };
        let looked_up = |range: std::ops::Range<u128>| {
            range.filter(|&n| ids.find(&no_table, "default", &id(n)).is_err()).count()
        };
        let filled = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while looked_up(100_000..101_000) > 100 {
                assert!(std::time::Instant::now() < deadline, "the filter is not filled");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let all_found = |conn: &Connection, to: u128| {
            for n in 1..to {
                assert_eq!(ids.find(conn, "default", &id(n)).unwrap(), Some(n as i64), "id {n}");
            }
        };
        add(&mut conn, 1, 100);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(looked_up(100_000..101_000), 1000, "no generation yet: no fill");
        add(&mut conn, 100, 2000);
        filled();
        all_found(&conn, 2000);

        assert!(ids.drop_filter() > 0);
        assert_eq!((ids.filter_bytes(), looked_up(100_000..101_000)), (0, 1000), "dropped");
        all_found(&conn, 2000);
        // merged while dropped, and after: held by the next fill
        add(&mut conn, 2000, 4000);
        filled();
        all_found(&conn, 4000);
        assert!(ids.filter_bytes() > 0);

        // closing ends the thread: a generation frozen after it asks no fill
        ids.close();
        ids.drop_filter();
        add(&mut conn, 4000, 5000);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(looked_up(100_000..101_000), 1000, "closed: no fill");
        all_found(&conn, 5000);
    }

    #[test]
    fn a_generation_grows_with_the_store() {
        assert_eq!(generation_of(GENERATION, 0), GENERATION);
        assert_eq!(generation_of(GENERATION, 5_000_000), 5_000_000 / STORED_PER_ID);
        assert_eq!(generation_of(GENERATION, 1 << 40), 8 * GENERATION);
    }

    #[test]
    fn keys_sort_as_the_index_does_within_a_project() {
        let mut inner = Inner::default();
        let ids = ["00ff0000000000000000000000000001", "0a000000000000000000000000000000", "b"];
        let mut keys: Vec<Key> = ids.iter().map(|id| inner.key_or_number("p", id)).collect();
        keys.push(inner.key_or_number("p", "a"));
        keys.sort();
        let mut buf = [0; 32];
        let parts: Vec<String> = keys.iter().map(|k| inner.parts(k, &mut buf).1.into()).collect();
        // hex ids in text order, then the others in text order
        assert_eq!(parts, [ids[0], ids[1], "a", "b"]);
        assert_eq!(hex("0A000000000000000000000000000000"), None, "upper case stays text");
    }
}
