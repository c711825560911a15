//! The video render from the offline providers (scene cards and espeak-ng), checked with
//! ffprobe: size, codecs, duration, and subtitles cued at the scene boundaries.

use std::process::Command;

use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{spawn_binary, Db, TestApp, Who};

both_databases!(
    renders_every_aspect_ratio,
    render_waits_for_every_scene_and_says_which,
    a_changed_scene_makes_the_video_out_of_date,
    cancel_stops_ffmpeg,
    render_when_ready_goes_from_script_to_video,
    music_plays_under_the_narration,
    a_killed_server_s_render_runs_again_and_serves_only_whole_files,
    a_corrupt_picture_names_its_scene,
    a_scene_without_words_is_silent_for_its_planned_time,
    a_relative_data_dir_renders,
    awkward_text_reaches_cards_and_subtitles_as_written,
    a_playlist_posing_as_music_never_reaches_other_files,
    a_failing_render_tells_creators_no_server_details,
    an_ffmpeg_killed_by_the_system_is_tried_again,
    files_belong_to_rows,
    a_storage_quota_refuses_new_media,
    a_data_dir_with_filter_syntax_in_its_name_renders,
    scripts_in_every_language_render_readable_cards_and_subtitles,
    captions_follow_the_words_as_espeak_speaks_them,
    a_still_picture_fades_in_frame_by_frame,
);

/// Pause after each scene's narration (the default setting).
const PAUSE_MS: i64 = 400;

async fn content(app: &TestApp, sentences: usize, aspect_ratio: &str) -> Value {
    let script: String = (1..=sentences)
        .map(|i| {
            format!("Scene number {i} says a few plain words about rivers and their long journey.")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (status, generated) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "script", "input": script,
                     "presets": { "scene_count": sentences, "aspect_ratio": aspect_ratio } }),
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
    saved["data"].clone()
}

async fn with_media(app: &TestApp, content: &Value) {
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let (status, job) = app
            .post(path, &json!({ "content_id": content["id"] }))
            .await;
        assert_eq!(status, 202, "{job}");
    }
    app.drain().await;
}

async fn render(app: &TestApp, id: i64) -> Value {
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["data"]["kind"], "render");
    app.drain().await;
    let (_, detail) = app.get(&format!("/api/jobs/{}", job["data"]["id"])).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    assert_eq!(detail["data"]["job"]["stage_message"], "The video is ready");
    detail["data"].clone()
}

fn probe(path: &std::path::Path) -> Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

/// (start, end) in ms of every cue of an SRT file.
fn srt_cues(text: &str) -> Vec<(i64, i64)> {
    let ms = |t: &str| -> i64 {
        let (hms, millis) = t.trim().split_once(',').unwrap();
        let parts: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + millis.parse::<i64>().unwrap()
    };
    text.lines()
        .filter_map(|l| l.split_once(" --> "))
        .map(|(a, b)| (ms(a), ms(b)))
        .collect()
}

async fn file_of(app: &TestApp, path: &str) -> Vec<u8> {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.unwrap().to_vec()
}

/// The content's current video, downloaded into `dir` as `name`.
async fn save_video(
    app: &TestApp,
    id: i64,
    dir: &std::path::Path,
    name: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        file_of(app, &format!("/api/contents/{id}/video")).await,
    )
    .unwrap();
    path
}

/// ffprobe's duration of a file, in seconds.
fn duration_of(probed: &Value) -> f64 {
    probed["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The current narration's duration of each scene, in order (None: no narration).
async fn narration_ms(app: &TestApp, content: i64) -> Vec<Option<i64>> {
    sqlx::query_scalar(
        "SELECT a.duration_ms FROM scenes s LEFT JOIN assets a ON a.id = s.audio_asset_id \
         WHERE s.content_id = $1 ORDER BY s.position",
    )
    .bind(content)
    .fetch_all(app.state.pool())
    .await
    .unwrap()
}

/// How long a scene with `sound_ms` of narration (or planned silence) lasts in the video:
/// plus the pause, in whole frames at 30 fps.
fn scene_length(sound_ms: i64) -> f64 {
    ((sound_ms + PAUSE_MS) as f64 * 30.0 / 1000.0).round() / 30.0
}

async fn renders_every_aspect_ratio(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    for (aspect, scenes, (w, h)) in [
        ("9:16", 5, (720, 1280)),
        ("16:9", 2, (1280, 720)),
        ("1:1", 2, (720, 720)),
    ] {
        let content = content(&app, scenes, aspect).await;
        let id = content["id"].as_i64().unwrap();
        with_media(&app, &content).await;
        render(&app, id).await;

        let dir = tempfile::tempdir().unwrap();
        let path = save_video(&app, id, dir.path(), "video.mp4").await;
        let info = probe(&path);
        let streams = info["streams"].as_array().unwrap();
        let v = streams
            .iter()
            .find(|s| s["codec_type"] == "video")
            .expect("a video stream");
        let a = streams
            .iter()
            .find(|s| s["codec_type"] == "audio")
            .expect("an audio stream");
        assert_eq!(
            (
                v["codec_name"].as_str(),
                v["width"].as_i64(),
                v["height"].as_i64()
            ),
            (Some("h264"), Some(w), Some(h)),
            "{aspect}"
        );
        assert_eq!(a["codec_name"], "aac");

        // Each scene lasts its narration plus the pause.
        let (_, after) = app.get(&format!("/api/contents/{id}")).await;
        let mut bounds = Vec::new();
        let mut offset = 0;
        for audio_ms in narration_ms(&app, id).await {
            let audio_ms = audio_ms.unwrap();
            bounds.push((offset, offset + audio_ms));
            // Each scene lasts whole frames (30 fps), as the render rounds it.
            let frames = ((audio_ms + PAUSE_MS) as f64 * 30.0 / 1000.0).round() as i64;
            offset += frames * 1000 / 30;
        }
        let expected = offset as f64 / 1000.0;
        let duration = duration_of(&info);
        assert!(
            (duration - expected).abs() <= 0.1,
            "{aspect}: {duration} s, expected {expected} s"
        );

        // The subtitles start with each scene and end with its narration.
        let srt = String::from_utf8(file_of(&app, &format!("/api/contents/{id}/subtitles")).await)
            .unwrap();
        let cues = srt_cues(&srt);
        assert!(cues.len() >= scenes, "{srt}");
        for (start, end) in &bounds {
            assert!(
                cues.iter().any(|c| (c.0 - start).abs() <= 40),
                "a cue starts at {start} ms: {srt}"
            );
            assert!(
                cues.iter().any(|c| (c.1 - end).abs() <= 40),
                "a cue ends at {end} ms: {srt}"
            );
        }
        assert!(!after["data"]["video_out_of_date"].as_bool().unwrap());
        // Scenes fade in from black (250 ms by default).
        let (edge, middle) = (luma(&path, 0.0), luma(&path, bounds[0].1 as f64 / 2000.0));
        assert!(
            edge + 15.0 < middle,
            "{aspect}: fade-in frame {edge}, mid-scene {middle}"
        );
    }
    // Seeking works: the player asks for ranges.
    let (status, headers, _) = app
        .send(
            app.client
                .get(app.url("/api/contents/1/video"))
                .header("range", "bytes=100-199"),
        )
        .await;
    assert_eq!(status, 206);
    assert_eq!(headers["content-length"], "100");
}

async fn render_waits_for_every_scene_and_says_which(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content(&app, 3, "9:16").await;
    let id = content["id"].as_i64().unwrap();
    let (status, error) = app.get(&format!("/api/contents/{id}/video")).await;
    assert_eq!(status, 409, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("render it first"));
    // Pictures for all, narration for the second scene only.
    app.post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    let second = content["scenes"][1]["id"].as_i64().unwrap();
    app.post(
        "/api/tts/generate",
        &json!({ "content_id": id, "scene_ids": [second] }),
    )
    .await;
    app.drain().await;
    let (status, error) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(
        error["error"]["message"],
        "Generate pictures and narration first: scenes 1 and 3 have no narration"
    );
    // Another creator's content does not exist for them.
    let (status, _) = app
        .call(
            crate::helpers::Who::CreatorB,
            reqwest::Method::POST,
            &format!("/api/contents/{id}/render"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.post("/api/contents/999999/render", &json!({})).await;
    assert_eq!(status, 404);
}

async fn a_changed_scene_makes_the_video_out_of_date(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content(&app, 2, "1:1").await;
    let id = content["id"].as_i64().unwrap();
    with_media(&app, &content).await;
    render(&app, id).await;
    let (_, first) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(first["data"]["video_out_of_date"], false);
    let first_video = first["data"]["video_asset_id"].clone();

    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    app.post(
        "/api/tts/generate",
        &json!({ "content_id": id, "scene_ids": [scene] }),
    )
    .await;
    app.drain().await;
    let (_, changed) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(changed["data"]["video_out_of_date"], true);
    assert_eq!(
        changed["data"]["video_asset_id"], first_video,
        "the old video stays until a new one is made"
    );

    // The changed scene's segment is encoded ahead, before anyone asks for a render.
    let before = wait_for_segments(&app, id, 3).await;
    let modified = |name: &String| {
        let path = app
            .state
            .data_dir
            .join(format!("media/content-{id}/segments/{name}"));
        std::fs::metadata(path).unwrap().modified().unwrap()
    };
    let stamps: Vec<_> = before.iter().map(|n| (n.clone(), modified(n))).collect();
    render(&app, id).await;
    let (_, again) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(again["data"]["video_out_of_date"], false);
    assert_ne!(again["data"]["video_asset_id"], first_video);
    // The render encoded nothing: it joined the kept segment and the one made ahead, and
    // dropped the changed scene's old one.
    let after = segments(&app, id);
    assert_eq!(after.len(), 2, "{before:?} {after:?}");
    for (name, stamp) in stamps.iter().filter(|(n, _)| after.contains(n)) {
        assert_eq!(modified(name), *stamp, "{name} was not written again");
    }
    assert!(after.is_subset(&before), "{before:?} {after:?}");
}

/// Waits (on the app's notifications, which segment preparation sends) until the content
/// has `n` finished segments.
async fn wait_for_segments(
    app: &TestApp,
    content: i64,
    n: usize,
) -> std::collections::HashSet<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let announced = app.state.work.notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        let done: std::collections::HashSet<String> = segments(app, content)
            .into_iter()
            .filter(|name| !name.contains("partial"))
            .collect();
        if done.len() >= n {
            return done;
        }
        tokio::time::timeout_at(deadline, announced)
            .await
            .unwrap_or_else(|_| panic!("never {n} segments: {done:?}"));
    }
}

fn segments(app: &TestApp, content: i64) -> std::collections::HashSet<String> {
    std::fs::read_dir(
        app.state
            .data_dir
            .join(format!("media/content-{content}/segments")),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .collect()
}

/// A queued render long enough (1080p, several scenes) to be caught in the middle:
/// (content id, job id).
async fn slow_render(app: &TestApp, scenes: usize, aspect_ratio: &str) -> (i64, i64) {
    app.configure_llm_with(|v| v.video_height = 1080).await;
    let content = content(app, scenes, aspect_ratio).await;
    let id = content["id"].as_i64().unwrap();
    with_media(app, &content).await;
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    (id, job["data"]["id"].as_i64().unwrap())
}

/// ffmpeg processes working on this app's files of this content.
fn ffmpeg_for(app: &TestApp, content: i64) -> usize {
    ffmpeg_pids(app, content).len()
}

/// The ffmpeg processes working on a content's files.
fn ffmpeg_pids(app: &TestApp, content: i64) -> Vec<u32> {
    let needle = app
        .state
        .data_dir
        .join("media")
        .join(format!("content-{content}/"))
        .display()
        .to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .filter(|(_, c)| c.starts_with("ffmpeg") && c.contains(&needle))
        .map(|(pid, _)| pid)
        .collect()
}

async fn cancel_stops_ffmpeg(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (id, job) = slow_render(&app, 6, "16:9").await;
    app.start_workers();
    let running = app
        .wait_until(job, |d| d["job"]["progress"].as_i64().unwrap_or(0) > 0)
        .await;
    assert!(
        running["job"]["stage_message"]
            .as_str()
            .unwrap()
            .starts_with("Rendering "),
        "{running}"
    );
    assert!(ffmpeg_for(&app, id) > 0, "ffmpeg is rendering");
    let (status, cancelled) = app
        .post(&format!("/api/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let ended = app.wait_for_job(job).await;
    assert_eq!(ended["job"]["status"], "cancelled", "{ended}");
    assert_eq!(ended["tasks"][0]["status"], "cancelled");
    assert_eq!(ffmpeg_for(&app, id), 0, "no ffmpeg left behind");
    let partial: Vec<String> = segments(&app, id)
        .into_iter()
        .filter(|name| name.contains(".partial-"))
        .collect();
    assert!(partial.is_empty(), "no partial segment left: {partial:?}");
    let (_, after) = app.get(&format!("/api/contents/{id}")).await;
    assert!(
        after["data"]["video_asset_id"].is_null(),
        "a cancelled render leaves no video"
    );
}

async fn render_when_ready_goes_from_script_to_video(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let one = content(&app, 2, "9:16").await;
    let two = content(&app, 2, "1:1").await;
    // One content with both Generate buttons, one through batches.
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let (status, job) = app
            .post(
                path,
                &json!({ "content_id": one["id"], "render_after": true }),
            )
            .await;
        assert_eq!(status, 202, "{job}");
    }
    for path in ["/api/media/batch", "/api/tts/batch"] {
        let (status, job) = app
            .post(
                path,
                &json!({ "content_ids": [two["id"]], "render_after": true }),
            )
            .await;
        assert_eq!(status, 202, "{job}");
    }
    app.drain().await;
    for content in [&one, &two] {
        let id = content["id"].as_i64().unwrap();
        let (_, renders) = app
            .get(&format!("/api/jobs?content_id={id}&kind=render"))
            .await;
        let renders = renders["data"].as_array().unwrap();
        assert_eq!(
            renders.len(),
            1,
            "exactly one render, started by the job that finished last"
        );
        assert_eq!(renders[0]["status"], "completed", "{renders:?}");
        let (_, after) = app.get(&format!("/api/contents/{id}")).await;
        assert!(after["data"]["video_asset_id"].is_i64(), "{after}");
    }
    // Without the option, nothing renders by itself.
    let three = content(&app, 1, "16:9").await;
    with_media(&app, &three).await;
    let (_, renders) = app
        .get(&format!("/api/jobs?content_id={}&kind=render", three["id"]))
        .await;
    assert_eq!(renders["data"], json!([]));
}

/// Mean volume in dB of `seconds` of the video's sound from `at`.
fn mean_volume(path: &std::path::Path, at: f64, seconds: f64) -> f64 {
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostats",
            "-ss",
            &format!("{at:.3}"),
            "-t",
            &format!("{seconds:.3}"),
            "-i",
        ])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .find_map(|l| l.split("mean_volume: ").nth(1))
        .and_then(|v| v.trim_end_matches(" dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no volume in {log}"))
}

async fn music_plays_under_the_narration(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content(&app, 2, "1:1").await;
    let id = content["id"].as_i64().unwrap();
    with_media(&app, &content).await;
    render(&app, id).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = save_video(&app, id, dir.path(), "plain.mp4").await;
    let speech_s = narration_ms(&app, id).await[0].unwrap() as f64 / 1000.0;

    // Bad uploads are named; another creator cannot touch the content.
    let music_path = dir.path().join("music.wav");
    let made = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=330:d=1.5",
            "-ar",
            "44100",
        ])
        .arg(&music_path)
        .status()
        .unwrap();
    assert!(made.success());
    let music = std::fs::read(&music_path).unwrap();
    let put = |kind: &'static str, body: Vec<u8>| {
        app.client
            .put(app.url(&format!("/api/contents/{id}/music")))
            .header("content-type", kind)
            .body(body)
    };
    let (status, _, error) = app.send(put("text/plain", music.clone())).await;
    assert_eq!(status, 415, "{error}");
    let (status, _, error) = app
        .send(put("audio/wav", b"not audio at all".to_vec()))
        .await;
    assert_eq!(
        (status, error["error"]["field"].as_str()),
        (422, Some("body")),
        "{error}"
    );
    let (status, _, error) = app
        .send(
            app.client_for(crate::helpers::Who::CreatorB)
                .put(app.url(&format!("/api/contents/{id}/music")))
                .header("content-type", "audio/wav")
                .body(music.clone()),
        )
        .await;
    assert_eq!(status, 404, "{error}");

    // Music shorter than the video loops; the video is now out of date until rendered.
    let (status, _, saved) = app.send(put("audio/wav", music)).await;
    assert_eq!(status, 200, "{saved}");
    assert!(saved["data"]["music_asset_id"].is_i64());
    assert_eq!(saved["data"]["video_out_of_date"], true);
    render(&app, id).await;
    let mixed = save_video(&app, id, dir.path(), "mixed.mp4").await;

    // In the pause after the first scene only music plays: present, and quieter than the
    // narration alone.
    let pause_plain = mean_volume(&plain, speech_s + 0.15, 0.2);
    let pause_music = mean_volume(&mixed, speech_s + 0.15, 0.2);
    let narration = mean_volume(&plain, 0.2, speech_s - 0.4);
    assert!(
        pause_plain < -60.0,
        "the pause is silent without music: {pause_plain} dB"
    );
    assert!(
        pause_music > -45.0,
        "music plays in the pause: {pause_music} dB"
    );
    assert!(
        pause_music < narration - 6.0,
        "music {pause_music} dB is well under narration {narration} dB"
    );
    let info = probe(&mixed);
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let plain_duration: f64 = probe(&plain)["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - plain_duration).abs() <= 0.1,
        "music is cut to the video: {duration} vs {plain_duration}"
    );

    let (status, removed) = app.delete(&format!("/api/contents/{id}/music")).await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed["data"]["music_asset_id"].is_null());
}

/// The real server killed with SIGKILL in the middle of a render (its second scene): no
/// clean-up runs, ffmpeg dies with it, the lease is left behind. Another worker renders
/// again from scratch, and only whole files are ever served.
async fn a_killed_server_s_render_runs_again_and_serves_only_whole_files(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (id, job) = slow_render(&app, 5, "9:16").await;
    let mut server = spawn_binary(&app, "warn,app::ssr::render=debug", &[]);
    server.wait_for_log("encoding a segment", 2).await;
    server.child.kill().expect("kill the server");
    server.child.wait().expect("reap the server");
    let (_, midway) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(midway["data"]["job"]["status"], "processing", "{midway}");
    assert_eq!(midway["data"]["tasks"][0]["attempt"], 1);
    // Nothing half-made is served.
    let (status, _) = app.get(&format!("/api/contents/{id}/video")).await;
    assert_eq!(status, 409);
    let dir = app.state.data_dir.join(format!("media/content-{id}"));
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names(&dir)
            .iter()
            .all(|n| !(n.starts_with("video-") && n.ends_with(".mp4") && !n.contains("partial"))),
        "{:?}",
        names(&dir)
    );

    // A worker here takes the render over once the lease runs out, and finishes it.
    app.start_workers();
    let done = app.wait_for_job(job).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    assert_eq!(done["tasks"][0]["attempt"], 2);
    let leftovers: Vec<String> = names(&dir)
        .into_iter()
        .chain(names(&dir.join("segments")))
        .filter(|n| n.contains("partial") || n.starts_with("render-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the retry cleared the first attempt's files: {leftovers:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let probed = probe(&save_video(&app, id, out.path(), "video.mp4").await);
    assert_eq!(probed["streams"].as_array().unwrap().len(), 2);
    let expected: f64 = narration_ms(&app, id)
        .await
        .into_iter()
        .map(|ms| scene_length(ms.unwrap()))
        .sum();
    let length = duration_of(&probed);
    assert!((length - expected).abs() <= 0.1, "{length} vs {expected}");
}

/// A scene whose words are removed is shown silently for its planned time: no narration
/// is made for it, nothing waits for one, and no subtitle falls in it.
async fn a_scene_without_words_is_silent_for_its_planned_time(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content(&app, 3, "16:9").await;
    let id = content["id"].as_i64().unwrap();
    let mut scenes: Vec<Value> = content["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!({ "id": s["id"], "narration": s["narration"], "visual_prompt": s["visual_prompt"], "seconds": s["seconds"] }))
        .collect();
    scenes[1]["narration"] = json!("");
    scenes[1]["seconds"] = json!(2.5);
    let (status, edited) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": content["title"], "scenes": scenes }),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let silent = content["scenes"][1]["id"].as_i64().unwrap();
    let (status, refused) = app
        .post(
            "/api/tts/generate",
            &json!({ "content_id": id, "scene_ids": [silent] }),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no words to narrate"),
        "{refused}"
    );
    let (status, job) = app
        .post("/api/tts/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        job["data"]["total_tasks"], 2,
        "no narration task for the silent scene"
    );
    let (status, job) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{job}");
    app.drain().await;
    render(&app, id).await;

    let narrated = narration_ms(&app, id).await;
    let (first, third) = (narrated[0].unwrap(), narrated[2].unwrap());
    let expected = scene_length(first) + scene_length(2_500) + scene_length(third);
    let out = tempfile::tempdir().unwrap();
    let path = save_video(&app, id, out.path(), "video.mp4").await;
    let length = duration_of(&probe(&path));
    assert!((length - expected).abs() <= 0.1, "{length} vs {expected}");
    let srt =
        String::from_utf8(file_of(&app, &format!("/api/contents/{id}/subtitles")).await).unwrap();
    let gap = (
        (scene_length(first) * 1000.0) as i64,
        ((scene_length(first) + scene_length(2_500)) * 1000.0) as i64,
    );
    let cues = srt_cues(&srt);
    assert!(!cues.is_empty());
    assert!(
        cues.iter()
            .all(|(start, end)| *end <= gap.0 + 1 || *start >= gap.1 - 1),
        "no cue during the silent scene {gap:?}: {cues:?}"
    );
    // The silent stretch is silent.
    assert!(
        mean_volume(&path, gap.0 as f64 / 1000.0 + 0.3, 1.5) < -60.0,
        "the silent scene has no sound"
    );
}

/// A content of `scenes` scenes whose picture number `broken` (from 0) is replaced on disk
/// by bytes that are no picture, rendered: the picture's storage key and the job's path.
async fn render_with_a_corrupt_picture(
    app: &TestApp,
    scenes: usize,
    aspect_ratio: &str,
    broken: usize,
) -> (String, String) {
    let content = content(app, scenes, aspect_ratio).await;
    let id = content["id"].as_i64().unwrap();
    with_media(app, &content).await;
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    let picture = detail["data"]["scenes"][broken]["image_asset_id"]
        .as_i64()
        .unwrap();
    let key: String = sqlx::query_scalar("SELECT storage_key FROM assets WHERE id = $1")
        .bind(picture)
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    std::fs::write(
        app.state.data_dir.join("media").join(&key),
        b"not a picture",
    )
    .unwrap();
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    app.drain().await;
    (key, format!("/api/jobs/{}", job["data"]["id"]))
}

async fn a_corrupt_picture_names_its_scene(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (key, path) = render_with_a_corrupt_picture(&app, 3, "1:1", 1).await;
    let (_, detail) = app.get(&path).await;
    let job = &detail["data"]["job"];
    assert_eq!(job["status"], "failed", "{detail}");
    let error = job["error"].as_str().unwrap();
    assert!(error.starts_with("scene 2: ffmpeg failed"), "{error}");
    assert_eq!(
        detail["data"]["tasks"][0]["attempt"], 1,
        "not retried: the file will not change"
    );
    // Scene 1 was being encoded beside scene 2 and was stopped with it: nothing of
    // either encode is left behind.
    let segments = app.state.data_dir.join("media").join(&key);
    let segments = segments.parent().unwrap().join("segments");
    let left: Vec<String> = std::fs::read_dir(&segments)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".partial-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "partial segments left: {left:?}");
}

/// Average luma (16–235) of the frame at `at` seconds.
fn luma(path: &std::path::Path, at: f64) -> f64 {
    lumas(path, at, 1)[0]
}

/// Average luma (16–235) of `frames` frames from `at` seconds on.
fn lumas(path: &std::path::Path, at: f64, frames: usize) -> Vec<f64> {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-ss", &format!("{at:.3}"), "-i"])
        .arg(path)
        .args([
            "-frames:v",
            &frames.to_string(),
            "-vf",
            "signalstats,metadata=print:key=lavfi.signalstats.YAVG",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&output.stderr);
    let values: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("lavfi.signalstats.YAVG=").nth(1))
        .filter_map(|v| v.trim().parse().ok())
        .take(frames)
        .collect();
    assert_eq!(values.len(), frames, "no luma in {log}");
    values
}

/// A newcomer's default data directory is relative (`./data`); ffmpeg runs in a work
/// directory of its own, so a relative path handed to it would point nowhere.
async fn a_relative_data_dir_renders(db: Db) {
    let Some(app) = TestApp::spawn_with_relative_data_dir(db).await else {
        return;
    };
    assert!(app.state.data_dir.is_absolute(), "{:?}", app.state.data_dir);
    let content = content(&app, 2, "16:9").await;
    with_media(&app, &content).await;
    let id = content["id"].as_i64().unwrap();
    render(&app, id).await;
    let out = tempfile::tempdir().unwrap();
    let probed = probe(&save_video(&app, id, out.path(), "video.mp4").await);
    assert_eq!(probed["streams"].as_array().unwrap().len(), 2);
}

/// Strings that ffmpeg's drawtext would expand (`%`, `%{…}`, `\\`) or libass would read as
/// markup (`{…}` tags, `\\N` breaks), and quoting characters of the filter syntax.
const AWKWARD: [&str; 10] = [
    "50%", "%%", "%{pts}", "%{e:1+1}", "\\", "C:\\new", "{\\i1}", "\\N", "'", ":",
];

/// Bounding box (x0, y0, x1, y1) of the bright pixels (luma > 200) of a picture, or of the
/// video frame at `at` seconds, within rows `rows` (fractions of the height); None when
/// nothing is bright there.
fn ink(path: &std::path::Path, at: Option<f64>, rows: (f64, f64)) -> Option<(u32, u32, u32, u32)> {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error"]);
    if let Some(at) = at {
        command.args(["-ss", &format!("{at:.3}")]);
    }
    let output = command
        .arg("-i")
        .arg(path)
        .args([
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "pgm",
            "-pix_fmt",
            "gray",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Binary PGM: "P5\n<w> <h>\n255\n" then one byte a pixel.
    let data = output.stdout;
    let mut fields = Vec::new();
    let mut at_byte = 0;
    while fields.len() < 4 {
        while data[at_byte].is_ascii_whitespace() {
            at_byte += 1;
        }
        let start = at_byte;
        while !data[at_byte].is_ascii_whitespace() {
            at_byte += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..at_byte]).into_owned());
    }
    let (w, h): (u32, u32) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = &data[at_byte + 1..];
    let (top, bottom) = ((rows.0 * h as f64) as u32, (rows.1 * h as f64) as u32);
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    for y in top..bottom {
        for x in 0..w {
            if pixels[(y * w + x) as usize] > 200 {
                bbox = Some(match bbox {
                    None => (x, y, x, y),
                    Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                });
            }
        }
    }
    bbox
}

/// `text` drawn literally (drawtext reading a file, expansion off) in white DejaVu Sans
/// Bold, the cards' font, at `font_size` px on black: the reference a card's words must
/// match.
fn literal_text_width(text: &str, font_size: u32, dir: &std::path::Path) -> u32 {
    let text_file = dir.join("reference.txt");
    std::fs::write(&text_file, text).unwrap();
    let out = dir.join("reference.png");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=1600x400", "-vf"])
        .arg(format!(
            "drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf:textfile={}:expansion=none:fontcolor=white:fontsize={font_size}:x=20:y=100",
            text_file.display()
        ))
        .args(["-frames:v", "1", "-update", "1"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let (x0, _, x1, _) = ink(&out, None, (0.0, 1.0)).expect("the reference has ink");
    x1 - x0 + 1
}

/// Creator text reaches the scene card and the burned-in subtitles exactly as written:
/// never expanded by drawtext (`50%` used to blank the card, `%{e:…}` to be evaluated)
/// nor read as libass markup (`{\\i1}` used to vanish, `\\N` to break the line).
async fn awkward_text_reaches_cards_and_subtitles_as_written(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    // A still picture and no fades: every frame of a scene shows its words at full light.
    app.configure_llm_with(|v| {
        v.video_motion = false;
        v.video_fade_ms = 0;
    })
    .await;
    // The first scene's words are the reference for the subtitles' line height and width.
    // Each string stands between two letters, so that a lone thin glyph (`'`) still shows
    // as ink after the video's compression.
    let reference = "(Ag) Ag".to_owned();
    let texts: Vec<String> = std::iter::once(reference)
        .chain(AWKWARD.iter().map(|awkward| format!("A{awkward}A")))
        .collect();
    let content = content(&app, texts.len(), "16:9").await;
    let id = content["id"].as_i64().unwrap();
    let scenes: Vec<Value> = content["scenes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&texts)
        .map(|(s, text)| json!({ "id": s["id"], "narration": text, "visual_prompt": s["visual_prompt"], "seconds": 4.0 }))
        .collect();
    assert_eq!(scenes.len(), texts.len());
    let (status, edited) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": content["title"], "scenes": scenes }),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    with_media(&app, &content).await;
    render(&app, id).await;

    let out = tempfile::tempdir().unwrap();
    let video = save_video(&app, id, out.path(), "video.mp4").await;
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    let narrated = narration_ms(&app, id).await;
    let mut scene_start = 0.0;
    let mut measured = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let card = out.path().join(format!("card-{i}.png"));
        let asset = detail["data"]["scenes"][i]["image_asset_id"]
            .as_i64()
            .unwrap();
        std::fs::write(&card, file_of(&app, &format!("/api/assets/{asset}")).await).unwrap();
        let (x0, _, x1, _) =
            ink(&card, None, (0.0, 1.0)).unwrap_or_else(|| panic!("the card of {text:?} is blank"));
        let card_width = x1 - x0 + 1;
        // Scene cards are 1280 px wide at 16:9, their words at a width/18 font size.
        let expected = literal_text_width(text, 1280 / 18, out.path());
        assert!(
            card_width.abs_diff(expected) <= 3.max(expected / 20),
            "the card of {text:?} is {card_width} px wide, the words as written {expected} px"
        );
        let speech_ms = narrated[i].unwrap();
        let middle = scene_start + speech_ms as f64 / 2000.0;
        let (sx0, sy0, sx1, sy1) = ink(&video, Some(middle), (0.7, 1.0))
            .unwrap_or_else(|| panic!("no subtitle for {text:?} at {middle:.2} s"));
        measured.push((text.as_str(), card_width, sx1 - sx0 + 1, sy1 - sy0 + 1));
        scene_start += scene_length(speech_ms);
    }
    let (_, ref_card, ref_width, ref_height) = measured[0];
    for &(text, card_width, width, height) in &measured[1..] {
        assert!(
            f64::from(height) <= 1.25 * f64::from(ref_height),
            "the subtitle of {text:?} is {height} px tall (one line: {ref_height} px)"
        );
        {
            // libass and drawtext draw the same font: widths keep their proportions.
            let subtitle = f64::from(width) / f64::from(ref_width);
            let card = f64::from(card_width) / f64::from(ref_card);
            assert!(
                (subtitle / card - 1.0).abs() <= 0.25,
                "the subtitle of {text:?} is {subtitle:.2}× the reference's width, its card {card:.2}×"
            );
        }
    }
}

/// An HLS playlist sent as "music" (audio/mpeg) naming another content's video by a
/// relative path: ffmpeg's auto-detection used to accept it (and mix the other content's
/// sound into this one's video). Uploads are read with the demuxer their type names and
/// re-encoded, so it is refused and nothing of it stays.
async fn a_playlist_posing_as_music_never_reaches_other_files(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let victim = content(&app, 1, "1:1").await;
    with_media(&app, &victim).await;
    render(&app, victim["id"].as_i64().unwrap()).await;
    let attacker = content(&app, 1, "1:1").await;
    let id = attacker["id"].as_i64().unwrap();
    let (victim_video,): (String,) = sqlx::query_as(
        "SELECT a.storage_key FROM contents c JOIN assets a ON a.id = c.video_asset_id WHERE c.id = $1",
    )
    .bind(victim["id"].as_i64().unwrap())
    .fetch_one(app.state.pool())
    .await
    .unwrap();
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n../{victim_video}\n#EXT-X-ENDLIST\n"
    );
    let request = app
        .client
        .put(app.url(&format!("/api/contents/{id}/music")))
        .header("content-type", "audio/mpeg")
        .body(playlist);
    let (status, _, refused) = app.send(request).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["field"], "body", "{refused}");
    let (_, after) = app.get(&format!("/api/contents/{id}")).await;
    assert!(after["data"]["music_asset_id"].is_null(), "{after}");
    let dir = app.state.data_dir.join(format!("media/content-{id}"));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.starts_with("music-") && !n.starts_with("upload-")),
        "{left:?}"
    );
}

/// A render that fails (a picture file ffmpeg cannot read) tells the creator which scene
/// failed in plain words: no server path, no ffmpeg output. Admins read ffmpeg's own
/// words with the task.
async fn a_failing_render_tells_creators_no_server_details(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (key, path) = render_with_a_corrupt_picture(&app, 2, "16:9", 0).await;
    let (_, seen) = app.get(&path).await;
    assert_eq!(seen["data"]["job"]["status"], "failed", "{seen}");
    let data_dir = app.state.data_dir.display().to_string();
    let file_name = key.rsplit('/').next().unwrap();
    for error in [
        seen["data"]["job"]["error"].as_str().unwrap(),
        seen["data"]["tasks"][0]["last_error"].as_str().unwrap(),
    ] {
        assert!(error.starts_with("scene 1: ffmpeg failed"), "{error}");
        assert!(
            !error.contains(&data_dir) && !error.contains(file_name) && !error.contains('/'),
            "a creator sees no server path: {error}"
        );
    }
    assert!(
        seen["data"]["tasks"][0].get("error_detail").is_none(),
        "{seen}"
    );
    let admin = app.client_for(Who::Admin);
    let (_, _, as_admin) = app.send(admin.get(app.url(&path))).await;
    let detail = as_admin["data"]["tasks"][0]["error_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("Invalid data found"),
        "an admin reads ffmpeg's own words: {as_admin}"
    );
    // And on the status page.
    let (_, _, status) = app.send(admin.get(app.url("/api/settings/status"))).await;
    let failure = &status["data"]["recent_failures"][0];
    assert_eq!(failure["kind"], "content.render", "{status}");
    assert!(
        failure["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Invalid data found")),
        "{status}"
    );
}

/// ffmpeg killed from outside (as the OOM killer does) is the server's trouble, not the
/// content's: the render is tried again and completes, instead of failing for good.
async fn an_ffmpeg_killed_by_the_system_is_tried_again(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (id, job) = slow_render(&app, 4, "16:9").await;
    app.start_workers();
    app.wait_until(job, |d| d["job"]["progress"].as_i64().unwrap_or(0) > 0)
        .await;
    let pids = ffmpeg_pids(&app, id);
    assert!(!pids.is_empty(), "ffmpeg is rendering");
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let done = app.wait_for_job(job).await;
    assert_eq!(done["job"]["status"], "completed", "{done}");
    assert_eq!(done["tasks"][0]["attempt"], 2, "{done}");
}

/// The files directly in a content's media directory (its cached segments aside).
fn content_files(app: &TestApp, id: i64) -> std::collections::BTreeSet<String> {
    let dir = app.state.data_dir.join(format!("media/content-{id}"));
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| format!("content-{id}/{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

async fn asset_keys(app: &TestApp, id: i64) -> std::collections::BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT storage_key FROM assets WHERE content_id = $1")
        .bind(id)
        .fetch_all(app.state.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A WAV of `seconds` of noise (no encoder squeezes it below its bit rate), as a
/// creator's music file.
fn music_file(dir: &std::path::Path, seconds: u32) -> Vec<u8> {
    let path = dir.join(format!("music-{seconds}.wav"));
    let made = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("anoisesrc=d={seconds}:a=0.1"))
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::read(path).unwrap()
}

async fn put_music(app: &TestApp, id: i64, body: Vec<u8>) -> (u16, Value) {
    let request = app
        .client
        .put(app.url(&format!("/api/contents/{id}/music")))
        .header("content-type", "audio/wav")
        .body(body);
    let (status, _, answer) = app.send(request).await;
    (status, answer)
}

/// Files belong to rows: pictures made again, words edited (their narration dropped), a
/// scene deleted, music replaced, the video made again; at every step the content's
/// directory holds exactly the files of its asset rows, and every row is current. A file
/// a crash left behind is swept, and deleting the content removes everything of it.
async fn files_belong_to_rows(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content(&app, 3, "16:9").await;
    let id = content["id"].as_i64().unwrap();
    let check = |step: &'static str| {
        let app = &app;
        async move {
            let files = content_files(app, id);
            let rows = asset_keys(app, id).await;
            assert_eq!(files, rows, "after {step}");
            let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
            let d = &detail["data"];
            let current = d["scenes"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| [&s["image_asset_id"], &s["audio_asset_id"]])
                .chain([
                    &d["video_asset_id"],
                    &d["subtitles_asset_id"],
                    &d["music_asset_id"],
                ])
                .filter(|v| v.is_i64())
                .count();
            assert_eq!(rows.len(), current, "after {step}: every row is current");
        }
    };
    with_media(&app, &content).await;
    check("pictures and narration").await;
    render(&app, id).await;
    check("a render").await;
    let (status, _) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202);
    app.drain().await;
    check("pictures made again").await;

    let scenes: Vec<Value> = content["scenes"].as_array().unwrap()[..2]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let narration = if i == 0 { json!("New words for the first scene.") } else { s["narration"].clone() };
            json!({ "id": s["id"], "narration": narration, "visual_prompt": s["visual_prompt"], "seconds": s["seconds"] })
        })
        .collect();
    let (status, edited) = app
        .put(
            &format!("/api/contents/{id}"),
            &json!({ "title": content["title"], "scenes": scenes }),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    check("words edited and a scene deleted").await;

    let dir = tempfile::tempdir().unwrap();
    for seconds in [2, 3] {
        let (status, answer) = put_music(&app, id, music_file(dir.path(), seconds)).await;
        assert_eq!(status, 200, "{answer}");
        check("music").await;
    }
    let (status, _) = app
        .post("/api/tts/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202);
    app.drain().await;
    render(&app, id).await;
    check("narration and the video made again").await;
    let (status, _) = app.delete(&format!("/api/contents/{id}/music")).await;
    assert_eq!(status, 200);
    check("music removed").await;

    // A file a crash left between writing it and recording its row.
    let orphan = app
        .state
        .data_dir
        .join(format!("media/content-{id}/scene-9-9-9.png"));
    std::fs::write(&orphan, b"left behind").unwrap();
    let removed = app::ssr::media::sweep(&app.state, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!orphan.exists());
    check("a sweep").await;

    let (status, _) = app.delete(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 204);
    assert!(
        !app.state
            .data_dir
            .join(format!("media/content-{id}"))
            .exists(),
        "nothing of a deleted content stays, segments included"
    );
}

/// An admin's storage quota: once a creator's media reach it, new media (pictures,
/// narration, renders, music) are refused with 413 and a message saying what to do.
async fn a_storage_quota_refuses_new_media(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm_with(|v| {
        v.storage_quota_mb = 1;
        v.rate_jobs_per_minute = 10_000;
        v.rate_generate_per_minute = 10_000;
    })
    .await;
    let content = content(&app, 1, "1:1").await;
    let id = content["id"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A minute of music, stored as AAC at 192 kb/s: about 1.4 MiB, past the quota.
    let (status, answer) = put_music(&app, id, music_file(dir.path(), 60)).await;
    assert_eq!(status, 200, "under the quota until now: {answer}");
    let (status, refused) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"]["code"], "quota_exceeded");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota is 1 MiB"),
        "{refused}"
    );
    let (status, _) = put_music(&app, id, music_file(dir.path(), 2)).await;
    assert_eq!(status, 413);
    // Making room lets new media in again.
    let (status, _) = app.delete(&format!("/api/contents/{id}/music")).await;
    assert_eq!(status, 200);
    let (status, job) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 202, "{job}");
}

/// A data directory whose name holds what ffmpeg's filter syntax reads (`'`, `:`, `,`):
/// scene cards used to fail for every scene.
async fn a_data_dir_with_filter_syntax_in_its_name_renders(db: Db) {
    let Some(app) = TestApp::spawn_configured(db, |c| {
        c.data_dir = c.data_dir.join("bob's videos: 2026, test");
    })
    .await
    else {
        return;
    };
    let content = content(&app, 2, "16:9").await;
    with_media(&app, &content).await;
    let id = content["id"].as_i64().unwrap();
    render(&app, id).await;
}

/// Scripts in eight languages and one 300-letter word: each is detected as its language,
/// every letter has an installed font (fontconfig's coverage, so no tofu), and neither
/// the card's words nor the burned-in subtitle reach the frame's edge.
async fn scripts_in_every_language_render_readable_cards_and_subtitles(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm_with(|v| {
        v.video_motion = false;
        v.video_fade_ms = 0;
    })
    .await;
    let long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(7);
    let scripts: Vec<(&str, String)> = vec![
        ("English", "Octopuses 🐙 have three hearts. Two of them pump blood through the gills, and the third serves the rest of the body.".into()),
        ("Chinese", "章鱼有三颗心脏。其中两颗把血液泵过鳃，第三颗负责全身的血液循环。它们的血液是蓝色的，因为含有铜。".into()),
        ("Japanese", "タコには心臓が三つあります。そのうち二つはえらに血液を送り、残りの一つは全身に血液を送ります。".into()),
        ("Arabic", "للأخطبوط ثلاثة قلوب. اثنان منها يضخان الدم عبر الخياشيم، والثالث يضخه إلى بقية الجسم.".into()),
        ("Thai", "ปลาหมึกยักษ์มีหัวใจสามดวง สองดวงสูบฉีดเลือดผ่านเหงือก และอีกดวงหนึ่งสูบฉีดเลือดไปทั่วร่างกาย".into()),
        ("Hindi", "ऑक्टोपस के तीन दिल होते हैं। उनमें से दो गलफड़ों में खून पंप करते हैं, और तीसरा पूरे शरीर में।".into()),
        ("German", "Kraken haben drei Herzen. Zwei davon pumpen das Blut durch die Kiemen, das dritte versorgt den übrigen Körper.".into()),
        ("Spanish", "Los pulpos tienen tres corazones. Dos bombean sangre a través de las branquias y el tercero al resto del cuerpo.".into()),
        ("English", format!("This word never ends: {long_word}. See https://example.com/{long_word}/index.html now.")),
    ];
    let out = tempfile::tempdir().unwrap();
    for (language, script) in &scripts {
        let (status, generated) = app
            .post(
                "/api/content/generate",
                &json!({ "mode": "script", "input": script, "presets": { "scene_count": 1, "aspect_ratio": "9:16" } }),
            )
            .await;
        assert_eq!(status, 200, "{generated}");
        assert_eq!(
            generated["data"]["presets"]["language"], *language,
            "{script}"
        );
        let (status, saved) = app
            .post(
                "/api/contents",
                &json!({ "mode": "script", "input": script, "script": generated["data"] }),
            )
            .await;
        assert_eq!(status, 201, "{saved}");
        let content = saved["data"].clone();
        let id = content["id"].as_i64().unwrap();
        with_media(&app, &content).await;
        render(&app, id).await;

        let mut uncovered: Vec<char> = script
            .chars()
            .filter(|c| !c.is_whitespace() && !fontconfig_covers(*c))
            .collect();
        uncovered.dedup();
        assert!(
            uncovered.is_empty(),
            "{language}: no installed font has {uncovered:?}"
        );

        let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
        let asset = detail["data"]["scenes"][0]["image_asset_id"]
            .as_i64()
            .unwrap();
        let card = out.path().join(format!("card-{id}.png"));
        std::fs::write(&card, file_of(&app, &format!("/api/assets/{asset}")).await).unwrap();
        // 9:16 at 720: 720×1280.
        let (x0, y0, x1, y1) =
            ink(&card, None, (0.0, 1.0)).unwrap_or_else(|| panic!("{language}: the card is blank"));
        assert!(
            x0 >= 36 && x1 <= 720 - 36 && y0 >= 64 && y1 <= 1280 - 64,
            "{language}: the card's words reach ({x0}, {y0})–({x1}, {y1}) of 720×1280"
        );

        let video = save_video(&app, id, out.path(), &format!("video-{id}.mp4")).await;
        let speech_ms = narration_ms(&app, id).await[0].unwrap();
        // The first cue, halfway through: the bottom quarter holds only the subtitle.
        let at = speech_ms as f64 / 1000.0 * 0.1;
        let (sx0, _, sx1, _) = ink(&video, Some(at), (0.75, 1.0))
            .unwrap_or_else(|| panic!("{language}: no subtitle at {at:.2} s"));
        assert!(
            sx0 >= 4 && sx1 <= 720 - 5,
            "{language}: the subtitle spans x {sx0}–{sx1} of 720"
        );
    }
}

/// Whether fontconfig has any installed font with a glyph for `c`.
fn fontconfig_covers(c: char) -> bool {
    let output = Command::new("fc-list")
        .arg(format!(":charset={:x}", c as u32))
        .arg("family")
        .output()
        .expect("fc-list runs");
    !output.stdout.is_empty()
}

/// With one word at a time, each word's cue in the `.srt` begins within 150 ms of where
/// espeak-ng places that word (asked again here, from its library); with the highlight
/// style, the spoken word is burned in in the highlight colour.
async fn captions_follow_the_words_as_espeak_speaks_them(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm_with(|v| {
        v.caption_style = "word".into();
        v.video_motion = false;
        v.video_fade_ms = 0;
        v.caption_highlight_colour = "#FF0000".into();
    })
    .await;
    let content = content(&app, 3, "16:9").await;
    let id = content["id"].as_i64().unwrap();
    with_media(&app, &content).await;
    render(&app, id).await;
    let srt =
        String::from_utf8(file_of(&app, &format!("/api/contents/{id}/subtitles")).await).unwrap();
    let cues = srt_cues(&srt);
    let texts: Vec<&str> = srt
        .split("\n\n")
        .filter_map(|block| block.lines().nth(2))
        .collect();

    let espeak = app::ssr::espeak::Espeak::load();
    let narrated = narration_ms(&app, id).await;
    let mut expected = Vec::new();
    let mut offset = 0i64;
    for (i, scene) in content["scenes"].as_array().unwrap().iter().enumerate() {
        let narration = scene["narration"].as_str().unwrap();
        let spoken = espeak
            .speak("en", narration, 175)
            .expect("espeak-ng speaks");
        let chars: Vec<char> = narration.chars().collect();
        for word in &spoken.words {
            let text: String = chars[word.char_start..word.char_start + word.char_len]
                .iter()
                .collect();
            expected.push((text, offset + word.start_ms));
        }
        offset += (scene_length(narrated[i].unwrap()) * 1000.0).round() as i64;
    }
    assert_eq!(cues.len(), expected.len(), "{srt}");
    for (((start, _), text), (word, at)) in cues.iter().zip(&texts).zip(&expected) {
        assert_eq!(text, word, "{srt}");
        assert!(
            (start - at).abs() <= 150,
            "{word:?} is spoken at {at} ms; its cue begins at {start} ms"
        );
    }

    // Highlight: the lines, the spoken word in red, burned in.
    app.configure_llm_with(|v| {
        v.caption_style = "highlight".into();
        v.video_motion = false;
        v.video_fade_ms = 0;
        v.caption_highlight_colour = "#FF0000".into();
    })
    .await;
    render(&app, id).await;
    let out = tempfile::tempdir().unwrap();
    let video = save_video(&app, id, out.path(), "highlight.mp4").await;
    let middle = narrated[0].unwrap() as f64 / 2000.0;
    assert!(
        red_pixels(&video, middle, (0.7, 1.0)) > 50,
        "no highlighted word in the subtitle at {middle:.2} s"
    );
}

/// How many strongly red pixels the frame at `at` s has in the band of rows (fractions).
fn red_pixels(path: &std::path::Path, at: f64, rows: (f64, f64)) -> usize {
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-ss",
            &format!("{at:.3}"),
        ])
        .arg("-i")
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success());
    let probed = probe(path);
    let w = probed["streams"][0]["width"].as_u64().unwrap() as usize;
    let h = output.stdout.len() / 3 / w;
    let (top, bottom) = ((rows.0 * h as f64) as usize, (rows.1 * h as f64) as usize);
    output.stdout[top * w * 3..bottom * w * 3]
        .chunks(3)
        .filter(|p| p[0] > 180 && p[1] < 80 && p[2] < 80)
        .count()
}

/// With motion off a scene's picture is one still frame repeated: each frame still gets a
/// time of its own, so a fade brightens on every frame (a picture read at 25 fps once
/// gave pairs of frames the same time, and the fade stepped).
async fn a_still_picture_fades_in_frame_by_frame(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.configure_llm_with(|v| {
        v.video_motion = false;
        v.video_fade_ms = 500;
    })
    .await;
    let content = content(&app, 1, "16:9").await;
    let id = content["id"].as_i64().unwrap();
    with_media(&app, &content).await;
    render(&app, id).await;
    let out = tempfile::tempdir().unwrap();
    let path = save_video(&app, id, out.path(), "video.mp4").await;
    let brightness = lumas(&path, 0.0, 15);
    assert!(
        brightness.windows(2).all(|w| w[1] > w[0] + 0.01),
        "every frame of the 500 ms fade-in is brighter than the one before: {brightness:?}"
    );
}
