//! Background jobs on the embedded transport: scene images and narration for a whole
//! content, cancel, retry, lease recovery and exactly-once effect. Tests drain the queue
//! on purpose (`TestApp::drain`) instead of waiting for the workers.

use reqwest::Method;
use serde_json::json;

use crate::both_databases;
use crate::helpers::{content_with_scenes, twenty_sentences, use_provider, Db, TestApp, Who};

const UNLIMITED: app::ssr::engine::KindLimits = app::ssr::engine::KindLimits {
    concurrency: 64,
    per_window: 0,
};

both_databases!(
    twenty_scenes_get_images_and_narration,
    bad_job_requests_name_the_problem,
    cancel_stops_queued_tasks,
    retry_runs_only_the_failed_tasks,
    expired_leases_are_recovered_and_lost_leases_record_nothing,
    one_creator_s_big_batch_does_not_starve_another,
    retry_failed_counts_against_the_job_rate,
);

async fn twenty_scenes_get_images_and_narration(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let id = content["id"].as_i64().unwrap();
    assert_eq!(content["scenes"].as_array().unwrap().len(), 20);

    let (status, images) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{images}");
    assert_eq!(
        (
            images["data"]["status"].as_str(),
            images["data"]["total_tasks"].as_i64()
        ),
        (Some("queued"), Some(20))
    );
    assert_eq!(images["data"]["progress"], 0);
    let (status, narration) = app
        .post("/api/tts/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{narration}");

    assert_eq!(app.drain().await, 40);
    for job in [&images, &narration] {
        let (status, detail) = app.get(&format!("/api/jobs/{}", job["data"]["id"])).await;
        assert_eq!(status, 200);
        let job = &detail["data"]["job"];
        assert_eq!(job["status"], "completed", "{detail}");
        assert_eq!(
            (job["progress"].as_i64(), job["done_tasks"].as_i64()),
            (Some(100), Some(20))
        );
        assert_eq!(job["stage_message"], "All 20 scenes done");
        assert!(detail["data"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "succeeded"));
    }
    // One asset per scene per kind, and each scene points at its own.
    let per_kind: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, COUNT(DISTINCT scene_id) FROM assets WHERE content_id = $1 GROUP BY kind ORDER BY kind")
            .bind(id)
            .fetch_all(app.state.pool())
            .await
            .unwrap();
    assert_eq!(
        per_kind,
        vec![("audio".to_owned(), 20), ("image".to_owned(), 20)]
    );
    assert_eq!(app.count("assets").await, 40);
    let pointers: Vec<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT image_asset_id, audio_asset_id FROM scenes WHERE content_id = $1")
            .bind(id)
            .fetch_all(app.state.pool())
            .await
            .unwrap();
    assert!(
        pointers.iter().all(|(i, a)| i.is_some() && a.is_some()),
        "{pointers:?}"
    );

    // The files are real: a PNG at the content's aspect ratio, a WAV with a duration.
    let (image, audio) = pointers[0];
    let png = app
        .client
        .get(app.url(&format!("/api/assets/{}", image.unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (720, 1280), "9:16");
    let duration: i64 = sqlx::query_scalar("SELECT duration_ms FROM assets WHERE id = $1")
        .bind(audio)
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert!((500..20_000).contains(&duration), "{duration} ms");
    // Range requests, so players can seek.
    let part = app
        .client
        .get(app.url(&format!("/api/assets/{}", audio.unwrap())))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().len(), 100);
    // Another creator cannot read them.
    let (status, _) = app
        .call(
            Who::CreatorB,
            Method::GET,
            &format!("/api/assets/{}", image.unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, listed) = app.get(&format!("/api/jobs?content_id={id}")).await;
    assert_eq!((status, listed["data"].as_array().unwrap().len()), (200, 2));
}

async fn bad_job_requests_name_the_problem(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let a = content_with_scenes(&app, "First scene here. Second scene there.", 2).await;
    let other = content_with_scenes(&app, "Another content. With its own scenes.", 2).await;
    let other_scene = other["scenes"][0]["id"].clone();
    let cases = [
        (json!({ "content_id": 999_999 }), 404, "not_found", None),
        (
            json!({ "content_id": a["id"], "scene_ids": [other_scene] }),
            422,
            "validation",
            Some("scene_ids[0]"),
        ),
        (
            json!({ "content_id": a["id"], "scene_ids": [] }),
            422,
            "validation",
            Some("scene_ids"),
        ),
        (
            json!({ "content_id": "seven" }),
            422,
            "invalid_json",
            Some("content_id"),
        ),
        (json!({ "content": 1 }), 422, "invalid_json", None),
    ];
    for (body, status, code, field) in cases {
        let (got, answer) = app.post("/api/media/generate", &body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} -> {answer}"
        );
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    let (status, _) = app
        .call(
            Who::CreatorB,
            Method::POST,
            "/api/tts/generate",
            Some(&json!({ "content_id": a["id"] })),
        )
        .await;
    assert_eq!(status, 404, "another creator's content");
    assert_eq!(app.count("jobs").await, 0, "nothing was queued");
    assert_eq!(app.get("/api/jobs?content_id=x").await.0, 422);
    // Job creation is rate-limited per user, with Retry-After.
    app.call(
        Who::Admin,
        Method::PUT,
        "/api/settings",
        Some(&json!({ "values": { "rate_jobs_per_minute": 1 } })),
    )
    .await;
    assert_eq!(
        app.post("/api/tts/generate", &json!({ "content_id": a["id"] }))
            .await
            .0,
        202
    );
    let (status, headers, answer) = app
        .send(
            app.client
                .post(app.url("/api/tts/generate"))
                .json(&json!({ "content_id": a["id"] })),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{answer}"
    );
    assert!(headers.get("retry-after").is_some());
}

async fn cancel_stops_queued_tasks(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, "One scene. Two scenes. Three scenes.", 3).await;
    let (_, job) = app
        .post(
            "/api/media/generate",
            &json!({ "content_id": content["id"] }),
        )
        .await;
    let id = job["data"]["id"].as_i64().unwrap();
    let (status, cancelled) = app
        .post(&format!("/api/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["data"]["job"]["status"], "cancelled");
    assert!(cancelled["data"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "cancelled"));
    assert_eq!(app.drain().await, 0, "nothing left to run");
    assert_eq!(app.count("assets").await, 0);
}

async fn retry_runs_only_the_failed_tasks(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, "One scene. Two scenes. Three scenes.", 3).await;
    let (_, job) = app
        .post("/api/tts/generate", &json!({ "content_id": content["id"] }))
        .await;
    let id = job["data"]["id"].as_i64().unwrap();
    assert_eq!(
        app.post(&format!("/api/jobs/{id}/retry"), &json!({}))
            .await
            .0,
        422,
        "nothing failed yet"
    );
    app.drain().await;
    // The second scene's narration failed (as a provider's permanent error would).
    let second = content["scenes"][1]["id"].as_i64().unwrap();
    sqlx::query("UPDATE tasks SET status = 'failed', last_error = 'provider said no', output_asset_id = NULL WHERE job_id = $1 AND scene_id = $2")
        .bind(id)
        .bind(second)
        .execute(app.state.pool())
        .await
        .unwrap();
    app::ssr::jobs::refresh(&app.state, id).await.unwrap();
    let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(detail["data"]["job"]["status"], "failed");
    assert_eq!(
        detail["data"]["job"]["stage_message"],
        "2 of 3 scenes done, 1 failed"
    );
    let (status, retried) = app.post(&format!("/api/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(app.drain().await, 1, "only the failed scene runs again");
    let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    assert_eq!(detail["data"]["job"]["progress"], 100);
}

async fn expired_leases_are_recovered_and_lost_leases_record_nothing(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, "One scene. Two scenes.", 2).await;
    let (_, job) = app
        .post(
            "/api/media/generate",
            &json!({ "content_id": content["id"] }),
        )
        .await;
    let id = job["data"]["id"].as_i64().unwrap();

    // A worker claimed the first task and died: its lease ran out.
    let dead: i64 = sqlx::query_scalar("SELECT MIN(id) FROM tasks WHERE job_id = $1")
        .bind(id)
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET status = 'running', worker_id = 'dead-worker', attempt = 1, locked_until = 1 WHERE id = $1")
        .bind(dead)
        .execute(app.state.pool())
        .await
        .unwrap();
    // This worker claims both: the dead worker's task is due again, on its second attempt.
    let one = app::ssr::engine::claim(&app.state, app::ssr::jobs::SCENE_IMAGE, UNLIMITED)
        .await
        .unwrap()
        .unwrap();
    let two = app::ssr::engine::claim(&app.state, app::ssr::jobs::SCENE_IMAGE, UNLIMITED)
        .await
        .unwrap()
        .unwrap();
    assert!(
        app::ssr::engine::claim(&app.state, app::ssr::jobs::SCENE_IMAGE, UNLIMITED)
            .await
            .unwrap()
            .is_none()
    );
    let (first_claimed, second) = if one.id == dead {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(
        (first_claimed.id, first_claimed.attempt),
        (dead, 2),
        "the dead worker's task is due again"
    );
    // The other loses its lease to another worker before it finishes: its result must
    // not be recorded.
    sqlx::query("UPDATE tasks SET worker_id = 'other-worker' WHERE id = $1")
        .bind(second.id)
        .execute(app.state.pool())
        .await
        .unwrap();
    app::ssr::engine::run_claimed(&app.state, second.clone())
        .await
        .unwrap();
    let recorded: Option<i64> =
        sqlx::query_scalar("SELECT output_asset_id FROM tasks WHERE id = $1")
            .bind(second.id)
            .fetch_one(app.state.pool())
            .await
            .unwrap();
    assert_eq!(recorded, None);
    assert_eq!(
        app.count("assets").await,
        0,
        "the orphaned result was removed"
    );
    app::ssr::engine::run_claimed(&app.state, first_claimed)
        .await
        .unwrap();
    // The other worker's lease runs out too; the task is recovered and finishes once.
    sqlx::query("UPDATE tasks SET locked_until = 1 WHERE id = $1")
        .bind(second.id)
        .execute(app.state.pool())
        .await
        .unwrap();
    assert_eq!(app.drain().await, 1);
    let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    let per_scene: Vec<(i64, i64)> =
        sqlx::query_as("SELECT scene_id, COUNT(*) FROM assets GROUP BY scene_id")
            .fetch_all(app.state.pool())
            .await
            .unwrap();
    assert_eq!(per_scene.len(), 2);
    assert!(
        per_scene.iter().all(|(_, n)| *n == 1),
        "exactly one asset per scene: {per_scene:?}"
    );
}

/// A saved content of `scenes` scenes from `script`, owned by `who`.
async fn content_of(app: &TestApp, who: Who, script: &str, scenes: u32) -> serde_json::Value {
    let (status, generated) = app
        .call(
            who,
            Method::POST,
            "/api/content/generate",
            Some(
                &json!({ "mode": "script", "input": script, "presets": { "scene_count": scenes } }),
            ),
        )
        .await;
    assert_eq!(status, 200, "{generated}");
    let (status, saved) = app
        .call(
            who,
            Method::POST,
            "/api/contents",
            Some(&json!({ "mode": "script", "input": script, "script": generated["data"] })),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    saved["data"].clone()
}

/// Claims are fair across owners: creator A queues 510 pictures, then creator B queues 5;
/// B's start among the first ones instead of after all of A's (a global FIFO used to put
/// them 511th to 515th).
async fn one_creator_s_big_batch_does_not_starve_another(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |v| {
        v.image_concurrency = 2;
        v.rate_generate_per_minute = 10_000;
    })
    .await;
    app.fake
        .set_image_latency(std::time::Duration::from_millis(30));
    let thirty = (1..=30)
        .map(|i| format!("River bend number {i} carries the water further south."))
        .collect::<Vec<_>>()
        .join(" ");
    let mut ids = Vec::new();
    for _ in 0..17 {
        let content = content_of(&app, Who::CreatorA, &thirty, 30).await;
        ids.push(content["id"].clone());
    }
    let (status, batch) = app
        .call(
            Who::CreatorA,
            Method::POST,
            "/api/media/batch",
            Some(&json!({ "content_ids": ids })),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["data"]["total_tasks"], 510);
    let script = (1..=5)
        .map(|i| format!("Zebra crossing number {i} waits here for everyone."))
        .collect::<Vec<_>>()
        .join(" ");
    let theirs = content_of(&app, Who::CreatorB, &script, 5).await;
    let (status, job) = app
        .call(
            Who::CreatorB,
            Method::POST,
            "/api/media/generate",
            Some(&json!({ "content_id": theirs["id"] })),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    app.start_workers();
    app.fake
        .wait_for_requests(testkit::Endpoint::Images, 20)
        .await;
    let answered = app.fake.answered(testkit::Endpoint::Images);
    let first: Vec<&String> = answered.iter().take(20).collect();
    let b_started = first
        .iter()
        .filter(|p| p.to_lowercase().contains("zebra"))
        .count();
    assert_eq!(
        b_started, 5,
        "B's five pictures among the first 20: {first:#?}"
    );
    // Stop the rest of A's batch.
    let (status, _) = app
        .call(
            Who::CreatorA,
            Method::POST,
            &format!("/api/jobs/{}/cancel", batch["data"]["id"]),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
}

/// Retry failed queues work like a new job, so it spends the same per-minute budget.
async fn retry_failed_counts_against_the_job_rate(db: Db) {
    let Some(app) = TestApp::spawn_with_window(db, 60).await else {
        return;
    };
    app.configure_llm_with(|v| v.rate_jobs_per_minute = 2).await;
    let content = content_with_scenes(&app, "One scene. Two scenes.", 2).await;
    let (status, job) = app
        .post("/api/tts/generate", &json!({ "content_id": content["id"] }))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["data"]["id"].as_i64().unwrap();
    let fail_all = || async {
        sqlx::query(
            "UPDATE tasks SET status = 'failed', last_error = 'provider said no' WHERE job_id = $1",
        )
        .bind(id)
        .execute(app.state.pool())
        .await
        .unwrap();
        app::ssr::jobs::refresh(&app.state, id).await.unwrap();
    };
    fail_all().await;
    let (status, retried) = app.post(&format!("/api/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{retried}");
    fail_all().await;
    let (status, refused) = app.post(&format!("/api/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 429, "{refused}");
    let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
    assert!(
        detail["data"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "failed"),
        "a refused retry changes nothing: {detail}"
    );
}
