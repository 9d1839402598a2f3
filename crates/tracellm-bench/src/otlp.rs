//! OTLP/HTTP protobuf workloads that the shared generator (`../shared/bench/otlp_load.py`, which
//! sends as fast as it can) does not cover: ingest at a fixed rate, to read answer latency and
//! memory at a given load, and one very big trace, to read how it is stored and served.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;

use crate::{Words, percentile, rss_mib};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(key: &str, value: String) -> KeyValue {
    kv(key, any_value::Value::StringValue(value))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn span(
    trace_id: [u8; 16],
    id: u64,
    parent: u64,
    name: &str,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 { Vec::new() } else { parent.to_be_bytes().to_vec() },
        name: name.into(),
        kind: 1,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end_ns,
        attributes,
        status: Some(Status { code: status::StatusCode::Ok as i32, ..Default::default() }),
        ..Default::default()
    }
}

/// An LLM call in the OpenInference convention, as `otlp_load.py` sends them (~1.4 KB).
fn llm_span(w: &mut Words, trace_id: [u8; 16], id: u64, parent: u64, start_ns: u64) -> Span {
    let prompt = 100 + (w.next() % 60) as i64;
    let completion = 50 + (w.next() % 40) as i64;
    span(
        trace_id,
        id,
        parent,
        "ChatCompletion",
        start_ns,
        start_ns + 400_000_000,
        vec![
            s("openinference.span.kind", "LLM".into()),
            s("llm.model_name", "gpt-4o-mini".into()),
            s("llm.provider", "openai".into()),
            s("llm.input_messages.0.message.role", "user".into()),
            s("llm.input_messages.0.message.content", w.text(700)),
            s("llm.output_messages.0.message.role", "assistant".into()),
            s("llm.output_messages.0.message.content", w.text(400)),
            i("llm.token_count.prompt", prompt),
            i("llm.token_count.completion", completion),
            i("llm.token_count.total", prompt + completion),
        ],
    )
}

/// The root of an agent run in the OpenInference convention, in one of 1,000 sessions and for
/// one of 200 users (as otlp_load.py's sessions: random to the session index).
fn agent_span(w: &mut Words, trace_id: [u8; 16], id: u64, start_ns: u64, dur_ns: u64) -> Span {
    span(
        trace_id,
        id,
        0,
        "agent.run",
        start_ns,
        start_ns + dur_ns,
        vec![
            s("openinference.span.kind", "AGENT".into()),
            s("session.id", format!("session-{}", w.next() % 1000)),
            s("user.id", format!("user-{}", w.next() % 200)),
            s("input.value", w.text(300)),
            s("output.value", w.text(300)),
        ],
    )
}

/// An OTLP/HTTP protobuf export of `body` to `endpoint`.
fn post(http: &reqwest::Client, endpoint: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    http.post(endpoint).header("content-type", "application/x-protobuf").body(body)
}

/// Posts `body` until it is taken, waiting `first` after a 429 or 503 and twice as long after
/// each next one, up to `most` (as an exporter backs off); any other answer is an error.
/// Returns how many times it was turned away.
async fn post_until_taken(
    http: &reqwest::Client,
    endpoint: &str,
    body: Vec<u8>,
    first: Duration,
    most: Duration,
) -> anyhow::Result<usize> {
    let mut wait = first;
    let mut refused = 0;
    loop {
        let r = post(http, endpoint, body.clone()).send().await?;
        match r.status().as_u16() {
            200..=299 => return Ok(refused),
            429 | 503 => {
                refused += 1;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(most);
            }
            st => bail!("ingest answered {st}: {}", r.text().await?),
        }
    }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "tracellm-bench".into())],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "bench".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Samples the RSS of `pid` every 10 ms until dropped; `peak()` is the highest seen.
struct RssPeak {
    peak: Arc<Mutex<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    fn start(pid: Option<u32>) -> RssPeak {
        let peak = Arc::new(Mutex::new(0f64));
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            loop {
                if let Some(r) = rss_mib(pid) {
                    let mut m = p.lock().unwrap();
                    *m = m.max(r);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssPeak { peak, task }
    }

    fn peak(self) -> f64 {
        self.task.abort();
        *self.peak.lock().unwrap()
    }
}

/// What `paced` sends.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PacedTraces {
    /// A root and five LLM calls, texts drawn uniformly from 4,096 made-up words (few repeats).
    Agent,
    /// `otlp_load.py`'s traces: random trace ids, 1,000 sessions, its ninety-word vocabulary.
    Load,
}

/// `batch` spans of 6-span agent traces, as one OTLP request.
fn agent_request(w: &mut Words, trace_no: &mut u64, batch: usize) -> (Vec<u8>, usize) {
    let mut spans = Vec::with_capacity(batch + 6);
    while spans.len() < batch {
        let tid = (u128::from(*trace_no) | (u128::from(now_ns()) << 64)).to_be_bytes();
        let root = *trace_no << 8;
        let start = now_ns() - 3_000_000_000;
        spans.push(agent_span(w, tid, root, start, 2_500_000_000));
        for c in 1..6u64 {
            spans.push(llm_span(w, tid, root + c, root, start + c * 400_000_000));
        }
        *trace_no += 1;
    }
    let n = spans.len();
    (request(spans), n)
}

/// As fast as the server takes them: `concurrency` senders, each building its next request
/// while the others wait for answers, until `total` spans are acknowledged.
pub async fn flood(
    url: &str,
    total: usize,
    batch: usize,
    concurrency: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let endpoint = format!("{url}/v1/traces");
    let http = reqwest::Client::new();
    let left = Arc::new(std::sync::atomic::AtomicI64::new(total as i64));
    let started = Instant::now();
    let mut workers = Vec::new();
    for k in 0..concurrency {
        let (http, endpoint, left) = (http.clone(), endpoint.clone(), Arc::clone(&left));
        workers.push(tokio::spawn(async move {
            let mut w = Words::new(seed ^ ((k as u64 + 1) * 0x9e37_79b9));
            let mut trace_no = (seed << 24) | ((k as u64) << 40);
            let mut retried = 0usize;
            while left.fetch_sub(batch as i64, std::sync::atomic::Ordering::Relaxed) > 0 {
                let (body, _) = agent_request(&mut w, &mut trace_no, batch);
                let fixed = Duration::from_millis(50);
                retried += post_until_taken(&http, &endpoint, body, fixed, fixed).await?;
            }
            Ok::<_, anyhow::Error>(retried)
        }));
    }
    let mut retried = 0;
    for w in workers {
        retried += w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "flood OTLP/HTTP protobuf: {total} spans in {secs:.1} s = {:.0} spans/s \
         ({concurrency} senders, ~{batch} spans/request, {retried} retried after 429/503)",
        total as f64 / secs
    );
    Ok(())
}

/// `otlp_load.py`'s vocabulary: a support desk's ninety words.
const LOAD_WORDS: &str = "the agent should retrieve relevant context from the knowledge base before \
    answering customer question about billing invoice refund policy shipping delay account \
    password reset subscription plan upgrade downgrade latency error timeout database index query \
    summarize explain compare recommend step carefully concise answer citation source document \
    paragraph section user assistant system tool call result json schema value temperature model \
    token budget context window retrieval augmented generation vector";
const LOAD_MODELS: [&str; 4] =
    ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b-instruct"];
const LOAD_TOOLS: [&str; 5] =
    ["search_knowledge_base", "get_order_status", "run_sql", "fetch_url", "calculator"];

fn load_text(w: &mut Words, vocab: &[&str], bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 24);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(vocab[(w.next() % vocab.len() as u64) as usize]);
    }
    s.truncate(bytes);
    s
}

/// `batch` spans of `otlp_load.py`'s traces (whole traces, started a minute ago), as one OTLP
/// request.
fn load_request(w: &mut Words, vocab: &[&str], batch: usize) -> (Vec<u8>, usize) {
    let mut spans = Vec::with_capacity(batch + 6);
    while spans.len() < batch {
        load_trace(w, vocab, now_ns() - 60_000_000_000, &mut spans);
    }
    let n = spans.len();
    (request(spans), n)
}

/// One trace as `otlp_load.py` builds it: a random (W3C) trace id, an AGENT root in one of 1,000
/// sessions, and LLM, TOOL, LLM, TOOL, LLM children in the OpenInference convention.
fn load_trace(w: &mut Words, vocab: &[&str], start_ns: u64, out: &mut Vec<Span>) {
    let trace_id = (u128::from(w.next()) << 64 | u128::from(w.next())).to_be_bytes();
    let root = w.next() | 1;
    let model = LOAD_MODELS[(w.next() % 4) as usize];
    let mut t = start_ns + 1_000_000;
    let first = out.len();
    out.push(Span::default()); // the root, filled in once its end is known
    for llm in [true, false, true, false, true] {
        let id = w.next() | 1;
        let dur = if llm { 200 + w.next() % 1300 } else { 5 + w.next() % 115 } * 1_000_000;
        let (name, attributes) = if llm {
            let prompt = 100 + (w.next() % 61) as i64;
            let completion = 50 + (w.next() % 41) as i64;
            let attributes = vec![
                s("openinference.span.kind", "LLM".into()),
                s("llm.model_name", model.into()),
                s("llm.provider", "openai".into()),
                s("llm.input_messages.0.message.role", "user".into()),
                s("llm.input_messages.0.message.content", load_text(w, vocab, 500)),
                s("llm.output_messages.0.message.role", "assistant".into()),
                s("llm.output_messages.0.message.content", load_text(w, vocab, 300)),
                i("llm.token_count.prompt", prompt),
                i("llm.token_count.completion", completion),
                i("llm.token_count.total", prompt + completion),
            ];
            ("ChatCompletion", attributes)
        } else {
            let tool = LOAD_TOOLS[(w.next() % 5) as usize];
            let query = load_text(w, vocab, 80);
            let attributes = vec![
                s("openinference.span.kind", "TOOL".into()),
                s("tool.name", tool.into()),
                s("input.value", format!("{{\"query\": \"{query}\"}}")),
                s("output.value", load_text(w, vocab, 200)),
            ];
            (tool, attributes)
        };
        let mut child = span(trace_id, id, root, name, t, t + dur, attributes);
        child.kind = if llm { 3 } else { 1 }; // CLIENT / INTERNAL
        out.push(child);
        t += dur + 1_000_000;
    }
    out[first] = span(
        trace_id,
        root,
        0,
        "agent.run",
        start_ns,
        t,
        vec![
            s("openinference.span.kind", "AGENT".into()),
            s("input.value", load_text(w, vocab, 200)),
            s("output.value", load_text(w, vocab, 200)),
            s("session.id", format!("session-{}", w.next() % 1000)),
        ],
    );
}

/// `otlp_load.py`'s traces, built while sent, as fast as the server takes them for `seconds`:
/// the ingest rate minute by minute as the store grows (the shared generator pre-builds every
/// request in memory, which bounds it to a few million spans).
pub async fn sustained(
    url: &str,
    pid: Option<u32>,
    seconds: u64,
    batch: usize,
    concurrency: usize,
    every: u64,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let endpoint = format!("{url}/v1/traces");
    let http = reqwest::Client::new();
    let acked = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let vocab: Arc<Vec<&'static str>> = Arc::new(LOAD_WORDS.split_whitespace().collect());
    let mut workers = Vec::new();
    for k in 0..concurrency {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        let (acked, throttled, vocab) =
            (Arc::clone(&acked), Arc::clone(&throttled), Arc::clone(&vocab));
        workers.push(tokio::spawn(async move {
            let mut w = Words::new(now_ns() ^ ((k as u64 + 1) * 0x9e37_79b9));
            while Instant::now() < deadline {
                let (body, n) = load_request(&mut w, &vocab, batch);
                let (first, most) = (Duration::from_millis(10), Duration::from_secs(1));
                let retried = post_until_taken(&http, &endpoint, body, first, most).await?;
                throttled.fetch_add(retried as u64, Relaxed);
                acked.fetch_add(n as u64, Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut last = 0u64;
    let mut slowest = f64::INFINITY;
    let mut tick = started;
    while tick + Duration::from_secs(every) <= deadline {
        tick += Duration::from_secs(every);
        tokio::time::sleep_until(tick.into()).await;
        let now = acked.load(Relaxed);
        let rate = (now - last) as f64 / every as f64;
        slowest = slowest.min(rate);
        let rss =
            pid.and_then(rss_mib).map_or(String::new(), |r| format!(", server RSS {r:.0} MiB"));
        println!(
            "{:>4} s: {rate:.0} spans/s over the last {every} s, {now} spans stored{rss}",
            (tick - started).as_secs()
        );
        last = now;
    }
    for w in workers {
        w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = acked.load(Relaxed);
    let slowest = if slowest.is_finite() {
        format!(", slowest {every} s {slowest:.0} spans/s")
    } else {
        String::new()
    };
    println!(
        "sustained OTLP/HTTP protobuf (otlp_load.py's traces): {total} spans in {secs:.1} s = {:.0} \
         spans/s{slowest} ({concurrency} senders, ~{batch} spans/request, {} answers 429/503 \
         retried, 0 errors)",
        total as f64 / secs,
        throttled.load(Relaxed)
    );
    Ok(())
}

/// `traces` at `rate` spans per second for `seconds`, in requests of `batch` spans sent on
/// schedule whatever the answers take (an open loop, as many independent exporters would): the
/// answer latency at that load, and the server's RSS.
pub async fn paced(
    url: &str,
    pid: Option<u32>,
    rate: u32,
    seconds: u64,
    batch: usize,
    traces: PacedTraces,
) -> anyhow::Result<()> {
    let endpoint = format!("{url}/v1/traces");
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let vocab: Vec<&'static str> = LOAD_WORDS.split_whitespace().collect();
    let interval = Duration::from_secs_f64(batch as f64 / f64::from(rate.max(1)));
    let total = (u64::from(rate) * seconds).div_ceil(batch as u64);
    let rss = RssPeak::start(pid);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, f64, usize)>();
    let mut w = Words::new(u64::from(rate) ^ seconds);
    let mut trace_no: u64 = 1;
    let mut late = 0usize;
    let started = Instant::now();
    for k in 0..total {
        let due = started + interval.mul_f64(k as f64);
        // bodies are built just before they are due (a few hundred microseconds each)
        let (body, n) = match traces {
            PacedTraces::Agent => agent_request(&mut w, &mut trace_no, batch),
            PacedTraces::Load => load_request(&mut w, &vocab, batch),
        };
        let now = Instant::now();
        if now < due {
            tokio::time::sleep_until(due.into()).await;
        } else if now - due > Duration::from_millis(5) {
            late += 1;
        }
        let (http, endpoint, tx) = (http.clone(), endpoint.clone(), tx.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let status = match post(&http, &endpoint, body).send().await {
                Ok(r) => {
                    let st = r.status().as_u16();
                    let _ = r.bytes().await;
                    st
                }
                Err(_) => 0,
            };
            let _ = tx.send((status, t0.elapsed().as_secs_f64() * 1000.0, n));
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(total as usize);
    let mut refused = 0usize;
    let mut spans = 0usize;
    while let Some((status, ms, n)) = rx.recv().await {
        if (200..300).contains(&status) {
            lat.push(ms);
            spans += n;
        } else {
            refused += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let peak = rss.peak();
    lat.sort_by(f64::total_cmp);
    let shape = match traces {
        PacedTraces::Agent => "agent traces",
        PacedTraces::Load => "otlp_load.py's traces",
    };
    println!(
        "paced OTLP/HTTP protobuf ({shape}): {rate} spans/s asked, {:.0} spans/s acknowledged over {secs:.1} s \
         ({} requests of ~{batch} spans, {refused} not 2xx, {late} sent over 5 ms late)",
        spans as f64 / secs,
        lat.len()
    );
    println!(
        "answer latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    if pid.is_some() {
        println!("server peak RSS at this load: {peak:.1} MiB");
    }
    if refused > 0 {
        bail!("{refused} requests were not acknowledged");
    }
    Ok(())
}

/// One trace of `spans` LLM spans under one root, sent in requests of `batch` spans as a
/// long-running agent's exporter would; then how fast `GET /traces/{id}` serves it.
pub async fn big_trace(
    url: &str,
    pid: Option<u32>,
    spans: usize,
    batch: usize,
    iterations: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut w = Words::new(spans as u64);
    let t = now_ns();
    let tid = (u128::from(t) << 32 | spans as u128).to_be_bytes();
    let id: String = tid.iter().map(|b| format!("{b:02x}")).collect();
    let start = t - 3_600_000_000_000;
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < spans {
        let n = batch.min(spans - sent);
        let mut part = Vec::with_capacity(n);
        for k in sent..sent + n {
            part.push(if k == 0 {
                agent_span(&mut w, tid, 1, start, 3_000_000_000_000)
            } else {
                llm_span(&mut w, tid, 1 + k as u64, 1, start + k as u64 * 1_000_000)
            });
        }
        let resp = post(&http, &format!("{url}/v1/traces"), request(part)).send().await?;
        if !resp.status().is_success() {
            bail!("ingest answered {}: {}", resp.status(), resp.text().await?);
        }
        sent += n;
    }
    println!(
        "big trace: {spans} spans in requests of {batch} stored in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let get = format!("{url}/traces/{id}");
    let mut first = Vec::with_capacity(iterations);
    let mut whole = Vec::with_capacity(iterations);
    let mut bytes = 0usize;
    if let Some(before) = pid.and_then(rss_mib) {
        println!("server RSS before serving it: {before:.1} MiB");
    }
    let rss = RssPeak::start(pid);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let mut resp = http.get(&get).send().await?; // returns once the headers are in
        if !resp.status().is_success() {
            bail!("GET /traces/{id} answered {}", resp.status());
        }
        // the status line and headers leave with the first chunk of the body
        first.push(t0.elapsed().as_secs_f64() * 1000.0);
        let mut n = 0usize;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len();
        }
        whole.push(t0.elapsed().as_secs_f64() * 1000.0);
        bytes = n;
    }
    let peak = rss.peak();
    first.sort_by(f64::total_cmp);
    whole.sort_by(f64::total_cmp);
    println!(
        "GET /traces/{{id}} of {spans} spans ({:.1} MB): first byte p50 {:.2} ms, p95 {:.2} ms; \
         whole p50 {:.2} ms, p95 {:.2} ms ({iterations} requests)",
        bytes as f64 / 1e6,
        percentile(&first, 0.5),
        percentile(&first, 0.95),
        percentile(&whole, 0.5),
        percentile(&whole, 0.95)
    );
    if pid.is_some() {
        println!("server peak RSS while serving it: {peak:.1} MiB");
    }
    let check: serde_json::Value = http.get(&get).send().await?.json().await?;
    let n = check["spans"].as_array().map_or(0, Vec::len);
    if n != spans {
        bail!("GET /traces/{id} gave {n} spans, not {spans}");
    }
    Ok(())
}
