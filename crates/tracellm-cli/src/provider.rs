//! The LLM provider of `trace` and `replay --rerun`: any server speaking OpenAI's chat
//! completions wire format (OpenAI, Groq, Ollama, vLLM, LM Studio…), chosen by flags, the
//! environment or the config file, and called with streaming on.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::config::FileConfig;

pub const OPENAI_URL: &str = "https://api.openai.com/v1";
pub const GROQ_URL: &str = "https://api.groq.com/openai/v1";
pub const OLLAMA_URL: &str = "http://localhost:11434/v1";

/// Flags choosing the provider; shared by `trace` and `replay --rerun`.
#[derive(Debug, Clone, Default, Args)]
pub struct ProviderArgs {
    /// LLM provider preset: openai, groq or ollama (any other OpenAI-compatible server: --base-url)
    #[arg(long, env = "TRACELLM_PROVIDER", value_parser = ["openai", "groq", "ollama"])]
    pub provider: Option<String>,

    /// Model to ask for [default: gpt-4o-mini; llama-3.3-70b-versatile on Groq; llama3.2 on Ollama]
    #[arg(long, env = "TRACELLM_MODEL")]
    pub model: Option<String>,

    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (also OPENAI_BASE_URL)
    #[arg(long, env = "TRACELLM_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// API key of the provider [default: OPENAI_API_KEY, or GROQ_API_KEY for Groq]
    #[arg(long, env = "TRACELLM_PROVIDER_KEY", value_name = "KEY", hide_env_values = true)]
    pub provider_key: Option<String>,

    /// Seconds to wait for the provider's whole answer
    #[arg(long, env = "TRACELLM_PROVIDER_TIMEOUT", value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,
}

/// The message shown when nothing says which provider to use.
pub const NO_PROVIDER: &str = "no LLM provider configured; set one of:
  OPENAI_API_KEY=sk-...        OpenAI (https://api.openai.com/v1)
  GROQ_API_KEY=gsk_...         Groq (--provider groq)
  --provider ollama            a local Ollama (http://localhost:11434/v1)
  --base-url URL               any OpenAI-compatible server (or OPENAI_BASE_URL; key: --provider-key)
or put provider, model, base-url and provider-key in the config file (tracellm config init)";

/// A resolved provider, ready to call.
#[derive(Debug, Clone)]
pub struct Provider {
    /// `openai`, `groq`, `ollama` or `openai-compatible`.
    pub name: String,
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    /// Which setting the key should come from, for error messages.
    pub key_hint: &'static str,
    pub timeout: Duration,
    http: reqwest::Client,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Provider {
    /// Flags, then the environment, then the config file, then the preset.
    pub fn resolve(args: &ProviderArgs, file: &FileConfig) -> anyhow::Result<Provider> {
        let kind = args.provider.clone().or_else(|| file.provider.clone());
        let kind = kind.map(|k| k.to_ascii_lowercase());
        let openai_like = matches!(kind.as_deref(), None | Some("openai"));
        let base_flag = args
            .base_url
            .clone()
            .or_else(|| if openai_like { env("OPENAI_BASE_URL") } else { None })
            .or_else(|| file.base_url.clone());
        let key_flag = args.provider_key.clone().or_else(|| file.provider_key.clone());
        let (name, preset, key, key_hint, default_model) = match kind.as_deref() {
            Some("openai") => (
                "openai",
                OPENAI_URL,
                key_flag.or_else(|| env("OPENAI_API_KEY")),
                "OPENAI_API_KEY",
                "gpt-4o-mini",
            ),
            Some("groq") => (
                "groq",
                GROQ_URL,
                key_flag.or_else(|| env("GROQ_API_KEY")),
                "GROQ_API_KEY",
                "llama-3.3-70b-versatile",
            ),
            Some("ollama") => ("ollama", OLLAMA_URL, key_flag, "--provider-key", "llama3.2"),
            Some(other) => anyhow::bail!(
                "unknown provider {other:?}: expected openai, groq or ollama (or --base-url for another OpenAI-compatible server)"
            ),
            None => {
                if base_flag.is_some() {
                    (
                        "openai-compatible",
                        OPENAI_URL,
                        key_flag.or_else(|| env("OPENAI_API_KEY")),
                        "--provider-key or OPENAI_API_KEY",
                        "gpt-4o-mini",
                    )
                } else if let Some(k) = key_flag.or_else(|| env("OPENAI_API_KEY")) {
                    ("openai", OPENAI_URL, Some(k), "OPENAI_API_KEY", "gpt-4o-mini")
                } else if let Some(k) = env("GROQ_API_KEY") {
                    ("groq", GROQ_URL, Some(k), "GROQ_API_KEY", "llama-3.3-70b-versatile")
                } else {
                    anyhow::bail!("{NO_PROVIDER}");
                }
            }
        };
        let base_url =
            base_flag.unwrap_or_else(|| preset.to_string()).trim_end_matches('/').to_string();
        if key.is_none() && (base_url == OPENAI_URL || base_url == GROQ_URL) {
            anyhow::bail!(
                "{key_hint} is not set: the {name} provider needs an API key (export {key_hint}=... or pass --provider-key)"
            );
        }
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            anyhow::bail!("invalid base URL {base_url:?}: expected http://… or https://…");
        }
        let model =
            args.model.clone().or_else(|| file.model.clone()).unwrap_or(default_model.into());
        let timeout = Duration::from_secs_f64(args.timeout.clamp(0.05, 86_400.0));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Provider { name: name.into(), base_url, api_key: key, model, key_hint, timeout, http })
    }

    /// One chat completion, streamed: `on_text` sees each piece of text as it arrives. Provider
    /// failures are part of the outcome (so they can be recorded), not an `Err`.
    pub async fn chat(
        &self,
        model: &str,
        messages: &[Value],
        mut on_text: impl FnMut(&str),
    ) -> ChatOutcome {
        let started_at = Utc::now();
        let start = Instant::now();
        let mut out = ChatOutcome {
            started_at,
            ended_at: started_at,
            latency_ms: 0.0,
            ttft_ms: None,
            model: model.to_string(),
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: None,
            usage: None,
            error: None,
        };
        let result = tokio::time::timeout(
            self.timeout,
            self.stream(model, messages, start, &mut out, &mut on_text),
        )
        .await;
        out.error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(ProviderError {
                kind: "TimeoutError",
                status: None,
                message: format!(
                    "no complete answer within {}",
                    crate::common::fmt_secs(self.timeout.as_secs_f64() * 1000.0)
                ),
            }),
        };
        out.ended_at = Utc::now();
        out.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        out
    }

    async fn stream(
        &self,
        model: &str,
        messages: &[Value],
        start: Instant,
        out: &mut ChatOutcome,
        on_text: &mut impl FnMut(&str),
    ) -> Result<(), ProviderError> {
        let body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let mut req = self.http.post(format!("{}/chat/completions", self.base_url)).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| ProviderError {
            kind: if e.is_timeout() { "TimeoutError" } else { "ConnectionError" },
            status: None,
            message: format!("cannot reach {}: {}", self.base_url, root_cause(&e)),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ProviderError::from_status(status.as_u16(), &text));
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            // A server that ignores `stream` answers with one completion.
            let v: Value = resp.json().await.map_err(|e| ProviderError::protocol(&e))?;
            out.ttft_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            let msg = &v["choices"][0]["message"];
            if let Some(t) = msg["content"].as_str() {
                out.text.push_str(t);
                on_text(t);
            }
            if let Some(calls) = msg["tool_calls"].as_array() {
                out.tool_calls = calls.clone();
            }
            out.finish_reason = v["choices"][0]["finish_reason"].as_str().map(String::from);
            out.usage = Usage::from_json(&v["usage"]);
            if let Some(m) = v["model"].as_str() {
                out.model = m.to_string();
            }
            return Ok(());
        }
        let mut bytes = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = match bytes.next().await {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(ProviderError {
                        kind: if e.is_timeout() { "TimeoutError" } else { "ConnectionError" },
                        status: None,
                        message: format!("the stream broke off: {}", root_cause(&e)),
                    });
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                let Some(data) = line.strip_prefix("data:") else { continue };
                let data = data.trim_start();
                if data == "[DONE]" {
                    return Ok(());
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    return Err(ProviderError {
                        kind: "APIError",
                        status: None,
                        message: error_message(err),
                    });
                }
                self.apply_chunk(&v, start, out, on_text);
            }
        }
        Ok(())
    }

    fn apply_chunk(
        &self,
        v: &Value,
        start: Instant,
        out: &mut ChatOutcome,
        on_text: &mut impl FnMut(&str),
    ) {
        if let Some(m) = v["model"].as_str().filter(|m| !m.is_empty()) {
            out.model = m.to_string();
        }
        if let Some(u) =
            Usage::from_json(&v["usage"]).or_else(|| Usage::from_json(&v["x_groq"]["usage"]))
        {
            out.usage = Some(u);
        }
        let Some(choice) = v["choices"].get(0) else { return };
        if let Some(r) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(r.to_string());
        }
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if out.ttft_ms.is_none() {
                out.ttft_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
            out.text.push_str(t);
            on_text(t);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            if out.ttft_ms.is_none() {
                out.ttft_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
            for c in calls {
                let i = c["index"].as_u64().unwrap_or(0) as usize;
                while out.tool_calls.len() <= i {
                    out.tool_calls.push(json!({"id": null, "type": "function",
                        "function": {"name": "", "arguments": ""}}));
                }
                let slot = &mut out.tool_calls[i];
                if let Some(id) = c["id"].as_str() {
                    slot["id"] = json!(id);
                }
                if let Some(n) = c["function"]["name"].as_str() {
                    let name = format!("{}{n}", slot["function"]["name"].as_str().unwrap_or(""));
                    slot["function"]["name"] = json!(name);
                }
                if let Some(a) = c["function"]["arguments"].as_str() {
                    let args =
                        format!("{}{a}", slot["function"]["arguments"].as_str().unwrap_or(""));
                    slot["function"]["arguments"] = json!(args);
                }
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        v => v["message"].as_str().map(String::from).unwrap_or_else(|| v.to_string()),
    }
}

/// Token usage reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

impl Usage {
    fn from_json(v: &Value) -> Option<Usage> {
        let prompt = v["prompt_tokens"].as_u64()?;
        let completion = v["completion_tokens"].as_u64().unwrap_or(0);
        let total = v["total_tokens"].as_u64().unwrap_or(prompt + completion);
        Some(Usage { prompt, completion, total })
    }
}

/// What one call produced, failed calls included.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// The model that answered (as the provider names it), or the one asked for.
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<Value>,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    pub error: Option<ProviderError>,
}

impl ChatOutcome {
    /// The canonical span of this call (see DESIGN.md), for a trace document.
    pub fn span(
        &self,
        provider: &Provider,
        id: &str,
        parent: Option<&str>,
        name: &str,
        messages: &[Value],
    ) -> Value {
        let mut output_msg = json!({"role": "assistant", "content": self.text});
        if !self.tool_calls.is_empty() {
            output_msg["tool_calls"] = json!(self.tool_calls);
        }
        let mut span = json!({
            "id": id,
            "parent_id": parent,
            "name": name,
            "kind": "llm",
            "start_time": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "end_time": self.ended_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "status": if self.error.is_some() { "error" } else { "success" },
            "model": self.model,
            "provider": provider.name,
            "input": {"messages": messages},
            "output": if self.error.is_some() && self.text.is_empty() { Value::Null } else { json!({"messages": [output_msg]}) },
            "time_to_first_token_ms": self.ttft_ms,
            "attributes": {
                "base_url": provider.base_url,
                "stream": true,
                "finish_reason": self.finish_reason,
            },
        });
        if let Some(u) = self.usage {
            span["tokens"] =
                json!({"prompt": u.prompt, "completion": u.completion, "total": u.total});
        }
        if let Some(e) = &self.error {
            span["error"] = json!({"type": e.kind, "message": e.message});
            if let Some(s) = e.status {
                span["attributes"]["http.status_code"] = json!(s);
            }
        }
        span
    }
}

/// A failed provider call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    /// `AuthenticationError`, `RateLimitError`, `TimeoutError`, `ConnectionError`, `APIError`…
    pub kind: &'static str,
    pub status: Option<u16>,
    pub message: String,
}

impl ProviderError {
    fn from_status(status: u16, body: &str) -> ProviderError {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").map(error_message))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let kind = match status {
            400 => "BadRequestError",
            401 => "AuthenticationError",
            403 => "PermissionDeniedError",
            404 => "NotFoundError",
            429 => "RateLimitError",
            500..=599 => "InternalServerError",
            _ => "APIError",
        };
        ProviderError { kind, status: Some(status), message }
    }

    fn protocol(e: &reqwest::Error) -> ProviderError {
        ProviderError { kind: "APIError", status: None, message: root_cause(e) }
    }

    /// A sentence saying what went wrong and what to do about it.
    pub fn explain(&self, provider: &Provider) -> String {
        let detail =
            if self.message.is_empty() { String::new() } else { format!(": {}", self.message) };
        match (self.kind, self.status) {
            (_, Some(401)) => format!(
                "the provider at {} refused the API key (401){detail}; check {}",
                provider.base_url, provider.key_hint
            ),
            (_, Some(403)) => format!(
                "the provider at {} denied access (403){detail}; check {} and the model's permissions",
                provider.base_url, provider.key_hint
            ),
            (_, Some(429)) => format!(
                "rate limited by the provider at {} (429){detail}; wait a moment and retry, or use another model",
                provider.base_url
            ),
            (_, Some(404)) => format!(
                "the provider at {} does not know the model or route (404){detail}; check --model and --base-url",
                provider.base_url
            ),
            (_, Some(s)) => format!("the provider at {} failed ({s}){detail}", provider.base_url),
            ("TimeoutError", None) => format!(
                "the provider at {} timed out ({}); raise --timeout or try again",
                provider.base_url, self.message
            ),
            ("ConnectionError", None) => {
                format!("{}; is the provider running and --base-url right?", self.message)
            }
            _ => format!("the provider at {} failed{detail}", provider.base_url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ProviderArgs {
        ProviderArgs { timeout: 10.0, ..ProviderArgs::default() }
    }

    #[test]
    fn presets_and_explicit_settings() {
        let file = FileConfig::default();
        let mut a = args();
        a.provider = Some("ollama".into());
        let p = Provider::resolve(&a, &file).unwrap();
        assert_eq!((p.base_url.as_str(), p.model.as_str()), (OLLAMA_URL, "llama3.2"));
        a.provider = Some("groq".into());
        a.provider_key = Some("gsk_x".into());
        a.model = Some("m".into());
        let p = Provider::resolve(&a, &file).unwrap();
        assert_eq!(
            (p.base_url.as_str(), p.model.as_str(), p.name.as_str()),
            (GROQ_URL, "m", "groq")
        );
        let mut a = args();
        a.base_url = Some("http://127.0.0.1:9/v1/".into());
        let p = Provider::resolve(&a, &file).unwrap();
        assert_eq!(p.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(p.name, "openai-compatible");
    }

    #[test]
    fn errors_are_classified() {
        let e = ProviderError::from_status(429, r#"{"error": {"message": "slow down"}}"#);
        assert_eq!((e.kind, e.message.as_str()), ("RateLimitError", "slow down"));
        let e = ProviderError::from_status(401, r#"{"error": "bad key"}"#);
        assert_eq!((e.kind, e.message.as_str()), ("AuthenticationError", "bad key"));
    }
}
