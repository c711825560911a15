//! `GET /metrics`: Prometheus's text format for an admin's token, read back with the
//! Prometheus project's own parser (`prometheus_client`, from PyPI into `target/pytools`
//! by `scripts/setup.sh --test`; `metrics_parse.py`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::both_databases;
use crate::helpers::{content_with_scenes, pytool, start_job, use_provider, Db, TestApp, Who};

both_databases!(metrics_count_requests_tasks_providers_and_the_queue);

/// What the parser made of a scrape: `families` (name → type, help) and `samples`.
pub struct Scrape(Value);

/// The admin's scrape, parsed; None (said once) when the parser is not installed, which
/// under `CI=true` is a failure.
pub async fn scrape(app: &TestApp) -> Option<Scrape> {
    let python = pytool("python")?;
    let response = app
        .client_for(Who::Admin)
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let mut parser = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/metrics_parse.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Scrape(serde_json::from_slice(&out.stdout).unwrap()))
}

impl Scrape {
    /// The value of the sample named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
    }

    fn family_type(&self, name: &str) -> Option<&str> {
        self.0["families"][name]["type"].as_str()
    }

    fn samples(&self) -> &Vec<Value> {
        self.0["samples"].as_array().unwrap()
    }
}

async fn metrics_count_requests_tasks_providers_and_the_queue(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    // Only an admin reads them.
    let (anonymous, _) = app
        .call(Who::Anonymous, reqwest::Method::GET, "/metrics", None)
        .await;
    assert_eq!(anonymous, 401);
    let (creator, _) = app
        .call(Who::CreatorA, reqwest::Method::GET, "/metrics", None)
        .await;
    assert_eq!(creator, 403);

    use_provider(&app, |_| {}).await;
    let content = content_with_scenes(&app, "One scene here. And a second one.", 2).await;
    let job = start_job(&app, "/api/media/generate", &content).await;
    // Queued and not yet claimed: the queue shows it.
    let Some(before) = scrape(&app).await else {
        return;
    };
    assert_eq!(
        before.value(
            "crevid_queue_depth",
            &[("kind", "scene.image"), ("status", "queued")]
        ),
        Some(2.0)
    );
    app.start_workers();
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let (status, _) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(status, 200);
    // Narration, a render and a script from the language model, for their metrics.
    let narration = start_job(&app, "/api/tts/generate", &content).await;
    let detail = app.wait_for_job(narration).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let (status, render) = app
        .post(
            &format!("/api/contents/{}/render", content["id"]),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202, "{render}");
    let render = render["data"]["id"].as_i64().unwrap();
    let detail = app.wait_for_job(render).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let (status, script) = app
        .post(
            "/api/content/generate",
            &serde_json::json!({ "mode": "topic", "input": "Why the sky is blue" }),
        )
        .await;
    assert_eq!(status, 200, "{script}");

    let after = scrape(&app).await.unwrap();
    assert_eq!(after.family_type("crevid_tasks"), Some("counter"));
    assert_eq!(
        after.value(
            "crevid_tasks_total",
            &[("kind", "scene.image"), ("outcome", "succeeded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        after.family_type("crevid_task_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(
        after.value(
            "crevid_task_duration_seconds_count",
            &[("kind", "scene.image"), ("outcome", "succeeded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        after.value(
            "crevid_provider_requests_total",
            &[
                ("capability", "images"),
                ("model", "fake-image-model"),
                ("outcome", "ok")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        after.value(
            "crevid_provider_requests_total",
            &[("capability", "script"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        after.value(
            "crevid_provider_requests_total",
            &[("capability", "speech"), ("outcome", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        after.value("crevid_render_realtime_factor_count", &[]),
        Some(1.0)
    );
    assert!(
        after.value("crevid_render_realtime_factor_sum", &[]) > Some(0.0),
        "{:?}",
        after.samples()
    );
    for status in ["queued", "running"] {
        assert_eq!(
            after.value(
                "crevid_queue_depth",
                &[("kind", "scene.image"), ("status", status)]
            ),
            Some(0.0)
        );
    }
    // Requests count under their route pattern, not their path.
    let job_reads = after.value(
        "crevid_http_requests_total",
        &[
            ("route", "/api/jobs/{id}"),
            ("method", "GET"),
            ("status", "200"),
        ],
    );
    assert!(job_reads >= Some(1.0), "{:?}", after.samples());
    assert_eq!(
        after.value(
            "crevid_http_requests_total",
            &[("route", "/metrics"), ("status", "403")]
        ),
        Some(1.0)
    );
    assert!(
        !after.samples().iter().any(|s| s["labels"]["route"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("/{job}")))),
        "an id made a series of its own"
    );
}
