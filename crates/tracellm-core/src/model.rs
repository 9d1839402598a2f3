//! The canonical trace and span model: what `GET /traces/{id}` returns and what every store keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Outcome of a trace or a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
    /// Succeeded after one or more failed attempts.
    Retried,
    /// Not finished yet (spans still arriving).
    Running,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Success, Status::Error, Status::Retried, Status::Running];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Retried => "retried",
            Status::Running => "running",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s.to_ascii_lowercase().as_str() {
            "success" | "ok" | "succeeded" | "completed" | "complete" => Some(Status::Success),
            "error" | "failed" | "failure" | "fail" => Some(Status::Error),
            "retried" => Some(Status::Retried),
            "running" | "in_progress" | "pending" | "started" => Some(Status::Running),
            _ => None,
        }
    }
}

/// What a span does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Llm,
    Tool,
    Retriever,
    Embedding,
    Agent,
    Chain,
    Reranker,
    Guardrail,
    Evaluator,
    Event,
    Span,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Llm => "llm",
            SpanKind::Tool => "tool",
            SpanKind::Retriever => "retriever",
            SpanKind::Embedding => "embedding",
            SpanKind::Agent => "agent",
            SpanKind::Chain => "chain",
            SpanKind::Reranker => "reranker",
            SpanKind::Guardrail => "guardrail",
            SpanKind::Evaluator => "evaluator",
            SpanKind::Event => "event",
            SpanKind::Span => "span",
        }
    }

    /// Parses a kind name, accepting the spellings other tools use (`generation`, `function`, …).
    pub fn parse(s: &str) -> Option<SpanKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "llm" | "generation" | "chat" | "completion" | "text_completion" | "model" => {
                SpanKind::Llm
            }
            "tool" | "function" | "tool_call" | "execute_tool" => SpanKind::Tool,
            "retriever" | "retrieval" | "retrieve" => SpanKind::Retriever,
            "embedding" | "embeddings" => SpanKind::Embedding,
            "agent" => SpanKind::Agent,
            "chain" | "workflow" | "task" | "step" => SpanKind::Chain,
            "reranker" | "rerank" => SpanKind::Reranker,
            "guardrail" => SpanKind::Guardrail,
            "evaluator" | "eval" | "evaluation" => SpanKind::Evaluator,
            "event" => SpanKind::Event,
            "span" | "other" | "internal" | "unknown" => SpanKind::Span,
            _ => return None,
        })
    }

    /// Kinds whose repetition after a failure counts as a retry.
    pub fn is_retryable_call(self) -> bool {
        matches!(self, SpanKind::Llm | SpanKind::Tool | SpanKind::Embedding | SpanKind::Retriever)
    }
}

/// Token usage of one call or rolled up over a trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// True when any count was estimated from text rather than reported by the provider.
    pub estimated: bool,
    /// Prompt tokens served from the provider's cache (included in `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<u64>,
}

impl Tokens {
    /// Adds `other`, each count clamped to [`crate::MAX_TOKENS`] so that roll-ups of many
    /// spans stay exact JSON numbers and fit the stores' signed 64-bit columns.
    pub fn add(&mut self, other: &Tokens) {
        let add = |a: u64, b: u64| a.saturating_add(b).min(crate::MAX_TOKENS);
        self.prompt = add(self.prompt, other.prompt);
        self.completion = add(self.completion, other.completion);
        self.total = add(self.total, other.total);
        self.estimated |= other.estimated;
        if let Some(c) = other.cached {
            self.cached = Some(add(self.cached.unwrap_or(0), c));
        }
    }
}

/// An error recorded on a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpanError {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message: String,
    pub stack: Option<String>,
}

impl SpanError {
    /// `Type: message`, or the message alone.
    pub fn summary(&self) -> String {
        match &self.kind {
            Some(k) if !k.is_empty() => format!("{k}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// The call a tool span made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    pub name: String,
    #[schema(value_type = Object)]
    pub arguments: Value,
    #[schema(value_type = Object)]
    pub result: Value,
}

/// A timestamped event inside a span (an exception, a log line, a streamed chunk marker…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpanEvent {
    pub name: String,
    #[serde(serialize_with = "crate::time::serialize")]
    pub time: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Span {
    pub id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    #[serde(serialize_with = "crate::time::serialize")]
    pub start_time: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub end_time: Option<DateTime<Utc>>,
    pub latency_ms: Option<f64>,
    pub status: Status,
    pub model: Option<String>,
    pub provider: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Object)]
    pub output: Value,
    pub tool: Option<ToolCall>,
    pub tokens: Option<Tokens>,
    pub cost_usd: Option<f64>,
    pub time_to_first_token_ms: Option<f64>,
    pub error: Option<SpanError>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub events: Vec<SpanEvent>,
}

/// A run: the tree of its spans plus the figures rolled up from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trace {
    pub id: String,
    pub project_id: String,
    /// The environment of the API key that sent it (development, staging, production); null
    /// for traces sent without a key.
    #[serde(default)]
    pub environment: Option<String>,
    pub name: String,
    pub status: Status,
    #[serde(serialize_with = "crate::time::serialize")]
    pub timestamp: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub end_time: Option<DateTime<Utc>>,
    pub latency_ms: Option<f64>,
    pub prompt: Option<String>,
    pub response: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub tokens: Tokens,
    /// Null when no span's model has a known price: never a guessed zero.
    pub cost_usd: Option<f64>,
    pub retries: u32,
    pub failure_reason: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub span_count: u32,
    pub error_count: u32,
    pub spans: Vec<Span>,
}

/// The row of a trace list: everything but the spans, with short previews of the texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraceSummary {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub environment: Option<String>,
    pub name: String,
    pub status: Status,
    #[serde(serialize_with = "crate::time::serialize")]
    pub timestamp: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub end_time: Option<DateTime<Utc>>,
    pub latency_ms: Option<f64>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub tokens: Tokens,
    pub cost_usd: Option<f64>,
    pub retries: u32,
    pub failure_reason: Option<String>,
    pub span_count: u32,
    pub error_count: u32,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub prompt_preview: Option<String>,
    pub response_preview: Option<String>,
}

/// Longest preview kept in summaries, in characters.
pub const PREVIEW_CHARS: usize = 200;

/// The first `max` characters of `s`, with an ellipsis when cut.
pub fn preview(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl TraceSummary {
    /// The whole trace again, from its summary and what a store keeps beside it.
    pub fn into_trace(
        self,
        prompt: Option<String>,
        response: Option<String>,
        metadata: Map<String, Value>,
        spans: Vec<Span>,
    ) -> Trace {
        let s = self;
        Trace {
            id: s.id,
            project_id: s.project_id,
            environment: s.environment,
            name: s.name,
            status: s.status,
            timestamp: s.timestamp,
            end_time: s.end_time,
            latency_ms: s.latency_ms,
            prompt,
            response,
            model: s.model,
            provider: s.provider,
            tokens: s.tokens,
            cost_usd: s.cost_usd,
            retries: s.retries,
            failure_reason: s.failure_reason,
            session_id: s.session_id,
            user_id: s.user_id,
            tags: s.tags,
            metadata,
            span_count: s.span_count,
            error_count: s.error_count,
            spans,
        }
    }
}

impl Trace {
    pub fn summary(&self) -> TraceSummary {
        TraceSummary {
            id: self.id.clone(),
            project_id: self.project_id.clone(),
            environment: self.environment.clone(),
            name: self.name.clone(),
            status: self.status,
            timestamp: self.timestamp,
            end_time: self.end_time,
            latency_ms: self.latency_ms,
            model: self.model.clone(),
            provider: self.provider.clone(),
            tokens: self.tokens,
            cost_usd: self.cost_usd,
            retries: self.retries,
            failure_reason: self.failure_reason.clone(),
            span_count: self.span_count,
            error_count: self.error_count,
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            tags: self.tags.clone(),
            prompt_preview: self.prompt.as_deref().map(|p| preview(p, PREVIEW_CHARS)),
            response_preview: self.response.as_deref().map(|r| preview(r, PREVIEW_CHARS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("héllo wörld", 4), "héll…");
        assert_eq!(preview("short", 10), "short");
    }

    #[test]
    fn kinds_and_statuses_round_trip() {
        for k in [SpanKind::Llm, SpanKind::Tool, SpanKind::Reranker, SpanKind::Span] {
            assert_eq!(SpanKind::parse(k.as_str()), Some(k));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(SpanKind::parse("generation"), Some(SpanKind::Llm));
        assert_eq!(SpanKind::parse("banana"), None);
    }
}
