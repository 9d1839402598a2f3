//! One test per row and per pitfall of OTEL_MAPPING.md.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value as V,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as PSpan, Status as PStatus, span::Event,
};
use serde_json::{Value, json};
use tracellm_core::otel::{ExportTraceServiceRequest, OtelLimits, json as otlp_json, map_traces};
use tracellm_core::{Assembler, Span, SpanKind, Status, Trace};

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const TRACE_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn s(v: &str) -> AnyValue {
    AnyValue { value: Some(V::StringValue(v.into())) }
}
fn i(v: i64) -> AnyValue {
    AnyValue { value: Some(V::IntValue(v)) }
}
fn f(v: f64) -> AnyValue {
    AnyValue { value: Some(V::DoubleValue(v)) }
}
fn arr(v: Vec<AnyValue>) -> AnyValue {
    AnyValue { value: Some(V::ArrayValue(ArrayValue { values: v })) }
}
fn kvl(v: Vec<(&str, AnyValue)>) -> AnyValue {
    AnyValue {
        value: Some(V::KvlistValue(KeyValueList {
            values: v.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })),
    }
}
fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue { key: k.into(), value: Some(v), ..Default::default() }
}

fn span(id: u8, parent: Option<u8>, name: &str, attrs: Vec<(&str, AnyValue)>) -> PSpan {
    PSpan {
        trace_id: TRACE.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, 0, p]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_780_000_000_000_000_000 + id as u64 * 1_000_000,
        end_time_unix_nano: 1_780_000_000_500_000_000 + id as u64 * 1_000_000,
        attributes: attrs.into_iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn request(spans: Vec<PSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("support-bot"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Maps one request and assembles its trace, as the server does.
fn trace_of(spans: Vec<PSpan>) -> Trace {
    let m = map_traces(request(spans), &OtelLimits::default());
    assert_eq!(m.rejected, 0, "{:?}", m.warnings);
    assert_eq!(m.batches.len(), 1);
    let b = m.batches.into_iter().next().unwrap();
    let mut input = b.input;
    input.id = Some(b.trace_id);
    Assembler::default().partial("default", input, b.spans).unwrap()
}

fn one(attrs: Vec<(&str, AnyValue)>) -> Span {
    trace_of(vec![span(1, None, "call", attrs)]).spans.remove(0)
}

// ---- ids -------------------------------------------------------------------------------------

#[test]
fn ids_are_the_hex_users_see() {
    let t = trace_of(vec![span(1, None, "root", vec![]), span(2, Some(1), "child", vec![])]);
    assert_eq!(t.id, TRACE_HEX);
    assert_eq!(t.spans[0].id, "0000000000000001");
    assert_eq!(t.spans[1].parent_id.as_deref(), Some("0000000000000001"));
    assert_eq!(t.status, Status::Success);
}

#[test]
fn ids_of_the_wrong_length_are_refused_per_span() {
    let mut bad = span(2, None, "bad", vec![]);
    bad.trace_id = vec![1, 2, 3];
    let mut zero = span(3, None, "zero", vec![]);
    zero.span_id = vec![0; 8];
    let m =
        map_traces(request(vec![span(1, None, "ok", vec![]), bad, zero]), &OtelLimits::default());
    assert_eq!(m.rejected, 2);
    assert_eq!(m.batches[0].spans.len(), 1);
    assert!(m.message().contains("traceId must be 16 bytes, got 3"), "{}", m.message());
    assert!(m.message().contains("spanId must not be all zeros"), "{}", m.message());
}

// ---- kind --------------------------------------------------------------------------------------

#[test]
fn kind_from_every_dialect() {
    let cases: Vec<(Vec<(&str, AnyValue)>, SpanKind)> = vec![
        (vec![("gen_ai.operation.name", s("chat"))], SpanKind::Llm),
        (vec![("gen_ai.operation.name", s("text_completion"))], SpanKind::Llm),
        (vec![("gen_ai.operation.name", s("generate_content"))], SpanKind::Llm),
        (vec![("gen_ai.operation.name", s("embeddings"))], SpanKind::Embedding),
        (vec![("gen_ai.operation.name", s("retrieval"))], SpanKind::Retriever),
        (vec![("gen_ai.operation.name", s("execute_tool"))], SpanKind::Tool),
        (vec![("gen_ai.operation.name", s("invoke_agent"))], SpanKind::Agent),
        (vec![("gen_ai.operation.name", s("create_agent"))], SpanKind::Agent),
        (vec![("gen_ai.operation.name", s("invoke_workflow"))], SpanKind::Chain),
        (vec![("openinference.span.kind", s("LLM"))], SpanKind::Llm),
        (vec![("openinference.span.kind", s("EMBEDDING"))], SpanKind::Embedding),
        (vec![("openinference.span.kind", s("CHAIN"))], SpanKind::Chain),
        (vec![("openinference.span.kind", s("RETRIEVER"))], SpanKind::Retriever),
        (vec![("openinference.span.kind", s("RERANKER"))], SpanKind::Reranker),
        (vec![("openinference.span.kind", s("TOOL"))], SpanKind::Tool),
        (vec![("openinference.span.kind", s("AGENT"))], SpanKind::Agent),
        (vec![("openinference.span.kind", s("GUARDRAIL"))], SpanKind::Guardrail),
        (vec![("openinference.span.kind", s("EVALUATOR"))], SpanKind::Evaluator),
        (vec![("llm.request.type", s("chat"))], SpanKind::Llm),
        (vec![("llm.request.type", s("embedding"))], SpanKind::Embedding),
        (vec![("llm.request.type", s("rerank"))], SpanKind::Reranker),
        (vec![("traceloop.span.kind", s("workflow"))], SpanKind::Chain),
        (vec![("traceloop.span.kind", s("task"))], SpanKind::Chain),
        (vec![("traceloop.span.kind", s("agent"))], SpanKind::Agent),
        (vec![("traceloop.span.kind", s("tool"))], SpanKind::Tool),
        (vec![("langfuse.observation.type", s("generation"))], SpanKind::Llm),
        // inference
        (vec![("gen_ai.request.model", s("gpt-4o"))], SpanKind::Llm),
        (vec![("gen_ai.tool.name", s("search"))], SpanKind::Tool),
        (vec![("gen_ai.tool.call.id", s("call_1"))], SpanKind::Tool),
        (vec![("http.method", s("GET"))], SpanKind::Span),
    ];
    for (attrs, want) in cases {
        let label = format!("{:?}", attrs.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        assert_eq!(one(attrs).kind, want, "{label}");
    }
}

#[test]
fn explicit_attributes_win_over_openinference_over_genai() {
    let sp = one(vec![
        ("langfuse.observation.type", s("tool")),
        ("openinference.span.kind", s("LLM")),
        ("gen_ai.operation.name", s("embeddings")),
    ]);
    assert_eq!(sp.kind, SpanKind::Tool);
    let sp =
        one(vec![("openinference.span.kind", s("AGENT")), ("gen_ai.operation.name", s("chat"))]);
    assert_eq!(sp.kind, SpanKind::Agent);
}

// ---- model and provider -----------------------------------------------------------------------

#[test]
fn model_by_precedence() {
    assert_eq!(
        one(vec![
            ("gen_ai.request.model", s("gpt-4o")),
            ("gen_ai.response.model", s("gpt-4o-2024-08-06"))
        ])
        .model
        .as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(
        one(vec![("llm.model_name", s("claude-3-5-sonnet")), ("gen_ai.request.model", s("x"))])
            .model
            .as_deref(),
        Some("claude-3-5-sonnet")
    );
    assert_eq!(
        one(vec![("embedding.model_name", s("text-embedding-3-small"))]).model.as_deref(),
        Some("text-embedding-3-small")
    );
    assert_eq!(
        one(vec![("langfuse.observation.model.name", s("m1")), ("llm.model_name", s("m2"))])
            .model
            .as_deref(),
        Some("m1")
    );
}

#[test]
fn provider_names_normalize_across_dialects() {
    let p = |k: &str, v: &str| one(vec![(k, s(v)), ("gen_ai.request.model", s("m"))]).provider;
    assert_eq!(p("gen_ai.provider.name", "mistral_ai"), p("gen_ai.system", "mistralai"));
    assert_eq!(p("gen_ai.provider.name", "aws.bedrock"), p("gen_ai.system", "aws"));
    assert_eq!(p("gen_ai.provider.name", "azure.ai.openai"), p("gen_ai.system", "az.ai.openai"));
    assert_eq!(p("llm.provider", "Anthropic").as_deref(), Some("anthropic"));
    assert_eq!(p("llm.system", "openai").as_deref(), Some("openai"));
    // current beats older
    let sp = one(vec![("gen_ai.provider.name", s("openai")), ("gen_ai.system", s("anthropic"))]);
    assert_eq!(sp.provider.as_deref(), Some("openai"));
}

// ---- messages: four encodings ----------------------------------------------------------------

fn want_chat(sp: &Span) {
    let msgs = sp.input["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no input messages: {}", sp.input));
    let last = msgs.last().unwrap();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"], "What is the weather?");
    let out = &sp.output["messages"][0];
    assert_eq!(out["role"], "assistant", "{}", sp.output);
    assert_eq!(out["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(out["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(out["finish_reason"], "tool_calls");
}

#[test]
fn genai_current_messages_as_structured_values() {
    let input = arr(vec![kvl(vec![
        ("role", s("user")),
        (
            "parts",
            arr(vec![kvl(vec![("type", s("text")), ("content", s("What is the weather?"))])]),
        ),
    ])]);
    let output = arr(vec![kvl(vec![
        ("role", s("assistant")),
        (
            "parts",
            arr(vec![kvl(vec![
                ("type", s("tool_call")),
                ("id", s("call_1")),
                ("name", s("get_weather")),
                ("arguments", kvl(vec![("city", s("Paris"))])),
            ])]),
        ),
        ("finish_reason", s("tool_call")),
    ])]);
    let sp = one(vec![
        ("gen_ai.operation.name", s("chat")),
        (
            "gen_ai.system_instructions",
            arr(vec![kvl(vec![("type", s("text")), ("content", s("Be brief."))])]),
        ),
        ("gen_ai.input.messages", input),
        ("gen_ai.output.messages", output),
    ]);
    want_chat(&sp);
    assert_eq!(sp.input["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert!(sp.attributes.get("gen_ai.input.messages").is_none(), "content is not kept twice");
}

#[test]
fn genai_current_messages_as_json_strings() {
    let sp = one(vec![
        ("gen_ai.operation.name", s("chat")),
        (
            "gen_ai.input.messages",
            s(r#"[{"role":"user","parts":[{"type":"text","content":"What is the weather?"}]}]"#),
        ),
        (
            "gen_ai.output.messages",
            s(
                r#"[{"role":"assistant","parts":[{"type":"tool_call","id":"call_1","name":"get_weather","arguments":{"city":"Paris"}}],"finish_reason":"tool_call"}]"#,
            ),
        ),
    ]);
    want_chat(&sp);
}

#[test]
fn tool_call_responses_accept_response_and_result() {
    for key in ["response", "result"] {
        let msg = format!(
            r#"[{{"role":"tool","parts":[{{"type":"tool_call_response","id":"call_1","{key}":"sunny"}}]}}]"#
        );
        let sp =
            one(vec![("gen_ai.operation.name", s("chat")), ("gen_ai.input.messages", s(&msg))]);
        assert_eq!(
            sp.input["messages"][0],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
            "{key}"
        );
    }
}

#[test]
fn openinference_flattened_messages_unflatten() {
    let sp = one(vec![
        ("openinference.span.kind", s("LLM")),
        ("llm.input_messages.0.message.role", s("system")),
        ("llm.input_messages.0.message.content", s("Be brief.")),
        ("llm.input_messages.1.message.role", s("user")),
        ("llm.input_messages.1.message.contents.0.message_content.type", s("text")),
        ("llm.input_messages.1.message.contents.0.message_content.text", s("What is the weather?")),
        ("llm.output_messages.0.message.role", s("assistant")),
        ("llm.output_messages.0.message.tool_calls.0.tool_call.id", s("call_1")),
        ("llm.output_messages.0.message.tool_calls.0.tool_call.function.name", s("get_weather")),
        (
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments",
            s("{\"city\":\"Paris\"}"),
        ),
        ("llm.output_messages.0.message.finish_reason", s("tool_calls")),
    ]);
    want_chat(&sp);
    assert_eq!(sp.input["messages"][0]["content"], "Be brief.");
}

#[test]
fn openllmetry_flattened_prompts_unflatten() {
    let sp = one(vec![
        ("llm.request.type", s("chat")),
        ("gen_ai.prompt.0.role", s("user")),
        ("gen_ai.prompt.0.content", s("What is the weather?")),
        ("gen_ai.completion.0.role", s("assistant")),
        ("gen_ai.completion.0.finish_reason", s("tool_calls")),
        ("gen_ai.completion.0.tool_calls.0.id", s("call_1")),
        ("gen_ai.completion.0.tool_calls.0.name", s("get_weather")),
        ("gen_ai.completion.0.tool_calls.0.arguments", s("{\"city\":\"Paris\"}")),
    ]);
    want_chat(&sp);
}

#[test]
fn genai_older_span_events_carry_messages() {
    let mut sp = span(
        1,
        None,
        "chat",
        vec![("gen_ai.system", s("openai")), ("gen_ai.request.model", s("gpt-4o"))],
    );
    sp.events = vec![
        Event {
            name: "gen_ai.user.message".into(),
            time_unix_nano: sp.start_time_unix_nano,
            attributes: vec![kv("content", s("What is the weather?"))],
            ..Default::default()
        },
        Event {
            name: "gen_ai.choice".into(),
            time_unix_nano: sp.end_time_unix_nano,
            attributes: vec![
                kv("index", i(0)),
                kv("finish_reason", s("tool_calls")),
                kv(
                    "message",
                    kvl(vec![
                        ("role", s("assistant")),
                        (
                            "tool_calls",
                            arr(vec![kvl(vec![
                                ("id", s("call_1")),
                                ("type", s("function")),
                                (
                                    "function",
                                    kvl(vec![
                                        ("name", s("get_weather")),
                                        ("arguments", s("{\"city\":\"Paris\"}")),
                                    ]),
                                ),
                            ])]),
                        ),
                    ]),
                ),
            ],
            ..Default::default()
        },
    ];
    want_chat(&trace_of(vec![sp]).spans[0]);
}

#[test]
fn genai_v1_26_prompt_and_completion_events() {
    let mut sp = span(1, None, "chat", vec![("gen_ai.request.model", s("gpt-4o"))]);
    sp.events = vec![
        Event {
            name: "gen_ai.content.prompt".into(),
            attributes: vec![kv(
                "gen_ai.prompt",
                s(r#"[{"role":"user","content":"What is the weather?"}]"#),
            )],
            ..Default::default()
        },
        Event {
            name: "gen_ai.content.completion".into(),
            attributes: vec![kv(
                "gen_ai.completion",
                s(r#"[{"role":"assistant","content":"Sunny."}]"#),
            )],
            ..Default::default()
        },
    ];
    let t = trace_of(vec![sp]);
    assert_eq!(t.spans[0].input["messages"][0]["content"], "What is the weather?");
    assert_eq!(t.response.as_deref(), Some("Sunny."));
}

#[test]
fn openinference_input_and_output_values() {
    let sp = one(vec![
        ("openinference.span.kind", s("CHAIN")),
        ("input.value", s("{\"question\": \"hi\"}")),
        ("output.value", s("plain answer")),
    ]);
    assert_eq!(sp.input, json!({"question": "hi"}));
    assert_eq!(sp.output, json!("plain answer"));
}

// ---- tokens, cost, ttft ------------------------------------------------------------------------

#[test]
fn tokens_from_every_dialect_and_cost_from_the_price_table() {
    let cases: Vec<Vec<(&str, AnyValue)>> = vec![
        vec![("gen_ai.usage.input_tokens", i(1000)), ("gen_ai.usage.output_tokens", i(500))],
        vec![("gen_ai.usage.prompt_tokens", i(1000)), ("gen_ai.usage.completion_tokens", i(500))],
        vec![
            ("llm.token_count.prompt", i(1000)),
            ("llm.token_count.completion", i(500)),
            ("llm.token_count.total", i(1500)),
        ],
        vec![("langfuse.observation.usage_details", s(r#"{"input": 1000, "output": 500}"#))],
    ];
    for mut attrs in cases {
        let label = attrs[0].0.to_string();
        attrs.push(("gen_ai.request.model", s("gpt-4o")));
        let sp = one(attrs);
        let t = sp.tokens.unwrap();
        assert_eq!(
            (t.prompt, t.completion, t.total, t.estimated),
            (1000, 500, 1500, false),
            "{label}"
        );
        assert!(
            (sp.cost_usd.unwrap() - (1000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12,
            "{label}"
        );
    }
    let sp = one(vec![("llm.usage.total_tokens", i(42)), ("gen_ai.request.model", s("m"))]);
    assert_eq!(sp.tokens.unwrap().total, 42);
}

#[test]
fn cached_tokens_are_recorded_beside_input_tokens() {
    let sp = one(vec![
        ("gen_ai.request.model", s("gpt-4o")),
        ("gen_ai.usage.input_tokens", i(1000)),
        ("gen_ai.usage.output_tokens", i(0)),
        ("gen_ai.usage.cache_read.input_tokens", i(400)),
    ]);
    let t = sp.tokens.unwrap();
    assert_eq!((t.prompt, t.cached), (1000, Some(400)));
    assert!((sp.cost_usd.unwrap() - (600.0 * 2.5 + 400.0 * 1.25) / 1e6).abs() < 1e-12);
    let sp = one(vec![
        ("llm.model_name", s("gpt-4o")),
        ("llm.token_count.prompt", i(10)),
        ("llm.token_count.prompt_details.cache_read", i(4)),
    ]);
    assert_eq!(sp.tokens.unwrap().cached, Some(4));
}

#[test]
fn reported_cost_wins_and_ttft_is_converted_to_ms() {
    let sp = one(vec![
        ("llm.model_name", s("gpt-4o")),
        ("llm.cost.total", f(0.5)),
        ("llm.token_count.prompt", i(1)),
    ]);
    assert_eq!(sp.cost_usd, Some(0.5));
    let sp = one(vec![("langfuse.observation.cost_details", s(r#"{"total": 0.25}"#))]);
    assert_eq!(sp.cost_usd, Some(0.25));
    let sp = one(vec![
        ("gen_ai.request.model", s("gpt-4o")),
        ("gen_ai.response.time_to_first_chunk", f(0.125)),
    ]);
    assert_eq!(sp.time_to_first_token_ms, Some(125.0));
}

#[test]
fn missing_tokens_are_estimated_from_otlp_messages_too() {
    let sp = one(vec![
        ("openinference.span.kind", s("LLM")),
        ("llm.model_name", s("gpt-4o")),
        ("llm.input_messages.0.message.role", s("user")),
        ("llm.input_messages.0.message.content", s("hello world")),
    ]);
    let t = sp.tokens.unwrap();
    assert!(t.estimated);
    assert_eq!(t.prompt, 8);
}

// ---- tools, retrieval --------------------------------------------------------------------------

#[test]
fn tool_spans_from_every_dialect() {
    let sp = one(vec![
        ("gen_ai.operation.name", s("execute_tool")),
        ("gen_ai.tool.name", s("search")),
        ("gen_ai.tool.call.id", s("c1")),
        ("gen_ai.tool.call.arguments", s("{\"q\":\"rust\"}")),
        ("gen_ai.tool.call.result", s("[\"a\"]")),
    ]);
    let t = sp.tool.unwrap();
    assert_eq!(
        (t.name.as_str(), t.arguments.clone(), t.result.clone()),
        ("search", json!({"q": "rust"}), json!(["a"]))
    );
    let sp = one(vec![
        ("openinference.span.kind", s("TOOL")),
        ("tool.name", s("calc")),
        ("input.value", s("{\"x\": 1}")),
        ("output.value", s("2")),
    ]);
    let t = sp.tool.unwrap();
    assert_eq!(
        (t.name.as_str(), t.arguments.clone(), t.result.clone()),
        ("calc", json!({"x": 1}), json!("2"))
    );
    let sp = one(vec![
        ("traceloop.span.kind", s("tool")),
        ("traceloop.entity.name", s("lookup")),
        ("traceloop.entity.input", s(r#"{"args":[1],"kwargs":{"k":2}}"#)),
        ("traceloop.entity.output", s("\"done\"")),
    ]);
    let t = sp.tool.unwrap();
    assert_eq!(t.name, "lookup");
    assert_eq!(t.arguments, json!({"args": [1], "kwargs": {"k": 2}}));
}

#[test]
fn retrieval_documents() {
    let sp = one(vec![
        ("openinference.span.kind", s("RETRIEVER")),
        ("input.value", s("what is rust")),
        ("retrieval.documents.0.document.id", s("d1")),
        ("retrieval.documents.0.document.content", s("Rust is a language")),
        ("retrieval.documents.0.document.score", f(0.9)),
        ("retrieval.documents.1.document.id", s("d2")),
    ]);
    assert_eq!(
        sp.output["documents"][0],
        json!({"id": "d1", "content": "Rust is a language", "score": 0.9})
    );
    assert_eq!(sp.output["documents"][1]["id"], "d2");
    let sp = one(vec![
        ("gen_ai.operation.name", s("retrieval")),
        ("gen_ai.retrieval.query.text", s("q")),
        ("gen_ai.retrieval.documents", s(r#"[{"id":"x"}]"#)),
    ]);
    assert_eq!(sp.input, json!({"query": "q"}));
    assert_eq!(sp.output, json!({"documents": [{"id": "x"}]}));
}

// ---- session, user, tags, metadata ---------------------------------------------------------------

#[test]
fn session_user_tags_metadata_from_every_dialect() {
    for (sess, user) in [
        (("session.id", "s1"), ("user.id", "u1")),
        (("gen_ai.conversation.id", "s1"), ("user.id", "u1")),
        (
            ("traceloop.association.properties.session_id", "s1"),
            ("traceloop.association.properties.user_id", "u1"),
        ),
        (("langfuse.session.id", "s1"), ("langfuse.user.id", "u1")),
    ] {
        let t =
            trace_of(vec![span(1, None, "root", vec![(sess.0, s(sess.1)), (user.0, s(user.1))])]);
        assert_eq!(
            (t.session_id.as_deref(), t.user_id.as_deref()),
            (Some("s1"), Some("u1")),
            "{}",
            sess.0
        );
    }
    let t = trace_of(vec![span(
        1,
        None,
        "root",
        vec![
            ("tag.tags", arr(vec![s("prod"), s("beta")])),
            ("metadata", s(r#"{"tier": "gold"}"#)),
            ("traceloop.association.properties.region", s("eu")),
        ],
    )]);
    assert_eq!(t.tags, vec!["prod", "beta"]);
    assert_eq!(t.metadata["tier"], "gold");
    assert_eq!(t.metadata["region"], "eu");
    assert_eq!(t.metadata["resource"]["service.name"], "support-bot");
    let t = trace_of(vec![span(1, None, "root", vec![("langfuse.trace.tags", s(r#"["x"]"#))])]);
    assert_eq!(t.tags, vec!["x"]);
}

// ---- errors ---------------------------------------------------------------------------------------

#[test]
fn error_status_with_exception_event() {
    let mut sp = span(
        1,
        None,
        "chat",
        vec![("gen_ai.request.model", s("gpt-4o")), ("error.type", s("RateLimitError"))],
    );
    sp.status = Some(PStatus { code: 2, message: "429 Too Many Requests".into() });
    sp.events = vec![Event {
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", s("openai.RateLimitError")),
            kv("exception.message", s("rate limited")),
            kv("exception.stacktrace", s("Traceback …")),
        ],
        ..Default::default()
    }];
    let t = trace_of(vec![sp]);
    let e = t.spans[0].error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_deref(), e.message.as_str(), e.stack.as_deref()),
        (Some("openai.RateLimitError"), "rate limited", Some("Traceback …"))
    );
    assert_eq!(t.status, Status::Error);
    assert_eq!(t.failure_reason.as_deref(), Some("chat: openai.RateLimitError: rate limited"));
    let mut sp = span(1, None, "chat", vec![("error.type", s("Timeout"))]);
    sp.status = Some(PStatus { code: 2, message: "deadline exceeded".into() });
    let e = trace_of(vec![sp]).spans[0].error.clone().unwrap();
    assert_eq!((e.kind.as_deref(), e.message.as_str()), (Some("Timeout"), "deadline exceeded"));
    // an exception event without error status is not an error
    let mut sp = span(1, None, "chat", vec![]);
    sp.events = vec![Event { name: "exception".into(), ..Default::default() }];
    assert_eq!(trace_of(vec![sp]).status, Status::Success);
}

// ---- incremental assembly ---------------------------------------------------------------------------

#[test]
fn a_trace_without_its_root_is_running_and_an_unended_span_too() {
    let t = trace_of(vec![span(2, Some(1), "child", vec![])]);
    assert_eq!(t.status, Status::Running);
    assert_eq!(
        t.spans[0].parent_id.as_deref(),
        Some("0000000000000001"),
        "the parent link is kept for later"
    );
    let mut open = span(1, None, "root", vec![]);
    open.end_time_unix_nano = 0;
    let t = trace_of(vec![open]);
    assert_eq!(t.status, Status::Running);
    assert_eq!(t.end_time, None);
}

#[test]
fn too_many_attributes_are_trimmed_with_a_warning() {
    let attrs: Vec<(&str, AnyValue)> = Vec::new();
    let mut sp = span(1, None, "wide", attrs);
    sp.attributes = (0..10_000).map(|n| kv(&format!("k{n}"), i(n))).collect();
    let m = map_traces(request(vec![sp]), &OtelLimits::default());
    assert_eq!(m.rejected, 0);
    assert_eq!(m.batches[0].spans[0].attributes.len(), 1000);
    assert!(m.message().contains("dropped 9000"), "{}", m.message());
}

// ---- OTLP/JSON --------------------------------------------------------------------------------------

fn json_request(span: Value) -> Value {
    json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [span]}]}]})
}

#[test]
fn otlp_json_hex_ids_integer_enums_and_int64_strings() {
    let req = otlp_json::trace_request(&json_request(json!({
        "traceId": TRACE_HEX, "spanId": "00f067aa0ba902b7", "name": "chat", "kind": 3,
        "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": 1780000000500000000u64,
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 184}},
            {"key": "temperature", "value": {"doubleValue": 0.2}},
            {"key": "stream", "value": {"boolValue": false}},
            {"key": "blob", "value": {"bytesValue": "AQI="}}
        ],
        "status": {"code": 1},
        "someFutureField": {"ignored": true}
    })))
    .unwrap();
    let m = map_traces(req.clone(), &OtelLimits::default());
    assert_eq!(m.rejected, 0);
    let sp = &m.batches[0].spans[0];
    assert_eq!(m.batches[0].trace_id, TRACE_HEX);
    assert_eq!(sp.id, "00f067aa0ba902b7");
    assert_eq!(sp.tokens.unwrap().total, 196);
    assert_eq!(sp.attributes["temperature"], 0.2);
    assert_eq!(sp.attributes["blob"], "0102");
    assert_eq!(sp.attributes["otel.span_kind"], 3);
    assert_eq!(sp.latency_ms, None);
    // enum names are accepted as protobuf's JSON mapping allows
    let req = otlp_json::trace_request(&json_request(
        json!({"traceId": TRACE_HEX, "spanId": "00f067aa0ba902b7",
        "kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR", "message": "boom"}}),
    ))
    .unwrap();
    let sp = &map_traces(req.clone(), &OtelLimits::default()).batches[0].spans[0];
    assert_eq!(sp.status, Status::Error);
    assert_eq!(sp.error.as_ref().unwrap().message, "boom");
}

#[test]
fn otlp_json_snake_case_keys_yield_refused_spans_not_silent_data() {
    let req = otlp_json::trace_request(&json_request(
        json!({"trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b7", "name": "x"}),
    ))
    .unwrap();
    let m = map_traces(req.clone(), &OtelLimits::default());
    assert_eq!(m.rejected, 1);
    assert!(m.batches.is_empty());
    assert!(m.message().contains("traceId must be 16 bytes, got 0"), "{}", m.message());
}

#[test]
fn otlp_json_errors_name_the_path() {
    let e = otlp_json::trace_request(&json_request(json!({"traceId": "not-hex!", "spanId": "00"})))
        .unwrap_err();
    assert!(e.to_string().starts_with("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{e}");
    assert!(e.to_string().contains("hex"), "{e}");
    let e = otlp_json::trace_request(&json_request(
        json!({"traceId": TRACE_HEX, "spanId": "00f067aa0ba902b7", "startTimeUnixNano": "soon"}),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("startTimeUnixNano"), "{e}");
    let e =
        otlp_json::trace_request(&json_request(json!({"traceId": TRACE_HEX, "kind": "SIDEWAYS"})))
            .unwrap_err();
    assert!(e.to_string().contains("kind") && e.to_string().contains("SIDEWAYS"), "{e}");
    let e = otlp_json::trace_request(&json!({"resourceSpans": {"a": 1}})).unwrap_err();
    assert!(e.to_string().starts_with("$.resourceSpans: expected an array"), "{e}");
}

#[test]
fn message_events_arriving_one_by_one_all_become_messages() {
    use tracellm_core::SpanEvent;
    use tracellm_core::otel::apply_message_events;
    let mut sp = one(vec![("gen_ai.system", s("openai")), ("gen_ai.request.model", s("gpt-4o"))]);
    let ev = |name: &str, content: &str, ms: i64| SpanEvent {
        name: name.into(),
        time: chrono::DateTime::from_timestamp_millis(1_780_000_000_000 + ms).unwrap(),
        attributes: serde_json::from_value(json!({"body": {"content": content}})).unwrap(),
    };
    // the user message arrives first but was logged second
    sp.events.push(ev("gen_ai.user.message", "What is the weather?", 2));
    apply_message_events(&mut sp);
    sp.events.push(ev("gen_ai.system.message", "Be brief.", 1));
    apply_message_events(&mut sp);
    let roles: Vec<&str> = sp.input["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["system", "user"]);
    // content that came from attributes is never overwritten by events
    let mut sp = one(vec![
        ("llm.input_messages.0.message.role", s("user")),
        ("llm.input_messages.0.message.content", s("from attributes")),
        ("llm.model_name", s("m")),
    ]);
    sp.events.push(ev("gen_ai.user.message", "from an event", 1));
    apply_message_events(&mut sp);
    assert_eq!(sp.input["messages"][0]["content"], "from attributes");
}

#[test]
fn openinference_finish_reason_failed_call_model_and_first_token_event() {
    let sp = one(vec![
        ("openinference.span.kind", s("LLM")),
        ("llm.model_name", s("gpt-4o")),
        ("llm.output_messages.0.message.role", s("assistant")),
        ("llm.output_messages.0.message.content", s("ok")),
        ("llm.finish_reason", s("tool_call")),
    ]);
    assert_eq!(sp.output["messages"][0]["finish_reason"], "tool_calls");
    let sp = one(vec![
        ("openinference.span.kind", s("LLM")),
        ("llm.invocation_parameters", s(r#"{"model": "gpt-4o-mini", "temperature": 0}"#)),
    ]);
    assert_eq!(sp.model.as_deref(), Some("gpt-4o-mini"));
    let mut p = span(1, None, "stream", vec![("openinference.span.kind", s("LLM"))]);
    p.events = vec![Event {
        name: "First Token Stream Event".into(),
        time_unix_nano: p.start_time_unix_nano + 250_000_000,
        ..Default::default()
    }];
    assert_eq!(trace_of(vec![p]).spans[0].time_to_first_token_ms, Some(250.0));
}
