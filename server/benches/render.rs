//! The video render on a 20-scene, 90-second 1080×1920 content, side by side in one run
//! with one hand-written ffmpeg command doing the same work (the same pictures, zoom,
//! fades, narration, pauses and burned-in subtitles, in one process, one encode):
//!
//! (a) a full render (no segment kept from before) against the single command;
//! (b) the tail: narration made one scene at a time by a speech API (the local fake, 2 s
//!     and 4 s an answer) with "render when ready", timed from the last narration being
//!     recorded to the finished MP4, against one scene's segment encode;
//! (c) a re-render after one scene's narration changed, against a full render;
//! (d) a full render with crossfades (`xfade` at every join) and (e) its re-render after
//!     one scene changed, against (a) and (d);
//! (f) a full render with crossfades and a creator's clip (3 s, looped, its sound at 30 %)
//!     on every other scene, against (a).
//!
//! Three rounds, interleaved; medians and ratios.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use app::model::{SettingsValues, Transition};
use app::ssr::auth::CurrentUser;
use app::ssr::render::{srt, subtitle_columns};

mod support;
use support::median;

const SCENES: usize = 20;
/// Narration per scene; with the 400 ms pause each scene lasts 4.5 s, 90 s in all.
const SPEECH_MS: i64 = 4_100;
const ROUNDS: usize = 3;
/// How long the fake speech API takes per scene in (b): narration arriving faster than
/// this machine encodes a 1080x1920 segment, and slower.
const SPEECH_LATENCIES_MS: [u64; 2] = [2_000, 4_000];
/// (b)'s script: ten words a scene, 4 s of the fake's speech, 4.4 s with the pause.
fn tail_script() -> String {
    (1..=SCENES)
        .map(|i| format!("Scene {i} tells one more part of the long story."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// Scene `i`'s picture (a plain colour, 1024x1536), made once; its storage key.
fn picture(media: &Path, content: i64, i: usize) -> String {
    std::fs::create_dir_all(media.join(format!("content-{content}"))).expect("media dir");
    let image = format!("content-{content}/bench-{i}.png");
    if !media.join(&image).exists() {
        let colour = format!("color=c=0x{:06x}:s=1024x1536", 0x203040 + i * 0x070503);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &colour,
            "-frames:v",
            "1",
            &media.join(&image).display().to_string(),
        ]);
    }
    image
}

/// Records the file at `key` as an asset of the scene and makes it the scene's current
/// picture or narration (`kind` image or audio).
async fn make_current(
    state: &app::ssr::state::AppState,
    (content, scene): (i64, i64),
    kind: &str,
    key: &str,
    duration_ms: Option<i64>,
) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO assets (content_id, scene_id, kind, storage_key, mime_type, bytes, duration_ms, provider, created_at) \
         VALUES ($1, $2, $3, $4, 'application/octet-stream', 0, $5, 'bench', 0) RETURNING id",
    )
    .bind(content)
    .bind(scene)
    .bind(kind)
    .bind(key)
    .bind(duration_ms)
    .fetch_one(state.pool())
    .await
    .expect("asset");
    let column = if kind == "image" {
        "image_asset_id"
    } else {
        "audio_asset_id"
    };
    sqlx::query(&format!("UPDATE scenes SET {column} = $1 WHERE id = $2"))
        .bind(id)
        .bind(scene)
        .execute(state.pool())
        .await
        .expect("scene");
}

/// (b): a content with its pictures gets its narration from the speech API, one scene at
/// a time, with "render when ready". Returns (seconds from the last narration recorded
/// to the render recorded, the video's length).
async fn tail(state: &app::ssr::state::AppState, user: &CurrentUser, script: &str) -> (f64, f64) {
    let content = support::saved_content(state, user, script.to_owned(), SCENES, "9:16").await;
    let media = state.storage.root().to_path_buf();
    for (i, scene) in content.scenes.iter().enumerate() {
        let key = picture(&media, content.id, i);
        make_current(state, (content.id, scene.id), "image", &key, None).await;
    }
    let job = app::ssr::jobs::create(
        state,
        user,
        app::model::JobKind::Tts,
        app::model::MediaRequest {
            content_id: content.id,
            scene_ids: None,
            render_after: true,
        },
    )
    .await
    .expect("narration job");
    // One worker, as the admin's limit of one narration at a time would run it; the
    // render starts by itself when the last narration is in.
    app::ssr::engine::drain(state).await.expect("drain");
    let narrated: i64 = sqlx::query_scalar("SELECT MAX(finished_at) FROM tasks WHERE job_id = $1")
        .bind(job.id)
        .fetch_one(state.pool())
        .await
        .expect("narration finished");
    let (status, rendered): (String, Option<i64>) = sqlx::query_as(
        "SELECT t.status, t.finished_at FROM tasks t JOIN jobs j ON j.id = t.job_id \
         WHERE j.kind = 'render' AND j.content_id = $1",
    )
    .bind(content.id)
    .fetch_one(state.pool())
    .await
    .expect("the render ran");
    assert_eq!(status, "succeeded", "the render after narration");
    let length = video_length(state, content.id).await;
    (
        (rendered.unwrap_or(narrated) - narrated) as f64 / 1000.0,
        length,
    )
}

/// Frames and seconds of a bench scene: the narration and the 400 ms pause.
fn scene_frames() -> (u32, f64) {
    let frames = ((SPEECH_MS + 400) * 30 / 1000) as u32;
    (frames, f64::from(frames) / 30.0)
}

/// Writes `work/scene-{i}.srt`, the scene's own cues.
fn write_srt(work: &Path, i: usize, narration: &str) {
    let columns = subtitle_columns(&SettingsValues::default(), (1080, 1920));
    let local: Vec<(i64, app::ssr::render::Cue)> =
        app::ssr::captions::captions(narration, SPEECH_MS, columns, None, "lines")
            .srt
            .into_iter()
            .map(|c| (0, c))
            .collect();
    std::fs::write(work.join(format!("scene-{i}.srt")), srt(&local)).expect("srt");
}

/// The filter chains of scene `i` (picture input `v`, narration input `a`) written out by
/// hand as one would without CREVID: zoom, fades, burned-in subtitles, padded narration;
/// labelled `[v{i}]` and `[a{i}]`.
fn scene_chain(i: usize, v: usize, a: usize) -> String {
    let (frames, seconds) = scene_frames();
    format!(
        "[{v}:v]scale=2160:3840:force_original_aspect_ratio=increase,crop=2160:3840,setsar=1,\
         zoompan=z='min(1+0.08*on/{frames},1.08)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d={frames}:s=1080x1920:fps=30,\
         format=yuv420p,fade=t=in:st=0:d=0.25,fade=t=out:st={fade_out:.3}:d=0.25,\
         subtitles=filename=scene-{i}.srt:force_style='FontName=DejaVu Sans,FontSize=13.0,\
         PrimaryColour=&H00FFFFFF,OutlineColour=&H00000000,BorderStyle=1,Outline=2,Shadow=0,Alignment=2,MarginV=28'[v{i}];\
         [{a}:a]aresample=48000,apad,atrim=0:{seconds:.3}[a{i}]",
        fade_out = seconds - 0.25,
    )
}

/// One scene's segment encoded by itself (1080x1920, 4.5 s), as the render does it.
fn one_segment(narration: &str, work: &Path) -> f64 {
    let (_, seconds) = scene_frames();
    write_srt(work, 0, narration);
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .current_dir(work)
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(work.join("hand-0.png"))
        .arg("-i")
        .arg(work.join("hand-0.wav"))
        .args([
            "-filter_complex",
            &scene_chain(0, 0, 1),
            "-map",
            "[v0]",
            "-map",
            "[a0]",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "22", "-r", "30",
        ])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-t",
            &format!("{seconds:.3}"),
        ])
        .arg(work.join("one.mp4"))
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "the one-segment command failed");
    started.elapsed().as_secs_f64()
}

/// A creator's clip as `clips` stores one (1080x1920 H.264 at 30 fps with AAC, 3 s of a
/// moving test pattern and a tone), put on every other scene, looping, its sound at 30 %.
async fn put_clips(state: &app::ssr::state::AppState, content: i64, round: usize) {
    let media = state.storage.root().to_path_buf();
    let key = format!("content-{content}/bench-clip-{round}.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1080x1920:r=30:d=3",
        "-f",
        "lavfi",
        "-i",
        "sine=f=500:d=3",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "20",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-ar",
        "48000",
        &media.join(&key).display().to_string(),
    ]);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO assets (content_id, kind, storage_key, mime_type, bytes, duration_ms, provider, created_at) \
         VALUES ($1, 'video', $2, 'video/mp4', 0, 3000, 'bench', 0) RETURNING id",
    )
    .bind(content)
    .bind(&key)
    .fetch_one(state.pool())
    .await
    .expect("clip asset");
    sqlx::query(
        "UPDATE scenes SET clip_asset_id = $1, clip_when_shorter = 'loop', clip_sound = 30 \
         WHERE content_id = $2 AND position % 2 = 0",
    )
    .bind(id)
    .bind(content)
    .execute(state.pool())
    .await
    .expect("clips on scenes");
}

async fn drop_clips(state: &app::ssr::state::AppState, content: i64) {
    sqlx::query("UPDATE scenes SET clip_asset_id = NULL WHERE content_id = $1")
        .bind(content)
        .execute(state.pool())
        .await
        .expect("clips off");
}

/// A picture and a narration file (a tone) as assets of a scene, made current.
async fn attach(state: &app::ssr::state::AppState, content: i64, scene: i64, i: usize, tone: u32) {
    let media = state.storage.root().to_path_buf();
    let image = picture(&media, content, i);
    make_current(state, (content, scene), "image", &image, None).await;
    narrate(state, content, scene, i, tone).await;
}

/// A new narration file (a tone) as the scene's current narration. The picture stays: a
/// second asset row naming the same file would take the file with it when the first row
/// is dropped as replaced.
async fn narrate(state: &app::ssr::state::AppState, content: i64, scene: i64, i: usize, tone: u32) {
    let media = state.storage.root().to_path_buf();
    let audio = format!("content-{content}/bench-{i}-{tone}.wav");
    let sine = format!("sine=f={tone}:d={}", SPEECH_MS as f64 / 1000.0);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &sine,
        "-ar",
        "24000",
        &media.join(&audio).display().to_string(),
    ]);
    make_current(state, (content, scene), "audio", &audio, Some(SPEECH_MS)).await;
}

async fn render(state: &app::ssr::state::AppState, user: &CurrentUser, content: i64) -> f64 {
    let started = Instant::now();
    let job = app::ssr::jobs::create_render(state, user, content)
        .await
        .expect("render job");
    app::ssr::engine::drain(state).await.expect("drain");
    let detail = app::ssr::jobs::get(state, user, job.id).await.expect("job");
    assert_eq!(detail.job.status, "completed", "{detail:?}");
    started.elapsed().as_secs_f64()
}

/// The same video from one ffmpeg command: every scene's chain into one concat filter.
fn single_command(narrations: &[String], work: &Path) -> f64 {
    let mut args: Vec<String> = Vec::new();
    for i in 0..SCENES {
        args.extend([
            "-i".into(),
            work.join(format!("hand-{i}.png")).display().to_string(),
        ]);
    }
    for i in 0..SCENES {
        args.extend([
            "-i".into(),
            work.join(format!("hand-{i}.wav")).display().to_string(),
        ]);
    }
    let mut graph = String::new();
    for (i, narration) in narrations.iter().enumerate() {
        write_srt(work, i, narration);
        graph.push_str(&scene_chain(i, i, SCENES + i));
        graph.push(';');
    }
    for i in 0..SCENES {
        graph.push_str(&format!("[v{i}][a{i}]"));
    }
    graph.push_str(&format!("concat=n={SCENES}:v=1:a=1[v][a]"));
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .current_dir(work)
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(&args)
        .args(["-filter_complex", &graph, "-map", "[v]", "-map", "[a]"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "22", "-r", "30",
        ])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-movflags",
            "+faststart",
        ])
        .arg(work.join("single.mp4"))
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "the single command failed");
    started.elapsed().as_secs_f64()
}

/// The length of the content's current video, in seconds.
async fn video_length(state: &app::ssr::state::AppState, content: i64) -> f64 {
    let video: Option<String> = sqlx::query_scalar(
        "SELECT a.storage_key FROM contents c JOIN assets a ON a.id = c.video_asset_id WHERE c.id = $1",
    )
    .bind(content)
    .fetch_optional(state.pool())
    .await
    .expect("video");
    let media = state.storage.root().to_path_buf();
    video
        .map(|key| duration(&media.join(key)))
        .unwrap_or_default()
}

fn duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = testkit::FakeOpenAi::start().await;
    let values = SettingsValues {
        video_height: 1080,
        video_pause_ms: 400,
        rate_generate_per_minute: 10_000,
        rate_jobs_per_minute: 10_000,
        llm_base_url: fake.base_url(),
        tts_provider: "openai".into(),
        ..SettingsValues::default()
    };
    let database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (state, user) =
        support::in_process(&database_url, dir.path(), values, Some(support::API_KEY)).await;
    let script: String = (1..=SCENES)
        .map(|i| format!("Scene {i} tells one more part of the story, in words a viewer can read along with."))
        .collect::<Vec<_>>()
        .join(" ");
    let content = support::saved_content(&state, &user, script, SCENES, "9:16").await;
    for (i, scene) in content.scenes.iter().enumerate() {
        attach(&state, content.id, scene.id, i, 220).await;
    }
    let narrations: Vec<String> = content.scenes.iter().map(|s| s.narration.clone()).collect();
    let media = state.storage.root().to_path_buf();
    let segments = media.join(format!("content-{}/segments", content.id));
    let work = tempfile::tempdir().expect("work dir");
    // The hand-written commands' own copies: CREVID drops a replaced narration's file.
    for i in 0..SCENES {
        let from = |name: String| media.join(format!("content-{}/{name}", content.id));
        std::fs::copy(
            from(format!("bench-{i}.png")),
            work.path().join(format!("hand-{i}.png")),
        )
        .expect("picture copy");
        std::fs::copy(
            from(format!("bench-{i}-220.wav")),
            work.path().join(format!("hand-{i}.wav")),
        )
        .expect("narration copy");
    }

    let (mut single, mut full, mut one) = (Vec::new(), Vec::new(), Vec::new());
    let (mut crossfaded, mut crossfaded_one, mut clipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut tails = vec![Vec::new(); SPEECH_LATENCIES_MS.len()];
    let (mut segment, mut tail_length) = (Vec::new(), 0.0);
    let (mut peak_alone, mut peak_with_ffmpeg) = (0u64, 0u64);
    for round in 0..ROUNDS {
        for (pace, latency) in SPEECH_LATENCIES_MS.iter().enumerate() {
            fake.set_speech_latency(std::time::Duration::from_millis(*latency));
            let (t, length) = tail(&state, &user, &tail_script()).await;
            tails[pace].push(t);
            tail_length = length;
        }
        segment.push(one_segment(&narrations[0], work.path()));
        single.push(single_command(&narrations, work.path()));
        let _ = std::fs::remove_dir_all(&segments);
        let peaks = support::RssPeaks::start(std::process::id());
        full.push(render(&state, &user, content.id).await);
        let (alone, with_ffmpeg) = peaks.stop();
        peak_alone = peak_alone.max(alone);
        peak_with_ffmpeg = peak_with_ffmpeg.max(with_ffmpeg);
        // One scene's narration changes (a new file, the same length): only it is encoded.
        let scene = &content.scenes[round % SCENES];
        narrate(
            &state,
            content.id,
            scene.id,
            round % SCENES,
            330 + round as u32,
        )
        .await;
        one.push(render(&state, &user, content.id).await);
        // The same content with crossfades: from nothing kept, then one scene changed.
        let with =
            |transition| app::ssr::contents::set_transition(&state, &user, content.id, transition);
        with(Transition::Crossfade).await.expect("crossfade");
        let _ = std::fs::remove_dir_all(&segments);
        crossfaded.push(render(&state, &user, content.id).await);
        let changed = (round + SCENES / 2) % SCENES;
        narrate(
            &state,
            content.id,
            content.scenes[changed].id,
            changed,
            440 + round as u32,
        )
        .await;
        crossfaded_one.push(render(&state, &user, content.id).await);
        put_clips(&state, content.id, round).await;
        let _ = std::fs::remove_dir_all(&segments);
        clipped.push(render(&state, &user, content.id).await);
        drop_clips(&state, content.id).await;
        with(Transition::Fade).await.expect("fade");
    }
    let length = video_length(&state, content.id).await;
    let single_length = duration(&work.path().join("single.mp4"));
    let (s, f, o) = (median(&single), median(&full), median(&one));
    let g = median(&segment);
    let (x, xo, xc) = (
        median(&crossfaded),
        median(&crossfaded_one),
        median(&clipped),
    );
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("render: {SCENES} scenes, 1080x1920, {length:.2} s video ({single_length:.2} s from the single command), {ROUNDS} rounds");
    println!(
        "  one hand-written ffmpeg command:      median {s:>6.2} s = {:.2}x realtime   (runs: {})",
        length / s,
        runs(&single)
    );
    println!("  CREVID full render (no kept segments): median {f:>6.2} s = {:.2}x realtime   (runs: {}), {:.2}x the single command", length / f, runs(&full), f / s);
    println!("  CREVID re-render, one scene changed:  median {o:>6.2} s   (runs: {}), {:.2}x a full render", runs(&one), o / f);
    println!("  CREVID full render with crossfades:    median {x:>6.2} s = {:.2}x realtime   (runs: {}), {:.2}x a full render with fades", length / x, runs(&crossfaded), x / f);
    println!("  CREVID crossfade re-render, one scene changed: median {xo:>6.2} s   (runs: {}), {:.2}x a full crossfade render", runs(&crossfaded_one), xo / x);
    println!("  CREVID full render, clips on half the scenes + crossfades: median {xc:>6.2} s = {:.2}x realtime   (runs: {}), {:.2}x a full render with fades", length / xc, runs(&clipped), xc / f);
    println!(
        "  peak RSS during a full render: {:.1} MiB the server (this process), {:.1} MiB with its ffmpeg children",
        peak_alone as f64 / 1024.0,
        peak_with_ffmpeg as f64 / 1024.0
    );
    println!("  tail with render when ready ({tail_length:.2} s video), last narration in -> MP4 ready; one segment's encode alone: median {g:.2} s");
    for (latency, samples) in SPEECH_LATENCIES_MS.iter().zip(&tails) {
        let t = median(samples);
        println!(
            "    narration every {:.1} s: median {t:>6.2} s   (runs: {}), {:.2}x one segment's encode, {:.3}x a full render",
            *latency as f64 / 1000.0,
            runs(samples),
            t / g,
            t / f
        );
    }
}
