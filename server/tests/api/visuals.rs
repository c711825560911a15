//! A creator's own picture for a scene: checked and converted once to the content's frame
//! (cropped or padded), kept by "Generate images" for every scene, refused when it is not
//! what it claims or the quota is full, and in the rendered video.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{content_with_scenes, start_job, Db, TestApp, Who};

both_databases!(own_pictures_are_fitted_to_the_frame_kept_and_rendered);

const SCRIPT: &str = "Red is the colour of a fire truck. Blue is the colour of the sky.";

/// A `w`×`h` picture of one `colour`, encoded by ffmpeg as `ext` (png, jpg, webp).
pub(crate) fn picture(ext: &str, w: u32, h: u32, colour: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("picture.{ext}"));
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("color=c={colour}:s={w}x{h}"))
        .args(["-frames:v", "1"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::read(path).unwrap()
}

/// The RGB of the pixel at (`x`, `y`) of an image file's (or a video's, at `at` s) frame.
pub(crate) fn pixel(bytes: &[u8], format: &str, at: f64, x: u32, y: u32) -> [u8; 3] {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("input.{format}"));
    std::fs::write(&path, bytes).unwrap();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &at.to_string(), "-i"])
        .arg(&path)
        .args(["-frames:v", "1", "-vf"])
        // 2×2: a 1-pixel crop of 4:2:0 video leaves its chroma planes no width.
        .arg(format!("crop=2:2:{x}:{y}"))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(ffmpeg.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        ffmpeg.wait().unwrap().success(),
        "{format} at {at} s, ({x}, {y}): {:?}",
        testkit::probe_size(&path)
    );
    [out[0], out[1], out[2]]
}

fn reddish([r, g, b]: [u8; 3]) -> bool {
    r > 190 && g < 70 && b < 70
}

fn blackish([r, g, b]: [u8; 3]) -> bool {
    r < 30 && g < 30 && b < 30
}

pub(crate) async fn put_picture(
    app: &TestApp,
    who: Who,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let (status, _, answer) = app
        .send(
            app.client_for(who)
                .put(app.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await;
    (status, answer)
}

pub(crate) async fn bytes_of(app: &TestApp, path: &str) -> Vec<u8> {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.unwrap().to_vec()
}

async fn own_pictures_are_fitted_to_the_frame_kept_and_rendered(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, SCRIPT, 2).await;
    let id = content["id"].as_i64().unwrap();
    let first = content["scenes"][0]["id"].as_i64().unwrap();
    let second = content["scenes"][1]["id"].as_i64().unwrap();
    let visual = |scene: i64| format!("/api/contents/{id}/scenes/{scene}/visual");

    // A landscape picture on a 9:16 content: cropped, it fills the frame; padded, it
    // keeps its shape between black bars.
    let landscape = picture("png", 400, 300, "red");
    let (status, saved) = put_picture(
        &app,
        Who::CreatorA,
        &visual(first),
        "image/png",
        landscape.clone(),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let scene = &saved["data"]["scenes"][0];
    assert_eq!(scene["own_image"], true, "{saved}");
    let cropped = bytes_of(&app, &format!("/api/assets/{}", scene["image_asset_id"])).await;
    assert!(reddish(pixel(&cropped, "png", 0.0, 2, 2)), "cropped corner");
    assert!(
        reddish(pixel(&cropped, "png", 0.0, 360, 640)),
        "cropped centre"
    );
    let (status, saved) = put_picture(
        &app,
        Who::CreatorA,
        &format!("{}?fit=pad", visual(second)),
        "image/jpeg",
        picture("jpg", 400, 300, "red"),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let padded_id = saved["data"]["scenes"][1]["image_asset_id"].clone();
    let padded = bytes_of(&app, &format!("/api/assets/{padded_id}")).await;
    assert!(blackish(pixel(&padded, "png", 0.0, 2, 2)), "padded corner");
    assert!(
        reddish(pixel(&padded, "png", 0.0, 360, 640)),
        "padded centre"
    );
    let (_, headers, _) = app
        .send(app.client.get(app.url(&format!("/api/assets/{padded_id}"))))
        .await;
    assert_eq!(headers["content-type"], "image/png");

    // What is not what it claims, or not the caller's, is refused and changes nothing.
    let assets_before = app.count("assets").await;
    for (who, path, kind, body, status, code) in [
        (
            Who::CreatorA,
            visual(first),
            "image/png",
            b"not a picture".to_vec(),
            422,
            "validation",
        ),
        (
            Who::CreatorA,
            visual(first),
            "image/png",
            Vec::new(),
            422,
            "validation",
        ),
        (
            // A whole header, then the file stops: the decoder, not the header, says no.
            Who::CreatorA,
            visual(first),
            "image/png",
            landscape[..landscape.len() / 2].to_vec(),
            422,
            "validation",
        ),
        (
            Who::CreatorA,
            visual(first),
            "text/plain",
            landscape.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            Who::CreatorA,
            visual(first),
            "image/jpeg",
            landscape.clone(),
            422,
            "validation",
        ),
        (
            Who::CreatorA,
            format!("{}?fit=zoom", visual(first)),
            "image/png",
            landscape.clone(),
            422,
            "validation",
        ),
        (
            Who::CreatorB,
            visual(first),
            "image/png",
            landscape.clone(),
            404,
            "not_found",
        ),
        (
            Who::CreatorA,
            format!("/api/contents/{id}/scenes/999999/visual"),
            "image/png",
            landscape.clone(),
            404,
            "not_found",
        ),
    ] {
        let (got, answer) = put_picture(&app, who, &path, kind, body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {kind}: {answer}"
        );
    }
    // A few bytes claiming 20 000 × 20 000 pixels: refused from the header, never decoded.
    let mut bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bomb.extend_from_slice(&20_000u32.to_be_bytes());
    bomb.extend_from_slice(&20_000u32.to_be_bytes());
    bomb.extend_from_slice(b"\x08\x02\x00\x00\x00\x00\x00\x00\x00");
    let (status, answer) =
        put_picture(&app, Who::CreatorA, &visual(first), "image/png", bomb).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("20000×20000 pixels"),
        "{answer}"
    );
    assert_eq!(app.count("assets").await, assets_before);
    let (_, unchanged) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(unchanged["data"]["scenes"][0]["own_image"], true);

    // "Generate images" for every scene keeps the creator's own; naming one replaces it.
    let (status, answer) = app
        .post("/api/media/generate", &json!({ "content_id": id }))
        .await;
    assert_eq!(status, 422, "every scene is the creator's own: {answer}");
    assert_eq!(answer["error"]["field"], "scene_ids");
    let (status, _) = app
        .call(
            Who::CreatorA,
            reqwest::Method::DELETE,
            &visual(second),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let job = start_job(&app, "/api/media/generate", &content).await;
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(
        detail["data"]["tasks"].as_array().unwrap().len(),
        1,
        "{detail}"
    );
    assert_eq!(detail["data"]["tasks"][0]["scene_id"], second);
    app.drain().await;
    let narration = start_job(&app, "/api/tts/generate", &content).await;
    app.drain().await;
    let (_, narrated) = app.get(&format!("/api/jobs/{narration}")).await;
    assert_eq!(narrated["data"]["job"]["status"], "completed", "{narrated}");
    let (_, after) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(after["data"]["scenes"][0]["own_image"], true);
    assert_eq!(after["data"]["scenes"][1]["own_image"], false);

    // A picture task queued before the creator's upload finishes after it: the
    // creator's picture stays, and the generated one is not kept.
    let (status, queued) = app
        .post(
            "/api/media/generate",
            &json!({ "content_id": id, "scene_ids": [first] }),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let (status, uploaded) = put_picture(
        &app,
        Who::CreatorA,
        &visual(first),
        "image/png",
        picture("png", 300, 400, "red"),
    )
    .await;
    assert_eq!(status, 200, "{uploaded}");
    let own_asset = uploaded["data"]["scenes"][0]["image_asset_id"].clone();
    let assets_then = app.count("assets").await;
    app.drain().await;
    let (_, kept) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(
        kept["data"]["scenes"][0]["image_asset_id"], own_asset,
        "{kept}"
    );
    assert_eq!(kept["data"]["scenes"][0]["own_image"], true);
    assert_eq!(
        app.count("assets").await,
        assets_then,
        "the late picture is not kept"
    );

    // The video shows the creator's picture in its first scene.
    let (status, render) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{render}");
    app.drain().await;
    let video = bytes_of(&app, &format!("/api/contents/{id}/video")).await;
    assert!(
        reddish(pixel(&video, "mp4", 0.6, 360, 500)),
        "the first scene is the red picture"
    );

    // A full storage quota refuses a picture with the reason.
    app.configure_llm_with(|v| v.storage_quota_mb = 1).await;
    sqlx::query("UPDATE assets SET bytes = 2097152 WHERE content_id = $1")
        .bind(id)
        .execute(app.state.pool())
        .await
        .unwrap();
    let (status, answer) =
        put_picture(&app, Who::CreatorA, &visual(first), "image/png", landscape).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "quota_exceeded");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Your media take"));
    // The quota is the content owner's, whoever asks: an admin with room of their own
    // is refused on a creator's full content too, pictures and jobs alike.
    let (status, answer) = put_picture(
        &app,
        Who::Admin,
        &visual(first),
        "image/png",
        picture("png", 64, 64, "red"),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this content's owner"),
        "{answer}"
    );
    let (status, answer) = app
        .call(
            Who::Admin,
            reqwest::Method::POST,
            "/api/media/generate",
            Some(&json!({ "content_id": id, "scene_ids": [second] })),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
}
