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
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

use pages::{ContentPage, GeneratePage, LibraryPage, NotFound, SettingsPage, StatusPage};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
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
    view! {
        <Stylesheet id="leptos" href="/pkg/crevid.css"/>
        <Title formatter=|page: String| if page.is_empty() { "CREVID".to_owned() } else { format!("{page} · CREVID") }/>
        <Router>
            <header class="topbar">
                <A href="/" attr:class="brand">"CREVID"</A>
                <nav>
                    <A href="/" exact=true>"Generate"</A>
                    <A href="/library">"Library"</A>
                    <A href="/settings">"Settings"</A>
                    <A href="/status">"Status"</A>
                </nav>
            </header>
            <main class="page">
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/") view=GeneratePage/>
                    <Route path=path!("/library") view=LibraryPage/>
                    <Route path=path!("/contents/:id") view=ContentPage/>
                    <Route path=path!("/settings") view=SettingsPage/>
                    <Route path=path!("/status") view=StatusPage/>
                </Routes>
            </main>
        </Router>
    }
}
