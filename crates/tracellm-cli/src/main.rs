//! `tracellm`: one binary that runs the whole TraceLLM stack.

mod admin_cmd;
mod common;
mod completions;
mod config;
mod config_cmd;
mod demo;
mod export;
mod monitor;
mod palette;
mod provider;
mod replay;
mod start;
mod trace;
mod tree;

use std::io::IsTerminal;

use clap::{CommandFactory, Parser, Subcommand};

/// Ingest allocates many short-lived strings and maps on several threads; mimalloc handles that
/// pattern markedly faster than the system allocator (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, asked for a plain block wherever the layout allows one, as Rust's own allocator asks
/// the system's `malloc`. The `mimalloc` crate asks for every block with its alignment
/// (`mi_malloc_aligned`), whose fast path covers blocks of up to 1 KB only: every larger one (a
/// span's document, a request's strings, a growing buffer) took mimalloc's generic aligned path.
/// Blocks from `mi_malloc` are aligned as C's `malloc` aligns them (16 bytes, or the block's size
/// below that), so an alignment of at most 16 and at most the size needs nothing more.
struct Mimalloc;

impl Mimalloc {
    /// mimalloc's plain functions give `layout` its alignment.
    fn plain(align: usize, size: usize) -> bool {
        align <= 16 && align <= size
    }
}

// SAFETY: every block comes from mimalloc and goes back to it (mi_free takes blocks of any of
// its functions); the alignment is mimalloc's aligned functions' to give where the plain ones'
// is not enough.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: as the trait requires of the caller, `layout` has a non-zero size.
        unsafe {
            if Self::plain(layout.align(), layout.size()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as in `alloc`.
        unsafe {
            if Self::plain(layout.align(), layout.size()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator with `layout`; `new_size` is non-zero.
        unsafe {
            if Self::plain(layout.align(), new_size) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc returns a thread's freed memory to the OS only when that thread allocates or frees
/// again: a worker that goes idle after a load keeps what it freed (tens of MB). Each runtime
/// thread collects when it parks, at most once a second, and when it ends.
pub(crate) fn collect_freed_memory(force: bool) {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    if !force
        && LAST.get().is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect works on the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

/// Unmaps the clean file pages the process holds: its code and read-only data, read from the
/// executable (and shared libraries) during a load, 14–16 MiB of an idle server's RSS after one
/// against 9–10 at start. The pages stay in the kernel's page cache, and the next use maps them
/// again (a minor fault, no read). Only private read-only mappings none of whose pages was ever
/// copied on write (smaps' `Anonymous: 0 kB`) are unmapped: their pages are exactly the file's.
/// Returns the bytes unmapped.
#[cfg(target_os = "linux")]
pub(crate) fn unmap_clean_file_pages() -> usize {
    use std::io::BufRead;
    let Ok(smaps) = std::fs::File::open("/proc/self/smaps") else { return 0 };
    // read a line at a time into one small buffer: the file is ~100 KB
    let mut smaps = std::io::BufReader::with_capacity(4096, smaps);
    let mut line = String::with_capacity(256);
    let mut unmapped = 0;
    // the current mapping, while it may be unmapped: start, length, resident bytes
    let mut candidate: Option<(usize, usize, usize)> = None;
    loop {
        line.clear();
        if !matches!(smaps.read_line(&mut line), Ok(n) if n > 0) {
            break;
        }
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // a mapping's header: range, permissions, offset, device, inode, path
            let perms = fields.next().unwrap_or("");
            let file = fields.nth(3).is_some_and(|path| path.starts_with('/'));
            candidate = match (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
                (Ok(start), Ok(end)) if file && (perms == "r-xp" || perms == "r--p") => {
                    Some((start, end - start, 0))
                }
                _ => None,
            };
            continue;
        }
        let Some((start, len, rss)) = candidate.as_mut() else { continue };
        let kb = fields.next().and_then(|v| v.parse::<usize>().ok());
        match first {
            "Rss:" => *rss = kb.unwrap_or(0) * 1024,
            "Anonymous:" => {
                if kb == Some(0) && *rss > 0 {
                    // SAFETY: the range is one whole mapping of this process, read-only and
                    // private, with no page of its own: dropping its pages loses nothing, and
                    // a later access maps the file's page again.
                    if unsafe { libc::madvise(*start as *mut _, *len, libc::MADV_DONTNEED) } == 0 {
                        unmapped += *rss;
                    }
                }
                candidate = None;
            }
            _ => {}
        }
    }
    unmapped
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn unmap_clean_file_pages() -> usize {
    0
}

/// A runtime worker parked at least this long had nothing to do: whatever it still holds is
/// what the load before left.
const IDLE_PARK: std::time::Duration = std::time::Duration::from_secs(5);

thread_local! {
    static PARKED_AT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// A runtime worker parks: collect what it freed (at most once a second, see above). That
/// collection leaves the pages it frees mapped for a while (mimalloc's purge delay, so that a
/// busy worker does not give pages back only to fault them in again), and an idle worker never
/// comes back to give them up.
pub(crate) fn worker_parks() {
    PARKED_AT.set(Some(std::time::Instant::now()));
    collect_freed_memory(false);
}

/// A runtime worker wakes: after a long idle park it hands everything it holds back to the OS
/// at once, its span compression state included, before the task that woke it (once per idle
/// spell). Under load workers park for milliseconds and this costs a clock read.
pub(crate) fn worker_unparks() {
    if PARKED_AT.take().is_some_and(|t| t.elapsed() >= IDLE_PARK) {
        tracellm_store::release_thread_state();
        collect_freed_memory(true);
    }
}

/// TraceLLM: local-first tracing for LLM applications and agents.
///
/// Every flag can also be set with its TRACELLM_* environment variable or in the config file
/// (~/.config/tracellm/config.toml, or --config); flags win over the environment, which wins
/// over the file.
#[derive(Debug, Parser)]
#[command(name = "tracellm", version, propagate_version = true)]
struct Cli {
    /// Config file to read instead of ~/.config/tracellm/config.toml.
    #[arg(long, global = true, env = "TRACELLM_CONFIG", value_name = "FILE", display_order = 899)]
    config: Option<std::path::PathBuf>,

    /// URL of the TraceLLM server the client commands talk to [default: http://127.0.0.1:8000]
    #[arg(long, global = true, env = "TRACELLM_ENDPOINT", value_name = "URL", display_order = 900)]
    endpoint: Option<String>,

    /// TraceLLM API key (tlm_sk_…) sent to the server
    #[arg(
        long,
        global = true,
        env = "TRACELLM_API_KEY",
        value_name = "KEY",
        hide_env_values = true,
        display_order = 901
    )]
    api_key: Option<String>,

    /// Print machine-readable JSON instead of text (trace, replay, export, demo, config)
    #[arg(long, global = true, display_order = 902)]
    json: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the API, the dashboard and the store, in the foreground (Ctrl-C stops).
    Start(start::StartArgs),
    /// Send a prompt to your LLM provider, stream the answer and record the trace.
    Trace(trace::TraceArgs),
    /// Show a recorded trace as a tree, walk it step by step, or run its LLM calls again.
    Replay(replay::ReplayArgs),
    /// Watch traces arrive live in a full-screen terminal dashboard.
    Monitor(monitor::MonitorArgs),
    /// Write traces to JSON, JSONL or CSV.
    Export(export::ExportArgs),
    /// Load realistic sample traces into the server.
    Demo(demo::DemoArgs),
    /// Create and list projects (each with its own API keys and data).
    #[command(subcommand)]
    Projects(admin_cmd::ProjectsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(admin_cmd::KeysCommand),
    /// Write or locate the config file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Print a shell completion script: tracellm completions bash > /etc/bash_completion.d/tracellm
    Completions(completions::CompletionsArgs),
}

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            let _ = Cli::command().print_help();
            return std::process::ExitCode::SUCCESS;
        }
        match palette::choose() {
            Ok(Some(args)) => {
                let argv = std::iter::once("tracellm".to_string()).chain(args);
                cli = Cli::parse_from(argv);
            }
            Ok(None) => return std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let file = match config::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match execute(cli, file) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<common::Reported>() {
            Some(common::Reported(code)) => std::process::ExitCode::from(*code),
            // The reader went away (`tracellm export | head`): nothing left to say.
            None if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
            {
                std::process::ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn execute(cli: Cli, file: config::FileConfig) -> anyhow::Result<()> {
    let Some(command) = cli.command else { return Ok(()) };
    if let Command::Start(args) = command {
        return start::run(args, file);
    }
    let g = common::Globals {
        endpoint: cli
            .endpoint
            .or_else(|| file.endpoint.clone())
            .unwrap_or_else(|| common::DEFAULT_ENDPOINT.into())
            .trim_end_matches('/')
            .to_string(),
        api_key: cli.api_key.or_else(|| file.api_key.clone()),
        json: cli.json,
        file,
        config_path: cli.config,
    };
    match command {
        Command::Start(_) => unreachable!("handled above"),
        Command::Trace(a) => trace::run(a, g),
        Command::Replay(a) => replay::run(a, g),
        Command::Monitor(a) => monitor::run(a, g),
        Command::Export(a) => export::run(a, g),
        Command::Demo(a) => demo::run(a, g),
        Command::Projects(c) => admin_cmd::projects(c, g),
        Command::Keys(c) => admin_cmd::keys(c, g),
        Command::Config(c) => config_cmd::run(c, g),
        Command::Completions(a) => completions::run(a, &mut Cli::command()),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The process's resident file pages, from /proc/self/status.
    fn rss_file_kb() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        line.split_ascii_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Unmapping the clean file pages takes the code read so far out of the resident set, and
    /// the code runs on (its pages map again as it runs).
    #[test]
    fn clean_file_pages_leave_the_resident_set_and_map_again() {
        // code and data read from the file: argument parsing, help text, the dashboard's files
        let help = <super::Cli as clap::CommandFactory>::command().render_long_help().to_string();
        assert!(help.contains("TraceLLM"));
        let before = rss_file_kb();
        let unmapped = super::unmap_clean_file_pages();
        let after = rss_file_kb();
        assert!(unmapped >= 1 << 20, "unmapped {unmapped} bytes");
        assert!(
            after * 1024 + unmapped / 2 <= before * 1024,
            "{before} kB before, {after} kB after"
        );
        let again = <super::Cli as clap::CommandFactory>::command().render_long_help().to_string();
        assert_eq!(again, help);
    }
}
