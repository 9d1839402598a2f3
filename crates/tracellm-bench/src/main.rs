//! `tracellm-bench`: drives a running TraceLLM with realistic agent traces and measures what
//! docs/BENCHMARKS.md reports. Bodies are built before the clock starts, so the figures measure
//! the server, not the generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
struct Cli {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// PID of the server, to report its resident memory.
    #[arg(long)]
    pid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Native JSON ingest of 6-span agent traces (~1.4 KB per span).
    Ingest {
        #[arg(long, default_value_t = 20_000)]
        traces: usize,
        /// Traces per request.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Id prefix, so that runs can add to the same store.
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Latency of GET /traces (newest page) and of a full-text search.
    Query {
        #[arg(long, default_value_t = 300)]
        iterations: usize,
    },
    /// Time from an OTLP/JSON ingest's 2xx until the trace is readable whole and found by
    /// search (run it beside a load to measure under load).
    Visibility {
        #[arg(long, default_value_t = 200)]
        iterations: usize,
    },
    /// OTLP/HTTP protobuf agent traces at a fixed rate (open loop): answer latency and RSS.
    Paced {
        /// Spans per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Spans per request (rounded up to whole 6-span traces).
        #[arg(long, default_value_t = 60)]
        batch: usize,
        /// Which traces: the bench's agent traces or otlp_load.py's.
        #[arg(long, value_enum, default_value = "agent")]
        traces: otlp::PacedTraces,
    },
    /// OTLP/HTTP protobuf agent traces as fast as the server takes them, built while sent (no
    /// memory for a pre-built load): fills a store to millions of spans.
    Flood {
        #[arg(long, default_value_t = 1_000_000)]
        spans: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        concurrency: usize,
        /// Varies trace ids and texts between runs adding to one store.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// otlp_load.py's traces (random trace ids, 1,000 sessions), built while sent, as fast as
    /// the server takes them for --seconds: spans/s every --every seconds as the store grows.
    Sustained {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 60)]
        every: u64,
    },
    /// One trace of --spans LLM spans sent over OTLP in requests of --batch, then GET
    /// /traces/{id}: time to first byte, to the whole answer, and the server's peak RSS.
    BigTrace {
        #[arg(long, default_value_t = 1_000)]
        spans: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 50)]
        iterations: usize,
    },
    /// Resident memory of --pid.
    Rss,
    /// Hours of steady use in minutes: OTLP/JSON ingest at a fixed rate, a query loop and
    /// WebSocket clients together, sampling the server's RSS, open file descriptors and query
    /// latencies; prints the drift from start to end (needs --pid).
    Soak {
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        /// Traces per second (6 spans each, ~8 KB of OTLP/JSON).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 4)]
        ws_clients: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 120)]
        sample_every: u64,
    },
}

mod otlp;
mod soak;

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A deterministic vocabulary so full-text search has realistic words to find.
struct Words {
    vocab: Vec<String>,
    state: u64,
}

impl Words {
    fn new(seed: u64) -> Self {
        const SYL: [&str; 24] = [
            "ka", "lo", "mi", "ra", "te", "su", "no", "vi", "ze", "pa", "qu", "dor", "lin", "mar",
            "tes", "fol", "gra", "hen", "jus", "bel", "cor", "dan", "el", "tri",
        ];
        let mut vocab = Vec::with_capacity(4096);
        for a in SYL {
            for b in SYL {
                for c in ["", "n", "s", "ra", "te", "lo", "ment"] {
                    vocab.push(format!("{a}{b}{c}"));
                }
            }
        }
        Words { vocab, state: seed.wrapping_mul(6364136223846793005).wrapping_add(1) }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn text(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 16);
        while s.len() < bytes {
            let i = (self.next() % self.vocab.len() as u64) as usize;
            s.push_str(&self.vocab[i]);
            s.push(' ');
        }
        s
    }
}

/// One agent run: a root, three LLM calls and two tool calls, about 1.4 KB per span.
fn agent_trace(w: &mut Words, id: &str, start_ms: i64) -> Value {
    let t = |ms: i64| start_ms + ms;
    let mut spans = vec![json!({"id": "root", "name": "support-agent", "kind": "agent",
        "start_time": t(0), "end_time": t(2400), "input": w.text(700), "output": w.text(600),
        "attributes": {"agent.version": "1.4.2"}})];
    for i in 0..3 {
        spans.push(json!({"id": format!("llm{i}"), "parent_id": "root", "name": "openai.chat", "kind": "llm",
            "model": if i == 1 { "gpt-4o-mini" } else { "gpt-4o" }, "provider": "openai",
            "start_time": t(100 + i * 700), "end_time": t(700 + i * 700),
            "input": {"messages": [{"role": "system", "content": w.text(150)}, {"role": "user", "content": w.text(500)}]},
            "output": {"messages": [{"role": "assistant", "content": w.text(300)}]},
            "tokens": {"prompt": 180 + i, "completion": 90 + i}, "time_to_first_token_ms": 120.5}));
    }
    for i in 0..2 {
        spans.push(json!({"id": format!("tool{i}"), "parent_id": "root", "name": "search_docs", "kind": "tool",
            "start_time": t(700 + i * 700), "end_time": t(790 + i * 700),
            "input": {"query": w.text(300)}, "output": {"documents": [w.text(500), w.text(450)]}}));
    }
    json!({"id": id, "name": "support-agent", "session_id": format!("sess-{}", w.next() % 500),
        "user_id": format!("user-{}", w.next() % 100), "tags": ["bench", "prod"], "spans": spans})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn ingest(
    cli: &Cli,
    traces: usize,
    batch: usize,
    concurrency: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    let mut w = Words::new(traces as u64 ^ prefix.len() as u64);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let mut bodies = Vec::with_capacity(traces.div_ceil(batch));
    let mut bytes = 0usize;
    for chunk in 0..traces.div_ceil(batch) {
        let docs: Vec<Value> = (chunk * batch..((chunk + 1) * batch).min(traces))
            .map(|i| {
                agent_trace(&mut w, &format!("{prefix}-{i}"), now_ms - (traces - i) as i64 * 3)
            })
            .collect();
        let body = serde_json::to_vec(&json!({"traces": docs}))?;
        bytes += body.len();
        bodies.push(body);
    }
    let spans = traces * 6;
    println!(
        "prepared {traces} traces ({spans} spans, {:.0} bytes/span) in {} requests",
        bytes as f64 / spans as f64,
        bodies.len()
    );
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let peak_rss = Arc::new(std::sync::Mutex::new(0f64));
    let sampler = cli.pid.map(|pid| {
        let peak = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_mib(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(r);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (bodies, next, http) = (Arc::clone(&bodies), Arc::clone(&next), http.clone());
        let url = format!("{}/traces", cli.url);
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut retried = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                loop {
                    let t0 = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let _ = resp.bytes().await;
                    if status == 202 {
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    if status == 429 || status == 503 {
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    anyhow::bail!("ingest answered {status}");
                }
            }
            Ok::<_, anyhow::Error>((lat, retried))
        }));
    }
    let mut lat = Vec::new();
    let mut retried = 0;
    for w in workers {
        let (l, r) = w.await??;
        lat.extend(l);
        retried += r;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(s) = sampler {
        s.abort();
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "ingest: {spans} spans in {secs:.2} s = {:.0} spans/s ({:.0} traces/s), {retried} retried (429/503), 0 errors",
        spans as f64 / secs,
        traces as f64 / secs
    );
    println!(
        "ingest request latency ({batch} traces/request): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    if cli.pid.is_some() {
        println!("server peak RSS during ingest: {:.1} MiB", *peak_rss.lock().unwrap());
    }
    // durable and searchable: every trace is there and a word of the last one finds it
    let last = format!("{prefix}-{}", traces - 1);
    let t: Value = http.get(format!("{}/traces/{last}", cli.url)).send().await?.json().await?;
    if t["span_count"] != 6 {
        bail!("last trace not stored whole: {t}");
    }
    let word = t["spans"][0]["input"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let found: Value = http
        .get(format!("{}/traces", cli.url))
        .query(&[("q", word.as_str()), ("limit", "500")])
        .send()
        .await?
        .json()
        .await?;
    let hit = found["traces"].as_array().is_some_and(|a| !a.is_empty());
    println!(
        "after ingest: last trace complete (6 spans), search for {word:?} finds {}",
        if hit { "matches" } else { "NOTHING" }
    );
    Ok(())
}

async fn query(cli: &Cli, iterations: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let info: Value = http.get(format!("{}/stats", cli.url)).send().await?.json().await?;
    println!("store holds {} traces, {} spans", info["traces"], info["spans"]);
    let sample: Value =
        http.get(format!("{}/traces?limit=1", cli.url)).send().await?.json().await?;
    let id = sample["traces"][0]["id"].as_str().context("store is empty")?.to_string();
    let full: Value = http.get(format!("{}/traces/{id}", cli.url)).send().await?.json().await?;
    let word = full["spans"][1]["output"]["messages"][0]["content"]
        .as_str()
        .or(full["spans"][0]["input"].as_str())
        .unwrap_or("")
        .split_whitespace()
        .nth(3)
        .unwrap_or("x")
        .to_string();
    // a prefix a user might type of it: the terms it starts are many, and common
    let stem: String = word.chars().take(3).collect();
    let mut cases: Vec<(String, String)> = vec![
        ("GET /traces (newest page of 50)".into(), format!("{}/traces", cli.url)),
        ("GET /traces?status=error".into(), format!("{}/traces?status=error", cli.url)),
        ("GET /traces?model=gpt-4o&limit=50".into(), format!("{}/traces?model=gpt-4o", cli.url)),
        (
            format!("GET /traces?q={word} (full-text, top 50)"),
            format!("{}/traces?q={word}", cli.url),
        ),
        (
            format!("GET /traces?q={stem}* (prefix, top 50)"),
            format!("{}/traces?q={stem}*", cli.url),
        ),
        ("GET /traces/{id} (6 spans)".into(), format!("{}/traces/{id}", cli.url)),
        ("GET /analytics?since=24h".into(), format!("{}/analytics?since=24h", cli.url)),
        ("GET /analytics (all time)".into(), format!("{}/analytics", cli.url)),
    ];
    let newest: Value = http.get(format!("{}/traces", cli.url)).send().await?.json().await?;
    let newest = newest["traces"].as_array().cloned().unwrap_or_default();
    for key in ["session_id", "user_id"] {
        if let Some(v) = newest.iter().find_map(|t| t[key].as_str()) {
            cases.insert(
                3,
                (format!("GET /traces?{key}=…"), format!("{}/traces?{key}={v}", cli.url)),
            );
        }
    }
    for (name, url) in cases {
        let mut lat = Vec::with_capacity(iterations);
        let n = if name.starts_with("GET /analytics") { iterations.min(100) } else { iterations };
        for _ in 0..n {
            let t0 = Instant::now();
            let resp = http.get(&url).send().await?;
            let ok = resp.status().is_success();
            let _ = resp.bytes().await?;
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            if !ok {
                bail!("{name} failed");
            }
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "{name}: p50 {:.2} ms, p95 {:.2} ms ({n} requests)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.95)
        );
    }
    Ok(())
}

fn otlp_json_trace(trace_id: &str, word: &str, now_ns: u128) -> Value {
    let span = |id: &str, parent: &str, name: &str, kind: &str, text: String| {
        json!({"traceId": trace_id, "spanId": id, "parentSpanId": parent, "name": name,
            "startTimeUnixNano": (now_ns - 2_000_000_000).to_string(), "endTimeUnixNano": now_ns.to_string(),
            "attributes": [
                {"key": "openinference.span.kind", "value": {"stringValue": kind}},
                {"key": "input.value", "value": {"stringValue": text}},
                {"key": "llm.model_name", "value": {"stringValue": "gpt-4o"}}]})
    };
    let mut w = Words::new(now_ns as u64);
    let mut spans = Vec::with_capacity(6);
    for i in 1..6 {
        spans.push(span(
            &format!("{i:016x}"),
            "0000000000000100",
            "ChatCompletion",
            "LLM",
            w.text(1200),
        ));
    }
    spans.push(span(
        "0000000000000100",
        "",
        "agent.run",
        "AGENT",
        format!("{word} {}", w.text(1200)),
    ));
    json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
}

async fn visibility(cli: &Cli, iterations: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut to_get = Vec::with_capacity(iterations);
    let mut to_search = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let trace_id = format!("{:032x}", now ^ ((i as u128) << 64));
        let word = format!("probe{now}");
        let body = serde_json::to_vec(&otlp_json_trace(&trace_id, &word, now))?;
        let resp = http
            .post(format!("{}/v1/traces", cli.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("ingest answered {}", resp.status());
        }
        let acked = Instant::now();
        loop {
            let r = http.get(format!("{}/traces/{trace_id}", cli.url)).send().await?;
            if r.status().is_success() && r.json::<Value>().await?["span_count"] == 6 {
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("trace {trace_id} not visible 10 s after its 2xx");
            }
        }
        to_get.push(acked.elapsed().as_secs_f64() * 1000.0);
        loop {
            let r: Value = http
                .get(format!("{}/traces", cli.url))
                .query(&[("q", word.as_str())])
                .send()
                .await?
                .json()
                .await?;
            if r["traces"].as_array().is_some_and(|a| a.len() == 1) {
                break;
            }
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("trace {trace_id} not searchable 10 s after its 2xx");
            }
        }
        to_search.push(acked.elapsed().as_secs_f64() * 1000.0);
    }
    to_get.sort_by(f64::total_cmp);
    to_search.sort_by(f64::total_cmp);
    println!(
        "2xx -> complete in GET /traces/{{id}}: p50 {:.2} ms, p99 {:.2} ms; 2xx -> found by search: p50 {:.2} ms, p99 {:.2} ms ({iterations} traces)",
        percentile(&to_get, 0.5),
        percentile(&to_get, 0.99),
        percentile(&to_search, 0.5),
        percentile(&to_search, 0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Ingest { traces, batch, concurrency, prefix } => {
            ingest(&cli, *traces, *batch, *concurrency, prefix).await
        }
        Cmd::Query { iterations } => query(&cli, *iterations).await,
        Cmd::Visibility { iterations } => visibility(&cli, *iterations).await,
        Cmd::Paced { rate, seconds, batch, traces } => {
            otlp::paced(&cli.url, cli.pid, *rate, *seconds, *batch, *traces).await
        }
        Cmd::Flood { spans, batch, concurrency, seed } => {
            otlp::flood(&cli.url, *spans, *batch, *concurrency, *seed).await
        }
        Cmd::Sustained { seconds, batch, concurrency, every } => {
            otlp::sustained(&cli.url, cli.pid, *seconds, *batch, *concurrency, *every).await
        }
        Cmd::BigTrace { spans, batch, iterations } => {
            otlp::big_trace(&cli.url, cli.pid, *spans, *batch, *iterations).await
        }
        Cmd::Soak { seconds, rate, ws_clients, sample_every } => {
            soak::run(
                &cli.url,
                cli.pid.context("--pid is required")?,
                *seconds,
                *rate,
                *ws_clients,
                *sample_every,
            )
            .await
        }
        Cmd::Rss => {
            let pid = cli.pid.context("--pid is required")?;
            println!("server RSS: {:.1} MiB", rss_mib(pid).context("no such process")?);
            Ok(())
        }
    }
}
