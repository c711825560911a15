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
use super::security::Access;
use super::state::AppState;
use super::{contents, jobs, media, script, settings, status, tokens, users};
use crate::error::AppError;
use crate::model::*;

/// `Json` whose rejections are `AppError`s, so a malformed body answers like every other
/// error: `{error: {code, message, field}}`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

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

#[derive(Serialize)]
pub struct Data<T> {
    data: T,
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

/// Prometheus's text exposition format (0.0.4), for an admin's token.
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

async fn setup(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<UserView> {
    ok(users::setup_first_admin(&state, &session, ip, req).await?)
}

async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<UserView> {
    ok(users::sign_in(&state, &session, ip, req).await?)
}

async fn sign_out(session: Session) -> Result<StatusCode, AppError> {
    users::sign_out(&session).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(state): State<AppState>, actor: Option<Actor>) -> ApiResult<Option<UserView>> {
    ok(match actor {
        Some(Actor(user)) => Some(users::get(&state, user.id).await?),
        None => None,
    })
}

async fn generate(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<GeneratedScript> {
    ok(script::generate(&state, &user, req).await?)
}

async fn list_contents(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<ContentPage> {
    // Parsed by hand so a bad number names its parameter and a blank one (as a browser
    // form sends it) means "not given".
    let number = |name: &str| -> Result<Option<u32>, AppError> {
        match raw.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                AppError::validation(name, format!("{name} must be a whole number (got {v:?})"))
            }),
        }
    };
    let query = ListQuery {
        q: raw.get("q").cloned(),
        page: number("page")?,
        per_page: number("per_page")?,
    };
    ok(contents::list(&state, &user, query).await?)
}

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

async fn get_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<ContentDetail> {
    ok(contents::get(&state, &user, id_param(&id)?).await?)
}

async fn update_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateContentRequest>,
) -> ApiResult<ContentDetail> {
    ok(contents::update(&state, &user, id_param(&id)?, req).await?)
}

async fn delete_content(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    contents::delete(&state, &user, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(
    State(state): State<AppState>,
    Actor(user): Actor,
) -> ApiResult<Vec<TokenView>> {
    ok(tokens::list(&state, &user).await?)
}

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

async fn revoke_token(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    tokens::revoke(&state, &user, id_param(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_settings(State(state): State<AppState>, _: AdminActor) -> ApiResult<SettingsView> {
    ok(settings::view(&state).await?)
}

async fn put_settings(
    State(state): State<AppState>,
    _: AdminActor,
    ApiJson(req): ApiJson<SettingsUpdate>,
) -> ApiResult<SettingsView> {
    ok(settings::update(&state, req).await?)
}

async fn reset_settings(State(state): State<AppState>, _: AdminActor) -> ApiResult<SettingsView> {
    ok(settings::reset(&state).await?)
}

async fn get_status(State(state): State<AppState>, _: AdminActor) -> ApiResult<StatusReport> {
    ok(status::report(&state).await?)
}

async fn list_users(State(state): State<AppState>, _: AdminActor) -> ApiResult<Vec<UserView>> {
    ok(users::list(&state).await?)
}

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

async fn generate_media(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<MediaRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create(&state, &user, JobKind::Media, req).await?,
    ))
}

async fn generate_tts(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<MediaRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create(&state, &user, JobKind::Tts, req).await?,
    ))
}

async fn batch_media(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiJson(req): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<Data<JobView>>), AppError> {
    Ok(accepted(
        jobs::create_batch(&state, &user, JobKind::Media, req).await?,
    ))
}

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
async fn list_jobs(
    State(state): State<AppState>,
    Actor(user): Actor,
    ApiQuery(raw): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Vec<JobView>> {
    let param = |name: &str| raw.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let number = |name: &str, max: i64| -> Result<Option<i64>, AppError> {
        match param(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    AppError::validation(
                        name,
                        format!("{name} must be an integer from 1 to {max} (got {v:?})"),
                    )
                }),
        }
    };
    if let Some(unknown) = raw
        .keys()
        .find(|k| !["status", "kind", "content_id", "limit"].contains(&k.as_str()))
    {
        return Err(AppError::validation(
            unknown,
            format!("{unknown} is not a filter (use status, kind, content_id or limit)"),
        ));
    }
    let filter = JobFilter {
        status: param("status").map(str::to_owned),
        kind: param("kind").map(str::to_owned),
        content_id: number("content_id", i64::MAX)?,
    };
    let limit = number("limit", 500)?.unwrap_or(100);
    ok(jobs::list(&state, &user, &filter, limit).await?)
}

async fn get_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::get(&state, &user, id_param(&id)?).await?)
}

async fn retry_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::retry_failed(&state, &user, id_param(&id)?).await?)
}

async fn cancel_job(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<JobDetail> {
    ok(jobs::cancel(&state, &user, id_param(&id)?).await?)
}

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
async fn put_music(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<ContentDetail> {
    let id = id_param(&id)?;
    let bytes = axum::body::to_bytes(body, limits::MUSIC_MAX_BYTES)
        .await
        .map_err(|_| {
            AppError::new(
                crate::error::ErrorCode::PayloadTooLarge,
                format!(
                    "The music file is larger than {} MiB",
                    limits::MUSIC_MAX_BYTES / 1024 / 1024
                ),
            )
        })?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    ok(media::save_music(&state, &user, id, content_type, &bytes).await?)
}

async fn delete_music(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
) -> ApiResult<ContentDetail> {
    ok(media::remove_music(&state, &user, id_param(&id)?).await?)
}

async fn content_video(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let key = media::content_file(&state, &user, id_param(&id)?, media::ContentFile::Video).await?;
    serve(&state, key, request).await
}

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
    let service = tower_http::services::ServeFile::new(media::media_dir(state).join(key));
    let response = tower::ServiceExt::oneshot(service, request)
        .await
        .map_err(|e| super::error::internal("serving a file", e))?;
    Ok(response.map(axum::body::Body::new))
}

/// An asset's file, for its content's owner, with range requests (seeking in players).
async fn get_asset(
    State(state): State<AppState>,
    Actor(user): Actor,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let key = media::asset_file(&state, &user, id_param(&id)?).await?;
    serve(&state, key, request).await
}
