//! The attribute mapping, dialect by dialect, in precedence order: explicit TraceLLM/Langfuse
//! attributes, OpenInference, OTel GenAI current, GenAI older, OpenLLMetry, then inference.

use foldhash::{HashMap, HashMapExt};

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Value, json};

use super::{Attrs, Lookup, Mapped, OtelLimits, SpanBatch, hex, parsed};
use crate::model::{Span, SpanError, SpanEvent, SpanKind, Status, Tokens, ToolCall};
use crate::normalize::TraceInput;
use crate::{MAX_COST_USD, MAX_DURATION_MS, MAX_TOKENS};

// ---------------------------------------------------------------------------------------------
// Values

/// An attribute value as JSON, its strings moved rather than copied: prompts and responses are
/// most of a request's bytes.
fn any_to_json(v: AnyValue, depth: usize, max_depth: usize) -> Value {
    use any_value::Value as V;
    match v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(d).map(Value::Number).unwrap_or(Value::Null)
        }
        Some(V::BytesValue(b)) => Value::String(hex(&b)),
        Some(V::ArrayValue(a)) if depth < max_depth => Value::Array(
            a.values.into_iter().map(|x| any_to_json(x, depth + 1, max_depth)).collect(),
        ),
        Some(V::KvlistValue(kv)) if depth < max_depth => Value::Object(
            kv.values
                .into_iter()
                .map(|k| {
                    let v = k.value.map_or(Value::Null, |x| any_to_json(x, depth + 1, max_depth));
                    (k.key, v)
                })
                .collect(),
        ),
        Some(_) => Value::String("[nested too deeply]".into()),
    }
}

/// Attributes as a map, capped at `limits.max_attributes` (the count dropped is returned): an
/// [`Attrs`] for a span the mapping reads, a serde_json map for what is kept as it is.
fn attributes<M: Default + Extend<(String, Value)>>(
    kvs: Vec<KeyValue>,
    limits: &OtelLimits,
) -> (M, usize) {
    let dropped = kvs.len().saturating_sub(limits.max_attributes);
    let depth = limits.max_value_depth.min(super::MAX_PARSED_DEPTH);
    let mut m = M::default();
    m.extend(kvs.into_iter().take(limits.max_attributes).map(|kv| {
        let v = kv.value.map_or(Value::Null, |v| any_to_json(v, 0, depth));
        (kv.key, v)
    }));
    (m, dropped)
}

/// 2200-01-01T00:00:00Z in Unix nanoseconds: native ingest refuses later times too.
const MAX_NANOS: u64 = 7_258_118_400_000_000_000;

/// A time, `None` when unset (0) or after [`MAX_NANOS`].
fn nanos(ns: u64) -> Option<DateTime<Utc>> {
    if ns == 0 || ns >= MAX_NANOS {
        return None;
    }
    Utc.timestamp_opt((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32).single()
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_str(a: &impl Lookup, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| a.lookup(k).and_then(str_of))
}

/// A count (tokens), clamped to [`MAX_TOKENS`]; negative or unreadable values are ignored.
fn first_u64(a: &Attrs, keys: &[&str]) -> Option<u64> {
    keys.iter()
        .find_map(|k| match a.get(*k)? {
            Value::Number(n) => {
                n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            }
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .map(|n| n.min(MAX_TOKENS))
}

fn first_f64(a: &Attrs, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| match a.get(*k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Highest position a flattened key may name (`llm.input_messages.{i}…`), and most segments
/// after it: keys beyond are ignored. Bounds what a short key can make the mapping build.
const MAX_INDEX: usize = 10_000;
const MAX_PATH_SEGMENTS: usize = 16;
/// Most array slots all flattened keys of one group may create, padding included.
const MAX_SLOTS: usize = 100_000;

/// Takes flattened indexed keys `prefix.{i}.rest…` out of `a` into an array of nested objects,
/// e.g. `llm.input_messages.0.message.role` → `[{"message": {"role": …}}]`. The keys are content
/// (`is_content_key`), which `attributes` does not keep: their values move, not copied.
fn indexed(a: &mut Attrs, prefix: &str) -> Vec<Value> {
    let mut taken: Vec<(usize, String, Value)> = Vec::new();
    a.retain(|k, v| {
        let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            return true;
        };
        let (idx, path) = rest.split_once('.').unwrap_or((rest, ""));
        let Ok(i) = idx.parse::<usize>() else { return true };
        if i > MAX_INDEX || path.split('.').count() > MAX_PATH_SEGMENTS {
            return true;
        }
        taken.push((i, path.to_string(), std::mem::take(v)));
        false
    });
    let mut items: Vec<(usize, Value)> = Vec::new();
    let mut slots = MAX_SLOTS;
    for (i, path, v) in taken {
        let slot = match items.iter_mut().find(|(j, _)| *j == i) {
            Some((_, s)) => s,
            None => {
                items.push((i, Value::Object(Map::new())));
                &mut items.last_mut().expect("just pushed").1
            }
        };
        if path.is_empty() {
            *slot = v;
        } else {
            insert_path(slot, &path, v, &mut slots);
        }
    }
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, v)| v).collect()
}

/// Inserts `v` at a dotted path inside `target`; numeric segments become array positions.
/// Array slots created are taken from `slots`; when it runs out the value is not inserted.
fn insert_path(target: &mut Value, path: &str, v: Value, slots: &mut usize) {
    let mut cur = target;
    let segs: Vec<&str> = path.split('.').collect();
    for (n, seg) in segs.iter().enumerate() {
        let last = n + 1 == segs.len();
        if let Ok(i) = seg.parse::<usize>().map(|i| i.min(MAX_INDEX)) {
            if !cur.is_array() {
                *cur = Value::Array(Vec::new());
            }
            let arr = cur.as_array_mut().expect("array");
            let grow = (i + 1).saturating_sub(arr.len());
            if grow > *slots {
                return;
            }
            *slots -= grow;
            while arr.len() <= i {
                arr.push(Value::Object(Map::new()));
            }
            if last {
                arr[i] = v;
                return;
            }
            cur = &mut arr[i];
        } else {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            let obj = cur.as_object_mut().expect("object");
            if last {
                obj.insert((*seg).to_string(), v);
                return;
            }
            cur = obj.entry((*seg).to_string()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabularies

/// One table for provider names across dialects.
pub fn normalize_provider(p: &str) -> String {
    let l = p.trim().to_ascii_lowercase();
    match l.as_str() {
        "mistral_ai" | "mistralai" | "mistral" => "mistral_ai",
        "aws.bedrock" | "aws" | "bedrock" | "aws_bedrock" => "aws.bedrock",
        "azure.ai.openai" | "az.ai.openai" | "azure" | "azure_openai" | "azureopenai" => {
            "azure.ai.openai"
        }
        "azure.ai.inference" | "az.ai.inference" => "azure.ai.inference",
        "gcp.gemini" | "gemini" | "google" | "google_genai" => "gcp.gemini",
        "gcp.vertex_ai" | "vertex_ai" | "vertexai" | "vertex" => "gcp.vertex_ai",
        "ibm.watsonx.ai" | "watsonx" => "ibm.watsonx.ai",
        "x_ai" | "xai" => "x_ai",
        other => return other.to_string(),
    }
    .to_string()
}

fn kind_from(a: &Attrs) -> Option<SpanKind> {
    if let Some(k) = first_str(a, &["tracellm.span.kind", "langfuse.observation.type"])
        && let Some(k) = SpanKind::parse(&k)
    {
        return Some(k);
    }
    if let Some(k) = first_str(a, &["openinference.span.kind"]) {
        let k = match k.to_ascii_uppercase().as_str() {
            "LLM" => SpanKind::Llm,
            "EMBEDDING" => SpanKind::Embedding,
            "CHAIN" | "PROMPT" => SpanKind::Chain,
            "RETRIEVER" => SpanKind::Retriever,
            "RERANKER" => SpanKind::Reranker,
            "TOOL" => SpanKind::Tool,
            "AGENT" => SpanKind::Agent,
            "GUARDRAIL" => SpanKind::Guardrail,
            "EVALUATOR" => SpanKind::Evaluator,
            _ => SpanKind::Span,
        };
        return Some(k);
    }
    if let Some(op) = first_str(a, &["gen_ai.operation.name"]) {
        let k = match op.as_str() {
            "chat" | "text_completion" | "generate_content" | "completion" => Some(SpanKind::Llm),
            "embeddings" | "embedding" => Some(SpanKind::Embedding),
            "retrieval" => Some(SpanKind::Retriever),
            "execute_tool" => Some(SpanKind::Tool),
            "invoke_agent" | "create_agent" => Some(SpanKind::Agent),
            "invoke_workflow" => Some(SpanKind::Chain),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
    }
    if let Some(t) = first_str(a, &["llm.request.type"]) {
        let k = match t.as_str() {
            "chat" | "completion" => Some(SpanKind::Llm),
            "embedding" => Some(SpanKind::Embedding),
            "rerank" => Some(SpanKind::Reranker),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
    }
    if let Some(t) = first_str(a, &["traceloop.span.kind"]) {
        return Some(match t.as_str() {
            "workflow" | "task" => SpanKind::Chain,
            "agent" => SpanKind::Agent,
            "tool" => SpanKind::Tool,
            _ => SpanKind::Span,
        });
    }
    None
}

const MODEL_KEYS: &[&str] = &[
    "tracellm.model",
    "langfuse.observation.model.name",
    "llm.model_name",
    "llm.response.model_name",
    "llm.request.model_name",
    "embedding.model_name",
    "gen_ai.response.model",
    "gen_ai.request.model",
];

fn finish_reason(r: &str) -> String {
    match r {
        "tool_call" | "tool_calls" | "function_call" => "tool_calls".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages: every encoding becomes OpenAI-style `{role, content, tool_calls, tool_call_id}`.

fn args_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

fn tool_call(id: Option<Value>, name: Option<Value>, arguments: Option<Value>) -> Value {
    json!({"id": id.unwrap_or(Value::Null), "type": "function",
        "function": {"name": name.unwrap_or(Value::Null), "arguments": args_value(arguments.unwrap_or(Value::Null))}})
}

/// GenAI ≥ 1.37 `{role, parts: […], finish_reason}` messages.
fn from_parts_messages(v: &Value) -> Vec<Value> {
    let Some(msgs) = v.as_array() else { return Vec::new() };
    let mut out = Vec::new();
    for m in msgs {
        let role = m.get("role").cloned().unwrap_or(json!("user"));
        let mut text = Vec::new();
        let mut calls = Vec::new();
        let mut responses = Vec::new();
        for p in m.get("parts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            match p.get("type").and_then(Value::as_str).unwrap_or("text") {
                "text" | "reasoning" => {
                    if let Some(c) = p.get("content").or_else(|| p.get("text")) {
                        text.push(c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()));
                    }
                }
                "tool_call" => calls.push(tool_call(
                    p.get("id").cloned(),
                    p.get("name").cloned(),
                    p.get("arguments").cloned(),
                )),
                "tool_call_response" => {
                    let r = p
                        .get("response")
                        .or_else(|| p.get("result"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    responses.push((p.get("id").cloned().unwrap_or(Value::Null), r));
                }
                _ => {
                    if let Some(c) = p.get("content") {
                        text.push(c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()));
                    }
                }
            }
        }
        for (id, r) in responses {
            let content = r.as_str().map(str::to_string).unwrap_or_else(|| r.to_string());
            out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
        }
        if !text.is_empty() || !calls.is_empty() || m.get("parts").is_none() {
            let mut msg = Map::new();
            msg.insert("role".into(), role);
            let content = if text.is_empty() {
                m.get("content").cloned().unwrap_or(Value::Null)
            } else {
                Value::String(text.join("\n"))
            };
            msg.insert("content".into(), content);
            if !calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(fr) = m.get("finish_reason").and_then(Value::as_str) {
                msg.insert("finish_reason".into(), Value::String(finish_reason(fr)));
            }
            out.push(Value::Object(msg));
        }
    }
    out
}

/// OpenInference `llm.*_messages.{i}.message.*` (already unflattened).
fn from_openinference(items: Vec<Value>) -> Vec<Value> {
    // The items are the mapping's own (unflattened from attributes): their values move into the
    // messages, prompts and responses are not copied.
    let object = |v: Value| match v {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    items
        .into_iter()
        .map(|item| {
            let mut m = object(item);
            if let Some(inner) = m.remove("message") {
                m = object(inner);
            }
            let mut msg = Map::new();
            msg.insert("role".into(), m.remove("role").unwrap_or_else(|| json!("user")));
            let content = match m.remove("content") {
                Some(c) => c,
                None => {
                    let parts: Vec<&str> = m
                        .get("contents")
                        .and_then(Value::as_array)
                        .map(|cs| {
                            cs.iter()
                                .filter_map(|c| {
                                    let c = c.get("message_content").unwrap_or(c);
                                    c.get("text").and_then(Value::as_str)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if parts.is_empty() { Value::Null } else { Value::String(parts.join("\n")) }
                }
            };
            msg.insert("content".into(), content);
            for key in ["name", "tool_call_id"] {
                if let Some(v) = m.remove(key) {
                    msg.insert(key.into(), v);
                }
            }
            if let Some(Value::Array(calls)) = m.remove("tool_calls") {
                let calls: Vec<Value> = calls
                    .into_iter()
                    .map(|c| {
                        let mut c = object(c);
                        if let Some(inner) = c.remove("tool_call") {
                            c = object(inner);
                        }
                        let mut f = c.remove("function").map(object).unwrap_or_default();
                        tool_call(c.remove("id"), f.remove("name"), f.remove("arguments"))
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(fr) = m.get("finish_reason").and_then(Value::as_str) {
                msg.insert("finish_reason".into(), Value::String(finish_reason(fr)));
            }
            Value::Object(msg)
        })
        .collect()
}

/// OpenLLMetry `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` (already unflattened).
fn from_openllmetry(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|m| {
            let mut msg = Map::new();
            msg.insert("role".into(), m.get("role").cloned().unwrap_or(json!("user")));
            msg.insert("content".into(), m.get("content").cloned().unwrap_or(Value::Null));
            if let Some(id) = m.get("tool_call_id") {
                msg.insert("tool_call_id".into(), id.clone());
            }
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                let calls = calls
                    .iter()
                    .map(|c| {
                        tool_call(
                            c.get("id").cloned(),
                            c.get("name").cloned(),
                            c.get("arguments").cloned(),
                        )
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(fr) = m.get("finish_reason").and_then(Value::as_str) {
                msg.insert("finish_reason".into(), Value::String(finish_reason(fr)));
            }
            Value::Object(msg)
        })
        .collect()
}

/// A message from a GenAI ≤ 1.36 event body `{content, role, tool_calls}` (or a choice
/// `{index, finish_reason, message{…}}`).
fn from_event_body(name: &str, body: &Value) -> Value {
    let (msg_src, fr) = match body.get("message") {
        Some(m) => (m, body.get("finish_reason").and_then(Value::as_str)),
        None => (body, body.get("finish_reason").and_then(Value::as_str)),
    };
    let default_role = match name {
        "gen_ai.system.message" => "system",
        "gen_ai.user.message" => "user",
        "gen_ai.tool.message" => "tool",
        _ => "assistant",
    };
    let mut msg = Map::new();
    msg.insert("role".into(), msg_src.get("role").cloned().unwrap_or(json!(default_role)));
    msg.insert("content".into(), msg_src.get("content").cloned().unwrap_or(Value::Null));
    if let Some(id) = msg_src.get("id").filter(|_| default_role == "tool") {
        msg.insert("tool_call_id".into(), id.clone());
    }
    if let Some(calls) = msg_src.get("tool_calls").and_then(Value::as_array) {
        let calls = calls
            .iter()
            .map(|c| {
                let f = c.get("function").unwrap_or(c);
                tool_call(c.get("id").cloned(), f.get("name").cloned(), f.get("arguments").cloned())
            })
            .collect();
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(fr) = fr {
        msg.insert("finish_reason".into(), Value::String(finish_reason(fr)));
    }
    Value::Object(msg)
}

const INPUT_EVENTS: &[&str] = &[
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
];

/// Marks input/output that were built from message events, so that later events rebuild them.
const FROM_EVENTS: &str = "tracellm.messages_from_events";

/// Folds GenAI ≤ 1.36 message events (span events, or log records attached to the span) into
/// the span's input and output when no attribute carried them. Called again as more events
/// arrive (logs may come in several requests), it rebuilds from all of them.
pub fn apply_message_events(s: &mut Span) {
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut events: Vec<&SpanEvent> = s.events.iter().collect();
    events.sort_by_key(|e| e.time);
    for e in events {
        let body = e.attributes.get("body").cloned().unwrap_or_else(|| {
            parsed(&e.attributes, "gen_ai.event.content")
                .unwrap_or_else(|| Value::Object(e.attributes.clone()))
        });
        if INPUT_EVENTS.contains(&e.name.as_str()) {
            input.push(from_event_body(&e.name, &body));
        } else if e.name == "gen_ai.choice" {
            output.push(from_event_body(&e.name, &body));
        } else if e.name == "gen_ai.content.prompt" {
            if let Some(p) = parsed(&e.attributes, "gen_ai.prompt") {
                input.extend(
                    p.as_array()
                        .cloned()
                        .unwrap_or_else(|| vec![json!({"role": "user", "content": p})]),
                );
            }
        } else if e.name == "gen_ai.content.completion"
            && let Some(c) = parsed(&e.attributes, "gen_ai.completion")
        {
            output.extend(
                c.as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![json!({"role": "assistant", "content": c})]),
            );
        }
    }
    let rebuilt =
        s.attributes.get(FROM_EVENTS).and_then(Value::as_array).cloned().unwrap_or_default();
    let was = |what: &str| rebuilt.iter().any(|v| v == what);
    let mut marks = Vec::new();
    if !input.is_empty() && (s.input.is_null() || was("input")) {
        s.input = json!({"messages": input});
        marks.push(json!("input"));
    }
    if !output.is_empty() && (s.output.is_null() || was("output")) {
        s.output = json!({"messages": output});
        marks.push(json!("output"));
    }
    if !marks.is_empty() {
        s.attributes.insert(FROM_EVENTS.into(), Value::Array(marks));
    }
}

fn input_messages(a: &mut Attrs) -> Option<Vec<Value>> {
    let oi = indexed(a, "llm.input_messages");
    if !oi.is_empty() {
        return Some(from_openinference(oi));
    }
    if let Some(v) = parsed(a, "gen_ai.input.messages") {
        let mut msgs = Vec::new();
        if let Some(sys) = parsed(a, "gen_ai.system_instructions") {
            let text = match &sys {
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| {
                        p.get("content").or_else(|| p.get("text")).and_then(Value::as_str)
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            msgs.push(json!({"role": "system", "content": text}));
        }
        msgs.extend(from_parts_messages(&v));
        return Some(msgs);
    }
    let ol = indexed(a, "gen_ai.prompt");
    if !ol.is_empty() {
        return Some(from_openllmetry(ol));
    }
    if let Some(Value::Array(items)) = parsed(a, "gen_ai.prompt") {
        return Some(items);
    }
    None
}

fn output_messages(a: &mut Attrs) -> Option<Vec<Value>> {
    let oi = indexed(a, "llm.output_messages");
    if !oi.is_empty() {
        let mut msgs = from_openinference(oi);
        // OpenInference reports the finish reason on the span, not the message.
        if let Some(fr) = first_str(a, &["llm.finish_reason"])
            && let Some(Value::Object(last)) = msgs.last_mut()
        {
            last.entry("finish_reason").or_insert_with(|| Value::String(finish_reason(&fr)));
        }
        return Some(msgs);
    }
    if let Some(v) = parsed(a, "gen_ai.output.messages") {
        return Some(from_parts_messages(&v));
    }
    let ol = indexed(a, "gen_ai.completion");
    if !ol.is_empty() {
        return Some(from_openllmetry(ol));
    }
    if let Some(Value::Array(items)) = parsed(a, "gen_ai.completion") {
        return Some(items);
    }
    None
}

/// Keys whose content moves into input/output/tool and is not kept twice in `attributes`.
fn is_content_key(k: &str) -> bool {
    const EXACT: &[&str] = &[
        "input.value",
        "output.value",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "langfuse.observation.input",
        "langfuse.observation.output",
        "gen_ai.retrieval.documents",
        "gen_ai.prompt",
        "gen_ai.completion",
    ];
    const PREFIXES: &[&str] = &[
        "llm.input_messages.",
        "llm.output_messages.",
        "gen_ai.prompt.",
        "gen_ai.completion.",
        "retrieval.documents.",
    ];
    EXACT.contains(&k) || PREFIXES.iter().any(|p| k.starts_with(p))
}

// ---------------------------------------------------------------------------------------------
// Spans

fn value_of(a: &Attrs, key: &str) -> Option<Value> {
    let v = parsed(a, key)?;
    // OpenInference input.value with a JSON mime type is structured.
    Some(v)
}

fn map_span(
    mut span: opentelemetry_proto::tonic::trace::v1::Span,
    mut a: Attrs,
    limits: &OtelLimits,
) -> Span {
    let explicit_kind = kind_from(&a);
    let model = first_str(&a, MODEL_KEYS).or_else(|| {
        // A failed OpenInference call has no response to name the model: the request's
        // parameters still do.
        parsed(&a, "llm.invocation_parameters").and_then(|p| p.get("model").and_then(str_of))
    });
    let tool_name = first_str(&a, &["gen_ai.tool.name", "tool.name"]);
    let tool_id = first_str(&a, &["gen_ai.tool.call.id", "tool.id", "tool_call.id"]);
    let kind = explicit_kind.unwrap_or(if model.is_some() {
        SpanKind::Llm
    } else if tool_name.is_some() || tool_id.is_some() {
        SpanKind::Tool
    } else {
        SpanKind::Span
    });
    let provider = first_str(
        &a,
        &[
            "tracellm.provider",
            "llm.provider",
            "llm.system",
            "gen_ai.provider.name",
            "gen_ai.system",
        ],
    )
    .map(|p| normalize_provider(&p));

    // Input and output, by precedence.
    let mut input = Value::Null;
    let mut output = Value::Null;
    if let Some(v) = value_of(&a, "langfuse.observation.input") {
        input = v;
    } else if let Some(m) = input_messages(&mut a) {
        input = json!({"messages": m});
    } else if let Some(v) = value_of(&a, "input.value") {
        input = v;
    } else if let Some(q) = first_str(&a, &["gen_ai.retrieval.query.text"]) {
        input = json!({"query": q});
    } else if let Some(v) = value_of(&a, "traceloop.entity.input") {
        input = v;
    }
    if let Some(v) = value_of(&a, "langfuse.observation.output") {
        output = v;
    } else if let Some(m) = output_messages(&mut a) {
        output = json!({"messages": m});
    } else if let Some(docs) = (kind == SpanKind::Retriever)
        .then(|| indexed(&mut a, "retrieval.documents"))
        .filter(|d| !d.is_empty())
    {
        let docs: Vec<Value> = docs
            .into_iter()
            .map(|mut d| match d.get_mut("document").map(Value::take) {
                Some(doc) => doc,
                None => d,
            })
            .collect();
        output = json!({"documents": docs});
    } else if let Some(v) = value_of(&a, "output.value") {
        output = v;
    } else if let Some(d) = parsed(&a, "gen_ai.retrieval.documents") {
        output = json!({"documents": d});
    } else if let Some(v) = value_of(&a, "traceloop.entity.output") {
        output = v;
    }

    let tool = (kind == SpanKind::Tool).then(|| ToolCall {
        name: tool_name
            .clone()
            .or_else(|| first_str(&a, &["traceloop.entity.name"]))
            .unwrap_or_else(|| span.name.clone()),
        arguments: parsed(&a, "gen_ai.tool.call.arguments").unwrap_or_else(|| input.clone()),
        result: parsed(&a, "gen_ai.tool.call.result").unwrap_or_else(|| output.clone()),
    });
    if let Some(t) = &tool {
        if input.is_null() {
            input = t.arguments.clone();
        }
        if output.is_null() {
            output = t.result.clone();
        }
    }

    // Tokens.
    let usage = parsed(&a, "langfuse.observation.usage_details").filter(Value::is_object);
    let usage_num = |keys: &[&str]| -> Option<u64> {
        let u = usage.as_ref()?;
        keys.iter().find_map(|k| u.get(*k).and_then(Value::as_u64))
    };
    let prompt = usage_num(&["input", "prompt_tokens", "input_tokens"]).or_else(|| {
        first_u64(
            &a,
            &["llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"],
        )
    });
    let completion = usage_num(&["output", "completion_tokens", "output_tokens"]).or_else(|| {
        first_u64(
            &a,
            &[
                "llm.token_count.completion",
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ],
        )
    });
    let total = usage_num(&["total", "total_tokens"]).or_else(|| {
        first_u64(
            &a,
            &["llm.token_count.total", "llm.usage.total_tokens", "gen_ai.usage.total_tokens"],
        )
    });
    let cached = first_u64(
        &a,
        &[
            "llm.token_count.prompt_details.cache_read",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
        ],
    );
    let clamp = |n: Option<u64>| n.map(|n| n.min(MAX_TOKENS));
    let (prompt, completion, total) = (clamp(prompt), clamp(completion), clamp(total));
    let tokens = (prompt.is_some() || completion.is_some() || total.is_some()).then(|| {
        let (p, c) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        let sum = p.saturating_add(c).min(MAX_TOKENS);
        Tokens { prompt: p, completion: c, total: total.unwrap_or(sum), estimated: false, cached }
    });
    // Costs and durations out of range are ignored, like unreadable ones.
    let cost_usd = parsed(&a, "langfuse.observation.cost_details")
        .and_then(|c| c.get("total").and_then(Value::as_f64))
        .or_else(|| first_f64(&a, &["llm.cost.total", "tracellm.cost_usd"]))
        .filter(|c| (0.0..=MAX_COST_USD).contains(c));
    let duration = |ms: &f64| (0.0..=MAX_DURATION_MS).contains(ms);
    let mut ttft = first_f64(&a, &["gen_ai.response.time_to_first_chunk"])
        .map(|s| s * 1000.0)
        .filter(duration);

    if ttft.is_none() {
        // OpenInference marks the first streamed token with a span event.
        ttft = span
            .events
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case("First Token Stream Event"))
            .filter(|e| {
                e.time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0
            })
            .map(|e| (e.time_unix_nano - span.start_time_unix_nano) as f64 / 1e6)
            .filter(duration);
    }
    // Events, and the error from the status plus any exception event.
    let mut events = Vec::new();
    let mut exception: Option<SpanError> = None;
    for e in span.events.iter_mut().take(limits.max_events) {
        let (attrs, _): (Map<String, Value>, _) =
            attributes(std::mem::take(&mut e.attributes), limits);
        if e.name == "exception" && exception.is_none() {
            exception = Some(SpanError {
                kind: first_str(&attrs, &["exception.type"]),
                message: first_str(&attrs, &["exception.message"]).unwrap_or_default(),
                stack: first_str(&attrs, &["exception.stacktrace"]),
            });
        }
        events.push(SpanEvent {
            name: std::mem::take(&mut e.name),
            time: nanos(e.time_unix_nano)
                .or_else(|| nanos(span.start_time_unix_nano))
                .unwrap_or_default(),
            attributes: attrs,
        });
    }
    let status_code = span.status.as_ref().map_or(0, |s| s.code);
    let error = (status_code == 2).then(|| {
        let status_msg = span.status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
        let mut e = exception.clone().unwrap_or(SpanError {
            kind: None,
            message: String::new(),
            stack: None,
        });
        if e.kind.is_none() {
            e.kind = first_str(&a, &["error.type"]);
        }
        if e.message.is_empty() {
            e.message = if status_msg.is_empty() { "error".into() } else { status_msg };
        }
        e
    });
    let start = nanos(span.start_time_unix_nano).unwrap_or_else(Utc::now);
    let end = nanos(span.end_time_unix_nano).filter(|e| *e >= start);
    let status = if error.is_some() {
        Status::Error
    } else if end.is_none() {
        Status::Running
    } else {
        Status::Success
    };

    let mut attributes = a;
    attributes.retain(|k, _| !is_content_key(k));
    if span.kind != 0 {
        attributes.insert("otel.span_kind".into(), json!(span.kind));
    }
    let mut s = Span {
        id: hex(&span.span_id),
        parent_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
        name: std::mem::take(&mut span.name),
        kind,
        start_time: start,
        end_time: end,
        latency_ms: None,
        status,
        model,
        provider,
        input,
        output,
        tool,
        tokens,
        cost_usd,
        time_to_first_token_ms: ttft,
        error,
        attributes: attributes.into_iter().collect(),
        events,
    };
    apply_message_events(&mut s);
    s
}

/// What a span says about its trace: session, user, tags, metadata.
fn trace_hints(input: &mut TraceInput, a: &Attrs, is_root: bool) {
    let session = first_str(
        a,
        &[
            "langfuse.session.id",
            "session.id",
            "gen_ai.conversation.id",
            "traceloop.association.properties.session_id",
        ],
    );
    let user =
        first_str(a, &["langfuse.user.id", "user.id", "traceloop.association.properties.user_id"]);
    if is_root || input.session_id.is_none() {
        input.session_id = session.or(input.session_id.take());
    }
    if is_root || input.user_id.is_none() {
        input.user_id = user.or(input.user_id.take());
    }
    for key in ["langfuse.trace.tags", "tag.tags", "tracellm.tags"] {
        match parsed(a, key) {
            Some(Value::Array(tags)) => {
                for t in tags.iter().filter_map(Value::as_str) {
                    if !input.tags.iter().any(|x| x == t) {
                        input.tags.push(t.to_string());
                    }
                }
            }
            Some(Value::String(t)) if !input.tags.contains(&t) => input.tags.push(t),
            _ => {}
        }
    }
    if let Some(Value::Object(m)) = parsed(a, "metadata") {
        input.metadata.extend(m);
    }
    for (k, v) in a {
        if let Some(rest) = k.strip_prefix("traceloop.association.properties.")
            && rest != "session_id"
            && rest != "user_id"
        {
            input.metadata.insert(rest.to_string(), v.clone());
        }
        if let Some(rest) = k.strip_prefix("langfuse.trace.metadata.") {
            input.metadata.insert(rest.to_string(), v.clone());
        }
    }
    if is_root && let Some(name) = first_str(a, &["langfuse.trace.name", "tracellm.trace.name"]) {
        input.name = Some(name);
    }
}

fn check_time(ns: u64, what: &str) -> Result<(), String> {
    if ns >= MAX_NANOS {
        return Err(format!("{what} {ns} is after 2200 (OTLP times are Unix nanoseconds)"));
    }
    Ok(())
}

fn check_id(bytes: &[u8], want: usize, what: &str) -> Result<(), String> {
    if bytes.len() != want {
        return Err(format!("{what} must be {want} bytes, got {}", bytes.len()));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{what} must not be all zeros"));
    }
    Ok(())
}

/// The batch of `trace_id` in `out`, created on first sight.
fn batch_of<'a>(
    out: &'a mut Mapped,
    by_trace: &mut HashMap<Vec<u8>, usize>,
    trace_id: &[u8],
) -> &'a mut SpanBatch {
    let idx = *by_trace.entry(trace_id.to_vec()).or_insert_with(|| {
        out.batches.push(SpanBatch {
            trace_id: hex(trace_id),
            input: TraceInput::default(),
            spans: Vec::new(),
            log_events: Vec::new(),
        });
        out.batches.len() - 1
    });
    &mut out.batches[idx]
}

/// Maps an OTLP trace export onto span batches, one per trace id. Spans with invalid ids are
/// refused (counted for the partial-success answer); the others are kept.
pub fn map_traces(req: ExportTraceServiceRequest, limits: &OtelLimits) -> Mapped {
    let mut out = Mapped::default();
    let mut by_trace: HashMap<Vec<u8>, usize> = HashMap::new();
    // Each trace's root keeps a copy of its resource's attributes: a big resource shared by
    // many traces must not multiply the request's size. Copies stop at this budget.
    let mut copy_budget = RESOURCE_COPY_BYTES;
    let mut uncopied = 0usize;
    for rs in req.resource_spans {
        let resource: Map<String, Value> =
            rs.resource.map(|r| attributes(r.attributes, limits).0).unwrap_or_default();
        let resource_size = json_size(&resource);
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| s.name).filter(|n| !n.is_empty());
            for mut span in ss.spans {
                let label = if span.name.is_empty() { "(unnamed)" } else { span.name.as_str() };
                let checks = check_id(&span.trace_id, 16, "traceId")
                    .and_then(|_| check_id(&span.span_id, 8, "spanId"))
                    .and_then(|_| {
                        if span.parent_span_id.is_empty() {
                            Ok(())
                        } else {
                            check_id(&span.parent_span_id, 8, "parentSpanId")
                        }
                    })
                    .and_then(|_| check_time(span.start_time_unix_nano, "startTimeUnixNano"))
                    .and_then(|_| check_time(span.end_time_unix_nano, "endTimeUnixNano"));
                if let Err(e) = checks {
                    out.rejected += 1;
                    out.warn(format!("span {label:?} refused: {e}"));
                    continue;
                }
                let (mut a, dropped): (Attrs, _) =
                    attributes(std::mem::take(&mut span.attributes), limits);
                if dropped > 0 {
                    out.warn(format!(
                        "span {label:?}: kept the first {} attributes, dropped {dropped}",
                        limits.max_attributes
                    ));
                }
                if span.events.len() > limits.max_events {
                    out.warn(format!(
                        "span {label:?}: kept the first {} events, dropped {}",
                        limits.max_events,
                        span.events.len() - limits.max_events
                    ));
                }
                if let Some(s) = &scope {
                    a.insert("otel.scope.name".into(), Value::String(s.clone()));
                }
                let batch = batch_of(&mut out, &mut by_trace, &span.trace_id);
                let is_root = span.parent_span_id.is_empty();
                trace_hints(&mut batch.input, &a, is_root);
                if is_root && !resource.is_empty() {
                    if resource_size <= copy_budget {
                        copy_budget -= resource_size;
                        batch
                            .input
                            .metadata
                            .insert("resource".into(), Value::Object(resource.clone()));
                    } else {
                        uncopied += 1;
                    }
                }
                batch.spans.push(map_span(span, a, limits));
            }
        }
    }
    if uncopied > 0 {
        out.warn(format!(
            "resource attributes not kept on {uncopied} traces: more than {RESOURCE_COPY_BYTES} bytes of copies in one request"
        ));
    }
    out
}

/// Bytes of resource attributes one trace request may copy onto its traces' roots.
const RESOURCE_COPY_BYTES: usize = 16 * 1024 * 1024;

/// About the size of `m` as JSON text: strings, keys and a few bytes per value.
fn json_size(m: &Map<String, Value>) -> usize {
    let mut size = 2;
    let mut stack: Vec<&Value> = Vec::new();
    for (k, v) in m {
        size += k.len() + 4;
        stack.push(v);
    }
    while let Some(v) = stack.pop() {
        size += match v {
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a);
                2
            }
            Value::Object(o) => {
                for (k, v) in o {
                    size += k.len() + 4;
                    stack.push(v);
                }
                2
            }
            _ => 8,
        };
    }
    size
}

/// Maps OTLP log records that carry GenAI events (≤ 1.36: `gen_ai.user.message`,
/// `gen_ai.choice`, …) onto events of the spans they name by trace and span id. Records without
/// both ids cannot be placed and are refused.
pub fn map_logs(req: &ExportLogsServiceRequest, limits: &OtelLimits) -> Mapped {
    let mut out = Mapped::default();
    let mut by_trace: HashMap<Vec<u8>, usize> = HashMap::new();
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                let (attrs, _): (Map<String, Value>, _) =
                    attributes(rec.attributes.clone(), limits);
                let name = if rec.event_name.is_empty() {
                    first_str(&attrs, &["event.name"]).unwrap_or_default()
                } else {
                    rec.event_name.clone()
                };
                if let Err(e) = check_id(&rec.trace_id, 16, "traceId")
                    .and_then(|_| check_id(&rec.span_id, 8, "spanId"))
                {
                    out.rejected += 1;
                    out.warn(format!("log record {name:?} refused: {e} (records are placed on spans by their ids)"));
                    continue;
                }
                let mut event_attrs = attrs;
                if let Some(body) = &rec.body {
                    let depth = limits.max_value_depth.min(super::MAX_PARSED_DEPTH);
                    event_attrs.insert("body".into(), any_to_json(body.clone(), 0, depth));
                }
                let time = nanos(rec.time_unix_nano)
                    .or_else(|| nanos(rec.observed_time_unix_nano))
                    .unwrap_or_else(Utc::now);
                batch_of(&mut out, &mut by_trace, &rec.trace_id)
                    .log_events
                    .push((hex(&rec.span_id), SpanEvent { name, time, attributes: event_attrs }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_keys_unflatten() {
        let a: Map<String, Value> = serde_json::from_value(json!({
            "llm.input_messages.1.message.role": "assistant",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hi",
            "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "search",
            "llm.input_messagesX": "not it"
        }))
        .unwrap();
        let mut a: Attrs = a.into_iter().collect();
        let items = indexed(&mut a, "llm.input_messages");
        assert_eq!(a.len(), 1, "the indexed keys are taken out, the others stay");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["message"]["content"], "hi");
        assert_eq!(items[1]["message"]["tool_calls"][0]["tool_call"]["function"]["name"], "search");
    }

    #[test]
    fn providers_normalize_through_one_table() {
        for (a, b) in [
            ("mistral_ai", "mistralai"),
            ("aws.bedrock", "aws"),
            ("azure.ai.openai", "az.ai.openai"),
            ("Anthropic", "anthropic"),
        ] {
            assert_eq!(normalize_provider(a), normalize_provider(b), "{a} vs {b}");
        }
        assert_eq!(normalize_provider("openai"), "openai");
    }

    #[test]
    fn finish_reasons_normalize() {
        assert_eq!(finish_reason("tool_call"), "tool_calls");
        assert_eq!(finish_reason("tool_calls"), "tool_calls");
        assert_eq!(finish_reason("stop"), "stop");
    }
}
