//! Script generation overhead and idle footprint, measured side by side in one run.
//!
//! Starts the release `crevid` binary (SQLite in a temp dir) and the fake OpenAI server
//! (instant answers), then alternates two requests: the same chat completion sent straight
//! to the fake, and `POST /api/content/generate` through CREVID. The difference of the
//! medians is CREVID's own overhead (validation, settings and key reads, decryption,
//! prompt and schema building, async-openai, parsing, JSON out). Then it reads the idle
//! server's RSS and CPU time from /proc.

use std::time::{Duration, Instant};

use serde_json::json;

mod support;
use support::{cpu_ticks, percentile, proc_status, Server, API_KEY};

const ROUNDS: usize = 400;
const WARMUP: usize = 30;

fn summary(name: &str, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = percentile(&samples, 0.5);
    println!(
        "{name:<44} median {median:>7.3} ms   p95 {:>7.3} ms   min {:>7.3} ms   (n={})",
        percentile(&samples, 0.95),
        samples[0],
        samples.len()
    );
    median
}

#[tokio::main]
async fn main() {
    let fake = testkit::FakeOpenAi::start().await;
    let server = Server::start(&[]).await;
    let pid = server.pid();
    let base = server.base.clone();
    let rss_start = server.rss_at_start_kib;
    let client = server.client.clone();
    let settings = json!({
        "values": { "llm_base_url": fake.base_url(), "llm_model": "fake-script-model", "rate_generate_per_minute": 10_000 },
        "llm_api_key": API_KEY
    });
    let answer = client
        .put(format!("{base}/api/settings"))
        .json(&settings)
        .send()
        .await
        .expect("settings");
    assert!(
        answer.status().is_success(),
        "settings: {}",
        answer.text().await.unwrap_or_default()
    );

    let topic = json!({ "mode": "topic", "input": "why octopuses have three hearts", "presets": { "scene_count": 6 } });
    let script = json!({ "mode": "script", "input": "Octopuses have three hearts. Two pump blood through the gills. The third pumps it through the body. It stops when they swim. That is why they prefer to crawl. Their blood is blue, too." });
    // What CREVID sends to the provider, captured once, replayed straight at the fake.
    let first = client
        .post(format!("{base}/api/content/generate"))
        .json(&topic)
        .send()
        .await
        .expect("generate");
    assert!(
        first.status().is_success(),
        "generate: {}",
        first.text().await.unwrap_or_default()
    );
    let direct_body = fake.last_request().expect("captured request");
    let direct_url = format!("{}/chat/completions", fake.base_url());

    let time = |request: reqwest::RequestBuilder| async move {
        let started = Instant::now();
        let response = request.send().await.expect("request");
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.bytes().await.expect("body");
        started.elapsed().as_secs_f64() * 1000.0
    };
    let (mut direct, mut via_app, mut splitter) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARMUP + ROUNDS {
        let d = time(
            client
                .post(&direct_url)
                .bearer_auth(API_KEY)
                .json(&direct_body),
        )
        .await;
        let a = time(
            client
                .post(format!("{base}/api/content/generate"))
                .json(&topic),
        )
        .await;
        let s = time(
            client
                .post(format!("{base}/api/content/generate"))
                .json(&script),
        )
        .await;
        if round >= WARMUP {
            direct.push(d);
            via_app.push(a);
            splitter.push(s);
        }
    }
    println!("script generation, {ROUNDS} rounds after {WARMUP} warm-up, requests interleaved:");
    let d = summary("fake provider called directly", direct);
    let a = summary("POST /api/content/generate (topic, fake)", via_app);
    summary("POST /api/content/generate (script splitter)", splitter);
    println!("CREVID overhead on a topic generation: {:.3} ms (median difference), {:.2}x the bare provider call", a - d, a / d);

    let rss_loaded = proc_status(pid, "VmRSS:").unwrap_or_default();
    let ticks_before = cpu_ticks(pid).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks_after = cpu_ticks(pid).unwrap_or_default();
    let rss_idle = proc_status(pid, "VmRSS:").unwrap_or_default();
    println!(
        "server RSS: {:.1} MiB at start, {:.1} MiB after the run, {:.1} MiB idle; CPU while idle for 5 s: {} ticks ({:.2} %)",
        rss_start as f64 / 1024.0,
        rss_loaded as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        ticks_after - ticks_before,
        (ticks_after - ticks_before) as f64 / 5.0
    );
}
