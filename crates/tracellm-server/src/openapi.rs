//! `GET /openapi.json`, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "TraceLLM API", description = "Ingest, query and stream LLM traces."),
    paths(
        crate::query::health,
        crate::query::stats,
        crate::ingest::post_traces,
        crate::query::list_traces,
        crate::query::get_trace,
        crate::query::get_span,
        crate::query::failures,
        crate::query::analytics,
        crate::ws::ws,
        crate::otlp::post_traces,
        crate::otlp::post_logs,
        crate::admin::list_projects,
        crate::admin::create_project,
        crate::admin::list_keys,
        crate::admin::create_key,
        crate::admin::revoke_key,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorDetail,
        crate::ingest::IngestResponse,
        crate::query::Health,
        crate::query::StoreStats,
        crate::admin::CreatedProject,
        crate::admin::CreatedKey,
        crate::admin::ProjectList,
        crate::admin::KeyList,
        crate::admin::KeyResponse,
        tracellm_core::Trace,
        tracellm_core::Span,
        tracellm_core::TraceSummary,
        tracellm_core::api::TracePage,
        tracellm_core::api::FailurePage,
        tracellm_core::api::Analytics,
    ))
)]
pub struct ApiDoc;

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
