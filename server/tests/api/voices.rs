//! Voices: the list (espeak-ng's variants offline, the provider's own list or OpenAI's),
//! a sample heard before anything is generated, and a content's voice and speed reaching
//! its narration, through real espeak-ng and the fake provider.

use serde_json::{json, Value};
use testkit::Profile;

use crate::both_databases;
use crate::helpers::{content_with_scenes, start_job, use_provider, Db, TestApp, Who};

both_databases!(
    offline_voices_are_espeak_variants_and_speed_reaches_the_narration,
    provider_voices_come_from_its_list_or_openais_and_reach_the_speech_api
);

const SCRIPT: &str =
    "Owls can turn their heads very far around. They hunt at night without a sound.";

/// A sample's or an asset's audio: (status, content type, duration in ms).
async fn audio(app: &TestApp, path: &str) -> (u16, String, Option<i64>) {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.unwrap();
    (status, kind, app::ssr::media::wav_duration_ms(&bytes))
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]["voices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect()
}

/// The narration's total length, once every scene's is made.
async fn narrated_ms(app: &TestApp, content: &Value) -> i64 {
    let job = start_job(app, "/api/tts/generate", content).await;
    app.drain().await;
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    let (_, content) = app.get(&format!("/api/contents/{}", content["id"])).await;
    let mut total = 0;
    for scene in content["data"]["scenes"].as_array().unwrap() {
        let asset = scene["audio_asset_id"].as_i64().unwrap();
        let (status, _, ms) = audio(app, &format!("/api/assets/{asset}")).await;
        assert_eq!(status, 200);
        total += ms.unwrap();
    }
    total
}

async fn offline_voices_are_espeak_variants_and_speed_reaches_the_narration(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (status, list) = app.get("/api/voices?language=French").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"]["provider"], "builtin");
    assert_eq!(list["data"]["source"], "espeak-ng");
    let voices = ids(&list);
    assert_eq!(
        voices[0], "fr",
        "the language's own voice first: {voices:?}"
    );
    for variant in ["fr+f3", "fr+m3"] {
        assert!(voices.contains(&variant), "{variant} in {voices:?}");
    }
    let (status, answer) = app.get("/api/voices?lang=fr").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "lang");

    // Heard before anything is made: the same words, slower and faster, in two variants.
    let sample = "/api/voices/preview?language=French&voice=fr%2Bf3&text=Bonjour%20tout%20le%20monde%2C%20voici%20ma%20voix.";
    let (status, kind, normal) = audio(&app, sample).await;
    assert_eq!((status, kind.as_str()), (200, "audio/wav"));
    let (_, _, fast) = audio(&app, &format!("{sample}&speed=2")).await;
    let (normal, fast) = (normal.unwrap(), fast.unwrap());
    assert!(
        (fast as f64) < normal as f64 * 0.7,
        "speed 2 takes {fast} ms against {normal} ms"
    );
    let bytes = |voice: &'static str| {
        let url = app.url(&format!(
            "/api/voices/preview?language=French&text=Bonjour&voice={voice}"
        ));
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap().bytes().await.unwrap() }
    };
    assert_ne!(
        bytes("fr%2Bf3").await,
        bytes("fr%2Bm3").await,
        "variants differ"
    );
    for (query, field) in [
        ("voice=fr&speed=9", "speed"),
        ("voice=fr&speed=fast", "speed"),
        ("speed=1", "voice"),
        ("voice=fr&content_id=0", "content_id"),
    ] {
        let (status, answer) = app.get(&format!("/api/voices/preview?{query}")).await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{query}: {answer}");
    }

    // A content's voice and speed: saved, refused when out of range, and used.
    let slow = content_with_scenes(&app, SCRIPT, 2).await;
    let fast = content_with_scenes(&app, SCRIPT, 2).await;
    let app = &app;
    let put = |content: &Value, body: Value| {
        let path = format!("/api/contents/{}/voice", content["id"]);
        async move {
            app.call(Who::CreatorA, reqwest::Method::PUT, &path, Some(&body))
                .await
        }
    };
    let (status, saved) = put(&slow, json!({ "voice": "en+f3", "speed": 0.6 })).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["data"]["presets"]["voice"], "en+f3");
    assert_eq!(saved["data"]["presets"]["speed"], 0.6);
    let (status, _) = put(&fast, json!({ "voice": "en+f3", "speed": 1.8 })).await;
    assert_eq!(status, 200);
    let (status, answer) = put(&fast, json!({ "voice": "en+f3", "speed": 5 })).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "speed");
    let (status, answer) = put(&fast, json!({ "voice": "" })).await;
    assert_eq!(status, 422, "{answer}");
    let (_, unchanged) = app.get(&format!("/api/contents/{}", fast["id"])).await;
    assert_eq!(
        unchanged["data"]["presets"]["speed"], 1.8,
        "a refused change keeps the saved one"
    );
    let (slow_ms, fast_ms) = (narrated_ms(app, &slow).await, narrated_ms(app, &fast).await);
    assert!(
        (fast_ms as f64) < slow_ms as f64 * 0.5,
        "the same scenes at 1.8 take {fast_ms} ms, at 0.6 {slow_ms} ms"
    );
    // No speed: the admin's default again (a NULL after numbers, which Postgres once
    // refused as a float4 in a statement prepared for a float8).
    for _ in 0..3 {
        let (status, saved) = put(&fast, json!({ "voice": "en+f3", "speed": null })).await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["data"]["presets"]["speed"], Value::Null);
        let (status, _) = put(&fast, json!({ "voice": "en+f3", "speed": 1.1 })).await;
        assert_eq!(status, 200);
    }
}

async fn provider_voices_come_from_its_list_or_openais_and_reach_the_speech_api(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    // OpenAI has no list route: its documented voices.
    let (status, list) = app.get("/api/voices").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"]["provider"], "openai");
    assert_eq!(list["data"]["source"], "known");
    assert!(ids(&list).contains(&"alloy") && ids(&list).contains(&"marin"));

    // Kokoro-FastAPI lists its own.
    app.fake.set_profile(Profile::KokoroFastApi);
    let (_, list) = app.get("/api/voices").await;
    assert_eq!(list["data"]["source"], "provider", "{list}");
    assert_eq!(
        ids(&list),
        ["af_heart", "af_bella", "am_michael", "bf_emma", "bm_george"]
    );

    // A sample speaks the content's first scene, in the voice and at the speed asked.
    let content = content_with_scenes(&app, SCRIPT, 2).await;
    let first = content["scenes"][0]["narration"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, kind, ms) = audio(
        &app,
        &format!(
            "/api/voices/preview?voice=af_bella&speed=1.25&content_id={}",
            content["id"]
        ),
    )
    .await;
    assert_eq!((status, kind.as_str()), (200, "audio/wav"));
    assert!(ms.unwrap() > 100, "{ms:?}");
    let heard = app.fake.speech_voices();
    assert_eq!(
        heard.last(),
        Some(&(Some("af_bella".to_owned()), 1.25, first.clone()))
    );
    // Someone else's content is not found, and not spoken.
    let (status, _) = app
        .call(
            Who::CreatorB,
            reqwest::Method::GET,
            &format!(
                "/api/voices/preview?voice=af_bella&content_id={}",
                content["id"]
            ),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.fake.speech_voices().len(), heard.len());

    // Another site cannot make a signed-in browser spend a sample.
    let (status, _, answer) = app
        .send(
            app.client
                .get(app.url("/api/voices/preview?voice=alloy"))
                .header("sec-fetch-site", "cross-site"),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "csrf");
    assert_eq!(app.fake.speech_voices().len(), heard.len());
    // An espeak-ng voice, chosen while narration was offline, means nothing to a
    // provider: the admin's default goes instead.
    let (status, ..) = audio(
        &app,
        "/api/voices/preview?voice=en%2Bf3&text=Hello%20there.",
    )
    .await;
    assert_eq!(status, 200);
    let heard: Vec<_> = app.fake.speech_voices();
    assert_eq!(heard.last().unwrap().0.as_deref(), Some("alloy"));

    // Narration takes the content's voice and speed.
    let (status, _) = app
        .call(
            Who::CreatorA,
            reqwest::Method::PUT,
            &format!("/api/contents/{}/voice", content["id"]),
            Some(&json!({ "voice": "bm_george", "speed": 0.8 })),
        )
        .await;
    assert_eq!(status, 200);
    narrated_ms(&app, &content).await;
    let narrated: Vec<_> = app.fake.speech_voices()[heard.len()..].to_vec();
    assert_eq!(narrated.len(), 2, "{narrated:?}");
    for (voice, speed, _) in narrated {
        assert_eq!((voice.as_deref(), speed), (Some("bm_george"), 0.8));
    }
}
