//! The background pipeline against the fake provider, with latencies scaled from real ones
//! (an image in 1.5 s, a scene's speech in 0.3 s) and the admin's limit of 4 in flight
//! per kind, measured on the release binary:
//!
//! 1. A 20-scene content: images and narration started together (CREVID's fan-out), wall
//!    time against the lower bound the limits allow; then the seeds' order (images, then
//!    narration) for comparison; then the same fan-out on a second server whose tasks go
//!    through QStash (the local stand-in, real time: outbox, relay, signed deliveries,
//!    flow control), interleaved round by round.
//! 2. 500 simulated dashboards polling the content page's server function every 2 s while
//!    a job runs: latency percentiles and the server's CPU share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

mod support;
use support::{cpu_ticks, median, percentile, Server};

const SCENES: usize = 20;
const IMAGE_MS: u64 = 1_500;
const SPEECH_MS: u64 = 300;
const LIMIT: usize = 4;
const ROUNDS: usize = 3;
const DASHBOARDS: usize = 500;

async fn content(server: &Server, name: &str) -> i64 {
    let script: String = (1..=SCENES)
        .map(|i| format!("Scene {i} of the {name} story, told in a sentence."))
        .collect::<Vec<_>>()
        .join(" ");
    let generated = server
        .send(
            Method::POST,
            "/api/content/generate",
            Some(
                json!({ "mode": "script", "input": script, "presets": { "scene_count": SCENES } }),
            ),
        )
        .await;
    let saved = server
        .send(
            Method::POST,
            "/api/contents",
            Some(json!({ "mode": "script", "input": script, "script": generated["data"] })),
        )
        .await;
    saved["data"]["id"].as_i64().expect("content id")
}

async fn start(server: &Server, path: &str, content: i64) -> i64 {
    let job = server
        .send(Method::POST, path, Some(json!({ "content_id": content })))
        .await;
    job["data"]["id"].as_i64().expect("job id")
}

/// Polls until the job ends (a bench may poll; tests may not).
async fn finished(server: &Server, job: i64) {
    loop {
        let detail = server
            .send(Method::GET, &format!("/api/jobs/{job}"), None)
            .await;
        match detail["data"]["job"]["status"].as_str() {
            Some("completed") => return,
            Some("failed" | "cancelled") => panic!("job {job} ended badly: {detail}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Both kinds through the fake, 4 in flight each.
fn provider_settings(fake: &testkit::FakeOpenAi) -> Value {
    json!({
        "llm_base_url": fake.base_url(),
        "image_provider": "openai", "tts_provider": "openai",
        "image_concurrency": LIMIT, "tts_concurrency": LIMIT,
        "rate_jobs_per_minute": 10_000, "rate_generate_per_minute": 10_000,
    })
}

#[tokio::main]
async fn main() {
    let fake = testkit::FakeOpenAi::start().await;
    fake.set_image_latency(Duration::from_millis(IMAGE_MS));
    fake.set_speech_latency(Duration::from_millis(SPEECH_MS));
    let server = Server::start(&[]).await;
    server.configure(provider_settings(&fake)).await;

    let qstash = testkit::qstash::QStash::start().await;
    let qstash_env = qstash.env();
    let env: Vec<(&str, &str)> = qstash_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let via_qstash = Server::start(&env).await;
    via_qstash.configure(provider_settings(&fake)).await;

    let waves = SCENES.div_ceil(LIMIT) as f64;
    let images_bound = waves * IMAGE_MS as f64 / 1000.0;
    let speech_bound = waves * SPEECH_MS as f64 / 1000.0;
    // Images and narration run side by side, each within its own limit.
    let bound = images_bound.max(speech_bound);
    let (mut together, mut in_turn, mut through_qstash) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let id = content(&server, &format!("round {round}")).await;
        let started = Instant::now();
        let images = start(&server, "/api/media/generate", id).await;
        let narration = start(&server, "/api/tts/generate", id).await;
        finished(&server, images).await;
        finished(&server, narration).await;
        together.push(started.elapsed().as_secs_f64());

        let id = content(&server, &format!("sequential round {round}")).await;
        let started = Instant::now();
        let images = start(&server, "/api/media/generate", id).await;
        finished(&server, images).await;
        let narration = start(&server, "/api/tts/generate", id).await;
        finished(&server, narration).await;
        in_turn.push(started.elapsed().as_secs_f64());

        let id = content(&via_qstash, &format!("qstash round {round}")).await;
        let started = Instant::now();
        let images = start(&via_qstash, "/api/media/generate", id).await;
        let narration = start(&via_qstash, "/api/tts/generate", id).await;
        finished(&via_qstash, images).await;
        finished(&via_qstash, narration).await;
        through_qstash.push(started.elapsed().as_secs_f64());
    }
    let deliveries = qstash.deliveries();
    println!(
        "pipeline: {SCENES} scenes, image {IMAGE_MS} ms, speech {SPEECH_MS} ms, {LIMIT} in flight per kind, {ROUNDS} rounds"
    );
    println!("  lower bound the limits allow (images and narration in parallel): {bound:.2} s");
    let (t, s) = (median(&together), median(&in_turn));
    println!(
        "  CREVID, images and narration together: median {t:.2} s = {:.3}x the bound   (runs: {})",
        t / bound,
        fmt(&together)
    );
    println!(
        "  seeds' order, images then narration:   median {s:.2} s = {:.3}x the bound   (runs: {})",
        s / bound,
        fmt(&in_turn)
    );
    let q = median(&through_qstash);
    println!(
        "  CREVID through QStash (local stand-in): median {q:.2} s = {:.3}x the bound   (runs: {}), {:.3}x embedded; {deliveries} deliveries for {} tasks",
        q / bound,
        fmt(&through_qstash),
        q / t,
        ROUNDS * SCENES * 2
    );

    // 500 dashboards on one content page while its images are made (about 7.5 s).
    let id = content(&server, "polled").await;
    let path = <app::api::ContentJobs as server_fn::ServerFn>::PATH;
    let url = server.url(path);
    let job = start(&server, "/api/media/generate", id).await;
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (ticks_before, wall) = (cpu_ticks(server.pid()).unwrap_or_default(), Instant::now());
    let peaks = support::RssPeaks::start(server.pid());
    let mut pollers = Vec::new();
    for i in 0..DASHBOARDS {
        let (client, url) = (server.client.clone(), url.clone());
        let (running, latencies, errors) = (running.clone(), latencies.clone(), errors.clone());
        pollers.push(tokio::spawn(async move {
            // Dashboards opened at different moments: spread over the first period.
            tokio::time::sleep(Duration::from_millis((i * 2000 / DASHBOARDS) as u64)).await;
            let mut every = tokio::time::interval(Duration::from_secs(2));
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                every.tick().await;
                let started = Instant::now();
                let answer = client
                    .post(&url)
                    .json(&json!({ "content_id": id }))
                    .send()
                    .await;
                let ok = match answer {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.is_ok(),
                    _ => false,
                };
                if ok {
                    latencies
                        .lock()
                        .expect("lock")
                        .push(started.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    finished(&server, job).await;
    let seconds = wall.elapsed().as_secs_f64();
    let ticks = cpu_ticks(server.pid()).unwrap_or_default() - ticks_before;
    let (peak_kib, _) = peaks.stop();
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    for poller in pollers {
        let _ = poller.await;
    }
    let mut samples = latencies.lock().expect("lock").clone();
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "status polling: {DASHBOARDS} dashboards every 2 s for {seconds:.1} s while a {SCENES}-scene job ran: \
         {} polls, {} errors",
        samples.len(),
        errors.load(std::sync::atomic::Ordering::SeqCst)
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server CPU {:.1} % of one core ({ticks} ticks)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        ticks as f64 / seconds
    );
    println!(
        "  server peak RSS while polled: {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}

fn fmt(runs: &[f64]) -> String {
    runs.iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
