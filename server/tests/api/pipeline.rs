//! The pipeline against the fake OpenAI-compatible provider, with the embedded workers
//! running as in production: images and speech through the provider, transient and
//! permanent faults, the admin's limits, a SIGKILLed server, and two servers on one
//! Postgres. Tests wait on the engine's own announcements, never on a timer.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{Endpoint, Faults};

use crate::both_databases;
use crate::helpers::{
    content_with_scenes, spawn_binary, start_job as start, twenty_sentences, use_provider, Db,
    TestApp,
};

both_databases!(
    providers_fill_twenty_scenes,
    transient_faults_are_retried_until_every_scene_succeeds,
    a_permanent_error_fails_one_scene_and_retry_completes_it,
    limits_hold_in_flight_and_per_minute,
    a_killed_server_loses_no_task,
    batches_cover_several_contents,
    cancel_stops_tasks_waiting_to_retry,
    deleting_a_scene_recounts_its_jobs,
    speech_answers_are_measured_from_their_samples,
    a_stopped_server_spends_no_attempt,
);

fn tasks(detail: &Value) -> &Vec<Value> {
    detail["tasks"].as_array().unwrap()
}

async fn providers_fill_twenty_scenes(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.fake.set_image_latency(Duration::from_millis(20));
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let images = start(&app, "/api/media/generate", &content).await;
    let narration = start(&app, "/api/tts/generate", &content).await;
    app.start_workers();
    for id in [images, narration] {
        let detail = app.wait_for_job(id).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        assert_eq!(detail["job"]["progress"], 100);
        assert_eq!(detail["job"]["stage_message"], "All 20 scenes done");
        assert!(tasks(&detail).iter().all(|t| t["status"] == "succeeded"));
    }
    assert_eq!(app.fake.successes_to(Endpoint::Images), 20);
    assert_eq!(app.fake.successes_to(Endpoint::Speech), 20);
    // One current asset per scene per kind, measured: the 9:16 size the model family
    // offers, and the speech's length from its WAV header.
    type AssetRow = (String, i64, Option<i64>, Option<i64>, Option<i64>, String);
    let rows: Vec<AssetRow> = sqlx::query_as(
        "SELECT a.kind, a.scene_id, a.width, a.height, a.duration_ms, a.provider FROM assets a JOIN scenes s \
         ON s.image_asset_id = a.id OR s.audio_asset_id = a.id ORDER BY a.kind, a.scene_id",
    )
    .fetch_all(app.state.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 40);
    let narrations: HashMap<i64, String> = content["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap(),
                s["narration"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, scene, w, h, ms, provider) in &rows {
        if kind == "image" {
            assert_eq!((*w, *h), (Some(1024), Some(1536)));
            assert_eq!(provider, "openai:fake-image-model");
        } else {
            let expected = testkit::speech_duration(&narrations[scene], 1.0).as_millis() as i64;
            assert_eq!(*ms, Some(expected), "scene {scene}");
            assert_eq!(provider, "openai:fake-speech-model");
        }
    }
    // The prompt carries the scene's visual prompt and the content's style.
    let prompts = app.fake.answered(Endpoint::Images);
    assert!(
        prompts
            .iter()
            .all(|p| p.contains("Visual style:") && p.contains("No text")),
        "{prompts:?}"
    );
}

async fn transient_faults_are_retried_until_every_scene_succeeds(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    // 30 % of answers fail: half 429 with Retry-After: 0, half 500 (backoff from 20 ms).
    app.fake.set_faults(Faults {
        rate_limited: 0.15,
        retry_after_secs: 0,
        server_error: 0.15,
        seed: 7,
        ..Faults::default()
    });
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let images = start(&app, "/api/media/generate", &content).await;
    let narration = start(&app, "/api/tts/generate", &content).await;
    app.start_workers();
    let mut retried = 0;
    for id in [images, narration] {
        let detail = app.wait_for_job(id).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        assert!(tasks(&detail).iter().all(|t| t["status"] == "succeeded"));
        retried += tasks(&detail)
            .iter()
            .filter(|t| t["attempt"].as_i64().unwrap() > 1)
            .count();
    }
    let sent = app.fake.requests_to(Endpoint::Images) + app.fake.requests_to(Endpoint::Speech);
    assert!(
        sent > 40 && retried > 0,
        "faults were injected ({sent} requests, {retried} retried tasks)"
    );
    assert_eq!(app.fake.successes_to(Endpoint::Images), 20);
    assert_eq!(app.fake.successes_to(Endpoint::Speech), 20);
}

async fn a_permanent_error_fails_one_scene_and_retry_completes_it(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.fake.set_faults(Faults {
        permanent_marker: Some("sentence number 7 ".into()),
        ..Faults::default()
    });
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let narration = start(&app, "/api/tts/generate", &content).await;
    app.start_workers();
    let detail = app.wait_for_job(narration).await;
    assert_eq!(detail["job"]["status"], "failed");
    assert_eq!(
        detail["job"]["stage_message"],
        "19 of 20 scenes done, 1 failed"
    );
    let failed: Vec<&Value> = tasks(&detail)
        .iter()
        .filter(|t| t["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempt"], 1, "a permanent error is not retried");
    let error = failed[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("(400)") && error.contains("safety system"),
        "the provider's message is kept: {error}"
    );
    assert_eq!(app.fake.requests_to(Endpoint::Speech), 20);

    app.fake.set_faults(Faults::default());
    let (status, retried) = app
        .post(&format!("/api/jobs/{narration}/retry"), &json!({}))
        .await;
    assert_eq!(status, 200, "{retried}");
    let detail = app.wait_for_job(narration).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert_eq!(
        app.fake.requests_to(Endpoint::Speech),
        21,
        "only the failed scene ran again"
    );
}

async fn limits_hold_in_flight_and_per_minute(db: Db) {
    // A 3-second "minute", so the per-minute limit shows within the test.
    let Some(app) = TestApp::spawn_with_window(db, 3).await else {
        return;
    };
    use_provider(&app, |v| {
        v.image_concurrency = 3;
        v.image_per_minute = 5;
    })
    .await;
    app.fake.set_image_latency(Duration::from_millis(300));
    let script: String = (1..=12)
        .map(|i| format!("Limits sentence {i} here."))
        .collect::<Vec<_>>()
        .join(" ");
    let content = content_with_scenes(&app, &script, 12).await;
    let first = start(&app, "/api/media/generate", &content).await;
    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    let (status, second) = app
        .post(
            "/api/media/generate",
            &json!({ "content_id": content["id"], "scene_ids": [scene] }),
        )
        .await;
    assert_eq!(status, 202, "{second}");
    // Before anything runs, each job knows its place in the queue.
    assert_eq!(second["data"]["queue_ahead"], 12);
    let (_, listed) = app.get(&format!("/api/jobs/{first}")).await;
    assert_eq!(listed["data"]["job"]["queue_ahead"], 0);

    app.start_workers();
    for id in [first, second["data"]["id"].as_i64().unwrap()] {
        let detail = app.wait_for_job(id).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
    }
    assert_eq!(app.fake.successes_to(Endpoint::Images), 13);
    assert_eq!(
        app.fake.max_in_flight_to(Endpoint::Images),
        3,
        "never more than 3 in flight (and the limit was reached)"
    );
    // The limit counts starts: never more than 5 claimed in any 3-second window (and the
    // limit was reached), as each task's first claim was recorded.
    let mut starts: Vec<i64> =
        sqlx::query_scalar("SELECT started_at FROM tasks WHERE kind = 'scene.image'")
            .fetch_all(app.state.pool())
            .await
            .unwrap();
    starts.sort_unstable();
    assert_eq!(starts.len(), 13);
    let most = (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|&&t| t - starts[i] < 3_000)
                .count()
        })
        .max();
    assert_eq!(most, Some(5), "starts (ms): {starts:?}");
    // The provider sees the same pace, give or take the moments between a claim and its
    // request (up to half a second on a loaded 2-core machine).
    assert!(
        app.fake
            .max_in_window(Endpoint::Images, Duration::from_millis(2_500))
            <= 5,
        "never more than 5 requests in any 2.5-second window"
    );
}

/// The real binary, running the same database, killed with SIGKILL three times at
/// different points of a 20-scene job and started again; then a last server finishes.
async fn a_killed_server_loses_no_task(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 4).await;
    app.fake.set_image_latency(Duration::from_millis(150));
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let job = start(&app, "/api/media/generate", &content).await;
    for kill_after in [3, 9, 15] {
        let mut server = spawn_binary(&app, "warn", &[]);
        app.fake
            .wait_for_requests(Endpoint::Images, kill_after)
            .await;
        // SIGKILL: no shutdown, leases left behind, requests in flight abandoned.
        server.child.kill().expect("kill the server");
        server.child.wait().expect("reap the server");
    }
    let (_, midway) = app.get(&format!("/api/jobs/{job}")).await;
    assert_ne!(
        midway["data"]["job"]["status"], "completed",
        "killed before the end"
    );
    app.start_workers();
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert!(tasks(&detail).iter().all(|t| t["status"] == "succeeded"));
    assert!(
        tasks(&detail)
            .iter()
            .any(|t| t["attempt"].as_i64().unwrap() > 1),
        "some task was cut off by a kill and ran again"
    );
    // Exactly one current asset per scene: the one its task recorded, whose file exists.
    let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.id, s.image_asset_id, t.output_asset_id FROM scenes s JOIN tasks t ON t.scene_id = s.id \
         WHERE t.job_id = $1 ORDER BY s.id",
    )
    .bind(job)
    .fetch_all(app.state.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 20);
    for (scene, current, output) in &rows {
        assert!(
            current.is_some() && current == output,
            "scene {scene}: {current:?} vs {output:?}"
        );
        let key: String = sqlx::query_scalar("SELECT storage_key FROM assets WHERE id = $1")
            .bind(current.unwrap())
            .fetch_one(app.state.pool())
            .await
            .unwrap();
        assert!(app.state.data_dir.join("media").join(key).is_file());
    }
    let distinct: std::collections::HashSet<_> = rows.iter().map(|r| r.1).collect();
    assert_eq!(distinct.len(), 20);
}

async fn batches_cover_several_contents(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let one = app.saved_content("First content. It has two scenes.").await;
    let two = app.saved_content("Second content, with one scene.").await;
    let (status, job) = app
        .post(
            "/api/tts/batch",
            &json!({ "content_ids": [one["id"], two["id"], one["id"]] }),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let scenes = one["scenes"].as_array().unwrap().len() + two["scenes"].as_array().unwrap().len();
    assert_eq!(
        job["data"]["total_tasks"].as_u64().unwrap() as usize,
        scenes
    );
    assert_eq!(job["data"]["content_ids"], json!([one["id"], two["id"]]));
    app.drain().await;
    let id = job["data"]["id"].clone();
    let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    // Listed under either content, and filtered by kind and status.
    for content in [&one, &two] {
        let (status, listed) = app
            .get(&format!(
                "/api/jobs?content_id={}&kind=tts&status=completed",
                content["id"]
            ))
            .await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["data"][0]["id"], id);
    }
    let (_, none) = app.get("/api/jobs?kind=media").await;
    assert_eq!(none["data"], json!([]));

    for (body, field) in [
        (json!({ "content_ids": [] }), "content_ids"),
        (
            json!({ "content_ids": [one["id"], 999_999] }),
            "content_ids[1]",
        ),
        (json!({ "content_ids": "all" }), "content_ids"),
    ] {
        let (status, error) = app.post("/api/media/batch", &body).await;
        assert!((400..500).contains(&status), "{body}: {status} {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let (status, error) = app.get("/api/jobs?status=done").await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("status")),
        "{error}"
    );
    let (status, error) = app.get("/api/jobs?owner=me").await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("owner")),
        "{error}"
    );
}

/// Two servers on one Postgres, both running workers: every task runs exactly once.
#[tokio::test]
async fn two_servers_share_one_postgres() {
    let Some(app) = TestApp::spawn(Db::Postgres).await else {
        return;
    };
    use_provider(&app, |v| v.tts_concurrency = 6).await;
    app.fake.set_speech_latency(Duration::from_millis(40));
    let mut jobs = Vec::new();
    for name in ["alpha", "beta"] {
        let script: String = (1..=20)
            .map(|i| format!("Line {i} of the {name} story."))
            .collect::<Vec<_>>()
            .join(" ");
        let content = content_with_scenes(&app, &script, 20).await;
        jobs.push(start(&app, "/api/tts/generate", &content).await);
    }
    let _second = app.start_second_server().await;
    app.start_workers();
    for job in &jobs {
        let detail = app.wait_for_job(*job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        assert!(
            tasks(&detail).iter().all(|t| t["attempt"] == 1),
            "no task ran twice"
        );
    }
    let answered = app.fake.answered(Endpoint::Speech);
    let distinct: std::collections::HashSet<_> = answered.iter().collect();
    assert_eq!(
        (answered.len(), distinct.len()),
        (40, 40),
        "each scene spoken once"
    );
    assert!(
        app.fake.max_in_flight_to(Endpoint::Speech) <= 6,
        "the limit holds across servers"
    );
    let workers: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT worker_id) FROM tasks")
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert_eq!(workers, 2, "both servers took work");
}

async fn cancel_stops_tasks_waiting_to_retry(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    // The provider fails every request: tasks cycle through retries.
    app.fake.set_faults(Faults {
        server_error: 1.0,
        seed: 3,
        ..Faults::default()
    });
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let job = start(&app, "/api/tts/generate", &content).await;
    app.start_workers();
    app.wait_until(job, |d| {
        d["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["attempt"].as_i64().unwrap_or(0) >= 2))
    })
    .await;
    let (status, cancelled) = app
        .post(&format!("/api/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let ended = app.wait_for_job(job).await;
    assert_eq!(ended["job"]["status"], "cancelled", "{ended}");
    assert!(
        tasks(&ended).iter().all(|t| t["status"] == "cancelled"),
        "no task is retried after a cancel: {ended}"
    );
    let (status, error) = app
        .post(&format!("/api/jobs/{job}/retry"), &json!({}))
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
}

async fn deleting_a_scene_recounts_its_jobs(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(
        &app,
        "One scene here. Two scenes here. Three scenes here.",
        3,
    )
    .await;
    let id = content["id"].as_i64().unwrap();
    let job = start(&app, "/api/tts/generate", &content).await;
    // Two scenes are done; the third is deleted while its task still waits.
    let first_two: Vec<i64> = content["scenes"].as_array().unwrap()[..2]
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    sqlx::query("UPDATE tasks SET status = 'succeeded' WHERE job_id = $1 AND scene_id IN ($2, $3)")
        .bind(job)
        .bind(first_two[0])
        .bind(first_two[1])
        .execute(app.state.pool())
        .await
        .unwrap();
    let scenes: Vec<Value> = content["scenes"].as_array().unwrap()[..2]
        .iter()
        .map(|s| json!({ "id": s["id"], "narration": s["narration"], "visual_prompt": s["visual_prompt"] }))
        .collect();
    let (status, saved) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": "Two scenes", "scenes": scenes }),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    assert_eq!(detail["data"]["job"]["total_tasks"], 2);
}

/// A provider's WAV header is never trusted: a one-second answer whose header claims one
/// byte a second (13 hours by the header) is stored as one second, and an empty answer or
/// a header without samples is a transient fault, retried, then failed saying so.
async fn speech_answers_are_measured_from_their_samples(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    let mut bogus = testkit::tone_wav(Duration::from_secs(1));
    let fmt = bogus.windows(4).position(|w| w == b"fmt ").unwrap();
    bogus[fmt + 16..fmt + 20].copy_from_slice(&1u32.to_le_bytes());
    let data = bogus.windows(4).position(|w| w == b"data").unwrap();
    let mut header_only = bogus[..data + 8].to_vec();
    header_only[data + 4..data + 8].copy_from_slice(&0u32.to_le_bytes());

    let content = content_with_scenes(&app, &twenty_sentences(), 2).await;
    app.fake.set_speech_body(Some(bogus));
    let job = start(&app, "/api/tts/generate", &content).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let durations: Vec<Option<i64>> = sqlx::query_scalar(
        "SELECT a.duration_ms FROM scenes s JOIN assets a ON a.id = s.audio_asset_id \
         WHERE s.content_id = $1 ORDER BY s.position",
    )
    .bind(content["id"].as_i64().unwrap())
    .fetch_all(app.state.pool())
    .await
    .unwrap();
    assert_eq!(durations.len(), 2);
    for ms in durations {
        assert!(ms.is_some_and(|ms| (990..=1010).contains(&ms)), "{ms:?}");
    }

    for body in [Vec::new(), header_only] {
        let content = content_with_scenes(&app, &twenty_sentences(), 1).await;
        app.fake.set_speech_body(Some(body));
        let job = start(&app, "/api/tts/generate", &content).await;
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "failed", "{detail}");
        let task = &tasks(&detail)[0];
        assert_eq!(task["attempt"], task["max_attempts"], "retried: {task}");
        assert!(
            task["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no audio")),
            "{task}"
        );
        assert!(content["scenes"][0]["audio_asset_id"].is_null());
    }
}

/// SIGTERM (a deploy) in the middle of a job: the server stops claiming, lets running
/// tasks go on for the grace period, then puts them back in the queue without spending
/// their attempt and exits. After a restart every task succeeds on its first attempt.
async fn a_stopped_server_spends_no_attempt(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 3).await;
    // Slower than the grace period: the tasks in flight cannot finish in time.
    app.fake.set_image_latency(Duration::from_secs(30));
    let content = content_with_scenes(&app, &twenty_sentences(), 6).await;
    let job = start(&app, "/api/media/generate", &content).await;
    let server = spawn_binary(&app, "warn", &[("CREVID_SHUTDOWN_GRACE_SECS", "1".into())]);
    app.fake.wait_for_requests(Endpoint::Images, 3).await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let (exit, logged) = server.exit().await;
    assert!(exit.success(), "a clean exit: {exit:?}");
    // Every worker (and on Postgres the listener for other processes' work) ended by
    // itself; none waited out the grace period and more to be stopped.
    assert!(
        !logged.iter().any(|l| l.contains("did not stop in time")),
        "{logged:?}"
    );
    let (_, stopped) = app.get(&format!("/api/jobs/{job}")).await;
    for task in tasks(&stopped["data"]) {
        assert_eq!(task["status"], "queued", "put back: {task}");
        assert_eq!(task["attempt"], 0, "no attempt spent: {task}");
    }
    assert_eq!(
        app.fake.requests_to(Endpoint::Images),
        3,
        "nothing claimed after the stop"
    );

    app.fake.set_image_latency(Duration::from_millis(10));
    app.start_workers();
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    for task in tasks(&detail) {
        assert_eq!(task["attempt"], 1, "{task}");
    }
}
