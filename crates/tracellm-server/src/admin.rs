//! Admin routes: projects and API keys. Secrets are shown once, at creation.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Serialize;
use tracellm_store::{ApiKey, NewApiKey, Project};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Admin, ENVIRONMENTS};
use crate::error::{ApiError, ErrorBody};
use crate::params::Params;

/// A key as created: the only time its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The secret: `tlm_sk_` + 32 letters and digits. Store it now; it cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKey,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedProject {
    pub project: Project,
    pub api_key: CreatedKey,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub api_keys: Vec<ApiKey>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyResponse {
    pub api_key: ApiKey,
}

/// `My App!` → `my-app`.
fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').chars().take(64).collect()
}

fn environment(p: &mut Params) -> Result<String, ApiError> {
    let env = p.take("environment")?.unwrap_or_else(|| "development".into());
    if !ENVIRONMENTS.contains(&env.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "parameter \"environment\": {env:?} is not one of development, staging, production"
            ),
        ));
    }
    Ok(env)
}

async fn issue_key(
    state: &AppState,
    project_id: &str,
    environment: String,
    name: Option<String>,
) -> Result<CreatedKey, ApiError> {
    let secret = auth::new_key_secret();
    let id = format!("key_{}", &tracellm_core::ids::new_span_id()[3..]);
    let info = state
        .store
        .create_api_key(NewApiKey {
            id,
            project_id: project_id.to_string(),
            environment,
            name,
            prefix: secret[..auth::KEY_PREFIX.len() + 4].to_string(),
            hash: auth::sha256(&secret).to_vec(),
        })
        .await?;
    tracing::info!(target: "audit", event = "api_key.created", key_id = %info.id, project = %info.project_id, environment = %info.environment);
    Ok(CreatedKey { key: secret, info })
}

#[utoipa::path(get, path = "/projects", tag = "admin", responses((status = 200, body = ProjectList), (status = 401, body = ErrorBody)))]
pub async fn list_projects(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<ProjectList>, ApiError> {
    Ok(Json(ProjectList { projects: state.store.list_projects().await? }))
}

#[utoipa::path(
    post, path = "/projects", tag = "admin",
    params(
        ("name" = String, Query, description = "project name; its id is the name in lower-case-with-dashes"),
        ("environment" = Option<String>, Query, description = "environment of the first key: development (default), staging, production"),
        ("description" = Option<String>, Query),
    ),
    responses((status = 201, body = CreatedProject), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn create_project(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<(StatusCode, Json<CreatedProject>), ApiError> {
    let mut p = Params::parse(raw.as_deref());
    let name = p.take("name")?.ok_or_else(|| {
        ApiError::bad_request("missing_parameter", "parameter \"name\" is required")
    })?;
    let env = environment(&mut p)?;
    let description = p.take("description")?;
    p.finish(&["name", "environment", "description"])?;
    let id = slug(&name);
    if id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("parameter \"name\": {name:?} has no letters or digits"),
        ));
    }
    let project = state.store.create_project(&id, name.trim(), description.as_deref()).await?;
    tracing::info!(target: "audit", event = "project.created", project = %project.id);
    let api_key = issue_key(&state, &project.id, env, Some("first key".into())).await?;
    Ok((StatusCode::CREATED, Json(CreatedProject { project, api_key })))
}

#[utoipa::path(
    get, path = "/api-keys", tag = "admin",
    params(("project" = Option<String>, Query, description = "only this project's keys")),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody))
)]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<KeyList>, ApiError> {
    let mut p = Params::parse(raw.as_deref());
    let project = p.take("project")?;
    p.finish(&["project"])?;
    // uses recorded by this instance since the last housekeeping round, so `last_used_at` is current
    state.auth.flush_key_uses(state.store.as_ref()).await;
    Ok(Json(KeyList { api_keys: state.store.list_api_keys(project.as_deref()).await? }))
}

#[utoipa::path(
    post, path = "/api-keys", tag = "admin",
    params(
        ("project" = String, Query), ("environment" = Option<String>, Query, description = "development (default), staging, production"),
        ("name" = Option<String>, Query, description = "a label for the key"),
    ),
    responses((status = 201, body = CreatedKey), (status = 404, body = ErrorBody))
)]
pub async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut p = Params::parse(raw.as_deref());
    let project = p.take("project")?.ok_or_else(|| {
        ApiError::bad_request("missing_parameter", "parameter \"project\" is required")
    })?;
    let env = environment(&mut p)?;
    let name = p.take("name")?;
    p.finish(&["project", "environment", "name"])?;
    let created = issue_key(&state, &project, env, name).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "api_key": created }))))
}

#[utoipa::path(
    delete, path = "/api-keys/{id}", tag = "admin",
    params(("id" = String, Path)),
    responses((status = 200, body = KeyResponse), (status = 404, body = ErrorBody))
)]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyResponse>, ApiError> {
    match state.store.revoke_api_key(&id).await? {
        Some(k) => {
            state.auth.forget_key(&k.id);
            tracing::info!(target: "audit", event = "api_key.revoked", key_id = %k.id, project = %k.project_id);
            Ok(Json(KeyResponse { api_key: k }))
        }
        None => Err(ApiError::not_found(format!("no API key {id:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slug("My App!"), "my-app");
        assert_eq!(super::slug("  --x__y "), "x-y");
        assert_eq!(super::slug("!!!"), "");
    }
}
