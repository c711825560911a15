//! Queue overhead, side by side in one run: the same work (one speech request to a
//! provider that answers at once) through CREVID's embedded queue, apalis 1.0 (same
//! database; woken by SQLite's update hook or Postgres' LISTEN/NOTIFY, not polling) and
//! graphile-worker (Postgres), 4 in flight each.
//!
//! CREVID's tasks are its real narration tasks: claim with a lease under the admin's limits,
//! read the scene and settings, decrypt the key, call the provider through async-openai,
//! store the WAV as an asset and commit it to the scene, recount the job. The comparators'
//! handlers make the HTTP call only; their queues do the rest.
//!
//! Needs `target/release/crevid-apalis-bench` and `node_modules` (scripts/bench.sh builds
//! both) and, for the Postgres half, a server at CREVID_TEST_POSTGRES_URL.

use std::process::Command;
use std::time::{Duration, Instant};

use app::model::{JobKind, MediaRequest, SettingsValues};
use app::ssr::auth::CurrentUser;
use serde_json::Value;

mod support;
use support::percentile;

const TASKS: usize = 2_000;
const CONCURRENCY: u32 = 4;
const SCENES_PER_CONTENT: usize = 20;
/// The latency run: this many one-task jobs, enqueued evenly at `RATE` per second.
const LATENCY_TASKS: usize = 300;
const RATE: f64 = 50.0;

/// Throughput from a run enqueued all at once; latency from a run at a steady `RATE`.
struct Figures {
    name: String,
    per_second: f64,
    p50: f64,
    p99: f64,
}

fn print(f: &Figures) {
    println!(
        "  {:<20} {:>8.1} tasks/s   enqueue→start at {RATE}/s: p50 {:>7.1} ms   p99 {:>7.1} ms",
        f.name, f.per_second, f.p50, f.p99
    );
}

fn postgres_admin() -> String {
    std::env::var("CREVID_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh Postgres database; dropped by `drop_database`.
async fn create_database(name: &str) -> Option<String> {
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&postgres_admin()).await.ok()?;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .ok()?;
    let mut url = url::Url::parse(&postgres_admin()).ok()?;
    url.set_path(name);
    Some(url.to_string())
}

async fn drop_database(name: &str) {
    if let Ok(admin) = sqlx::AnyPool::connect(&postgres_admin()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
}

/// CREVID in this process on `database_url`: its real narration tasks, 4 in flight.
async fn crevid(name: &str, database_url: &str, data_dir: &std::path::Path, fake: &str) -> Figures {
    let values = SettingsValues {
        llm_base_url: fake.to_owned(),
        tts_provider: "openai".into(),
        tts_concurrency: CONCURRENCY,
        rate_jobs_per_minute: 10_000,
        rate_generate_per_minute: 10_000,
        ..SettingsValues::default()
    };
    let (state, user) =
        support::in_process(database_url, data_dir, values, Some(support::API_KEY)).await;
    // Contents first (not timed): 20 scenes each, for the throughput run's 2000 tasks and
    // the latency run's one-scene jobs.
    let mut contents = Vec::new();
    for c in 0..(TASKS + LATENCY_TASKS).div_ceil(SCENES_PER_CONTENT) {
        let script: String = (1..=SCENES_PER_CONTENT)
            .map(|i| format!("Content {c} line {i}."))
            .collect::<Vec<_>>()
            .join(" ");
        contents
            .push(support::saved_content(&state, &user, script, SCENES_PER_CONTENT, "9:16").await);
    }
    let (whole, single) = contents.split_at(TASKS / SCENES_PER_CONTENT);
    let workers = app::ssr::engine::spawn_workers(state.clone());

    // Throughput: every job enqueued as fast as it can be, the workers already running.
    let throughput = run(
        &state,
        &user,
        whole.iter().map(|c| (c.id, None)).collect(),
        0.0,
    )
    .await;
    // Latency: one-scene jobs at a steady rate, as creators clicking Regenerate would.
    let scenes = single
        .iter()
        .flat_map(|c| c.scenes.iter().map(move |s| (c.id, Some(vec![s.id]))))
        .take(LATENCY_TASKS)
        .collect();
    let latency = run(&state, &user, scenes, RATE).await;
    workers.iter().for_each(|w| w.abort());
    state.pool().close().await;
    Figures {
        name: name.into(),
        per_second: throughput.0,
        p50: latency.1,
        p99: latency.2,
    }
}

/// Enqueues the jobs (at `rate` per second, or at once when 0), waits until all their
/// tasks succeeded; returns tasks per second and the enqueue→start p50 and p99 in ms.
async fn run(
    state: &app::ssr::state::AppState,
    user: &CurrentUser,
    jobs: Vec<(i64, Option<Vec<i64>>)>,
    rate: f64,
) -> (f64, f64, f64) {
    let started = Instant::now();
    let t0 = app::ssr::db::now_ms();
    let mut expected = 0;
    for (n, (content_id, scene_ids)) in jobs.into_iter().enumerate() {
        if rate > 0.0 {
            tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into())
                .await;
        }
        let job = app::ssr::jobs::create(
            state,
            user,
            JobKind::Tts,
            MediaRequest {
                content_id,
                scene_ids,
                render_after: false,
            },
        )
        .await
        .expect("enqueue");
        expected += job.total_tasks;
    }
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE status = 'succeeded' AND created_at >= $1",
        )
        .bind(t0)
        .fetch_one(state.pool())
        .await
        .expect("count");
        if done >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT created_at, started_at, finished_at FROM tasks WHERE created_at >= $1",
    )
    .bind(t0)
    .fetch_all(state.pool())
    .await
    .expect("tasks");
    let last = rows.iter().map(|r| r.2).max().unwrap_or(t0);
    let mut latency: Vec<f64> = rows.iter().map(|r| (r.1 - r.0) as f64).collect();
    latency.sort_by(|a, b| a.total_cmp(b));
    // The last commit's own timestamp, not the poll that saw it.
    let seconds = ((last - t0) as f64 / 1000.0).min(wall);
    (
        expected as f64 / seconds,
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
    )
}

/// One JSON report from a comparator: (tasks per second, p50, p99).
fn report(name: &str, mut command: Command) -> Option<(f64, f64, f64)> {
    let output = command.output().ok()?;
    if !output.status.success() {
        eprintln!(
            "{name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
        return None;
    }
    let report: Value = serde_json::from_slice(output.stdout.trim_ascii()).ok()?;
    Some((
        report["per_second"].as_f64()?,
        report["latency_ms"]["p50"].as_f64()?,
        report["latency_ms"]["p99"].as_f64()?,
    ))
}

/// A comparator's throughput run and latency run: the same work as CREVID's.
fn comparator(name: &str, command: impl Fn(usize, f64) -> Command) -> Option<Figures> {
    // The fake provider runs on this runtime: waiting for the comparator must not hold a
    // worker thread (and the fake's tasks queued on it) hostage.
    let (throughput, latency) = tokio::task::block_in_place(|| {
        Some((
            report(name, command(TASKS, 0.0))?,
            report(name, command(LATENCY_TASKS, RATE))?,
        ))
    })?;
    Some(Figures {
        name: name.into(),
        per_second: throughput.0,
        p50: latency.1,
        p99: latency.2,
    })
}

/// `--database-url` gets a fresh database from `database_url` for every run.
/// The flags both comparators take: the same work as CREVID's run.
fn comparator_args(database_url: &str, tasks: usize, rate: f64, fake: &str) -> Vec<String> {
    [
        "--database-url",
        database_url,
        "--tasks",
        &tasks.to_string(),
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--fake-url",
        fake,
        "--rate",
        &rate.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn apalis(name: &str, database_url: impl Fn() -> String, fake: &str) -> Option<Figures> {
    let binary = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/release/crevid-apalis-bench"
    );
    comparator(name, |tasks, rate| {
        let mut command = Command::new(binary);
        command.args(comparator_args(&database_url(), tasks, rate, fake));
        command
    })
}

fn graphile(database_url: impl Fn() -> String, fake: &str) -> Option<Figures> {
    comparator("graphile-worker", |tasks, rate| {
        let mut node = Command::new("node");
        node.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .arg("bench/graphile/bench.mjs")
            .args(comparator_args(&database_url(), tasks, rate, fake));
        node
    })
}

fn ratio(ours: &Figures, theirs: &Option<Figures>) {
    if let Some(theirs) = theirs {
        println!(
            "  CREVID vs {}: {:.2}x the throughput; enqueue→start p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms",
            theirs.name,
            ours.per_second / theirs.per_second,
            ours.p50,
            theirs.p50,
            ours.p99,
            theirs.p99
        );
    }
}

fn fresh_sqlite(dir: &std::path::Path, name: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("sqlite://{}", dir.join(format!("{name}-{n}.db")).display())
}

/// A fresh Postgres database per call, made on a thread of its own: the comparators'
/// commands are built outside the async runtime's reach.
fn fresh_postgres(name: &'static str) -> impl Fn() -> String {
    move || {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(create_database(name))
                .expect("database")
        })
        .join()
        .expect("thread")
    }
}

#[tokio::main]
async fn main() {
    let fake = testkit::FakeOpenAi::start().await;
    let fake_url = fake.base_url();
    println!(
        "queue overhead: {CONCURRENCY} in flight, a provider that answers at once; throughput over {TASKS} tasks \
         enqueued at once, latency over {LATENCY_TASKS} one-task jobs enqueued at {RATE}/s"
    );

    println!("SQLite (a file each):");
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = crevid(
        "CREVID (SQLite)",
        &fresh_sqlite(dir.path(), "crevid"),
        dir.path(),
        &fake_url,
    )
    .await;
    print(&ours);
    let theirs = apalis(
        "apalis (SQLite)",
        || fresh_sqlite(dir.path(), "apalis"),
        &fake_url,
    );
    theirs.iter().for_each(print);
    ratio(&ours, &theirs);

    let Some(crevid_db) = create_database("crevid_bench_queue").await else {
        println!("Postgres: no server at {}; skipped", postgres_admin());
        return;
    };
    println!("Postgres (a database each, same server):");
    let pg_dir = tempfile::tempdir().expect("temp dir");
    let ours = crevid("CREVID (Postgres)", &crevid_db, pg_dir.path(), &fake_url).await;
    print(&ours);
    drop_database("crevid_bench_queue").await;
    let theirs = apalis(
        "apalis (Postgres)",
        fresh_postgres("crevid_bench_apalis"),
        &fake_url,
    );
    theirs.iter().for_each(print);
    drop_database("crevid_bench_apalis").await;
    ratio(&ours, &theirs);
    let theirs = graphile(fresh_postgres("crevid_bench_graphile"), &fake_url);
    theirs.iter().for_each(print);
    drop_database("crevid_bench_graphile").await;
    ratio(&ours, &theirs);
}
