//! What the app agrees to fetch from a provider: image URLs the provider returns lead only
//! to public addresses (the admin's own base-URL origin excepted, redirects checked again),
//! and every answer body is read under a cap, cut off there, and failed at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::Endpoint;

use crate::both_databases;
use crate::helpers::{content_with_scenes, start_job, use_provider, Db, TestApp};

both_databases!(
    image_urls_to_private_addresses_are_refused,
    image_url_redirects_are_checked_again,
    endless_image_answers_are_cut_off_at_the_cap,
    endless_speech_answers_are_cut_off_at_the_cap,
    endless_script_answers_are_cut_off_at_the_cap,
);

/// 100 MB: twice every cap.
const HUGE: u64 = 100_000_000;

/// Generous for a failure that should take a second, far below any timeout or backoff.
const QUICKLY: Duration = Duration::from_secs(30);

/// Runs a job (`path`: media or narration) over a new one-scene content, with workers
/// already running; its only task once the job has ended, and how long that took.
async fn one_task(app: &TestApp, path: &str) -> (Value, Duration) {
    let content = content_with_scenes(app, "A lighthouse on a cliff at dusk.", 1).await;
    let started = Instant::now();
    let job = start_job(app, path, &content).await;
    let detail = app.wait_for_job(job).await;
    let tasks = detail["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{detail}");
    (tasks[0].clone(), started.elapsed())
}

/// Failed on its first attempt, quickly, saying `expected`.
fn assert_refused(task: &Value, took: Duration, expected: &str) {
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["attempt"], 1,
        "a permanent error is not retried: {task}"
    );
    let error = task["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(expected), "{expected:?} in {error:?}");
    assert!(took < QUICKLY, "failed only after {took:?}");
}

async fn image_urls_to_private_addresses_are_refused(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let port = app.fake.addr.port();
    // The admin's base URL is local, and that is fine; the image URL the provider answers
    // with is the same server under another name, 127.0.0.1, and that is not.
    use_provider(&app, |v| {
        v.llm_base_url = format!("http://localhost:{port}/v1");
    })
    .await;
    app.fake.set_image_url_prefix(Some(app.fake.files_url()));
    app.start_workers();
    let (task, took) = one_task(&app, "/api/media/generate").await;
    assert_refused(
        &task,
        took,
        "the provider's image URL points at a private address (127.0.0.1, loopback); refused",
    );
    assert_eq!(app.fake.successes_to(Endpoint::Images), 1, "it answered");
    assert_eq!(app.fake.file_requests(), 0, "its URL was never fetched");

    // With the base URL on 127.0.0.1, other ways to reach a private address.
    use_provider(&app, |_| {}).await;
    for (prefix, expected) in [
        (
            format!("http://localhost:{port}/files/"),
            "loopback); refused",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/files/"),
            "(::ffff:127.0.0.1, loopback); refused",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "(169.254.169.254, link-local); refused",
        ),
        (
            "http://10.20.30.40/".to_owned(),
            "(10.20.30.40, private); refused",
        ),
        (
            "http://0.0.0.0:80/".to_owned(),
            "(0.0.0.0, unspecified); refused",
        ),
        (
            "file:///etc/passwd#".to_owned(),
            "is a file: URL, not http or https; refused",
        ),
    ] {
        app.fake.set_image_url_prefix(Some(prefix.clone()));
        let (task, took) = one_task(&app, "/api/media/generate").await;
        assert_refused(&task, took, expected);
    }
    assert_eq!(app.fake.file_requests(), 0);
}

async fn image_url_redirects_are_checked_again(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    // A URL on the base URL's own origin is as trusted as the base URL: fetched.
    app.fake.set_image_url_prefix(Some(app.fake.files_url()));
    let (task, _) = one_task(&app, "/api/media/generate").await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(app.fake.file_requests(), 1);

    // But where it redirects is checked like any URL from outside.
    let target = format!("localhost:{}", app.fake.addr.port());
    app.fake
        .set_image_url_prefix(Some(app.fake.redirecting_files_url(&target)));
    let (task, took) = one_task(&app, "/api/media/generate").await;
    assert_refused(&task, took, "loopback); refused");
    assert_eq!(
        app.fake.file_requests(),
        2,
        "the redirect was asked for, its target never"
    );
}

/// The fake saw its huge answers cut off: the app hung up before their end, after at most
/// its cap and what the sockets buffer (a few MB on loopback).
async fn assert_cut_off(app: &TestApp, answers: usize) {
    tokio::time::timeout(QUICKLY, app.fake.wait_for_huge_cut_off(answers))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {answers} huge answers cut off",
                app.fake.huge_answers_cut_off()
            )
        });
    let sent = app.fake.huge_bytes_sent();
    assert!(
        sent < answers as u64 * HUGE,
        "{sent} bytes of {answers} huge answers were sent"
    );
}

async fn endless_image_answers_are_cut_off_at_the_cap(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    // The Images API's own answer: base64 that does not end.
    app.fake.set_huge_answer(Endpoint::Images, Some(HUGE));
    let (task, took) = one_task(&app, "/api/media/generate").await;
    assert_refused(
        &task,
        took,
        "the provider's image answer is larger than 67.7 MiB, the most CREVID accepts; refused",
    );
    assert_cut_off(&app, 1).await;

    // The file behind the URL it answers with.
    app.fake.set_huge_answer(Endpoint::Images, None);
    app.fake.set_image_url_prefix(Some(app.fake.files_url()));
    app.fake.set_huge_files(Some(HUGE));
    let (task, took) = one_task(&app, "/api/media/generate").await;
    assert_refused(
        &task,
        took,
        "the provider's image is larger than 50 MiB, the most CREVID accepts; refused",
    );
    assert_cut_off(&app, 2).await;
    assert_eq!(app.fake.file_requests(), 1);
}

async fn endless_speech_answers_are_cut_off_at_the_cap(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    app.fake.set_huge_answer(Endpoint::Speech, Some(HUGE));
    let (task, took) = one_task(&app, "/api/tts/generate").await;
    assert_refused(
        &task,
        took,
        "the provider's speech answer is larger than 50 MiB, the most CREVID accepts; refused",
    );
    assert_cut_off(&app, 1).await;
    assert_eq!(app.fake.requests_to(Endpoint::Speech), 1);
}

async fn endless_script_answers_are_cut_off_at_the_cap(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_huge_answer(Endpoint::Chat, Some(HUGE));
    let started = Instant::now();
    let (status, body) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "topic", "input": "lighthouses" }),
        )
        .await;
    assert!(started.elapsed() < QUICKLY, "{:?}", started.elapsed());
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_malformed", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("The provider's chat answer is larger than 10 MiB"),
        "{message}"
    );
    assert_eq!(
        app.fake.requests_to(Endpoint::Chat),
        1,
        "no repair attempt for an answer that was never read"
    );
    assert_cut_off(&app, 1).await;
}
