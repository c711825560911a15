//! The one application state: built once at start-up, handed to axum and to every server
//! function through context.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use super::crypto::SecretBox;
use super::db::Database;
use super::limits::Limits;
use crate::error::AppError;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub db: Database,
    /// Shared HTTP client (connection pool) for every outside API.
    pub http: reqwest::Client,
    pub secrets: Arc<SecretBox>,
    pub data_dir: Arc<PathBuf>,
    /// The one owner of media files: the local directory, or an object store beside it.
    pub storage: Arc<super::storage::Storage>,
    pub limits: Arc<Limits>,
    /// Set once the first account exists (it never goes back).
    pub setup_done: Arc<AtomicBool>,
    /// The one-time code `/setup` asks for while no account exists, when the server
    /// listens beyond loopback (printed in the log at start, as Jupyter prints its token).
    #[from_ref(skip)]
    pub setup_code: Option<Arc<str>>,
    /// `CREVID_PUBLIC_URL`'s origin (`https://crevid.example.com`), accepted by the CSRF
    /// check besides the request's own Host.
    pub public_origin: Option<Arc<str>>,
    /// A header set by a trusted reverse proxy whose last address is the client's
    /// (`CREVID_CLIENT_IP_HEADER`); without it the peer address is the client's.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Announces any change in the queue: new, finished or newly due tasks.
    pub work: Arc<tokio::sync::Notify>,
    /// The embedded workers' wake-ups, one per task kind.
    pub signals: Arc<super::engine::Signals>,
    /// Names this process's claims (leases) on tasks.
    pub worker_id: Arc<str>,
    pub timing: TaskTiming,
    /// `settings::for_tasks`'s copy of the settings and keys.
    pub task_settings: Arc<std::sync::Mutex<super::settings::TaskSettingsCache>>,
    /// Video segments being encoded or prepared ahead in this process.
    pub segments: Arc<super::render::SegmentWork>,
    /// Becomes true when the server is asked to stop (SIGTERM, Ctrl-C): workers stop
    /// claiming, and running tasks get `TaskTiming::shutdown_grace` to finish.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// espeak-ng's library, for narration with word timings (see `espeak`).
    pub espeak: Arc<super::espeak::Espeak>,
    /// What each OpenAI-compatible server turned out to accept (see `openai::Learned`).
    pub learned: Arc<super::openai::Learned>,
    /// Set when tasks reach workers through QStash instead of the embedded workers.
    pub qstash: Option<Arc<super::qstash::QStash>>,
    /// This process's counters and histograms, served at `/metrics`.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Clip conversions under way in this process, bounded (see `clips::Conversions`).
    pub conversions: Arc<super::clips::Conversions>,
}

#[derive(Debug, Clone, Copy)]
pub struct TaskTiming {
    /// How long a claim lasts without a heartbeat.
    pub lease_ms: i64,
    /// The first retry's delay without a `Retry-After`.
    pub retry_base_ms: u64,
    /// How long running tasks may go on after a stop is asked for; what is still running
    /// then is stopped and put back in the queue without spending an attempt.
    pub shutdown_grace: std::time::Duration,
}

impl AppState {
    /// Resolves once the server has been asked to stop.
    pub async fn shutting_down(&self) {
        let mut stop = self.shutdown.subscribe();
        let _ = stop.wait_for(|stop| *stop).await;
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

impl AppState {
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.db.pool
    }
}

/// The state inside a server function. It is provided by the router for every request,
/// so its absence is a wiring bug, reported as an internal error rather than a panic.
pub fn app_state() -> Result<AppState, AppError> {
    leptos::prelude::use_context::<AppState>().ok_or_else(|| {
        tracing::error!("AppState missing from the server-function context");
        AppError::internal()
    })
}
