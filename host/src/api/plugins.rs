//! `POST /api/v1/plugins?name=NAME`, `GET /api/v1/plugins`, `DELETE /api/v1/plugins/{name}`.
//!
//! An upload is the component's bytes. It is validated by compiling it against the
//! `logfleet:filter@1.0.0` world before it is stored, so a session never names a plugin that
//! cannot run.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use logfleet_filter_runtime::MAX_COMPONENT_BYTES;
use logfleet_protocol::filters::valid_plugin_name;
use logfleet_protocol::rest::{PluginList, PluginResponse};
use serde::Deserialize;

use crate::api::body::{discard_body, read_body};
use crate::api::query;
use crate::audit::Kind;
use crate::auth::{Admin, User};
use crate::error::ApiError;
use crate::error::echo;
use crate::plugins::{PluginError, Plugins};
use crate::state::AppState;

pub async fn upload(
    State(state): State<AppState>,
    user: User,
    uri: Uri,
    body: Body,
) -> Result<(StatusCode, Json<PluginResponse>), ApiError> {
    let claims = &user.0;
    // Admin only. The body is consumed before answering: answering while the client is still
    // sending a megabyte makes the server close the connection, and the client sees a broken
    // pipe instead of the error. A refused body is discarded chunk by chunk, never held, so
    // any user's uploads cost the host no memory.
    if !user.is_admin() {
        discard_body(body, MAX_COMPONENT_BYTES).await;
        let why = "uploading plugins needs the admin role";
        state
            .audit
            .auth_refused(Some(&claims.org), Some(&claims.sub), uri.path(), why);
        return Err(ApiError::forbidden(why));
    }
    // Read before the name is checked, for the same reason.
    let bytes = read_body(body, MAX_COMPONENT_BYTES, || {
        format!("a plugin must be at most {MAX_COMPONENT_BYTES} bytes")
    })
    .await?;
    let UploadQuery { name } = query::parse(&uri)?;
    let name = name.ok_or_else(|| {
        ApiError::bad_request("invalid_request", "missing ?name=NAME for the plugin")
    })?;
    if !valid_plugin_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_plugin",
            format!(
                "invalid plugin name '{}' (1..=64 of a-z, 0-9, '-', '_', starting with a letter or digit)",
                echo(&name)
            ),
        ));
    }
    // Compiling takes up to a second of CPU: bounded concurrency, off the async workers.
    let permit = state
        .validations
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "shutting down",
            )
        })?;
    let runtime = state.runtime.clone();
    let checked = bytes.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        runtime.validate(&checked)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    verdict.map_err(|e| ApiError::bad_request("invalid_plugin", e.to_string()))?;
    let (org, stored) = (claims.org.clone(), name.clone());
    let plugin = on_store(&state.plugins, move |p| p.put(&org, &stored, &bytes)).await?;
    tracing::info!(org = %claims.org, %name, digest = %plugin.digest, "plugin stored");
    state.audit.record(
        Kind::PluginUpload,
        Some(&claims.org),
        &claims.sub,
        serde_json::json!({"name": name, "digest": plugin.digest, "size": plugin.size}),
    );
    Ok((StatusCode::CREATED, Json(PluginResponse { plugin })))
}

pub async fn list(State(state): State<AppState>, User(claims): User) -> Json<PluginList> {
    let plugins = state.plugins.list(&claims.org);
    Json(PluginList {
        total: plugins.len(),
        plugins,
    })
}

pub async fn delete(
    State(state): State<AppState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
) -> Result<Json<PluginResponse>, ApiError> {
    let (org, deleted) = (claims.org.clone(), name);
    let plugin = on_store(&state.plugins, move |p| p.delete(&org, &deleted)).await?;
    state.audit.record(
        Kind::PluginDelete,
        Some(&claims.org),
        &claims.sub,
        serde_json::json!({"name": plugin.name, "digest": plugin.digest}),
    );
    Ok(Json(PluginResponse { plugin }))
}

/// `?name=NAME` of an upload.
#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// Runs a store operation (fsyncs, file removal) on a blocking thread.
async fn on_store<T: Send + 'static>(
    plugins: &Plugins,
    op: impl FnOnce(&Plugins) -> Result<T, PluginError> + Send + 'static,
) -> Result<T, ApiError> {
    let plugins = plugins.clone();
    tokio::task::spawn_blocking(move || op(&plugins))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(plugin_error)
}

fn plugin_error(e: PluginError) -> ApiError {
    match e {
        PluginError::NotFound(name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "plugin_not_found",
            format!("no plugin '{}'", echo(&name)),
        ),
        PluginError::TooLarge(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        PluginError::QuotaExceeded { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "storage_quota_exceeded",
            e.to_string(),
        ),
        PluginError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "too_many_plugins", e.to_string())
        }
        PluginError::Io(_) | PluginError::Index(_) => {
            tracing::error!(error = %e, "plugin storage failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            )
        }
    }
}
