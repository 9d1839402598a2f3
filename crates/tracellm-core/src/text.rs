//! Plain text out of the JSON shapes calls carry: chat messages, content parts, tool payloads.
//! Used for previews, full-text indexing and token estimation.

use serde_json::Value;

use crate::model::{Span, Trace};

/// Calls `f` once for every distinct text of `t` that full-text search covers: names, message
/// contents, tool data, errors, prompt and response. The same text often appears several times
/// (a trace's prompt is its root span's input, a tool's arguments are its input, and each call
/// of an agent's loop sends the whole conversation so far again); each is given once, a
/// conversation message by message. Stores index them in their own way.
pub fn each_searchable_text(t: &Trace, mut f: impl FnMut(&str)) {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::RandomState::default();
    let mut seen = foldhash::HashSet::default();
    let mut visit = |s: &str| {
        if !s.is_empty() && seen.insert(hasher.hash_one(s)) {
            f(s);
        }
    };
    visit(&t.name);
    for s in &t.spans {
        each_span_text(s, &mut visit);
    }
    visit(t.prompt.as_deref().unwrap_or(""));
    visit(t.response.as_deref().unwrap_or(""));
    visit(t.failure_reason.as_deref().unwrap_or(""));
}

/// Calls `f` with each searchable text of one span, in the order [`each_searchable_text`] gives
/// them, repeats included.
pub fn each_span_text(s: &Span, mut f: impl FnMut(&str)) {
    f(&s.name);
    each_text(&s.input, &mut f);
    each_text(&s.output, &mut f);
    if let Some(tool) = &s.tool {
        f(&tool.name);
        each_text(&tool.arguments, &mut f);
        each_text(&tool.result, &mut f);
    }
    if let Some(e) = &s.error {
        f(&e.summary());
    }
}

/// All text of a value: strings as they are, chat messages by their contents, content parts by
/// their text, anything else as compact JSON.
pub fn text_of(v: &Value) -> String {
    let mut out = String::new();
    push_text(v, &mut out);
    out
}

/// Calls `f` with each piece of text [`text_of`] joins: a string, one message's text, a content
/// part's text, anything else as compact JSON.
fn each_text(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Null => {}
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|item| each_text(item, f)),
        Value::Object(o) => {
            if let Some(msgs) = o.get("messages").and_then(Value::as_array) {
                for m in msgs {
                    f(&message_text(m));
                }
            } else if o.contains_key("role") || o.contains_key("content") {
                f(&message_text(v));
            } else if let Some(Value::String(s)) = o.get("text") {
                f(s);
            } else {
                f(&v.to_string());
            }
        }
        other => f(&other.to_string()),
    }
}

fn push_sep(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn push_text(v: &Value, out: &mut String) {
    each_text(v, &mut |t| {
        if !t.is_empty() {
            push_sep(out);
            out.push_str(t);
        }
    });
}

/// Text of one chat message: its content (string or parts) and the calls it makes.
pub fn message_text(m: &Value) -> String {
    let mut out = String::new();
    match m.get("content") {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                let t = p
                    .get("text")
                    .or_else(|| p.get("content"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| if p.is_string() { text_of(p) } else { String::new() });
                if !t.is_empty() {
                    push_sep(&mut out);
                    out.push_str(&t);
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => out.push_str(&other.to_string()),
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function").unwrap_or(c);
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            let args = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            push_sep(&mut out);
            out.push_str(name);
            out.push('(');
            out.push_str(&args);
            out.push(')');
        }
    }
    out
}

/// The most telling prompt text of an input: the last user message of a chat, else all text.
pub fn prompt_text(input: &Value) -> Option<String> {
    if let Some(msgs) = input.get("messages").and_then(Value::as_array) {
        let last_user =
            msgs.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        if let Some(m) = last_user.or(msgs.last()) {
            let t = message_text(m);
            return (!t.is_empty()).then_some(t);
        }
    }
    let t = text_of(input);
    (!t.is_empty()).then_some(t)
}

/// The reply text of an output: the last message of a chat (or OpenAI `choices`), else all text.
pub fn response_text(output: &Value) -> Option<String> {
    if let Some(msgs) = output.get("messages").and_then(Value::as_array)
        && let Some(m) = msgs.last()
    {
        let t = message_text(m);
        return (!t.is_empty()).then_some(t);
    }
    if let Some(choices) = output.get("choices").and_then(Value::as_array)
        && let Some(m) = choices.first().and_then(|c| c.get("message"))
    {
        let t = message_text(m);
        return (!t.is_empty()).then_some(t);
    }
    let t = text_of(output);
    (!t.is_empty()).then_some(t)
}

/// Calls `f` with each search term of `text`: a run of letters and digits, lowercased, with
/// diacritics removed (`É` → `e`), which is how SQLite's `unicode61 remove_diacritics 2`
/// tokenizer splits and folds words. The PostgreSQL store indexes and queries these terms, so
/// both stores find the same traces for the same words. `word` is a buffer the caller reuses.
pub fn each_term(text: &str, word: &mut String, mut f: impl FnMut(&str)) {
    use unicode_normalization::char::{decompose_canonical, is_combining_mark};
    word.clear();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        } else if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                decompose_canonical(l, |d| {
                    if !is_combining_mark(d) {
                        word.push(d);
                    }
                });
            }
        } else if !word.is_empty() {
            f(word);
            word.clear();
        }
    }
    if !word.is_empty() {
        f(word);
        word.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_give_their_contents() {
        let v = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}
        ]});
        assert_eq!(text_of(&v), "be brief\nhi");
        assert_eq!(prompt_text(&v).as_deref(), Some("hi"));
    }

    #[test]
    fn tool_calls_are_text_too() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust\"}"}}
        ]});
        assert_eq!(message_text(&m), "search({\"q\":\"rust\"})");
    }

    #[test]
    fn other_values_are_compact_json() {
        assert_eq!(text_of(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(text_of(&json!("plain")), "plain");
        assert_eq!(
            response_text(
                &json!({"choices": [{"message": {"role": "assistant", "content": "yes"}}]})
            )
            .as_deref(),
            Some("yes")
        );
    }

    #[test]
    fn a_conversation_sent_again_is_searchable_text_once() {
        // An agent's loop: each call sends the conversation so far, and one more message.
        let msgs = [
            json!({"role": "system", "content": "You are a travel agent."}),
            json!({"role": "user", "content": "Find a flight to Lisbon."}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                "type": "function", "function": {"name": "search", "arguments": "{\"to\":\"LIS\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "TP1350 at 09:05"}),
        ];
        let span = |i: usize, input: Value, output: Value| {
            json!({"id": format!("s{i}"), "name": "chat", "kind": "llm",
                "start_time": "2026-01-01T00:00:00Z", "status": "success",
                "input": input, "output": output, "attributes": {}, "events": []})
        };
        let spans: Vec<Value> = (2..=4)
            .map(|n| {
                let out =
                    json!({"messages": [{"role": "assistant", "content": format!("step {n}")}]});
                span(n, json!({"messages": &msgs[..n]}), out)
            })
            .collect();
        let trace: Trace = serde_json::from_value(json!({
            "id": "t", "project_id": "default", "name": "agent", "status": "success",
            "timestamp": "2026-01-01T00:00:00Z", "prompt": "Find a flight to Lisbon.",
            "tokens": {"prompt": 0, "completion": 0, "total": 0, "estimated": false},
            "retries": 0, "tags": [],
            "metadata": {}, "span_count": 3, "error_count": 0, "spans": spans
        }))
        .unwrap();
        let mut texts = Vec::new();
        each_searchable_text(&trace, |t| texts.push(t.to_string()));
        assert_eq!(
            texts,
            [
                "agent",
                "chat",
                "You are a travel agent.",
                "Find a flight to Lisbon.",
                "step 2",
                "search({\"to\":\"LIS\"})",
                "step 3",
                "TP1350 at 09:05",
                "step 4"
            ]
        );
    }

    #[test]
    fn terms_are_folded_runs_of_letters_and_digits() {
        let mut terms = Vec::new();
        each_term("Crème-brûlée, GPT4o! naïve_ÉTÉ 3.5 日本語", &mut String::new(), |t| {
            terms.push(t.to_string())
        });
        assert_eq!(terms, ["creme", "brulee", "gpt4o", "naive", "ete", "3", "5", "日本語"]);
    }
}
