//! OpenTelemetry ingest: OTLP spans (and GenAI log events) mapped onto the trace model, for the
//! four dialects of ../shared/OTEL_MAPPING.md (TraceLLM/Langfuse attributes, OpenInference,
//! OTel GenAI current and older, OpenLLMetry). The result feeds the same
//! [`crate::normalize::assemble`] as native ingest, so cost, token estimation, status and
//! retries work the same way.

pub mod json;
mod map;

use serde_json::{Map, Value};

use crate::model::{Span, SpanEvent};
use crate::normalize::TraceInput;

pub use map::{apply_message_events, map_logs, map_traces};
pub use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The spans of one trace carried by one request, with what they say about the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanBatch {
    pub trace_id: String,
    pub input: TraceInput,
    pub spans: Vec<Span>,
    /// Events from OTLP logs for spans of this trace: (span id, event).
    pub log_events: Vec<(String, SpanEvent)>,
}

/// What an OTLP request became: batches per trace, and what was refused (partial success).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped {
    pub batches: Vec<SpanBatch>,
    pub rejected: i64,
    /// Why spans were refused or trimmed, one line each (capped).
    pub warnings: Vec<String>,
}

impl Mapped {
    fn warn(&mut self, msg: String) {
        if self.warnings.len() < 10 {
            self.warnings.push(msg);
        }
    }

    /// The partial-success message: empty when nothing was refused or trimmed.
    pub fn message(&self) -> String {
        self.warnings.join("; ")
    }
}

/// Limits on what one span may carry. OTLP spans beyond them are trimmed, not refused (as OTel
/// SDKs do with their own limits), and the partial-success message says so.
#[derive(Debug, Clone)]
pub struct OtelLimits {
    /// Attributes kept per span (`--max-attributes`); the rest are dropped with a warning.
    pub max_attributes: usize,
    /// Events kept per span (`--max-events`); the rest are dropped with a warning.
    pub max_events: usize,
    /// Nesting depth of attribute values (arrays and key-value lists); deeper values become the
    /// string `"[nested too deeply]"`. At most [`MAX_PARSED_DEPTH`].
    pub max_value_depth: usize,
}

impl Default for OtelLimits {
    fn default() -> Self {
        OtelLimits { max_attributes: 1000, max_events: 1000, max_value_depth: 32 }
    }
}

/// A span's attributes while it is mapped. The mapping asks for about a hundred keys per span
/// (each dialect's names for the model, tokens, content, …), most of them absent; serde_json's
/// map hashes every key with SipHash, ~5 % of the server's instructions per ingested span. The
/// same ordered map with foldhash (seeded per process) costs a fraction of that; what is kept
/// becomes a serde_json map once, at the end.
pub(crate) type Attrs = indexmap::IndexMap<String, Value, foldhash::fast::RandomState>;

/// Attribute maps the mapping reads: a span's [`Attrs`], or an event's stored attributes.
pub(crate) trait Lookup {
    fn lookup(&self, key: &str) -> Option<&Value>;
}

impl Lookup for Attrs {
    fn lookup(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl Lookup for Map<String, Value> {
    fn lookup(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

/// Lowercase hex of an id.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Deepest JSON text inside a string attribute that is parsed into structure; deeper text stays
/// a string, so every stored span document reads back within serde_json's 128 levels.
pub const MAX_PARSED_DEPTH: usize = 64;

/// Reads an attribute map as JSON: the key, then the same key's value parsed if it is a JSON
/// string (several dialects send structures as JSON text).
pub(crate) fn parsed(attrs: &impl Lookup, key: &str) -> Option<Value> {
    match attrs.lookup(key)? {
        Value::String(s) => {
            let t = s.trim_start();
            if (t.starts_with('{') || t.starts_with('['))
                && crate::json_depth_exceeded(t.as_bytes(), MAX_PARSED_DEPTH).is_none()
            {
                serde_json::from_str(s).ok().or_else(|| Some(Value::String(s.clone())))
            } else {
                Some(Value::String(s.clone()))
            }
        }
        Value::Null => None,
        other => Some(other.clone()),
    }
}
