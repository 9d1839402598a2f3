//! What every target checks of the traces it produced: what a store does with them (serialize
//! to JSON, read back) must work, and the figures must be within the documented bounds.

use tracellm_core::{MAX_TOKENS, Trace};

pub fn check_trace(t: &Trace) {
    assert!(t.tokens.total <= MAX_TOKENS, "trace total tokens {} over the cap", t.tokens.total);
    assert!(t.cost_usd.is_none_or(f64::is_finite), "trace cost {:?}", t.cost_usd);
    assert!(t.latency_ms.is_none_or(|l| l.is_finite() && l >= 0.0), "latency {:?}", t.latency_ms);
    for s in &t.spans {
        if let Some(tk) = &s.tokens {
            assert!(tk.total <= MAX_TOKENS && tk.prompt <= MAX_TOKENS, "span tokens {tk:?}");
        }
    }
    // Stores keep traces and spans as JSON and read them back with serde_json (128 levels).
    let text = serde_json::to_string(t).expect("a trace serializes");
    let back: Result<Trace, _> = serde_json::from_str(&text);
    assert!(back.is_ok(), "a stored trace must read back: {:?}", back.err());
}
