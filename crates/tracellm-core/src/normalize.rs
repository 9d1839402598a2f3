//! The one normalization every ingest path goes through.
//!
//! A client document is parsed into [`TraceInput`] (what the client said about the trace) and
//! [`Span`]s; [`assemble`] then checks the tree and derives everything else: latencies, estimated
//! tokens, cost, retries, status, failure reason and the roll-ups. OTLP ingest builds the same
//! two parts from protobuf and calls the same [`assemble`].

use foldhash::{HashMap, HashMapExt};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{Span, SpanError, SpanEvent, SpanKind, Status, Tokens, ToolCall, Trace};
use crate::prices::PriceTable;
use crate::{MAX_COST_USD, MAX_DURATION_MS, MAX_TOKENS, ids, json_type, text, time, tokens as tok};

/// A document that cannot be stored, with the field at fault (`spans[3].start_time`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError { field: field.into(), message: message.into() }
}

/// Limits and switches of normalization.
#[derive(Debug, Clone)]
pub struct NormalizeOptions {
    /// Most spans one trace may have (`--max-spans-per-trace`); a trace with more is refused.
    pub max_spans: usize,
    /// Most attributes one native span may carry (`--max-attributes`); more is refused.
    pub max_attributes: usize,
    /// Most events one native span may carry (`--max-events`); more is refused.
    pub max_events: usize,
    /// Estimate missing token counts of llm and embedding spans from their text.
    pub estimate_tokens: bool,
}

impl Default for NormalizeOptions {
    fn default() -> Self {
        Self { max_spans: 100_000, max_attributes: 1000, max_events: 1000, estimate_tokens: true }
    }
}

/// What a client said about a trace itself; everything not said is derived from the spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
// Stored with each trace (to merge later deliveries): what was not said is left out, not null.
#[serde(default)]
pub struct TraceInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    /// Set by the server from the API key, never from the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl TraceInput {
    /// What two deliveries said about one trace: `newer` wins where it says something.
    pub fn merge(self, newer: TraceInput) -> TraceInput {
        let mut tags = self.tags;
        for t in newer.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut metadata = self.metadata;
        metadata.extend(newer.metadata);
        TraceInput {
            id: newer.id.or(self.id),
            name: newer.name.or(self.name),
            status: newer.status.or(self.status),
            timestamp: newer.timestamp.or(self.timestamp),
            end_time: newer.end_time.or(self.end_time),
            latency_ms: newer.latency_ms.or(self.latency_ms),
            prompt: newer.prompt.or(self.prompt),
            response: newer.response.or(self.response),
            model: newer.model.or(self.model),
            provider: newer.provider.or(self.provider),
            tokens: newer.tokens.or(self.tokens),
            cost_usd: newer.cost_usd.or(self.cost_usd),
            retries: newer.retries.or(self.retries),
            failure_reason: newer.failure_reason.or(self.failure_reason),
            session_id: newer.session_id.or(self.session_id),
            user_id: newer.user_id.or(self.user_id),
            tags,
            metadata,
            environment: newer.environment.or(self.environment),
        }
    }
}

/// Prices and limits bundled, for the stores that re-assemble traces as OTLP spans arrive.
#[derive(Debug, Clone, Default)]
pub struct Assembler {
    pub prices: PriceTable,
    pub opts: NormalizeOptions,
}

impl Assembler {
    /// Assembles spans that arrive in any order: a span whose parent has not arrived yet is
    /// shown as a root, and the trace is `running` until its root arrives and ends.
    pub fn partial(
        &self,
        project_id: &str,
        input: TraceInput,
        spans: Vec<Span>,
    ) -> Result<Trace, ValidationError> {
        assemble(project_id, input, spans, &self.prices, &self.opts, Orphans::KeepAsRoots)
    }
}

/// What to do with a span whose parent is not in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Refuse the document (native ingest: the client sent the whole tree).
    Reject,
    /// Show the span as a root until its parent arrives (OTLP: spans come in any order).
    KeepAsRoots,
}

/// Normalizes one native trace document (the canonical shape, the seed's shape with `steps`,
/// and the usual aliases) into a trace of `project_id`.
pub fn normalize_trace(
    doc: Value,
    project_id: &str,
    prices: &PriceTable,
    opts: &NormalizeOptions,
) -> Result<Trace, ValidationError> {
    let (input, spans) = parse_document(doc, opts)?;
    assemble(project_id, input, spans, prices, opts, Orphans::Reject)
}

// ---------------------------------------------------------------------------------------------
// Parsing: JSON → TraceInput + spans, every alias in one place.

/// A JSON object whose fields are taken out as they are read; what is left is unknown.
struct Fields<'a> {
    map: Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn new(v: Value, path: &'a str) -> Result<Self, ValidationError> {
        match v {
            Value::Object(map) => Ok(Fields { map, path }),
            other => Err(invalid(
                if path.is_empty() { "$" } else { path },
                format!("expected an object, got {}", json_type(&other)),
            )),
        }
    }

    fn field(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    /// The first present, non-null value among `names`, with the name it was found under.
    fn take(&mut self, names: &[&str]) -> Option<(String, Value)> {
        let mut found = None;
        for n in names {
            if let Some(v) = self.map.remove(*n)
                && found.is_none()
                && !v.is_null()
            {
                found = Some((self.field(n), v));
            }
        }
        found
    }

    fn string(&mut self, names: &[&str]) -> Result<Option<String>, ValidationError> {
        match self.take(names) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((_, Value::Number(n))) => Ok(Some(n.to_string())),
            Some((f, other)) => {
                Err(invalid(f, format!("expected a string, got {}", json_type(&other))))
            }
        }
    }

    /// A text field that may also be given as structured JSON (kept as compact JSON text).
    fn text(&mut self, names: &[&str]) -> Option<String> {
        self.take(names).map(|(_, v)| match v {
            Value::String(s) => s,
            other => text::text_of(&other),
        })
    }

    fn id(&mut self, names: &[&str]) -> Result<Option<String>, ValidationError> {
        let f = names.iter().find(|n| self.map.contains_key(**n)).map(|n| self.field(n));
        let id = self.string(names)?;
        if let (Some(id), Some(f)) = (&id, f) {
            ids::check_id(id).map_err(|m| invalid(f, format!("id {m}")))?;
        }
        Ok(id)
    }

    fn time(&mut self, names: &[&str]) -> Result<Option<DateTime<Utc>>, ValidationError> {
        match self.take(names) {
            None => Ok(None),
            Some((f, v)) => time::parse_timestamp(&v).map(Some).map_err(|m| invalid(f, m)),
        }
    }

    /// A number from 0 to `max` (a duration or a cost: larger is a unit mistake or garbage).
    fn non_negative(&mut self, names: &[&str], max: f64) -> Result<Option<f64>, ValidationError> {
        match self.take(names) {
            None => Ok(None),
            Some((f, v)) => number(&v, &f, max).map(Some),
        }
    }

    fn count(&mut self, names: &[&str]) -> Result<Option<u64>, ValidationError> {
        match self.take(names) {
            None => Ok(None),
            Some((f, v)) => count(&v, &f).map(Some),
        }
    }

    fn object(&mut self, names: &[&str]) -> Result<Map<String, Value>, ValidationError> {
        match self.take(names) {
            None => Ok(Map::new()),
            Some((_, Value::Object(m))) => Ok(m),
            Some((f, other)) => {
                Err(invalid(f, format!("expected an object, got {}", json_type(&other))))
            }
        }
    }

    fn rest(self) -> Map<String, Value> {
        self.map
    }
}

fn number(v: &Value, field: &str, max: f64) -> Result<f64, ValidationError> {
    match v.as_f64() {
        Some(f) if f.is_finite() && (0.0..=max).contains(&f) => Ok(f),
        Some(f) if f > max => {
            Err(invalid(field, format!("{v} is larger than the largest value accepted ({max:e})")))
        }
        Some(_) => Err(invalid(field, "must not be negative")),
        None => Err(invalid(field, format!("expected a number, got {}", json_type(v)))),
    }
}

fn count(v: &Value, field: &str) -> Result<u64, ValidationError> {
    let n = match v.as_u64() {
        Some(n) => n,
        None => match v.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e18 => f as u64,
            Some(_) => return Err(invalid(field, "expected a non-negative whole number")),
            None => {
                return Err(invalid(
                    field,
                    format!("expected a whole number, got {}", json_type(v)),
                ));
            }
        },
    };
    if n > MAX_TOKENS {
        return Err(invalid(
            field,
            format!("{n} is larger than the largest count accepted ({MAX_TOKENS})"),
        ));
    }
    Ok(n)
}

const PROMPT_TOKEN_KEYS: &[&str] = &["prompt", "prompt_tokens", "input", "input_tokens"];
const COMPLETION_TOKEN_KEYS: &[&str] =
    &["completion", "completion_tokens", "output", "output_tokens"];
const TOTAL_TOKEN_KEYS: &[&str] = &["total", "total_tokens"];
const CACHED_TOKEN_KEYS: &[&str] =
    &["cached", "cached_tokens", "cache_read", "cache_read_input_tokens"];

/// Tokens given as `{prompt, completion, total}` (or OpenAI/Anthropic usage spellings) or as a
/// bare total.
fn parse_tokens(v: Value, field: &str) -> Result<Tokens, ValidationError> {
    if let Value::Object(_) = v {
        let mut f = Fields::new(v, field)?;
        let prompt = f.count(PROMPT_TOKEN_KEYS)?;
        let completion = f.count(COMPLETION_TOKEN_KEYS)?;
        let total = f.count(TOTAL_TOKEN_KEYS)?;
        let mut cached = f.count(CACHED_TOKEN_KEYS)?;
        if cached.is_none() {
            for details in ["prompt_tokens_details", "input_tokens_details"] {
                if let Some(d) = f.map.get(details).and_then(|d| d.get("cached_tokens")) {
                    cached = Some(count(d, &format!("{field}.{details}.cached_tokens"))?);
                }
            }
        }
        let estimated = matches!(f.map.get("estimated"), Some(Value::Bool(true)));
        let (p, c) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        return Ok(Tokens {
            prompt: p,
            completion: c,
            total: total.unwrap_or(p.saturating_add(c).min(MAX_TOKENS)),
            estimated,
            cached,
        });
    }
    if !v.is_number() {
        return Err(invalid(field, "expected {\"prompt\", \"completion\", \"total\"} or a number"));
    }
    let total = count(&v, field)?;
    Ok(Tokens { total, ..Tokens::default() })
}

/// Tokens from `tokens`/`usage` objects or flat `prompt_tokens`-style fields.
fn take_tokens(f: &mut Fields) -> Result<Option<Tokens>, ValidationError> {
    if let Some((field, v)) = f.take(&["tokens", "usage", "token_usage"]) {
        return parse_tokens(v, &field).map(Some);
    }
    let prompt = f.count(&["prompt_tokens", "input_tokens"])?;
    let completion = f.count(&["completion_tokens", "output_tokens"])?;
    let total = f.count(&["total_tokens"])?;
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return Ok(None);
    }
    let (p, c) = (prompt.unwrap_or(0), completion.unwrap_or(0));
    Ok(Some(Tokens {
        prompt: p,
        completion: c,
        total: total.unwrap_or(p.saturating_add(c).min(MAX_TOKENS)),
        estimated: false,
        cached: None,
    }))
}

fn parse_status(f: &mut Fields) -> Result<Option<Status>, ValidationError> {
    match f.take(&["status", "state"]) {
        None => Ok(None),
        Some((field, Value::String(s))) => Status::parse(&s).map(Some).ok_or_else(|| {
            invalid(
                field,
                format!("unknown status {s:?}; expected success, error, retried or running"),
            )
        }),
        Some((field, Value::Bool(ok))) => {
            let _ = field;
            Ok(Some(if ok { Status::Success } else { Status::Error }))
        }
        Some((field, other)) => {
            Err(invalid(field, format!("expected a string, got {}", json_type(&other))))
        }
    }
}

fn parse_error(v: Value, field: &str) -> Result<Option<SpanError>, ValidationError> {
    match v {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => {
            Ok(Some(SpanError { kind: None, message: "error".into(), stack: None }))
        }
        Value::String(s) => Ok(Some(SpanError { kind: None, message: s, stack: None })),
        v @ Value::Object(_) => {
            let mut f = Fields::new(v, field)?;
            let kind = f.string(&["type", "name", "kind", "exception_type"])?;
            let message = f.text(&["message", "msg", "detail", "description"]).unwrap_or_default();
            let stack = f.string(&["stack", "stacktrace", "traceback", "stack_trace"])?;
            Ok(Some(SpanError { kind, message, stack }))
        }
        other => Err(invalid(
            field,
            format!("expected a string or an object, got {}", json_type(&other)),
        )),
    }
}

fn parse_tags(v: Value, field: &str) -> Result<Vec<String>, ValidationError> {
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::String(s) => Ok(s),
                other => Err(invalid(
                    format!("{field}[{i}]"),
                    format!("expected a string, got {}", json_type(&other)),
                )),
            })
            .collect(),
        other => {
            Err(invalid(field, format!("expected an array of strings, got {}", json_type(&other))))
        }
    }
}

fn parse_events(
    v: Value,
    field: &str,
    fallback: DateTime<Utc>,
    opts: &NormalizeOptions,
) -> Result<Vec<SpanEvent>, ValidationError> {
    let Value::Array(items) = v else {
        return Err(invalid(field, format!("expected an array, got {}", json_type(&v))));
    };
    if items.len() > opts.max_events {
        return Err(invalid(
            field,
            format!(
                "{} events exceed the limit of {} per span (--max-events)",
                items.len(),
                opts.max_events
            ),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, e) in items.into_iter().enumerate() {
        let path = format!("{field}[{i}]");
        let mut f = Fields::new(e, &path)?;
        let name = f.string(&["name"])?.unwrap_or_else(|| "event".into());
        let time = f.time(&["time", "timestamp"])?.unwrap_or(fallback);
        let mut attributes = f.object(&["attributes"])?;
        attributes.extend(f.rest());
        check_attributes(&attributes, &path, opts)?;
        out.push(SpanEvent { name, time, attributes });
    }
    Ok(out)
}

fn check_attributes(
    a: &Map<String, Value>,
    path: &str,
    opts: &NormalizeOptions,
) -> Result<(), ValidationError> {
    if a.len() > opts.max_attributes {
        return Err(invalid(
            format!("{path}.attributes"),
            format!(
                "{} attributes exceed the limit of {} per span (--max-attributes)",
                a.len(),
                opts.max_attributes
            ),
        ));
    }
    Ok(())
}

/// A span as parsed, before the times that depend on its neighbours are settled.
struct ParsedSpan {
    span: Span,
    has_start: bool,
}

fn parse_span(
    v: Value,
    path: &str,
    index_default_name: &str,
    opts: &NormalizeOptions,
) -> Result<ParsedSpan, ValidationError> {
    let mut f = Fields::new(v, path)?;
    let id = f.id(&["id", "span_id", "spanId"])?.unwrap_or_else(ids::new_span_id);
    let parent_id = f.id(&["parent_id", "parent_span_id", "parentSpanId", "parent"])?;
    let kind = match f.take(&["kind", "type", "span_kind", "span_type", "observation_type"]) {
        None => None,
        Some((field, Value::String(s))) => Some(SpanKind::parse(&s).ok_or_else(|| {
            invalid(field, format!("unknown kind {s:?}; expected one of llm, tool, retriever, embedding, agent, chain, reranker, guardrail, evaluator, event, span"))
        })?),
        Some((field, other)) => {
            return Err(invalid(field, format!("expected a string, got {}", json_type(&other))));
        }
    };
    let model = f.string(&["model", "model_name"])?;
    let name = f.string(&["name", "span_name", "tool_name"])?;
    let start = f.time(&["start_time", "startTime", "start", "started_at", "timestamp"])?;
    let end = f.time(&["end_time", "endTime", "end", "ended_at"])?;
    let latency = f.non_negative(&["latency_ms", "duration_ms", "latency"], MAX_DURATION_MS)?;
    let status = parse_status(&mut f)?;
    let provider = f.string(&["provider", "system", "vendor"])?;
    let mut input = f.take(&["input", "inputs", "prompt"]).map(|(_, v)| v).unwrap_or(Value::Null);
    if input.is_null()
        && let Some((_, msgs @ Value::Array(_))) = f.take(&["messages"])
    {
        input = serde_json::json!({ "messages": msgs });
    }
    let output = f
        .take(&["output", "outputs", "response", "completion", "result"])
        .map(|(_, v)| v)
        .unwrap_or(Value::Null);
    let tokens = take_tokens(&mut f)?;
    let cost_usd = f.non_negative(&["cost_usd", "cost", "total_cost"], MAX_COST_USD)?;
    let ttft = f.non_negative(&["time_to_first_token_ms", "ttft_ms"], MAX_DURATION_MS)?;
    let error = match f.take(&["error", "exception"]) {
        None => None,
        Some((field, v)) => parse_error(v, &field)?,
    };
    let tool = match f.take(&["tool"]) {
        None => None,
        Some((field, v)) => {
            let mut t = Fields::new(v, &field)?;
            Some(ToolCall {
                name: t.string(&["name"])?.unwrap_or_default(),
                arguments: t
                    .take(&["arguments", "args", "input", "parameters"])
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null),
                result: t
                    .take(&["result", "output", "response"])
                    .map(|(_, v)| v)
                    .unwrap_or(Value::Null),
            })
        }
    };
    let tool_args = f.take(&["tool_input", "arguments", "args"]).map(|(_, v)| v);
    let mut attributes = f.object(&["attributes", "metadata"])?;
    let events = match f.take(&["events"]) {
        None => Vec::new(),
        Some((field, v)) => parse_events(v, &field, start.unwrap_or_else(Utc::now), opts)?,
    };
    attributes.extend(f.rest());
    check_attributes(&attributes, path, opts)?;

    let kind = kind.unwrap_or(if tool.is_some() {
        SpanKind::Tool
    } else if model.is_some() {
        SpanKind::Llm
    } else {
        SpanKind::Span
    });
    let name = name
        .or_else(|| tool.as_ref().map(|t| t.name.clone()).filter(|n| !n.is_empty()))
        .or_else(|| model.clone())
        .unwrap_or_else(|| {
            if kind == SpanKind::Span {
                index_default_name.to_string()
            } else {
                kind.as_str().to_string()
            }
        });
    let (input, tool) = match (kind, tool) {
        (SpanKind::Tool, None) => {
            let arguments = tool_args.unwrap_or_else(|| input.clone());
            let t = ToolCall { name: name.clone(), arguments, result: output.clone() };
            (input, Some(t))
        }
        (_, t) => (if input.is_null() { tool_args.unwrap_or(Value::Null) } else { input }, t),
    };
    let status = match (status, &error) {
        (_, Some(_)) => Status::Error,
        (Some(s), None) => s,
        (None, None) => Status::Success,
    };
    let has_start = start.is_some();
    let start_time = start.unwrap_or_default();
    Ok(ParsedSpan {
        span: Span {
            id,
            parent_id,
            name,
            kind,
            start_time,
            end_time: end,
            latency_ms: latency,
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
            attributes,
            events,
        },
        has_start,
    })
}

/// Splits a native document into what it says of the trace and its spans.
pub fn parse_document(
    doc: Value,
    opts: &NormalizeOptions,
) -> Result<(TraceInput, Vec<Span>), ValidationError> {
    let mut f = Fields::new(doc, "")?;
    let mut input = TraceInput {
        id: f.id(&["id", "trace_id", "traceId"])?,
        name: f.string(&["name", "trace_name"])?,
        status: parse_status(&mut f)?,
        timestamp: f.time(&["timestamp", "start_time", "startTime", "created_at", "start"])?,
        end_time: f.time(&["end_time", "endTime", "end"])?,
        latency_ms: f.non_negative(&["latency_ms", "duration_ms", "latency"], MAX_DURATION_MS)?,
        prompt: f.text(&["prompt", "input"]),
        response: f.text(&["response", "output", "completion"]),
        model: f.string(&["model", "model_name"])?,
        provider: f.string(&["provider", "system"])?,
        tokens: take_tokens(&mut f)?,
        cost_usd: f.non_negative(&["cost_usd", "cost", "total_cost"], MAX_COST_USD)?,
        retries: match f.count(&["retries", "retry_count"])? {
            Some(n) => Some(u32::try_from(n).map_err(|_| invalid("retries", "is too large"))?),
            None => None,
        },
        failure_reason: None,
        session_id: f.string(&["session_id", "sessionId", "conversation_id"])?,
        user_id: f.string(&["user_id", "userId"])?,
        tags: match f.take(&["tags"]) {
            None => Vec::new(),
            Some((field, v)) => parse_tags(v, &field)?,
        },
        metadata: Map::new(),
        environment: None,
    };
    input.failure_reason = match f.take(&["failure_reason", "error", "failure"]) {
        None => None,
        Some((field, v)) => parse_error(v, &field)?.map(|e| e.summary()),
    };
    f.map.remove("project_id");
    f.map.remove("project");
    for derived in ["span_count", "error_count", "prompt_preview", "response_preview"] {
        f.map.remove(derived);
    }
    let spans_value = f.take(&["spans", "steps", "observations"]);
    input.metadata = f.object(&["metadata"])?;
    input.metadata.extend(f.rest());

    let items = match spans_value {
        None => Vec::new(),
        Some((_, Value::Array(items))) => items,
        Some((field, other)) => {
            return Err(invalid(field, format!("expected an array, got {}", json_type(&other))));
        }
    };
    if items.len() > opts.max_spans {
        return Err(invalid(
            "spans",
            format!(
                "{} spans exceed the limit of {} per trace (--max-spans-per-trace)",
                items.len(),
                opts.max_spans
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        parsed.push(parse_span(item, &format!("spans[{i}]"), &format!("step {}", i + 1), opts)?);
    }
    // Steps without times (the seed's shape) run one after another from the trace's start.
    let mut cursor = input.timestamp.unwrap_or_else(Utc::now);
    let mut spans = Vec::with_capacity(parsed.len());
    for p in parsed {
        let mut s = p.span;
        if !p.has_start {
            s.start_time = match (s.end_time, s.latency_ms) {
                (Some(end), Some(ms)) => end - ms_duration(ms),
                _ => cursor,
            };
        }
        settle_times(&mut s);
        if let Some(end) = s.end_time {
            cursor = cursor.max(end);
        }
        spans.push(s);
    }
    Ok((input, spans))
}

fn ms_duration(ms: f64) -> Duration {
    Duration::microseconds((ms * 1000.0).round().min(i64::MAX as f64 / 2.0) as i64)
}

/// Fills the end time or latency from the other.
fn settle_times(s: &mut Span) {
    match (s.end_time, s.latency_ms) {
        (Some(end), _) if end >= s.start_time => {
            s.latency_ms = Some(time::millis_between(s.start_time, end))
        }
        (Some(_), _) => {
            // An end before the start is a clock error of the client: keep the start.
            s.end_time = Some(s.start_time);
            s.latency_ms = Some(0.0);
        }
        (None, Some(ms)) => s.end_time = Some(s.start_time + ms_duration(ms)),
        (None, None) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Assembly: the tree checks and everything derived.

/// Checks the span tree of one trace and derives every figure of the trace from `input` and the
/// spans. Spans are ordered by start time, and spans that start together by id.
pub fn assemble(
    project_id: &str,
    input: TraceInput,
    mut spans: Vec<Span>,
    prices: &PriceTable,
    opts: &NormalizeOptions,
    orphans: Orphans,
) -> Result<Trace, ValidationError> {
    check_span_count(spans.len(), opts)?;
    if spans.is_empty() {
        if input.prompt.is_none() && input.response.is_none() {
            return Err(invalid(
                "spans",
                "a trace needs at least one span (spans or steps), or a prompt and response",
            ));
        }
        spans.push(synthesize_call(&input));
    }
    spans.sort_by(|a, b| a.start_time.cmp(&b.start_time).then_with(|| a.id.cmp(&b.id)));
    for s in spans.iter_mut() {
        if s.parent_id.as_deref() == Some("") {
            s.parent_id = None;
        }
        derive_span(s, prices, opts);
    }
    let mut trace = roll_up(project_id, input, &spans, orphans, |s, want| match want {
        SpanText::Prompt => text::prompt_text(&s.input),
        SpanText::Response => text::response_text(&s.output),
    })?;
    trace.spans = spans;
    Ok(trace)
}

/// Refuses more spans than a trace may hold.
pub fn check_span_count(n: usize, opts: &NormalizeOptions) -> Result<(), ValidationError> {
    if n > opts.max_spans {
        return Err(invalid(
            "spans",
            format!(
                "{n} spans exceed the limit of {} per trace (--max-spans-per-trace)",
                opts.max_spans
            ),
        ));
    }
    Ok(())
}

/// What the roll-ups read of a span: the span itself, or a store's compact copy of these
/// fields (a trace that grows over many requests is rolled up again from copies, without
/// reading every stored span back).
pub trait SpanFacts {
    fn id(&self) -> &str;
    /// None for a root; never empty.
    fn parent_id(&self) -> Option<&str>;
    fn name(&self) -> &str;
    fn kind(&self) -> SpanKind;
    fn status(&self) -> Status;
    fn start_time(&self) -> DateTime<Utc>;
    fn end_time(&self) -> Option<DateTime<Utc>>;
    fn tokens(&self) -> Option<&Tokens>;
    fn cost_usd(&self) -> Option<f64>;
    fn model(&self) -> Option<&str>;
    fn provider(&self) -> Option<&str>;
    /// The error's `Type: message`, if the span has an error.
    fn error_summary(&self) -> Option<std::borrow::Cow<'_, str>>;
}

impl SpanFacts for Span {
    fn id(&self) -> &str {
        &self.id
    }
    fn parent_id(&self) -> Option<&str> {
        self.parent_id.as_deref().filter(|p| !p.is_empty())
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> SpanKind {
        self.kind
    }
    fn status(&self) -> Status {
        self.status
    }
    fn start_time(&self) -> DateTime<Utc> {
        self.start_time
    }
    fn end_time(&self) -> Option<DateTime<Utc>> {
        self.end_time
    }
    fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }
    fn cost_usd(&self) -> Option<f64> {
        self.cost_usd
    }
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
    fn error_summary(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.error.as_ref().map(|e| e.summary().into())
    }
}

/// The text of a span that a roll-up reads: the run's prompt and response come from at most
/// three spans (the first and last LLM call and the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanText {
    /// The last user message of the span's input ([`text::prompt_text`]).
    Prompt,
    /// The text of the span's output ([`text::response_text`]).
    Response,
}

/// Checks the tree of `spans` (derived already, ordered by start time and then id) and rolls
/// them up into the trace's figures: the trace without its spans. `text` gives a span's prompt
/// or response when the run's are taken from it.
pub fn roll_up<S: SpanFacts>(
    project_id: &str,
    input: TraceInput,
    spans: &[S],
    orphans: Orphans,
    mut text: impl FnMut(&S, SpanText) -> Option<String>,
) -> Result<Trace, ValidationError> {
    let index: HashMap<&str, usize> = {
        let mut m = HashMap::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            if m.insert(s.id(), i).is_some() {
                return Err(invalid(
                    "spans",
                    format!("span id {:?} appears more than once", s.id()),
                ));
            }
        }
        m
    };
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        match s.parent_id() {
            None => parent.push(None),
            Some(p) => match index.get(p) {
                Some(&j) if j == i => {
                    return Err(invalid(format!("span {:?}", s.id()), "is its own parent"));
                }
                Some(&j) => parent.push(Some(j)),
                None if orphans == Orphans::KeepAsRoots => parent.push(None),
                None => {
                    return Err(invalid(
                        format!("span {:?}.parent_id", s.id()),
                        format!("no span with id {p:?} in this trace"),
                    ));
                }
            },
        }
    }
    drop(index);
    let order = topological_order(spans, &parent)?;

    // Retries: a call repeated under the same parent after a failed attempt.
    let mut groups: HashMap<(Option<usize>, SpanKind, &str), Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if s.kind().is_retryable_call() {
            groups.entry((parent[i], s.kind(), s.name())).or_default().push(i);
        }
    }
    let mut inferred_retries: u32 = 0;
    let mut recovered = vec![false; spans.len()];
    for attempts in groups.values() {
        // `attempts` is in start order because spans are.
        let mut last_success = None;
        for (pos, &i) in attempts.iter().enumerate() {
            if pos > 0 && spans[attempts[pos - 1]].status() == Status::Error {
                inferred_retries = inferred_retries.saturating_add(1);
            }
            if spans[i].status() != Status::Error {
                last_success = Some(pos);
            }
        }
        if let Some(ok) = last_success {
            for &i in &attempts[..ok] {
                recovered[i] = true;
            }
        }
    }

    let error_count = saturating_u32(spans.iter().filter(|s| s.status() == Status::Error).count());
    let first_unrecovered = spans
        .iter()
        .enumerate()
        .find(|(i, s)| s.status() == Status::Error && !recovered[*i])
        .map(|(_, s)| s);

    // Roll-ups count only the deepest spans that carry a figure, so a parent that reports its
    // children's sum is not counted twice.
    let mut below_tokens = vec![false; spans.len()];
    let mut below_cost = vec![false; spans.len()];
    let mut tokens = Tokens::default();
    let mut cost: Option<f64> = None;
    for &i in order.iter().rev() {
        let s = &spans[i];
        if let Some(t) = s.tokens()
            && !below_tokens[i]
        {
            tokens.add(t);
        }
        if let Some(c) = s.cost_usd()
            && !below_cost[i]
        {
            cost = Some(cost.unwrap_or(0.0) + c);
        }
        if let Some(p) = parent[i] {
            below_tokens[p] |= below_tokens[i] || s.tokens().is_some();
            below_cost[p] |= below_cost[i] || s.cost_usd().is_some();
        }
    }

    let root = spans.iter().zip(&parent).find(|(_, p)| p.is_none()).map(|(s, _)| s);
    let first_llm = spans.iter().find(|s| s.kind() == SpanKind::Llm);
    let last_llm = spans.iter().rev().find(|s| s.kind() == SpanKind::Llm);

    let timestamp =
        input.timestamp.or_else(|| spans.first().map(|s| s.start_time())).unwrap_or_else(Utc::now);
    let span_end = spans.iter().filter_map(|s| s.end_time()).max();
    // A trace is running while its root is open, or (spans arriving in any order) while its
    // root has not arrived at all.
    let root_missing =
        orphans == Orphans::KeepAsRoots && !spans.iter().any(|s| s.parent_id().is_none());
    let root_running = root_missing || root.is_some_and(|r| r.status() == Status::Running);
    let end_time = input.end_time.or(if root_running { None } else { span_end });
    let latency_ms = input
        .latency_ms
        .or_else(|| end_time.map(|e| time::millis_between(timestamp, e.max(timestamp))));

    let retries = input.retries.unwrap_or(0).max(inferred_retries);
    let failure_reason = input.failure_reason.clone().or_else(|| {
        first_unrecovered.map(|s| match s.error_summary() {
            Some(e) => format!("{}: {e}", s.name()),
            None => format!("{}: failed", s.name()),
        })
    });
    let status = input.status.unwrap_or(if root_running {
        Status::Running
    } else if input.failure_reason.is_some() || first_unrecovered.is_some() {
        Status::Error
    } else if retries > 0 {
        Status::Retried
    } else {
        Status::Success
    });
    let failure_reason =
        if matches!(status, Status::Error | Status::Retried) || input.failure_reason.is_some() {
            failure_reason.or_else(|| {
                spans.iter().find_map(|s| s.error_summary().map(|e| format!("{}: {e}", s.name())))
            })
        } else {
            None
        };

    let name = input
        .name
        .clone()
        .or_else(|| root.map(|r| r.name().to_string()))
        .unwrap_or_else(|| "trace".to_string());
    // The run's prompt is what the user asked the model: the first LLM call's last user message
    // (a root's input is often the function's argument object), else the root's input.
    let prompt = input.prompt.clone().or_else(|| {
        first_llm
            .and_then(|s| text(s, SpanText::Prompt))
            .or_else(|| root.and_then(|r| text(r, SpanText::Prompt)))
    });
    let response = input.response.clone().or_else(|| {
        root.and_then(|r| text(r, SpanText::Response))
            .or_else(|| last_llm.and_then(|s| text(s, SpanText::Response)))
    });
    let model = input
        .model
        .clone()
        .or_else(|| first_llm.and_then(|s| s.model()).map(str::to_string))
        .or_else(|| spans.iter().find_map(|s| s.model()).map(str::to_string));
    let provider = input.provider.clone().or_else(|| {
        first_llm
            .and_then(|s| s.provider())
            .or_else(|| spans.iter().find_map(|s| s.provider()))
            .map(str::to_string)
    });
    let tokens = input.tokens.unwrap_or(tokens);
    let cost_usd = input.cost_usd.or(cost);

    Ok(Trace {
        id: input.id.clone().unwrap_or_else(ids::new_trace_id),
        project_id: project_id.to_string(),
        environment: input.environment.clone(),
        name,
        status,
        timestamp,
        end_time,
        latency_ms,
        prompt,
        response,
        model,
        provider,
        tokens,
        cost_usd,
        retries,
        failure_reason,
        session_id: input.session_id,
        user_id: input.user_id,
        tags: input.tags,
        metadata: input.metadata,
        span_count: saturating_u32(spans.len()),
        error_count,
        spans: Vec::new(),
    })
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Parents before children; a cycle of parent ids is an error.
fn topological_order<S: SpanFacts>(
    spans: &[S],
    parent: &[Option<usize>],
) -> Result<Vec<usize>, ValidationError> {
    let n = spans.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut stack = roots;
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(children[i].iter().rev());
    }
    if order.len() < n {
        let mut seen = vec![false; n];
        for &i in &order {
            seen[i] = true;
        }
        let stuck = (0..n).find(|i| !seen[*i]).unwrap_or(0);
        return Err(invalid(
            format!("span {:?}.parent_id", spans[stuck].id()),
            "parent ids form a cycle",
        ));
    }
    Ok(order)
}

/// Latency, estimated tokens and cost of one span.
pub fn derive_span(s: &mut Span, prices: &PriceTable, opts: &NormalizeOptions) {
    settle_times(s);
    if s.tokens.is_none()
        && opts.estimate_tokens
        && matches!(s.kind, SpanKind::Llm | SpanKind::Embedding)
        && (!s.input.is_null() || !s.output.is_null())
    {
        let model = s.model.as_deref();
        let prompt = tok::count_value(model, &s.input);
        let completion =
            if s.kind == SpanKind::Embedding { 0 } else { tok::count_value(model, &s.output) };
        s.tokens = Some(Tokens {
            prompt,
            completion,
            total: prompt.saturating_add(completion),
            estimated: true,
            cached: None,
        });
    }
    if s.cost_usd.is_none()
        && let (Some(model), Some(tokens)) = (&s.model, &s.tokens)
    {
        s.cost_usd = prices.cost(model, tokens);
    }
}

/// A trace sent with only its prompt, response and model gets one llm span, so every trace has
/// something to show and to roll up.
fn synthesize_call(input: &TraceInput) -> Span {
    let start = input.timestamp.unwrap_or_else(Utc::now);
    let end = input.end_time.or(input.latency_ms.map(|ms| start + ms_duration(ms)));
    let msg = |role: &str, content: &Option<String>| match content {
        Some(c) => serde_json::json!({ "messages": [{ "role": role, "content": c }] }),
        None => Value::Null,
    };
    let error = input.failure_reason.as_ref().map(|r| SpanError {
        kind: None,
        message: r.clone(),
        stack: None,
    });
    Span {
        id: ids::new_span_id(),
        parent_id: None,
        name: input.name.clone().or_else(|| input.model.clone()).unwrap_or_else(|| "llm".into()),
        kind: SpanKind::Llm,
        start_time: start,
        end_time: end,
        latency_ms: input.latency_ms,
        status: if error.is_some() {
            Status::Error
        } else {
            input.status.unwrap_or(Status::Success)
        },
        model: input.model.clone(),
        provider: input.provider.clone(),
        input: msg("user", &input.prompt),
        output: msg("assistant", &input.response),
        tool: None,
        tokens: input.tokens,
        cost_usd: input.cost_usd,
        time_to_first_token_ms: None,
        error,
        attributes: Map::new(),
        events: Vec::new(),
    }
}
