//! Transitions between scenes: cut, fade through black, and crossfade, slide and wipe
//! drawn by ffmpeg's `xfade` at each join. The video lasts what its plan says whatever the
//! transition, a frame at a join shows both scenes, and a re-render encodes again only the
//! scene that changed and the joins beside it (counted by the render's frame counter).

use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{
    content_with_scenes, render_video, scene_frames, start_job, Db, TestApp, Who,
};
use crate::visuals::{picture, pixel, put_picture};

both_databases!(
    transitions_are_drawn_at_the_joins_and_re_rendered_piecewise,
    a_transition_is_one_of_the_five,
);

/// The default in Settings: an `xfade` join takes `FADE_MS` from each side.
const FADE_MS: i64 = 250;
const FPS: i64 = 30;

const SCRIPT: &str = "Red is the colour of a fire truck on its way. \
    Blue is the colour of the sky above the sea. \
    Green is the colour of the grass in the spring.";

/// The render's frame counter for `piece` (scene or join), from what `/metrics` serves.
async fn frames_encoded(app: &TestApp, piece: &str) -> i64 {
    let text = app::ssr::metrics::scrape(&app.state).await.unwrap();
    let series = format!("crevid_render_frames_encoded_total{{piece=\"{piece}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn set_transition(app: &TestApp, id: i64, transition: &str) -> Value {
    let (status, answer) = app
        .call(
            Who::CreatorA,
            reqwest::Method::PUT,
            &format!("/api/contents/{id}/transition"),
            Some(&json!({ "transition": transition })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["presets"]["transition"], transition);
    answer["data"].clone()
}

fn near(value: u8, target: u8, by: u8) -> bool {
    value.abs_diff(target) <= by
}

async fn transitions_are_drawn_at_the_joins_and_re_rendered_piecewise(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.start_workers();
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    assert_eq!(content["presets"]["transition"], "fade", "the default");
    let scenes: Vec<i64> = (0..3)
        .map(|i| content["scenes"][i]["id"].as_i64().unwrap())
        .collect();
    // One colour a scene, so that a frame tells which scenes it shows.
    for (scene, colour) in scenes.iter().zip(["red", "blue", "lime"]) {
        let (status, answer) = put_picture(
            &app,
            Who::CreatorA,
            &format!("/api/contents/{id}/scenes/{scene}/visual"),
            "image/png",
            picture("png", 90, 160, colour),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let job = start_job(&app, "/api/tts/generate", &content).await;
    assert_eq!(app.wait_for_job(job).await["job"]["status"], "completed");
    let lengths = scene_frames(&app, id).await;
    let total: i64 = lengths.iter().sum();
    let half = (FADE_MS * FPS + 999) / 1000;
    assert!(lengths.iter().all(|f| f / 3 >= half), "{lengths:?}");

    // Crossfade: each join blends the two scenes, centred on where the first one ends.
    // (Counted from before each change: segments may be prepared as soon as it is made.)
    let (scenes_before, joins_before) = (
        frames_encoded(&app, "scene").await,
        frames_encoded(&app, "join").await,
    );
    set_transition(&app, id, "crossfade").await;
    let video = render_video(&app, id, total, (720, 1280)).await;
    // Each scene's own frames and the ends it lends (two joins of 2·half each), once;
    // then each join's frames, once.
    assert_eq!(
        frames_encoded(&app, "scene").await - scenes_before,
        total + 2 * 2 * half
    );
    assert_eq!(
        frames_encoded(&app, "join").await - joins_before,
        2 * 2 * half
    );
    let at = |frame: i64| frame as f64 / FPS as f64;
    let (w, y) = (720, 100);
    let inside_first = pixel(&video, "mp4", at(lengths[0] / 2), w / 2, y);
    assert!(
        near(inside_first[0], 255, 40) && inside_first[2] < 40,
        "{inside_first:?}"
    );
    let inside_second = pixel(&video, "mp4", at(lengths[0] + lengths[1] / 2), w / 2, y);
    assert!(
        near(inside_second[2], 255, 40) && inside_second[0] < 40,
        "{inside_second:?}"
    );
    let blended = pixel(&video, "mp4", at(lengths[0]), w / 2, y);
    assert!(
        near(blended[0], 128, 60) && near(blended[2], 128, 60),
        "half red, half blue at the join: {blended:?}"
    );

    // Another transition redraws the joins only: every scene's frames are kept.
    let scenes_before = frames_encoded(&app, "scene").await;
    let joins_before = frames_encoded(&app, "join").await;
    let detail = set_transition(&app, id, "slide").await;
    assert_eq!(detail["video_out_of_date"], true, "{detail}");
    let video = render_video(&app, id, total, (720, 1280)).await;
    assert_eq!(frames_encoded(&app, "scene").await - scenes_before, 0);
    assert_eq!(
        frames_encoded(&app, "join").await - joins_before,
        2 * 2 * half
    );
    // Halfway through the slide, the first scene has moved out by half the frame.
    let join = at(lengths[0]);
    let (left, right) = (
        pixel(&video, "mp4", join, w / 4, y),
        pixel(&video, "mp4", join, 3 * w / 4, y),
    );
    assert!(near(left[0], 255, 40) && left[2] < 40, "{left:?}");
    assert!(near(right[2], 255, 40) && right[0] < 40, "{right:?}");
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(detail["data"]["video_out_of_date"], false, "{detail}");

    // A new picture for the middle scene: that scene and its two joins, nothing else.
    let scenes_before = frames_encoded(&app, "scene").await;
    let joins_before = frames_encoded(&app, "join").await;
    let (status, answer) = put_picture(
        &app,
        Who::CreatorA,
        &format!("/api/contents/{id}/scenes/{}/visual", scenes[1]),
        "image/png",
        picture("png", 90, 160, "yellow"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let video = render_video(&app, id, total, (720, 1280)).await;
    assert_eq!(
        frames_encoded(&app, "scene").await - scenes_before,
        lengths[1] + 2 * half,
        "the middle scene with the ends it lends, of {total} frames in all"
    );
    assert_eq!(
        frames_encoded(&app, "join").await - joins_before,
        2 * 2 * half
    );
    let middle = pixel(&video, "mp4", at(lengths[0] + lengths[1] / 2), w / 2, y);
    assert!(
        near(middle[0], 255, 40) && near(middle[1], 255, 40),
        "yellow: {middle:?}"
    );

    // Wipe and cut last as long; a cut shows one scene or the other, never both.
    set_transition(&app, id, "wipe").await;
    render_video(&app, id, total, (720, 1280)).await;
    set_transition(&app, id, "cut").await;
    let video = render_video(&app, id, total, (720, 1280)).await;
    let before = pixel(&video, "mp4", at(lengths[0] - 1), w / 2, y);
    let after = pixel(&video, "mp4", at(lengths[0]), w / 2, y);
    assert!(near(before[0], 255, 40) && before[2] < 40, "{before:?}");
    assert!(
        near(after[0], 255, 40) && near(after[1], 255, 40),
        "{after:?}"
    );
}

async fn a_transition_is_one_of_the_five(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let content = content_with_scenes(&app, SCRIPT, 3).await;
    let id = content["id"].as_i64().unwrap();
    let path = format!("/api/contents/{id}/transition");
    for (who, body, status) in [
        (Who::CreatorA, json!({ "transition": "dissolve" }), 422),
        (Who::CreatorA, json!({ "transition": null }), 422),
        (Who::CreatorA, json!({}), 422),
        (Who::CreatorB, json!({ "transition": "wipe" }), 404),
    ] {
        let (got, answer) = app
            .call(who, reqwest::Method::PUT, &path, Some(&body))
            .await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (_, detail) = app.get(&format!("/api/contents/{id}")).await;
    assert_eq!(detail["data"]["presets"]["transition"], "fade", "unchanged");
    // Chosen when generating, it is stored with the content.
    let (status, generated) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "script", "input": SCRIPT, "presets": { "transition": "wipe" } }),
        )
        .await;
    assert_eq!(status, 200, "{generated}");
    assert_eq!(
        generated["data"]["presets"]["transition"], "wipe",
        "{generated}"
    );
}
