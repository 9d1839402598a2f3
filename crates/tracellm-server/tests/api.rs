//! The HTTP API end to end: a real server on ephemeral ports over a real SQLite file.

mod common;

use std::time::Duration;

use common::TestServer;

use serde_json::{Value, json};
use tracellm_client::ClientError;
use tracellm_core::Status;

fn agent_trace(id: &str, minute: u32, failing_tool: bool) -> Value {
    let t = |s: u32| format!("2026-05-31T10:{minute:02}:{s:02}Z");
    let mut tool_attempt = json!({"id": "tool1", "parent_id": "root", "name": "search", "kind": "tool",
        "start_time": t(1), "end_time": t(2), "input": {"q": "transformers"}, "output": ["doc1"]});
    let mut spans = vec![
        json!({"id": "root", "name": "support-agent", "kind": "agent", "start_time": t(0), "end_time": t(6),
            "input": "Explain transformers", "output": "A transformer is a neural network"}),
    ];
    if failing_tool {
        tool_attempt["error"] = json!({"type": "TimeoutError", "message": "search timed out"});
        tool_attempt["output"] = Value::Null;
        spans.push(tool_attempt);
        spans.push(json!({"id": "tool2", "parent_id": "root", "name": "search", "kind": "tool",
            "start_time": t(2), "end_time": t(3), "input": {"q": "transformers"}, "output": ["doc1"]}));
    } else {
        spans.push(tool_attempt);
    }
    spans.push(json!({"id": "llm1", "parent_id": "root", "name": "openai.chat", "kind": "llm", "model": "gpt-4o",
        "provider": "openai", "start_time": t(3), "end_time": t(5),
        "input": {"messages": [{"role": "user", "content": "Explain transformers"}]},
        "output": {"messages": [{"role": "assistant", "content": "A transformer is a neural network"}]},
        "tokens": {"prompt": 12, "completion": 184}}));
    json!({"id": id, "name": "support-agent", "session_id": "sess-1", "user_id": "alice", "tags": ["prod"], "spans": spans})
}

async fn post_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/traces"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_list_get_analytics_failures() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let c = srv.client();
    assert_eq!(c.health().await.unwrap().store, "sqlite");

    let ok = c.ingest(&agent_trace("tr_ok", 1, false)).await.unwrap();
    assert_eq!(ok.ids, vec!["tr_ok"]);
    let batch = json!({"traces": [agent_trace("tr_retry", 2, true), {
        "id": "tr_fail", "prompt": "Summarize", "model": "gpt-4o-mini", "timestamp": "2026-05-31T10:03:00Z",
        "latency_ms": 300, "failure_reason": "RateLimitError: 429 Too Many Requests"}]});
    let acc = c.ingest(&batch).await.unwrap();
    assert_eq!(acc.accepted, 2);

    let page = c.list_traces(&[]).await.unwrap();
    let ids: Vec<&str> = page.traces.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["tr_fail", "tr_retry", "tr_ok"], "newest first");
    let ok_row = &page.traces[2];
    assert_eq!(ok_row.status, Status::Success);
    assert_eq!(ok_row.latency_ms, Some(6000.0));
    assert_eq!(ok_row.tokens.total, 196);
    assert!((ok_row.cost_usd.unwrap() - 0.00187).abs() < 1e-12);
    assert_eq!(ok_row.span_count, 3);
    assert_eq!(ok_row.prompt_preview.as_deref(), Some("Explain transformers"));

    // big traces can be fetched without payloads, and one span whole
    let lean: Value = reqwest::get(format!("{}/traces/tr_retry?payloads=false", srv.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lean["spans"].as_array().unwrap().len(), 4);
    assert!(
        lean["spans"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["input"].is_null() && s["output"].is_null())
    );
    assert_eq!(lean["spans"][3]["tokens"]["total"], 196, "figures stay");
    let one: Value = reqwest::get(format!("{}/traces/tr_retry/spans/llm1", srv.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["input"]["messages"][0]["content"], "Explain transformers");
    let missing = reqwest::get(format!("{}/traces/tr_retry/spans/nope", srv.url())).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let bad = reqwest::get(format!("{}/traces/tr_retry?payloads=maybe", srv.url())).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let full = c.get_trace("tr_retry").await.unwrap();
    assert_eq!(full.status, Status::Retried);
    assert_eq!(full.retries, 1);
    assert_eq!(full.spans.len(), 4);
    assert_eq!(full.spans[1].error.as_ref().unwrap().kind.as_deref(), Some("TimeoutError"));
    assert_eq!(full.spans[2].tool.as_ref().unwrap().arguments, json!({"q": "transformers"}));

    let a = c.analytics(&[("bucket", "1m")]).await.unwrap();
    assert_eq!(a.totals.traces, 3);
    assert_eq!(a.totals.spans, 3 + 4 + 1);
    assert_eq!(a.totals.errors, 1);
    assert_eq!(
        a.totals.tokens.completion,
        184 * 2,
        "the failed prompt-only trace reported no tokens"
    );
    let gpt4o = a.by_model.iter().find(|m| m.model == "gpt-4o").unwrap();
    assert_eq!(gpt4o.traces, 2);
    assert_eq!(a.timeseries.len(), 3);

    let f = c.failures(&[]).await.unwrap();
    let got: Vec<(&str, Status)> = f.failures.iter().map(|f| (f.id.as_str(), f.status)).collect();
    assert_eq!(got, vec![("tr_fail", Status::Error), ("tr_retry", Status::Retried)]);
    assert_eq!(
        f.failures[0].failure_reason.as_deref(),
        Some("RateLimitError: 429 Too Many Requests")
    );
    assert_eq!(
        f.failures[1].failure_reason.as_deref(),
        Some("search: TimeoutError: search timed out")
    );

    // the dashboard port serves the same API under /api
    let via_dash: Value =
        reqwest::get(format!("http://{}/api/traces/tr_ok", srv.bound.dashboard.unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(via_dash["id"], "tr_ok");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_announces_each_stored_trace() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let c = srv.client();
    let mut sub = c.subscribe().await.unwrap();
    let hello = sub.next().await.unwrap().unwrap();
    assert_eq!(hello["type"], "system.connected");
    assert_eq!(hello["version"], tracellm_server::VERSION);
    for i in 0..3 {
        c.ingest(&agent_trace(&format!("tr_{i}"), i, false)).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev["type"], "trace.created");
        assert_eq!(ev["trace"]["id"], format!("tr_{i}"));
        assert_eq!(ev["trace"]["tokens"]["total"], 196);
        // the event follows the commit: the trace is readable when it is announced
        c.get_trace(&format!("tr_{i}")).await.unwrap();
    }
    c.ingest(&agent_trace("tr_0", 0, true)).await.unwrap();
    let ev =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev["type"], "trace.updated");
    assert_eq!(ev["trace"]["status"], "retried");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    for i in 0..20 {
        srv.client().ingest(&agent_trace(&format!("tr_{i}"), i, i % 2 == 0)).await.unwrap();
    }
    let before = srv.client().get_trace("tr_7").await.unwrap();
    srv.stop().await;
    let srv = TestServer::start(dir.path()).await;
    let c = srv.client();
    assert_eq!(c.get_trace("tr_7").await.unwrap(), before);
    assert_eq!(c.list_traces(&[("limit", "100")]).await.unwrap().traces.len(), 20);
    assert_eq!(
        c.list_traces(&[("q", "transformers"), ("limit", "100")]).await.unwrap().traces.len(),
        20
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_search_and_pages_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let c = srv.client();
    let docs: Vec<Value> = (0..30u32)
        .map(|i| {
            let mut d = agent_trace(&format!("tr_{i:02}"), i, i % 3 == 0);
            d["tags"] = json!([if i % 2 == 0 { "even" } else { "odd" }]);
            d["user_id"] = json!(format!("user{}", i % 4));
            d["spans"][0]["input"] =
                json!(if i % 5 == 0 { "quokka question" } else { "other question" });
            d
        })
        .collect();
    c.ingest(&json!({"traces": docs})).await.unwrap();
    let count = |q: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move { c.list_traces(q).await.unwrap().traces.len() }
    };
    assert_eq!(count(&[("status", "retried")]).await, 10);
    assert_eq!(count(&[("status", "success,retried")]).await, 30);
    assert_eq!(count(&[("tag", "even")]).await, 15);
    assert_eq!(count(&[("user_id", "user1")]).await, 8);
    assert_eq!(count(&[("q", "quokka")]).await, 6);
    assert_eq!(count(&[("q", "quokka"), ("tag", "even")]).await, 3);
    assert_eq!(
        count(&[("since", "2026-05-31T10:10:00Z"), ("until", "2026-05-31T10:20:00Z")]).await,
        10
    );
    assert_eq!(count(&[("model", "gpt-4o"), ("session_id", "sess-1")]).await, 30);
    // pages of 7 visit all 30 once
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "7")];
        if let Some(cur) = &cursor {
            q.push(("cursor", cur.as_str()));
        }
        let p = c.list_traces(&q).await.unwrap();
        for t in &p.traces {
            assert!(seen.insert(t.id.clone()));
        }
        match p.next_cursor {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    // bad parameters are named
    match c.list_traces(&[("status", "weird")]).await {
        Err(ClientError::Api { status: 400, message, .. }) => {
            assert!(message.contains("status"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match c.get_trace("missing").await {
        Err(ClientError::Api { status: 404, code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("{other:?}"),
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let c = srv.client();
    let url = srv.url();
    c.ingest(&agent_trace("tr_keep", 1, false)).await.unwrap();
    let before = c.get_trace("tr_keep").await.unwrap();

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", "application/json", b"{\"id\": ".to_vec(), 400, "invalid JSON"),
        (
            "wrong type",
            "application/json",
            br#"{"spans": [{"id": "a", "latency_ms": "fast"}]}"#.to_vec(),
            422,
            "spans[0].latency_ms",
        ),
        ("missing spans", "application/json", br#"{"name": "nothing"}"#.to_vec(), 422, "spans"),
        (
            "invalid timestamp",
            "application/json",
            br#"{"spans": [{"id": "a", "start_time": "2026-13-45"}]}"#.to_vec(),
            422,
            "spans[0].start_time",
        ),
        ("invalid UTF-8", "application/json", b"{\"prompt\": \"\xff\xfe\"}".to_vec(), 400, "UTF-8"),
        (
            "deep nesting",
            "application/json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            400,
            "nested too deeply",
        ),
        ("not JSON", "text/plain", b"hello".to_vec(), 415, "application/json"),
        (
            "batch item invalid",
            "application/json",
            br#"{"traces": [{"prompt": "ok"}, {"spans": [{"kind": "wizard"}]}]}"#.to_vec(),
            422,
            "traces[1].spans[0].kind",
        ),
        ("array body", "application/json", b"[]".to_vec(), 422, "got an array"),
    ];
    for (what, ct, body, status, needle) in cases {
        let (got, v) = post_raw(&url, ct, body).await;
        assert_eq!(got, status, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: message {msg:?} should name {needle:?}");
        assert!(v["error"]["code"].is_string(), "{what}");
    }
    // an 11 MB body is refused before it is read whole
    let big = format!("{{\"prompt\": \"{}\"}}", "x".repeat(11 * 1024 * 1024));
    let (got, v) = post_raw(&url, "application/json", big.into_bytes()).await;
    assert_eq!(got, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");

    // nothing from the refused batch was stored, and the earlier trace is intact
    let page = c.list_traces(&[]).await.unwrap();
    assert_eq!(page.traces.len(), 1);
    assert_eq!(c.get_trace("tr_keep").await.unwrap(), before);

    // a trace with 50,000 spans is valid and stored whole
    let spans: Vec<Value> = (0..50_000)
        .map(|i| json!({"id": format!("s{i}"), "parent_id": if i == 0 { Value::Null } else { json!("s0") },
            "name": "step", "kind": "tool", "start_time": 1_780_000_000_000i64 + i, "latency_ms": 1}))
        .collect();
    let (got, v) = post_raw(
        &url,
        "application/json",
        serde_json::to_vec(&json!({"id": "tr_big", "spans": spans})).unwrap(),
    )
    .await;
    assert_eq!(got, 202, "{v}");
    let big = c.get_trace("tr_big").await.unwrap();
    assert_eq!(big.spans.len(), 50_000);
    assert_eq!(c.health().await.unwrap().status, "ok");

    // unknown routes and methods answer in the error shape
    let r = reqwest::get(format!("{url}/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let r = reqwest::Client::new().delete(format!("{url}/traces")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let doc: Value =
        reqwest::get(format!("{}/openapi.json", srv.url())).await.unwrap().json().await.unwrap();
    for path in [
        "/",
        "/traces",
        "/traces/{id}",
        "/traces/{id}/spans/{span_id}",
        "/v1/traces",
        "/analytics",
        "/failures",
        "/ws",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from openapi.json");
    }
    assert!(doc["paths"]["/traces"].get("post").is_some());
    assert!(doc["components"]["schemas"].get("Trace").is_some());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_dashboard_origin() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let dash = format!("http://127.0.0.1:{}", srv.bound.dashboard.unwrap().port());
    let http = reqwest::Client::new();
    let ok =
        http.get(format!("{}/traces", srv.url())).header("origin", &dash).send().await.unwrap();
    assert_eq!(ok.headers().get("access-control-allow-origin").unwrap(), dash.as_str());
    let evil = http
        .get(format!("{}/traces", srv.url()))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_port_serves_the_bundle_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let dash = format!("http://{}", srv.bound.dashboard.unwrap());
    for path in ["/", "/traces", "/traces/tr_anything?span=x", "/analytics"] {
        let r = reqwest::get(format!("{dash}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains("<script"), "{path}: the app's index.html");
    }
    let health: Value = reqwest::get(format!("{dash}/api/")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let health: Value = reqwest::get(format!("{dash}/api")).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let r = reqwest::get(format!("{dash}/assets/missing.js")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    srv.stop().await;
}

/// A trace bigger than one page of spans is streamed: the same JSON document, every span once,
/// in start order, with or without payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_trace_streams_whole() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let n = 1_234;
    // listed out of start order: the answer orders them
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            let ms = (i * 7919) % n;
            let parent = if i == 0 { Value::Null } else { json!("s0") };
            json!({"id": format!("s{i}"), "parent_id": parent, "name": format!("step {i}"),
                "kind": if i == 0 { "agent" } else { "tool" },
                "start_time": 1_780_000_000_000i64 + if i == 0 { -1 } else { ms as i64 },
                "end_time": 1_780_000_002_000i64, "input": {"q": format!("question {i}")},
                "output": format!("answer {i}")})
        })
        .collect();
    let c = srv.client();
    c.ingest(&json!({"id": "big", "name": "crawl", "spans": spans})).await.unwrap();

    let resp = reqwest::get(format!("{}/traces/big", srv.url())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["id"], "big");
    assert_eq!(t["span_count"], n);
    let got = t["spans"].as_array().unwrap();
    assert_eq!(got.len(), n);
    let starts: Vec<_> = got
        .iter()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s["start_time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "spans are in start order");
    let mut ids: Vec<&str> = got.iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every span once");
    let s7 = got.iter().find(|s| s["id"] == "s7").unwrap();
    assert_eq!(s7["output"], "answer 7");
    assert_eq!(s7["input"]["q"], "question 7");
    // the streamed document is the one the typed client reads
    let typed = c.get_trace("big").await.unwrap();
    assert_eq!(typed.spans.len(), n);
    assert_eq!(serde_json::to_value(&typed).unwrap(), t);

    let lean: Value = reqwest::get(format!("{}/traces/big?payloads=false", srv.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lean_spans = lean["spans"].as_array().unwrap();
    assert_eq!(lean_spans.len(), n);
    assert!(lean_spans.iter().all(|s| s["input"].is_null() && s["output"].is_null()));
    assert_eq!(lean_spans[0]["id"], got[0]["id"]);
    srv.stop().await;
}
