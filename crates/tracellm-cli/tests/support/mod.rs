//! What the reliability tests share: the real `tracellm start` on a data dir, killed or stopped
//! by signals, HTTP through reqwest, OTLP protobuf requests, and SQLite integrity checks.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// A `tracellm start` process; killed with SIGKILL when dropped, so a failing test leaves no
/// server behind.
pub struct Server {
    pub child: Child,
    pub api: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracellm"))
            .args(["start", "--port", "0", "--no-dashboard", "--no-otlp-grpc", "--log", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("TRACELLM_STORE")
            .env("HOME", data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracellm starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        if !first.contains("ready in") {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("tracellm did not start: {first}\n{}", stderr.lock().unwrap());
        }
        let api_line = lines.next().unwrap().unwrap();
        let api = api_line.split_whitespace().last().unwrap().to_string();
        std::thread::spawn(move || for _ in lines {});
        Server { child, api, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit (a hang bound, not a speed check).
    pub fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "server did not exit within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A native trace of `spans` spans under one root, `pad` bytes of prompt.
pub fn native_trace(id: &str, spans: usize, pad: usize) -> serde_json::Value {
    let mut list = vec![serde_json::json!({
        "id": "s0", "name": "agent", "kind": "agent",
        "start_time": "2026-05-31T10:30:00Z", "end_time": "2026-05-31T10:30:02Z",
        "input": "x".repeat(pad), "output": "done",
    })];
    for i in 1..spans {
        list.push(serde_json::json!({
            "id": format!("s{i}"), "parent_id": "s0", "name": "openai.chat", "kind": "llm",
            "model": "gpt-4o", "start_time": "2026-05-31T10:30:00.100Z",
            "end_time": "2026-05-31T10:30:01Z", "input": format!("question {i} of {id}"),
            "output": "answer", "tokens": {"prompt": 10, "completion": 20},
        }));
    }
    serde_json::json!({"id": id, "name": "agent", "spans": list})
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

/// An OTLP protobuf export of some spans of one trace; `root` is the span every other span hangs
/// under (sent whole when `spans` includes it).
pub fn otlp_request(trace_id: [u8; 16], root: [u8; 8], spans: &[[u8; 8]]) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        as u64;
    let spans = spans
        .iter()
        .map(|id| {
            let is_root = *id == root;
            let mut attributes = vec![attr(
                "gen_ai.prompt",
                any_value::Value::StringValue(format!("prompt of span {}", hex(id))),
            )];
            if !is_root {
                attributes.push(attr(
                    "gen_ai.request.model",
                    any_value::Value::StringValue("gpt-4o".into()),
                ));
                attributes.push(attr("gen_ai.usage.input_tokens", any_value::Value::IntValue(12)));
            }
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: if is_root { Vec::new() } else { root.to_vec() },
                name: if is_root { "agent".into() } else { "chat gpt-4o".into() },
                kind: 1,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1_000_000,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A small seeded generator (xorshift64*), so a failing run can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next() as u8;
        }
        out[0] |= 1; // never all zero (OTLP ids must not be)
        out
    }
}

/// The seed from `TRACELLM_TEST_SEED`, else from the clock; printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TRACELLM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
        });
    println!("{test}: seed {seed} (replay with TRACELLM_TEST_SEED={seed})");
    seed
}

/// `PRAGMA integrity_check` on the database file as a killed server left it and on its search
/// index beside it, opened read-only; then the full-text index's own check, on a copy (FTS5
/// checks are written as INSERTs).
pub fn check_integrity(db: &Path) {
    let stem = db.file_stem().unwrap().to_string_lossy().into_owned();
    let search = db.with_file_name(format!("{stem}.search.db"));
    assert!(search.exists(), "no search index beside {}", db.display());
    integrity_check(db);
    integrity_check(&search);
    let copy = tempfile::tempdir().unwrap();
    let to = copy.path().join("copy.db");
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", search.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", to.display())).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(&to).unwrap();
    conn.execute("INSERT INTO trace_fts(trace_fts) VALUES ('integrity-check')", [])
        .unwrap_or_else(|e| panic!("FTS integrity-check of {}: {e}", search.display()));
}

fn integrity_check(db: &Path) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, ["ok"], "integrity_check of {}", db.display());
}
