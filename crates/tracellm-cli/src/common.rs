//! What the client commands share: the server connection, the local store used when no server
//! runs, terminal styling and number formats.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use tracellm_client::{Client, ClientError};
use tracellm_core::{NormalizeOptions, PriceTable, Trace};
use tracellm_store::{SqliteOptions, Store};

use crate::config::FileConfig;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8000";

/// Global settings of the client commands, after flags, environment and file are layered.
#[derive(Debug)]
pub struct Globals {
    pub endpoint: String,
    pub api_key: Option<String>,
    pub json: bool,
    pub file: FileConfig,
    pub config_path: Option<PathBuf>,
}

impl Globals {
    pub fn client(&self) -> Client {
        let c = Client::new(self.endpoint.clone());
        match &self.api_key {
            Some(k) => c.with_api_key(k.clone()),
            None => c,
        }
    }
}

/// Where the embedded store lives, for commands that work without a server.
#[derive(Debug, Clone, Default, Args)]
pub struct LocalArgs {
    /// Data directory whose store is used when no server answers at --endpoint [default: ~/.tracellm]
    #[arg(long, env = "TRACELLM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl LocalArgs {
    /// `sqlite://…` of the store `tracellm start` would open with the same settings.
    pub fn store_url(&self, file: &FileConfig) -> String {
        if let Some(s) = std::env::var("TRACELLM_STORE").ok().or_else(|| file.store.clone()) {
            return s;
        }
        let dir = self
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| home_dir().join(".tracellm"));
        format!("sqlite://{}", dir.join("traces.db").display())
    }

    pub async fn open(&self, file: &FileConfig) -> anyhow::Result<(Arc<dyn Store>, String)> {
        let url = self.store_url(file);
        let store = tracellm_store::open(&url, SqliteOptions::default())
            .await
            .with_context(|| format!("cannot open the local store {url}"))?;
        Ok((store, url))
    }
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// Where a trace was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Through the server at this URL.
    Server(String),
    /// Straight into the store at this URL: no server answered.
    Local(String),
}

/// Records one native trace document through the server, or, when no server answers, into the
/// local store (normalized exactly as the server would). Returns the stored trace.
pub async fn record(
    g: &Globals,
    local: &LocalArgs,
    doc: Value,
) -> anyhow::Result<(Trace, Recorded)> {
    let client = g.client();
    match client.ingest(&doc).await {
        Ok(acc) => {
            let id = acc.ids.first().cloned().context("the server accepted no trace")?;
            let t = client.get_trace(&id).await.context("cannot read back the recorded trace")?;
            Ok((t, Recorded::Server(client.base_url().to_string())))
        }
        Err(ClientError::Unreachable { .. }) => {
            let trace = tracellm_core::normalize_trace(
                doc,
                "default",
                &PriceTable::builtin(),
                &NormalizeOptions::default(),
            )
            .context("invalid trace")?;
            let (store, url) = local.open(&g.file).await?;
            let res = store.ingest(vec![trace.clone()]).await;
            let _ = store.close().await;
            res.with_context(|| format!("cannot write to {url}"))?;
            Ok((trace, Recorded::Local(url)))
        }
        Err(e) => Err(anyhow::Error::new(e).context("the server refused the trace")),
    }
}

/// The trace `id` from the server, or from the local store when no server answers.
pub async fn fetch_trace(g: &Globals, local: &LocalArgs, id: &str) -> anyhow::Result<Trace> {
    let client = g.client();
    match client.get_trace(id).await {
        Ok(t) => Ok(t),
        Err(ClientError::Unreachable { .. }) => {
            let (store, url) = local.open(&g.file).await?;
            let t = store.get_trace("default", id).await;
            let _ = store.close().await;
            t.with_context(|| format!("cannot read {url}"))?.with_context(|| {
                format!("no trace {id:?} in {url} (and no server answers at {})", g.endpoint)
            })
        }
        Err(ClientError::Api { status: 404, .. }) => {
            anyhow::bail!("no trace {id:?} at {}", g.endpoint)
        }
        Err(e) => Err(e.into()),
    }
}

/// An error already explained to the user; the process exits with this code.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Reported {}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// ANSI styling, on only when the output is a terminal and NO_COLOR is unset.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    pub on: bool,
}

impl Paint {
    pub fn stdout() -> Paint {
        Paint { on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() }
    }

    pub fn stderr() -> Paint {
        Paint { on: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() }
    }

    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    }
    pub fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
    pub fn cyan(&self, s: &str) -> String {
        self.wrap("36", s)
    }
    pub fn magenta(&self, s: &str) -> String {
        self.wrap("35", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
}

/// `1.24s` for a whole trace.
pub fn fmt_secs(ms: f64) -> String {
    format!("{:.2}s", ms / 1000.0)
}

/// `850ms`, `1.24s`, `2m03s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{}ms", ms.round() as u64)
    } else if ms < 60_000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `$0.00187`; `-` when the price is unknown.
pub fn fmt_cost(c: Option<f64>) -> String {
    match c {
        None => "-".into(),
        Some(0.0) => "$0".into(),
        Some(c) if c < 0.01 => format!("${c:.5}"),
        Some(c) => format!("${c:.4}"),
    }
}

/// Display width of text, counting every char as one column (good enough for the tree).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// The first `max` characters of a one-line rendering of `s`.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    tracellm_core::model::preview(&flat, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_secs(1240.0), "1.24s");
        assert_eq!(fmt_ms(850.4), "850ms");
        assert_eq!(fmt_ms(1240.0), "1.24s");
        assert_eq!(fmt_ms(123_000.0), "2m03s");
        assert_eq!(fmt_cost(Some(0.00187)), "$0.00187");
        assert_eq!(fmt_cost(None), "-");
        assert_eq!(one_line("a\n  b", 10), "a b");
    }
}
