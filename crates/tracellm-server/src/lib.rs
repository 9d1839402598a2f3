//! The TraceLLM server: the HTTP API (native ingest, queries, analytics, WebSocket) on one port
//! and the dashboard, with the same API under `/api`, on another.

mod admin;
pub mod auth;
pub mod budget;
mod dashboard;
pub mod error;
mod ingest;
mod openapi;
mod otlp;
mod params;
mod query;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::CorsLayer;
use tracellm_core::otel::OtelLimits;
use tracellm_core::redact::{RedactConfig, Redactor};
use tracellm_core::{NormalizeOptions, PriceTable};
use tracellm_store::Store;

pub use ingest::normalize_body;
pub use openapi::ApiDoc;
pub use otlp::{Encoding as OtlpEncoding, decode_logs_request, decode_trace_request};
pub use params::{analytics_query, trace_query};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Project of requests that carry no API key.
pub const DEFAULT_PROJECT: &str = "default";

/// Sizes the server refuses beyond (the table is in docs/SECURITY.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes, before and after gzip inflation (`--max-body-bytes`).
    pub body_bytes: usize,
    /// Most spans in one request: OTLP spans or log records, or the spans of all traces of a
    /// native batch (`--max-spans-per-request`); more is 413.
    pub max_spans_per_request: usize,
    /// Deepest nesting of arrays and objects in a JSON body (`--max-json-depth`, at most 128:
    /// serde_json's own limit); deeper is 400.
    pub max_json_depth: usize,
    /// What one OTLP span may carry; beyond, it is trimmed with a warning.
    pub otel: OtelLimits,
    /// Most traces in one `{"traces": [...]}` request.
    pub max_traces_per_request: usize,
    /// Working memory of ingest requests in flight, bodies read to answers sent
    /// (`--ingest-memory-mb`); beyond it, ingest answers 503 with Retry-After.
    pub ingest_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 10 * 1024 * 1024,
            max_traces_per_request: 10_000,
            max_spans_per_request: 100_000,
            max_json_depth: 64,
            otel: OtelLimits::default(),
            ingest_memory_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub prices: Arc<PriceTable>,
    pub normalize: Arc<NormalizeOptions>,
    pub limits: Arc<Limits>,
    pub otel: Arc<OtelLimits>,
    pub auth: Arc<auth::AuthState>,
    pub redactor: Arc<Redactor>,
    /// Shared by every ingest route (HTTP and gRPC).
    pub budget: Arc<budget::IngestBudget>,
    /// Flips to true when the server begins shutting down (long-lived WebSockets end).
    pub shutdown: watch::Receiver<bool>,
}

/// The API routes, without a prefix.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/", get(query::health))
        .route("/stats", get(query::stats))
        .route("/traces", get(query::list_traces).post(ingest::post_traces))
        .route("/traces/{id}", get(query::get_trace))
        .route("/traces/{id}/spans/{span_id}", get(query::get_span))
        .route("/v1/traces", post(otlp::post_traces))
        .route("/v1/logs", post(otlp::post_logs))
        .route("/failures", get(query::failures))
        .route("/analytics", get(query::analytics))
        .route("/ws", get(ws::ws))
        .route("/projects", get(admin::list_projects).post(admin::create_project))
        .route("/api-keys", get(admin::list_keys).post(admin::create_key))
        .route("/api-keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/openapi.json", get(openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::check_host))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The dashboard port: the bundle, with the API under `/api` so the pages call their own origin.
pub fn dashboard_router(state: AppState) -> Router {
    Router::new()
        // `nest` matches `/api` and `/api/…` but not `/api/` itself: that is the health check.
        .route("/api/", get(query::health))
        .with_state(state.clone())
        .nest("/api", api_router(state.clone()))
        .fallback(dashboard::serve)
        .layer(axum::middleware::from_fn(dashboard::security_headers))
        .layer(axum::middleware::from_fn_with_state(state, auth::check_host))
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// `None` serves no dashboard.
    pub dashboard_port: Option<u16>,
    /// OTLP/gRPC port; `None` serves no gRPC.
    pub otlp_grpc_port: Option<u16>,
    /// When the gRPC port is the default rather than asked for, a busy port is a warning (another
    /// collector may hold 4317), not a failure to start.
    pub otlp_grpc_optional: bool,
    pub limits: Limits,
    pub normalize: NormalizeOptions,
    /// Data routes need API keys even on a loopback bind.
    pub require_auth: bool,
    /// Let a non-loopback bind serve without keys (data reaches `default`).
    pub insecure_no_auth: bool,
    /// Extra Host names accepted besides localhost and the bound address.
    pub allowed_hosts: Vec<String>,
    /// The admin token from the environment; generated and stored hashed when absent.
    pub admin_token: Option<String>,
    pub redact: RedactConfig,
}

impl Default for ServerConfig {
    /// Loopback, API on 8000, no dashboard, no gRPC: the base that callers and tests adjust.
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            dashboard_port: None,
            otlp_grpc_port: None,
            otlp_grpc_optional: true,
            limits: Limits::default(),
            normalize: NormalizeOptions::default(),
            require_auth: false,
            insecure_no_auth: false,
            allowed_hosts: Vec::new(),
            admin_token: None,
            redact: RedactConfig::default(),
        }
    }
}

/// A running server's bound addresses.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub api: SocketAddr,
    pub dashboard: Option<SocketAddr>,
    pub otlp_grpc: Option<SocketAddr>,
}

/// Whether `host` is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

/// How often the server stores when API keys were last used and drops expired log events.
pub const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a GenAI log event waits for its span (OTLP logs may arrive before the trace's
/// spans); after that it is dropped, so events for spans that never come cannot pile up.
pub const PENDING_EVENTS_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Stores key uses and expires pending log events every `HOUSEKEEPING_EVERY` until `stop`.
async fn housekeeping(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        state.auth.flush_key_uses(state.store.as_ref()).await;
        let cutoff = chrono::Utc::now().timestamp_micros() - PENDING_EVENTS_TTL.as_micros() as i64;
        match state.store.expire_pending_events(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "dropped log events whose span never arrived"),
            Err(e) => tracing::debug!(error = %e, "expiring pending log events failed"),
        }
        if let Err(e) = state.store.tidy().await {
            tracing::debug!(error = %e, "store housekeeping failed");
        }
    }
}

/// The admin token's hash: from the environment when given, else the stored one, else a new
/// token, stored hashed and returned so it can be shown once.
async fn admin_token(
    store: &dyn Store,
    from_env: Option<&str>,
) -> std::io::Result<([u8; 32], Option<String>)> {
    let io = |e: tracellm_store::StoreError| std::io::Error::other(e.to_string());
    let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    if let Some(t) = from_env.filter(|t| !t.is_empty()) {
        let h = auth::sha256(t);
        store.set_setting(ADMIN_TOKEN_SETTING, &hex(&h)).await.map_err(io)?;
        return Ok((h, None));
    }
    if let Some(stored) = store.get_setting(ADMIN_TOKEN_SETTING).await.map_err(io)? {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(stored.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        return Ok((h, None));
    }
    let token = auth::new_admin_token();
    let h = auth::sha256(&token);
    store.set_setting(ADMIN_TOKEN_SETTING, &hex(&h)).await.map_err(io)?;
    tracing::info!(target: "audit", event = "admin_token.created");
    Ok((h, Some(token)))
}

fn cors(dashboard: Option<SocketAddr>) -> CorsLayer {
    // Only the dashboard's own origin may call the API from a browser: never a wildcard.
    let origins: Vec<HeaderValue> = dashboard
        .map(|d| {
            [
                format!("http://localhost:{}", d.port()),
                format!("http://127.0.0.1:{}", d.port()),
                format!("http://{d}"),
            ]
            .into_iter()
            .filter_map(|o| HeaderValue::from_str(&o).ok())
            .collect()
        })
        .unwrap_or_default();
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION])
}

/// Binds the listeners (port 0 picks a free port), then serves until `shutdown` resolves; then
/// stops accepting, lets requests in flight finish, ends WebSockets, and drains the store's
/// pending writes before returning.
pub async fn serve(
    cfg: ServerConfig,
    store: Arc<dyn Store>,
    prices: PriceTable,
    on_ready: impl FnOnce(Bound, Option<String>),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let loopback = is_loopback(&cfg.host);
    let redactor = Redactor::new(&cfg.redact)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if !loopback && !cfg.insecure_no_auth {
        let keys =
            store.list_api_keys(None).await.map_err(|e| std::io::Error::other(e.to_string()))?;
        if !keys.iter().any(|k| k.revoked_at.is_none()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to listen on {} without API keys: anyone who can reach it could read and write traces. \
                     Create a project and key first (tracellm start on 127.0.0.1, then POST /projects?name=…), \
                     or pass --insecure-no-auth to accept unauthenticated data",
                    cfg.host
                ),
            ));
        }
    }
    let (admin_hash, new_admin_token) = admin_token(&*store, cfg.admin_token.as_deref()).await?;
    let mut allowed_hosts: Vec<String> =
        cfg.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    if loopback || !allowed_hosts.is_empty() {
        allowed_hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        allowed_hosts
            .push(cfg.host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase());
    }
    let auth_state = auth::AuthState::new(
        auth::AuthConfig {
            require_keys: cfg.require_auth || (!loopback && !cfg.insecure_no_auth),
            require_admin: cfg.require_auth || !loopback,
            allowed_hosts,
        },
        Some(admin_hash),
    );
    let api_listener = TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
    let dash_listener = match cfg.dashboard_port {
        Some(p) => Some(TcpListener::bind((cfg.host.as_str(), p)).await?),
        None => None,
    };
    let grpc_listener = match cfg.otlp_grpc_port {
        None => None,
        Some(p) => match TcpListener::bind((cfg.host.as_str(), p)).await {
            Ok(l) => Some(l),
            Err(e) if cfg.otlp_grpc_optional => {
                tracing::warn!(port = p, error = %e, "not serving OTLP/gRPC: port unavailable (set --otlp-grpc-port)");
                None
            }
            Err(e) => {
                return Err(std::io::Error::new(e.kind(), format!("OTLP/gRPC port {p}: {e}")));
            }
        },
    };
    let bound = Bound {
        api: api_listener.local_addr()?,
        dashboard: dash_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        otlp_grpc: grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState {
        store: Arc::clone(&store),
        prices: Arc::new(prices),
        normalize: Arc::new(cfg.normalize.clone()),
        limits: Arc::new(cfg.limits.clone()),
        otel: Arc::new(cfg.limits.otel.clone()),
        auth: Arc::new(auth_state),
        redactor: Arc::new(redactor),
        budget: Arc::new(budget::IngestBudget::new(cfg.limits.ingest_memory_bytes)),
        shutdown: stop_rx.clone(),
    };
    let api_app = api_router(state.clone()).layer(cors(bound.dashboard));
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(
        axum::serve(api_listener, api_app)
            .with_graceful_shutdown(wait(stop_rx.clone()))
            .into_future(),
    );
    let dash = dash_listener.map(|l| {
        tokio::spawn(
            axum::serve(l, dashboard_router(state.clone()))
                .with_graceful_shutdown(wait(stop_rx.clone()))
                .into_future(),
        )
    });
    let grpc = grpc_listener.map(|l| {
        let (st, rx) = (state.clone(), stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = otlp::serve_grpc(l, st, wait(rx)).await {
                tracing::error!(error = %e, "OTLP/gRPC server failed");
            }
        })
    });
    let chores = tokio::spawn(housekeeping(state.clone(), stop_rx.clone()));
    on_ready(bound, new_admin_token);
    shutdown.await;
    tracing::info!("shutting down: finishing requests in flight and pending writes");
    let _ = stop_tx.send(true);
    let api_result = api.await;
    if let Some(d) = dash {
        let _ = d.await;
    }
    if let Some(g) = grpc {
        let _ = g.await;
    }
    let _ = chores.await;
    state.auth.flush_key_uses(store.as_ref()).await;
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    match api_result {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
