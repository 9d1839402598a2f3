//! Overload: far more ingest than the server can take. It must refuse the excess with 503 and
//! Retry-After, keep its memory under the documented bound, keep answering queries, store every
//! trace it acknowledged, and take ingest again once the load stops.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Server, native_trace};

/// `--ingest-memory-mb` of the test server.
const MEMORY_MB: u64 = 16;
const CLIENTS: usize = 48;
const LOAD: Duration = Duration::from_secs(8);

/// A batch of 8 traces of 3 spans with 128 KiB of prompt each: a ~1 MiB body. Built once and
/// stamped with new ids per request, so that the clients spend their time sending. The prompts
/// are words, ~18,000 per trace, which the server must index for search as well as store.
struct Batch(String);

impl Batch {
    fn new() -> Batch {
        let pad = 128 * 1024;
        let mut words = String::with_capacity(pad + 16);
        let mut i: u64 = 0;
        while words.len() < pad {
            i += 1;
            words.push_str(&format!("w{} ", i.wrapping_mul(7919) % 1_000_003));
        }
        words.truncate(pad);
        let docs: Vec<_> = (0..8)
            .map(|j| {
                let mut t = native_trace(&format!("ID_{j}_PLACEHOLDER"), 3, 1);
                t["spans"][0]["input"] = serde_json::Value::String(words.clone());
                t
            })
            .collect();
        Batch(serde_json::json!({"traces": docs}).to_string())
    }

    fn stamp(&self, client: usize, n: usize) -> (Vec<String>, String) {
        let mut body = self.0.clone();
        let mut ids = Vec::with_capacity(8);
        for j in 0..8 {
            let id = format!("c{client}n{n}t{j}");
            body = body.replace(&format!("ID_{j}_PLACEHOLDER"), &id);
            ids.push(id);
        }
        (ids, body)
    }
}

fn post(http: &reqwest::Client, url: &str, body: String) -> reqwest::RequestBuilder {
    http.post(url).header("content-type", "application/json").body(body)
}

#[test]
fn overload_is_refused_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--ingest-memory-mb", &MEMORY_MB.to_string(), "--ingest-queue-requests", "16"],
    );
    let rt = support::runtime();
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = srv.rss_kib();

    // What one client sustains alone, sending back to back: the load below is CLIENTS of them.
    let (sustained, alone) = rt.block_on(async {
        let http = support::client();
        let batch = Batch::new();
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed() < Duration::from_secs(2) {
            let (_, body) = batch.stamp(9999, n);
            let r = post(&http, &srv.url("/traces"), body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 202);
            n += 1;
        }
        (n as f64 / t0.elapsed().as_secs_f64(), n)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let peak_kib = Arc::new(AtomicU64::new(idle_kib));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, stop, acked) = (srv.url("/traces"), Arc::clone(&stop), Arc::clone(&acked));
            let (sent, refused) = (Arc::clone(&sent), Arc::clone(&refused));
            rt.spawn(async move {
                let http = support::client();
                let batch = Batch::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (ids, body) = batch.stamp(c, n);
                    n += 1;
                    let r = post(&http, &url, body).send().await.unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r.status().as_u16() {
                        202 => acked.lock().unwrap().extend(ids),
                        503 => {
                            assert!(
                                r.headers().contains_key("retry-after"),
                                "503 without Retry-After"
                            );
                            let v: serde_json::Value = r.json().await.unwrap();
                            let msg =
                                v["error"]["message"].as_str().unwrap_or_default().to_string();
                            assert!(
                                msg.contains("overloaded") || msg.contains("queue is full"),
                                "{msg}"
                            );
                            refused.fetch_add(1, Ordering::Relaxed);
                            // a client that ignores Retry-After: the worst case for the server
                        }
                        other => panic!("ingest under overload answered {other}"),
                    }
                }
            })
        })
        .collect();
    // queries keep answering during the overload (a hang bound, not a speed check)
    let reader = {
        let (base, stop) = (srv.api.clone(), Arc::clone(&stop));
        rt.spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                for path in ["/", "/traces?limit=20"] {
                    let r = http.get(format!("{base}{path}")).send().await.expect("query answers");
                    assert_eq!(r.status().as_u16(), 200, "GET {path} during overload");
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answered
        })
    };
    let t0 = Instant::now();
    while t0.elapsed() < LOAD {
        peak_kib.fetch_max(srv.rss_kib(), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), c).await })
            .expect("clients finish")
            .unwrap();
    }
    let queries = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), reader).await })
        .expect("reader finishes")
        .unwrap();
    let elapsed = t0.elapsed().as_secs_f64();

    let (sent, refused) = (sent.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let peak_mib = peak_kib.load(Ordering::Relaxed) / 1024;
    let idle_mib = idle_kib / 1024;
    println!(
        "overload: {CLIENTS} clients offered {:.1} requests/s (~1 MiB each) for {elapsed:.1} s; one \
         client alone sustained {sustained:.1}/s; {refused} of {sent} refused with 503 ({:.0}%), \
         {} traces acknowledged; RSS idle {idle_mib} MiB, peak {peak_mib} MiB \
         (--ingest-memory-mb {MEMORY_MB}); {queries} queries answered meanwhile",
        sent as f64 / elapsed,
        refused as f64 * 100.0 / sent.max(1) as f64,
        acked.len()
    );
    assert!(refused > 0, "the load must be refused in part: it is {CLIENTS} times one client's");
    assert!(!acked.is_empty(), "part of the load is taken");
    // The documented bound (docs/ARCHITECTURE.md, "Memory"): idle + 2.25 × --ingest-memory-mb
    // (the last quarter: texts waiting for the search indexer) + the SQLite page caches (16 MiB
    // for the writer, the indexer and each of the 4 readers, 2 MiB for the search database
    // attached to each reader).
    let bound = idle_mib + 2 * MEMORY_MB + MEMORY_MB / 4 + 112;
    assert!(peak_mib <= bound, "peak RSS {peak_mib} MiB over the bound {bound} MiB");

    rt.block_on(async {
        let http = support::client();
        // everything acknowledged is stored, and nothing refused is
        let stats: serde_json::Value =
            http.get(srv.url("/stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["traces"], acked.len() + alone * 8, "stored = acknowledged");
        for id in &acked {
            let r = http.get(srv.url(&format!("/traces/{id}"))).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "acknowledged trace {id}");
        }
        // and once the load stops, ingest is taken again
        let (_, body) = Batch::new().stamp(10_000, 0);
        let r = post(&http, &srv.url("/traces"), body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202, "ingest after the overload");
    });
}
