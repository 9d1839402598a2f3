//! `tracellm`: one binary that runs the whole TraceLLM stack.

mod config;
mod start;

use clap::{Parser, Subcommand};

/// Ingest allocates many short-lived strings and maps on several threads; mimalloc handles that
/// pattern markedly faster than the system allocator (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// TraceLLM: local-first tracing for LLM applications and agents.
///
/// Every flag can also be set with its TRACELLM_* environment variable or in the config file
/// (~/.config/tracellm/config.toml, or --config); flags win over the environment, which wins
/// over the file.
#[derive(Debug, Parser)]
#[command(name = "tracellm", version, propagate_version = true)]
struct Cli {
    /// Config file to read instead of ~/.config/tracellm/config.toml.
    #[arg(long, global = true, env = "TRACELLM_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the API, the dashboard and the store, in the foreground (Ctrl-C stops).
    Start(start::StartArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let file = match config::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Start(args)) => start::run(args, file),
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
