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
//!
//! Under heavy ingest, the pages a pass appended to the database are written back and dropped
//! from the page cache after it (see `AppendedPages`).

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
/// Bytes a pass must have appended to the database for them to be dropped from the page cache:
/// 4 MB in a pass (at most `LOOK_EVERY` apart under load) is ~20,000 spans/s.
const DROP_APPENDED: u64 = 4 << 20;

/// The pages checkpoints append to the database file: span documents, trace rows and index
/// leaves, most of them not read again soon (a span document when its trace is opened). Under
/// heavy ingest that is ~35 MB a second, and left cached it churns the page cache: after the first
/// minute of `sustained`, copying written bytes into the page cache took 5.9 % of the two cores'
/// time instead of 1.1 % (docs/BENCHMARKS.md, "What the write-back pace is"). After a pass they
/// are written back where it left them dirty (see `drop_cached`), and `POSIX_FADV_DONTNEED`
/// drops them (1.0 % with it). Only under heavy ingest (a pass appending `DROP_APPENDED`):
/// otherwise what was just written stays cached for the queries that read the newest traces.
struct AppendedPages {
    /// The database file, opened for the advice alone (it applies to the file, not the handle).
    file: std::fs::File,
    /// Its size after the last pass.
    len: u64,
}

impl AppendedPages {
    fn open(path: &Path) -> Option<AppendedPages> {
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        Some(AppendedPages { file, len })
    }

    /// After a pass: drops what it appended, when that is `DROP_APPENDED` or more.
    fn passed(&mut self) {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else { return };
        if len >= self.len + DROP_APPENDED {
            drop_cached(&self.file, self.len, len - self.len);
        }
        self.len = len;
    }
}

/// Asks the kernel to drop the cached pages of `file` in `len` bytes from `offset`, writing
/// back first those still dirty. A pass syncs the database only when it copied every frame of
/// the WAL; under heavy ingest the writer has almost always committed more by then, so the
/// pass returns with its pages dirty, and the advice skips dirty pages: half of a 6.6 GB
/// database stayed cached after 150 s of `sustained`. Writing them back (without the device's
/// cache flush: that is the checkpoint's own sync, for durability) makes them droppable.
#[cfg(target_os = "linux")]
fn drop_cached(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: write-back of an open file descriptor's pages; it changes no memory of ours.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!(error = %e, "writing back appended pages failed");
    }
    // SAFETY: advice on an open file descriptor's pages; it changes no memory of ours.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(error = rc, "dropping appended pages from the page cache failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &std::fs::File, _offset: u64, _len: u64) {}

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
        let mut appended = AppendedPages::open(&path);
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
                    if let Some(a) = &mut appended {
                        a.passed();
                    }
                }
                // dropped: opened again on the next pass (a read-only directory made writable)
                Err(e) => tracing::debug!(error = %e, "checkpoint failed"),
            }
        }
    }
}

// The advice is Linux's (elsewhere nothing is dropped).
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A temporary directory on the disk the tests are built on: page cache advice means
    /// nothing on a tmpfs `/tmp` (its pages are the files).
    pub(crate) fn tempdir_on_disk() -> tempfile::TempDir {
        let exe = std::env::current_exe().expect("test binary path");
        tempfile::tempdir_in(exe.parent().expect("test binary directory")).expect("temp dir")
    }

    /// The share of `path`'s pages in `[from, to)` that are in the page cache.
    pub(crate) fn resident(path: &Path, from: u64, to: u64) -> f64 {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let pages = len.div_ceil(page);
        let mut map = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of the whole file, only asked which of its pages
        // are resident (mincore faults none in), then unmapped.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, map.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        let range = &map[from as usize / page..(to as usize).div_ceil(page).min(pages)];
        range.iter().filter(|&&p| p & 1 == 1).count() as f64 / range.len().max(1) as f64
    }

    /// An empty `traces.db` on the disk, watched from its start.
    fn empty_database() -> (tempfile::TempDir, AppendedPages) {
        let dir = tempdir_on_disk();
        let path = dir.path().join("traces.db");
        std::fs::write(&path, b"").unwrap();
        let pages = AppendedPages::open(&path).unwrap();
        (dir, pages)
    }

    fn append(path: &Path, bytes: usize) {
        append_unsynced(path, bytes);
        std::fs::File::open(path).unwrap().sync_all().unwrap();
    }

    /// As a pass that could not copy every frame leaves its pages: written, not synced.
    fn append_unsynced(path: &Path, bytes: usize) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(&vec![7u8; bytes]).unwrap();
    }

    #[test]
    fn a_large_append_leaves_the_page_cache_even_before_it_is_synced() {
        let (dir, mut pages) = empty_database();
        let path = dir.path().join("traces.db");
        let large = (2 * DROP_APPENDED) as usize;
        append_unsynced(&path, large);
        pages.passed();
        assert!(
            resident(&path, 0, large as u64) < 0.1,
            "an unsynced large append stays: {:.2} resident",
            resident(&path, 0, large as u64)
        );
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), large);
        assert!(back.iter().all(|&b| b == 7), "the appended bytes read back whole");
    }

    #[test]
    fn a_large_append_leaves_the_page_cache_and_a_small_one_stays() {
        let (dir, mut pages) = empty_database();
        let path = dir.path().join("traces.db");
        let small = (DROP_APPENDED / 4) as usize;
        append(&path, small);
        pages.passed();
        assert!(resident(&path, 0, small as u64) > 0.9, "a small append is dropped");
        let large = (DROP_APPENDED + DROP_APPENDED / 2) as usize;
        append(&path, large);
        pages.passed();
        let end = (small + large) as u64;
        assert!(
            resident(&path, small as u64, end) < 0.1,
            "a large append stays: {:.2} resident",
            resident(&path, small as u64, end)
        );
        assert!(resident(&path, 0, small as u64) > 0.9, "pages before the append are dropped");
    }
}
