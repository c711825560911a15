//! A creator's video clip as a scene's visual: checked and converted once at upload, shown
//! by its first frame, and played in the render: cut to its scene, looped or frozen when
//! shorter, fitted to every aspect ratio, its sound under the narration or left out.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{
    content_with_scenes, render_video, scene_frames, start_job, Db, TestApp, Who,
};
use crate::visuals::{picture, pixel, put_picture};

both_databases!(
    clips_play_in_their_scenes,
    clips_fit_every_frame,
    a_clip_is_checked_before_it_is_kept,
    pictures_and_clips_come_from_urls_by_the_outbound_rules
);

const FPS: i64 = 30;

/// Three scenes of about four seconds each.
const SCRIPT: &str =
    "The red and blue lights flash along the road while the truck races on to the fire. \
    The green fields turn to yellow as the long summer days go slowly by the river. \
    Every colour comes back again in the evening when the lights of the town begin to shine.";

/// A `w`×`h` clip showing each of `colours` for a second, with a 1 kHz tone when `tone`,
/// in `ext` (mp4 and mov: H.264 and AAC; webm: VP8 and Opus).
pub(crate) fn clip(ext: &str, (w, h): (u32, u32), colours: &[&str], tone: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("clip.{ext}"));
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-v", "error"]);
    for colour in colours {
        ffmpeg
            .args(["-f", "lavfi", "-i"])
            .arg(format!("color=c={colour}:s={w}x{h}:d=1:r=30"));
    }
    if tone {
        ffmpeg
            .args(["-f", "lavfi", "-i"])
            .arg(format!("sine=f=1000:d={}", colours.len()));
    }
    let mut graph: String = (0..colours.len()).map(|i| format!("[{i}:v]")).collect();
    graph.push_str(&format!("concat=n={}:v=1:a=0[v]", colours.len()));
    ffmpeg.args(["-filter_complex", &graph, "-map", "[v]"]);
    if tone {
        ffmpeg.args(["-map", &format!("{}:a", colours.len())]);
    }
    if ext == "webm" {
        ffmpeg.args(["-c:v", "libvpx", "-b:v", "200k", "-c:a", "libopus"]);
    } else {
        ffmpeg.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ]);
    }
    let made = ffmpeg.arg(&path).stdin(Stdio::null()).status().unwrap();
    assert!(made.success(), "making a {ext} clip");
    std::fs::read(path).unwrap()
}

/// The MP4 that ffmpeg makes with `args` (inputs and output options).
fn ffmpeg_mp4(args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args(args)
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg {args:?}");
    std::fs::read(path).unwrap()
}

/// The mean loudness of the 1 kHz band of `video` from `at` for `seconds`, in dB.
fn tone_db(video: &[u8], at: f64, seconds: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.mp4");
    std::fs::write(&path, video).unwrap();
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-ss",
            &at.to_string(),
            "-t",
            &seconds.to_string(),
            "-i",
        ])
        .arg(&path)
        .args([
            "-vn",
            "-af",
            "bandpass=f=1000:width_type=h:w=40,volumedetect",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("mean_volume: ").nth(1))
        .and_then(|v| v.trim_end_matches(" dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no volume in {log}"))
}

fn near([r, g, b]: [u8; 3], [tr, tg, tb]: [u8; 3]) -> bool {
    r.abs_diff(tr) <= 45 && g.abs_diff(tg) <= 45 && b.abs_diff(tb) <= 45
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const LIME: [u8; 3] = [0, 255, 0];
const YELLOW: [u8; 3] = [255, 255, 0];
const BLACK: [u8; 3] = [0, 0, 0];

async fn put_clip(
    app: &TestApp,
    id: i64,
    scene: i64,
    query: &str,
    kind: &str,
    body: Vec<u8>,
) -> Value {
    let (status, answer) = put_picture(
        app,
        Who::CreatorA,
        &format!("/api/contents/{id}/scenes/{scene}/visual?{query}"),
        kind,
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["data"].clone()
}

async fn clips_play_in_their_scenes(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.start_workers();
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let scenes: Vec<i64> = (0..3)
        .map(|i| content["scenes"][i]["id"].as_i64().unwrap())
        .collect();
    // A landscape clip on the 9:16 content, cropped, looping, its tone under the words.
    let saved = put_clip(
        &app,
        id,
        scenes[0],
        "fit=crop&when_shorter=loop&sound=100",
        "video/mp4",
        clip("mp4", (320, 240), &["red", "blue"], true),
    )
    .await;
    let first = &saved["scenes"][0];
    assert_eq!(first["own_image"], true, "{first}");
    assert_eq!(first["clip"]["when_shorter"], "loop");
    assert_eq!(first["clip"]["sound"], 100);
    let ms = first["clip"]["duration_ms"].as_i64().unwrap();
    assert!((1950..=2100).contains(&ms), "{ms}");
    // Its thumbnail is its first frame, in the content's frame, and stands as the picture.
    let thumb = app
        .client
        .get(app.url(&format!("/api/assets/{}", first["image_asset_id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.headers()["content-type"], "image/png");
    let thumb = thumb.bytes().await.unwrap().to_vec();
    assert!(near(pixel(&thumb, "png", 0.0, 360, 640), RED));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thumb.png"), &thumb).unwrap();
    assert_eq!(
        testkit::probe_size(&dir.path().join("thumb.png")).as_deref(),
        Ok("720,1280")
    );
    // A portrait WebM, padded, frozen on its last frame, silent.
    put_clip(
        &app,
        id,
        scenes[1],
        "fit=pad&when_shorter=freeze",
        "video/webm",
        clip("webm", (240, 320), &["lime", "yellow"], false),
    )
    .await;
    // A QuickTime clip longer than its scene: cut.
    let long = ["red", "blue", "red", "blue", "red", "blue", "red", "blue"];
    put_clip(
        &app,
        id,
        scenes[2],
        "",
        "video/quicktime",
        clip("mov", (1280, 720), &long, true),
    )
    .await;

    let job = start_job(&app, "/api/tts/generate", &content).await;
    assert_eq!(app.wait_for_job(job).await["job"]["status"], "completed");
    let lengths = scene_frames(&app, id).await;
    assert!(lengths.iter().all(|f| *f >= 3 * FPS), "{lengths:?}");
    let total: i64 = lengths.iter().sum();
    let video = render_video(&app, id, total, (720, 1280)).await;
    let at = |frame: i64| frame as f64 / FPS as f64;
    let start = [0, lengths[0], lengths[0] + lengths[1]];

    // Scene 1 plays red, blue, then red again: the clip loops.
    for (second, colour) in [(0.5, RED), (1.5, BLUE), (2.5, RED)] {
        let seen = pixel(&video, "mp4", second, 360, 640);
        assert!(near(seen, colour), "scene 1 at {second} s: {seen:?}");
    }
    // Scene 2: lime, then yellow held to the end; black bars above and below.
    for (second, colour) in [(0.5, LIME), (1.5, YELLOW), (2.7, YELLOW)] {
        let seen = pixel(&video, "mp4", at(start[1]) + second, 360, 640);
        assert!(near(seen, colour), "scene 2 at {second} s: {seen:?}");
    }
    let bar = pixel(&video, "mp4", at(start[1]) + 0.5, 360, 40);
    assert!(near(bar, BLACK), "padded: {bar:?}");
    // Scene 3: the long clip from its start, cut where the scene ends (the length above).
    for (second, colour) in [(0.5, RED), (1.5, BLUE), (2.5, RED)] {
        let seen = pixel(&video, "mp4", at(start[2]) + second, 360, 640);
        assert!(near(seen, colour), "scene 3 at {second} s: {seen:?}");
    }
    // The first clip's tone plays under its narration; the third's was left out.
    let with_tone = tone_db(&video, 0.3, 2.0);
    let without = tone_db(&video, at(start[2]) + 0.3, 2.0);
    assert!(
        with_tone > without + 15.0,
        "1 kHz: {with_tone} dB with the clip's sound, {without} dB without"
    );

    // How a clip plays can change after upload: held instead of looped, and the video is
    // out of date until rendered again.
    let (status, answer) = app
        .call(
            Who::CreatorA,
            reqwest::Method::PUT,
            &format!("/api/contents/{id}/scenes/{}/clip", scenes[0]),
            Some(&json!({ "when_shorter": "freeze", "sound": 0 })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"]["scenes"][0]["clip"]["when_shorter"],
        "freeze"
    );
    assert_eq!(answer["data"]["video_out_of_date"], true, "{answer}");
    let video = render_video(&app, id, total, (720, 1280)).await;
    let seen = pixel(&video, "mp4", 2.5, 360, 640);
    assert!(near(seen, BLUE), "the last frame held: {seen:?}");
    for (scene, body, status) in [
        (
            scenes[0],
            json!({ "when_shorter": "freeze", "sound": 101 }),
            422,
        ),
        (
            scenes[0],
            json!({ "when_shorter": "bounce", "sound": 0 }),
            422,
        ),
        (
            scenes[1] + 1000,
            json!({ "when_shorter": "loop", "sound": 0 }),
            404,
        ),
    ] {
        let (got, answer) = app
            .call(
                Who::CreatorA,
                reqwest::Method::PUT,
                &format!("/api/contents/{id}/scenes/{scene}/clip"),
                Some(&body),
            )
            .await;
        assert_eq!(got, status, "{body}: {answer}");
    }

    // A picture put on a clip's scene replaces the clip.
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &format!("/api/contents/{id}/scenes/{}/visual", scenes[0]),
        "image/png",
        picture("png", 90, 160, "blue"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["scenes"][0]["clip"], Value::Null);
    let video = render_video(&app, id, total, (720, 1280)).await;
    let seen = pixel(&video, "mp4", 2.5, 360, 640);
    assert!(near(seen, BLUE), "the picture, not the clip: {seen:?}");
}

async fn clips_fit_every_frame(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.start_workers();
    for (aspect, size, centre, edge) in [
        ("16:9", (1280, 720), (640, 360), (40, 360)),
        ("1:1", (720, 720), (360, 360), (40, 360)),
    ] {
        let (status, generated) = app
            .post(
                "/api/content/generate",
                &json!({ "mode": "script", "input": SCRIPT,
                         "presets": { "scene_count": 1, "aspect_ratio": aspect } }),
            )
            .await;
        assert_eq!(status, 200, "{generated}");
        let (status, saved) = app
            .post(
                "/api/contents",
                &json!({ "mode": "script", "input": SCRIPT, "script": generated["data"] }),
            )
            .await;
        assert_eq!(status, 201, "{saved}");
        let content = saved["data"].clone();
        let id = content["id"].as_i64().unwrap();
        let scene = content["scenes"][0]["id"].as_i64().unwrap();
        // A portrait clip padded into a wider frame: bars at the sides.
        put_clip(
            &app,
            id,
            scene,
            "fit=pad",
            "video/mp4",
            clip("mp4", (240, 320), &["lime"], false),
        )
        .await;
        let job = start_job(&app, "/api/tts/generate", &content).await;
        assert_eq!(app.wait_for_job(job).await["job"]["status"], "completed");
        let frames: i64 = scene_frames(&app, id).await.iter().sum();
        let video = render_video(&app, id, frames, size).await;
        let seen = pixel(&video, "mp4", 1.0, centre.0, centre.1);
        assert!(near(seen, LIME), "{aspect} centre: {seen:?}");
        let seen = pixel(&video, "mp4", 1.0, edge.0, edge.1);
        assert!(near(seen, BLACK), "{aspect} side bar: {seen:?}");
    }
}

async fn a_clip_is_checked_before_it_is_kept(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    let visual = format!("/api/contents/{id}/scenes/{scene}/visual");
    let good = clip("mp4", (160, 120), &["red"], false);
    let assets = app.count("assets").await;
    for (who, query, kind, body, status, field) in [
        (
            Who::CreatorA,
            "",
            "video/mp4",
            b"not a video at all".to_vec(),
            422,
            "body",
        ),
        (Who::CreatorA, "", "video/mp4", Vec::new(), 422, "body"),
        (
            Who::CreatorA,
            "",
            "video/mp4",
            picture("png", 64, 64, "red"),
            422,
            "body",
        ),
        (Who::CreatorA, "", "video/x-msvideo", good.clone(), 415, ""),
        (
            Who::CreatorA,
            "?sound=150",
            "video/mp4",
            good.clone(),
            422,
            "sound",
        ),
        (
            Who::CreatorA,
            "?when_shorter=bounce",
            "video/mp4",
            good.clone(),
            422,
            "when_shorter",
        ),
        (Who::CreatorB, "", "video/mp4", good.clone(), 404, ""),
    ] {
        let (got, answer) = put_picture(&app, who, &format!("{visual}{query}"), kind, body).await;
        assert_eq!(got, status, "{kind}{query}: {answer}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    // A type that is neither says what is taken.
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &visual,
        "application/octet-stream",
        good.clone(),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("video/mp4"),
        "{answer}"
    );
    // Audio only is not a clip.
    let audio_only = ffmpeg_mp4(&["-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac"]);
    let (status, answer) = put_picture(&app, Who::CreatorA, &visual, "video/mp4", audio_only).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no video"),
        "{answer}"
    );
    // One frame is a picture, not a clip.
    let one_frame = ffmpeg_mp4(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=160x120:r=30",
        "-frames:v",
        "1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
    ]);
    let (status, answer) = put_picture(&app, Who::CreatorA, &visual, "video/mp4", one_frame).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too short"),
        "{answer}"
    );
    assert_eq!(app.count("assets").await, assets, "nothing kept");
    let leftovers: Vec<_> = std::fs::read_dir(
        app.state
            .data_dir
            .join("media")
            .join(format!("content-{id}")),
    )
    .map(|d| d.flatten().map(|e| e.file_name()).collect())
    .unwrap_or_default();
    assert!(leftovers.is_empty(), "no file left: {leftovers:?}");

    // A full storage quota refuses a clip with the reason.
    let (status, _) = put_picture(&app, Who::CreatorA, &visual, "video/mp4", good.clone()).await;
    assert_eq!(status, 200);
    app.configure_llm_with(|v| v.storage_quota_mb = 1).await;
    sqlx::query("UPDATE assets SET bytes = 2097152 WHERE content_id = $1")
        .bind(id)
        .execute(app.state.pool())
        .await
        .unwrap();
    let (status, answer) = put_picture(&app, Who::CreatorA, &visual, "video/mp4", good).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "quota_exceeded");
}

/// A web server with a picture, a clip, a text file, a redirect and a 404; it counts the
/// requests it answers.
async fn media_server(
    picture: Vec<u8>,
    clip: Vec<u8>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use axum::http::header::{CONTENT_TYPE, LOCATION};
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = axum::Router::new()
        .route(
            "/picture.png",
            get(move || async move { ([(CONTENT_TYPE, "image/png")], picture) }),
        )
        .route(
            "/clip",
            get(move || async move { ([(CONTENT_TYPE, "video/mp4")], clip) }),
        )
        .route(
            "/anim.gif",
            get(|| async { ([(CONTENT_TYPE, "image/gif")], "GIF89a") }),
        )
        .route(
            "/notes.txt",
            get(|| async { ([(CONTENT_TYPE, "text/plain")], "not media") }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(LOCATION, "/picture.png")]) }),
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, hits)
}

async fn pictures_and_clips_come_from_urls_by_the_outbound_rules(db: Db) {
    use std::sync::atomic::Ordering;
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (addr, hits) = media_server(
        picture("png", 90, 160, "red"),
        clip("mp4", (160, 120), &["blue"], false),
    )
    .await;
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    let visual = format!("/api/contents/{id}/scenes/{scene}/visual");
    let put_url = |url: String| {
        let app = &app;
        let visual = visual.clone();
        async move {
            app.call(
                Who::CreatorA,
                reqwest::Method::PUT,
                &visual,
                Some(&json!({ "url": url })),
            )
            .await
        }
    };
    // This server is on a private address: refused before any request, by default.
    let (status, answer) = put_url(format!("http://{addr}/picture.png")).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "url");
    assert_eq!(
        answer["error"]["message"],
        "the URL points at a private address (127.0.0.1, loopback); refused"
    );
    let (status, answer) = put_url("ftp://example.com/picture.png".into()).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "the URL is a ftp: URL, not http or https; refused"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");

    // An admin lets URLs reach this network.
    app.configure_llm_with(|v| v.allowed_private_addresses = "127.0.0.0/8".into())
        .await;
    let (status, answer) = put_url(format!("http://{addr}/moved")).await;
    assert_eq!(status, 200, "{answer}");
    let shown = &answer["data"]["scenes"][0];
    assert_eq!(shown["own_image"], true, "{shown}");
    let stored = app
        .client
        .get(app.url(&format!("/api/assets/{}", shown["image_asset_id"])))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert!(
        near(pixel(&stored, "png", 0.0, 360, 640), RED),
        "the redirect's picture"
    );
    let (status, answer) = put_url(format!("http://{addr}/clip")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["data"]["scenes"][0]["clip"]["when_shorter"], "loop",
        "{answer}"
    );
    let assets = app.count("assets").await;
    for (path, status, says) in [
        (
            "/notes.txt",
            422,
            "the URL answered text/plain, not a picture or a video clip",
        ),
        (
            "/gone",
            422,
            "downloading from the URL failed with status 404 Not Found",
        ),
        (
            "/anim.gif",
            422,
            "the URL answered: Send the picture as image/png, image/jpeg or image/webp (got image/gif)",
        ),
    ] {
        let (got, answer) = put_url(format!("http://{addr}{path}")).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"]["message"], says);
    }
    for body in [
        json!({ "url": 5 }),
        json!({ "link": "http://example.com/a.png" }),
    ] {
        let (got, answer) = app
            .call(Who::CreatorA, reqwest::Method::PUT, &visual, Some(&body))
            .await;
        assert_eq!(got, 422, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_json");
    }
    assert_eq!(app.count("assets").await, assets, "nothing kept");
}
