//! The `tracellm` client commands as users run them: the real binary, a real server, and the
//! OpenAI-compatible test server standing in for the LLM provider. One test binary, one module
//! per command.

mod common;
mod demo;
mod export;
mod help;
mod monitor;
mod replay;
mod trace;
