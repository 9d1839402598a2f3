//! Projects, keys and the access rules: the isolation matrix, admin auth, no secrets at rest,
//! CORS and Host checks, redaction.

mod common;

use std::time::Duration;

use common::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{Value, json};

struct Http {
    base: String,
    c: reqwest::Client,
}

impl Http {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.c.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, key, None).await
    }
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, key, Some(body)).await
    }
}

fn trace(id: &str, word: &str) -> Value {
    json!({"id": id, "spans": [
        {"id": "root", "name": "agent", "kind": "agent", "start_time": "2026-05-31T10:00:00Z", "end_time": "2026-05-31T10:00:02Z", "input": word},
        {"id": "llm", "parent_id": "root", "name": "chat", "kind": "llm", "model": "gpt-4o",
         "start_time": "2026-05-31T10:00:00.5Z", "end_time": "2026-05-31T10:00:01Z", "error": {"type": "E", "message": "boom"},
         "input": {"messages": [{"role": "user", "content": word}]}}]})
}

async fn create_project(h: &Http, name: &str, env: &str) -> (String, String) {
    let (s, v) =
        h.post(&format!("/projects?name={name}&environment={env}"), None, json!(null)).await;
    assert_eq!(s, 201, "{v}");
    let key = v["api_key"]["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("tlm_sk_") && key.len() == 39, "{key}");
    (v["project"]["id"].as_str().unwrap().to_string(), key)
}

async fn create_key(h: &Http, project: &str, env: &str) -> (String, String) {
    let (s, v) =
        h.post(&format!("/api-keys?project={project}&environment={env}"), None, json!(null)).await;
    assert_eq!(s, 201, "{v}");
    (
        v["api_key"]["id"].as_str().unwrap().to_string(),
        v["api_key"]["key"].as_str().unwrap().to_string(),
    )
}

fn otlp(trace_byte: u8) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![trace_byte; 16],
                    span_id: vec![1; 8],
                    name: "otlp-root".into(),
                    start_time_unix_nano: 1_780_000_000_000_000_000,
                    end_time_unix_nano: 1_780_000_001_000_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let h = Http { base: srv.url(), c: reqwest::Client::new() };
    let (a, ka) = create_project(&h, "Alpha App", "production").await;
    assert_eq!(a, "alpha-app");
    let (b, kb) = create_project(&h, "beta", "production").await;
    let (_, ka_stage) = create_key(&h, &a, "staging").await;
    let (s, _) = h.post("/projects?name=Alpha+App", None, json!(null)).await;
    assert_eq!(s, 409, "project names are unique");

    // each caller writes one trace
    assert_eq!(h.post("/traces", Some(&ka), trace("ta", "alphaword")).await.0, 202);
    assert_eq!(h.post("/traces", Some(&ka_stage), trace("ta_stage", "stageword")).await.0, 202);
    assert_eq!(h.post("/traces", Some(&kb), trace("tb", "betaword")).await.0, 202);
    assert_eq!(h.post("/traces", None, trace("td", "defaultword")).await.0, 202);

    let ids = |v: &Value, key: &str| -> Vec<String> {
        let mut x: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        x.sort();
        x
    };
    // lists, search, failures, analytics: each caller sees only its own
    for (key, want) in
        [(Some(&ka), "ta"), (Some(&ka_stage), "ta_stage"), (Some(&kb), "tb"), (None, "td")]
    {
        let k = key.map(|s| s.as_str());
        let (s, v) = h.get("/traces", k).await;
        assert_eq!(s, 200);
        assert_eq!(ids(&v, "traces"), vec![want.to_string()], "list for {want}");
        let (_, v) = h.get("/failures", k).await;
        assert_eq!(ids(&v, "failures"), vec![want.to_string()], "failures for {want}");
        let (_, v) = h.get("/analytics", k).await;
        assert_eq!(v["totals"]["traces"], 1, "analytics for {want}");
        for other in ["ta", "ta_stage", "tb", "td"].into_iter().filter(|o| *o != want) {
            assert_eq!(
                h.get(&format!("/traces/{other}"), k).await.0,
                404,
                "{want} must not read {other}"
            );
            assert_eq!(
                h.get(&format!("/traces/{other}/spans/llm"), k).await.0,
                404,
                "{want} must not read {other}'s span"
            );
        }
        assert_eq!(h.get(&format!("/traces/{want}"), k).await.0, 200);
        assert_eq!(h.get(&format!("/traces/{want}/spans/llm"), k).await.0, 200);
    }
    let (_, v) = h.get("/traces?q=betaword", Some(&ka)).await;
    assert!(v["traces"].as_array().unwrap().is_empty(), "search does not cross projects");

    // naming another project or environment is refused, not redirected
    assert_eq!(h.get(&format!("/traces?project={b}"), Some(&ka)).await.0, 403);
    assert_eq!(h.get("/traces?project=default", Some(&ka)).await.0, 403);
    assert_eq!(
        h.get(&format!("/traces?project={a}"), None).await.0,
        403,
        "no key never reaches another project"
    );
    assert_eq!(
        h.get("/traces?environment=staging", Some(&ka)).await.0,
        403,
        "a key of another environment"
    );
    assert_eq!(h.get("/analytics?environment=staging", Some(&ka)).await.0, 403);
    let r =
        h.c.post(format!("{}/traces", h.base))
            .bearer_auth(&ka)
            .header("x-tracellm-environment", "staging")
            .json(&trace("x", "y"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r =
        h.c.post(format!("{}/traces", h.base))
            .bearer_auth(&ka)
            .header("x-tracellm-project", b.as_str())
            .json(&trace("x", "y"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // bad keys are 401, never a fall-back to default
    for bad in ["tlm_sk_short", "not-a-key", "tlm_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let (s, v) = h.get("/traces", Some(bad)).await;
        assert_eq!(s, 401, "{bad}: {v}");
        assert_eq!(h.post("/traces", Some(bad), trace("z", "w")).await.0, 401);
    }
    let r =
        h.c.get(format!("{}/traces", h.base))
            .header("x-api-key", ka.as_str())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200, "X-API-Key works too");

    // OTLP over HTTP and gRPC land in the key's project
    let r =
        h.c.post(format!("{}/v1/traces", h.base))
            .bearer_auth(&kb)
            .header("content-type", "application/x-protobuf")
            .body(otlp(0xbb).encode_to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bb = "bb".repeat(16);
    assert_eq!(h.get(&format!("/traces/{bb}"), Some(&kb)).await.0, 200);
    assert_eq!(h.get(&format!("/traces/{bb}"), None).await.0, 404);
    let r =
        h.c.post(format!("{}/v1/traces", h.base))
            .bearer_auth("tlm_sk_short")
            .header("content-type", "application/x-protobuf")
            .body(otlp(0xbc).encode_to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let mut grpc = TraceServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc.unwrap()))
        .await
        .unwrap();
    let mut req = tonic::Request::new(otlp(0xaa));
    req.metadata_mut().insert("authorization", format!("Bearer {ka}").parse().unwrap());
    grpc.export(req).await.unwrap();
    let aa = "aa".repeat(16);
    assert_eq!(h.get(&format!("/traces/{aa}"), Some(&ka)).await.0, 200);
    assert_eq!(h.get(&format!("/traces/{aa}"), Some(&kb)).await.0, 404);
    let mut req = tonic::Request::new(otlp(0xab));
    req.metadata_mut()
        .insert("authorization", "Bearer tlm_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".parse().unwrap());
    assert_eq!(grpc.export(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    // the WebSocket carries only the key's project
    let mut sub =
        tracellm_client::Client::new(srv.url()).with_api_key(&ka).subscribe().await.unwrap();
    let _hello = sub.next().await.unwrap().unwrap();
    assert_eq!(h.post("/traces", Some(&kb), trace("tb2", "b")).await.0, 202);
    assert_eq!(h.post("/traces", None, trace("td2", "d")).await.0, 202);
    assert_eq!(h.post("/traces", Some(&ka), trace("ta2", "a")).await.0, 202);
    let ev =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev["trace"]["id"], "ta2", "the first event this client sees is its own project's");
    let refused =
        tracellm_client::Client::new(srv.url()).with_api_key("tlm_sk_short").subscribe().await;
    let err = refused.err().expect("a bad key cannot open the live stream").to_string();
    assert!(err.contains("401"), "{err}");
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?api_key={kb}", srv.bound.api))
            .await
            .unwrap();
    drop(ws); // a browser, which cannot set headers, passes the key in the query

    // revocation takes effect immediately
    let (_, keys) = h.get(&format!("/api-keys?project={a}"), None).await;
    let listed = keys["api_keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|k| k.get("key").is_none() && k["prefix"].as_str().unwrap().len() == 11),
        "no secrets in lists"
    );
    let first_id = listed.iter().find(|k| k["environment"] == "production").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // both keys were used above: the list says when, to the second
    for k in listed {
        let at: chrono::DateTime<chrono::Utc> =
            k["last_used_at"].as_str().expect("a used key shows its last use").parse().unwrap();
        let age = chrono::Utc::now() - at;
        assert!(age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(5), "{at}");
    }
    let (unused, _) = create_key(&h, &a, "staging").await;
    let (_, keys) = h.get(&format!("/api-keys?project={a}"), None).await;
    let fresh = keys["api_keys"].as_array().unwrap().iter().find(|k| k["id"] == unused).cloned();
    assert_eq!(fresh.expect("the new key is listed")["last_used_at"], Value::Null);
    assert_eq!(h.get("/traces", Some(&ka)).await.0, 200);
    let (s, v) =
        h.send(reqwest::Method::DELETE, &format!("/api-keys/{first_id}"), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["api_key"]["revoked_at"].is_string());
    assert_eq!(h.get("/traces", Some(&ka)).await.0, 401);
    assert_eq!(h.send(reqwest::Method::DELETE, "/api-keys/key_nope", None, None).await.0, 404);
    let (_, projects) = h.get("/projects", None).await;
    assert_eq!(projects["projects"].as_array().unwrap().len(), 3);
    srv.stop().await;

    // no key is stored in plain text
    let mut bytes = Vec::new();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    for k in [&ka, &kb, &ka_stage] {
        assert!(
            !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
            "a key is stored in plain text"
        );
        let tail = &k[7..];
        assert!(!bytes.windows(tail.len()).any(|w| w == tail.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_auth_guards_admin_and_data_routes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(dir.path(), |c| {
        c.require_auth = true;
        c.admin_token = Some("admin-secret-for-tests".into());
    })
    .await;
    let h = Http { base: srv.url(), c: reqwest::Client::new() };
    assert_eq!(h.get("/projects", None).await.0, 401);
    assert_eq!(h.get("/projects", Some("wrong")).await.0, 401);
    assert_eq!(h.post("/projects?name=x", None, json!(null)).await.0, 401);
    assert_eq!(h.get("/projects", Some("admin-secret-for-tests")).await.0, 200);
    let r =
        h.c.post(format!("{}/projects?name=gamma", h.base))
            .header("x-admin-token", "admin-secret-for-tests")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let key = r.json::<Value>().await.unwrap()["api_key"]["key"].as_str().unwrap().to_string();
    let (s, v) = h.get("/traces", None).await;
    assert_eq!(s, 401, "data routes need a key: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("API key is required"));
    assert_eq!(h.post("/traces", None, trace("t", "w")).await.0, 401);
    assert_eq!(h.post("/traces", Some(&key), trace("t", "w")).await.0, 202);
    assert_eq!(h.get("/traces/t", Some(&key)).await.0, 200);
    assert_eq!(h.get("/", None).await.0, 200, "health stays open");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_host_checks() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let c = reqwest::Client::new();
    let pre = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, format!("{}/traces", srv.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let evil = pre("http://evil.example").await.unwrap();
    assert!(
        evil.headers().get("access-control-allow-origin").is_none(),
        "a foreign origin gets no CORS grant"
    );
    let dash = format!("http://localhost:{}", srv.bound.dashboard.unwrap().port());
    let ok = pre(&dash).await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], dash.as_str());
    let r =
        c.get(format!("{}/traces", srv.url())).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "DNS rebinding: a foreign Host is refused");
    let r = c
        .get(format!("http://{}/", srv.bound.dashboard.unwrap()))
        .header("host", "evil.example:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .get(format!("{}/traces", srv.url()))
        .header("host", "localhost:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page = c.get(format!("http://{}/", srv.bound.dashboard.unwrap())).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'self'")
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_before_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let h = Http { base: srv.url(), c: reqwest::Client::new() };
    let secret = "sk-proj-Zq8xW3vN7pR2tY6uK1mL4jH9gF5dS0aQ";
    let mut doc = trace("leak", &format!("my key is {secret} please help"));
    doc["spans"][1]["output"] =
        json!({"messages": [{"role": "assistant", "content": format!("do not share {secret}")}]});
    doc["metadata"] = json!({"auth": format!("Bearer {secret}")});
    assert_eq!(h.post("/traces", None, doc).await.0, 202);
    let (_, t) = h.get("/traces/leak", None).await;
    let text = t.to_string();
    assert!(!text.contains("Zq8xW3vN7pR2tY6uK1mL4jH9gF5dS0aQ"), "{text}");
    assert_eq!(
        t["spans"][1]["input"]["messages"][0]["content"],
        "my key is [REDACTED:openai_key] please help"
    );
    assert_eq!(t["prompt"], "my key is [REDACTED:openai_key] please help");
    let (_, found) = h.get("/traces?q=Zq8xW3vN7pR2tY6uK1mL4jH9gF5dS0aQ", None).await;
    assert!(found["traces"].as_array().unwrap().is_empty(), "not in the full-text index");
    let (_, found) = h.get("/traces?q=REDACTED", None).await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1, "the marker is what is indexed");
    srv.stop().await;
    let mut bytes = Vec::new();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    assert!(
        !bytes.windows(20).any(|w| w == &secret.as_bytes()[8..28]),
        "the secret is nowhere in the files"
    );
}
