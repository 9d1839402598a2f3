//! Who may do what. Data routes act for one project (and, with a key, one environment); admin
//! routes (projects, keys) are open to local callers on a loopback bind and need the admin token
//! otherwise. Keys are stored only as SHA-256 hashes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracellm_store::ApiKey;

use crate::error::ApiError;
use crate::{AppState, DEFAULT_PROJECT};

pub const KEY_PREFIX: &str = "tlm_sk_";
pub const ENVIRONMENTS: [&str; 3] = ["development", "staging", "production"];
/// How long a looked-up key is trusted without asking the store again. Revocation through this
/// server takes effect at once (it clears the entry); through another instance, within this.
const KEY_CACHE_TTL: Duration = Duration::from_secs(5);

/// The access rules a server runs with.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Data routes refuse requests without a key (non-loopback bind, or `--require-auth`).
    pub require_keys: bool,
    /// Admin routes need the admin token.
    pub require_admin: bool,
    /// Host header values (without port) accepted; empty accepts any (non-loopback binds).
    pub allowed_hosts: Vec<String>,
}

pub struct AuthState {
    pub config: AuthConfig,
    /// SHA-256 of the admin token.
    pub admin_hash: Option<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], (ApiKey, Instant)>>,
    /// When each key was last used (microseconds), not yet written to the store: requests
    /// must not each pay for a write, so these are stored every `HOUSEKEEPING_EVERY` and
    /// before keys are listed.
    used: Mutex<HashMap<String, i64>>,
}

impl AuthState {
    pub fn new(config: AuthConfig, admin_hash: Option<[u8; 32]>) -> Self {
        AuthState {
            config,
            admin_hash,
            cache: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
        }
    }

    fn note_use(&self, key_id: &str) {
        let now = chrono::Utc::now().timestamp_micros();
        let mut used = self.used.lock().expect("key uses");
        match used.get_mut(key_id) {
            Some(at) => *at = now,
            None => {
                used.insert(key_id.to_string(), now);
            }
        }
    }

    /// Writes the recorded key uses to the store; on failure they are kept for the next try.
    pub async fn flush_key_uses(&self, store: &dyn tracellm_store::Store) {
        let uses: Vec<(String, i64)> =
            std::mem::take(&mut *self.used.lock().expect("key uses")).into_iter().collect();
        if uses.is_empty() {
            return;
        }
        if let Err(e) = store.note_key_use(uses.clone()).await {
            tracing::warn!(error = %e, "recording when API keys were last used failed");
            let mut used = self.used.lock().expect("key uses");
            for (id, at) in uses {
                let t = used.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
        }
    }

    /// Drops a revoked key from the cache so that revocation takes effect immediately.
    pub fn forget_key(&self, key_id: &str) {
        self.cache.lock().expect("key cache").retain(|_, (k, _)| k.id != key_id);
    }
}

pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// A new secret: `tlm_sk_` + 32 random alphanumerics.
pub fn new_key_secret() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    format!("{KEY_PREFIX}{tail}")
}

pub fn new_admin_token() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect();
    format!("tlm_admin_{tail}")
}

fn well_formed(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX)
        .is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The credential a request carries: `Authorization: Bearer …` or `X-API-Key`.
pub fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v);
        return Some(token.trim().to_string());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

fn unauthorized(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

/// What a data request may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub project_id: String,
    /// The key's environment; `None` without a key.
    pub environment: Option<String>,
    pub key_id: Option<String>,
}

impl Access {
    /// A request may name a project or environment only if it is its own.
    pub fn check(&self, project: Option<&str>, environment: Option<&str>) -> Result<(), ApiError> {
        if let Some(p) = project.filter(|p| *p != self.project_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_project",
                format!("this request may only reach project {:?}, not {p:?}", self.project_id),
            ));
        }
        if let (Some(asked), Some(mine)) = (environment, self.environment.as_deref())
            && asked != mine
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_environment",
                format!("this API key is for environment {mine:?}, not {asked:?}"),
            ));
        }
        Ok(())
    }
}

/// Resolves a request's access from its credential (`query_key` for WebSockets, whose browser
/// clients cannot set headers).
pub async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<Access, ApiError> {
    let cred = credential(headers).or_else(|| query_key.map(String::from));
    let Some(key) = cred.filter(|k| !k.is_empty()) else {
        if state.auth.config.require_keys {
            tracing::warn!(target: "audit", event = "auth.failed", reason = "missing key");
            return Err(unauthorized(
                "an API key is required: send Authorization: Bearer tlm_sk_… or X-API-Key",
            ));
        }
        return Ok(Access { project_id: DEFAULT_PROJECT.into(), environment: None, key_id: None });
    };
    if !well_formed(&key) {
        tracing::warn!(target: "audit", event = "auth.failed", reason = "malformed key");
        return Err(unauthorized(
            "malformed API key: expected tlm_sk_ followed by 32 letters and digits",
        ));
    }
    let hash = sha256(&key);
    let cached = {
        let cache = state.auth.cache.lock().expect("key cache");
        cache.get(&hash).filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL).map(|(k, _)| k.clone())
    };
    let found = match cached {
        Some(k) => Some(k),
        None => {
            let k = state.store.find_api_key(&hash).await?;
            if let Some(k) = &k {
                state
                    .auth
                    .cache
                    .lock()
                    .expect("key cache")
                    .insert(hash, (k.clone(), Instant::now()));
            }
            k
        }
    };
    match found {
        None => {
            tracing::warn!(target: "audit", event = "auth.failed", reason = "unknown key");
            Err(unauthorized("unknown API key"))
        }
        Some(k) if k.revoked_at.is_some() => {
            tracing::warn!(target: "audit", event = "auth.failed", reason = "revoked key", key_id = %k.id);
            Err(unauthorized("this API key has been revoked"))
        }
        Some(k) => {
            state.auth.note_use(&k.id);
            Ok(Access {
                project_id: k.project_id,
                environment: Some(k.environment),
                key_id: Some(k.id),
            })
        }
    }
}

impl FromRequestParts<AppState> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        resolve(state, &parts.headers, None).await
    }
}

/// A caller allowed on admin routes.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !state.auth.config.require_admin {
            return Ok(Admin);
        }
        let given = parts
            .headers
            .get("x-admin-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .or_else(|| credential(&parts.headers));
        let ok = match (given, state.auth.admin_hash) {
            (Some(t), Some(h)) => bool::from(sha256(&t).ct_eq(&h)),
            _ => false,
        };
        if ok {
            Ok(Admin)
        } else {
            tracing::warn!(target: "audit", event = "auth.failed", reason = "admin token", route = %parts.uri.path());
            Err(unauthorized(
                "this route needs the admin token (TRACELLM_ADMIN_TOKEN), sent as X-Admin-Token or Authorization: Bearer",
            ))
        }
    }
}

/// Refuses requests whose Host is not a name this server answers to (DNS rebinding: a web page
/// on another name must not reach a server on localhost).
pub async fn check_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = &state.auth.config.allowed_hosts;
    if !allowed.is_empty() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(h) = host {
            let name = strip_port(&h).to_ascii_lowercase();
            if !allowed.contains(&name) {
                tracing::warn!(target: "audit", event = "host.refused", host = %h);
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "host_not_allowed",
                    format!("Host {h:?} is not a name this server answers to; add it with --allowed-host"),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format_and_hosts() {
        let k = new_key_secret();
        assert!(well_formed(&k), "{k}");
        assert_eq!(k.len(), KEY_PREFIX.len() + 32);
        assert!(!well_formed("tlm_sk_short"));
        assert!(!well_formed(&format!("{}!", &k[..k.len() - 1])));
        assert_eq!(strip_port("localhost:3000"), "localhost");
        assert_eq!(strip_port("[::1]:8000"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
