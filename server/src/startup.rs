//! Builds the application from a `Config`: database, migrations, secrets, router; binds
//! the listener (port 0 in tests) and serves until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use app::error::{AppError, ErrorCode};
use app::model::limits::{body_max_for, MUSIC_MAX_BYTES};
use app::ssr::auth::{self, DbSessionStore};
use app::ssr::crypto::SecretBox;
use app::ssr::db::Database;
use app::ssr::limits::Limits;
use app::ssr::security;
use app::ssr::state::AppState;
use app::ssr::storage::Storage;
use app::{shell, App};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use leptos::config::{Env, LeptosOptions};
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::net::TcpListener;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::config::Config;
use crate::site::Fingerprints;

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    embedded_workers: bool,
}

/// Distinguishes two processes with the same pid on different machines.
fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos:08x}")
}

/// Opens the database and applies the migrations; `crevid migrate` stops here.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let db = Database::connect(&config.database_url).await?;
    db.migrate().await?;
    Ok(db)
}

/// Database, secrets, HTTP client and limits: everything but the listener, so commands
/// such as `crevid user create` can use the services while a server is running.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let db = open_database(config).await?;
    let secrets = SecretBox::load(config.secret_key.as_deref(), &config.data_dir)?;
    let fingerprints = Fingerprints::read(
        &config.site_root.join(&config.site_pkg_dir),
        &config.output_name,
    );
    let leptos_options = LeptosOptions::builder()
        .output_name(config.output_name.clone())
        .site_root(config.site_root.display().to_string())
        .site_pkg_dir(config.site_pkg_dir.clone())
        .env(if config.production {
            Env::PROD
        } else {
            Env::DEV
        })
        .site_addr(config.site_addr)
        .reload_port(config.reload_port)
        .hash_files(fingerprints.hash_file.is_some())
        .hash_file(fingerprints.hash_file.map_or_else(
            || "hash.txt".into(),
            |path| path.display().to_string().into(),
        ))
        .build();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("crevid/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;
    let media = config.data_dir.join("media");
    let storage = match &config.object_store {
        None => Storage::local(media),
        Some(store) => Storage::open(media, store)
            .await
            .map_err(anyhow::Error::msg)?,
    };
    Ok(AppState {
        storage: Arc::new(storage),
        leptos_options,
        db,
        http,
        secrets: Arc::new(secrets),
        data_dir: Arc::new(config.data_dir.clone()),
        limits: Arc::new(Limits::new(Duration::from_secs(config.rate_window_secs))),
        setup_done: Arc::default(),
        setup_code: None,
        client_ip_header: config.client_ip_header.clone(),
        public_origin: config
            .public_url
            .as_ref()
            .map(|u| u.origin().ascii_serialization().into()),
        work: Arc::default(),
        signals: Arc::default(),
        task_settings: Arc::default(),
        learned: Arc::default(),
        espeak: Arc::default(),
        segments: Arc::default(),
        qstash: None,
        metrics: Arc::default(),
        conversions: Arc::default(),
        shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        timing: app::ssr::state::TaskTiming {
            lease_ms: config.task_lease_ms as i64,
            retry_base_ms: config.retry_base_ms,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        },
        worker_id: format!("{}-{}", std::process::id(), rand_suffix()).into(),
    })
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut state = build_state(&config).await?;
        let listener = TcpListener::bind(config.site_addr)
            .await
            .with_context(|| format!("cannot listen on LEPTOS_SITE_ADDR={}", config.site_addr))?;
        state.leptos_options.site_addr = listener.local_addr()?;
        let local = listener.local_addr()?;
        // Reachable from other machines before anyone owns it (listening beyond loopback,
        // or behind a reverse proxy at a public URL): whoever opens /setup first would own
        // it. Only someone who can read this log may set it up.
        let reachable = !local.ip().is_loopback() || config.public_url.is_some();
        if reachable && !app::ssr::users::setup_done(&state).await? {
            let code = app::ssr::users::new_setup_code();
            let public = config
                .public_url
                .as_ref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default();
            tracing::warn!(
                "no account exists yet and CREVID can be reached from other machines \
                 ({local}{public}): open /setup and enter the set-up code {code}"
            );
            state.setup_code = Some(code.into());
        }
        if let Some(qstash) = config.qstash.clone() {
            // QStash must reach the worker routes: at the public URL, or (a local stand-in)
            // at the address this process listens on.
            let base = match &config.public_url {
                Some(url) => url.as_str().to_owned(),
                None => {
                    let addr = listener.local_addr()?;
                    tracing::warn!(%addr, "QStash is configured without CREVID_PUBLIC_URL: worker routes are published at the listening address, which only a local QStash can reach");
                    format!("http://{addr}")
                }
            };
            state.qstash = Some(Arc::new(app::ssr::qstash::QStash::new(qstash, &base)));
        }
        let secure_cookies = config
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
        Ok(Self {
            router: router(state.clone(), secure_cookies),
            listener,
            state,
            embedded_workers: config.embedded_workers,
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
        // With QStash this is the relay that publishes the outbox (any process may).
        let workers = if self.embedded_workers {
            app::ssr::engine::spawn_workers(self.state.clone())
        } else {
            Vec::new()
        };
        let swept = self.state.clone();
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                if let Err(e) = DbSessionStore::delete_expired(&swept.db.pool).await {
                    tracing::warn!(error = %e, "could not remove expired sessions");
                }
                // What a crash left between a file and its row: an hour is far longer
                // than any task takes between writing a file and recording it.
                match app::ssr::media::sweep(&swept, Duration::from_secs(3600)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "removed media files no row owns"),
                    Err(e) => tracing::warn!(error = %e.message, "sweeping media failed"),
                }
            }
        });
        // Connect info gives the sign-in throttle the peer address.
        let service = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stopping = {
            let state = self.state.clone();
            async move {
                shutdown_signal().await;
                state.shutdown.send_replace(true);
            }
        };
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(stopping)
            .await;
        sweeper.abort();
        // Embedded workers stop claiming at once and wait for their running tasks, which
        // finish or are put back in the queue when the grace period ends.
        self.state.shutdown.send_replace(true);
        let grace = self.state.timing.shutdown_grace + Duration::from_secs(35);
        for worker in workers {
            let abort = worker.abort_handle();
            if tokio::time::timeout(grace, worker).await.is_err() {
                tracing::warn!(
                    waited_secs = grace.as_secs(),
                    "a background worker did not stop in time; stopping it"
                );
                abort.abort();
            }
        }
        served
    }
}

/// The whole app. Layers run outside-in: tracing, security headers, body limits, the
/// session, who the caller is, CSRF, page access; then REST, server functions and pages.
pub fn router(state: AppState, secure_cookies: bool) -> Router {
    let routes = generate_route_list(App);
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let app_shell = {
        let options = state.leptos_options.clone();
        move || shell(options.clone())
    };
    let pkg = std::path::Path::new(&*state.leptos_options.site_root)
        .join(&*state.leptos_options.site_pkg_dir);
    let fingerprints = Fingerprints::read(&pkg, &state.leptos_options.output_name);
    Router::new()
        .nest_service(
            &format!("/{}", state.leptos_options.site_pkg_dir),
            crate::site::static_files(&pkg, &fingerprints),
        )
        .merge(app::ssr::rest::router())
        .merge(app::ssr::qstash::router())
        .leptos_routes_with_context(&state, routes, context.clone(), app_shell)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(context, shell))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard_pages,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::csrf,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(
            SessionManagerLayer::new(DbSessionStore::new(state.db.pool.clone()))
                .with_name("crevid_session")
                .with_http_only(true)
                .with_same_site(SameSite::Lax)
                .with_secure(secure_cookies)
                .with_expiry(Expiry::OnInactivity(
                    tower_sessions::cookie::time::Duration::days(7),
                )),
        )
        // Extractors may read up to the largest upload; `limit_bodies` holds each path to
        // its own limit.
        .layer(DefaultBodyLimit::max(MUSIC_MAX_BYTES))
        .layer(middleware::from_fn(limit_bodies))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::headers,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::hosts,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        // A 5xx is logged at WARN here: a "try again" 503 to QStash is expected, and a real
        // fault is logged at ERROR where it happens (`AppError` internals).
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

/// Counts each answered request under its route pattern (`MatchedPath`, which a
/// `Router::layer` middleware sees once the route is matched), so that ids in paths do not
/// make a series each; what matched no route counts as `unmatched`.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Answers a declared oversized body with the API's JSON error before anything reads it;
/// bodies without a length are cut off at the limit as they stream.
async fn limit_bodies(request: Request, next: Next) -> Response {
    let max = body_max_for(request.uri().path());
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {} KiB", max / 1024),
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let limited = axum::body::Body::new(http_body_util::Limited::new(body, max));
    next.run(Request::from_parts(parts, limited)).await
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
