//! Token estimation for calls whose provider reported no counts.
//!
//! Uses the OpenAI BPE tables shipped with tiktoken-rs: `o200k_base` for the GPT-4o, GPT-4.1,
//! GPT-5 and o-series families, `cl100k_base` for everything else (a close stand-in for other
//! vendors' tokenizers). Tables load on first use, so a server that never estimates never pays
//! for them.

use serde_json::Value;

/// Longest text estimated exactly; beyond it, the count is extrapolated from this prefix.
const MAX_EXACT_BYTES: usize = 256 * 1024;

fn uses_o200k(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit_once('/').map(|(_, b)| b.to_string()).unwrap_or(m);
    m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-5")
        || m.starts_with("chatgpt-4o")
        || m.starts_with("gpt-oss")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Number of tokens of `text` for `model`.
pub fn count_text(model: Option<&str>, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let bpe = if model.is_some_and(uses_o200k) {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    };
    if text.len() <= MAX_EXACT_BYTES {
        return bpe.count_ordinary(text) as u64;
    }
    let mut cut = MAX_EXACT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = bpe.count_ordinary(&text[..cut]) as f64;
    (head * text.len() as f64 / cut as f64).round() as u64
}

/// Tokens of a call's input or output: chat messages are counted as OpenAI bills them (content
/// plus 3 tokens per message and 3 to prime the reply); any other value by its text.
pub fn count_value(model: Option<&str>, v: &Value) -> u64 {
    match v {
        Value::Null => 0,
        Value::Object(o) if o.get("messages").is_some_and(Value::is_array) => {
            let msgs = o["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
            let mut n = 3;
            for m in msgs {
                n += 3 + count_text(model, &crate::text::message_text(m));
            }
            n
        }
        other => count_text(model, &crate::text::text_of(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_match_the_openai_tokenizer() {
        // "hello world" is two tokens in both cl100k_base and o200k_base.
        assert_eq!(count_text(Some("gpt-4o"), "hello world"), 2);
        assert_eq!(count_text(None, "hello world"), 2);
        assert_eq!(count_text(None, ""), 0);
    }

    #[test]
    fn chat_messages_include_per_message_overhead() {
        let v = json!({"messages": [{"role": "user", "content": "hello world"}]});
        assert_eq!(count_value(Some("gpt-4o"), &v), 3 + 3 + 2);
    }

    #[test]
    fn model_families_pick_their_table() {
        assert!(uses_o200k("gpt-4o-mini"));
        assert!(uses_o200k("o3-mini"));
        assert!(uses_o200k("openai/gpt-4.1"));
        assert!(!uses_o200k("gpt-3.5-turbo"));
        assert!(!uses_o200k("ollama-model"));
    }
}
