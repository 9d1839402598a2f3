//! The acknowledging sync, off the writer thread.
//!
//! A 2xx means durable: an ingest request is answered once the WAL holding its commit is on
//! disk. The writer used to sync the WAL inside each commit (`synchronous=FULL`); while the disk
//! flushed (0.5 ms at p50, ~5 ms at p99 under load) it wrote nothing, and a request that came
//! meanwhile waited for that flush, then for its own transaction and its own flush. Now the
//! writer commits without syncing (`synchronous=NORMAL`: the WAL stays consistent, SQLite syncs
//! it before each checkpoint, and a crash loses at most the commits not yet synced, none of them
//! answered) and hands what the commit answers to this thread, which syncs the WAL
//! (`fdatasync`) and only then answers, announces, and hands the texts to the indexer. The
//! writer meanwhile writes the next transaction; the commits made while a sync runs share the
//! next one. When the sync fails, its commits are answered with an I/O error: they may not be on
//! disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};

use tokio::sync::{broadcast, oneshot};

use super::search;
use crate::{Ingested, Result, StorageFault, StoreError, StoreEvent};

/// Commits that may wait for their sync; beyond them the writer waits. Each holds its
/// requests, whose bytes the ingest queue's memory bound still counts until they are answered.
const IN_FLIGHT: usize = 64;

/// A request's answer, and where it goes.
type Reply = (oneshot::Sender<Result<Vec<Ingested>>>, Result<Vec<Ingested>>);

/// What a commit leaves to do once the WAL holding it is on disk.
pub(super) enum Committed {
    /// Ingest: each request's answer, the events to publish, and the texts the commit wrote,
    /// for the indexer. (Made on the writer's thread: this one allocates nothing, so it holds
    /// no memory of its own once ingest stops.)
    Write { replies: Vec<Reply>, events: Vec<StoreEvent>, docs: Vec<search::Doc> },
    /// A write outside ingest (projects, keys, settings).
    Admin(oneshot::Sender<Result<serde_json::Value>>, serde_json::Value),
}

/// Makes the WAL durable: `fdatasync` on the file, opened again when SQLite has made it anew.
/// (SQLite deletes the WAL when its last connection closes, as when the writer's connection is
/// opened again after a read-only spell, having first copied it into the database and synced
/// that: a handle to the deleted file still syncs what reached it.)
pub(super) struct WalFile {
    path: PathBuf,
    file: Option<(std::fs::File, u64)>,
}

impl WalFile {
    pub(super) fn new(database: &std::path::Path) -> WalFile {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        WalFile { path: path.into(), file: None }
    }

    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(m) if self.file.as_ref().is_some_and(|(_, i)| *i == m.ino()) => {}
            Ok(_) => {
                let f = std::fs::File::open(&self.path)?;
                let ino = f.metadata()?.ino();
                self.file = Some((f, ino));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.file.is_some() => {}
            Err(e) => return Err(e),
        }
        let (f, _) = self.file.as_ref().expect("opened above");
        f.sync_data()
    }
}

/// The thread that syncs and answers; stopped (after answering every commit sent) by `stop`.
pub(super) struct Syncer {
    tx: Option<SyncSender<Committed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// `sync` makes every commit made before the call durable (`WalFile::sync`, or nothing when
    /// the store was opened without syncing at every commit).
    ///
    /// `on_quiet` is called once commits have stopped for `QUIET` (see `SqliteOptions`).
    pub(super) fn start(
        mut sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
        progress: Arc<search::Progress>,
        events: broadcast::Sender<StoreEvent>,
        on_quiet: Option<fn()>,
    ) -> std::io::Result<Syncer> {
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || run(rx, &mut sync, &progress, &events, on_quiet))?;
        Ok(Syncer { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands a commit over (waiting while `IN_FLIGHT` commits wait for their sync).
    pub(super) fn send(&self, c: Committed) {
        if let Some(tx) = &self.tx {
            // (the thread stops only once this sender is dropped)
            let _ = tx.send(c);
        }
    }

    /// Answers what was sent, then stops the thread.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the sync thread panicked");
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    rx: Receiver<Committed>,
    sync: &mut dyn FnMut() -> std::io::Result<()>,
    progress: &search::Progress,
    events: &broadcast::Sender<StoreEvent>,
    on_quiet: Option<fn()>,
) {
    let mut group = Vec::new();
    // the thread frees what the writer allocated, and its allocator keeps such memory until
    // the thread hands it back: once commits stop, it does
    let mut quiet = true;
    loop {
        let next = if quiet {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(super::QUIET)
        };
        let first = match next {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                quiet = true;
                super::hand_back_freed(on_quiet);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        quiet = false;
        group.push(first);
        // every commit made by now is in the WAL: one sync for all of them
        group.extend(rx.try_iter());
        let synced = sync();
        if let Err(e) = &synced {
            let commits = group.len();
            tracing::error!(error = %e, commits, "syncing the WAL failed: answered with an error");
        }
        for c in group.drain(..) {
            answer(c, synced.is_ok(), progress, events);
        }
    }
}

fn answer(
    c: Committed,
    synced: bool,
    progress: &search::Progress,
    events: &broadcast::Sender<StoreEvent>,
) {
    let not_synced = || StoreError::Storage(StorageFault::Io);
    match c {
        Committed::Write { replies, events: announced, docs } => {
            // before the answers: a search made after one waits for its texts (committed, they
            // are indexed whether or not the sync succeeded)
            if let Some(seq) = docs.iter().map(|d| d.seq).max() {
                progress.committed(seq);
            }
            progress.handoff().push(docs);
            if synced {
                for e in announced {
                    let _ = events.send(e);
                }
            }
            for (ack, reply) in replies {
                let _ = ack.send(if synced || reply.is_err() { reply } else { Err(not_synced()) });
            }
        }
        Committed::Admin(ack, out) => {
            let _ = ack.send(if synced { Ok(out) } else { Err(not_synced()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// A sync that waits to be let go (at most 10 s: a failing test must not hang on it), and
    /// tells when it starts.
    fn held_sync() -> (
        impl FnMut() -> std::io::Result<()> + Send + 'static,
        Receiver<()>,
        SyncSender<std::io::Result<()>>,
    ) {
        let (started_tx, started) = channel();
        let (release, released) = sync_channel::<std::io::Result<()>>(16);
        let sync = move || {
            let _ = started_tx.send(());
            released.recv_timeout(std::time::Duration::from_secs(10)).unwrap_or(Ok(()))
        };
        (sync, started, release)
    }

    fn progress() -> Arc<search::Progress> {
        Arc::new(search::Progress::for_tests())
    }

    fn admin(s: &Syncer, n: i64) -> oneshot::Receiver<Result<serde_json::Value>> {
        let (ack, answer) = oneshot::channel();
        s.send(Committed::Admin(ack, serde_json::json!(n)));
        answer
    }

    /// Nothing is answered before the sync that covers it has returned, and the commits made
    /// while a sync runs are covered by the next one, together.
    #[test]
    fn answers_wait_for_their_sync_and_commits_share_the_next() {
        let (sync, started, release) = held_sync();
        let (events, _) = broadcast::channel(16);
        let mut s = Syncer::start(sync, progress(), events, None).unwrap();
        let mut first = admin(&s, 1);
        started.recv().unwrap();
        let mut later: Vec<_> = (2..=4).map(|n| admin(&s, n)).collect();
        assert!(first.try_recv().is_err(), "answered before its sync returned");
        release.send(Ok(())).unwrap();
        // the second sync starts with the three commits made during the first
        started.recv().unwrap();
        assert_eq!(first.blocking_recv().unwrap().unwrap(), serde_json::json!(1));
        for a in &mut later {
            assert!(a.try_recv().is_err(), "answered before its sync returned");
        }
        release.send(Ok(())).unwrap();
        for (n, a) in (2..=4).zip(later) {
            assert_eq!(a.blocking_recv().unwrap().unwrap(), serde_json::json!(n));
        }
        s.stop();
        assert!(started.try_recv().is_err(), "two syncs for four commits");
    }

    /// A commit whose sync failed is answered with an I/O error, and the next is not held back.
    #[test]
    fn a_failed_sync_answers_an_io_error() {
        let (sync, started, release) = held_sync();
        let (events, _) = broadcast::channel(16);
        let s = Syncer::start(sync, progress(), events, None).unwrap();
        let failed = admin(&s, 1);
        started.recv().unwrap();
        release.send(Err(std::io::Error::other("device gone"))).unwrap();
        let e = failed.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(e, StoreError::Storage(StorageFault::Io)), "{e:?}");
        let next = admin(&s, 2);
        started.recv().unwrap();
        release.send(Ok(())).unwrap();
        assert_eq!(next.blocking_recv().unwrap().unwrap(), serde_json::json!(2));
    }

    /// Stopping answers every commit handed over first.
    #[test]
    fn stopping_answers_what_was_handed_over() {
        let (events, _) = broadcast::channel(16);
        let mut s = Syncer::start(|| Ok(()), progress(), events, None).unwrap();
        let answers: Vec<_> = (0..100).map(|n| admin(&s, n)).collect();
        s.stop();
        for (n, mut a) in (0..100).zip(answers) {
            assert_eq!(a.try_recv().unwrap().unwrap(), serde_json::json!(n));
        }
    }

    /// `on_quiet` is called once commits have stopped for `QUIET`, not while they come, and
    /// once a spell.
    #[test]
    fn memory_is_handed_back_once_commits_stop() {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn count() {
            CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let calls = || CALLS.load(std::sync::atomic::Ordering::SeqCst);
        let (events, _) = broadcast::channel(16);
        let mut s = Syncer::start(|| Ok(()), progress(), events, Some(count)).unwrap();
        std::thread::sleep(super::super::QUIET * 2);
        assert_eq!(calls(), 0, "handed back before any commit");
        for n in 0..10 {
            let _ = admin(&s, n).blocking_recv();
            std::thread::sleep(super::super::QUIET / 10);
        }
        assert_eq!(calls(), 0, "handed back while commits came");
        std::thread::sleep(super::super::QUIET * 3);
        assert_eq!(calls(), 1);
        s.stop();
    }

    /// The WAL is synced through a handle opened again when the file was made anew, and through
    /// the handle it has while the file is gone.
    #[test]
    fn the_wal_is_opened_again_when_made_anew() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut wal = WalFile::new(&db);
        assert!(wal.sync().is_err(), "no WAL yet");
        std::fs::write(dir.path().join("t.db-wal"), b"one").unwrap();
        wal.sync().unwrap();
        let first = wal.file.as_ref().unwrap().1;
        std::fs::remove_file(dir.path().join("t.db-wal")).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.file.as_ref().unwrap().1, first);
        std::fs::write(dir.path().join("t.db-wal"), b"two").unwrap();
        wal.sync().unwrap();
        assert_ne!(wal.file.as_ref().unwrap().1, first, "still the deleted file's handle");
    }
}
