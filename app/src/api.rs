//! Server functions: thin adapters from the browser to `ssr` services. Each takes the
//! caller first (`require_user`/`require_admin`), then calls the same service the REST API
//! does; errors carry their HTTP status.

use leptos::prelude::*;
use server_fn::codec::Json;

use crate::error::AppError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::ssr::auth::{current_user, require_admin, require_user, respond, session};
#[cfg(feature = "ssr")]
use crate::ssr::{
    contents, jobs, script, settings, state::app_state, status, stock, tokens, users, voices,
    webhooks,
};

#[cfg(feature = "ssr")]
fn caller_ip(state: &crate::ssr::state::AppState) -> Option<std::net::IpAddr> {
    use_context::<axum::http::request::Parts>()
        .and_then(|p| crate::ssr::auth::client_ip(&p, state.client_ip_header.as_ref()))
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn me() -> Result<Option<UserView>, AppError> {
    respond(
        async {
            match current_user() {
                Some(user) => Ok(Some(users::get(&app_state()?, user.id).await?)),
                None => Ok(None),
            }
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn setup_admin(req: SetupRequest) -> Result<UserView, AppError> {
    respond(
        async {
            let state = app_state()?;
            users::setup_first_admin(&state, &session().await?, caller_ip(&state), req).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn sign_in(req: SignInRequest) -> Result<UserView, AppError> {
    respond(
        async {
            let state = app_state()?;
            let ip = caller_ip(&state);
            users::sign_in(&state, &session().await?, ip, req).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn sign_out() -> Result<(), AppError> {
    respond(async { users::sign_out(&session().await?).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn generate_script(req: GenerateRequest) -> Result<GeneratedScript, AppError> {
    respond(async { script::generate(&app_state()?, &require_user()?, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn save_content(req: SaveContentRequest) -> Result<ContentDetail, AppError> {
    respond(async { contents::save(&app_state()?, &require_user()?, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_contents(query: ListQuery) -> Result<ContentPage, AppError> {
    respond(async { contents::list(&app_state()?, &require_user()?, query).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn get_content(id: i64) -> Result<ContentDetail, AppError> {
    respond(async { contents::get(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_content(id: i64, req: UpdateContentRequest) -> Result<ContentDetail, AppError> {
    respond(async { contents::update(&app_state()?, &require_user()?, id, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_voices(language: Option<String>) -> Result<VoiceList, AppError> {
    respond(
        async {
            require_user()?;
            voices::list(&app_state()?, language.as_deref()).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn set_voice(id: i64, req: VoiceUpdate) -> Result<ContentDetail, AppError> {
    respond(async { voices::set(&app_state()?, &require_user()?, id, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn set_transition(id: i64, transition: Transition) -> Result<ContentDetail, AppError> {
    respond(
        async { contents::set_transition(&app_state()?, &require_user()?, id, transition).await }
            .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn set_clip_options(
    id: i64,
    scene_id: i64,
    update: ClipUpdate,
) -> Result<ContentDetail, AppError> {
    respond(
        async {
            crate::ssr::clips::set_clip_options(
                &app_state()?,
                &require_user()?,
                (id, scene_id),
                update,
            )
            .await
        }
        .await,
    )
}

/// The stock libraries creators can search (those with a key in Settings).
#[server(prefix = "/_sfn", input = Json)]
pub async fn stock_sources() -> Result<Vec<StockProvider>, AppError> {
    respond(
        async {
            require_user()?;
            let (values, keys) = settings::for_tasks(&app_state()?).await?;
            Ok(stock::configured(&values, &keys))
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn search_footage(
    id: i64,
    scene_id: i64,
    query: Option<String>,
    kind: StockKind,
    provider: Option<StockProvider>,
    page: u32,
) -> Result<StockResults, AppError> {
    respond(
        async {
            let asked = stock::Asked {
                query,
                kind,
                provider,
                page,
            };
            stock::search_for_scene(&app_state()?, &require_user()?, (id, scene_id), asked).await
        }
        .await,
    )
}

/// A stock result made the scene's visual: cropped to the frame, a clip looped and silent
/// (`set_clip_options` changes that).
#[server(prefix = "/_sfn", input = Json)]
pub async fn pick_footage(id: i64, scene_id: i64, pick: String) -> Result<ContentDetail, AppError> {
    respond(
        async {
            let (state, user) = (app_state()?, require_user()?);
            stock::use_pick(&state, &user, (id, scene_id), &pick, stock::PICKED).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn find_footage(req: FootageRequest) -> Result<JobView, AppError> {
    respond(async { jobs::create_footage(&app_state()?, &require_user()?, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn delete_content(id: i64) -> Result<(), AppError> {
    respond(async { contents::delete(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn start_job(kind: JobKind, req: MediaRequest) -> Result<JobView, AppError> {
    respond(async { jobs::create(&app_state()?, &require_user()?, kind, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn start_render(content_id: i64) -> Result<JobView, AppError> {
    respond(async { jobs::create_render(&app_state()?, &require_user()?, content_id).await }.await)
}

/// The latest jobs of one content, with their tasks: what the content page polls.
#[server(prefix = "/_sfn", input = Json)]
pub async fn content_jobs(content_id: i64) -> Result<Vec<JobDetail>, AppError> {
    respond(
        async {
            let (state, user) = (app_state()?, require_user()?);
            contents::get(&state, &user, content_id).await?;
            let filter = JobFilter {
                content_id: Some(content_id),
                ..JobFilter::default()
            };
            jobs::list_details(&state, &user, &filter, 4).await
        }
        .await,
    )
}

/// The jobs page: the caller's latest jobs with their tasks (everyone's for an admin).
#[server(prefix = "/_sfn", input = Json)]
pub async fn list_jobs(filter: JobFilter) -> Result<Vec<JobDetail>, AppError> {
    respond(async { jobs::list_details(&app_state()?, &require_user()?, &filter, 30).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn cancel_job(id: i64) -> Result<JobDetail, AppError> {
    respond(async { jobs::cancel(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn retry_job(id: i64) -> Result<JobDetail, AppError> {
    respond(async { jobs::retry_failed(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_tokens() -> Result<Vec<TokenView>, AppError> {
    respond(async { tokens::list(&app_state()?, &require_user()?).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn create_token(req: CreateTokenRequest) -> Result<CreatedToken, AppError> {
    respond(async { tokens::create(&app_state()?, &require_user()?, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn revoke_token(id: i64) -> Result<(), AppError> {
    respond(async { tokens::revoke(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_webhooks() -> Result<Vec<WebhookEndpointView>, AppError> {
    respond(async { webhooks::list(&app_state()?, &require_user()?).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn create_webhook(req: CreateWebhookRequest) -> Result<WebhookWithSecret, AppError> {
    respond(async { webhooks::create(&app_state()?, &require_user()?, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_webhook(
    id: i64,
    req: UpdateWebhookRequest,
) -> Result<WebhookEndpointView, AppError> {
    respond(async { webhooks::update(&app_state()?, &require_user()?, id, req).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn delete_webhook(id: i64) -> Result<(), AppError> {
    respond(async { webhooks::delete(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn rotate_webhook_secret(id: i64) -> Result<WebhookWithSecret, AppError> {
    respond(async { webhooks::rotate_secret(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn webhook_deliveries(id: i64) -> Result<Vec<WebhookDeliveryView>, AppError> {
    respond(async { webhooks::deliveries(&app_state()?, &require_user()?, id).await }.await)
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn redeliver_webhook(id: i64, delivery_id: i64) -> Result<WebhookDeliveryView, AppError> {
    respond(
        async { webhooks::redeliver(&app_state()?, &require_user()?, id, delivery_id).await }.await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn get_settings() -> Result<SettingsView, AppError> {
    respond(
        async {
            require_admin()?;
            settings::view(&app_state()?).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_settings(update: SettingsUpdate) -> Result<SettingsView, AppError> {
    respond(
        async {
            require_admin()?;
            settings::update(&app_state()?, update).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn reset_settings() -> Result<SettingsView, AppError> {
    respond(
        async {
            require_admin()?;
            settings::reset(&app_state()?).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn system_status() -> Result<StatusReport, AppError> {
    respond(
        async {
            require_admin()?;
            status::report(&app_state()?).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_users() -> Result<Vec<UserView>, AppError> {
    respond(
        async {
            require_admin()?;
            users::list(&app_state()?).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn create_user(req: CreateUserRequest) -> Result<UserView, AppError> {
    respond(
        async {
            require_admin()?;
            users::create(&app_state()?, req).await
        }
        .await,
    )
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_user(id: i64, req: UpdateUserRequest) -> Result<UserView, AppError> {
    respond(async { users::update(&app_state()?, &require_admin()?, id, req).await }.await)
}

/// Who may call each server function; the access-matrix test requires every registered
/// server function to be listed here and checks the rule against the real answer.
#[cfg(feature = "ssr")]
pub fn server_fn_rules() -> Vec<(&'static str, crate::ssr::security::Access)> {
    use crate::ssr::security::Access::*;
    use server_fn::ServerFn;
    vec![
        (<Me as ServerFn>::PATH, Public),
        (<SetupAdmin as ServerFn>::PATH, Public),
        (<SignIn as ServerFn>::PATH, Public),
        (<SignOut as ServerFn>::PATH, Public),
        (<GenerateScript as ServerFn>::PATH, User),
        (<SaveContent as ServerFn>::PATH, User),
        (<ListContents as ServerFn>::PATH, User),
        (<GetContent as ServerFn>::PATH, User),
        (<UpdateContent as ServerFn>::PATH, User),
        (<DeleteContent as ServerFn>::PATH, User),
        (<ListVoices as ServerFn>::PATH, User),
        (<SetVoice as ServerFn>::PATH, User),
        (<SetTransition as ServerFn>::PATH, User),
        (<SetClipOptions as ServerFn>::PATH, User),
        (<StockSources as ServerFn>::PATH, User),
        (<SearchFootage as ServerFn>::PATH, User),
        (<PickFootage as ServerFn>::PATH, User),
        (<FindFootage as ServerFn>::PATH, User),
        (<StartJob as ServerFn>::PATH, User),
        (<ContentJobs as ServerFn>::PATH, User),
        (<StartRender as ServerFn>::PATH, User),
        (<ListJobs as ServerFn>::PATH, User),
        (<CancelJob as ServerFn>::PATH, User),
        (<RetryJob as ServerFn>::PATH, User),
        (<ListTokens as ServerFn>::PATH, User),
        (<CreateToken as ServerFn>::PATH, User),
        (<RevokeToken as ServerFn>::PATH, User),
        (<ListWebhooks as ServerFn>::PATH, User),
        (<CreateWebhook as ServerFn>::PATH, User),
        (<UpdateWebhook as ServerFn>::PATH, User),
        (<DeleteWebhook as ServerFn>::PATH, User),
        (<RotateWebhookSecret as ServerFn>::PATH, User),
        (<WebhookDeliveries as ServerFn>::PATH, User),
        (<RedeliverWebhook as ServerFn>::PATH, User),
        (<GetSettings as ServerFn>::PATH, Admin),
        (<UpdateSettings as ServerFn>::PATH, Admin),
        (<ResetSettings as ServerFn>::PATH, Admin),
        (<SystemStatus as ServerFn>::PATH, Admin),
        (<ListUsers as ServerFn>::PATH, Admin),
        (<CreateUser as ServerFn>::PATH, Admin),
        (<UpdateUser as ServerFn>::PATH, Admin),
    ]
}
