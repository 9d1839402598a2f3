//! Span documents written as JSON without going through serde's data model: the bytes are
//! exactly those `serde_json::to_writer` makes of a [`Span`] (the model's derive, maps in their
//! `preserve_order` order), but strings are scanned for characters to escape eight bytes at a
//! time instead of one. The store serializes every span it keeps, and prompts and responses are
//! most of a span's bytes: serde_json's byte-at-a-time scan was 8 % of the server's instructions
//! per span at ingest (docs/BENCHMARKS.md, "Instructions per span").
//!
//! Byte-for-byte sameness matters beyond tidiness: a merge compares a span's new text with the
//! stored one by digest, so spans stored by either writer compare equal when unchanged. The tests
//! hold this writer to serde_json's output over every field and every kind of character.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::{Span, SpanError, SpanEvent, Tokens, ToolCall};

/// `span` as JSON in a buffer sized for a typical LLM span, so that the text is rarely copied
/// as it grows.
pub fn span_to_vec(s: &Span) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    write_span(&mut out, s);
    out
}

/// Appends `span` as JSON, exactly as `serde_json::to_writer` would write it.
pub fn write_span(out: &mut Vec<u8>, s: &Span) {
    out.extend_from_slice(b"{\"id\":");
    string(out, &s.id);
    out.extend_from_slice(b",\"parent_id\":");
    opt(out, s.parent_id.as_deref(), string);
    out.extend_from_slice(b",\"name\":");
    string(out, &s.name);
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(s.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"start_time\":");
    time(out, &s.start_time);
    out.extend_from_slice(b",\"end_time\":");
    opt(out, s.end_time.as_ref(), time);
    out.extend_from_slice(b",\"latency_ms\":");
    opt(out, s.latency_ms.as_ref(), scalar);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(s.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"model\":");
    opt(out, s.model.as_deref(), string);
    out.extend_from_slice(b",\"provider\":");
    opt(out, s.provider.as_deref(), string);
    out.extend_from_slice(b",\"input\":");
    value(out, &s.input);
    out.extend_from_slice(b",\"output\":");
    value(out, &s.output);
    out.extend_from_slice(b",\"tool\":");
    opt(out, s.tool.as_ref(), tool);
    out.extend_from_slice(b",\"tokens\":");
    opt(out, s.tokens.as_ref(), tokens);
    out.extend_from_slice(b",\"cost_usd\":");
    opt(out, s.cost_usd.as_ref(), scalar);
    out.extend_from_slice(b",\"time_to_first_token_ms\":");
    opt(out, s.time_to_first_token_ms.as_ref(), scalar);
    out.extend_from_slice(b",\"error\":");
    opt(out, s.error.as_ref(), error);
    out.extend_from_slice(b",\"attributes\":");
    map(out, &s.attributes);
    out.extend_from_slice(b",\"events\":");
    array(out, &s.events, event);
    out.push(b'}');
}

fn tool(out: &mut Vec<u8>, t: &ToolCall) {
    out.extend_from_slice(b"{\"name\":");
    string(out, &t.name);
    out.extend_from_slice(b",\"arguments\":");
    value(out, &t.arguments);
    out.extend_from_slice(b",\"result\":");
    value(out, &t.result);
    out.push(b'}');
}

fn tokens(out: &mut Vec<u8>, t: &Tokens) {
    out.extend_from_slice(b"{\"prompt\":");
    scalar(out, &t.prompt);
    out.extend_from_slice(b",\"completion\":");
    scalar(out, &t.completion);
    out.extend_from_slice(b",\"total\":");
    scalar(out, &t.total);
    out.extend_from_slice(if t.estimated {
        b",\"estimated\":true"
    } else {
        b",\"estimated\":false"
    });
    if let Some(c) = &t.cached {
        out.extend_from_slice(b",\"cached\":");
        scalar(out, c);
    }
    out.push(b'}');
}

fn error(out: &mut Vec<u8>, e: &SpanError) {
    out.extend_from_slice(b"{\"type\":");
    opt(out, e.kind.as_deref(), string);
    out.extend_from_slice(b",\"message\":");
    string(out, &e.message);
    out.extend_from_slice(b",\"stack\":");
    opt(out, e.stack.as_deref(), string);
    out.push(b'}');
}

fn event(out: &mut Vec<u8>, e: &SpanEvent) {
    out.extend_from_slice(b"{\"name\":");
    string(out, &e.name);
    out.extend_from_slice(b",\"time\":");
    time(out, &e.time);
    out.extend_from_slice(b",\"attributes\":");
    map(out, &e.attributes);
    out.push(b'}');
}

fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    // the model's own timestamp writer, so that the two cannot drift apart
    let _ = crate::time::serialize(t, &mut serde_json::Serializer::new(out));
}

/// Numbers and booleans through serde_json itself (itoa and ryu, `null` for a non-finite float):
/// there is no scan to save on them. Writing into a `Vec` cannot fail.
fn scalar<T: serde::Serialize>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(out, v);
}

/// An `Option` as serde writes it: the value, or `null`.
fn opt<T: ?Sized>(out: &mut Vec<u8>, v: Option<&T>, write: fn(&mut Vec<u8>, &T)) {
    match v {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `[a,b,…]`, each item by `write`.
fn array<T>(out: &mut Vec<u8>, items: &[T], write: fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, x);
    }
    out.push(b']');
}

/// Appends `v` as JSON, exactly as serde_json writes a `Value`.
pub fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => scalar(out, n),
        Value::String(s) => string(out, s),
        Value::Array(a) => array(out, a, value),
        Value::Object(m) => map(out, m),
    }
}

fn map(out: &mut Vec<u8>, m: &Map<String, Value>) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is a control character, `"` or `\`: the bytes JSON
/// escapes. Each test is the classic "has a byte less than n" (n = 0x20, or 1 after an XOR
/// with the character), exact as to whether any byte qualifies.
#[inline]
fn needs_escape(w: u64) -> bool {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGHS != 0
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `\"`, `\\`, the short forms
/// `\b \t \n \f \r`, `\u00xx` (lower-case hex) for other control characters, nothing else.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    // `b[copied..]` is what is not yet in `out`; runs without escapes are copied whole
    let mut copied = 0;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        if needs_escape(u64::from_le_bytes(chunk.try_into().unwrap_or_default())) {
            escape_bytes(out, b, at..at + 8, &mut copied);
        }
        at += 8;
    }
    escape_bytes(out, b, at..b.len(), &mut copied);
    out.extend_from_slice(&b[copied..]);
    out.push(b'"');
}

/// Writes out the bytes of `b[bytes]` that need escaping, each with the run before it.
fn escape_bytes(out: &mut Vec<u8>, b: &[u8], bytes: std::ops::Range<usize>, copied: &mut usize) {
    for i in bytes {
        if escape(b[i]) != 0 {
            out.extend_from_slice(&b[*copied..i]);
            write_escape(out, b[i]);
            *copied = i + 1;
        }
    }
}

/// The letter of a byte's short escape, `u` for `\u00xx`, 0 for a byte written as it is.
#[inline]
fn escape(c: u8) -> u8 {
    match c {
        0x08 => b'b',
        b'\t' => b't',
        b'\n' => b'n',
        0x0c => b'f',
        b'\r' => b'r',
        b'"' => b'"',
        b'\\' => b'\\',
        0..0x20 => b'u',
        _ => 0,
    }
}

fn write_escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match escape(c) {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(c >> 4)],
            HEX[usize::from(c & 0xf)],
        ]),
        e => out.extend_from_slice(&[b'\\', e]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanKind, Status};
    use chrono::TimeZone;
    use serde_json::json;

    /// A small deterministic generator, so that a failure names a reproducible case.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A string of `len` characters drawn from every class the escaper tells apart: control
    /// characters (short and `\u` forms), `"`, `\`, the printable ASCII around them, DEL, and
    /// two-, three- and four-byte UTF-8.
    fn text(r: &mut Rng, len: usize) -> String {
        const CHARS: [char; 16] = [
            '\0', '\u{1}', '\u{8}', '\t', '\n', '\u{c}', '\r', '\u{1f}', '"', '\\', ' ', '!', '#',
            '\u{7f}', 'é', '😀',
        ];
        (0..len)
            .map(|_| match r.below(4) {
                0 => CHARS[r.below(CHARS.len())],
                1 => ['字', 'ß', '\u{2028}'][r.below(3)],
                _ => char::from(b'a' + r.below(26) as u8),
            })
            .collect()
    }

    fn serde(s: &Span) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    fn ours(s: &Span) -> Vec<u8> {
        let mut out = Vec::new();
        write_span(&mut out, s);
        out
    }

    fn full_span() -> Span {
        let t = Utc.with_ymd_and_hms(2026, 5, 31, 10, 30, 0).unwrap();
        Span {
            id: "s1".into(),
            parent_id: Some("root".into()),
            name: "ChatCompletion \"quoted\"".into(),
            kind: SpanKind::Llm,
            start_time: t,
            end_time: Some(t + chrono::Duration::nanoseconds(1_234_567_891)),
            latency_ms: Some(1234.567891),
            status: Status::Retried,
            model: Some("gpt-4o".into()),
            provider: Some("openai".into()),
            input: json!([{"role": "user", "content": "line one\nline \"two\"\t\\ end"}]),
            output: json!({"role": "assistant", "content": "ok", "n": [1, -2, 3.5, 1e300, null, true]}),
            tool: Some(ToolCall {
                name: "search".into(),
                arguments: json!({"q": "refund\u{1}policy"}),
                result: json!("found"),
            }),
            tokens: Some(Tokens {
                prompt: 120,
                completion: 45,
                total: 165,
                estimated: true,
                cached: Some(100),
            }),
            cost_usd: Some(0.000_123_4),
            time_to_first_token_ms: Some(f64::NAN),
            error: Some(SpanError {
                kind: Some("RateLimitError".into()),
                message: "429: slow down".into(),
                stack: None,
            }),
            attributes: json!({"z.last": 1, "a.first": {"nested": ["x", {"k": false}]}, "é": "ü"})
                .as_object()
                .cloned()
                .unwrap(),
            events: vec![
                SpanEvent { name: "exception".into(), time: t, attributes: Map::new() },
                SpanEvent {
                    name: "chunk".into(),
                    time: t + chrono::Duration::microseconds(5),
                    attributes: json!({"i": 2}).as_object().cloned().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn a_span_with_every_field_set_is_written_as_serde_json_writes_it() {
        let s = full_span();
        assert_eq!(String::from_utf8(ours(&s)).unwrap(), String::from_utf8(serde(&s)).unwrap());
    }

    #[test]
    fn a_span_with_every_optional_field_empty_is_written_as_serde_json_writes_it() {
        let mut s = full_span();
        s.parent_id = None;
        s.end_time = None;
        s.latency_ms = None;
        s.model = None;
        s.provider = None;
        s.input = Value::Null;
        s.output = json!("");
        s.tool = None;
        s.tokens = Some(Tokens::default());
        s.cost_usd = None;
        s.time_to_first_token_ms = None;
        s.error =
            Some(SpanError { kind: None, message: String::new(), stack: Some("at x".into()) });
        s.attributes = Map::new();
        s.events = Vec::new();
        assert_eq!(String::from_utf8(ours(&s)).unwrap(), String::from_utf8(serde(&s)).unwrap());
        s.tokens = None;
        s.error = None;
        assert_eq!(String::from_utf8(ours(&s)).unwrap(), String::from_utf8(serde(&s)).unwrap());
    }

    #[test]
    fn every_kind_status_and_odd_timestamp_is_written_as_serde_json_writes_it() {
        let mut s = full_span();
        let kinds = [
            SpanKind::Llm,
            SpanKind::Tool,
            SpanKind::Retriever,
            SpanKind::Embedding,
            SpanKind::Agent,
            SpanKind::Chain,
            SpanKind::Reranker,
            SpanKind::Guardrail,
            SpanKind::Evaluator,
            SpanKind::Event,
            SpanKind::Span,
        ];
        // whole seconds, milli-, micro- and nanoseconds, and a year the fast path leaves to chrono
        let times = [
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.timestamp_opt(1_780_000_000, 120_000_000).unwrap(),
            Utc.timestamp_opt(1_780_000_000, 123_456_000).unwrap(),
            Utc.timestamp_opt(1_780_000_000, 1).unwrap(),
            Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap(),
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            s.kind = kind;
            s.status = Status::ALL[i % 4];
            s.start_time = times[i % times.len()];
            s.end_time = Some(times[(i + 1) % times.len()]);
            s.latency_ms = Some([0.0, -0.0, 1e-7, 123456789.0, f64::INFINITY][i % 5]);
            assert_eq!(ours(&s), serde(&s), "{kind:?}");
        }
    }

    #[test]
    fn strings_of_every_length_and_character_are_escaped_as_serde_json_escapes_them() {
        let mut r = Rng(7);
        let mut out = Vec::new();
        // every length across several 8-byte chunks, escapes at every offset, then longer texts
        for n in 0..20_000 {
            let len = if n < 4_000 { n % 40 } else { r.below(600) };
            let s = text(&mut r, len);
            out.clear();
            string(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        // every single byte value that is a character on its own, at each offset of a chunk
        for c in (0u8..0x80).map(char::from) {
            for at in 0..9 {
                let s: String =
                    "abcdefghijklmnop"[..at].chars().chain([c]).chain("xyz".chars()).collect();
                out.clear();
                string(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
            }
        }
    }

    #[test]
    fn random_spans_are_written_as_serde_json_writes_them() {
        let mut r = Rng(11);
        for n in 0..500 {
            let mut s = full_span();
            s.id = text(&mut r, 16);
            s.name = text(&mut r, 12);
            s.input = json!({"messages": [{"role": "user", "content": text(&mut r, 500)}]});
            s.output = Value::String(text(&mut r, 300));
            let mut attributes = Map::new();
            for _ in 0..r.below(12) {
                let v = match r.below(5) {
                    0 => json!(r.next()),
                    1 => json!(-(r.next() as i64)),
                    2 => json!(r.next() as f64 / 7.0),
                    3 => json!([text(&mut r, 5), r.below(2) == 0]),
                    _ => Value::String(text(&mut r, 40)),
                };
                attributes.insert(text(&mut r, 10), v);
            }
            s.attributes = attributes;
            assert_eq!(ours(&s), serde(&s), "span {n}");
            let back: Span = serde_json::from_slice(&ours(&s)).unwrap();
            assert_eq!(
                (back.id, back.name, back.input, back.output),
                (s.id, s.name, s.input, s.output)
            );
        }
    }
}
