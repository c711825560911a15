//! Settings: validated updates, reset, encrypted and masked secrets; the status report.

use serde_json::json;

use crate::both_databases;
use reqwest::Method;

use crate::helpers::{Db, TestApp, Who, TEST_KEY};

both_databases!(
    update_validate_and_reset,
    keys_are_encrypted_and_masked,
    status_reports_each_dependency,
    each_capability_keeps_its_own_key,
);

async fn update_validate_and_reset(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (status, body) = app
        .call(Who::Admin, Method::GET, "/api/settings", None)
        .await;
    assert_eq!(status, 200);
    let mut values = body["data"]["values"].clone();
    assert_eq!(values["llm_model"], "gpt-4o-mini");
    assert_eq!(body["data"]["llm_api_key_masked"], serde_json::Value::Null);

    for (field, value) in [
        ("llm_base_url", json!("not a url")),
        ("llm_base_url", json!("ftp://example.com")),
        ("llm_model", json!("  ")),
        ("llm_temperature", json!(3.5)),
        ("llm_timeout_secs", json!(0)),
        ("default_scene_count", json!(99)),
        ("default_aspect_ratio", json!("2:1")),
        ("image_provider", json!("midjourney")),
        ("image_size", json!("huge")),
        ("image_quality", json!("ultra")),
        ("image_concurrency", json!(0)),
        ("tts_speed", json!(9)),
        ("video_height", json!(480)),
        ("video_fade_ms", json!(5000)),
        ("subtitle_colour", json!("white")),
        ("subtitle_position", json!("left")),
        ("music_volume", json!(150)),
        ("image_base_url", json!("not a url")),
        ("tts_base_url", json!("file:///etc/passwd")),
        ("caption_style", json!("karaoke")),
        ("caption_highlight_colour", json!("red")),
    ] {
        let mut bad = values.clone();
        bad[field] = value;
        let (status, answer) = app
            .call(
                Who::Admin,
                Method::PUT,
                "/api/settings",
                Some(&json!({ "values": bad })),
            )
            .await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert_eq!(
            answer["error"]["field"],
            format!("values.{field}"),
            "{answer}"
        );
    }
    let (status, answer) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": { "llm_model": "m", "surprise": 1 } })),
        )
        .await;
    assert_eq!(status, 422, "unknown keys are refused: {answer}");
    assert_eq!(answer["error"]["field"], "values.surprise");
    let (status, answer) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": { "llm_timeout_secs": "soon" } })),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("llm_timeout_secs"),
        "{answer}"
    );
    // A partial update changes only what it names.
    let (status, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": { "default_tone": "calm" } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["values"]["default_tone"], "calm");
    assert_eq!(body["data"]["values"]["llm_model"], values["llm_model"]);

    values["llm_model"] = json!("llama3.1");
    values["llm_base_url"] = json!("http://localhost:11434/v1/");
    values["default_scene_count"] = json!(8);
    let (status, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": values })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["values"]["llm_base_url"], "http://localhost:11434/v1",
        "trailing slash trimmed"
    );
    let (_, body) = app
        .call(Who::Admin, Method::GET, "/api/settings", None)
        .await;
    assert_eq!(body["data"]["values"]["llm_model"], "llama3.1");
    // New defaults apply to generation.
    let (_, generated) = app
        .post("/api/content/generate", &json!({ "mode": "script", "input": "One. Two. Three. Four. Five. Six. Seven. Eight. Nine." }))
        .await;
    // (creators generate; only admins change the defaults)
    assert_eq!(generated["data"]["presets"]["scene_count"], 8);

    let (status, body) = app
        .call(
            Who::Admin,
            Method::POST,
            "/api/settings/reset",
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["values"]["llm_model"], "gpt-4o-mini");
}

async fn keys_are_encrypted_and_masked(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    let (_, body) = app
        .call(Who::Admin, Method::GET, "/api/settings", None)
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], "sk-…wxyz");
    assert!(!body.to_string().contains(TEST_KEY));
    let stored: Vec<String> = sqlx::query_scalar("SELECT value FROM settings")
        .fetch_all(app.state.pool())
        .await
        .unwrap();
    assert!(
        stored.iter().all(|v| !v.contains(&TEST_KEY[..8])),
        "keys are sealed at rest: {stored:?}"
    );

    // Leaving the key out keeps it, as long as the endpoint stays on the same host.
    let values = body["data"]["values"].clone();
    let (_, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": values })),
        )
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], "sk-…wxyz");
    let other_path = format!("{}/", app.fake.base_url());
    let (_, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": { "llm_base_url": other_path } })),
        )
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], "sk-…wxyz");
    // An empty string removes it.
    let (_, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": {}, "llm_api_key": "" })),
        )
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], serde_json::Value::Null);

    // A key is never sent to a host it was not entered for: pointing the endpoint
    // elsewhere without a new key drops it, and so does a reset to another host.
    app.configure_llm().await;
    let (_, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            "/api/settings",
            Some(&json!({ "values": { "llm_base_url": "https://evil.example/v1" } })),
        )
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], serde_json::Value::Null);
    app.configure_llm().await;
    let (_, body) = app
        .call(
            Who::Admin,
            Method::POST,
            "/api/settings/reset",
            Some(&json!({})),
        )
        .await;
    assert_eq!(body["data"]["llm_api_key_masked"], serde_json::Value::Null);
}

async fn status_reports_each_dependency(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (status, body) = app
        .call(Who::Admin, Method::GET, "/api/settings/status", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let checks = body["data"]["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names[0].starts_with("Database"), "{names:?}");
    assert_eq!(
        &names[1..],
        [
            "Language model",
            "Background tasks",
            "ffmpeg",
            "espeak-ng",
            "Media storage"
        ]
    );
    assert_eq!(checks[0]["verdict"], "ok");
    assert_eq!(checks[1]["verdict"], "warning", "no key yet: {}", checks[1]);
    assert_eq!(checks[2]["verdict"], "ok", "{}", checks[2]);
    assert!(
        checks[2]["message"]
            .as_str()
            .unwrap()
            .starts_with("Embedded queue"),
        "{}",
        checks[2]
    );
    // The set-up installs ffmpeg and espeak-ng.
    assert_eq!(checks[3]["verdict"], "ok", "{}", checks[3]);
    assert_eq!(checks[4]["verdict"], "ok", "{}", checks[4]);
    assert_eq!(checks[5]["verdict"], "ok", "{}", checks[5]);
    let media = app.state.data_dir.join("media");
    assert!(
        checks[5]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Media in {} (", media.display())),
        "{}",
        checks[5]
    );

    app.configure_llm().await;
    let (_, body) = app
        .call(Who::Admin, Method::GET, "/api/settings/status", None)
        .await;
    assert_eq!(body["data"]["checks"][1]["verdict"], "ok", "{body}");
    app.fake.require_key("another-key");
    let (_, body) = app
        .call(Who::Admin, Method::GET, "/api/settings/status", None)
        .await;
    assert_eq!(body["data"]["checks"][1]["verdict"], "error", "{body}");
    assert!(body["data"]["checks"][1]["message"]
        .as_str()
        .unwrap()
        .contains("rejects the API key"));
}

/// Pictures, narration and transcription each take a key of their own only with an
/// endpoint of their own; it is masked, dropped when that endpoint moves to another host,
/// and the script's key is kept apart.
async fn each_capability_keeps_its_own_key(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    let put = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.call(Who::Admin, Method::PUT, "/api/settings", Some(&body))
                .await
        }
    };
    // A line break cannot go into the Authorization header: refused when saved, not a
    // panic when used.
    let (status, body) = put(json!({ "values": {}, "llm_api_key": "sk-abc\ndef-ghijkl" })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "llm_api_key", "{body}");
    // A key for an endpoint that is not there would never be used: refused, by name.
    let (status, body) = put(json!({ "values": {}, "tts_api_key": "kokoro-key-123" })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "tts_api_key", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tts_base_url"),
        "{body}"
    );

    let (status, body) = put(json!({
        "values": { "tts_base_url": "http://127.0.0.1:8880/v1" },
        "tts_api_key": "kokoro-key-123",
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["tts_api_key_masked"], "kok…-123");
    assert_eq!(body["data"]["llm_api_key_masked"], "sk-…wxyz");
    assert_eq!(
        body["data"]["image_api_key_masked"],
        serde_json::Value::Null
    );
    assert!(!body.to_string().contains("kokoro-key-123"));
    let (_, body) = put(json!({ "values": { "tts_base_url": "http://127.0.0.1:8880/v1/" } })).await;
    assert_eq!(
        body["data"]["tts_api_key_masked"], "kok…-123",
        "same host: kept"
    );
    let (_, body) =
        put(json!({ "values": { "tts_base_url": "https://elsewhere.example/v1" } })).await;
    assert_eq!(
        body["data"]["tts_api_key_masked"],
        serde_json::Value::Null,
        "another host: dropped"
    );
    assert_eq!(
        body["data"]["llm_api_key_masked"], "sk-…wxyz",
        "the script's key is apart"
    );
}
