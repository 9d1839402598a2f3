//! `tracellm export`: traces to JSON, JSONL or CSV, page by page so memory stays bounded however
//! many traces there are.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use tracellm_client::Client;
use tracellm_core::TraceSummary;

use crate::common::{self, Globals};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON array of whole traces (spans included)
    Json,
    /// One whole trace per line
    Jsonl,
    /// One row per trace: the summary columns, for spreadsheets
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,

    /// File to write [default: standard output]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Only traces from this time on: RFC 3339, or a span back from now such as 24h or 7d
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only traces before this time: RFC 3339, or a span back from now
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Only traces with this status: success, error, retried or running (repeatable)
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,

    /// Only traces of this model
    #[arg(long)]
    pub model: Option<String>,

    /// Only traces of this project (the API key's project by default)
    #[arg(long)]
    pub project: Option<String>,

    /// JSON and JSONL: trace summaries (no spans) instead of whole traces
    #[arg(long)]
    pub summaries: bool,

    /// Stop after this many traces
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

pub const CSV_HEADER: &[&str] = &[
    "id",
    "timestamp",
    "name",
    "status",
    "model",
    "provider",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "tokens_estimated",
    "cost_usd",
    "retries",
    "span_count",
    "error_count",
    "session_id",
    "user_id",
    "tags",
    "failure_reason",
    "prompt_preview",
    "response_preview",
];

fn csv_row(t: &TraceSummary) -> Vec<String> {
    let opt = |o: Option<&str>| o.unwrap_or("").to_string();
    let num = |o: Option<f64>| o.map(fmt_number).unwrap_or_default();
    vec![
        t.id.clone(),
        t.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.name.clone(),
        t.status.as_str().to_string(),
        opt(t.model.as_deref()),
        opt(t.provider.as_deref()),
        num(t.latency_ms),
        t.tokens.prompt.to_string(),
        t.tokens.completion.to_string(),
        t.tokens.total.to_string(),
        t.tokens.estimated.to_string(),
        num(t.cost_usd),
        t.retries.to_string(),
        t.span_count.to_string(),
        t.error_count.to_string(),
        opt(t.session_id.as_deref()),
        opt(t.user_id.as_deref()),
        t.tags.join(";"),
        opt(t.failure_reason.as_deref()),
        opt(t.prompt_preview.as_deref()),
        opt(t.response_preview.as_deref()),
    ]
}

/// A float without binary noise: at most 10 decimals, trailing zeros dropped.
fn fmt_number(v: f64) -> String {
    let s = format!("{v:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".into() } else { s.to_string() }
}

pub fn run(args: ExportArgs, g: Globals) -> anyhow::Result<()> {
    common::runtime()?.block_on(run_async(args, g))
}

/// Where rows go: a file (written to a temporary name, renamed when complete) or stdout.
enum Sink {
    File { w: std::io::BufWriter<std::fs::File>, tmp: PathBuf, dest: PathBuf },
    Stdout(std::io::BufWriter<std::io::Stdout>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::File { w, .. } => w,
            Sink::Stdout(w) => w,
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::File { mut w, tmp, dest } => {
                w.flush()?;
                w.get_ref().sync_all()?;
                std::fs::rename(&tmp, &dest).with_context(|| {
                    format!("cannot rename {} to {}", tmp.display(), dest.display())
                })
            }
            Sink::Stdout(mut w) => Ok(w.flush()?),
        }
    }
}

async fn run_async(args: ExportArgs, g: Globals) -> anyhow::Result<()> {
    let client = g.client();
    let mut query: Vec<(String, String)> = vec![("limit".into(), "500".into())];
    if let Some(s) = &args.since {
        query.push(("since".into(), s.clone()));
    }
    if let Some(u) = &args.until {
        query.push(("until".into(), u.clone()));
    }
    for s in &args.status {
        query.push(("status".into(), s.clone()));
    }
    if let Some(m) = &args.model {
        query.push(("model".into(), m.clone()));
    }
    if let Some(p) = &args.project {
        query.push(("project".into(), p.clone()));
    }
    // Fail before creating any file when the server is away or the filters are wrong.
    let first = page(&client, &query, None).await?;

    let mut sink = match &args.output {
        Some(dest) => {
            let name = dest.file_name().context("-o needs a file name")?.to_string_lossy();
            let tmp = dest.with_file_name(format!(".{name}.partial"));
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            Sink::File { w: std::io::BufWriter::new(f), tmp, dest: dest.clone() }
        }
        None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout())),
    };
    let progress = if std::io::stderr().is_terminal() && !g.json {
        let total = estimate_total(&client, &args).await;
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n.min(args.limit.unwrap_or(u64::MAX))),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} traces {wide_bar} {per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    if args.format == Format::Csv {
        sink.writer().write_all(&csv_bytes(std::iter::once(
            CSV_HEADER.iter().map(|h| h.to_string()).collect(),
        ))?)?;
    }
    if args.format == Format::Json {
        sink.writer().write_all(b"[")?;
    }
    let mut written: u64 = 0;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut next = Some(first);
    while let Some(p) = next.take() {
        let cursor = p.next_cursor.clone();
        let rows: Vec<TraceSummary> =
            p.traces.into_iter().take((limit - written) as usize).collect();
        match args.format {
            Format::Csv => {
                sink.writer().write_all(&csv_bytes(rows.iter().map(csv_row))?)?;
                written += rows.len() as u64;
                progress.inc(rows.len() as u64);
            }
            Format::Json | Format::Jsonl => {
                // Whole traces are fetched a few at a time, in page order.
                let mut docs = futures::stream::iter(rows.into_iter().map(|t| {
                    let client = client.clone();
                    let summaries = args.summaries;
                    async move {
                        if summaries {
                            serde_json::to_vec(&t).map_err(anyhow::Error::from)
                        } else {
                            let full = client
                                .get_trace(&t.id)
                                .await
                                .with_context(|| format!("cannot read trace {}", t.id))?;
                            serde_json::to_vec(&full).map_err(anyhow::Error::from)
                        }
                    }
                }))
                .buffered(8);
                while let Some(doc) = docs.next().await {
                    let doc = doc?;
                    let w = sink.writer();
                    if args.format == Format::Json {
                        w.write_all(if written == 0 { b"\n" } else { b",\n" })?;
                        w.write_all(&doc)?;
                    } else {
                        w.write_all(&doc)?;
                        w.write_all(b"\n")?;
                    }
                    written += 1;
                    progress.inc(1);
                }
            }
        }
        if written >= limit {
            break;
        }
        if let Some(c) = cursor {
            next = Some(page(&client, &query, Some(&c)).await?);
        }
    }
    if args.format == Format::Json {
        sink.writer().write_all(if written == 0 { b"]\n" } else { b"\n]\n" })?;
    }
    progress.finish_and_clear();
    sink.finish()?;
    if let Some(dest) = &args.output {
        if g.json {
            println!("{}", serde_json::json!({"exported": written, "file": dest}));
        } else if std::io::stderr().is_terminal() {
            eprintln!("exported {written} traces to {}", dest.display());
        }
    }
    Ok(())
}

/// Records as CSV text (quoted where needed).
fn csv_bytes(records: impl Iterator<Item = Vec<String>>) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    for r in records {
        w.write_record(&r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {}", e.error()))
}

async fn page(
    client: &Client,
    query: &[(String, String)],
    cursor: Option<&str>,
) -> anyhow::Result<tracellm_core::api::TracePage> {
    let mut q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Some(c) = cursor {
        q.push(("cursor", c));
    }
    client.list_traces(&q).await.context("cannot list traces")
}

/// How many traces the export will hold, when the analytics route can tell (it filters by
/// time only).
async fn estimate_total(client: &Client, args: &ExportArgs) -> Option<u64> {
    if !args.status.is_empty() || args.model.is_some() {
        return None;
    }
    let mut q = Vec::new();
    if let Some(s) = &args.since {
        q.push(("since", s.as_str()));
    }
    if let Some(u) = &args.until {
        q.push(("until", u.as_str()));
    }
    client.analytics(&q).await.ok().map(|a| a.totals.traces)
}
