//! Checkpoints of the main database, off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: at 10,000
//! spans/s one commit in ~40 spent 10-30 ms copying the WAL into the database, and every request
//! waiting behind it waited as long (the tail of ingest latency). The writer runs without
//! automatic checkpoints; a thread of its own copies the WAL into the database (PASSIVE: it never
//! blocks the writer or the readers) once the WAL holds `START_FRAMES`. The WAL starts again from
//! its beginning only when a write transaction begins with every frame copied, which a writer
//! that commits while the checkpoint runs never finds; so when frames remain after a pass, the
//! writer copies those few itself between two transactions. A pass that finds every frame
//! copied is not run again before the next commit, and the thread closes its connection once
//! commits stop (its page cache, lookaside and schema: 0.3-0.5 MiB of an idle server), then
//! sleeps until the next commit wakes it.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, MAIN_DB};

/// WAL frames (pages) that the thread copies when it looks, every `LOOK_EVERY`: 4 MB of 16 KB
/// pages. Small, regular passes disturb commits least: p99 at 10,000 spans/s 8.7-10 ms, against
/// 11.6 ms with passes at 1000 pages only and 11.6 ms at 64 pages.
const START_FRAMES: i64 = 250;
/// WAL frames at which a commit wakes the thread at once: 16 MB, SQLite's own default. Waking it
/// at 4 MB under heavy ingest made 12 passes a second and cost 14 % of throughput.
const WAKE_FRAMES: i64 = 1000;
/// How often the thread looks when no commit has woken it (but for when it sleeps: see `asleep`).
const LOOK_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct Checkpoints {
    /// Frames in the WAL after the writer's last commit.
    frames: AtomicI64,
    /// The writer's commits so far.
    commits: AtomicU64,
    /// A pass left frames behind: the writer copies them before its next transaction.
    finish: AtomicBool,
    /// The thread sleeps until the next commit (commits stopped, and it has nothing to copy and
    /// no connection), instead of looking every `LOOK_EVERY` for nothing.
    asleep: AtomicBool,
    closed: Mutex<bool>,
    wake: Condvar,
}

impl Checkpoints {
    /// Turns the automatic checkpoint of the write connection off and has its commits report
    /// the WAL's size here instead.
    pub fn install(self: &Arc<Self>, conn: &mut Connection) -> rusqlite::Result<()> {
        let me = Arc::clone(self);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: c_int| {
            me.frames.store(i64::from(frames), Ordering::Release);
            me.commits.fetch_add(1, Ordering::SeqCst);
            if me.asleep.swap(false, Ordering::SeqCst) {
                // the lock is held from the thread's last look of `commits` until it waits
                let _held = me.closed.lock().expect("checkpoint lock");
                me.wake.notify_one();
            } else if i64::from(frames) >= WAKE_FRAMES {
                me.wake.notify_one();
            }
            Ok(())
        }))
    }

    /// Called by the writer between transactions: copies what the last pass left.
    pub fn writer_turn(&self, conn: &Connection) {
        if self.finish.swap(false, Ordering::AcqRel)
            && let Err(e) = conn.wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE)
        {
            tracing::debug!(error = %e, "writer's checkpoint failed");
        }
    }

    pub fn close(&self) {
        *self.closed.lock().expect("checkpoint lock") = true;
        self.wake.notify_one();
    }

    /// The checkpoint thread: `open` gives it a connection to the database (again after errors,
    /// and after it closed it: with nothing to copy and no commit for `QUIET`, handing back what
    /// the connection held, `on_quiet` included).
    pub fn run(
        self: Arc<Self>,
        path: PathBuf,
        open: impl Fn(&Path) -> rusqlite::Result<Connection>,
        on_quiet: Option<fn()>,
    ) {
        let mut conn = None;
        // the commit count when a pass last found every frame copied
        let mut copied = None;
        // the commit count last seen, and since when
        let mut seen = (0, Instant::now());
        let mut sleep = false;
        loop {
            {
                let mut closed = self.closed.lock().expect("checkpoint lock");
                if *closed {
                    break;
                }
                if sleep {
                    self.asleep.store(true, Ordering::SeqCst);
                    // a commit after this look finds `asleep` set, and wakes the thread
                    if self.commits.load(Ordering::SeqCst) == seen.0 {
                        closed = self
                            .wake
                            .wait_while(closed, |closed| {
                                !*closed && self.asleep.load(Ordering::SeqCst)
                            })
                            .expect("checkpoint lock");
                    }
                    self.asleep.store(false, Ordering::SeqCst);
                } else {
                    closed = self.wake.wait_timeout(closed, LOOK_EVERY).expect("checkpoint lock").0;
                }
                if *closed {
                    break;
                }
            }
            let commits = self.commits.load(Ordering::Acquire);
            if commits != seen.0 {
                seen = (commits, Instant::now());
            }
            sleep = false;
            if copied == Some(commits) || self.frames.load(Ordering::Acquire) < START_FRAMES {
                // nothing to copy: once commits have stopped, the connection goes and the
                // thread sleeps
                if seen.1.elapsed() >= super::QUIET {
                    if conn.take().is_some() {
                        super::hand_back_freed(on_quiet);
                    }
                    sleep = true;
                }
                continue;
            }
            let c = match conn.take() {
                Some(c) => c,
                None => match open(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "checkpoint connection cannot be opened yet");
                        continue;
                    }
                },
            };
            match c.wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE) {
                Ok((frames, done)) => {
                    // The pass copied the frames there were when it began; the writer has
                    // likely committed more since (it is not told how many: it looks).
                    self.finish.store(true, Ordering::Release);
                    copied = (done == frames).then_some(commits);
                    conn = Some(c);
                }
                // dropped: opened again on the next pass (a read-only directory made writable)
                Err(e) => tracing::debug!(error = %e, "checkpoint failed"),
            }
        }
    }
}
