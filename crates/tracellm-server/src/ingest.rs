//! `POST /traces`: native trace documents, one or a batch, stored durably before the 202.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use tracellm_core::normalize::ValidationError;
use tracellm_core::{NormalizeOptions, PriceTable, Trace, normalize_trace};
use utoipa::ToSchema;

use crate::auth::Access;
use crate::error::ApiError;
use crate::{AppState, Limits};

/// Bodies larger than this are normalized off the async workers.
const INLINE_NORMALIZE_BYTES: usize = 64 * 1024;

#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    /// Number of traces stored.
    pub accepted: usize,
    /// Their ids, in request order (generated where the document had none).
    pub ids: Vec<String>,
}

/// Beyond the limit, this much more is read and discarded so that an ordinary client, still
/// sending, sees the 413 rather than a broken connection; larger bodies are cut off.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Reads the whole body up to the configured limit, answering 413 beyond it.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes; send smaller batches"),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(DRAIN_BYTES)) {
        return Err(too_large());
    }
    let mut body = body;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("unreadable_body", format!("cannot read request body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > limit.saturating_add(DRAIN_BYTES) {
                break;
            }
            if seen <= limit {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

/// SDKs may say which project and environment they mean (`X-TraceLLM-Project`,
/// `X-TraceLLM-Environment`); naming one the key does not reach is 403, not a silent redirect.
pub fn check_scope_headers(access: &Access, headers: &HeaderMap) -> Result<(), ApiError> {
    let get =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
    access.check(get("x-tracellm-project"), get("x-tracellm-environment"))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        None => Ok(()),
        Some(ct)
            if ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json") =>
        {
            Ok(())
        }
        Some(ct) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {ct:?} is not accepted here; send application/json"),
        )),
    }
}

/// Parses JSON with errors a user can act on; nesting deeper than `max_depth` (arrays and
/// objects; serde_json stops at 128 whatever the limit) is refused before parsing.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<Value, ApiError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(
            "invalid_utf8",
            format!("request body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        ));
    }
    let too_deep = |max: usize, at: String| {
        ApiError::bad_request(
            "invalid_json",
            format!("JSON is nested too deeply (more than {max} levels, --max-json-depth) at {at}"),
        )
    };
    if let Some(at) = tracellm_core::json_depth_exceeded(bytes, max_depth) {
        return Err(too_deep(max_depth, format!("byte {at}")));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            too_deep(max_depth.min(128), format!("line {} column {}", e.line(), e.column()))
        } else {
            ApiError::bad_request("invalid_json", format!("invalid JSON: {e}"))
        }
    })
}

/// The refusal of a request carrying more than `limit` spans.
pub fn too_many_spans(count: usize, limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_spans",
        format!(
            "request carries {count} {what}, more than the limit of {limit} per request (--max-spans-per-request); send smaller batches"
        ),
    )
}

/// The spans a native trace document will have: its span array, or the one span made for a
/// trace sent as prompt and response.
fn span_count(doc: &Value) -> usize {
    ["spans", "steps", "observations"]
        .iter()
        .find_map(|k| doc.get(*k).and_then(Value::as_array).map(Vec::len))
        .unwrap_or(0)
        .max(1)
}

/// What `POST /traces` does between reading the body and storing: parses a body that is one
/// trace document or `{"traces": [...]}` and normalizes each trace of `project`, within `limits`.
pub fn normalize_body(
    bytes: &[u8],
    project: &str,
    prices: &PriceTable,
    opts: &NormalizeOptions,
    limits: &Limits,
) -> Result<Vec<Trace>, ApiError> {
    normalize_docs(parse_json(bytes, limits.max_json_depth)?, project, prices, opts, limits)
}

fn prefixed(e: ValidationError, prefix: &str) -> ValidationError {
    ValidationError { field: format!("{prefix}{}", e.field.trim_start_matches('$')), ..e }
}

/// Normalizes a document that is one trace or `{"traces": [...]}`.
fn normalize_all(state: &AppState, bytes: &[u8], access: &Access) -> Result<Vec<Trace>, ApiError> {
    let mut traces =
        normalize_body(bytes, &access.project_id, &state.prices, &state.normalize, &state.limits)?;
    for t in &mut traces {
        t.environment = access.environment.clone();
        state.redactor.trace(t);
    }
    Ok(traces)
}

fn normalize_docs(
    doc: Value,
    project: &str,
    prices: &PriceTable,
    opts: &NormalizeOptions,
    limits: &Limits,
) -> Result<Vec<Trace>, ApiError> {
    let batch = match doc {
        Value::Object(mut o)
            if o.contains_key("traces") && !o.contains_key("spans") && !o.contains_key("steps") =>
        {
            match o.remove("traces") {
                Some(Value::Array(items)) => Some(items),
                Some(other) => {
                    return Err(ValidationError {
                        field: "traces".into(),
                        message: format!(
                            "expected an array, got {}",
                            tracellm_core::json_type(&other)
                        ),
                    }
                    .into());
                }
                None => None,
            }
        }
        Value::Array(_) => {
            return Err(ValidationError {
                field: "$".into(),
                message: "expected a trace object or {\"traces\": [...]}, got an array".into(),
            }
            .into());
        }
        other => {
            let spans = span_count(&other);
            if spans > limits.max_spans_per_request {
                return Err(too_many_spans(spans, limits.max_spans_per_request, "spans"));
            }
            let t = normalize_trace(other, project, prices, opts)?;
            return Ok(vec![t]);
        }
    };
    let items = batch.unwrap_or_default();
    if items.is_empty() {
        return Err(ValidationError { field: "traces".into(), message: "is empty".into() }.into());
    }
    if items.len() > limits.max_traces_per_request {
        return Err(ValidationError {
            field: "traces".into(),
            message: format!(
                "{} traces exceed the limit of {} per request",
                items.len(),
                limits.max_traces_per_request
            ),
        }
        .into());
    }
    let spans = items.iter().map(span_count).fold(0usize, usize::saturating_add);
    if spans > limits.max_spans_per_request {
        return Err(too_many_spans(spans, limits.max_spans_per_request, "spans"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let t = normalize_trace(item, project, prices, opts)
            .map_err(|e| prefixed(e, &format!("traces[{i}].")))?;
        if !seen.insert(t.id.clone()) {
            return Err(ValidationError {
                field: format!("traces[{i}].id"),
                message: format!("trace id {:?} appears more than once in this request", t.id),
            }
            .into());
        }
        out.push(t);
    }
    Ok(out)
}

#[utoipa::path(
    post, path = "/traces", tag = "ingest",
    request_body(content = Object, description = "One trace document (canonical shape, the seed's shape with `steps`, or common aliases) or `{\"traces\": [...]}`"),
    responses(
        (status = 202, description = "Stored durably", body = IngestResponse),
        (status = 400, description = "Malformed JSON or body", body = crate::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "A field is invalid; the message names it", body = crate::error::ErrorBody),
        (status = 503, description = "Overloaded, store busy, or data directory read-only; retry after Retry-After", body = crate::error::ErrorBody),
        (status = 507, description = "The server's disk is full; retry after Retry-After", body = crate::error::ErrorBody),
    )
)]
pub async fn post_traces(
    State(state): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    check_scope_headers(&access, &headers)?;
    require_json(&headers)?;
    // held until the answer: the body, what it becomes and its wait for the writer
    let mut body = body;
    let _reserved = state.budget.reserve(&headers, &mut body, state.limits.body_bytes).await?;
    let bytes = read_body(body, &headers, state.limits.body_bytes).await?;
    let traces = if bytes.len() <= INLINE_NORMALIZE_BYTES {
        normalize_all(&state, &bytes, &access)?
    } else {
        let st = state.clone();
        tokio::task::spawn_blocking(move || normalize_all(&st, &bytes, &access)).await.map_err(
            |e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        )??
    };
    let stored = state.store.ingest(traces).await?;
    let ids: Vec<String> = stored.into_iter().map(|i| i.id).collect();
    Ok((StatusCode::ACCEPTED, axum::Json(IngestResponse { accepted: ids.len(), ids })))
}
