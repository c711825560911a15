//! The REST JSON API, with the seeds' paths. Every route is declared once in `api_routes`
//! with who may call it; handlers only parse, take the caller, and call services.

use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse as _;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use tower_sessions::Session;

use super::auth::{client_ip, Actor, AdminActor};
use super::openapi::{
    Binary, Conflict, ContentNotFound, CrossSite, ProviderErrors, QuotaExceeded, RangeErrors,
    TooManyAttempts, TooManyRequests, WrongCredentials,
};
use super::security::Access;
use super::state::AppState;
use super::{
    clips, contents, jobs, media, script, settings, status, stock, tokens, users, voices, webhooks,
};
use crate::error::AppError;
use crate::model::*;

/// A JSON object body whose rejections are `AppError`s, so a malformed body answers like
/// every other error: `{error: {code, message, field}}`. Every REST body is an object:
/// serde would also read a struct from an array of its fields in order (`[null, true]`),
/// which the document does not allow, so anything but an object is refused first.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        if !is_json(request.headers()) {
            return Err(AppError::new(
                crate::error::ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::new(
                        crate::error::ErrorCode::PayloadTooLarge,
                        format!(
                            "The request body is larger than {} KiB",
                            limits::BODY_MAX_BYTES / 1024
                        ),
                    )
                } else {
                    AppError::new(
                        crate::error::ErrorCode::InvalidJson,
                        format!(
                            "The request body could not be read: {}",
                            rejection.body_text()
                        ),
                    )
                }
            })?;
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(AppError::new(
                crate::error::ErrorCode::InvalidJson,
                "The request body must be a JSON object ({…}).",
            ));
        }
        Ok(ApiJson(axum::Json::<T>::from_bytes(&bytes)?.0))
    }
}

/// `application/json` or a `+json` type (RFC 6839), parameters aside, as `axum::Json` reads.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

/// The client's address, for sign-in throttling (`auth::client_ip`).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state.client_ip_header.as_ref())))
    }
}

type ApiResult<T> = Result<Json<Data<T>>, AppError>;

/// Every JSON success answer: `{"data": …}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Data<T> {
    data: T,
}

/// `GET /healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `database unavailable`.
    status: String,
}

fn ok<T>(data: T) -> ApiResult<T> {
    Ok(Json(Data { data }))
}

fn id_param(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        AppError::validation("id", format!("id must be a positive integer (got {raw:?})"))
    })
}

pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

/// The method is said once: it picks the handler's route and is what the tests see.
fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> ApiRoute
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard HTTP method");
    ApiRoute {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every REST route with its access rule. The handlers enforce it through their
/// extractors (`Actor`, `AdminActor`); the access-matrix test checks each against this table.
pub fn api_routes() -> Vec<ApiRoute> {
    use Access::*;
    vec![
        route(Method::GET, "/healthz", Public, healthz),
        route(Method::GET, "/api/openapi.json", Public, openapi_json),
        route(Method::POST, "/api/auth/setup", Public, setup),
        route(Method::POST, "/api/auth/sign-in", Public, sign_in),
        route(Method::POST, "/api/auth/sign-out", Public, sign_out),
        route(Method::GET, "/api/auth/me", Public, me),
        route(Method::POST, "/api/content/generate", User, generate),
        route(Method::GET, "/api/contents", User, list_contents),
        route(Method::POST, "/api/contents", User, save_content),
        route(Method::GET, "/api/contents/{id}", User, get_content),
        route(Method::PUT, "/api/contents/{id}", User, update_content),
        route(Method::DELETE, "/api/contents/{id}", User, delete_content),
        route(
            Method::POST,
            "/api/contents/{id}/render",
            User,
            render_content,
        ),
        route(Method::GET, "/api/contents/{id}/video", User, content_video),
        route(
            Method::GET,
            "/api/contents/{id}/subtitles",
            User,
            content_subtitles,
        ),
        route(Method::PUT, "/api/contents/{id}/music", User, put_music),
        route(Method::PUT, "/api/contents/{id}/voice", User, put_voice),
        route(
            Method::PUT,
            "/api/contents/{id}/scenes/{scene_id}/clip",
            User,
            put_clip,
        ),
        route(
            Method::PUT,
            "/api/contents/{id}/transition",
            User,
            put_transition,
        ),
        route(
            Method::PUT,
            "/api/contents/{id}/scenes/{scene_id}/visual",
            User,
            put_visual,
        ),
        route(
            Method::DELETE,
            "/api/contents/{id}/scenes/{scene_id}/visual",
            User,
            delete_visual,
        ),
        route(
            Method::GET,
            "/api/contents/{id}/scenes/{scene_id}/footage",
            User,
            search_footage,
        ),
        route(Method::GET, "/api/stock/preview", User, stock_preview),
        route(Method::POST, "/api/footage/find", User, find_footage),
        route(Method::GET, "/api/voices", User, list_voices),
        route(Method::GET, "/api/voices/preview", User, preview_voice),
        route(
            Method::DELETE,
            "/api/contents/{id}/music",
            User,
            delete_music,
        ),
        route(Method::POST, "/api/media/generate", User, generate_media),
        route(Method::POST, "/api/media/batch", User, batch_media),
        route(Method::POST, "/api/tts/generate", User, generate_tts),
        route(Method::POST, "/api/tts/batch", User, batch_tts),
        route(Method::GET, "/api/jobs", User, list_jobs),
        route(Method::GET, "/api/jobs/{id}", User, get_job),
        route(Method::POST, "/api/jobs/{id}/retry", User, retry_job),
        route(Method::POST, "/api/jobs/{id}/cancel", User, cancel_job),
        route(Method::GET, "/api/assets/{id}", User, get_asset),
        route(Method::GET, "/api/tokens", User, list_tokens),
        route(Method::POST, "/api/tokens", User, create_token),
        route(Method::DELETE, "/api/tokens/{id}", User, revoke_token),
        route(Method::GET, "/api/webhooks", User, list_webhooks),
        route(Method::POST, "/api/webhooks", User, create_webhook),
        route(Method::GET, "/api/webhooks/{id}", User, get_webhook),
        route(Method::PUT, "/api/webhooks/{id}", User, update_webhook),
        route(Method::DELETE, "/api/webhooks/{id}", User, delete_webhook),
        route(
            Method::POST,
            "/api/webhooks/{id}/rotate-secret",
            User,
            rotate_webhook_secret,
        ),
        route(
            Method::GET,
            "/api/webhooks/{id}/deliveries",
            User,
            list_webhook_deliveries,
        ),
        route(
            Method::POST,
            "/api/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            User,
            redeliver_webhook,
        ),
        route(Method::GET, "/api/settings", Admin, get_settings),
        route(Method::PUT, "/api/settings", Admin, put_settings),
        route(Method::POST, "/api/settings/reset", Admin, reset_settings),
        route(Method::GET, "/api/settings/status", Admin, get_status),
        route(Method::GET, "/api/users", Admin, list_users),
        route(Method::POST, "/api/users", Admin, create_user),
        route(Method::PUT, "/api/users/{id}", Admin, update_user),
        route(Method::GET, "/metrics", Admin, metrics),
    ]
}

pub fn router() -> Router<AppState> {
    api_routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        // Any other path under /api answers like the API, not with the app's HTML page.
        .route("/api/{*rest}", axum::routing::any(no_such_route))
}

async fn no_such_route(uri: axum::http::Uri) -> AppError {
    AppError::new(
        crate::error::ErrorCode::NotFound,
        format!(
            "{} is not an API route (GET /api/openapi.json lists them)",
            uri.path()
        ),
    )
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    summary = "Liveness and database reachability",
    responses((status = 200, description = "Up, and the database answers.", body = Health), (status = 503, description = "The database does not answer.", body = Health))
)]
async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (status, words) = match sqlx::query("SELECT 1").execute(state.pool()).await {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    };
    (
        status,
        Json(Health {
            status: words.into(),
        }),
    )
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document())
}

/// Prometheus's text exposition format (0.0.4), for an admin's token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    responses((status = 200, description = "Counters, gauges and histograms.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String))
)]
async fn metrics(
    State(state): State<AppState>,
    _: AdminActor,
) -> Result<axum::response::Response, AppError> {
    let text = super::metrics::scrape(&state).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/api/auth/setup",
    tag = "auth",
    summary = "Create the first admin and sign in",
    request_body = SetupRequest,
    responses((status = 200, description = "The new admin, signed in (session cookie).", body = Data<UserView>), Conflict, TooManyAttempts)
)]
async fn setup(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<UserView> {
    ok(users::setup_first_admin(&state, &session, ip, req).await?)
}

#[utoipa::path(
    post,
    path = "/api/auth/sign-in",
    tag = "auth",
    summary = "Sign in with e-mail and password (session cookie)",
    request_body = SignInRequest,
    responses((status = 200, description = "Signed in.", body = Data<UserView>), TooManyAttempts, WrongCredentials)
)]
async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<UserView> {
    ok(users::sign_in(&state, &session, ip, req).await?)
}

#[utoipa::path(
    post,
    path = "/api/auth/sign-out",
    tag = "auth",
    summary = "End the session",
    responses((status = 204, description = "Signed out (or was not signed in)."))
)]
async fn sign_out(session: Session) -> Result<StatusCode, AppError> {
    users::sign_out(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    summary = "The caller, or null when not signed in",
    responses((status = 200, description = "The signed-in user, or `null`.", body = Data<Option<UserView>>))
)]
async fn me(State(state): State<AppState>, actor: Option<Actor>) -> ApiResult<Option<UserView>> {
    ok(match actor {
        Some(Actor(user)) => Some(users::get(&state, user.id).await?),
        None => None,
    })
}

#[utoipa::path(
    post,
    path = "/api/content/generate",
    tag = "contents",
    summary = "Write a script from a topic, or split a pasted one (not saved)",
    request_body = GenerateRequest,
    responses((status = 200, description = "The script, not yet saved.", body = Data<GeneratedScript>), ProviderErrors, TooManyRequests)
)]
async fn generate(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<GeneratedScript> {
    ok(script::generate(&state, &user, req).await?)
}

#[utoipa::path(
    get,
    path = "/api/contents",
    tag = "contents",
    summary = "The caller's contents, newest first",
    params(("q" = Option<String>, Query, description = "Words to find in titles and scripts (up to 200 characters)."), ("page" = Option<u32>, Query, minimum = 0, maximum = 1000000, description = "From 1 (0 is read as 1)."), ("per_page" = Option<u32>, Query, minimum = 1, maximum = 100, description = "From 1 to 100; 20 when left out.")),
    responses((status = 200, description = "One page of contents.", body = Data<ContentPage>))
)]
async fn list_contents(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<ContentPage> {
    let params = QueryParams::new(&raw, &["q", "page", "per_page"])?;
    let query = ListQuery {
        q: params.get("q").map(str::to_owned),
        page: params.number("page", 0..=limits::PAGE_MAX)?,
        per_page: params.number("per_page", 1..=limits::PAGE_SIZE_MAX)?,
    };
    ok(contents::list(&state, &user, query).await?)
}

#[utoipa::path(
    post,
    path = "/api/contents",
    tag = "contents",
    summary = "Save a generated script as a content",
    request_body = SaveContentRequest,
    responses((status = 201, description = "The saved content.", body = Data<ContentDetail>))
)]
async fn save_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<SaveContentRequest>,
) -> Result<(StatusCode, Json<Data<ContentDetail>>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: contents::save(&state, &user, req).await?,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/contents/{id}",
    tag = "contents",
    summary = "A content with its scenes",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 200, description = "The content.", body = Data<ContentDetail>))
)]
async fn get_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<ContentDetail> {
    ok(contents::get(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    put,
    path = "/api/contents/{id}",
    tag = "contents",
    summary = "Edit the title and scenes (scenes left out are deleted)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    request_body = UpdateContentRequest,
    responses((status = 200, description = "The content as saved.", body = Data<ContentDetail>))
)]
async fn update_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateContentRequest>,
) -> ApiResult<ContentDetail> {
    ok(contents::update(&state, &user, id_param(&id)?, req).await?)
}

#[utoipa::path(
    delete,
    path = "/api/contents/{id}",
    tag = "contents",
    summary = "Delete a content, its media and its jobs",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 204, description = "Deleted."))
)]
async fn delete_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    contents::delete(&state, &user, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "tokens",
    summary = "The caller's API tokens",
    responses((status = 200, description = "The tokens (never their secrets).", body = Data<Vec<TokenView>>))
)]
async fn list_tokens(
    State(state): State<AppState>,
    Actor(user): Actor,
) -> ApiResult<Vec<TokenView>> {
    ok(tokens::list(&state, &user).await?)
}

#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "tokens",
    summary = "Create an API token; its secret is shown once",
    request_body = CreateTokenRequest,
    responses((status = 201, description = "The token and its secret.", body = Data<CreatedToken>))
)]
async fn create_token(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<Data<CreatedToken>>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: tokens::create(&state, &user, req).await?,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/tokens/{id}",
    tag = "tokens",
    summary = "Revoke one of the caller's tokens",
    params(("id" = i64, Path, minimum = 1, description = "The token's id.")),
    responses((status = 204, description = "Revoked."))
)]
async fn revoke_token(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    tokens::revoke(&state, &user, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "The caller's webhook endpoints",
    responses((status = 200, description = "The endpoints (never their secrets).", body = Data<Vec<WebhookEndpointView>>))
)]
async fn list_webhooks(
    State(state): State<AppState>,
    Actor(user): Actor,
) -> ApiResult<Vec<WebhookEndpointView>> {
    ok(webhooks::list(&state, &user).await?)
}

#[utoipa::path(
    post,
    path = "/api/webhooks",
    tag = "webhooks",
    summary = "Register an endpoint for events; its signing secret is in the answer",
    request_body = CreateWebhookRequest,
    responses((status = 201, description = "The endpoint and its `whsec_` secret.", body = Data<WebhookWithSecret>), Conflict)
)]
async fn create_webhook(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<Data<WebhookWithSecret>>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: webhooks::create(&state, &user, req).await?,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "One of the caller's endpoints",
    params(("id" = i64, Path, minimum = 1, description = "The endpoint's id.")),
    responses((status = 200, description = "The endpoint.", body = Data<WebhookEndpointView>))
)]
async fn get_webhook(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<WebhookEndpointView> {
    ok(webhooks::get(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    put,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Change an endpoint's URL, events, description, or enable or disable it",
    params(("id" = i64, Path, minimum = 1, description = "The endpoint's id.")),
    request_body = UpdateWebhookRequest,
    responses((status = 200, description = "The endpoint as saved.", body = Data<WebhookEndpointView>))
)]
async fn update_webhook(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateWebhookRequest>,
) -> ApiResult<WebhookEndpointView> {
    ok(webhooks::update(&state, &user, id_param(&id)?, req).await?)
}

#[utoipa::path(
    delete,
    path = "/api/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete an endpoint and its deliveries",
    params(("id" = i64, Path, minimum = 1, description = "The endpoint's id.")),
    responses((status = 204, description = "Deleted."))
)]
async fn delete_webhook(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    webhooks::delete(&state, &user, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "A new signing secret; the previous one keeps signing too for 24 hours",
    params(("id" = i64, Path, minimum = 1, description = "The endpoint's id.")),
    responses((status = 200, description = "The endpoint and its new secret.", body = Data<WebhookWithSecret>))
)]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<WebhookWithSecret> {
    ok(webhooks::rotate_secret(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    get,
    path = "/api/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "An endpoint's latest 50 deliveries, newest first",
    params(("id" = i64, Path, minimum = 1, description = "The endpoint's id.")),
    responses((status = 200, description = "The deliveries, each with its status and body.", body = Data<Vec<WebhookDeliveryView>>))
)]
async fn list_webhook_deliveries(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<Vec<WebhookDeliveryView>> {
    ok(webhooks::deliveries(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    post,
    path = "/api/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    summary = "Send a delivery again (same webhook-id and body, signed anew)",
    params(
        ("id" = i64, Path, minimum = 1, description = "The endpoint's id."),
        ("delivery_id" = i64, Path, minimum = 1, description = "The delivery's id."),
    ),
    responses((status = 202, description = "Queued: the delivery, pending.", body = Data<WebhookDeliveryView>), Conflict, TooManyRequests)
)]
async fn redeliver_webhook(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Data<WebhookDeliveryView>>), AppError> {
    let id = id_param(&id)?;
    let delivery_id = id_param(&delivery_id).map_err(|_| {
        AppError::validation(
            "delivery_id",
            format!("delivery_id must be a positive integer (got {delivery_id:?})"),
        )
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: webhooks::redeliver(&state, &user, id, delivery_id).await?,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/settings",
    tag = "settings",
    summary = "Every setting; keys only masked",
    responses((status = 200, description = "The settings.", body = Data<SettingsView>))
)]
async fn get_settings(State(state): State<AppState>, _: AdminActor) -> ApiResult<SettingsView> {
    ok(settings::view(&state).await?)
}

#[utoipa::path(
    put,
    path = "/api/settings",
    tag = "settings",
    summary = "Change settings and keys",
    request_body = SettingsUpdate,
    responses((status = 200, description = "The settings as saved.", body = Data<SettingsView>))
)]
async fn put_settings(
    State(state): State<AppState>,
    _: AdminActor,
    ApiJson(req): ApiJson<SettingsUpdate>,
) -> ApiResult<SettingsView> {
    ok(settings::update(&state, req).await?)
}

#[utoipa::path(
    post,
    path = "/api/settings/reset",
    tag = "settings",
    summary = "Every setting back to its default (keys are kept)",
    responses((status = 200, description = "The default settings.", body = Data<SettingsView>))
)]
async fn reset_settings(State(state): State<AppState>, _: AdminActor) -> ApiResult<SettingsView> {
    ok(settings::reset(&state).await?)
}

#[utoipa::path(
    get,
    path = "/api/settings/status",
    tag = "settings",
    summary = "Checks of providers, tools, disk and queue",
    responses((status = 200, description = "The report.", body = Data<StatusReport>))
)]
async fn get_status(State(state): State<AppState>, _: AdminActor) -> ApiResult<StatusReport> {
    ok(status::report(&state).await?)
}

#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    summary = "Every account",
    responses((status = 200, description = "The accounts.", body = Data<Vec<UserView>>))
)]
async fn list_users(State(state): State<AppState>, _: AdminActor) -> ApiResult<Vec<UserView>> {
    ok(users::list(&state).await?)
}

#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    summary = "Create an account",
    request_body = CreateUserRequest,
    responses((status = 201, description = "The account.", body = Data<UserView>), Conflict)
)]
async fn create_user(
    State(state): State<AppState>,
    _: AdminActor,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<Data<UserView>>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: users::create(&state, req).await?,
        }),
    ))
}

#[utoipa::path(
    put,
    path = "/api/users/{id}",
    tag = "users",
    summary = "Change an account's role or disable it",
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    request_body = UpdateUserRequest,
    responses((status = 200, description = "The account as saved.", body = Data<UserView>), Conflict)
)]
async fn update_user(
    State(state): State<AppState>,
    AdminActor(admin): AdminActor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<UserView> {
    ok(users::update(&state, &admin, id_param(&id)?, req).await?)
}

fn accepted(job: JobView) -> (StatusCode, Json<Data<JobView>>) {
    (StatusCode::ACCEPTED, Json(Data { data: job }))
}

#[utoipa::path(
    post,
    path = "/api/media/generate",
    tag = "jobs",
    summary = "Make pictures for a content's scenes (a background job)",
    request_body = MediaRequest,
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, ContentNotFound, QuotaExceeded)
)]
async fn generate_media(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<MediaRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create(&state, &user, JobKind::Media, req).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/tts/generate",
    tag = "jobs",
    summary = "Make narration for a content's scenes (a background job)",
    request_body = MediaRequest,
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, ContentNotFound, QuotaExceeded)
)]
async fn generate_tts(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<MediaRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create(&state, &user, JobKind::Tts, req).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/media/batch",
    tag = "jobs",
    summary = "Make pictures for every scene of several contents",
    request_body = BatchRequest,
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, ContentNotFound, QuotaExceeded)
)]
async fn batch_media(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create_batch(&state, &user, JobKind::Media, req).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/tts/batch",
    tag = "jobs",
    summary = "Make narration for every scene of several contents",
    request_body = BatchRequest,
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, ContentNotFound, QuotaExceeded)
)]
async fn batch_tts(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create_batch(&state, &user, JobKind::Tts, req).await?,
    ))
}

/// `?status=&kind=&content_id=&limit=`, each optional.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    summary = "The caller's jobs, newest first",
    params(("status" = Option<String>, Query, description = "queued, processing, completed, failed or cancelled."), ("kind" = Option<String>, Query, description = "media, tts, render or footage."), ("content_id" = Option<i64>, Query, minimum = 1, description = "Only this content's jobs."), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "From 1 to 500; 100 when left out.")),
    responses((status = 200, description = "The jobs.", body = Data<Vec<JobView>>))
)]
async fn list_jobs(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Vec<JobView>> {
    let params = QueryParams::new(&raw, &["status", "kind", "content_id", "limit"])?;
    let filter = JobFilter {
        status: params.get("status").map(str::to_owned),
        kind: params.get("kind").map(str::to_owned),
        content_id: params.number("content_id", 1..=i64::MAX)?,
    };
    let limit = params.number("limit", 1..=500)?.unwrap_or(100);
    ok(jobs::list(&state, &user, &filter, limit).await?)
}

#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    tag = "jobs",
    summary = "A job with its tasks",
    params(("id" = i64, Path, minimum = 1, description = "The job's id.")),
    responses((status = 200, description = "The job and its tasks.", body = Data<JobDetail>))
)]
async fn get_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::get(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    post,
    path = "/api/jobs/{id}/retry",
    tag = "jobs",
    summary = "Queue a job's failed tasks again",
    params(("id" = i64, Path, minimum = 1, description = "The job's id.")),
    responses((status = 200, description = "The job, queued again.", body = Data<JobDetail>), Conflict)
)]
async fn retry_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::retry_failed(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job's waiting and running tasks",
    params(("id" = i64, Path, minimum = 1, description = "The job's id.")),
    responses((status = 200, description = "The job, cancelled.", body = Data<JobDetail>))
)]
async fn cancel_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::cancel(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    post,
    path = "/api/contents/{id}/render",
    tag = "jobs",
    summary = "Render the content's video (a background job)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, QuotaExceeded)
)]
async fn render_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create_render(&state, &user, id_param(&id)?).await?,
    ))
}

/// The body is the audio file itself (`Content-Type: audio/…`), up to 20 MiB.
#[utoipa::path(
    put,
    path = "/api/contents/{id}/music",
    tag = "contents",
    summary = "Upload background music (the body is the audio file, up to 20 MiB)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    request_body(description = "The audio file: MP3, AAC/M4A, Ogg Vorbis/Opus, FLAC or WAV.", content((Binary = "audio/mpeg"), (Binary = "audio/mp4"), (Binary = "audio/aac"), (Binary = "audio/ogg"), (Binary = "audio/opus"), (Binary = "audio/flac"), (Binary = "audio/wav"), (Binary = "audio/x-wav"), (Binary = "audio/wave"))),
    responses((status = 200, description = "The content with its music.", body = Data<ContentDetail>))
)]
async fn put_music(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<ContentDetail> {
    let id = id_param(&id)?;
    let (content_type, bytes) =
        file_body(&headers, body, limits::MUSIC_MAX_BYTES, "music file").await?;
    ok(media::save_music(&state, &user, id, content_type, &bytes).await?)
}

/// A body that is a file: its `Content-Type` and its bytes, at most `max` (413 naming
/// `what` beyond).
async fn file_body<'h>(
    headers: &'h axum::http::HeaderMap,
    body: axum::body::Body,
    max: usize,
    what: &str,
) -> Result<(Option<&'h str>, axum::body::Bytes), AppError> {
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        AppError::new(
            crate::error::ErrorCode::PayloadTooLarge,
            format!("The {what} is larger than {} MiB", max / 1024 / 1024),
        )
    })?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    Ok((content_type, bytes))
}

#[utoipa::path(
    delete,
    path = "/api/contents/{id}/music",
    tag = "contents",
    summary = "Remove the background music",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 200, description = "The content without music.", body = Data<ContentDetail>))
)]
async fn delete_music(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<ContentDetail> {
    ok(media::remove_music(&state, &user, id_param(&id)?).await?)
}

#[utoipa::path(
    get,
    path = "/api/contents/{id}/video",
    tag = "contents",
    summary = "The latest rendered video (MP4, H.264/AAC; range requests)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 200, description = "The video.", content_type = "video/mp4", body = Binary), (status = 206, description = "The requested range.", content_type = "video/mp4", body = Binary), RangeErrors, Conflict)
)]
async fn content_video(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let key = media::content_file(&state, &user, id_param(&id)?, media::ContentFile::Video).await?;
    serve(&state, key, request).await
}

#[utoipa::path(
    get,
    path = "/api/contents/{id}/subtitles",
    tag = "contents",
    summary = "The latest video's subtitles (SubRip)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    responses((status = 200, description = "The subtitles.", content_type = "application/x-subrip", body = String), (status = 206, description = "The requested range.", content_type = "application/x-subrip", body = String), RangeErrors, Conflict)
)]
async fn content_subtitles(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let key =
        media::content_file(&state, &user, id_param(&id)?, media::ContentFile::Subtitles).await?;
    serve(&state, key, request).await
}

/// A stored file with range requests (seeking in players); the extension (.png, .wav,
/// .mp4, .srt) gives its type.
async fn serve(
    state: &AppState,
    key: String,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    use super::storage::StorageError;
    match state.storage.presigned(&key).await {
        Ok(Some(url)) => {
            return Ok(axum::response::Redirect::temporary(url.as_str()).into_response())
        }
        Ok(None) => {}
        Err(e) => return Err(super::error::internal("signing a media URL", e)),
    }
    let path = match state.storage.fetch(&key).await {
        Ok(path) => path,
        Err(StorageError::NotFound(_)) => return Err(AppError::not_found("file")),
        Err(e) => return Err(super::error::internal("fetching a media file", e)),
    };
    let service = tower_http::services::ServeFile::new(path);
    let response = tower::ServiceExt::oneshot(service, request)
        .await
        .map_err(|e| super::error::internal("serving a file", e))?;
    Ok(response.map(axum::body::Body::new))
}

/// An asset's file, for its content's owner, with range requests (seeking in players).
#[utoipa::path(
    get,
    path = "/api/assets/{id}",
    tag = "contents",
    summary = "A media file: picture (PNG), narration (WAV/MP3), video (MP4), subtitles (SRT), music",
    params(("id" = i64, Path, minimum = 1, description = "The asset's id.")),
    responses((status = 200, description = "The file; its type comes from its extension.", content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/webp"), (Binary = "audio/wav"), (Binary = "audio/mpeg"), (Binary = "audio/ogg"), (Binary = "audio/flac"), (Binary = "audio/mp4"), (Binary = "video/mp4"), (Binary = "application/x-subrip"))), (status = 206, description = "The requested range.", content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/webp"), (Binary = "audio/wav"), (Binary = "audio/mpeg"), (Binary = "audio/ogg"), (Binary = "audio/flac"), (Binary = "audio/mp4"), (Binary = "video/mp4"), (Binary = "application/x-subrip"))), RangeErrors)
)]
async fn get_asset(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let key = media::asset_file(&state, &user, id_param(&id)?).await?;
    serve(&state, key, request).await
}

/// A request's query parameters by name. One not in `known` is refused, so a misspelt one
/// is not silently ignored; a blank one (as a browser form sends it) is absent.
struct QueryParams<'a>(&'a std::collections::HashMap<String, String>);

impl<'a> QueryParams<'a> {
    fn new(
        raw: &'a std::collections::HashMap<String, String>,
        known: &[&str],
    ) -> Result<Self, AppError> {
        if let Some(unknown) = raw.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(AppError::validation(
                unknown,
                format!(
                    "{unknown} is not a parameter here (use {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(Self(raw))
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `name` read as a number within `range` (integer or decimal, as `T` is); 422 naming
    /// the parameter when it does not parse or falls outside.
    fn number<T>(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, AppError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(AppError::validation(
                name,
                format!(
                    "{name} must be a number from {} to {} (got {v:?})",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/voices",
    tag = "voices",
    summary = "The voices narration can use now: espeak-ng's variants offline, else the provider's",
    params(("language" = Option<String>, Query, max_length = 100, description = "The content's language (a name or code); the admin's default when left out.")),
    responses((status = 200, description = "The voices, with the defaults.", body = Data<VoiceList>))
)]
async fn list_voices(
    State(state): State<AppState>,
    Actor(_): Actor,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<VoiceList> {
    let params = QueryParams::new(&raw, &["language"])?;
    ok(voices::list(&state, params.get("language")).await?)
}

/// A GET that spends a provider call: another site must not make the browser send it (a
/// top-level navigation carries the session cookie). Fetch Metadata says where a request
/// comes from; clients that send none (API tools) are not browsers.
fn refuse_cross_site(headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return Err(AppError::new(
            crate::error::ErrorCode::Csrf,
            "This request came from another site and was refused.",
        ));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/voices/preview",
    tag = "voices",
    summary = "Hear a voice: a short sample spoken as narration would be (WAV)",
    params(
        ("voice" = String, Query, min_length = 1, max_length = 100, description = "A voice id from `GET /api/voices`."),
        ("language" = Option<String>, Query, max_length = 100, description = "The language to speak (offline voices follow it); the content's, or the admin's default."),
        ("speed" = Option<f64>, Query, minimum = 0.25, maximum = 4.0, description = "0.25–4.0; the admin's default when left out."),
        ("content_id" = Option<i64>, Query, minimum = 1, description = "Speak this content's first scene, in its language."),
        ("text" = Option<String>, Query, max_length = 300, description = "What to say, up to 300 characters; a sentence in the language when left out."),
    ),
    responses(
        (status = 200, description = "The sample, 16-bit PCM.", content_type = "audio/wav", body = Binary),
        ContentNotFound, TooManyRequests, ProviderErrors, CrossSite
    )
)]
async fn preview_voice(
    State(state): State<AppState>,
    Actor(user): Actor,
    headers: axum::http::HeaderMap,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, AppError> {
    refuse_cross_site(&headers)?;
    let params = QueryParams::new(&raw, &["voice", "language", "speed", "content_id", "text"])?;
    let request = voices::PreviewRequest {
        voice: params.get("voice").unwrap_or_default().to_owned(),
        language: params.get("language").map(str::to_owned),
        speed: params.number("speed", limits::SPEED_MIN..=limits::SPEED_MAX)?,
        content_id: params.number("content_id", 1..=i64::MAX)?,
        text: params.get("text").map(str::to_owned),
    };
    let sample = voices::preview(&state, &user, request).await?;
    // `Cache-Control: no-store` comes with every API answer (`security::headers`).
    Ok((
        [(axum::http::header::CONTENT_TYPE, "audio/wav")],
        sample.wav,
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/api/contents/{id}/voice",
    tag = "voices",
    summary = "Set a content's voice and speed (narration made afterwards uses them)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    request_body = VoiceUpdate,
    responses((status = 200, description = "The content with its voice and speed.", body = Data<ContentDetail>))
)]
async fn put_voice(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<VoiceUpdate>,
) -> ApiResult<ContentDetail> {
    ok(voices::set(&state, &user, id_param(&id)?, req).await?)
}

#[utoipa::path(
    put,
    path = "/api/contents/{id}/scenes/{scene_id}/clip",
    tag = "contents",
    summary = "Change how a scene's clip plays (the next render uses it)",
    params(
        ("id" = i64, Path, minimum = 1, description = "The content's id."),
        ("scene_id" = i64, Path, minimum = 1, description = "The scene's id."),
    ),
    request_body = ClipUpdate,
    responses((status = 200, description = "The content with the scene's clip as it now plays.", body = Data<ContentDetail>))
)]
async fn put_clip(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path((id, scene_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<ClipUpdate>,
) -> ApiResult<ContentDetail> {
    let ids = (id_param(&id)?, scene_param(&scene_id)?);
    ok(clips::set_clip_options(&state, &user, ids, req).await?)
}

#[utoipa::path(
    put,
    path = "/api/contents/{id}/transition",
    tag = "contents",
    summary = "Set how a content's scenes give way to each other (the next render draws it)",
    params(("id" = i64, Path, minimum = 1, description = "The content's id.")),
    request_body = TransitionUpdate,
    responses((status = 200, description = "The content with its transition; its video is out of date until rendered again.", body = Data<ContentDetail>))
)]
async fn put_transition(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TransitionUpdate>,
) -> ApiResult<ContentDetail> {
    ok(contents::set_transition(&state, &user, id_param(&id)?, req.transition).await?)
}

#[utoipa::path(
    put,
    path = "/api/contents/{id}/scenes/{scene_id}/visual",
    tag = "contents",
    summary = "Use your own picture (up to 20 MiB) or video clip (up to 200 MiB) for a scene; the body is the file",
    params(
        ("id" = i64, Path, minimum = 1, description = "The content's id."),
        ("scene_id" = i64, Path, minimum = 1, description = "The scene's id."),
        ("fit" = Option<String>, Query, description = "`crop` (fill the frame, the default) or `pad` (the whole picture or clip, black bars)."),
        ("when_shorter" = Option<String>, Query, description = "Clips only: `loop` (the default) or `freeze` (hold the last frame) when the scene outlasts the clip."),
        ("sound" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Clips only: the clip's own sound under the narration, in percent; 0 (the default) drops it."),
    ),
    request_body(description = "A PNG, JPEG or WebP picture, an MP4, QuickTime or WebM clip (its first 120 s are kept), `{\"url\"}` naming either on the web, or `{\"stock\"}` with a stock search result's `pick`.", content((Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/webp"), (Binary = "video/mp4"), (Binary = "video/quicktime"), (Binary = "video/webm"), (VisualUrl = "application/json"))),
    responses((status = 200, description = "The content, the scene showing the picture or clip.", body = Data<ContentDetail>), QuotaExceeded)
)]
async fn put_visual(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path((id, scene_id)): Path<(String, String)>,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<ContentDetail> {
    let (id, scene_id) = (id_param(&id)?, scene_param(&scene_id)?);
    let params = QueryParams::new(&raw, &["fit", "when_shorter", "sound"])?;
    let fit = match params.get("fit") {
        None | Some("crop") => media::Fit::Crop,
        Some("pad") => media::Fit::Pad,
        Some(other) => {
            return Err(AppError::validation(
                "fit",
                format!("fit is crop or pad (got {other:?})"),
            ))
        }
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let when_shorter = match params.get("when_shorter") {
        None => WhenShorter::Loop,
        Some(w) => WhenShorter::parse(w).ok_or_else(|| {
            AppError::validation(
                "when_shorter",
                format!("when_shorter is loop or freeze (got {w:?})"),
            )
        })?,
    };
    let options = clips::ClipOptions {
        fit,
        when_shorter,
        sound: params.number("sound", 0..=100)?.unwrap_or(0),
    };
    if is_json(&headers) {
        let (_, bytes) = file_body(&headers, body, limits::BODY_MAX_BYTES, "request body").await?;
        // Parsed once; which of the two forms it is decides the shape it must have.
        let not_json = |what: &str, e: serde_json::Error| {
            AppError::new(
                crate::error::ErrorCode::InvalidJson,
                format!("The body is not a {what} object: {e}"),
            )
        };
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| not_json("{\"url\"} or {\"stock\"}", e))?;
        if body.get("stock").is_some() {
            let req: StockPick =
                serde_json::from_value(body).map_err(|e| not_json("{\"stock\"}", e))?;
            return ok(stock::use_pick(&state, &user, (id, scene_id), &req.stock, options).await?);
        }
        let req: VisualUrl =
            serde_json::from_value(body).map_err(|e| not_json("{\"url\"} or {\"stock\"}", e))?;
        return ok(clips::save_scene_visual_from_url(
            &state,
            &user,
            (id, scene_id),
            &req.url,
            options,
        )
        .await?);
    }
    if clips::is_clip(content_type) {
        use futures::StreamExt as _;
        let stream = body
            .into_data_stream()
            .map(|chunk| chunk.map_err(clips::BodyError::of_upload));
        return ok(clips::save_scene_clip(
            &state,
            &user,
            (id, scene_id),
            content_type,
            options,
            stream,
        )
        .await?);
    }
    if !media::top_type_is(content_type, "image") {
        // Another's content is 404 whatever is sent, as everywhere.
        contents::get(&state, &user, id).await?;
        return Err(AppError::new(
            crate::error::ErrorCode::UnsupportedMediaType,
            format!(
                "Send a picture (image/png, image/jpeg or image/webp), a video clip (video/mp4, video/quicktime or video/webm), or {{\"url\"}} as application/json (got {})",
                content_type.unwrap_or("no Content-Type")
            ),
        ));
    }
    let (content_type, bytes) =
        file_body(&headers, body, limits::PICTURE_MAX_BYTES, "picture").await?;
    ok(
        media::save_scene_picture(&state, &user, id, scene_id, content_type, fit, &bytes, None)
            .await?,
    )
}

#[utoipa::path(
    delete,
    path = "/api/contents/{id}/scenes/{scene_id}/visual",
    tag = "contents",
    summary = "Drop a scene's picture or clip (the next Generate images makes a picture)",
    params(
        ("id" = i64, Path, minimum = 1, description = "The content's id."),
        ("scene_id" = i64, Path, minimum = 1, description = "The scene's id."),
    ),
    responses((status = 200, description = "The content, the scene without a picture.", body = Data<ContentDetail>))
)]
async fn delete_visual(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path((id, scene_id)): Path<(String, String)>,
) -> ApiResult<ContentDetail> {
    let (id, scene_id) = (id_param(&id)?, scene_param(&scene_id)?);
    ok(media::remove_scene_picture(&state, &user, id, scene_id).await?)
}

#[utoipa::path(
    get,
    path = "/api/contents/{id}/scenes/{scene_id}/footage",
    tag = "contents",
    summary = "Search Pexels or Pixabay for stock photos or clips for a scene",
    params(
        ("id" = i64, Path, minimum = 1, description = "The content's id."),
        ("scene_id" = i64, Path, minimum = 1, description = "The scene's id."),
        ("q" = Option<String>, Query, max_length = 100, description = "What to look for; some words of the scene's visual prompt when left out."),
        ("kind" = Option<String>, Query, description = "`videos` (the default) or `photos`."),
        ("provider" = Option<String>, Query, description = "`pexels` or `pixabay`; the first with a key in Settings when left out."),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 66, description = "From 1; 15 results a page; Pixabay serves 33 pages (its first 500 results)."),
    ),
    responses(
        (status = 200, description = "One page of results in the content's orientation, each with its author and a `pick` token.", body = Data<StockResults>),
        ContentNotFound, TooManyRequests, ProviderErrors, CrossSite
    )
)]
async fn search_footage(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path((id, scene_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<StockResults> {
    let (id, scene_id) = (id_param(&id)?, scene_param(&scene_id)?);
    refuse_cross_site(&headers)?;
    let params = QueryParams::new(&raw, &["q", "kind", "provider", "page"])?;
    let kind = match params.get("kind") {
        None => StockKind::default(),
        Some(k) => StockKind::parse(k).ok_or_else(|| {
            AppError::validation("kind", format!("kind is videos or photos (got {k:?})"))
        })?,
    };
    let provider = match params.get("provider") {
        None => None,
        Some(p) => Some(StockProvider::parse(p).ok_or_else(|| {
            AppError::validation(
                "provider",
                format!("provider is pexels or pixabay (got {p:?})"),
            )
        })?),
    };
    let asked = stock::Asked {
        query: params.get("q").map(str::to_owned),
        kind,
        provider,
        page: params.number("page", 1..=66)?.unwrap_or(1),
    };
    ok(stock::search_for_scene(&state, &user, (id, scene_id), asked).await?)
}

#[utoipa::path(
    get,
    path = "/api/stock/preview",
    tag = "contents",
    summary = "A stock search result's preview picture, passed through this server",
    params(("pick" = String, Query, description = "A result's `pick` token.")),
    responses(
        (status = 200, description = "The library's preview picture.", content_type = "image/jpeg", body = Binary),
        ProviderErrors, CrossSite
    )
)]
async fn stock_preview(
    State(state): State<AppState>,
    Actor(_user): Actor,
    headers: axum::http::HeaderMap,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, AppError> {
    refuse_cross_site(&headers)?;
    let params = QueryParams::new(&raw, &["pick"])?;
    let token = params
        .get("pick")
        .ok_or_else(|| AppError::validation("pick", "pick is required"))?;
    let (content_type, bytes) = stock::preview(&state, token).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response())
}

#[utoipa::path(
    post,
    path = "/api/footage/find",
    tag = "jobs",
    summary = "Find stock footage for a content's scenes (a background job)",
    request_body = FootageRequest,
    responses((status = 202, description = "The job was queued; poll `GET /api/jobs/{id}`.", body = Data<JobView>), TooManyRequests, ContentNotFound, QuotaExceeded)
)]
async fn find_footage(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<FootageRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(jobs::create_footage(&state, &user, req).await?))
}

fn scene_param(raw: &str) -> Result<i64, AppError> {
    id_param(raw).map_err(|_| {
        AppError::validation(
            "scene_id",
            format!("scene_id must be a positive integer (got {raw:?})"),
        )
    })
}
