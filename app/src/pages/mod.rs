mod account;
mod content;
mod footage;
mod generate;
mod jobs;
mod library;
mod music;
mod settings;
mod status;
mod upload;
mod users;
mod voice;
mod webhooks;

pub use account::{LoginPage, SetupPage, TokensPage};
pub use content::ContentPage;
pub use generate::GeneratePage;
pub use jobs::JobsPage;
pub use library::LibraryPage;
pub use settings::SettingsPage;
pub use status::StatusPage;
pub use users::UsersPage;
pub use webhooks::WebhooksPage;

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found"/>
        <h1>"Page not found"</h1>
        <p><a href="/">"Back to Generate"</a></p>
    }
}
