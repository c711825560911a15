//! Benchmark comparator: the CREVID work unit run through apalis (SQLite or Postgres storage).
//!
//! `crevid-apalis-bench --database-url <url> --tasks N --concurrency C [--fake-url URL]`
//! prints one JSON line on stdout; everything else goes to stderr.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use apalis::prelude::*;
use apalis_sql::postgres::{PgListen, PostgresStorage};
use apalis_sql::sqlite::SqliteStorage;
use apalis_sql::Config;
use clap::Parser;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(Parser)]
struct Args {
    /// `sqlite://path/to/file.db` or `postgres://…` (a fresh database)
    #[arg(long)]
    database_url: String,
    #[arg(long)]
    tasks: usize,
    #[arg(long)]
    concurrency: usize,
    /// Base URL of an OpenAI-compatible provider, e.g. http://127.0.0.1:PORT/v1; empty = no HTTP call
    #[arg(long, default_value = "")]
    fake_url: String,
    /// apalis storage poll interval (apalis default: 100 ms)
    #[arg(long, default_value_t = 100)]
    poll_interval_ms: u64,
    /// Jobs apalis fetches per poll (apalis default: 10)
    #[arg(long, default_value_t = 10)]
    buffer_size: usize,
    /// Enqueue this many jobs per second, evenly (latency under a steady load); 0 = as
    /// fast as possible (throughput)
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[derive(Serialize)]
struct Report {
    queue: &'static str,
    tasks: usize,
    seconds: f64,
    per_second: f64,
    latency_ms: Latency,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
    enqueued_at_us: i64,
}

struct Shared {
    http: reqwest::Client,
    speech_url: Option<String>,
    tasks: usize,
    /// (n, enqueued_at_us, started_at_us) for every handler start, retries included.
    starts: Mutex<Vec<(u64, i64, i64)>>,
    /// Successful handler completions and the instant of the latest one.
    finished: Mutex<(usize, Option<Instant>)>,
    all_done: tokio::sync::Notify,
    worker_started: tokio::sync::Notify,
    rate: f64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn run_job(job: Job, shared: Data<Arc<Shared>>) -> Result<(), Error> {
    let started = now_us();
    shared
        .starts
        .lock()
        .unwrap()
        .push((job.n, job.enqueued_at_us, started));
    if let Some(url) = &shared.speech_url {
        if let Err(e) = speak(&shared.http, url, job.n).await {
            eprintln!("job {}: {e:#}", job.n);
            return Err(Error::Failed(Arc::new(e.into())));
        }
    }
    let mut finished = shared.finished.lock().unwrap();
    finished.0 += 1;
    finished.1 = Some(Instant::now());
    if finished.0 == shared.tasks {
        shared.all_done.notify_one();
    }
    Ok(())
}

async fn speak(http: &reqwest::Client, url: &str, n: u64) -> Result<()> {
    let body = serde_json::json!({
        "model": "tts-1", "input": format!("job {n}"), "voice": "alloy", "response_format": "wav"
    });
    let resp = http
        .post(url)
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    resp.bytes().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.tasks == 0 || args.concurrency == 0 {
        bail!("--tasks and --concurrency must be positive");
    }
    let fake = args.fake_url.trim_end_matches('/');
    let shared = Arc::new(Shared {
        http: reqwest::Client::new(),
        speech_url: (!fake.is_empty()).then(|| format!("{fake}/audio/speech")),
        tasks: args.tasks,
        starts: Mutex::new(Vec::with_capacity(args.tasks)),
        finished: Mutex::new((0, None)),
        all_done: tokio::sync::Notify::new(),
        worker_started: tokio::sync::Notify::new(),
        rate: args.rate,
    });
    let worker = || {
        WorkerBuilder::new("crevid-bench")
            .concurrency(args.concurrency)
            .data(shared.clone())
    };

    let config = Config::new(std::any::type_name::<Job>())
        .set_poll_interval(Duration::from_millis(args.poll_interval_ms))
        .set_buffer_size(args.buffer_size);
    let url = args.database_url.as_str();
    let (queue, started) = if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await?;
        SqliteStorage::setup(&pool)
            .await
            .context("apalis sqlite setup")?;
        let storage: SqliteStorage<Job> = SqliteStorage::new_with_config(pool, config);
        let monitor = Monitor::new().register(worker().backend(storage.clone()).build_fn(run_job));
        let started = run(monitor, storage, &shared).await?;
        ("apalis-sqlite", started)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = PgPoolOptions::new().connect(url).await?;
        PostgresStorage::setup(&pool)
            .await
            .context("apalis postgres setup")?;
        let mut storage: PostgresStorage<Job> =
            PostgresStorage::new_with_config(pool.clone(), config);
        // apalis' documented LISTEN/NOTIFY wake-up. In 0.7.4 it never fires: the trigger sends
        // payload 'insert', which PgListen compares with the storage namespace. So Postgres,
        // like SQLite, picks jobs up by polling (at most --buffer-size per --poll-interval-ms).
        let mut listener = PgListen::new(pool).await?;
        listener.subscribe_with(&mut storage);
        tokio::spawn(async move {
            if let Err(e) = listener.listen().await {
                eprintln!("apalis listener: {e}");
            }
        });
        let monitor = Monitor::new().register(worker().backend(storage.clone()).build_fn(run_job));
        let started = run(monitor, storage, &shared).await?;
        ("apalis-postgres", started)
    } else {
        bail!("--database-url must be sqlite:… or postgres://…");
    };

    let finished = shared
        .finished
        .lock()
        .unwrap()
        .1
        .expect("all jobs finished");
    let seconds = finished.duration_since(started).as_secs_f64();
    let mut starts = std::mem::take(&mut *shared.starts.lock().unwrap());
    // A retried job counts once, from its first start.
    starts.sort_unstable_by_key(|&(n, _, s)| (n, s));
    let total_starts = starts.len();
    starts.dedup_by_key(|&mut (n, _, _)| n);
    if total_starts != starts.len() {
        eprintln!(
            "{} handler starts were retries",
            total_starts - starts.len()
        );
    }
    let mut latencies: Vec<f64> = starts
        .iter()
        .map(|&(_, e, s)| (s - e) as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let report = Report {
        queue,
        tasks: args.tasks,
        seconds,
        per_second: args.tasks as f64 / seconds,
        latency_ms: Latency {
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
        },
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Starts the monitor, enqueues every job once its worker runs, waits for all to finish and
/// shuts the monitor down. Returns the instant just before the first enqueue.
async fn run<S>(monitor: Monitor, mut queue: S, shared: &Arc<Shared>) -> Result<Instant>
where
    S: Storage<Job = Job>,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let events = shared.clone();
    let monitor = monitor.on_event(move |e| match e.inner() {
        Event::Start => events.worker_started.notify_one(),
        Event::Error(err) => eprintln!("apalis worker error: {err}"),
        _ => {}
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(monitor.run_with_signal(async move {
        let _ = stopped.await;
        Ok(())
    }));
    shared.worker_started.notified().await;

    let started = Instant::now();
    for n in 0..shared.tasks as u64 {
        if shared.rate > 0.0 {
            tokio::time::sleep_until(
                (started + Duration::from_secs_f64(n as f64 / shared.rate)).into(),
            )
            .await;
        }
        queue
            .push(Job {
                n,
                enqueued_at_us: now_us(),
            })
            .await?;
    }
    eprintln!(
        "enqueued {} jobs in {:.3} s",
        shared.tasks,
        started.elapsed().as_secs_f64()
    );

    shared.all_done.notified().await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), monitor)
        .await
        .context("apalis workers did not stop within 30 s of the last job")???;
    Ok(started)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
