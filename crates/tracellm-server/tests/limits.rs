//! Every limit on what a request may carry (docs/SECURITY.md, "Limits"): just under it passes,
//! just over it gets the documented 4xx naming the limit, nothing stored changes, and the server
//! keeps serving. Small limits keep the requests small.

mod common;

use common::{TestServer, post};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, any_value::Value as V,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
use prost::Message;
use serde_json::{Value, json};
use tracellm_core::MAX_TOKENS;

const TRACE: [u8; 16] = [7; 16];

fn otlp_span(trace: u8, id: u8, parent: Option<u8>, attrs: Vec<KeyValue>) -> Span {
    let mut t = TRACE.to_vec();
    t[15] = trace;
    Span {
        trace_id: t,
        span_id: vec![0, 0, 0, 0, 0, 0, 1, id],
        parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, 1, p]).unwrap_or_default(),
        name: format!("span{id}"),
        start_time_unix_nano: 1_780_000_000_000_000_000 + id as u64 * 1_000_000,
        end_time_unix_nano: 1_780_000_001_000_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn otlp(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn trace_hex(trace: u8) -> String {
    let mut t = TRACE.to_vec();
    t[15] = trace;
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// Native spans: `n` spans named `s{i}` in a chain when `chain`, else all under `s0`.
fn native(id: &str, n: usize, chain: bool) -> Value {
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            let parent = match i {
                0 => Value::Null,
                _ if chain => json!(format!("s{}", i - 1)),
                _ => json!("s0"),
            };
            json!({"id": format!("s{i}"), "parent_id": parent, "name": "step",
                "start_time": 1_780_000_000_000i64 + i as i64, "latency_ms": 1})
        })
        .collect();
    json!({"id": id, "spans": spans})
}

async fn post_json(url: &str, path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let (status, _, bytes) = post(url, path, "application/json", false, body.into()).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn post_pb(url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let (status, _, bytes) = post(url, "/v1/traces", "application/x-protobuf", false, body).await;
    (status, bytes)
}

/// The error of a refused request, checked for its status, code and a message naming `needle`.
#[track_caller]
fn refused(got: (u16, Value), status: u16, code: &str, needle: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} should name {needle:?}");
}

fn error_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{url}{path}")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// What is stored: every trace id, and the whole of one trace.
async fn snapshot(url: &str, id: &str) -> (Vec<String>, Value) {
    let (_, page) = get(url, "/traces?limit=500").await;
    let ids = page["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    (ids, get(url, &format!("/traces/{id}")).await.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(dir.path(), |c| {
        c.limits.body_bytes = 64 * 1024;
        c.limits.max_spans_per_request = 5;
        c.limits.max_json_depth = 10;
        c.normalize.max_spans = 4;
    })
    .await;
    let url = srv.url();
    assert_eq!(post_json(&url, "/traces", native("tr_keep", 3, false).to_string()).await.0, 202);
    let before = snapshot(&url, "tr_keep").await;

    // body size, native: a body of exactly the limit is read, one byte more is 413
    let pad = |n: usize| {
        let doc = json!({"id": "tr_pad", "prompt": "p", "response": ""}).to_string();
        let fill = n - doc.len();
        json!({"id": "tr_pad", "prompt": "p", "response": "x".repeat(fill)}).to_string()
    };
    assert_eq!(pad(64 * 1024).len(), 64 * 1024);
    assert_eq!(post_json(&url, "/traces", pad(64 * 1024)).await.0, 202);
    refused(
        post_json(&url, "/traces", pad(64 * 1024 + 1)).await,
        413,
        "payload_too_large",
        "limit of 65536 bytes",
    );
    // body size after gzip: 1 MB of protobuf compresses far below the limit and is still refused
    let mut big =
        otlp_span(9, 1, None, vec![kv("input.value", V::StringValue("x".repeat(1 << 20)))]);
    big.name = "big".into();
    let (status, _, bytes) =
        post(&url, "/v1/traces", "application/x-protobuf", true, otlp(vec![big])).await;
    refused((status, error_of(&bytes)), 413, "payload_too_large", "decompressed body exceeds");
    let (status, _, _) = post(
        &url,
        "/v1/traces",
        "application/x-protobuf",
        true,
        otlp(vec![otlp_span(9, 1, None, vec![kv("a", V::StringValue("x".repeat(60_000)))])]),
    )
    .await;
    assert_eq!(status, 200, "an inflated body under the limit passes");

    // spans per request: a batch's spans are counted over all its traces
    let batch =
        |n: usize| json!({"traces": [native("tr_b1", 3, false), native("tr_b2", n - 3, false)]});
    assert_eq!(post_json(&url, "/traces", batch(5).to_string()).await.0, 202);
    refused(
        post_json(&url, "/traces", batch(6).to_string()).await,
        413,
        "too_many_spans",
        "--max-spans-per-request",
    );
    let spans = |n: u8| (1..=n).map(|i| otlp_span(2, i, (i > 1).then_some(1), vec![])).collect();
    let (status, bytes) = post_pb(&url, otlp(spans(6))).await;
    refused((status, error_of(&bytes)), 413, "too_many_spans", "6 spans, more than the limit of 5");

    // spans per trace: native refuses the document; OTLP refuses the request that would make
    // the stored trace too big, and the trace keeps what it had
    refused(
        post_json(&url, "/traces", native("tr_big", 5, false).to_string()).await,
        422,
        "invalid_field",
        "--max-spans-per-trace",
    );
    assert_eq!(post_pb(&url, otlp(spans(3))).await.0, 200);
    let more: Vec<Span> = (4..=5).map(|i| otlp_span(2, i, Some(1), vec![])).collect();
    let (status, bytes) = post_pb(&url, otlp(more)).await;
    refused((status, error_of(&bytes)), 400, "invalid_request", "--max-spans-per-trace");
    let (_, t) = get(&url, &format!("/traces/{}", trace_hex(2))).await;
    assert_eq!(t["span_count"], 3);

    // JSON depth: 10 levels pass, 11 are refused before parsing, native and OTLP/JSON alike
    let nested = |levels: usize| {
        // the document is level 1, "spans" 2, the span 3, "attributes" 4
        let v = (0..levels - 4).fold(json!(1), |v, _| json!([v]));
        json!({"id": "tr_deep", "spans": [{"id": "a", "attributes": {"v": v}}]}).to_string()
    };
    assert_eq!(tracellm_core::json_depth_exceeded(nested(10).as_bytes(), 10), None);
    assert_eq!(post_json(&url, "/traces", nested(10)).await.0, 202);
    refused(
        post_json(&url, "/traces", nested(11)).await,
        400,
        "invalid_json",
        "more than 10 levels",
    );
    refused(
        post_json(
            &url,
            "/v1/traces",
            format!("{{\"resourceSpans\": {}1{}}}", "[".repeat(10), "]".repeat(10)),
        )
        .await,
        400,
        "invalid_json",
        "--max-json-depth",
    );

    // nothing above changed what was stored before, and the server still serves
    let (ids, kept) = snapshot(&url, "tr_keep").await;
    assert_eq!(kept, before.1);
    for id in ["tr_big", "tr_b1"] {
        assert_eq!(ids.iter().filter(|i| *i == id).count(), (id == "tr_b1") as usize, "{id}");
    }
    assert_eq!(post_json(&url, "/traces", native("tr_after", 2, true).to_string()).await.0, 202);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_span_limits_refuse_native_and_trim_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(dir.path(), |c| {
        c.normalize.max_attributes = 3;
        c.normalize.max_events = 2;
        c.limits.otel.max_attributes = 3;
        c.limits.otel.max_events = 2;
        c.limits.otel.max_value_depth = 2;
    })
    .await;
    let url = srv.url();
    let attrs =
        |n: usize| (0..n).map(|i| (format!("a{i}"), json!(i))).collect::<serde_json::Map<_, _>>();
    let events = |n: usize| (0..n).map(|i| json!({"name": format!("e{i}")})).collect::<Vec<_>>();
    let doc = |a: usize, e: usize| {
        json!({"id": format!("tr_{a}_{e}"), "spans": [{"id": "s", "attributes": attrs(a), "events": events(e)}]})
            .to_string()
    };
    assert_eq!(post_json(&url, "/traces", doc(3, 2)).await.0, 202);
    refused(
        post_json(&url, "/traces", doc(4, 2)).await,
        422,
        "invalid_field",
        "spans[0].attributes: 4 attributes exceed the limit of 3 per span (--max-attributes)",
    );
    refused(
        post_json(&url, "/traces", doc(3, 3)).await,
        422,
        "invalid_field",
        "spans[0].events: 3 events exceed the limit of 2 per span (--max-events)",
    );

    // OTLP keeps the first N and says what it dropped in partialSuccess
    let nested = AnyValue {
        value: Some(V::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::ArrayValue(ArrayValue {
                            values: vec![AnyValue { value: Some(V::IntValue(1)) }],
                        })),
                    }],
                })),
            }],
        })),
    };
    let mut sp =
        otlp_span(1, 1, None, (0..4).map(|i| kv(&format!("k{i}"), V::IntValue(i))).collect());
    sp.attributes[0].value = Some(nested);
    sp.events = (0..3).map(|i| Event { name: format!("e{i}"), ..Default::default() }).collect();
    let (status, bytes) = post_pb(&url, otlp(vec![sp])).await;
    assert_eq!(status, 200);
    let ps = ExportTraceServiceResponse::decode(&bytes[..]).unwrap().partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 0);
    assert!(
        ps.error_message.contains("kept the first 3 attributes, dropped 1"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("kept the first 2 events, dropped 1"),
        "{}",
        ps.error_message
    );
    let (_, t) = get(&url, &format!("/traces/{}", trace_hex(1))).await;
    let s = &t["spans"][0];
    assert_eq!(s["events"].as_array().unwrap().len(), 2);
    assert_eq!(s["attributes"]["k0"], json!([["[nested too deeply]"]]), "{s}");
    assert!(s["attributes"].get("k3").is_none());
    srv.stop().await;
}

/// An AnyValue nested `n` arrays deep.
fn deep_value(n: usize) -> AnyValue {
    (0..n).fold(AnyValue { value: Some(V::IntValue(1)) }, |v, _| AnyValue {
        value: Some(V::ArrayValue(ArrayValue { values: vec![v] })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_values_nested_past_the_decoder_are_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    // An attribute 40 arrays deep is within prost's limit of 100 nested messages (each level is
    // an AnyValue and an ArrayValue) and is cut at --max-value-depth (32); one 60 deep is not.
    let sp = |depth| {
        let mut s = otlp_span(3, 1, None, vec![kv("deep", V::IntValue(0))]);
        s.attributes[0].value = Some(deep_value(depth));
        s
    };
    assert_eq!(post_pb(&srv.url(), otlp(vec![sp(40)])).await.0, 200);
    let (_, t) = get(&srv.url(), &format!("/traces/{}", trace_hex(3))).await;
    assert!(t["spans"][0]["attributes"]["deep"].to_string().contains("[nested too deeply]"));
    let (status, bytes) = post_pb(&srv.url(), otlp(vec![sp(60)])).await;
    refused((status, error_of(&bytes)), 400, "invalid_otlp", "recursion limit");
    // gRPC: INVALID_ARGUMENT (HTTP's 400), not INTERNAL
    let addr = srv.bound.otlp_grpc.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let deep = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![sp(60)], ..Default::default() }],
            ..Default::default()
        }],
    };
    let err = client.export(deep).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("recursion limit"), "{}", err.message());
    // the gRPC service still answers
    let ok = ExportTraceServiceRequest::decode(&otlp(vec![otlp_span(4, 1, None, vec![])])[..]);
    client.export(ok.unwrap()).await.unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_spans_per_request_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(dir.path(), |c| c.limits.max_spans_per_request = 2).await;
    let addr = srv.bound.otlp_grpc.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let req = |n: u8| {
        ExportTraceServiceRequest::decode(
            &otlp((1..=n).map(|i| otlp_span(5, i, (i > 1).then_some(1), vec![])).collect())[..],
        )
        .unwrap()
    };
    let err = client.export(req(3)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("--max-spans-per-request"), "{}", err.message());
    assert!(client.export(req(2)).await.is_ok());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_chains_are_walked_without_recursion_and_cycles_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let url = srv.url();
    // a chain 20,000 spans deep: no recursion anywhere on the path (ingest, store, read back)
    let (status, v) =
        post_json(&url, "/traces", native("tr_chain", 20_000, true).to_string()).await;
    assert_eq!(status, 202, "{v}");
    let (status, t) = get(&url, "/traces/tr_chain").await;
    assert_eq!(status, 200);
    assert_eq!(t["span_count"], 20_000);
    // a cycle of parent ids is refused, native and OTLP
    let cycle = json!({"id": "tr_cycle", "spans": [{"id": "a", "parent_id": "c"},
        {"id": "b", "parent_id": "a"}, {"id": "c", "parent_id": "b"}]});
    refused(post_json(&url, "/traces", cycle.to_string()).await, 422, "invalid_field", "cycle");
    let (status, bytes) = post_pb(
        &url,
        otlp(vec![otlp_span(6, 1, Some(2), vec![]), otlp_span(6, 2, Some(1), vec![])]),
    )
    .await;
    refused((status, error_of(&bytes)), 400, "invalid_request", "cycle");
    assert_eq!(get(&url, "/traces/tr_cycle").await.0, 404);
    assert_eq!(get(&url, &format!("/traces/{}", trace_hex(6))).await.0, 404);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_numbers_are_refused_or_clamped_never_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let url = srv.url();
    let span = |extra: Value| {
        let mut s = json!({"id": "s", "name": "call", "kind": "llm", "model": "gpt-4o",
            "start_time": "2026-05-31T10:00:00Z"});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"spans": [s]}).to_string()
    };
    // native: the largest accepted values pass; beyond, 422 naming the field
    let ok = span(json!({"tokens": {"prompt": MAX_TOKENS, "completion": MAX_TOKENS},
        "cost_usd": 1e9, "latency_ms": 3.1e12}));
    let (status, v) = post_json(&url, "/traces", ok).await;
    assert_eq!(status, 202, "{v}");
    let id = v["ids"][0].as_str().unwrap().to_string();
    let (_, t) = get(&url, &format!("/traces/{id}")).await;
    assert_eq!(t["tokens"]["total"], MAX_TOKENS, "the roll-up saturates at the cap");
    for (extra, field, needle) in [
        (json!({"tokens": {"prompt": u64::MAX}}), "spans[0].tokens.prompt", "largest count"),
        (json!({"tokens": MAX_TOKENS + 1}), "spans[0].tokens", "largest count"),
        (json!({"prompt_tokens": -1}), "spans[0].prompt_tokens", "non-negative"),
        (json!({"cost_usd": 1.5e9}), "spans[0].cost_usd", "largest value"),
        (json!({"latency_ms": 1e300}), "spans[0].latency_ms", "largest value"),
        (json!({"latency_ms": -5}), "spans[0].latency_ms", "negative"),
        (json!({"time_to_first_token_ms": 1e20}), "spans[0].time_to_first_token_ms", "largest"),
        (json!({"start_time": "1800-01-01T00:00:00Z"}), "spans[0].start_time", "outside"),
        (json!({"end_time": 1e19}), "spans[0].end_time", "out of range"),
        (json!({"retries": 5_000_000_000u64}), "spans[0].retries", ""),
    ] {
        let (status, v) = post_json(&url, "/traces", span(extra.clone())).await;
        if field == "spans[0].retries" {
            // unknown span fields are attributes: retries is a trace field
            assert_eq!(status, 202, "{v}");
            let doc = json!({"prompt": "p", "retries": 5_000_000_000u64}).to_string();
            refused(post_json(&url, "/traces", doc).await, 422, "invalid_field", "retries");
            continue;
        }
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
        refused((status, v), 422, "invalid_field", field);
    }
    // JSON itself has no NaN or Infinity; numbers beyond f64 are invalid JSON
    for body in [r#"{"prompt": "p", "cost_usd": NaN}"#, r#"{"prompt": "p", "latency_ms": 1e400}"#] {
        refused(post_json(&url, "/traces", body).await, 400, "invalid_json", "invalid JSON");
    }

    // OTLP: token counts clamp to the cap, out-of-range costs and durations are ignored, and
    // a span whose time is past 2200 is refused alone
    let sp = otlp_span(
        7,
        1,
        None,
        vec![
            kv("gen_ai.request.model", V::StringValue("gpt-4o".into())),
            kv("gen_ai.usage.input_tokens", V::StringValue(u64::MAX.to_string())),
            kv("gen_ai.usage.output_tokens", V::IntValue(i64::MAX)),
            kv("llm.cost.total", V::DoubleValue(f64::INFINITY)),
            kv("gen_ai.response.time_to_first_chunk", V::DoubleValue(f64::NAN)),
        ],
    );
    let mut late = otlp_span(7, 2, Some(1), vec![]);
    late.end_time_unix_nano = u64::MAX;
    let (status, bytes) = post_pb(&url, otlp(vec![sp, late])).await;
    assert_eq!(status, 200);
    let ps = ExportTraceServiceResponse::decode(&bytes[..]).unwrap().partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 1);
    assert!(ps.error_message.contains("endTimeUnixNano"), "{}", ps.error_message);
    let (_, t) = get(&url, &format!("/traces/{}", trace_hex(7))).await;
    let s = &t["spans"][0];
    assert_eq!(s["tokens"]["prompt"], MAX_TOKENS);
    assert_eq!(s["tokens"]["total"], MAX_TOKENS);
    assert!(s["time_to_first_token_ms"].is_null(), "{s}");
    assert!(s["cost_usd"].as_f64().is_none_or(f64::is_finite), "{s}");

    // analytics over traces at the cap adds without overflow; a bucket too wide is a 400
    let (status, a) = get(&url, "/analytics").await;
    assert_eq!(status, 200, "{a}");
    assert!(a["totals"]["tokens"]["total"].as_u64().unwrap() >= 2 * MAX_TOKENS);
    let (status, v) = get(&url, "/analytics?bucket=9223372036854775807").await;
    refused((status, v), 400, "invalid_parameter", "bucket");
    let (status, v) = get(&url, "/traces?cursor=9223372036854775807_9223372036854775807").await;
    assert_eq!(status, 200, "{v}");
    srv.stop().await;
}
