//! The config file: the lowest layer under environment variables and flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Keys of `config.toml`; each has the meaning of the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dashboard_port: Option<u16>,
    pub no_dashboard: Option<bool>,
    pub otlp_grpc_port: Option<u16>,
    pub no_otlp_grpc: Option<bool>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_spans_per_request: Option<usize>,
    pub max_spans_per_trace: Option<usize>,
    pub max_attributes: Option<usize>,
    pub max_events: Option<usize>,
    pub max_json_depth: Option<usize>,
    pub max_value_depth: Option<usize>,
    pub ingest_queue_requests: Option<usize>,
    pub ingest_memory_mb: Option<usize>,
    pub prices: Option<PathBuf>,
    pub log: Option<String>,
    pub require_auth: Option<bool>,
    pub insecure_no_auth: Option<bool>,
    pub allowed_hosts: Option<Vec<String>>,
    /// Redaction at ingest: `[redact]` with `optional = ["email", …]`, `[redact.rules]`
    /// name = "regex", and `disable-secrets` (not recommended).
    pub redact: Option<tracellm_core::redact::RedactConfig>,
    /// URL of the TraceLLM server the client commands talk to.
    pub endpoint: Option<String>,
    /// TraceLLM API key the client commands send.
    pub api_key: Option<String>,
    /// LLM provider of `trace` and `replay --rerun`: openai, groq or ollama.
    pub provider: Option<String>,
    /// Model asked for by `trace`.
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible provider.
    pub base_url: Option<String>,
    /// API key of the LLM provider.
    pub provider_key: Option<String>,
}

pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/tracellm/config.toml"))
}

/// Reads `explicit`, or the default file when it exists; a named file must exist.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path().filter(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(FileConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| format!("invalid config file {}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("tracellm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "port = 9000\nprot = 1\n").unwrap();
        let e = load(Some(&f)).unwrap_err();
        assert!(e.contains("prot"), "{e}");
        std::fs::write(&f, "port = 9000\ndashboard-port = 9001\n").unwrap();
        let c = load(Some(&f)).unwrap();
        assert_eq!((c.port, c.dashboard_port), (Some(9000), Some(9001)));
        assert!(load(Some(&dir.join("missing.toml"))).is_err());
        std::fs::write(&f, "[redact]\ndisable-secrets = false\noptional = [\"email\"]\n[redact.rules]\nticket = \"T-[0-9]+\"\n").unwrap();
        let r = load(Some(&f)).unwrap().redact.unwrap();
        assert_eq!(r.optional, vec!["email"]);
        assert_eq!(r.rules["ticket"], "T-[0-9]+");
    }
}
