//! `tracellm config …`: write a commented config file, show where it is read from.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::common::Globals;
use crate::config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a config file with every key, commented out, explained
    Init {
        /// Where to write it [default: --config, or ~/.config/tracellm/config.toml]
        path: Option<PathBuf>,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Print the path of the config file that is read
    Path,
}

/// Every key `config.toml` accepts, each commented out at its default.
pub const TEMPLATE: &str = r#"# TraceLLM configuration. Environment variables (TRACELLM_*) override these keys, and
# command-line flags override both. Uncomment a line to use it.

# --- client commands: trace, replay, monitor, export, demo ---------------------------------

# Server the client commands talk to (TRACELLM_ENDPOINT, --endpoint)
# endpoint = "http://127.0.0.1:8000"

# TraceLLM API key sent to the server (TRACELLM_API_KEY, --api-key)
# api-key = "tlm_sk_..."

# --- LLM provider of `tracellm trace` and `tracellm replay --rerun` -------------------------

# openai, groq or ollama (TRACELLM_PROVIDER, --provider)
# provider = "openai"

# Model to ask for (TRACELLM_MODEL, --model)
# model = "gpt-4o-mini"

# Any OpenAI-compatible API: vLLM, LM Studio, a proxy… (TRACELLM_BASE_URL, OPENAI_BASE_URL, --base-url)
# base-url = "http://localhost:11434/v1"

# The provider's API key; OPENAI_API_KEY or GROQ_API_KEY are read when this is unset
# (TRACELLM_PROVIDER_KEY, --provider-key)
# provider-key = "sk-..."

# --- the server: tracellm start -------------------------------------------------------------

# Address to bind; 127.0.0.1 keeps TraceLLM private to this machine (TRACELLM_HOST)
# host = "127.0.0.1"

# Port of the HTTP API (TRACELLM_PORT)
# port = 8000

# Port of the dashboard (TRACELLM_DASHBOARD_PORT)
# dashboard-port = 3000
# no-dashboard = false

# Port of OTLP/gRPC ingest (TRACELLM_OTLP_GRPC_PORT)
# otlp-grpc-port = 4317
# no-otlp-grpc = false

# Directory of the embedded store; `trace` and `replay` also use it when no server runs
# (TRACELLM_DATA_DIR)
# data-dir = "~/.tracellm"

# Store URL (TRACELLM_STORE) [default: sqlite://DATA_DIR/traces.db]
# store = "sqlite:///var/lib/tracellm/traces.db"

# Largest request body in bytes (TRACELLM_MAX_BODY_BYTES)
# max-body-bytes = 10485760

# Limits on what one request may carry (TRACELLM_MAX_SPANS_PER_REQUEST, …; docs/SECURITY.md)
# max-spans-per-request = 100000
# max-spans-per-trace = 100000
# max-attributes = 1000
# max-events = 1000
# max-json-depth = 64
# max-value-depth = 32

# Ingest requests that may wait for the store's writer (TRACELLM_INGEST_QUEUE_REQUESTS)
# ingest-queue-requests = 1024

# Memory ingest may hold at once, in MiB; beyond it ingest answers 503 (TRACELLM_INGEST_MEMORY_MB)
# ingest-memory-mb = 256

# TOML file of model prices, USD per million tokens, extending the built-in table (TRACELLM_PRICES)
# prices = "/path/to/prices.toml"

# Log filter (TRACELLM_LOG)
# log = "info"

# --- access (docs/SECURITY.md) ---------------------------------------------------------------

# Require API keys (data) and the admin token (projects, keys) even on a loopback bind
# (TRACELLM_REQUIRE_AUTH). The admin token itself is read only from TRACELLM_ADMIN_TOKEN.
# require-auth = false

# Let a non-loopback host serve without API keys (TRACELLM_INSECURE_NO_AUTH)
# insecure-no-auth = false

# Host names to answer to besides localhost, e.g. behind a proxy (TRACELLM_ALLOWED_HOSTS)
# allowed-hosts = ["traces.internal.example"]

# Redaction at ingest. Secrets (provider keys, bearer tokens, private keys) are always redacted
# unless disable-secrets is true; below, the optional rules, and your own rules as name and regex.
# [redact]
# disable-secrets = false
# optional = ["email", "phone", "card_number"]
# [redact.rules]
# ticket = "TICKET-[0-9]+"
"#;

pub fn run(cmd: ConfigCommand, g: Globals) -> anyhow::Result<()> {
    let default = || {
        g.config_path
            .clone()
            .or_else(config::default_path)
            .context("cannot tell where the config file goes: HOME is not set; name a path")
    };
    match cmd {
        ConfigCommand::Path => {
            println!("{}", default()?.display());
            Ok(())
        }
        ConfigCommand::Init { path, force } => {
            let path = match path {
                Some(p) => p,
                None => default()?,
            };
            if path.exists() && !force {
                anyhow::bail!("{} exists already; pass --force to replace it", path.display());
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&path, TEMPLATE)
                .with_context(|| format!("cannot write {}", path.display()))?;
            if g.json {
                println!("{}", serde_json::json!({"written": path}));
            } else {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_parses_and_every_key_in_it_is_known() {
        let cfg: crate::config::FileConfig = toml::from_str(super::TEMPLATE).unwrap();
        assert!(cfg.port.is_none(), "everything is commented out");
        let uncommented: String = super::TEMPLATE
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = ") || l.starts_with('['))
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg: crate::config::FileConfig =
            toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(cfg.port, Some(8000));
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(cfg.provider.as_deref(), Some("openai"));
        assert_eq!(cfg.redact.unwrap().optional.len(), 3);
    }
}
