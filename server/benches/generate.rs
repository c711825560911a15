//! Script generation overhead and idle footprint, measured side by side in one run.
//!
//! Starts the release `crevid` binary (SQLite in a temp dir) and the fake OpenAI server
//! (instant answers), then alternates two requests: the same chat completion sent straight
//! to the fake, and `POST /api/content/generate` through CREVID. The difference of the
//! medians is CREVID's own overhead (validation, settings and key reads, decryption,
//! prompt and schema building, async-openai, parsing, JSON out). Then it reads the idle
//! server's RSS and CPU time from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const ROUNDS: usize = 400;
const WARMUP: usize = 30;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

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

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "benchmark password";

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = testkit::FakeOpenAi::start().await;
    let created = Command::new(env!("CARGO_BIN_EXE_crevid"))
        .args(["user", "create", "--admin", "--email", EMAIL])
        .env("CREVID_DATA_DIR", dir.path())
        .env("CREVID_PASSWORD", PASSWORD)
        .env_remove("DATABASE_URL")
        .output()
        .expect("crevid user create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut server = Command::new(env!("CARGO_BIN_EXE_crevid"))
        .arg("serve")
        .env("CREVID_DATA_DIR", dir.path())
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("LEPTOS_SITE_ROOT", dir.path())
        .env("RUST_LOG", "warn,crevid=info")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crevid");
    let pid = server.id();
    let stdout = server.stdout.take().expect("stdout");
    let base = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let start = line.find("http://")?;
            let url = &line[start..];
            Some(url.split_whitespace().next()?.to_owned())
        })
        .expect("crevid printed its address");
    let rss_start = proc_status(pid, "VmRSS:").unwrap_or_default();

    // Sign in once for a personal token; every measured request carries it, as an API
    // client would (and passes authentication, CSRF and rate limiting like any other).
    let session = reqwest::Client::new()
        .post(format!("{base}/api/auth/sign-in"))
        .header("origin", &base)
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .expect("sign in");
    let cookie = session
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/tokens"))
        .header("origin", &base)
        .header("cookie", cookie)
        .json(&json!({ "name": "bench" }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let secret = token["data"]["secret"]
        .as_str()
        .expect("token secret")
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    let settings = json!({
        "values": { "llm_base_url": fake.base_url(), "llm_model": "fake-script-model", "rate_generate_per_minute": 10_000 },
        "llm_api_key": "sk-bench-0123456789abcdef"
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
    let fake_client = reqwest::Client::new();

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
                .bearer_auth("sk-bench-0123456789abcdef")
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
    let _ = server.kill();
    let _ = server.wait();
}
