//! Server functions: three-line adapters from the browser to `ssr` services. They share
//! the REST API's services, validation and errors.

use leptos::prelude::*;
use server_fn::codec::Json;

use crate::error::AppError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::ssr::{contents, script, settings, state::app_state, status};

#[server(prefix = "/_sfn", input = Json)]
pub async fn generate_script(req: GenerateRequest) -> Result<GeneratedScript, AppError> {
    script::generate(&app_state()?, req).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn save_content(req: SaveContentRequest) -> Result<ContentDetail, AppError> {
    contents::save(&app_state()?, req).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn list_contents(query: ListQuery) -> Result<ContentPage, AppError> {
    contents::list(&app_state()?, query).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn get_content(id: i64) -> Result<ContentDetail, AppError> {
    contents::get(&app_state()?, id).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_content(id: i64, req: UpdateContentRequest) -> Result<ContentDetail, AppError> {
    contents::update(&app_state()?, id, req).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn delete_content(id: i64) -> Result<(), AppError> {
    contents::delete(&app_state()?, id).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn get_settings() -> Result<SettingsView, AppError> {
    settings::view(&app_state()?).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn update_settings(update: SettingsUpdate) -> Result<SettingsView, AppError> {
    settings::update(&app_state()?, update).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn reset_settings() -> Result<SettingsView, AppError> {
    settings::reset(&app_state()?).await
}

#[server(prefix = "/_sfn", input = Json)]
pub async fn system_status() -> Result<StatusReport, AppError> {
    status::report(&app_state()?).await
}
