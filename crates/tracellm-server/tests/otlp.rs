//! OTLP ingest end to end: protobuf, JSON, gzip, gRPC, partial success, bad input.

mod common;

use std::time::Duration;

use common::{TestServer, post};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value, json};

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn tid(n: u8) -> Vec<u8> {
    let mut t = vec![0xab; 16];
    t[15] = n;
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: tid(trace),
        span_id: vec![0, 0, 0, 0, 0, 0, 1, id],
        parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, 1, p]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_780_000_000_000_000_000 + id as u64 * 10_000_000,
        end_time_unix_nano: 1_780_000_001_000_000_000 - id as u64 * 10_000_000,
        attributes: attrs,
        status: Some(Status { code: 1, message: String::new() }),
        ..Default::default()
    }
}

fn llm(trace: u8, id: u8, parent: u8) -> Span {
    span(
        trace,
        id,
        Some(parent),
        "ChatCompletion",
        vec![
            kv("openinference.span.kind", V::StringValue("LLM".into())),
            kv("llm.model_name", V::StringValue("gpt-4o".into())),
            kv("llm.input_messages.0.message.role", V::StringValue("user".into())),
            kv("llm.input_messages.0.message.content", V::StringValue("Explain wombats".into())),
            kv("llm.output_messages.0.message.role", V::StringValue("assistant".into())),
            kv(
                "llm.output_messages.0.message.content",
                V::StringValue("Wombats are marsupials".into()),
            ),
            kv("llm.token_count.prompt", V::IntValue(12)),
            kv("llm.token_count.completion", V::IntValue(184)),
        ],
    )
}

fn root(trace: u8) -> Span {
    span(
        trace,
        1,
        None,
        "agent.run",
        vec![
            kv("openinference.span.kind", V::StringValue("AGENT".into())),
            kv("input.value", V::StringValue("Explain wombats".into())),
            kv("session.id", V::StringValue("sess-42".into())),
        ],
    )
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{url}{path}")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_over_http_becomes_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let body = request(vec![root(1), llm(1, 2, 1)]).encode_to_vec();
    let (status, headers, bytes) =
        post(&srv.url(), "/v1/traces", "application/x-protobuf", false, body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(&bytes[..]).unwrap();
    assert!(resp.partial_success.is_none());
    let (code, t) = get(&srv.url(), &format!("/traces/{}", hex(&tid(1)))).await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["status"], "success");
    assert_eq!(t["name"], "agent.run");
    assert_eq!(t["session_id"], "sess-42");
    assert_eq!(t["model"], "gpt-4o");
    assert_eq!(t["tokens"]["total"], 196);
    assert!((t["cost_usd"].as_f64().unwrap() - 0.00187).abs() < 1e-12);
    assert_eq!(t["spans"][1]["kind"], "llm");
    assert_eq!(t["spans"][1]["parent_id"], "0000000000000101");
    assert_eq!(t["spans"][1]["input"]["messages"][0]["content"], "Explain wombats");
    assert_eq!(t["response"], "Wombats are marsupials");
    let (_, found) = get(&srv.url(), "/traces?q=marsupials").await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_gzip_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let doc = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat gpt-4o",
    "kind": 3, "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000000900000000",
    "attributes": [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 20}},
        {"key": "gen_ai.input.messages", "value": {"stringValue": "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hello\"}]}]"}}
    ]}]}]}]});
    let body = serde_json::to_vec(&doc).unwrap();
    let (status, headers, bytes) =
        post(&srv.url(), "/v1/traces", "application/json", true, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json!({}));
    let (code, t) = get(&srv.url(), "/traces/5b8efff798038103d269b633813fc60c").await;
    assert_eq!(code, 200);
    assert_eq!(t["spans"][0]["kind"], "llm");
    assert_eq!(t["tokens"]["prompt"], 100);
    assert_eq!(t["prompt"], "hello");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_many_requests_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut sub = srv.client().subscribe().await.unwrap();
    let _hello = sub.next().await.unwrap().unwrap();
    let send = |spans: Vec<Span>| {
        let url = srv.url();
        async move {
            post(
                &url,
                "/v1/traces",
                "application/x-protobuf",
                false,
                request(spans).encode_to_vec(),
            )
            .await
            .0
        }
    };
    assert_eq!(send(vec![llm(3, 2, 1)]).await, 200);
    let ev =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev["type"], "trace.created");
    assert_eq!(ev["trace"]["status"], "running");
    let (_, t) = get(&srv.url(), &format!("/traces/{}", hex(&tid(3)))).await;
    assert_eq!(t["status"], "running", "visible while its root has not arrived");
    assert_eq!(send(vec![llm(3, 2, 1)]).await, 200, "a retrying exporter resends");
    let ev =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev["type"], "trace.updated");
    assert_eq!(send(vec![root(3)]).await, 200);
    let ev =
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev["type"], "trace.updated");
    assert_eq!(ev["trace"]["status"], "success");
    let (_, t) = get(&srv.url(), &format!("/traces/{}", hex(&tid(3)))).await;
    assert_eq!(t["span_count"], 2, "the resent span is stored once");
    assert_eq!(t["tokens"]["total"], 196);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let addr = srv.bound.otlp_grpc.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut bad = llm(4, 3, 1);
    bad.span_id = vec![1, 2];
    let resp = client.export(request(vec![root(4), llm(4, 2, 1), bad])).await.unwrap().into_inner();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("spanId must be 8 bytes, got 2"), "{}", ps.error_message);
    let (code, t) = get(&srv.url(), &format!("/traces/{}", hex(&tid(4)))).await;
    assert_eq!(code, 200);
    assert_eq!(t["span_count"], 2);
    let mut all_bad = llm(5, 2, 1);
    all_bad.trace_id.clear();
    let err = client.export(request(vec![all_bad])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("traceId must be 16 bytes"), "{}", err.message());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_log_events_land_on_their_span() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let body_kv = |pairs: Vec<(&str, V)>| AnyValue {
        value: Some(V::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
            values: pairs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })),
    };
    let chat = span(
        6,
        1,
        None,
        "chat",
        vec![
            kv("gen_ai.system", V::StringValue("openai".into())),
            kv("gen_ai.request.model", V::StringValue("gpt-4o".into())),
        ],
    );
    let log = |name: &str, body: AnyValue| LogRecord {
        trace_id: tid(6),
        span_id: vec![0, 0, 0, 0, 0, 0, 1, 1],
        event_name: name.into(),
        body: Some(body),
        time_unix_nano: 1_780_000_000_100_000_000,
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(
                        "gen_ai.user.message",
                        body_kv(vec![("content", V::StringValue("How tall is a giraffe?".into()))]),
                    ),
                    log(
                        "gen_ai.choice",
                        body_kv(vec![
                            ("index", V::IntValue(0)),
                            ("finish_reason", V::StringValue("stop".into())),
                            (
                                "message",
                                V::KvlistValue(
                                    opentelemetry_proto::tonic::common::v1::KeyValueList {
                                        values: vec![kv(
                                            "content",
                                            V::StringValue("About 5 metres.".into()),
                                        )],
                                    },
                                ),
                            ),
                        ]),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // logs first, span after: the content still lands on the span
    let (status, _, _) =
        post(&srv.url(), "/v1/logs", "application/x-protobuf", false, logs.encode_to_vec()).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &srv.url(),
        "/v1/traces",
        "application/x-protobuf",
        false,
        request(vec![chat]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, t) = get(&srv.url(), &format!("/traces/{}", hex(&tid(6)))).await;
    assert_eq!(t["spans"][0]["input"]["messages"][0]["content"], "How tall is a giraffe?");
    assert_eq!(t["spans"][0]["input"]["messages"][0]["role"], "user");
    assert_eq!(t["response"], "About 5 metres.");
    assert!(
        t["tokens"]["estimated"].as_bool().unwrap(),
        "tokens estimated from the logged messages"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let url = srv.url();
    let good = request(vec![root(7), llm(7, 2, 1)]).encode_to_vec();
    let msg = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .map(|v| v["error"]["message"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };

    let (s, _, b) =
        post(&url, "/v1/traces", "application/x-protobuf", false, good[..good.len() - 7].to_vec())
            .await;
    assert_eq!(s, 400, "truncated protobuf");
    assert!(msg(&b).contains("invalid OTLP protobuf"), "{}", msg(&b));
    let (s, _, b) = post(&url, "/v1/traces", "text/plain", false, good.clone()).await;
    assert_eq!(s, 415);
    assert!(msg(&b).contains("application/x-protobuf"));
    let (s, _, b) =
        post(&url, "/v1/traces", "application/x-protobuf", false, b"\x1f\x8b not gzip".to_vec())
            .await;
    assert_eq!(s, 400, "{}", msg(&b));
    let snake = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174", "name": "x"}]}]}]});
    let (s, _, b) =
        post(&url, "/v1/traces", "application/json", false, serde_json::to_vec(&snake).unwrap())
            .await;
    assert_eq!(s, 400);
    assert!(msg(&b).contains("lowerCamelCase"), "{}", msg(&b));
    let short = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8e", "spanId": "eee19b7ec3c1b174"}]}]}]});
    let (s, _, b) =
        post(&url, "/v1/traces", "application/json", false, serde_json::to_vec(&short).unwrap())
            .await;
    assert_eq!(s, 400);
    assert!(msg(&b).contains("traceId must be 16 bytes, got 2"), "{}", msg(&b));
    // a gzip bomb: small on the wire, over the limit once inflated
    let zeros = vec![0u8; 11 * 1024 * 1024];
    let (s, _, b) = post(&url, "/v1/traces", "application/x-protobuf", true, zeros).await;
    assert_eq!(s, 413, "{}", msg(&b));
    assert!(msg(&b).contains("decompressed"));
    // a span with 10,000 attributes: stored, trimmed, and said so
    let mut wide = llm(8, 2, 1);
    wide.attributes.extend((0..10_000).map(|n| kv(&format!("x.{n}"), V::IntValue(n))));
    let (s, _, _) = post(&url, "/v1/traces", "application/json", false, Vec::new()).await;
    assert_eq!(s, 400, "an empty JSON body is not OTLP");
    let (s, _, b) = post(
        &url,
        "/v1/traces",
        "application/x-protobuf",
        false,
        request(vec![root(8), wide]).encode_to_vec(),
    )
    .await;
    assert_eq!(s, 200);
    let ps = ExportTraceServiceResponse::decode(&b[..]).unwrap().partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 0);
    assert!(ps.error_message.contains("dropped 9008"), "{}", ps.error_message);
    // nothing refused above was stored; the server still serves
    let (_, page) = get(&url, "/traces").await;
    assert_eq!(page["traces"].as_array().unwrap().len(), 1);
    assert_eq!(post(&url, "/v1/traces", "application/x-protobuf", false, good).await.0, 200);
    srv.stop().await;
}

/// `n` LLM spans under a root, each carrying ~1.2 KB of prompt: a request of two such traces is
/// over the size from which the server decodes, maps and stores on the blocking pool.
fn wide_trace(trace: u8, n: u8) -> Vec<Span> {
    let mut spans = vec![root(trace)];
    for id in 2..n + 2 {
        let mut s = llm(trace, id, 1);
        let prompt = format!("question {id} about numbats {}", "and echidnas ".repeat(90));
        s.attributes[3] = kv("llm.input_messages.0.message.content", V::StringValue(prompt));
        spans.push(s);
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_requests_are_stored_whole_and_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let url = srv.url();
    let msg = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .map(|v| v["error"]["message"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let mut spans = wide_trace(10, 150);
    spans.extend(wide_trace(11, 150));
    let mut bad = llm(11, 200, 1);
    bad.span_id = vec![1, 2];
    spans.push(bad);
    let body = request(spans).encode_to_vec();
    assert!(body.len() > 300 * 1024, "{} bytes", body.len());

    // protobuf: both traces whole, the bad span refused and said so
    let (s, _, b) = post(&url, "/v1/traces", "application/x-protobuf", false, body.clone()).await;
    assert_eq!(s, 200, "{}", msg(&b));
    let ps = ExportTraceServiceResponse::decode(&b[..]).unwrap().partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("spanId must be 8 bytes, got 2"), "{}", ps.error_message);
    for t in [10, 11] {
        let (code, tr) = get(&url, &format!("/traces/{}", hex(&tid(t)))).await;
        assert_eq!(code, 200, "{tr}");
        assert_eq!(tr["span_count"], 151);
        assert_eq!(tr["tokens"]["total"], 150 * 196);
        let prompt = tr["spans"][150]["input"]["messages"][0]["content"].as_str().unwrap();
        assert!(prompt.starts_with("question 151 about numbats"), "{prompt}");
    }
    let (_, found) = get(&url, "/traces?q=numbats").await;
    assert_eq!(found["traces"].as_array().unwrap().len(), 2);

    // OTLP/JSON, gzipped: inflated, then decoded on the pool too
    let text = "platypus ".repeat(150);
    let json_spans: Vec<Value> = (0..300u32)
        .map(|n| {
            json!({"traceId": hex(&tid(14)), "spanId": format!("{:016x}", n + 1),
                "name": "chat", "startTimeUnixNano": "1780000000000000000",
                "endTimeUnixNano": "1780000001000000000",
                "attributes": [{"key": "input.value", "value": {"stringValue": text}}]})
        })
        .collect();
    let doc = json!({"resourceSpans": [{"scopeSpans": [{"spans": json_spans}]}]});
    let doc = serde_json::to_vec(&doc).unwrap();
    assert!(doc.len() > 300 * 1024, "{} bytes", doc.len());
    let (s, _, b) = post(&url, "/v1/traces", "application/json", true, doc).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (code, tr) = get(&url, &format!("/traces/{}", hex(&tid(14)))).await;
    assert_eq!(code, 200, "{tr}");
    assert_eq!(tr["span_count"], 300);

    // undecodable, and every span refused: 400s that say why, nothing stored
    let (s, _, b) =
        post(&url, "/v1/traces", "application/x-protobuf", false, body[..body.len() - 9].to_vec())
            .await;
    assert_eq!(s, 400, "truncated protobuf");
    assert!(msg(&b).contains("invalid OTLP protobuf"), "{}", msg(&b));
    let mut refused = wide_trace(12, 250);
    refused.iter_mut().for_each(|s| s.trace_id.truncate(3));
    let (s, _, b) =
        post(&url, "/v1/traces", "application/x-protobuf", false, request(refused).encode_to_vec())
            .await;
    assert_eq!(s, 400);
    assert!(msg(&b).contains("all 251 spans were refused"), "{}", msg(&b));
    assert!(msg(&b).contains("traceId must be 16 bytes, got 3"), "{}", msg(&b));
    let (_, page) = get(&url, "/traces").await;
    assert_eq!(page["traces"].as_array().unwrap().len(), 3);

    // gRPC, over 64 spans
    let addr = srv.bound.otlp_grpc.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let mut spans = wide_trace(13, 100);
    let mut bad = llm(13, 120, 1);
    bad.parent_span_id = vec![9];
    spans.push(bad);
    let resp = client.export(request(spans)).await.unwrap().into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    let (code, tr) = get(&url, &format!("/traces/{}", hex(&tid(13)))).await;
    assert_eq!(code, 200, "{tr}");
    assert_eq!(tr["span_count"], 101);
    srv.stop().await;
}
