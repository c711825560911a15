//! Bad input answers 4xx naming the field: never a 500, a panic or a half-written row.

use serde_json::json;

use crate::both_databases;
use crate::helpers::{Db, TestApp, Who};

both_databases!(
    bad_generate_requests_name_the_field,
    bad_saves_write_nothing,
    malformed_and_oversized_bodies,
    null_reads_as_an_absent_optional_field
);

async fn rejects(app: &TestApp, body: serde_json::Value, status: u16, code: &str, field: &str) {
    let (got, answer) = app.post("/api/content/generate", &body).await;
    assert_eq!(got, status, "{body} -> {answer}");
    assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
    assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(field.rsplit('.').next().unwrap()),
        "{answer}"
    );
}

async fn bad_generate_requests_name_the_field(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    rejects(
        &app,
        json!({ "mode": "topic", "input": "  " }),
        422,
        "validation",
        "input",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "topic", "input": "x".repeat(501) }),
        422,
        "validation",
        "input",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "script", "input": "Too short." }),
        422,
        "validation",
        "input",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "script", "input": "y ".repeat(10_001) }),
        422,
        "validation",
        "input",
    )
    .await;
    for count in [0, 31] {
        rejects(
            &app,
            json!({ "mode": "topic", "input": "bees", "presets": { "scene_count": count } }),
            422,
            "validation",
            "presets.scene_count",
        )
        .await;
    }
    rejects(
        &app,
        json!({ "mode": "topic", "input": "bees", "presets": { "target_seconds": 5 } }),
        422,
        "validation",
        "presets.target_seconds",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "topic", "input": "bees", "presets": { "aspect_ratio": "4:3" } }),
        422,
        "validation",
        "presets.aspect_ratio",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "video", "input": "bees" }),
        422,
        "invalid_json",
        "mode",
    )
    .await;
    rejects(
        &app,
        json!({ "mode": "topic", "input": "bees", "presets": { "scene_count": -2 } }),
        422,
        "invalid_json",
        "presets.scene_count",
    )
    .await;
    rejects(
        &app,
        json!({ "input": "bees" }),
        422,
        "invalid_json",
        "mode",
    )
    .await;
}

async fn bad_saves_write_nothing(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let script = "First sentence here. Second sentence there. Third one ends it.";
    let (_, generated) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "script", "input": script }),
        )
        .await;
    let mut bad = generated["data"].clone();
    bad["scenes"][1]["narration"] = json!("word ".repeat(500));
    let (status, answer) = app
        .post(
            "/api/contents",
            &json!({ "mode": "script", "input": script, "script": bad }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "script.scenes[1].narration");
    let mut bad = generated["data"].clone();
    bad["scenes"][0]["seconds"] = json!(1e9);
    let (status, answer) = app
        .post(
            "/api/contents",
            &json!({ "mode": "script", "input": script, "script": bad }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "script.scenes[0].seconds");
    assert_eq!(app.count("contents").await, 0);
    assert_eq!(app.count("scenes").await, 0);

    // An edit that fails validation leaves the saved content as it was.
    let saved = app.saved_content(script).await;
    let id = saved["id"].as_i64().unwrap();
    let (status, answer) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": "New", "scenes": [{ "narration": "ok" }, { "narration": "word ".repeat(500) }] }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "scenes[1].narration");
    let (status, answer) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": "New", "scenes": [{ "id": 999_999, "narration": "x" }] }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "scenes[0].id");
    let (_, after) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(after["data"], saved);
    let (status, answer) = app.get("/api/contents/abc").await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (422, Some("id"))
    );
    let (status, _) = app.get("/api/contents/424242").await;
    assert_eq!(status, 404);
}

async fn malformed_and_oversized_bodies(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (status, _, body) = app
        .send(
            app.client
                .post(app.url("/api/content/generate"))
                .header("content-type", "application/json")
                .body("{\"mode\": \"topic\", "),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");
    let (status, _, body) = app
        .send(
            app.client
                .post(app.url("/api/content/generate"))
                .body("mode=topic"),
        )
        .await;
    assert_eq!(status, 415, "{body}");
    let huge = json!({ "mode": "script", "input": "z".repeat(300 * 1024) });
    let (status, answer) = app.post("/api/content/generate", &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    let (status, answer) = app.get("/api/contents?per_page=1000").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "per_page");
    let (status, answer) = app.get("/api/contents?page=minus").await;
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = app.get("/api/no-such-thing").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        answer["error"]["code"], "not_found",
        "an API path answers JSON: {answer}"
    );
    let (status, answer) = app.get("/api/contents?page=2147483648").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "page");
    // serde reads a struct from an array of its fields too; the API takes objects only,
    // so an array changes nothing (here it would have been an empty user update).
    let admin_id = app.admin.user.id;
    let (status, answer) = app
        .call(
            Who::Admin,
            reqwest::Method::PUT,
            &format!("/api/users/{admin_id}"),
            Some(&json!([null, null])),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json", "{answer}");
    let (status, answer) = app
        .post(
            "/api/content/generate",
            &json!(["script", "Some words to split."]),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json", "{answer}");
}

/// Clients that write every optional field send `null` for "not given" (OpenAPI
/// generators, n8n): it reads as the field left out, not as a type error.
async fn null_reads_as_an_absent_optional_field(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let script = "A first sentence for a scene. And a second one after it.";
    let (status, generated) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "script", "input": script, "presets": null }),
        )
        .await;
    assert_eq!(status, 200, "{generated}");
    let (status, saved) = app
        .post(
            "/api/contents",
            &json!({ "mode": "script", "input": script, "script": generated["data"] }),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    let id = saved["data"]["id"].as_i64().unwrap();
    let (status, edited) = app
        .call(
            Who::CreatorA,
            reqwest::Method::PUT,
            &format!("/api/contents/{id}"),
            Some(&json!({
                "title": "Edited",
                "scenes": [{ "id": null, "narration": "A new scene.", "visual_prompt": null, "seconds": null }],
            })),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["data"]["scenes"][0]["visual_prompt"], "", "{edited}");
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let (status, job) = app
            .post(
                path,
                &json!({ "content_id": id, "scene_ids": null, "render_after": null }),
            )
            .await;
        assert_eq!(status, 202, "{path}: {job}");
    }
    let (status, user) = app
        .call(
            Who::Admin,
            reqwest::Method::POST,
            "/api/users",
            Some(&json!({ "email": "nulls@example.com", "password": "a long enough password", "role": null })),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["data"]["role"], "creator");
}
