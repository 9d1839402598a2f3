//! Inputs that once made the mapping, assembly or aggregation overflow, panic, multiply their
//! size or build values that could not be read back; each is fed through the path that broke.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan};
use serde_json::{Value, json};
use tracellm_core::api::{AnalyticsRow, MAX_BUCKET_SECS, TokenTotals, aggregate};
use tracellm_core::otel::{ExportTraceServiceRequest, Mapped, OtelLimits, map_traces};
use tracellm_core::{
    Assembler, MAX_TOKENS, NormalizeOptions, PriceTable, Status, Trace, normalize_trace,
};

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn span(trace: u8, id: u8, attrs: Vec<KeyValue>) -> PSpan {
    PSpan {
        trace_id: vec![trace; 16],
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        name: "call".into(),
        start_time_unix_nano: 1_780_000_000_000_000_000,
        end_time_unix_nano: 1_780_000_001_000_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn map(spans: Vec<PSpan>, resource: Vec<KeyValue>) -> Mapped {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    map_traces(req, &OtelLimits::default())
}

/// Assembles the one trace of `m` as ingest does, and reads it back as a store does.
fn assemble_and_read_back(m: Mapped) -> Trace {
    let b = m.batches.into_iter().next().unwrap();
    let mut input = b.input;
    input.id = Some(b.trace_id);
    let t = Assembler::default().partial("default", input, b.spans).unwrap();
    let back: Trace = serde_json::from_str(&serde_json::to_string(&t).unwrap())
        .expect("a stored trace reads back");
    assert_eq!(back, t);
    t
}

#[test]
fn token_counts_past_u64_add_up_to_the_cap_without_overflow() {
    // `prompt + completion` overflowed (a panic in debug builds, garbage in release)
    let m = map(
        vec![span(
            1,
            1,
            vec![
                kv("gen_ai.usage.input_tokens", V::StringValue(u64::MAX.to_string())),
                kv("gen_ai.usage.output_tokens", V::IntValue(1)),
            ],
        )],
        vec![],
    );
    let t = assemble_and_read_back(m);
    let tk = t.spans[0].tokens.unwrap();
    assert_eq!((tk.prompt, tk.completion, tk.total), (MAX_TOKENS, 1, MAX_TOKENS));
    assert_eq!(t.tokens.total, MAX_TOKENS);
}

#[test]
fn a_short_flattened_key_cannot_build_a_huge_value() {
    // each `.9999` segment padded an array with 10,000 objects: a 10 KB key made ~640 MB
    let key = format!("llm.input_messages.0{}", ".9999".repeat(2_000));
    let wide =
        format!("llm.input_messages.1.{}", (0..16).map(|_| "9999").collect::<Vec<_>>().join("."));
    let attrs = vec![
        kv("openinference.span.kind", V::StringValue("LLM".into())),
        kv(&key, V::StringValue("x".into())),
        kv(&wide, V::StringValue("y".into())),
        kv("llm.input_messages.2.message.content", V::StringValue("kept".into())),
    ];
    let t = assemble_and_read_back(map(vec![span(1, 1, attrs)], vec![]));
    let size = serde_json::to_string(&t.spans[0].input).unwrap().len();
    assert!(size < 4 * 1024 * 1024, "input grew to {size} bytes");
    assert!(t.spans[0].input.to_string().contains("kept"));
}

#[test]
fn json_text_too_deep_to_read_back_stays_a_string() {
    // parsed into a 127-deep value, it made a span document serde_json could not read back
    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let attrs = vec![kv("input.value", V::StringValue(deep.clone()))];
    let t = assemble_and_read_back(map(vec![span(1, 1, attrs)], vec![]));
    assert_eq!(t.spans[0].input, Value::String(deep));
    let shallow = vec![kv("input.value", V::StringValue("{\"q\": [1, 2]}".into()))];
    let t = assemble_and_read_back(map(vec![span(1, 1, shallow)], vec![]));
    assert_eq!(t.spans[0].input, json!({"q": [1, 2]}));
}

#[test]
fn a_big_resource_is_not_copied_onto_every_trace() {
    // every root kept a copy of its resource: 1 MB of resource × many traces in one request
    let resource = vec![kv("blob", V::StringValue("x".repeat(1 << 20)))];
    let spans = (1..=40).map(|i| span(i, 1, vec![])).collect();
    let m = map(spans, resource);
    assert_eq!(m.batches.len(), 40);
    let copies = m.batches.iter().filter(|b| b.input.metadata.contains_key("resource")).count();
    assert_eq!(copies, 15, "16 MiB of copies");
    assert!(m.message().contains("resource attributes not kept on 25 traces"), "{}", m.message());
}

#[test]
fn times_past_2200_refuse_the_span_not_the_request() {
    let mut late = span(1, 2, vec![]);
    late.start_time_unix_nano = u64::MAX;
    let m = map(vec![span(1, 1, vec![]), late], vec![]);
    assert_eq!(m.rejected, 1);
    assert!(m.message().contains("startTimeUnixNano"), "{}", m.message());
    assert_eq!(assemble_and_read_back(m).span_count, 1);
}

fn row(ts_micros: i64) -> AnalyticsRow<'static> {
    AnalyticsRow {
        ts_micros,
        model: None,
        status: Status::Success,
        latency_ms: Some(1.0),
        tokens: TokenTotals { prompt: u64::MAX, completion: u64::MAX, total: u64::MAX },
        cost_usd: Some(1e9),
        span_count: u64::MAX,
    }
}

#[test]
fn analytics_sums_saturate_and_buckets_stay_in_range() {
    // `bucket * 1_000_000` and the token sums overflowed on user-chosen values
    let a = aggregate(vec![row(0), row(1_000_000)], None, None, Some(i64::MAX));
    assert_eq!(a.bucket_secs, MAX_BUCKET_SECS);
    assert_eq!(a.totals.tokens.total, u64::MAX);
    assert_eq!(a.totals.spans, u64::MAX);
    assert_eq!(a.timeseries.len(), 1);
    let a = aggregate(vec![row(i64::MAX - 1)], None, None, Some(1));
    assert!(a.timeseries.len() <= 2);
}

fn native(doc: Value, opts: &NormalizeOptions) -> Result<Trace, String> {
    normalize_trace(doc, "default", &PriceTable::builtin(), opts).map_err(|e| e.to_string())
}

#[test]
fn parent_chains_as_deep_as_the_span_limit_assemble() {
    let n = NormalizeOptions::default().max_spans;
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("s{i}"), "parent_id": (i > 0).then(|| format!("s{}", i - 1)),
            "start_time": 1_780_000_000_000i64, "tokens": 1})
        })
        .collect();
    let t = native(json!({"spans": spans}), &NormalizeOptions::default()).unwrap();
    assert_eq!(t.span_count as usize, n);
    assert_eq!(t.tokens.total, 1, "only the deepest span's figure counts");
    // a cycle beside a valid root, and a long cycle, are errors naming a span of the cycle
    let cyc = |len: usize, with_root: bool| {
        let mut spans: Vec<Value> = (0..len)
            .map(|i| json!({"id": format!("c{i}"), "parent_id": format!("c{}", (i + 1) % len)}))
            .collect();
        if with_root {
            spans.push(json!({"id": "root"}));
        }
        json!({"spans": spans})
    };
    for (len, with_root) in [(2, true), (10_000, false), (10_000, true)] {
        let e = native(cyc(len, with_root), &NormalizeOptions::default()).unwrap_err();
        assert!(e.contains("parent ids form a cycle") && e.contains("\"c"), "{e}");
    }
}

#[test]
fn native_numbers_beyond_the_documented_bounds_are_refused() {
    let opts = NormalizeOptions { max_attributes: 2, max_events: 1, ..Default::default() };
    let one = |extra: Value| {
        let mut s = json!({"id": "s"});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        native(json!({"spans": [s]}), &opts)
    };
    assert!(one(json!({"tokens": MAX_TOKENS})).is_ok());
    for (extra, needle) in [
        (json!({"tokens": MAX_TOKENS + 1}), "spans[0].tokens: 9007199254740992 is larger"),
        (json!({"usage": {"prompt_tokens": u64::MAX}}), "spans[0].usage.prompt_tokens"),
        (json!({"cost": 2e9}), "spans[0].cost: 2000000000.0 is larger"),
        (json!({"duration_ms": 1e13}), "spans[0].duration_ms"),
        (
            json!({"a": 1, "b": 2, "c": 3}),
            "spans[0].attributes: 3 attributes exceed the limit of 2",
        ),
        (json!({"events": [{}, {}]}), "spans[0].events: 2 events exceed the limit of 1"),
    ] {
        let e = one(extra).unwrap_err();
        assert!(e.starts_with(needle), "{e}");
    }
}
