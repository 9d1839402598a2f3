//! TraceLLM's core: the trace model, the one normalization every ingest path goes through, the
//! price table and token estimation. No I/O beyond reading a user's price file.

pub mod api;
pub mod ids;
pub mod model;
pub mod normalize;
pub mod otel;
pub mod prices;
pub mod redact;
pub mod text;
pub mod time;
pub mod tokens;

pub use model::{
    Span, SpanError, SpanEvent, SpanKind, Status, Tokens, ToolCall, Trace, TraceSummary,
};
pub use normalize::{Assembler, NormalizeOptions, TraceInput, ValidationError, normalize_trace};
pub use prices::PriceTable;

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
