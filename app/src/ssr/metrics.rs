//! Metrics in Prometheus's text format (exposition format 0.0.4) at `GET /metrics`, for an
//! admin's token: HTTP requests by route, tasks by kind and outcome, providers' latency and
//! errors, the render's realtime factor, and, read from the database when scraped, queue
//! depth and age per kind and the QStash outbox's depth.
//!
//! The `metrics` crate's recorder is kept in `AppState`, not installed globally: several
//! apps in one process (the tests) each count their own.

use std::time::Duration;

use metrics::{Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use super::db::now_ms;
use super::error::DbResultExt;
use super::state::AppState;
use crate::error::AppError;

/// Histogram buckets for latencies, in seconds: from a fast page to a long render.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets for the render's realtime factor (video seconds per wall-clock second).
const FACTORS: [f64; 10] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0];

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// This process's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What became of one run of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Succeeded,
    /// Failed for now; queued again.
    Retried,
    Failed,
    Cancelled,
}

impl TaskOutcome {
    fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Succeeded => "succeeded",
            TaskOutcome::Retried => "retried",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Cancelled => "cancelled",
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // Buckets only fail to apply when empty; these never are.
        let builder = builder
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &SECONDS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "crevid_render_realtime_factor".into(),
                    ),
                    &FACTORS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        for (name, help) in [
            (
                "crevid_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
            ),
            (
                "crevid_http_request_duration_seconds",
                "Time to answer an HTTP request, by route pattern and method.",
            ),
            (
                "crevid_tasks_total",
                "Task runs finished, by kind and outcome (succeeded, retried, failed, cancelled).",
            ),
            (
                "crevid_task_duration_seconds",
                "Time one run of a task took, by kind and outcome.",
            ),
            (
                "crevid_provider_requests_total",
                "Calls to a provider, by capability, model and outcome (ok, error).",
            ),
            (
                "crevid_provider_duration_seconds",
                "Time a provider took to answer, by capability and model.",
            ),
            (
                "crevid_render_realtime_factor",
                "Seconds of video made per second of rendering.",
            ),
            (
                "crevid_render_frames_encoded_total",
                "Video frames the render encoded, by piece: scene (a scene's segment, with the ends a transition draws from) or join (a transition).",
            ),
            (
                "crevid_queue_depth",
                "Tasks queued or running, by kind and status (read when scraped).",
            ),
            (
                "crevid_queue_oldest_due_age_seconds",
                "How long the oldest due, unclaimed task of a kind has waited (read when scraped).",
            ),
            (
                "crevid_outbox_depth",
                "Tasks waiting to be published to QStash (read when scraped).",
            ),
        ] {
            recorder.describe_counter(name.into(), None, help.into());
        }
        Self { recorder }
    }

    /// One answered HTTP request; `route` is the router's pattern (`/api/jobs/{id}`), not the
    /// path, so ids do not make a series each.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.recorder
            .register_counter(
                &key(
                    "crevid_http_requests_total",
                    &[("route", route), ("method", method), ("status", &status)],
                ),
                &METADATA,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &key(
                    "crevid_http_request_duration_seconds",
                    &[("route", route), ("method", method)],
                ),
                &METADATA,
            )
            .record(took.as_secs_f64());
    }

    /// One run of a task of `kind` that ended as `outcome` after `took`.
    pub fn task(&self, kind: &str, outcome: TaskOutcome, took: Duration) {
        let labels = [("kind", kind), ("outcome", outcome.as_str())];
        self.recorder
            .register_counter(&key("crevid_tasks_total", &labels), &METADATA)
            .increment(1);
        self.recorder
            .register_histogram(&key("crevid_task_duration_seconds", &labels), &METADATA)
            .record(took.as_secs_f64());
    }

    /// One call to a provider: `capability` (`script`, `images`, `speech`), the model
    /// asked, whether it answered usefully (`ok`) or not (`error`, retries included), and
    /// how long it took.
    pub fn provider(&self, capability: &str, model: &str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.recorder
            .register_counter(
                &key(
                    "crevid_provider_requests_total",
                    &[
                        ("capability", capability),
                        ("model", model),
                        ("outcome", outcome),
                    ],
                ),
                &METADATA,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &key(
                    "crevid_provider_duration_seconds",
                    &[("capability", capability), ("model", model)],
                ),
                &METADATA,
            )
            .record(took.as_secs_f64());
    }

    /// A finished render: `video` of video made in `took`.
    pub fn render(&self, video: Duration, took: Duration) {
        if took.is_zero() {
            return;
        }
        self.recorder
            .register_histogram(&key("crevid_render_realtime_factor", &[]), &METADATA)
            .record(video.as_secs_f64() / took.as_secs_f64());
    }

    /// `frames` video frames encoded for a `piece` of a video ("scene" or "join"): a
    /// re-render shows here how little it encoded again.
    pub fn render_frames(&self, piece: &'static str, frames: u32) {
        self.recorder
            .register_counter(
                &key("crevid_render_frames_encoded_total", &[("piece", piece)]),
                &METADATA,
            )
            .increment(u64::from(frames));
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }
}

/// The page Prometheus scrapes: the gauges read from the database now, then everything.
pub async fn scrape(state: &AppState) -> Result<String, AppError> {
    let now = now_ms();
    let depth: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, status, COUNT(*) FROM tasks WHERE status IN ('queued', 'running') GROUP BY kind, status",
    )
    .fetch_all(state.pool())
    .await
    .db("counting the queue")?;
    let oldest: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT kind, MIN(run_at) FROM tasks WHERE status = 'queued' AND run_at <= $1 GROUP BY kind",
    )
    .bind(now)
    .fetch_all(state.pool())
    .await
    .db("reading the queue's oldest task")?;
    let metrics = &state.metrics;
    // Every kind, so that an empty queue reads 0 rather than vanishing.
    for kind in super::engine::KINDS {
        for status in ["queued", "running"] {
            let n = depth
                .iter()
                .find(|(k, s, _)| k == kind && s == status)
                .map_or(0, |(_, _, n)| *n);
            metrics.gauge(
                "crevid_queue_depth",
                &[("kind", kind), ("status", status)],
                n as f64,
            );
        }
        let age = oldest
            .iter()
            .find(|(k, _)| k == kind)
            .and_then(|(_, at)| *at)
            .map_or(0, |at| (now - at).max(0));
        metrics.gauge(
            "crevid_queue_oldest_due_age_seconds",
            &[("kind", kind)],
            age as f64 / 1000.0,
        );
    }
    if state.qstash.is_some() {
        let outbox: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(state.pool())
                .await
                .db("counting the outbox")?;
        metrics.gauge("crevid_outbox_depth", &[], outbox as f64);
    }
    Ok(metrics.recorder.handle().render())
}
