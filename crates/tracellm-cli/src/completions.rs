//! `tracellm completions SHELL`: the completion script of a shell, on stdout.

use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs, cmd: &mut clap::Command) -> anyhow::Result<()> {
    clap_complete::generate(args.shell, cmd, "tracellm", &mut std::io::stdout());
    Ok(())
}
