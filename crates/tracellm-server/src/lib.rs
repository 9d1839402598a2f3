//! The TraceLLM server: the HTTP API (native ingest, queries, analytics, WebSocket) on one port
//! and the dashboard, with the same API under `/api`, on another.

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
use tracellm_core::{NormalizeOptions, PriceTable};
use tracellm_store::Store;

pub use openapi::ApiDoc;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Project of requests that carry no API key.
pub const DEFAULT_PROJECT: &str = "default";

/// Sizes the server refuses beyond.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Most traces in one `{"traces": [...]}` request.
    pub max_traces_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { body_bytes: 10 * 1024 * 1024, max_traces_per_request: 10_000 }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub prices: Arc<PriceTable>,
    pub normalize: Arc<NormalizeOptions>,
    pub limits: Arc<Limits>,
    pub otel: Arc<OtelLimits>,
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
        .route("/openapi.json", get(openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
        .nest("/api", api_router(state))
        .fallback(dashboard::serve)
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
}

/// A running server's bound addresses.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub api: SocketAddr,
    pub dashboard: Option<SocketAddr>,
    pub otlp_grpc: Option<SocketAddr>,
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
    on_ready: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
        otel: Arc::new(OtelLimits::default()),
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
    on_ready(bound);
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
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    match api_result {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}
