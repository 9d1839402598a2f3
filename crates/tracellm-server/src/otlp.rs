//! OTLP ingest: `POST /v1/traces` and `POST /v1/logs` over HTTP (protobuf or JSON, gzip
//! allowed), and the same two services over gRPC (`--otlp-grpc-port`, default 4317).

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tracellm_core::otel::{self, Mapped};

use crate::auth::Access;
use crate::budget::Reservation;
use crate::error::ApiError;
use crate::ingest::too_many_spans;
use crate::ingest::{parse_json, read_body};
use crate::{AppState, Limits};

/// The two encodings of OTLP/HTTP bodies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {other:?} is not OTLP; send application/x-protobuf or application/json"
            ),
        )),
    }
}

/// The body, gunzipped when it says so; the size limit holds after decompression too.
async fn otlp_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let raw = read_body(body, headers, limit).await?;
    let enc =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match enc.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(raw),
        "gzip" => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let mut dec = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1);
            dec.read_to_end(&mut out).map_err(|e| {
                ApiError::bad_request("invalid_gzip", format!("body is not valid gzip: {e}"))
            })?;
            if out.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "decompressed body exceeds the limit of {limit} bytes; send smaller batches"
                    ),
                ));
            }
            Ok(Bytes::from(out))
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

fn decode_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_otlp", format!("invalid OTLP {what}: {e}"))
}

/// An OTLP message from its (inflated) body: protobuf, or OTLP/JSON within the JSON depth limit.
/// prost's own recursion limit (100 nested messages) makes deeper protobuf a 400 too.
fn decode_body<M: Message + Default>(
    enc: Encoding,
    bytes: &[u8],
    limits: &Limits,
    from_json: fn(&serde_json::Value) -> Result<M, tracellm_core::ValidationError>,
) -> Result<M, ApiError> {
    match enc {
        Encoding::Protobuf => M::decode(bytes).map_err(|e| decode_error("protobuf", e)),
        Encoding::Json => from_json(&parse_json(bytes, limits.max_json_depth)?)
            .map_err(|e| decode_error("JSON", e)),
    }
}

/// Decodes the body of `POST /v1/traces` and checks the span count, as the route does.
pub fn decode_trace_request(
    enc: Encoding,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ExportTraceServiceRequest, ApiError> {
    let req = decode_body(enc, bytes, limits, otel::json::trace_request)?;
    check_trace_count(&req, limits)?;
    Ok(req)
}

/// Decodes the body of `POST /v1/logs` and checks the record count, as the route does.
pub fn decode_logs_request(
    enc: Encoding,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ExportLogsServiceRequest, ApiError> {
    let req = decode_body(enc, bytes, limits, otel::json::logs_request)?;
    check_logs_count(&req, limits)?;
    Ok(req)
}

fn check_trace_count(req: &ExportTraceServiceRequest, limits: &Limits) -> Result<(), ApiError> {
    let n = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    if n > limits.max_spans_per_request {
        return Err(too_many_spans(n, limits.max_spans_per_request, "spans"));
    }
    Ok(())
}

fn check_logs_count(req: &ExportLogsServiceRequest, limits: &Limits) -> Result<(), ApiError> {
    let n = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
    if n > limits.max_spans_per_request {
        return Err(too_many_spans(n, limits.max_spans_per_request, "log records"));
    }
    Ok(())
}

/// Refuses a request whose every item was refused; otherwise the refusals are partial success.
fn check_mapped(m: &Mapped, what: &str) -> Result<(), ApiError> {
    if m.batches.is_empty() && m.rejected > 0 {
        let mut msg = format!("all {} {what} were refused: {}", m.rejected, m.message());
        if msg.contains("got 0") {
            msg.push_str(" (OTLP/JSON keys are lowerCamelCase: traceId, spanId — snake_case keys are ignored)");
        }
        return Err(ApiError::bad_request("invalid_otlp", msg));
    }
    Ok(())
}

async fn map_off_thread<T: Send + 'static>(
    big: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if big {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })
    } else {
        Ok(f())
    }
}

fn respond<M: Message + serde_json_fields::JsonOut>(enc: Encoding, msg: M) -> Response {
    match enc {
        Encoding::Protobuf => {
            let mut resp = msg.encode_to_vec().into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
            resp
        }
        Encoding::Json => axum::Json(msg.json()).into_response(),
    }
}

/// OTLP/JSON forms of the two responses (lowerCamelCase, as the spec requires).
mod serde_json_fields {
    use super::*;
    pub trait JsonOut {
        fn json(&self) -> serde_json::Value;
    }
    impl JsonOut for ExportTraceServiceResponse {
        fn json(&self) -> serde_json::Value {
            match &self.partial_success {
                Some(p) => {
                    serde_json::json!({"partialSuccess": {"rejectedSpans": p.rejected_spans, "errorMessage": p.error_message}})
                }
                None => serde_json::json!({}),
            }
        }
    }
    impl JsonOut for ExportLogsServiceResponse {
        fn json(&self) -> serde_json::Value {
            match &self.partial_success {
                Some(p) => {
                    serde_json::json!({"partialSuccess": {"rejectedLogRecords": p.rejected_log_records, "errorMessage": p.error_message}})
                }
                None => serde_json::json!({}),
            }
        }
    }
}

/// Stamps the key's environment on every batch and redacts before anything is stored.
fn scope_batches(
    m: &mut Mapped,
    environment: Option<String>,
    redactor: &tracellm_core::redact::Redactor,
) {
    for b in &mut m.batches {
        b.input.environment = environment.clone();
        redactor.input(&mut b.input);
        for s in &mut b.spans {
            redactor.span(s);
        }
        for (_, e) in &mut b.log_events {
            for v in e.attributes.values_mut() {
                redactor.value(v);
            }
        }
    }
}

/// Maps and redacts a trace export; shared by HTTP and gRPC, on whichever thread runs it.
fn map_export(
    state: &AppState,
    access: &Access,
    req: ExportTraceServiceRequest,
) -> Result<Mapped, ApiError> {
    check_trace_count(&req, &state.limits)?;
    let mut m = otel::map_traces(req, &state.otel);
    scope_batches(&mut m, access.environment.clone(), &state.redactor);
    check_mapped(&m, "spans")?;
    Ok(m)
}

/// The answer to a stored export: what was refused or trimmed, if anything.
fn trace_answer(rejected: i64, message: String) -> ExportTraceServiceResponse {
    let partial_success = (rejected > 0 || !message.is_empty())
        .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message: message });
    ExportTraceServiceResponse { partial_success }
}

/// Maps and stores a small trace export on the async worker.
async fn export_traces(
    state: &AppState,
    access: &Access,
    req: ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, ApiError> {
    let mapped = map_export(state, access, req)?;
    let (rejected, message) = (mapped.rejected, mapped.message());
    state.store.ingest_spans(&access.project_id, mapped.batches).await?;
    Ok(trace_answer(rejected, message))
}

/// Decodes (`decode` yields the request), maps and stores a big trace export on one thread of
/// the blocking pool, which then waits there for the write. A request's decoded messages and
/// mapped spans are tens of small allocations a span; made and freed on one thread, the
/// allocator keeps them in that thread's cache, where handing them from the async worker to a
/// mapping thread and on to a preparing one had each thread free what another made (server CPU
/// per span −11 % at full speed, see BENCHMARKS.md).
async fn export_traces_blocking(
    state: &AppState,
    access: &Access,
    decode: impl FnOnce(&AppState) -> Result<ExportTraceServiceRequest, ApiError> + Send + 'static,
) -> Result<ExportTraceServiceResponse, ApiError> {
    let (state, access) = (state.clone(), access.clone());
    tokio::task::spawn_blocking(move || {
        let mapped = map_export(&state, &access, decode(&state)?)?;
        let (rejected, message) = (mapped.rejected, mapped.message());
        state.store.ingest_spans_blocking(&access.project_id, mapped.batches)?;
        Ok(trace_answer(rejected, message))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

async fn export_logs(
    state: &AppState,
    access: &Access,
    req: ExportLogsServiceRequest,
    big: bool,
) -> Result<ExportLogsServiceResponse, ApiError> {
    check_logs_count(&req, &state.limits)?;
    let limits = state.otel.clone();
    let redactor = state.redactor.clone();
    let env = access.environment.clone();
    let mapped = map_off_thread(big, move || {
        let mut m = otel::map_logs(&req, &limits);
        scope_batches(&mut m, env, &redactor);
        m
    })
    .await?;
    check_mapped(&mapped, "log records")?;
    let message = mapped.message();
    let rejected = mapped.rejected;
    state.store.ingest_spans(&access.project_id, mapped.batches).await?;
    let partial_success =
        (rejected > 0 || !message.is_empty()).then_some(ExportLogsPartialSuccess {
            rejected_log_records: rejected,
            error_message: message,
        });
    Ok(ExportLogsServiceResponse { partial_success })
}

/// Bodies above this are decoded, mapped and stored from the blocking pool, below it from the
/// async worker: the hop to another thread and back was a millisecond of the slowest answers at
/// 10,000 spans/s in requests of 60 spans (84 KB), and mapping 256 KB takes a worker ~1 ms.
const BIG: usize = 256 * 1024;

/// The body of an OTLP/HTTP route, inflated, in whichever encoding it came, and its share of the
/// ingest budget (held until the answer).
async fn read(
    state: &AppState,
    access: &Access,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Encoding, Bytes, Reservation), ApiError> {
    crate::ingest::check_scope_headers(access, headers)?;
    let enc = encoding(headers)?;
    let mut body = body;
    let mut reserved = state.budget.reserve(headers, &mut body, state.limits.body_bytes).await?;
    let bytes = otlp_body(body, headers, state.limits.body_bytes).await?;
    state.budget.grow(&mut reserved, bytes.len())?;
    Ok((enc, bytes, reserved))
}

#[utoipa::path(
    post, path = "/v1/traces", tag = "ingest", operation_id = "otlp_export_traces",
    request_body(content = Object, description = "OTLP ExportTraceServiceRequest as application/x-protobuf or application/json; Content-Encoding gzip allowed"),
    responses(
        (status = 200, description = "Stored durably; partialSuccess counts refused spans"),
        (status = 400, description = "Undecodable, or every span refused", body = crate::error::ErrorBody),
        (status = 413, description = "Body (before or after decompression) over the limit", body = crate::error::ErrorBody),
        (status = 415, description = "Not OTLP protobuf or JSON", body = crate::error::ErrorBody),
        (status = 503, description = "Overloaded, store busy, or data directory read-only; retry after Retry-After", body = crate::error::ErrorBody),
        (status = 507, description = "The server's disk is full; retry after Retry-After", body = crate::error::ErrorBody),
    )
)]
pub async fn post_traces(
    State(state): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (enc, bytes, _reserved) = read(&state, &access, &headers, body).await?;
    let answer = if bytes.len() > BIG {
        let decode = move |state: &AppState| {
            decode_body(enc, &bytes, &state.limits, otel::json::trace_request)
        };
        export_traces_blocking(&state, &access, decode).await?
    } else {
        let req = decode_body(enc, &bytes, &state.limits, otel::json::trace_request)?;
        export_traces(&state, &access, req).await?
    };
    Ok(respond(enc, answer))
}

#[utoipa::path(
    post, path = "/v1/logs", tag = "ingest", operation_id = "otlp_export_logs",
    request_body(content = Object, description = "OTLP ExportLogsServiceRequest: GenAI events (gen_ai.user.message, gen_ai.choice, …) placed on spans by trace and span id"),
    responses((status = 200, description = "Stored durably"), (status = 400, body = crate::error::ErrorBody))
)]
pub async fn post_logs(
    State(state): State<AppState>,
    access: Access,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (enc, bytes, _reserved) = read(&state, &access, &headers, body).await?;
    let big = bytes.len() > BIG;
    let req = decode_body(enc, &bytes, &state.limits, otel::json::logs_request)?;
    Ok(respond(enc, export_logs(&state, &access, req, big).await?))
}

// ---------------------------------------------------------------------------------------------
// gRPC

fn grpc_status(e: ApiError) -> tonic::Status {
    match e.status {
        // UNAVAILABLE is the code OTLP exporters retry on
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::INSUFFICIENT_STORAGE => tonic::Status::unavailable(e.message),
        StatusCode::INTERNAL_SERVER_ERROR => tonic::Status::internal(e.message),
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Status::resource_exhausted(e.message),
        _ => tonic::Status::invalid_argument(e.message),
    }
}

#[derive(Clone)]
pub struct Grpc(pub AppState);

/// gRPC metadata carries the key as `authorization` or `x-api-key`, like HTTP headers.
async fn grpc_access(
    state: &AppState,
    md: &tonic::metadata::MetadataMap,
) -> Result<Access, tonic::Status> {
    let mut headers = HeaderMap::new();
    for name in ["authorization", "x-api-key", "x-tracellm-project", "x-tracellm-environment"] {
        if let Some(v) = md.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            headers.insert(name, v);
        }
    }
    let access = crate::auth::resolve(state, &headers, None).await.map_err(|e| match e.status {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(e.message),
        _ => grpc_status(e),
    })?;
    crate::ingest::check_scope_headers(&access, &headers)
        .map_err(|e| tonic::Status::permission_denied(e.message))?;
    Ok(access)
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let access = grpc_access(&self.0, request.metadata()).await?;
        let req = request.into_inner();
        // tonic has decoded the message already; its size is what the request holds from here
        let _reserved =
            self.0.budget.reserve_bytes(req.encoded_len()).await.map_err(grpc_status)?;
        let big = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>()
            > 64;
        // tonic decoded it on the async worker; a big one is mapped and stored from the pool
        let answer = if big {
            export_traces_blocking(&self.0, &access, move |_: &AppState| Ok(req)).await
        } else {
            export_traces(&self.0, &access, req).await
        };
        answer.map(tonic::Response::new).map_err(grpc_status)
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let access = grpc_access(&self.0, request.metadata()).await?;
        let req = request.into_inner();
        let _reserved =
            self.0.budget.reserve_bytes(req.encoded_len()).await.map_err(grpc_status)?;
        export_logs(&self.0, &access, req, true)
            .await
            .map(tonic::Response::new)
            .map_err(grpc_status)
    }
}

/// tonic answers a message prost cannot decode (one nested past prost's recursion limit too)
/// with INTERNAL; the fault is the client's, so it becomes INVALID_ARGUMENT, HTTP's 400.
fn undecodable_is_invalid_argument<B>(
    mut resp: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let h = resp.headers_mut();
    let undecodable = h.get("grpc-status").is_some_and(|v| v == "13")
        && h.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| {
            m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode")
        });
    if undecodable {
        h.insert("grpc-status", HeaderValue::from_static("3"));
    }
    resp
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    use tonic::codec::CompressionEncoding::Gzip;
    let limit = state.limits.body_bytes;
    let svc = Grpc(state);
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(undecodable_is_invalid_argument))
        .add_service(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(Gzip)
                .send_compressed(Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            LogsServiceServer::new(svc)
                .accept_compressed(Gzip)
                .send_compressed(Gzip)
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
