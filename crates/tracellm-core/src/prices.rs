//! Model prices and cost computation.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::model::Tokens;

const BUILTIN: &str = include_str!("prices.toml");

/// Price of one model in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub prompt: f64,
    pub completion: f64,
    /// Price of prompt tokens read from cache; the prompt price when absent.
    pub cached: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    as_of: Option<String>,
    #[serde(default)]
    models: HashMap<String, ModelPrice>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("cannot read price file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid price file {path}: {message}")]
    Parse { path: String, message: String },
}

/// The table cost is computed from: the built-in prices plus any user file.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    as_of: String,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PriceTable {
    pub fn builtin() -> Self {
        let file: PriceFile = toml::from_str(BUILTIN).expect("built-in price table is valid");
        let mut t = PriceTable { models: HashMap::new(), as_of: file.as_of.unwrap_or_default() };
        t.extend(file.models);
        t
    }

    /// The built-in table extended (and overridden) by the TOML file at `path`.
    pub fn with_file(path: &Path) -> Result<Self, PriceError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| PriceError::Read { path: p.clone(), source })?;
        let mut t = Self::builtin();
        t.merge_toml(&text).map_err(|message| PriceError::Parse { path: p, message })?;
        Ok(t)
    }

    /// Adds the models of a TOML document in the built-in format; its entries win.
    pub fn merge_toml(&mut self, text: &str) -> Result<(), String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
        for (name, p) in &file.models {
            for (what, v) in [("prompt", p.prompt), ("completion", p.completion)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("models.{name}.{what} must be a non-negative number"));
                }
            }
        }
        self.extend(file.models);
        Ok(())
    }

    fn extend(&mut self, models: HashMap<String, ModelPrice>) {
        for (name, price) in models {
            self.models.insert(name.to_ascii_lowercase(), price);
        }
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The date the built-in prices were taken.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// The price of `model`, if known (see the lookup rules in `prices.toml`).
    pub fn lookup(&self, model: &str) -> Option<ModelPrice> {
        let m = model.trim().to_ascii_lowercase();
        if let Some(p) = self.models.get(&m) {
            return Some(*p);
        }
        let bare = m.rsplit_once('/').map(|(_, b)| b).unwrap_or(&m);
        if let Some(p) = self.models.get(bare) {
            return Some(*p);
        }
        // Longest known name that prefixes the model at a separator.
        let mut best: Option<(&str, &ModelPrice)> = None;
        for candidate in [m.as_str(), bare] {
            for (name, price) in &self.models {
                if let Some(rest) = candidate.strip_prefix(name.as_str()) {
                    let at_separator = rest.starts_with(['-', ':', '@']);
                    if at_separator && best.is_none_or(|(b, _)| name.len() > b.len()) {
                        best = Some((name, price));
                    }
                }
            }
        }
        best.map(|(_, p)| *p)
    }

    /// Cost in USD of `tokens` on `model`, or `None` when the price is unknown.
    pub fn cost(&self, model: &str, tokens: &Tokens) -> Option<f64> {
        let p = self.lookup(model)?;
        let cached = tokens.cached.unwrap_or(0).min(tokens.prompt);
        let uncached = tokens.prompt - cached;
        let usd = (uncached as f64 * p.prompt
            + cached as f64 * p.cached.unwrap_or(p.prompt)
            + tokens.completion as f64 * p.completion)
            / 1_000_000.0;
        Some(usd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(prompt: u64, completion: u64) -> Tokens {
        Tokens { prompt, completion, total: prompt + completion, estimated: false, cached: None }
    }

    #[test]
    fn builtin_table_is_broad() {
        let t = PriceTable::builtin();
        assert!(t.len() >= 30, "only {} models", t.len());
        assert_eq!(t.as_of(), "2025-08-01");
        for m in ["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro", "mistral-large", "deepseek-chat"] {
            assert!(t.lookup(m).is_some(), "{m}");
        }
    }

    #[test]
    fn cost_of_gpt_4o() {
        let t = PriceTable::builtin();
        let c = t.cost("gpt-4o", &tokens(1000, 500)).unwrap();
        assert!((c - (1000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn dated_snapshots_and_prefixes_find_their_model() {
        let t = PriceTable::builtin();
        assert_eq!(t.lookup("gpt-4o-2024-08-06"), t.lookup("gpt-4o"));
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18"), t.lookup("gpt-4o-mini"));
        assert_eq!(t.lookup("openai/gpt-4o"), t.lookup("gpt-4o"));
        assert_eq!(t.lookup("GPT-4O"), t.lookup("gpt-4o"));
        assert_eq!(t.lookup("claude-3-5-sonnet-20241022"), t.lookup("claude-3-5-sonnet"));
        assert!(t.lookup("gpt-4oo").is_none());
        assert!(t.lookup("my-private-model").is_none());
    }

    #[test]
    fn cached_tokens_use_the_cached_price() {
        let t = PriceTable::builtin();
        let mut tk = tokens(1000, 0);
        tk.cached = Some(400);
        let c = t.cost("gpt-4o", &tk).unwrap();
        assert!((c - (600.0 * 2.5 + 400.0 * 1.25) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn a_user_file_extends_and_overrides() {
        let mut t = PriceTable::builtin();
        t.merge_toml("[models]\n\"my-model\" = { prompt = 1.0, completion = 2.0 }\n\"gpt-4o\" = { prompt = 0.0, completion = 0.0 }\n").unwrap();
        assert_eq!(t.cost("my-model", &tokens(1_000_000, 0)), Some(1.0));
        assert_eq!(t.cost("gpt-4o", &tokens(10, 10)), Some(0.0));
        let err = t.merge_toml("[models]\nx = { prompt = -1.0, completion = 0.0 }").unwrap_err();
        assert!(err.contains("models.x.prompt"), "{err}");
        assert!(t.merge_toml("[models]\nx = { prompt = 1.0 }").is_err());
    }
}
