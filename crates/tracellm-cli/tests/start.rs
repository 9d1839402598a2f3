//! `tracellm start` as a user runs it: the real binary, a real data dir, signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    api: String,
}

fn start(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    start_with_env(data_dir, extra, &[])
}

fn start_with_env(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args([
            "start",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--otlp-grpc-port",
            "0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .env_remove("TRACELLM_STORE")
        .env("HOME", data_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tracellm starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("TraceLLM ") && first.contains("ready in"), "{first}");
    let api_line = lines.next().unwrap().unwrap();
    let api = api_line.split_whitespace().last().unwrap().to_string();
    assert!(api.starts_with("http://127.0.0.1:"), "{api_line}");
    std::thread::spawn(move || for _ in lines {});
    Server { child, api }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn sigterm_drains_and_a_restart_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path(), &[]);
    let (code, health) = http("GET", &format!("{}/", srv.api), None);
    assert_eq!(code, 200);
    assert_eq!(health["store"], "sqlite");
    for i in 0..10 {
        let doc = format!(
            r#"{{"id": "tr_{i}", "prompt": "question {i}", "response": "answer", "model": "gpt-4o",
               "tokens": {{"prompt": 10, "completion": 20}}, "latency_ms": 100}}"#
        );
        let (code, v) = http("POST", &format!("{}/traces", srv.api), Some(&doc));
        assert_eq!(code, 202, "{v}");
    }
    signal(&srv.child, "-TERM");
    assert!(wait_exit(&mut srv.child).success(), "SIGTERM is a clean stop");
    assert!(dir.path().join("traces.db").exists(), "the store lives in --data-dir");

    let mut srv = start(dir.path(), &[]);
    let (code, page) = http("GET", &format!("{}/traces?limit=100", srv.api), None);
    assert_eq!(code, 200);
    assert_eq!(page["traces"].as_array().unwrap().len(), 10);
    let (_, t) = http("GET", &format!("{}/traces/tr_3", srv.api), None);
    assert_eq!(t["prompt"], "question 3");
    assert_eq!(t["tokens"]["total"], 30);
    signal(&srv.child, "-INT");
    assert!(wait_exit(&mut srv.child).success(), "Ctrl-C is a clean stop");
}

#[test]
fn flags_env_and_config_file_layer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    // the file asks for a tiny body limit; the environment overrides the store location
    std::fs::write(&cfg, "max-body-bytes = 200\n").unwrap();
    let store = dir.path().join("elsewhere.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args([
            "start",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--otlp-grpc-port",
            "0",
            "--config",
        ])
        .arg(&cfg)
        .env("TRACELLM_STORE", format!("sqlite://{}", store.display()))
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _ready = lines.next().unwrap().unwrap();
    let api = lines.next().unwrap().unwrap().split_whitespace().last().unwrap().to_string();
    let big = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(500));
    let (code, v) = http("POST", &format!("{api}/traces"), Some(&big));
    assert_eq!(code, 413, "{v}");
    assert!(store.exists(), "TRACELLM_STORE chose the database file");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child).success());

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "prot = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args(["start", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"));
}

#[test]
fn limits_come_from_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start_with_env(
        dir.path(),
        &["--max-json-depth", "4", "--max-spans-per-trace", "3"],
        &[("TRACELLM_MAX_SPANS_PER_REQUEST", "4"), ("TRACELLM_MAX_ATTRIBUTES", "1")],
    );
    let post = |doc: &str| http("POST", &format!("{}/traces", srv.api), Some(doc));
    let spans = |n: usize| {
        let s: Vec<String> = (0..n).map(|i| format!(r#"{{"id": "s{i}"}}"#)).collect();
        format!(r#"{{"spans": [{}]}}"#, s.join(","))
    };
    assert_eq!(post(&spans(3)).0, 202);
    let (code, v) = post(&spans(4));
    assert_eq!(code, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("limit of 3 per trace"), "{v}");
    let (code, v) = post(&spans(5));
    assert_eq!(code, 413, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("limit of 4 per request"), "{v}");
    let (code, v) = post(r#"{"spans": [{"id": "a", "x": [[1]]}]}"#);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("more than 4 levels"), "{v}");
    let (code, v) = post(r#"{"spans": [{"id": "a", "x": 1, "y": 2}]}"#);
    assert_eq!(code, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("limit of 1 per span"), "{v}");
    signal(&srv.child, "-TERM");
    assert!(wait_exit(&mut srv.child).success());
    // serde_json stops at 128 levels whatever the flag says: more is refused at start
    let out = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args(["start", "--max-json-depth", "200"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("200 is not in 1..=128"));
}

#[test]
fn help_explains_every_flag() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_tracellm")).args(["start", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--host",
        "--port",
        "--dashboard-port",
        "--data-dir",
        "--store",
        "--max-body-bytes",
        "--max-spans-per-request",
        "--max-spans-per-trace",
        "--max-attributes",
        "--max-events",
        "--max-json-depth",
        "--max-value-depth",
        "--ingest-queue-requests",
        "--ingest-memory-mb",
        "--prices",
        "--log",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for env in ["TRACELLM_HOST", "TRACELLM_PORT", "TRACELLM_DATA_DIR", "TRACELLM_STORE"] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}

#[test]
fn a_non_loopback_bind_without_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args([
            "start",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--no-dashboard",
            "--no-otlp-grpc",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without API keys") && err.contains("--insecure-no-auth"), "{err}");
}

fn tracellm(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args(["--endpoint", endpoint])
        .args(args)
        .env_remove("TRACELLM_ADMIN_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn projects_and_keys_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = start(dir.path(), &[]);
    let out = tracellm(&srv.api, &["projects", "create", "My App", "--environment", "production"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Project:      my-app (My App)"), "{text}");
    let key = text.lines().find_map(|l| l.strip_prefix("API key:")).unwrap().trim().to_string();
    assert!(key.starts_with("tlm_sk_") && key.len() == 39, "{key}");

    let out = tracellm(
        &srv.api,
        &[
            "--json",
            "keys",
            "create",
            "--project",
            "my-app",
            "--environment",
            "staging",
            "--name",
            "ci",
        ],
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let staging_id = created["api_key"]["id"].as_str().unwrap().to_string();

    let out = tracellm(&srv.api, &["keys", "list", "--project", "my-app"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains(&staging_id)
            && listing.contains("production")
            && listing.contains("active"),
        "{listing}"
    );
    assert!(!listing.contains(&key[7..]), "secrets are never listed");
    assert_eq!(listing.matches(" never").count(), 2, "no key used yet: {listing}");

    let doc = r#"{"id": "t1", "prompt": "hi", "response": "hello"}"#;
    let (code, _) = http_with_key("POST", &format!("{}/traces", srv.api), Some(doc), &key);
    assert_eq!(code, 202);
    let out = tracellm(&srv.api, &["keys", "list", "--project", "my-app"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    let used = listing.lines().find(|l| l.contains("production")).unwrap();
    assert!(used.ends_with(" UTC") && !used.contains("never"), "the key's last use: {listing}");
    let out = tracellm(&srv.api, &["projects", "list"]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("my-app"));

    let out = tracellm(&srv.api, &["keys", "revoke", &staging_id]);
    assert!(out.status.success());
    let out = tracellm(&srv.api, &["--json", "keys", "list"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let revoked = all["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == staging_id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string());
    let out = tracellm(&srv.api, &["keys", "revoke", "key_missing"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no API key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(&srv.child, "-TERM");
    wait_exit(&mut srv.child);
}

fn http_with_key(
    method: &str,
    url: &str,
    body: Option<&str>,
    key: &str,
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        url,
        "-H",
        &format!("authorization: Bearer {key}"),
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
