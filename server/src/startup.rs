//! Builds the application from a `Config`: database, migrations, secrets, router; binds
//! the listener (port 0 in tests) and serves until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use app::error::{AppError, ErrorCode};
use app::model::limits::BODY_MAX_BYTES;
use app::ssr::crypto::SecretBox;
use app::ssr::db::Database;
use app::ssr::state::AppState;
use app::{shell, App};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::config::{Env, LeptosOptions};
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

/// Opens the database and applies the migrations; `crevid migrate` stops here.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let db = Database::connect(&config.database_url).await?;
    db.migrate().await?;
    Ok(db)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = open_database(&config).await?;
        let secrets = SecretBox::load(config.secret_key.as_deref(), &config.data_dir)?;
        let listener = TcpListener::bind(config.site_addr)
            .await
            .with_context(|| format!("cannot listen on LEPTOS_SITE_ADDR={}", config.site_addr))?;
        let addr = listener.local_addr()?;
        let leptos_options = LeptosOptions::builder()
            .output_name(config.output_name.clone())
            .site_root(config.site_root.display().to_string())
            .site_pkg_dir(config.site_pkg_dir.clone())
            .env(if config.production {
                Env::PROD
            } else {
                Env::DEV
            })
            .site_addr(addr)
            .reload_port(config.reload_port)
            .build();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("crevid/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let state = AppState {
            leptos_options,
            db,
            http,
            secrets: Arc::new(secrets),
            data_dir: Arc::new(config.data_dir),
        };
        Ok(Self {
            router: router(state.clone()),
            listener,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown_signal())
            .await
    }
}

pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let app_shell = {
        let options = state.leptos_options.clone();
        move || shell(options.clone())
    };
    Router::new()
        .merge(app::ssr::rest::router())
        .leptos_routes_with_context(&state, routes, context.clone(), app_shell)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, shell))
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .layer(RequestBodyLimitLayer::new(BODY_MAX_BYTES))
        .layer(middleware::from_fn(reject_oversized))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Answers a declared oversized body with the API's JSON error before anything reads it;
/// bodies without a length are cut off by `RequestBodyLimitLayer` as they stream.
async fn reject_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > BODY_MAX_BYTES) {
        return AppError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The request body is larger than {} KiB",
                BODY_MAX_BYTES / 1024
            ),
        )
        .into_response();
    }
    next.run(request).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
