//! TraceLLM's core: the trace model, the one normalization every ingest path goes through, the
//! price table and token estimation. No I/O beyond reading a user's price file.

pub mod api;
pub mod ids;
pub mod json;
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
pub use normalize::{
    Assembler, NormalizeOptions, Orphans, SpanFacts, SpanText, TraceInput, ValidationError,
    check_span_count, derive_span, normalize_trace, roll_up,
};
pub use prices::PriceTable;

/// Largest token count accepted for one call or rolled up over a trace: 2^53 - 1, the largest
/// integer a JSON number holds exactly (and JavaScript, the dashboard's language). Native ingest
/// refuses larger counts; OTLP mapping and roll-ups clamp to it.
pub const MAX_TOKENS: u64 = (1 << 53) - 1;

/// Largest cost in USD accepted for one call or trace; native ingest refuses more, OTLP mapping
/// ignores it. Keeps sums over many spans finite.
pub const MAX_COST_USD: f64 = 1e9;

/// Longest duration accepted in milliseconds (latency, time to first token): about 100 years.
pub const MAX_DURATION_MS: f64 = 100.0 * 365.25 * 86_400_000.0;

/// Where a JSON text first nests deeper than `max` arrays and objects: the byte offset of the
/// bracket that opens level `max + 1`, or `None` when it stays within `max`. A linear scan that
/// allocates nothing, so a hostile document is refused before it is parsed. It does not validate
/// the JSON: the parser that follows does.
pub fn json_depth_exceeded(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth_exceeded(br#"{"a": [1, {"b": 2}]}"#, 3), None);
        assert_eq!(json_depth_exceeded(br#"{"a": [1, {"b": 2}]}"#, 2), Some(10));
        assert_eq!(json_depth_exceeded(br#"{"a": "[[[[{{{{"}"#, 1), None);
        assert_eq!(json_depth_exceeded(br#"{"a": "\"[[["}"#, 1), None);
        assert_eq!(json_depth_exceeded(br#"[]]]][[["#, 2), Some(7));
        assert_eq!(json_depth_exceeded(b"", 0), None);
    }
}
