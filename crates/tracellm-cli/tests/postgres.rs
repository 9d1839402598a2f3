//! Several `tracellm start` processes sharing one PostgreSQL: ingest through one, read and
//! receive the live event through the other; one dies, the other serves; PostgreSQL restarts
//! under them. Needs PostgreSQL's server binaries (scripts/test installs them).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-test-cluster");

struct Cluster(std::path::PathBuf);

impl Cluster {
    fn start(dir: &std::path::Path) -> (Cluster, String) {
        let out = Command::new(CLUSTER)
            .arg("start")
            .arg(dir)
            .output()
            .expect("run scripts/pg-test-cluster");
        assert!(
            out.status.success(),
            "PostgreSQL is needed for this test (apt-get install postgresql): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (Cluster(dir.to_path_buf()), String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    fn stop(&self) {
        let _ = Command::new(CLUSTER).arg("stop").arg(&self.0).output();
    }

    fn restart(&self) {
        let out = Command::new(CLUSTER).arg("start").arg(&self.0).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Server {
    child: Child,
    api: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(store: &str, home: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracellm"))
        .args(["start", "--port", "0", "--no-dashboard", "--no-otlp-grpc", "--store", store])
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("ready in"), "{ready}");
    let api = lines.next().unwrap().unwrap().split_whitespace().last().unwrap().to_string();
    std::thread::spawn(move || for _ in lines {});
    Server { child, api }
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

fn doc(id: &str) -> String {
    format!(
        r#"{{"id": "{id}", "prompt": "shared question {id}", "response": "answer", "model": "gpt-4o", "tokens": {{"prompt": 5, "completion": 7}}}}"#
    )
}

#[test]
fn two_instances_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let (cluster, url) = Cluster::start(&pg_dir);
    let a = start(&url, dir.path());
    let mut b = start(&url, dir.path());

    // B's live stream sees what A stores
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sub = rt.block_on(tracellm_client::Client::new(b.api.clone()).subscribe()).unwrap();
    let hello = rt.block_on(sub.next()).unwrap().unwrap();
    assert_eq!(hello["type"], "system.connected");
    let (code, v) = http("POST", &format!("{}/traces", a.api), Some(&doc("t1")));
    assert_eq!(code, 202, "{v}");
    let ev = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), sub.next()).await })
        .expect("B's client hears of A's trace")
        .unwrap()
        .unwrap();
    assert_eq!(ev["type"], "trace.created");
    assert_eq!(ev["trace"]["id"], "t1");
    let (code, t) = http("GET", &format!("{}/traces/t1", b.api), None);
    assert_eq!(code, 200);
    assert_eq!(t["tokens"]["total"], 12);
    let (_, found) = http("GET", &format!("{}/traces?q=shared", b.api), None);
    assert_eq!(found["traces"].as_array().unwrap().len(), 1);

    // A dies; B keeps serving
    drop(a);
    assert_eq!(http("POST", &format!("{}/traces", b.api), Some(&doc("t2"))).0, 202);
    assert_eq!(http("GET", &format!("{}/traces/t1", b.api), None).0, 200);

    // PostgreSQL goes away: ingest answers 503 with a reason; it resumes once PostgreSQL is back
    cluster.stop();
    let (code, v) = http("POST", &format!("{}/traces", b.api), Some(&doc("lost")));
    assert_eq!(code, 503, "{v}");
    cluster.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = http("POST", &format!("{}/traces", b.api), Some(&doc("t3")));
        if code == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest did not resume after PostgreSQL came back ({code})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for id in ["t1", "t2", "t3"] {
        assert_eq!(
            http("GET", &format!("{}/traces/{id}", b.api), None).0,
            200,
            "{id} acknowledged, so stored"
        );
    }
    assert_eq!(http("GET", &format!("{}/traces/lost", b.api), None).0, 404);
    let _ = b.child.kill();
}
