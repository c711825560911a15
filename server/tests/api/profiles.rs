//! The whole pipeline (a script from a topic, pictures, narration, the render) against
//! the fake copying each self-hosted server's documented quirks (`testkit::Profile`).
//! What a server does not serve (speech on Ollama, chat on Kokoro-FastAPI) comes from a
//! second, plain fake on its own endpoint, as an admin would set it up with providers
//! per capability.

use serde_json::json;
use testkit::profiles::{Audio, Otherwise, Reply, SpeechKnobs};
use testkit::{Endpoint, FakeOpenAi, Knobs, Profile};

use crate::both_databases;
use app::model::SettingsUpdate;

use crate::helpers::{content_with_scenes, start_job, use_provider, Db, TestApp, TEST_KEY};

both_databases!(
    every_server_profile_runs_the_whole_pipeline,
    speech_in_whatever_format_the_server_has,
    provider_narration_captions_follow_its_transcript,
);

/// What the app had to do for one profile, from what the fakes saw.
fn fallbacks(fake: &FakeOpenAi) -> String {
    let chat = fake.chat_requests();
    let formats: Vec<String> = chat
        .iter()
        .map(|body| {
            let format = body["response_format"]["type"]
                .as_str()
                .unwrap_or("prompt")
                .to_owned();
            if body.get("temperature").is_some() {
                format
            } else {
                format!("{format} without temperature")
            }
        })
        .collect();
    let speech: Vec<String> = fake
        .speech_formats()
        .iter()
        .map(|f| {
            format!(
                "{}→{}",
                f.requested.as_deref().unwrap_or("none"),
                f.answered.unwrap_or("refused")
            )
        })
        .collect();
    format!(
        "chat [{}]; speech [{}]",
        formats.join(", "),
        speech.join(", ")
    )
}

async fn every_server_profile_runs_the_whole_pipeline(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    // What a profile's server lacks comes from here, keyless, as a local server would.
    let plain = FakeOpenAi::start().await;
    app.start_workers();
    let mut report = Vec::new();
    for profile in Profile::ALL {
        app.fake.set_profile(profile);
        app.fake.reset_counts();
        plain.reset_counts();
        let serves = |endpoint: Endpoint| {
            !profile
                .knobs()
                .missing
                .is_some_and(|m| m.endpoints.contains(&endpoint))
        };
        let url = |endpoint: Endpoint| {
            if serves(endpoint) {
                app.fake.base_url()
            } else {
                plain.base_url()
            }
        };
        // A model name per profile: what the app learns about one server is kept per
        // endpoint and model, and must not leak into the next profile's run.
        let model = format!("{}-model", profile.name());
        app.configure_llm_with(|v| {
            v.llm_base_url = url(Endpoint::Chat);
            v.llm_model = model.clone();
            v.image_provider = "openai".into();
            v.tts_provider = "openai".into();
            v.image_base_url = url(Endpoint::Images);
            v.tts_base_url = url(Endpoint::Speech);
            v.image_model = model.clone();
            v.tts_model = model.clone();
            v.rate_jobs_per_minute = 10_000;
            v.rate_generate_per_minute = 10_000;
        })
        .await;
        // Each media endpoint with a key of its own, as the profile's fake wants one.
        app::ssr::settings::update(
            &app.state,
            SettingsUpdate {
                image_api_key: Some(TEST_KEY.into()),
                tts_api_key: Some(TEST_KEY.into()),
                ..SettingsUpdate::default()
            },
        )
        .await
        .expect("media keys");

        let (status, generated) = app
            .post(
                "/api/content/generate",
                &json!({ "mode": "topic", "input": "octopus hearts", "presets": { "scene_count": 2, "target_seconds": 10 } }),
            )
            .await;
        assert_eq!(status, 200, "{}: {generated}", profile.name());
        let script = &generated["data"];
        let scenes = script["scenes"].as_array().expect("scenes");
        assert_eq!(scenes.len(), 2, "{}: {script}", profile.name());
        assert!(
            scenes.iter().all(|s| s["narration"]
                .as_str()
                .is_some_and(|n| n.contains("octopus hearts"))),
            "{}: {script}",
            profile.name()
        );
        let (status, saved) = app
            .post(
                "/api/contents",
                &json!({ "mode": "topic", "input": "octopus hearts", "script": script }),
            )
            .await;
        assert_eq!(status, 201, "{}: {saved}", profile.name());
        let content = saved["data"].clone();
        let id = content["id"].as_i64().unwrap();

        for path in ["/api/media/generate", "/api/tts/generate"] {
            let job = start_job(&app, path, &content).await;
            let detail = app.wait_for_job(job).await;
            assert_eq!(
                detail["job"]["status"],
                "completed",
                "{} {path}: {detail}",
                profile.name()
            );
        }
        let (status, job) = app
            .post(&format!("/api/contents/{id}/render"), &json!({}))
            .await;
        assert_eq!(status, 202, "{}: {job}", profile.name());
        let detail = app.wait_for_job(job["data"]["id"].as_i64().unwrap()).await;
        assert_eq!(
            detail["job"]["status"],
            "completed",
            "{}: {detail}",
            profile.name()
        );
        let video = app
            .client
            .get(app.url(&format!("/api/contents/{id}/video")))
            .send()
            .await
            .unwrap();
        assert_eq!(video.status(), 200, "{}", profile.name());
        assert!(video.bytes().await.unwrap().len() > 1000);

        let served = |e: Endpoint| if serves(e) { profile.name() } else { "plain" };
        report.push(format!(
            "{:<15} {}; images from {}, speech from {}",
            profile.name(),
            fallbacks(&app.fake),
            served(Endpoint::Images),
            served(Endpoint::Speech),
        ));
    }
    // What each server needed, for `--nocapture` readers and the README.
    println!("{}", report.join("\n"));
}

/// A speech server that has one format only (the others refused as Kokoro-FastAPI refuses
/// them): the narration comes in that format, is converted, lasts as long as the fake
/// spoke, and the next job asks for that format first.
async fn speech_in_whatever_format_the_server_has(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.start_workers();
    const REFUSED: Reply = Reply {
        status: 422,
        body: r#"{"detail":[{"type":"literal_error","loc":["body","response_format"],"msg":"Input should be the one format this server has","input":"{format}"}]}"#,
    };
    const ONLY: [(&str, Audio, &str); 4] = [
        ("mp3", Audio::Mp3 { xing: false }, "audio/mpeg"),
        ("opus", Audio::OggOpus, "audio/ogg"),
        ("aac", Audio::Aac, "audio/aac"),
        ("pcm", Audio::Pcm { rate: 24_000 }, "audio/pcm"),
    ];
    static FORMATS: [[(&str, Audio, &str); 1]; 4] = [[ONLY[0]], [ONLY[1]], [ONLY[2]], [ONLY[3]]];
    for formats in &FORMATS {
        let only = formats[0].0;
        app.fake.set_knobs(Knobs {
            speech: Some(SpeechKnobs {
                formats,
                default_format: only,
                otherwise: Otherwise::Refuse(REFUSED),
                any_case: false,
                chunked: false,
            }),
            ..Knobs::OPENAI
        });
        app.fake.reset_counts();
        let model = format!("{only}-only-speech");
        app.configure_llm_with(|v| {
            v.tts_provider = "openai".into();
            v.tts_model = model.clone();
            v.rate_jobs_per_minute = 10_000;
        })
        .await;
        let content = app
            .saved_content("The first sentence is spoken here. The second one follows it closely.")
            .await;
        let job = start_job(&app, "/api/tts/generate", &content).await;
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "completed", "{only}: {detail}");
        let answered: Vec<_> = app
            .fake
            .speech_formats()
            .into_iter()
            .filter_map(|f| f.answered)
            .collect();
        assert!(
            !answered.is_empty() && answered.iter().all(|a| *a == formats[0].1.name()),
            "{only}: {answered:?}"
        );
        // Each narration lasts what the fake spoke, measured from the converted samples.
        let scenes = content["scenes"].as_array().unwrap();
        for scene in scenes {
            let narration = scene["narration"].as_str().unwrap();
            let expected = testkit::speech_duration(narration, 1.0).as_millis() as i64;
            let ms: Option<i64> = sqlx::query_scalar(
                "SELECT a.duration_ms FROM scenes s JOIN assets a ON a.id = s.audio_asset_id WHERE s.id = $1",
            )
            .bind(scene["id"].as_i64().unwrap())
            .fetch_one(app.state.pool())
            .await
            .unwrap();
            let ms = ms.unwrap_or_default();
            // Lossy encoders pad a frame or two at the edges.
            assert!(
                (ms - expected).abs() <= 120,
                "{only}: {ms} ms, spoken {expected} ms"
            );
        }
        // Learned: the next job asks for the one format first, and only for it.
        app.fake.reset_counts();
        let job = start_job(&app, "/api/tts/generate", &content).await;
        assert_eq!(app.wait_for_job(job).await["job"]["status"], "completed");
        let asked: Vec<_> = app
            .fake
            .speech_formats()
            .into_iter()
            .map(|f| f.requested.unwrap_or_default())
            .collect();
        assert!(
            !asked.is_empty() && asked.iter().all(|a| a == only),
            "{only}: {asked:?}"
        );
    }
}

/// Provider narration with a transcription model set: the narration is transcribed with
/// word timestamps, and one-word-at-a-time captions begin within 150 ms of where the
/// transcript places each word (the share of letters would put the long words' neighbours
/// far off).
async fn provider_narration_captions_follow_its_transcript(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    use_provider(&app, |v| {
        v.image_provider = "builtin".into();
        v.transcription_model = "whisper-1".into();
        v.caption_style = "word".into();
    })
    .await;
    app.start_workers();
    let script = "I saw antidisestablishmentarianism and an incomprehensibilities list at a zoo.";
    let content = content_with_scenes(&app, script, 1).await;
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let job = start_job(&app, path, &content).await;
        assert_eq!(
            app.wait_for_job(job).await["job"]["status"],
            "completed",
            "{path}"
        );
    }
    let id = content["id"].as_i64().unwrap();
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let detail = app.wait_for_job(job["data"]["id"].as_i64().unwrap()).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");

    let transcripts = app.fake.transcripts();
    assert_eq!(transcripts.len(), 1, "one narration, transcribed once");
    let heard: Vec<(String, i64)> = transcripts[0]["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap().trim_matches('.').to_owned(),
                (w["start"].as_f64().unwrap() * 1000.0).round() as i64,
            )
        })
        .collect();
    let srt = app
        .client
        .get(app.url(&format!("/api/contents/{id}/subtitles")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cues: Vec<(i64, String)> = srt
        .split("\n\n")
        .filter_map(|block| {
            let mut lines = block.lines().skip(1);
            let times = lines.next()?;
            let text = lines.next()?.to_owned();
            let start = times.split(" --> ").next()?;
            let (hms, millis) = start.split_once(',')?;
            let parts: Vec<i64> = hms.split(':').filter_map(|p| p.parse().ok()).collect();
            let ms =
                ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + millis.parse::<i64>().ok()?;
            Some((ms, text))
        })
        .collect();
    assert_eq!(cues.len(), heard.len(), "{srt}");
    for ((start, text), (word, at)) in cues.iter().zip(&heard) {
        assert_eq!(text, word, "{srt}");
        assert!(
            (start - at).abs() <= 150,
            "{word:?} is heard at {at} ms; its cue begins at {start} ms\n{srt}"
        );
    }
}
