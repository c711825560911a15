//! What the benchmarks share: the release `crevid` binary started on a fresh data
//! directory, an admin's bearer token, percentiles and the server's /proc figures.

#![allow(dead_code)] // Each bench uses its own part of this module.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "benchmark password";
pub const API_KEY: &str = "sk-bench-0123456789abcdef";

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    percentile(&sorted, 0.5)
}

pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The highest resident set size of a process, and of it with its children (ffmpeg,
/// espeak-ng) together, sampled every 20 ms from /proc between `start` and `stop`; KiB.
pub struct RssPeaks {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<(u64, u64)>,
}

impl RssPeaks {
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let (mut alone, mut with_children) = (0, 0);
            loop {
                let own = proc_status(pid, "VmRSS:").unwrap_or_default();
                alone = alone.max(own);
                with_children = with_children.max(own + children_rss(pid));
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return (alone, with_children);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Self { stop, sampler }
    }

    /// (the process alone, the process and its children), in KiB.
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.sampler.join().unwrap_or_default()
    }
}

/// The summed RSS of `pid`'s direct children, in KiB.
fn children_rss(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // The parent's pid is the second field after the parenthesised name.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .map(|child| proc_status(child, "VmRSS:").unwrap_or_default())
        .sum()
}

/// User + system CPU time of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Sends the admin's bearer token with every request.
    pub client: reqwest::Client,
    /// RSS when the server had just started listening, before any request.
    pub rss_at_start_kib: u64,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `crevid serve` on SQLite in a temp dir, with `env` on top, and signs in.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_crevid"));
        command
            .arg("serve")
            .env("CREVID_DATA_DIR", dir.path())
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("LEPTOS_SITE_ROOT", dir.path())
            .env("RUST_LOG", "warn,crevid=info")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start crevid");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let start = line.find("http://")?;
                Some(line[start..].split_whitespace().next()?.to_owned())
            })
            .expect("crevid printed its address");
        let rss_at_start_kib = proc_status(child.id(), "VmRSS:").unwrap_or_default();
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let client = signed_in(&base).await;
        Self {
            child,
            base,
            client,
            rss_at_start_kib,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {json}");
        json
    }

    /// Settings over the defaults, with the bench's provider key.
    pub async fn configure(&self, values: Value) {
        self.send(
            reqwest::Method::PUT,
            "/api/settings",
            Some(json!({ "values": values, "llm_api_key": API_KEY })),
        )
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in once for a personal token; every measured request carries it, as an API
/// client would (and passes authentication, CSRF and rate limiting like any other).
async fn signed_in(base: &str) -> reqwest::Client {
    let session = reqwest::Client::new()
        .post(format!("{base}/api/auth/sign-in"))
        .header("origin", base)
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
    let token: Value = reqwest::Client::new()
        .post(format!("{base}/api/tokens"))
        .header("origin", base)
        .header("cookie", cookie)
        .json(&json!({ "name": "bench" }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let secret = token["data"]["secret"].as_str().expect("token secret");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client")
}

/// CREVID in this process (no HTTP needed, workers off): its state, an admin, and the
/// given settings with `api_key`.
pub async fn in_process(
    database_url: &str,
    data_dir: &std::path::Path,
    values: app::model::SettingsValues,
    api_key: Option<&str>,
) -> (app::ssr::state::AppState, app::ssr::auth::CurrentUser) {
    let vars = [
        ("LEPTOS_SITE_ADDR", "127.0.0.1:0".to_owned()),
        ("CREVID_DATA_DIR", data_dir.display().to_string()),
        ("LEPTOS_SITE_ROOT", data_dir.display().to_string()),
        ("DATABASE_URL", database_url.to_owned()),
        ("CREVID_EMBEDDED_WORKERS", "false".to_owned()),
    ];
    let config = crevid_server::config::Config::load(&move |key| {
        vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    })
    .expect("config");
    let application = crevid_server::startup::Application::build(config)
        .await
        .expect("app");
    let state = application.state().clone();
    let role = app::model::Role::Admin;
    let view = app::ssr::users::create(
        &state,
        app::model::CreateUserRequest {
            email: EMAIL.into(),
            password: PASSWORD.into(),
            role,
        },
    )
    .await
    .expect("user");
    app::ssr::settings::update(
        &state,
        app::model::SettingsUpdate {
            values: values.to_update_map(),
            llm_api_key: api_key.map(str::to_owned),
            ..Default::default()
        },
    )
    .await
    .expect("settings");
    let user = app::ssr::auth::CurrentUser {
        id: view.id,
        email: view.email,
        role,
    };
    (state, user)
}

/// A saved content of `scenes` scenes, split from `script` offline.
pub async fn saved_content(
    state: &app::ssr::state::AppState,
    user: &app::ssr::auth::CurrentUser,
    script: String,
    scenes: usize,
    aspect_ratio: &str,
) -> app::model::ContentDetail {
    let generated = app::ssr::script::generate(
        state,
        user,
        app::model::GenerateRequest {
            mode: app::model::Mode::Script,
            input: script.clone(),
            presets: app::model::PresetsInput {
                scene_count: Some(scenes as u32),
                aspect_ratio: Some(aspect_ratio.into()),
                ..Default::default()
            },
        },
    )
    .await
    .expect("split");
    app::ssr::contents::save(
        state,
        user,
        app::model::SaveContentRequest {
            mode: app::model::Mode::Script,
            input: script,
            script: generated,
        },
    )
    .await
    .expect("save")
}
