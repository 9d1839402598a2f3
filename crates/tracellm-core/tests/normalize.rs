//! One test per normalization rule of DESIGN.md.

use serde_json::{Value, json};
use tracellm_core::{NormalizeOptions, PriceTable, SpanKind, Status, Trace, normalize_trace};

fn norm(doc: Value) -> Trace {
    normalize_trace(doc, "default", &PriceTable::builtin(), &NormalizeOptions::default())
        .unwrap_or_else(|e| panic!("rejected: {e}"))
}

fn reject(doc: Value) -> String {
    normalize_trace(doc, "default", &PriceTable::builtin(), &NormalizeOptions::default())
        .expect_err("accepted an invalid document")
        .to_string()
}

fn span(id: &str, parent: Option<&str>, name: &str, kind: &str, start: &str, end: &str) -> Value {
    json!({"id": id, "parent_id": parent, "name": name, "kind": kind, "start_time": start, "end_time": end})
}

#[test]
fn the_seed_shape_is_accepted_as_is() {
    let t = norm(json!({
        "id": "tr_2kf9q3m1", "prompt": "Explain transformers", "response": "A transformer is …",
        "model": "gpt-4o", "latency_ms": 1240, "tokens": 196,
        "timestamp": "2026-05-31T10:30:00Z",
        "steps": [
            {"type": "retrieval", "name": "search docs", "latency_ms": 200, "output": ["doc1"]},
            {"type": "llm", "name": "openai.chat", "latency_ms": 900, "model": "gpt-4o",
             "prompt_tokens": 12, "completion_tokens": 184}
        ]
    }));
    assert_eq!(t.id, "tr_2kf9q3m1");
    assert_eq!(t.prompt.as_deref(), Some("Explain transformers"));
    assert_eq!(t.model.as_deref(), Some("gpt-4o"));
    assert_eq!(t.latency_ms, Some(1240.0));
    assert_eq!(t.tokens.total, 196);
    assert_eq!(t.span_count, 2);
    assert_eq!(t.spans[0].kind, SpanKind::Retriever);
    // steps without times run one after another from the trace's start
    assert_eq!(t.spans[1].start_time, t.spans[0].end_time.unwrap());
    assert_eq!(t.spans[1].tokens.unwrap().completion, 184);
    assert_eq!(t.status, Status::Success);
}

#[test]
fn timestamps_become_utc() {
    let t = norm(json!({"timestamp": "2026-05-31T12:30:00+02:00", "spans": [
        span("a", None, "root", "agent", "2026-05-31T12:30:00+02:00", "2026-05-31T10:30:01.5Z")
    ]}));
    assert_eq!(t.timestamp.to_rfc3339(), "2026-05-31T10:30:00+00:00");
    assert_eq!(t.spans[0].latency_ms, Some(1500.0));
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["timestamp"], "2026-05-31T10:30:00Z");
}

#[test]
fn field_aliases_are_understood() {
    let t = norm(json!({"trace_id": "t1", "steps": [{
        "span_id": "s1", "type": "generation", "start": "2026-05-31T10:00:00Z", "duration_ms": 50,
        "model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 4}}, "messages": [{"role": "user", "content": "hi"}]
    }]}));
    assert_eq!(t.id, "t1");
    let s = &t.spans[0];
    assert_eq!(s.id, "s1");
    assert_eq!(s.kind, SpanKind::Llm);
    assert_eq!(s.latency_ms, Some(50.0));
    let tk = s.tokens.unwrap();
    assert_eq!((tk.prompt, tk.completion, tk.total, tk.cached), (10, 5, 15, Some(4)));
    assert_eq!(s.input["messages"][0]["content"], "hi");
}

#[test]
fn retries_are_inferred_from_repeated_calls_after_a_failure() {
    let mut a =
        span("a", Some("r"), "search", "tool", "2026-05-31T10:00:01Z", "2026-05-31T10:00:02Z");
    a["error"] = json!({"type": "Timeout", "message": "took too long"});
    let mut b =
        span("b", Some("r"), "search", "tool", "2026-05-31T10:00:03Z", "2026-05-31T10:00:04Z");
    b["error"] = json!("again");
    let c = span("c", Some("r"), "search", "tool", "2026-05-31T10:00:05Z", "2026-05-31T10:00:06Z");
    let other =
        span("d", Some("r"), "search", "tool", "2026-05-31T10:00:07Z", "2026-05-31T10:00:08Z");
    let t = norm(json!({"spans": [
        span("r", None, "agent", "agent", "2026-05-31T10:00:00Z", "2026-05-31T10:00:09Z"), a, b, c, other
    ]}));
    assert_eq!(t.retries, 2, "two attempts followed failures; the fourth call followed a success");
    assert_eq!(t.status, Status::Retried);
    assert_eq!(t.error_count, 2);
    assert_eq!(t.failure_reason.as_deref(), Some("search: Timeout: took too long"));
}

#[test]
fn status_is_error_when_a_failure_is_not_recovered() {
    let mut a = span("a", Some("r"), "call", "llm", "2026-05-31T10:00:01Z", "2026-05-31T10:00:02Z");
    a["error"] = json!({"type": "RateLimitError", "message": "429"});
    let t = norm(json!({"spans": [
        span("r", None, "agent", "agent", "2026-05-31T10:00:00Z", "2026-05-31T10:00:03Z"), a
    ]}));
    assert_eq!(t.status, Status::Error);
    assert_eq!(t.failure_reason.as_deref(), Some("call: RateLimitError: 429"));
    assert_eq!(t.retries, 0);
}

#[test]
fn failure_reason_alone_makes_an_error_and_explicit_status_wins() {
    let t = norm(json!({"prompt": "p", "failure_reason": "tool crashed"}));
    assert_eq!(t.status, Status::Error);
    assert_eq!(t.failure_reason.as_deref(), Some("tool crashed"));
    let t = norm(json!({"status": "running", "spans": [
        span("r", None, "agent", "agent", "2026-05-31T10:00:00Z", "2026-05-31T10:00:03Z")
    ]}));
    assert_eq!(t.status, Status::Running);
    let t = norm(json!({"spans": [
        span("r", None, "agent", "agent", "2026-05-31T10:00:00Z", "2026-05-31T10:00:03Z")
    ]}));
    assert_eq!(t.status, Status::Success);
    assert_eq!(t.failure_reason, None);
}

#[test]
fn tokens_and_cost_roll_up_without_double_counting() {
    let mut root =
        span("r", None, "agent", "agent", "2026-05-31T10:00:00Z", "2026-05-31T10:00:03Z");
    root["tokens"] = json!({"prompt": 3000, "completion": 1500}); // a parent reporting its children's sum
    let mut a = span("a", Some("r"), "chat", "llm", "2026-05-31T10:00:01Z", "2026-05-31T10:00:02Z");
    a["model"] = json!("gpt-4o");
    a["tokens"] = json!({"prompt": 1000, "completion": 500});
    let mut b = a.clone();
    b["id"] = json!("b");
    b["start_time"] = json!("2026-05-31T10:00:02Z");
    b["end_time"] = json!("2026-05-31T10:00:02.5Z");
    b["model"] = json!("claude-sonnet-4-20250514");
    b["tokens"] = json!({"prompt": 2000, "completion": 1000});
    let t = norm(json!({"spans": [root, a, b]}));
    assert_eq!((t.tokens.prompt, t.tokens.completion, t.tokens.total), (3000, 1500, 4500));
    let gpt = (1000.0 * 2.5 + 500.0 * 10.0) / 1e6;
    let claude = (2000.0 * 3.0 + 1000.0 * 15.0) / 1e6;
    assert!((t.spans[1].cost_usd.unwrap() - gpt).abs() < 1e-12);
    assert!((t.cost_usd.unwrap() - (gpt + claude)).abs() < 1e-12);
    assert_eq!(t.model.as_deref(), Some("gpt-4o"));
}

#[test]
fn unknown_model_price_gives_null_cost_never_zero() {
    let mut a = span("a", None, "chat", "llm", "2026-05-31T10:00:01Z", "2026-05-31T10:00:02Z");
    a["model"] = json!("my-finetune-v3");
    a["tokens"] = json!({"prompt": 10, "completion": 10});
    let t = norm(json!({"spans": [a]}));
    assert_eq!(t.spans[0].cost_usd, None);
    assert_eq!(t.cost_usd, None);
    let v = serde_json::to_value(&t).unwrap();
    assert!(v["cost_usd"].is_null());
}

#[test]
fn missing_token_counts_are_estimated_and_marked() {
    let mut a = span("a", None, "chat", "llm", "2026-05-31T10:00:01Z", "2026-05-31T10:00:02Z");
    a["model"] = json!("gpt-4o");
    a["input"] = json!({"messages": [{"role": "user", "content": "hello world"}]});
    a["output"] = json!({"messages": [{"role": "assistant", "content": "hello world"}]});
    let t = norm(json!({"spans": [a]}));
    let tk = t.spans[0].tokens.unwrap();
    assert!(tk.estimated);
    assert_eq!(tk.prompt, 8); // 2 content tokens + 3 per message + 3 priming
    assert_eq!(tk.completion, 8);
    assert!(t.tokens.estimated);
    assert!(t.cost_usd.unwrap() > 0.0);
    // tool spans are not estimated
    let t = norm(
        json!({"spans": [{"id": "x", "kind": "tool", "name": "t", "start_time": "2026-05-31T10:00:00Z", "input": "some text"}]}),
    );
    assert_eq!(t.spans[0].tokens, None);
}

#[test]
fn tool_spans_get_their_call_from_input_and_output() {
    let t = norm(json!({"spans": [{"id": "x", "kind": "tool", "name": "search",
        "start_time": "2026-05-31T10:00:00Z", "input": {"q": "rust"}, "output": ["a", "b"]}]}));
    let tool = t.spans[0].tool.as_ref().unwrap();
    assert_eq!(tool.name, "search");
    assert_eq!(tool.arguments, json!({"q": "rust"}));
    assert_eq!(tool.result, json!(["a", "b"]));
}

#[test]
fn a_prompt_only_trace_gets_one_llm_span() {
    let t = norm(json!({"prompt": "Explain transformers", "response": "It is…", "model": "gpt-4o",
        "tokens": {"prompt": 12, "completion": 184}, "latency_ms": 1240, "timestamp": "2026-05-31T10:30:00Z"}));
    assert_eq!(t.span_count, 1);
    let s = &t.spans[0];
    assert_eq!(s.kind, SpanKind::Llm);
    assert_eq!(s.latency_ms, Some(1240.0));
    assert_eq!(s.input["messages"][0]["content"], "Explain transformers");
    assert_eq!(t.tokens.total, 196);
    assert!((t.cost_usd.unwrap() - (12.0 * 2.5 + 184.0 * 10.0) / 1e6).abs() < 1e-12);
}

#[test]
fn unknown_fields_are_kept_not_dropped() {
    let t = norm(json!({"customer_tier": "gold", "spans": [{"id": "x", "name": "s",
        "start_time": "2026-05-31T10:00:00Z", "temperature": 0.2}]}));
    assert_eq!(t.metadata["customer_tier"], "gold");
    assert_eq!(t.spans[0].attributes["temperature"], 0.2);
}

#[test]
fn invalid_documents_name_the_field() {
    assert!(reject(json!([1, 2])).starts_with("$: expected an object"));
    assert!(reject(json!({"name": [5]})).starts_with("name: expected a string"));
    let e = reject(json!({"spans": [{"id": "a", "start_time": "soon"}]}));
    assert!(e.starts_with("spans[0].start_time: invalid timestamp"), "{e}");
    let e = reject(json!({"spans": [{"id": "a", "kind": "wizard"}]}));
    assert!(e.starts_with("spans[0].kind: unknown kind"), "{e}");
    let e = reject(json!({"tokens": {"prompt": -1}}));
    assert!(e.starts_with("tokens.prompt"), "{e}");
    let e = reject(json!({"spans": [{"id": "a"}, {"id": "a"}]}));
    assert!(e.contains("appears more than once"), "{e}");
    let e = reject(json!({"spans": [{"id": "a", "parent_id": "ghost"}]}));
    assert!(e.contains("parent_id") && e.contains("ghost"), "{e}");
    let e =
        reject(json!({"spans": [{"id": "a", "parent_id": "b"}, {"id": "b", "parent_id": "a"}]}));
    assert!(e.contains("cycle"), "{e}");
    let e = reject(json!({"id": "has space"}));
    assert!(e.starts_with("id: id contains"), "{e}");
    let e = reject(json!({"spans": {"a": 1}}));
    assert!(e.starts_with("spans: expected an array"), "{e}");
    let e = reject(json!({"status": "meh"}));
    assert!(e.starts_with("status: unknown status"), "{e}");
}

#[test]
fn span_limit_is_enforced_and_large_traces_within_it_work() {
    let spans: Vec<Value> = (0..50_000)
        .map(|i| json!({"id": format!("s{i}"), "parent_id": if i == 0 { Value::Null } else { json!(format!("s{}", (i - 1) / 4)) },
            "name": "step", "start_time": 1_780_000_000_000i64 + i, "latency_ms": 1}))
        .collect();
    let t = norm(json!({"spans": spans}));
    assert_eq!(t.span_count, 50_000);
    let opts = NormalizeOptions { max_spans: 10, ..Default::default() };
    let e = normalize_trace(
        json!({"spans": (0..11).map(|i| json!({"id": format!("s{i}")})).collect::<Vec<_>>()}),
        "default",
        &PriceTable::builtin(),
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceed the limit of 10"), "{e}");
}

#[test]
fn a_trace_with_nothing_to_show_is_refused() {
    let e = reject(json!({"name": "empty"}));
    assert!(e.starts_with("spans: a trace needs at least one span"), "{e}");
    let e = reject(json!({"spans": []}));
    assert!(e.starts_with("spans:"), "{e}");
}

#[test]
fn a_stored_trace_input_leaves_out_what_was_not_said_and_reads_older_rows() {
    let input = tracellm_core::normalize::TraceInput {
        session_id: Some("s-1".into()),
        ..Default::default()
    };
    let text = serde_json::to_string(&input).unwrap();
    assert_eq!(text, r#"{"session_id":"s-1","tags":[],"metadata":{}}"#);
    // rows written before: every field present, null when not said
    let older = r#"{"id":null,"name":null,"status":null,"timestamp":null,"end_time":null,
        "latency_ms":null,"prompt":null,"response":null,"model":null,"provider":null,
        "tokens":null,"cost_usd":null,"retries":null,"failure_reason":null,
        "session_id":"s-1","user_id":null,"tags":[],"metadata":{},"environment":null}"#;
    let back: tracellm_core::normalize::TraceInput = serde_json::from_str(older).unwrap();
    assert_eq!(back, input);
    assert_eq!(serde_json::from_str::<tracellm_core::normalize::TraceInput>(&text).unwrap(), input);
}
