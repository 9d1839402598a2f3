//! `tracellm-bench soak`: steady ingest, queries and WebSocket clients together for a long time,
//! sampling what would show a leak or a slow decline: resident memory, open file descriptors,
//! query latency. Each sample is one line; the end prints the drift from the first sample.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{otlp_json_trace, percentile, rss_mib};

/// Latencies (ms) of each query kind since the last sample.
#[derive(Default)]
struct Window {
    list: Vec<f64>,
    search: Vec<f64>,
    get: Vec<f64>,
}

struct Counters {
    acked: AtomicU64,
    refused: AtomicU64,
    failed_queries: AtomicU64,
    ws_events: AtomicU64,
    ws_reconnects: AtomicU64,
}

struct Sample {
    at: u64,
    rss: f64,
    fds: usize,
    traces: u64,
    lat: [(f64, f64); 3],
}

const KINDS: [&str; 3] = ["GET /traces", "GET /traces?q=WORD", "GET /traces/{id}"];

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

async fn ingest(url: String, rate: u32, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        i += 1;
        let trace_id = format!("{:032x}", now ^ (u128::from(i) << 96));
        let body =
            serde_json::to_vec(&otlp_json_trace(&trace_id, &format!("soak{}", i % 1000), now))
                .unwrap_or_default();
        let ok = http
            .post(format!("{url}/v1/traces"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let n = if ok { &c.acked } else { &c.refused };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

async fn queries(url: String, stop: Arc<AtomicBool>, win: Arc<Mutex<Window>>, c: Arc<Counters>) {
    let http = reqwest::Client::new();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let t0 = Instant::now();
        let page = http.get(format!("{url}/traces?limit=50")).send().await;
        let page: Option<Value> = match page {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            _ => None,
        };
        let list_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let Some(page) = page else {
            c.failed_queries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let t0 = Instant::now();
        let search = http.get(format!("{url}/traces?q=soak{}", i % 1000)).send().await;
        let search_ok = matches!(&search, Ok(r) if r.status().is_success());
        if let Ok(r) = search {
            let _ = r.bytes().await;
        }
        let search_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut get_ms = None;
        if let Some(id) = page["traces"][(i % 50) as usize]["id"].as_str() {
            let t0 = Instant::now();
            match http.get(format!("{url}/traces/{id}")).send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                }
                _ => {
                    c.failed_queries.fetch_add(1, Ordering::Relaxed);
                }
            }
            get_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if !search_ok {
            c.failed_queries.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut w = win.lock().unwrap();
            w.list.push(list_ms);
            w.search.push(search_ms);
            w.get.extend(get_ms);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ws_client(url: String, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    let client = tracellm_client::Client::new(url);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut sub) = client.subscribe().await else {
            c.ws_reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        loop {
            let next = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match next {
                Ok(Some(Ok(_))) => {
                    c.ws_events.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
                Ok(_) => {
                    c.ws_reconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

fn p50_p99(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(v, 0.5), percentile(v, 0.99))
}

async fn sample(url: &str, pid: u32, started: Instant, win: &Mutex<Window>) -> Sample {
    let mut w = std::mem::take(&mut *win.lock().unwrap());
    let traces = async {
        let v: Value = reqwest::get(format!("{url}/stats")).await.ok()?.json().await.ok()?;
        v["traces"].as_u64()
    }
    .await
    .unwrap_or(0);
    Sample {
        at: started.elapsed().as_secs(),
        rss: rss_mib(pid).unwrap_or(0.0),
        fds: fds(pid),
        traces,
        lat: [p50_p99(&mut w.list), p50_p99(&mut w.search), p50_p99(&mut w.get)],
    }
}

fn print_sample(s: &Sample, c: &Counters) {
    let lat: Vec<String> = KINDS
        .iter()
        .zip(s.lat)
        .map(|(k, (p50, p99))| format!("{k} p50 {p50:.2} ms p99 {p99:.2} ms"))
        .collect();
    println!(
        "t={:>5} s: RSS {:.1} MiB, {} fds, {} traces stored, {} ingest 2xx, {} refused; {}; {} WebSocket events",
        s.at,
        s.rss,
        s.fds,
        s.traces,
        c.acked.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        lat.join(", "),
        c.ws_events.load(Ordering::Relaxed),
    );
}

pub async fn run(
    url: &str,
    pid: u32,
    seconds: u64,
    rate: u32,
    ws_clients: usize,
    sample_every: u64,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(Counters {
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        failed_queries: AtomicU64::new(0),
        ws_events: AtomicU64::new(0),
        ws_reconnects: AtomicU64::new(0),
    });
    let win = Arc::new(Mutex::new(Window::default()));
    println!(
        "soak: {seconds} s of OTLP/JSON ingest at {rate} traces/s (6 spans each), a query loop \
         and {ws_clients} WebSocket clients; a sample every {sample_every} s"
    );
    let mut tasks = vec![
        tokio::spawn(ingest(url.into(), rate, Arc::clone(&stop), Arc::clone(&c))),
        tokio::spawn(queries(url.into(), Arc::clone(&stop), Arc::clone(&win), Arc::clone(&c))),
    ];
    for _ in 0..ws_clients {
        tasks.push(tokio::spawn(ws_client(url.into(), Arc::clone(&stop), Arc::clone(&c))));
    }
    let started = Instant::now();
    // the first sample once the load has run for a while, so that start-up is not the baseline
    let warmup = Duration::from_secs(sample_every.min(30));
    tokio::time::sleep(warmup).await;
    let first = sample(url, pid, started, &win).await;
    print_sample(&first, &c);
    let mut last = None;
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        let next = (Instant::now() + Duration::from_secs(sample_every)).min(end);
        tokio::time::sleep_until(next.into()).await;
        let s = sample(url, pid, started, &win).await;
        print_sample(&s, &c);
        last = Some(s);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let last = last.unwrap_or_else(|| first_copy(&first));
    let pct = |a: f64, b: f64| if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 };
    println!(
        "RSS: {:.1} MiB at {} s, {:.1} MiB at {} s, drift {:+.1} MiB ({:+.0}%)",
        first.rss,
        first.at,
        last.rss,
        last.at,
        last.rss - first.rss,
        pct(first.rss, last.rss)
    );
    println!(
        "open file descriptors: {} at {} s, {} at {} s, drift {:+}",
        first.fds,
        first.at,
        last.fds,
        last.at,
        last.fds as i64 - first.fds as i64
    );
    for (k, (a, b)) in KINDS.iter().zip(first.lat.iter().zip(last.lat.iter())) {
        println!(
            "{k}: p50 {:.2} -> {:.2} ms ({:+.0}%), p99 {:.2} -> {:.2} ms ({:+.0}%)",
            a.0,
            b.0,
            pct(a.0, b.0),
            a.1,
            b.1,
            pct(a.1, b.1)
        );
    }
    println!(
        "traces stored: {} -> {}; ingest: {} acknowledged, {} refused or failed; {} failed queries; \
         {} WebSocket events, {} WebSocket reconnects",
        first.traces,
        last.traces,
        c.acked.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.failed_queries.load(Ordering::Relaxed),
        c.ws_events.load(Ordering::Relaxed),
        c.ws_reconnects.load(Ordering::Relaxed),
    );
    Ok(())
}

fn first_copy(s: &Sample) -> Sample {
    Sample { at: s.at, rss: s.rss, fds: s.fds, traces: s.traces, lat: s.lat }
}
