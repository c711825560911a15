//! Script generation: the OpenAI-compatible path against the fake, every provider error,
//! and the offline splitter.

use std::time::Duration;

use serde_json::json;
use testkit::Behaviour;

use crate::both_databases;
use crate::helpers::{Db, TestApp, TEST_KEY};

both_databases!(
    topic_returns_a_structured_script,
    script_mode_splits_offline,
    no_key_points_to_settings,
    invalid_key_is_reported_without_leaking_it,
    rate_limit_passes_retry_after_on,
    timeout_is_reported,
    refusal_is_reported,
    malformed_output_is_repaired_once,
    malformed_output_twice_is_a_clear_error,
    unknown_model_and_server_errors,
    unreachable_endpoint,
);

fn topic(input: &str) -> serde_json::Value {
    json!({ "mode": "topic", "input": input, "presets": { "scene_count": 4, "target_seconds": 40, "aspect_ratio": "16:9", "tone": "playful" } })
}

async fn topic_returns_a_structured_script(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    let (status, body) = app
        .post("/api/content/generate", &topic("octopus hearts"))
        .await;
    assert_eq!(status, 200, "{body}");
    let script = &body["data"];
    assert_eq!(script["title"], "All about octopus hearts");
    assert_eq!(script["scenes"].as_array().unwrap().len(), 4);
    assert_eq!(script["scenes"][0]["seconds"], 10.0);
    assert_eq!(script["presets"]["aspect_ratio"], "16:9");
    assert_eq!(
        script["presets"]["language"], "English",
        "missing presets take the defaults"
    );
    assert_eq!(script["provider"], "openai-compatible:fake-script-model");
    assert_eq!(script["hashtags"], json!(["#crevid", "#shorts"]));

    let sent = app.fake.last_request().unwrap();
    assert_eq!(sent["model"], "fake-script-model");
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["strict"], true);
    let prompt = sent["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Tone: playful")
            && prompt.contains("Scenes: 4")
            && prompt.contains("Aspect ratio: 16:9"),
        "{prompt}"
    );
    assert_eq!(app.count("contents").await, 0, "generating does not save");

    // JSON mode for servers without structured output.
    app.configure_llm_with(|v| v.llm_json_schema = false).await;
    let (status, _) = app
        .post("/api/content/generate", &topic("octopus hearts"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.fake.last_request().unwrap()["response_format"]["type"],
        "json_object"
    );
}

async fn script_mode_splits_offline(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let script = "Octopuses have three hearts. Two pump blood through the gills. The third serves the body. \
                  It stops when they swim. That is why they prefer crawling!";
    let (status, body) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "script", "input": script, "presets": { "scene_count": 3 } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let scenes = body["data"]["scenes"].as_array().unwrap();
    assert_eq!(scenes.len(), 3);
    let joined: Vec<&str> = scenes
        .iter()
        .map(|s| s["narration"].as_str().unwrap())
        .collect();
    assert_eq!(
        joined.join(" "),
        script.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert!(scenes[0]["visual_prompt"]
        .as_str()
        .unwrap()
        .contains("octopuses"));
    assert_eq!(body["data"]["provider"], "builtin:splitter");
    assert_eq!(app.fake.requests(), 0, "the splitter makes no network call");
}

async fn expect_error(app: &TestApp, status: u16, code: &str) -> serde_json::Value {
    let (got, headers, body) = app
        .send(
            app.client
                .post(app.url("/api/content/generate"))
                .json(&topic("volcanoes")),
        )
        .await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let text = body.to_string();
    assert!(!text.contains(&TEST_KEY[..8]), "the key leaked: {text}");
    json!({ "body": body, "retry_after": headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned()) })
}

async fn no_key_points_to_settings(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let out = expect_error(&app, 409, "provider_not_configured").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Settings"));
    assert_eq!(app.fake.requests(), 0);
}

async fn invalid_key_is_reported_without_leaking_it(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_behaviour(Behaviour::InvalidKey);
    let out = expect_error(&app, 502, "provider_auth").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rejected the API key"));
}

async fn rate_limit_passes_retry_after_on(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake
        .set_behaviour(Behaviour::RateLimited { retry_after: 7 });
    let out = expect_error(&app, 429, "provider_rate_limited").await;
    assert_eq!(out["retry_after"], "7");
    assert_eq!(out["body"]["error"]["retry_after_secs"], 7);
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("7 s"));
    assert_eq!(
        app.fake.requests(),
        1,
        "a creator is waiting: no silent retries"
    );
}

async fn timeout_is_reported(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm_with(|v| v.llm_timeout_secs = 1).await;
    app.fake.set_latency(Duration::from_secs(5));
    let out = expect_error(&app, 504, "provider_timeout").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 s"));
}

async fn refusal_is_reported(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_behaviour(Behaviour::Refusal);
    let out = expect_error(&app, 502, "provider_refused").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("I can't help"));
}

async fn malformed_output_is_repaired_once(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_behaviour(Behaviour::Malformed { times: 1 });
    let (status, body) = app.post("/api/content/generate", &topic("bees")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.fake.requests(), 2);
    let repair = app.fake.last_request().unwrap();
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        4,
        "the repair shows the model its answer and the problem"
    );
    assert!(messages[3]["content"]
        .as_str()
        .unwrap()
        .contains("not valid"));
}

async fn malformed_output_twice_is_a_clear_error(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_behaviour(Behaviour::Malformed { times: 5 });
    let out = expect_error(&app, 502, "provider_malformed").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a usable script"));
    assert_eq!(app.fake.requests(), 2, "exactly one repair attempt");
}

async fn unknown_model_and_server_errors(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm().await;
    app.fake.set_behaviour(Behaviour::UnknownModel);
    let out = expect_error(&app, 502, "provider_bad_request").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("fake-script-model"));
    app.fake.set_behaviour(Behaviour::ServerError);
    expect_error(&app, 502, "provider_unavailable").await;
}

async fn unreachable_endpoint(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    app.configure_llm_with(|v| v.llm_base_url = format!("http://127.0.0.1:{port}/v1"))
        .await;
    let out = expect_error(&app, 502, "provider_unavailable").await;
    assert!(out["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Cannot reach"));
}
