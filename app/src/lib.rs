//! The CREVID app: pages and components (compiled for the server and the browser),
//! server functions, and — behind the `ssr` feature — everything the server runs.

#![recursion_limit = "256"]

pub mod api;
mod components;
pub mod error;
pub mod model;
mod pages;
#[cfg(feature = "ssr")]
pub mod ssr;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{path, SsrMode};

use pages::{
    ContentPage, GeneratePage, JobsPage, LibraryPage, LoginPage, NotFound, SettingsPage, SetupPage,
    StatusPage, TokensPage, UsersPage, WebhooksPage,
};

use crate::model::{Role, UserView};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    // The page's CSP allows exactly this render's inline hydration script, by its nonce.
    #[cfg(feature = "ssr")]
    if let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        use_context::<leptos_axum::ResponseOptions>(),
    ) {
        let state = use_context::<ssr::state::AppState>();
        let media_origin = state.as_ref().and_then(|s| s.storage.redirect_origin());
        let csp = ssr::security::page_csp(
            nonce.as_inner(),
            options.env == leptos::config::Env::DEV,
            media_origin,
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&csp) {
            response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, value);
        }
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HashedStylesheet options=options.clone() id="leptos"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser, after hydration: the marker tells browser tests
    // (and anyone debugging) that the page is interactive.
    Effect::new(|_| {
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });
    let me = Resource::new(|| (), |_| api::me());
    view! {
        <Title formatter=|page: String| if page.is_empty() { "CREVID".to_owned() } else { format!("{page} · CREVID") }/>
        <Router>
            <header class="topbar">
                <A href="/" attr:class="brand">"CREVID"</A>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move { view! { <Nav user=me.await.ok().flatten()/> } })}
                </Suspense>
            </header>
            <main class="page">
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/") view=GeneratePage/>
                    <Route path=path!("/library") view=LibraryPage/>
                    <Route path=path!("/jobs") view=JobsPage/>
                    // Rendered whole before answering, so a missing (or someone else's)
                    // content answers 404 rather than a streamed 200.
                    <Route path=path!("/contents/:id") view=ContentPage ssr=SsrMode::Async/>
                    <Route path=path!("/settings") view=SettingsPage/>
                    <Route path=path!("/status") view=StatusPage/>
                    <Route path=path!("/users") view=UsersPage/>
                    <Route path=path!("/tokens") view=TokensPage/>
                    <Route path=path!("/webhooks") view=WebhooksPage/>
                    <Route path=path!("/login") view=LoginPage/>
                    <Route path=path!("/setup") view=SetupPage/>
                </Routes>
            </main>
        </Router>
    }
}

/// The navigation for the signed-in user: admins also see Settings, Status and Users.
#[component]
fn Nav(user: Option<UserView>) -> impl IntoView {
    let Some(user) = user else {
        return view! { <nav></nav> }.into_any();
    };
    let admin = user.role == Role::Admin;
    let sign_out = Action::new(|_: &()| api::sign_out());
    Effect::new(move |_| {
        if let Some(Ok(())) = sign_out.value().get() {
            let _ = window().location().set_href("/login");
        }
    });
    view! {
        <nav>
            <A href="/" exact=true>"Generate"</A>
            <A href="/library">"Library"</A>
            <A href="/jobs">"Jobs"</A>
            <A href="/tokens">"API tokens"</A>
            <A href="/webhooks">"Webhooks"</A>
            {admin.then(|| view! {
                <A href="/settings">"Settings"</A>
                <A href="/status">"Status"</A>
                <A href="/users">"Users"</A>
            })}
        </nav>
        <div class="account">
            <span class="muted" data-testid="signed-in-as">{user.email}</span>
            <button type="button" on:click=move |_| { sign_out.dispatch(()); }>"Sign out"</button>
        </div>
    }
    .into_any()
}
