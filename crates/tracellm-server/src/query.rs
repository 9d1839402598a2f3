//! Read routes: list, get, analytics, failures, health.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracellm_core::api::{Analytics, FailurePage, TracePage};
use tracellm_core::{Span, Trace};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Access;
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, Params, trace_query};

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: &'static str,
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
}

#[utoipa::path(get, path = "/", tag = "meta", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", version: crate::VERSION, store: state.store.backend() })
}

#[derive(Serialize, ToSchema)]
pub struct StoreStats {
    pub backend: &'static str,
    pub location: String,
    pub traces: u64,
    pub spans: u64,
    pub version: &'static str,
    pub price_table_as_of: String,
    pub price_table_models: usize,
}

/// Store figures for the dashboard's settings page.
#[utoipa::path(get, path = "/stats", tag = "meta", responses((status = 200, body = StoreStats)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StoreStats>, ApiError> {
    let info = state.store.info().await?;
    Ok(Json(StoreStats {
        backend: info.backend,
        location: info.location,
        traces: info.traces,
        spans: info.spans,
        version: crate::VERSION,
        price_table_as_of: state.prices.as_of().to_string(),
        price_table_models: state.prices.len(),
    }))
}

#[utoipa::path(
    get, path = "/traces", tag = "query",
    params(
        ("status" = Option<String>, Query, description = "success, error, retried, running; comma-separated or repeated"),
        ("model" = Option<String>, Query), ("session_id" = Option<String>, Query),
        ("user_id" = Option<String>, Query), ("tag" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339, epoch, or a span back from now (`24h`)"),
        ("until" = Option<String>, Query, description = "exclusive; same forms as since"),
        ("q" = Option<String>, Query, description = "full text over prompts, responses, tool data, errors"),
        ("limit" = Option<usize>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("project" = Option<String>, Query),
    ),
    responses((status = 200, body = TracePage), (status = 400, body = ErrorBody))
)]
pub async fn list_traces(
    State(state): State<AppState>,
    access: Access,
    RawQuery(raw): RawQuery,
) -> Result<Json<TracePage>, ApiError> {
    let q = trace_query(raw.as_deref(), &access)?;
    Ok(Json(state.store.list_traces(q).await?))
}

#[utoipa::path(
    get, path = "/traces/{id}", tag = "query",
    params(
        ("id" = String, Path, description = "trace id"),
        ("payloads" = Option<bool>, Query, description = "false: spans without input, output, tool arguments/results and events (fetch one span whole with /traces/{id}/spans/{span_id}); for big traces"),
    ),
    responses((status = 200, body = Trace), (status = 404, body = ErrorBody))
)]
pub async fn get_trace(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = Params::parse(raw.as_deref());
    let (project, environment) = params::scope(&mut p, &access)?;
    let payloads = match p.take("payloads")?.as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("parameter \"payloads\": {other:?} is not true or false"),
            ));
        }
    };
    p.finish(&["project", "environment", "payloads"])?;
    let in_scope = |t: &Trace| environment.is_none() || t.environment == environment;
    let Some(head) = state.store.get_trace_head(&project, &id).await?.filter(in_scope) else {
        return Err(ApiError::not_found(format!("no trace with id {id:?}")));
    };
    if head.span_count as usize <= SPANS_PER_PAGE {
        let Some(mut t) = state.store.get_trace(&project, &id).await? else {
            return Err(ApiError::not_found(format!("no trace with id {id:?}")));
        };
        if !payloads {
            t.spans.iter_mut().for_each(strip_payloads);
        }
        return Ok(Json(t).into_response());
    }
    // A big trace streams: the head at once, then the spans a page at a time, so that neither
    // the server's memory nor the time to the first byte grows with the trace.
    let mut opening = serde_json::to_vec(&head).expect("a trace serializes");
    if !opening.ends_with(b"\"spans\":[]}") {
        let e = "a trace did not serialize with its spans last".to_string();
        return Err(tracellm_store::StoreError::Internal(e).into());
    }
    opening.truncate(opening.len() - 2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let store = state.store.clone();
    tokio::spawn(async move {
        if tx.send(Ok(opening.into())).await.is_err() {
            return;
        }
        let fail = |e: tracellm_store::StoreError| {
            // the status is sent: a broken body is how the client learns of the failure
            tracing::warn!(trace = %id, "streaming a trace failed: {e}");
            Err(std::io::Error::other(e.to_string()))
        };
        let ids = match store.get_span_ids(&project, &id).await {
            Ok(ids) => ids,
            Err(e) => {
                let _ = tx.send(fail(e)).await;
                return;
            }
        };
        let mut first = true;
        for page in ids.chunks(SPANS_PER_PAGE) {
            let spans = match store.get_spans(&project, &id, page.to_vec()).await {
                Ok(spans) => spans,
                Err(e) => {
                    let _ = tx.send(fail(e)).await;
                    return;
                }
            };
            let mut buf = Vec::with_capacity(spans.len() * 1600);
            for mut span in spans {
                if !payloads {
                    strip_payloads(&mut span);
                }
                if !std::mem::take(&mut first) {
                    buf.push(b',');
                }
                serde_json::to_writer(&mut buf, &span).expect("a span serializes");
            }
            if tx.send(Ok(buf.into())).await.is_err() {
                return; // the client went away
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(b"]}"))).await;
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(chunks)).into_response())
}

/// Spans read per store call: traces up to this size are answered in one piece, bigger ones
/// stream a page at a time.
const SPANS_PER_PAGE: usize = 500;

fn strip_payloads(s: &mut Span) {
    s.input = serde_json::Value::Null;
    s.output = serde_json::Value::Null;
    s.events.clear();
    if let Some(tool) = &mut s.tool {
        tool.arguments = serde_json::Value::Null;
        tool.result = serde_json::Value::Null;
    }
}

#[utoipa::path(
    get, path = "/traces/{id}/spans/{span_id}", tag = "query",
    params(("id" = String, Path, description = "trace id"), ("span_id" = String, Path)),
    responses((status = 200, body = Span), (status = 404, body = ErrorBody))
)]
pub async fn get_span(
    State(state): State<AppState>,
    access: Access,
    Path((id, span_id)): Path<(String, String)>,
) -> Result<Json<Span>, ApiError> {
    let found = state.store.get_span(&access.project_id, &id, &span_id).await?;
    match found.filter(|(_, env)| access.environment.is_none() || *env == access.environment) {
        Some((s, _)) => Ok(Json(s)),
        None => Err(ApiError::not_found(format!("no span {span_id:?} in trace {id:?}"))),
    }
}

#[utoipa::path(
    get, path = "/failures", tag = "query",
    params(
        ("since" = Option<String>, Query), ("until" = Option<String>, Query), ("model" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "error or retried (default both)"),
        ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = FailurePage), (status = 400, body = ErrorBody))
)]
pub async fn failures(
    State(state): State<AppState>,
    access: Access,
    RawQuery(raw): RawQuery,
) -> Result<Json<FailurePage>, ApiError> {
    let q = trace_query(raw.as_deref(), &access)?;
    Ok(Json(state.store.failures(q).await?))
}

#[utoipa::path(
    get, path = "/analytics", tag = "query",
    params(
        ("since" = Option<String>, Query, description = "default: all time"),
        ("until" = Option<String>, Query),
        ("bucket" = Option<String>, Query, description = "time-series bucket: `1m`, `5m`, `1h`, `1d`…; chosen from the range when absent"),
        ("project" = Option<String>, Query),
    ),
    responses((status = 200, body = Analytics), (status = 400, body = ErrorBody))
)]
pub async fn analytics(
    State(state): State<AppState>,
    access: Access,
    RawQuery(raw): RawQuery,
) -> Result<Json<Analytics>, ApiError> {
    let q = params::analytics_query(raw.as_deref(), &access)?;
    Ok(Json(state.store.analytics(q).await?))
}
