//! Stock footage from Pexels and Pixabay (their local stand-ins in the test kit): searched
//! per scene with the admin's keys, previewed through the server, picked as a scene's
//! visual with its author's credit, and found for every scene by a background job.

use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{content_with_scenes, Db, TestApp, Who};
use crate::visuals::{bytes_of, picture, pixel, put_picture};

both_databases!(
    stock_footage_is_searched_previewed_and_picked,
    footage_for_every_scene_is_a_background_job
);

/// Three scenes whose visual prompts name things to look for.
const SCRIPT: &str = "The red fire truck races down the road toward the burning barn at night. \
    Firefighters unroll the long hose beside the old wooden barn. \
    By morning the farm animals graze again in the quiet green meadow.";

const PEXELS_KEY: &str = "pexels-test-key";
const PIXABAY_KEY: &str = "pixabay-test-key";

/// Points Pexels and/or Pixabay at the fake, with their keys.
async fn use_stock(app: &TestApp, pexels: bool, pixabay: bool) {
    app.fake
        .require_stock_keys(Some(PEXELS_KEY), Some(PIXABAY_KEY));
    let mut values = app::model::SettingsValues {
        llm_base_url: app.fake.base_url(),
        pexels_base_url: app.fake.pexels_url(),
        pixabay_base_url: app.fake.pixabay_url(),
        rate_jobs_per_minute: 10_000,
        ..Default::default()
    };
    values.llm_model = "fake-script-model".into();
    app::ssr::settings::update(
        &app.state,
        app::model::SettingsUpdate {
            values: values.to_update_map(),
            pexels_api_key: Some(if pexels { PEXELS_KEY } else { "" }.into()),
            pixabay_api_key: Some(if pixabay { PIXABAY_KEY } else { "" }.into()),
            ..Default::default()
        },
    )
    .await
    .expect("settings update");
}

/// The colour of the fake's result `i` for `query`.
fn colour_of(query: &str, i: usize) -> [u8; 3] {
    testkit::prompt_colour(&format!("{i}#{query}"))
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i16::from(*x) - i16::from(y)).abs() <= 12)
}

async fn stock_footage_is_searched_previewed_and_picked(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    let footage = format!("/api/contents/{id}/scenes/{scene}/footage");
    let visual = format!("/api/contents/{id}/scenes/{scene}/visual");

    // Without a key there is nothing to search, and the answer says who can change that.
    let (status, answer) = app.get(&footage).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "provider_not_configured");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Pexels or Pixabay API key"));
    let (status, answer) = app
        .post("/api/footage/find", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(app.fake.stock_requests().is_empty());

    use_stock(&app, true, true).await;
    let (_, settings) = app
        .call(Who::Admin, reqwest::Method::GET, "/api/settings", None)
        .await;
    assert!(
        settings["data"]["pexels_api_key_masked"].is_string(),
        "{settings}"
    );
    assert!(
        !settings.to_string().contains(PEXELS_KEY),
        "keys stay secret"
    );

    // Clips from the first library with a key, by the visual prompt's words, shaped for
    // the content's 9:16 frame.
    let (status, answer) = app.get(&footage).await;
    assert_eq!(status, 200, "{answer}");
    let found = &answer["data"];
    assert_eq!(found["provider"], "pexels");
    assert_eq!(found["kind"], "videos");
    assert_eq!(found["orientation"], "portrait");
    assert_eq!(found["total"], testkit::STOCK_TOTAL);
    assert_eq!(found["candidates"].as_array().unwrap().len(), 15);
    let query = found["query"].as_str().unwrap().to_owned();
    let prompt = content["scenes"][0]["visual_prompt"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        !query.is_empty() && query.split(' ').count() <= 5,
        "{query}"
    );
    for word in query.split(' ') {
        assert!(prompt.contains(word), "{word} is from the prompt {prompt}");
    }
    for style in ["cinematic", "illustration", "frame", "16"] {
        assert!(
            !query.split(' ').any(|w| w == style),
            "{query} holds {style}"
        );
    }
    let asked = app.fake.stock_requests().pop().unwrap();
    assert_eq!((asked.library, asked.kind), ("pexels", "videos"));
    assert_eq!(asked.authorization.as_deref(), Some(PEXELS_KEY));
    assert_eq!(asked.query["query"], query);
    assert_eq!(asked.query["orientation"], "portrait");
    assert_eq!(asked.query["per_page"], "15");
    let clip = found["candidates"][0].clone();
    assert_eq!(clip["duration_ms"], 3000);
    assert_eq!(clip["credit"]["author"], "Pexels Videographer 0");
    assert_eq!(
        clip["credit"]["author_url"],
        "https://www.pexels.com/@videographer-0"
    );

    // Photos from Pixabay, by the creator's words, the second page.
    let (status, answer) = app
        .get(&format!(
            "{footage}?provider=pixabay&kind=photos&q=red%20fire%20truck&page=2"
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let photos = &answer["data"];
    assert_eq!(
        (photos["provider"].as_str(), photos["page"].as_u64()),
        (Some("pixabay"), Some(2))
    );
    let asked = app.fake.stock_requests().pop().unwrap();
    assert_eq!((asked.library, asked.kind), ("pixabay", "photos"));
    assert_eq!(asked.query["key"], PIXABAY_KEY);
    assert_eq!(asked.query["q"], "red fire truck");
    assert_eq!(asked.query["orientation"], "vertical");
    assert_eq!(asked.query["image_type"], "photo");
    assert_eq!(asked.query["page"], "2");
    let photo = photos["candidates"][0].clone();
    assert_eq!(photo["credit"]["author"], "pixabay_user_15");
    assert_eq!(
        photo["credit"]["author_url"],
        "https://pixabay.com/users/pixabay_user_15-915/"
    );
    assert_eq!(photo["duration_ms"], Value::Null);

    // The preview comes through this server (pages may load pictures from it alone).
    let preview = app
        .client
        .get(app.url(photo["preview_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), 200);
    assert_eq!(preview.headers()["content-type"], "image/png");
    let preview = preview.bytes().await.unwrap().to_vec();
    assert!(near(
        pixel(&preview, "png", 0.0, 10, 10),
        colour_of("red fire truck", 15)
    ));

    // The clip, picked: fetched, converted to the frame, credited.
    let (status, answer) = app.put(&visual, &json!({ "stock": clip["pick"] })).await;
    assert_eq!(status, 200, "{answer}");
    let shown = &answer["data"]["scenes"][0];
    assert_eq!(shown["clip"]["duration_ms"], 3000, "{shown}");
    assert_eq!(shown["credit"], clip["credit"]);
    // No file reaches a 720 px short side: the largest MP4 with a size, never the HLS one.
    let fetched = app.fake.stock_media_requests();
    assert!(
        fetched.last().unwrap().ends_with("-360x640.mp4"),
        "{fetched:?}"
    );
    let first_frame = bytes_of(&app, &format!("/api/assets/{}", shown["image_asset_id"])).await;
    assert!(near(
        pixel(&first_frame, "png", 0.0, 360, 640),
        colour_of(&query, 0)
    ));

    // The photo, picked: the scene's picture in the frame, the clip gone.
    let (status, answer) = app.put(&visual, &json!({ "stock": photo["pick"] })).await;
    assert_eq!(status, 200, "{answer}");
    let shown = &answer["data"]["scenes"][0];
    assert_eq!(shown["clip"], Value::Null);
    assert_eq!(shown["credit"]["provider"], "pixabay");
    assert_eq!(shown["credit"]["kind"], "photos");
    let still = bytes_of(&app, &format!("/api/assets/{}", shown["image_asset_id"])).await;
    assert_eq!(
        testkit::probe_size(&write_temp(&still)).unwrap(),
        "720,1280"
    );
    assert!(near(
        pixel(&still, "png", 0.0, 360, 640),
        colour_of("red fire truck", 15)
    ));

    // A creator's own picture after it drops the credit.
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &visual,
        "image/png",
        picture("png", 90, 160, "blue"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["scenes"][0]["credit"], Value::Null);

    // Refused, with nothing kept: a token this server did not make, another creator's
    // content, a wrong key, bad parameters.
    let assets = app.count("assets").await;
    let forged = clip["pick"].as_str().unwrap().replace('A', "B");
    let (status, answer) = app.put(&visual, &json!({ "stock": forged })).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "stock");
    assert_eq!(
        answer["error"]["message"],
        "stock is not a pick from this server's stock search results"
    );
    let (status, answer) = app.put(&visual, &json!({ "stock": 5 })).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");
    let (status, _) = app
        .call(Who::CreatorB, reqwest::Method::GET, &footage, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            Who::CreatorB,
            reqwest::Method::PUT,
            &visual,
            Some(&json!({ "stock": clip["pick"] })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, answer) = app
        .get(&format!("/api/stock/preview?pick={}", "not-a-pick"))
        .await;
    assert_eq!(status, 422, "{answer}");
    for (params, field) in [
        ("kind=gifs", "kind"),
        ("provider=unsplash", "provider"),
        ("page=0", "page"),
        (&*format!("q={}", "a".repeat(101)), "q"),
    ] {
        let (status, answer) = app.get(&format!("{footage}?{params}")).await;
        assert_eq!(status, 422, "{params}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = app.get(&format!("{footage}?q=nothing%20at%20all")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["total"], 0);
    assert_eq!(answer["data"]["candidates"], json!([]));
    app.fake
        .require_stock_keys(Some("another-key"), Some(PIXABAY_KEY));
    let (status, answer) = app.get(&footage).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "provider_auth");
    assert_eq!(
        answer["error"]["message"],
        "Pexels refused the API key (401 Unauthorized): check pexels_api_key in Settings"
    );
    app.fake
        .require_stock_keys(Some(PEXELS_KEY), Some("another-key"));
    let (status, answer) = app.get(&format!("{footage}?provider=pixabay")).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "provider_auth");
    app.fake
        .require_stock_keys(Some(PEXELS_KEY), Some(PIXABAY_KEY));
    let (status, answer) = app
        .get(&format!("{footage}?provider=pixabay&page=34"))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "Pixabay shows at most 33 pages of results"
    );
    // A library's rate limit is a 429 that says when to come back, from its own header.
    app.fake.set_stock_rate_limited(true);
    for (params, from, to) in [("", 100, 120), ("?provider=pixabay", 30, 30)] {
        let (status, answer) = app.get(&format!("{footage}{params}")).await;
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["error"]["code"], "provider_rate_limited");
        let wait = answer["error"]["retry_after_secs"].as_u64().unwrap();
        assert!((from..=to).contains(&wait), "{params}: {wait}");
    }
    app.fake.set_stock_rate_limited(false);
    assert_eq!(app.count("assets").await, assets, "nothing kept");

    // A full quota refuses a pick with the reason.
    app.fake
        .require_stock_keys(Some(PEXELS_KEY), Some(PIXABAY_KEY));
    sqlx::query("UPDATE assets SET bytes = 2097152 WHERE content_id = $1")
        .bind(id)
        .execute(app.state.pool())
        .await
        .unwrap();
    let mut values = app::ssr::settings::values(&app.state).await.unwrap();
    values.storage_quota_mb = 1;
    app::ssr::settings::update(
        &app.state,
        app::model::SettingsUpdate {
            values: values.to_update_map(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (status, answer) = app.put(&visual, &json!({ "stock": photo["pick"] })).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "quota_exceeded");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Your media take"));
}

/// Queues a footage job with `body`, runs it now, and returns the ended job.
async fn run_footage(app: &TestApp, body: Value) -> Value {
    let (status, job) = app.post("/api/footage/find", &body).await;
    assert_eq!(status, 202, "{job}");
    app.drain().await;
    app.wait_for_job(job["data"]["id"].as_i64().unwrap()).await
}

fn write_temp(bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "crevid-stock-{}-{}.png",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

async fn footage_for_every_scene_is_a_background_job(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_stock(&app, false, true).await;
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let scenes: Vec<i64> = content["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    // The creator's own picture on the first scene stays.
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &format!("/api/contents/{id}/scenes/{}/visual", scenes[0]),
        "image/png",
        picture("png", 90, 160, "blue"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let (status, job) = app
        .post("/api/footage/find", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["data"]["kind"], "footage");
    assert_eq!(
        job["data"]["total_tasks"], 2,
        "the scene with its own picture is left"
    );
    let job_id = job["data"]["id"].as_i64().unwrap();
    app.drain().await;
    let done = app.wait_for_job(job_id).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    for task in done["tasks"].as_array().unwrap() {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert!(task["output_asset_id"].is_i64(), "{task}");
    }
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    let shown = detail["data"]["scenes"].as_array().unwrap().clone();
    assert_eq!(shown[0]["credit"], Value::Null);
    assert_eq!(shown[0]["clip"], Value::Null);
    for scene in &shown[1..] {
        assert_eq!(scene["credit"]["provider"], "pixabay", "{scene}");
        assert_eq!(scene["credit"]["kind"], "videos", "{scene}");
        assert_eq!(scene["clip"]["duration_ms"], 3000, "{scene}");
    }
    // One Pixabay video search per scene (the first query found something), keyed.
    let searches = app.fake.stock_requests();
    assert_eq!(searches.len(), 2, "{searches:?}");
    assert!(searches
        .iter()
        .all(|r| (r.library, r.kind) == ("pixabay", "videos") && r.query["key"] == PIXABAY_KEY));

    // With Pexels too, but its key refused: Pixabay still answers.
    use_stock(&app, true, true).await;
    app.fake
        .require_stock_keys(Some("another-key"), Some(PIXABAY_KEY));
    let done = run_footage(&app, json!({ "content_id": id, "scene_ids": [scenes[1]] })).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    let searched: Vec<_> = app.fake.stock_requests()[2..]
        .iter()
        .map(|r| r.library)
        .collect();
    assert_eq!(
        searched,
        ["pexels", "pixabay"],
        "Pexels once, then Pixabay only"
    );
    // Both keys refused: the scene fails with both libraries' reasons.
    app.fake
        .require_stock_keys(Some("another-key"), Some("another-key"));
    let done = run_footage(&app, json!({ "content_id": id, "scene_ids": [scenes[1]] })).await;
    assert_eq!(done["job"]["status"], "failed", "{done}");
    let error = done["tasks"][0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("Pexels refused the API key")
            && error.contains("; Pixabay refused the API key"),
        "{error}"
    );
    app.fake
        .require_stock_keys(Some(PEXELS_KEY), Some(PIXABAY_KEY));
    use_stock(&app, false, true).await;

    // A picture the creator puts on the scene while the job waits stays.
    let (status, job) = app
        .post(
            "/api/footage/find",
            &json!({ "content_id": id, "scene_ids": [scenes[1]] }),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &format!("/api/contents/{id}/scenes/{}/visual", scenes[1]),
        "image/png",
        picture("png", 90, 160, "blue"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let own = answer["data"]["scenes"][1]["image_asset_id"].clone();
    app.drain().await;
    let done = app.wait_for_job(job["data"]["id"].as_i64().unwrap()).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    let second = &detail["data"]["scenes"][1];
    assert_eq!(second["image_asset_id"], own, "{second}");
    assert_eq!(second["credit"], Value::Null);

    // Photos for one scene; then a scene whose prompt finds nothing fails, saying so.
    let done = run_footage(
        &app,
        json!({ "content_id": id, "scene_ids": [scenes[2]], "kind": "photos" }),
    )
    .await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    let third = &detail["data"]["scenes"][2];
    assert_eq!(third["credit"]["kind"], "photos", "{third}");
    assert_eq!(third["clip"], Value::Null);

    sqlx::query("UPDATE scenes SET visual_prompt = 'nothing to see' WHERE id = $1")
        .bind(scenes[1])
        .execute(app.state.pool())
        .await
        .unwrap();
    let done = run_footage(&app, json!({ "content_id": id, "scene_ids": [scenes[1]] })).await;
    assert_eq!(done["job"]["status"], "failed", "{done}");
    let error = done["tasks"][0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("no stock footage matches \"nothing see\" on Pixabay"),
        "{error}"
    );

    // Bad requests are refused before anything is queued.
    let jobs = app.count("jobs").await;
    for (body, field) in [
        (json!({ "content_id": id, "kind": "gifs" }), None),
        (
            json!({ "content_id": id, "scene_ids": [] }),
            Some("scene_ids"),
        ),
    ] {
        let (status, answer) = app.post("/api/footage/find", &body).await;
        assert_eq!(status, 422, "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field);
        }
    }
    let (status, _) = app
        .call(
            Who::CreatorB,
            reqwest::Method::POST,
            "/api/footage/find",
            Some(&json!({ "content_id": id })),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.count("jobs").await, jobs, "nothing queued");
}
