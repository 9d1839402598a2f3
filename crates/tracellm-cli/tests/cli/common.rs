//! Helpers: the real `tracellm start`, the OpenAI-compatible test server standing in for the
//! provider, and `tracellm` runs with a clean environment.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tracellm");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A `tracellm start` on free ports; killed when dropped.
pub struct Server {
    child: Child,
    pub api: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["start", "--port", "0", "--dashboard-port", "0", "--otlp-grpc-port", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tracellm starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("ready in"), "{first}");
        let api = lines.next().unwrap().unwrap().split_whitespace().last().unwrap().to_string();
        std::thread::spawn(move || for _ in lines {});
        Server { child, api }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tools/llm-test-server` on a free port; killed when dropped.
pub struct Llm {
    child: Child,
    pub url: String,
}

impl Llm {
    pub fn start() -> Llm {
        let mut child = Command::new("python3")
            .arg(repo_root().join("tools/llm-test-server/server.py"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the LLM test server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let url =
            first.strip_prefix("listening on ").expect("first line names the URL").to_string();
        std::thread::spawn(move || for _ in lines {});
        Llm { child, url }
    }

    /// The base URL an OpenAI client would use.
    pub fn base(&self) -> String {
        format!("{}/v1", self.url)
    }

    /// Request bodies the provider received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        let (_, v) = http("GET", &format!("{}/_test/requests", self.url), None);
        let list = v.get("requests").cloned().unwrap_or(v);
        list.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Llm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL where nothing listens.
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Runs `tracellm ARGS` with only PATH, HOME and `env` set (no provider keys leak in from the
/// machine), stdin empty.
pub fn tracellm(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("COLUMNS", "100")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("tracellm runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    if body.is_some() {
        cmd.args(["-H", "content-type: application/json", "--data-binary", "@-"]);
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(b) = body {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
    }
    let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

pub fn get(url: &str) -> Value {
    let (code, v) = http("GET", url, None);
    assert_eq!(code, 200, "GET {url}: {v}");
    v
}

pub fn post(api: &str, doc: &Value) {
    let (code, v) = http("POST", &format!("{api}/traces"), Some(&doc.to_string()));
    assert_eq!(code, 202, "{v}");
}

/// The `Trace ID:` of the block.
pub fn trace_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Trace ID:"))
        .unwrap_or_else(|| panic!("no Trace ID line in {out:?}"))
        .trim()
        .to_string()
}

/// Compares `actual` with `tests/snapshots/NAME.txt`; `TRACELLM_UPDATE_SNAPSHOTS=1` rewrites it.
pub fn assert_snapshot(name: &str, actual: &str) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.txt"));
    if std::env::var_os("TRACELLM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no snapshot {}; run with TRACELLM_UPDATE_SNAPSHOTS=1", path.display())
    });
    if expected != actual {
        panic!(
            "{name} differs from {} (TRACELLM_UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// Replaces every `tr_…` / `sp_…` id with `tr_<id>` / `sp_<id>` and RFC 3339 times with `<time>`.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        let at_word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if at_word_start && (rest.starts_with("tr_") || rest.starts_with("sp_")) {
            let end = rest[3..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(|e| e + 3)
                .unwrap_or(rest.len());
            out.push_str(&rest[..3]);
            out.push_str("<id>");
            i += end;
            continue;
        }
        // 2026-01-01T10:00:00.000Z
        if rest.len() >= 20
            && b[i..i + 4].iter().all(u8::is_ascii_digit)
            && rest.as_bytes()[4] == b'-'
            && rest.as_bytes()[10] == b'T'
        {
            let end = rest.find('Z').map(|e| e + 1).unwrap_or(rest.len());
            out.push_str("<time>");
            i += end;
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}
