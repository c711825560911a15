//! The REST JSON API, with the seeds' paths. Handlers only parse and call services.

use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::state::AppState;
use super::{contents, script, settings, status};
use crate::error::AppError;
use crate::model::{
    GenerateRequest, ListQuery, SaveContentRequest, SettingsUpdate, UpdateContentRequest,
};

/// `Json` whose rejections are `AppError`s, so a malformed body answers like every other
/// error: `{error: {code, message, field}}`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

type ApiResult<T> = Result<Json<T>, AppError>;

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

fn id_param(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        AppError::validation("id", format!("id must be a positive integer (got {raw:?})"))
    })
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/content/generate", post(generate))
        .route("/api/contents", get(list_contents).post(save_content))
        .route(
            "/api/contents/{id}",
            get(get_content).put(update_content).delete(delete_content),
        )
        .route("/api/settings", get(get_settings).put(put_settings))
        .route("/api/settings/reset", post(reset_settings))
        .route("/api/settings/status", get(get_status))
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match sqlx::query("SELECT 1").execute(state.pool()).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "database unavailable" })),
            )
        }
    }
}

async fn generate(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<Data<crate::model::GeneratedScript>> {
    Ok(Json(Data {
        data: script::generate(&state, req).await?,
    }))
}

async fn list_contents(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<crate::model::ContentPage> {
    Ok(Json(contents::list(&state, query).await?))
}

async fn save_content(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SaveContentRequest>,
) -> Result<(StatusCode, Json<Data<crate::model::ContentDetail>>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: contents::save(&state, req).await?,
        }),
    ))
}

async fn get_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Data<crate::model::ContentDetail>> {
    Ok(Json(Data {
        data: contents::get(&state, id_param(&id)?).await?,
    }))
}

async fn update_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateContentRequest>,
) -> ApiResult<Data<crate::model::ContentDetail>> {
    Ok(Json(Data {
        data: contents::update(&state, id_param(&id)?, req).await?,
    }))
}

async fn delete_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    contents::delete(&state, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_settings(
    State(state): State<AppState>,
) -> ApiResult<Data<crate::model::SettingsView>> {
    Ok(Json(Data {
        data: settings::view(&state).await?,
    }))
}

async fn put_settings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SettingsUpdate>,
) -> ApiResult<Data<crate::model::SettingsView>> {
    Ok(Json(Data {
        data: settings::update(&state, req).await?,
    }))
}

async fn reset_settings(
    State(state): State<AppState>,
) -> ApiResult<Data<crate::model::SettingsView>> {
    Ok(Json(Data {
        data: settings::reset(&state).await?,
    }))
}

async fn get_status(State(state): State<AppState>) -> ApiResult<Data<crate::model::StatusReport>> {
    Ok(Json(Data {
        data: status::report(&state).await?,
    }))
}
