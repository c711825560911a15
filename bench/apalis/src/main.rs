//! Benchmark comparator: the CREVID work unit run through apalis 1.0, event-driven on both
//! databases, no polling:
//! - SQLite: apalis-sqlite's update-hook backend, `SqliteStorage::connect_with_callback`
//!   then `.with_callback(listener)`: every row inserted into its Jobs table wakes the worker.
//! - Postgres: apalis-postgres' LISTEN/NOTIFY backend, `PostgresStorage::with_pubsub`: the
//!   `apalis::job::insert` notification that its insert trigger sends wakes the worker.
//!
//! `crevid-apalis-bench --database-url <url> --tasks N --concurrency C [--fake-url URL]`
//! prints one JSON line on stdout; everything else goes to stderr.
//!
//! A workspace of its own (see Cargo.toml): build it with
//! `cargo build --release --locked --manifest-path bench/apalis/Cargo.toml --target-dir target`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use apalis::prelude::*;
use apalis_postgres::{PgPool, PostgresStorage, Pubsub};
use apalis_sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteStorage};
use clap::Parser;
use serde::{Deserialize, Serialize};

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
    /// Optional fallback poll, in ms, beside the event-driven wake-ups (apalis'
    /// `Strategy::interval`); 0 = none: the worker fetches only when SQLite's update hook or
    /// Postgres' NOTIFY reports an insert, or when one of its own tasks finishes
    #[arg(long, default_value_t = 0)]
    poll_interval_ms: u64,
    /// Jobs apalis fetches per query (its `Config::batch_size`; apalis default: 10)
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

async fn run_job(job: Job, shared: Data<Arc<Shared>>) -> Result<(), BoxDynError> {
    let started = now_us();
    shared
        .starts
        .lock()
        .unwrap()
        .push((job.n, job.enqueued_at_us, started));
    if let Some(url) = &shared.speech_url {
        if let Err(e) = speak(&shared.http, url, job.n).await {
            eprintln!("job {}: {e:#}", job.n);
            return Err(e.into());
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

/// Builds the worker on `$backend` (the handler, its shared state, at most `--concurrency`
/// tasks in flight) and spawns it until `$stop` fires; yields its JoinHandle.
macro_rules! spawn_worker {
    ($backend:expr, $args:expr, $shared:expr, $stop:expr) => {{
        let events = $shared.clone();
        let worker = WorkerBuilder::new("crevid-bench")
            .backend($backend)
            .concurrency($args.concurrency)
            .data($shared.clone())
            .on_event(move |_, event| match event {
                Event::Start => events.worker_started.notify_one(),
                Event::Error(err) => eprintln!("apalis worker error: {err}"),
                _ => {}
            })
            .build(run_job);
        let stop = $stop;
        tokio::spawn(worker.run_until(async move {
            let _ = stop.await;
            Ok::<(), WorkerError>(())
        }))
    }};
}

/// Opens every connection `$pool` may hold (its max_connections) before the clock starts:
/// a new Postgres connection takes ~90 ms here (sqlx 0.9), and apalis-postgres' LISTEN
/// connection, worker registration and first fetch would otherwise pay for that during the
/// first jobs, measuring start-up rather than the queue.
macro_rules! warm_pool {
    ($pool:expr) => {{
        let pool = $pool;
        let opening: Vec<_> = (0..pool.options().get_max_connections())
            .map(|_| tokio::spawn(pool.acquire()))
            .collect();
        let mut open = Vec::with_capacity(opening.len());
        for connection in opening {
            open.push(connection.await?.context("open a pool connection")?);
        }
    }};
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.tasks == 0 || args.concurrency == 0 || args.buffer_size == 0 {
        bail!("--tasks, --concurrency and --buffer-size must be positive");
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
    let queue_name = std::any::type_name::<Job>();
    let fallback =
        (args.poll_interval_ms > 0).then(|| Duration::from_millis(args.poll_interval_ms));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();

    let url = args.database_url.as_str();
    let (queue, started) = if url.starts_with("sqlite:") {
        // connect_with_callback opens its pool lazily from the URL as given, which does not
        // create a missing file: make it first.
        let create = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(create)
            .await
            .context("create the SQLite file")?
            .close()
            .await;
        // A pool whose every connection carries SQLite's update hook; the listener yields
        // once per row inserted into apalis' Jobs table.
        let (pool, listener) =
            SqliteStorage::connect_with_callback(url).context("apalis sqlite pool")?;
        SqliteStorage::setup(&pool)
            .await
            .context("apalis sqlite setup")?;
        warm_pool!(&pool);
        let config = apalis_sqlite::Config::default()
            .queue(queue_name)
            .batch_size(args.buffer_size);
        let mut storage: SqliteStorage<Job> = SqliteStorage::new(&pool).with_config(config);
        let worker = match fallback {
            None => spawn_worker!(
                storage.clone().with_callback(listener),
                args,
                shared,
                stopped
            ),
            Some(every) => spawn_worker!(
                storage
                    .clone()
                    .poll_with_strategy(Strategy::new().stream(listener).interval(every)),
                args,
                shared,
                stopped
            ),
        };
        let started = run(
            async |job| storage.push(job).await.map_err(|e| anyhow!("{e}")),
            worker,
            stop,
            &shared,
        )
        .await?;
        pool.close().await;
        ("apalis-sqlite", started)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = PgPool::connect(url).await.context("postgres")?;
        PostgresStorage::setup(&pool)
            .await
            .context("apalis postgres setup")?;
        warm_pool!(&pool);
        let config = apalis_postgres::Config::default()
            .queue(queue_name)
            .batch_size(args.buffer_size);
        let mut storage: PostgresStorage<Job> = PostgresStorage::new(&pool).with_config(config);
        let worker = match fallback {
            // A connection of its own LISTENing on `apalis::job::insert`, which apalis' insert
            // trigger notifies (at commit) with the job's queue name.
            None => spawn_worker!(storage.clone().with_pubsub(), args, shared, stopped),
            Some(every) => spawn_worker!(
                storage.clone().poll_with_strategy(
                    Strategy::new()
                        .apply(StreamStrategy::new(Pubsub::new(
                            pool.clone(),
                            queue_name.to_owned()
                        )))
                        .interval(every)
                ),
                args,
                shared,
                stopped
            ),
        };
        let started = run(
            async |job| storage.push(job).await.map_err(|e| anyhow!("{e}")),
            worker,
            stop,
            &shared,
        )
        .await?;
        pool.close().await;
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

/// Waits for the spawned worker to start, enqueues every job with `push`, waits for all to
/// finish and stops the worker. Returns the instant just before the first enqueue.
async fn run(
    mut push: impl AsyncFnMut(Job) -> Result<()>,
    mut worker: tokio::task::JoinHandle<Result<(), WorkerError>>,
    stop: tokio::sync::oneshot::Sender<()>,
    shared: &Arc<Shared>,
) -> Result<Instant> {
    tokio::select! {
        () = shared.worker_started.notified() => {}
        ended = &mut worker => bail!("apalis worker ended before it started: {:?}", ended?),
    }

    let started = Instant::now();
    for n in 0..shared.tasks as u64 {
        if shared.rate > 0.0 {
            tokio::time::sleep_until(
                (started + Duration::from_secs_f64(n as f64 / shared.rate)).into(),
            )
            .await;
        }
        push(Job {
            n,
            enqueued_at_us: now_us(),
        })
        .await
        .context("apalis push")?;
    }
    eprintln!(
        "enqueued {} jobs in {:.3} s",
        shared.tasks,
        started.elapsed().as_secs_f64()
    );

    tokio::select! {
        () = shared.all_done.notified() => {}
        ended = &mut worker => bail!("apalis worker ended before the last job: {:?}", ended?),
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .context("apalis worker did not stop within 30 s of the last job")??
        .map_err(|e| anyhow!("apalis worker: {e}"))?;
    Ok(started)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
