//! The video render: every scene's picture and narration, in order, into an H.264 + AAC
//! MP4 with `+faststart`, and its subtitles as an `.srt` (burned in from ASS, so that no
//! creator text is read as markup).
//!
//! Each scene becomes its own segment (its picture decoded once and slowly zoomed by
//! `zoompan`, or the creator's clip cut, looped or held; its narration padded by the
//! pause; its subtitle cues burned in), then the segments are joined by stream copy, so
//! the join costs a file copy, not an encode. With an `xfade` transition each join is a
//! short encode of its own from the ends the two scenes lend it ([`Overlap`]). The MP4 is
//! written under a temporary name and renamed: a half-written file is never served.
//! Progress comes from ffmpeg's `-progress` output; a cancelled job stops ffmpeg.
//!
//! Segments are also prepared ahead, as soon as a scene has its picture and narration,
//! whenever a render is expected (`prepare_ahead`): the render then adds only the tail
//! and the joins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::engine::{ClaimedTask, Output, TaskError};
use super::media::{self, new_asset, server_fault, transient, Made};
use super::state::AppState;
use super::text_layout::{Font, DEJAVU};
use crate::model::{SettingsValues, Transition, WhenShorter};

const FPS: u32 = 30;

/// A scene as the render needs it.
#[derive(Debug, Clone)]
pub struct RenderScene {
    pub narration: String,
    pub image_key: Option<String>,
    pub image_id: Option<i64>,
    pub audio_key: Option<String>,
    pub audio_id: Option<i64>,
    pub audio_ms: Option<i64>,
    pub planned_ms: i64,
    /// The subtitle font for the content's language (`text_layout::font_for`).
    pub font: Font,
    /// Where each word falls in the narration, when the speech engine said.
    pub words: Option<Vec<super::espeak::WordTime>>,
    /// The creator's clip, played instead of the picture (its thumbnail).
    pub clip: Option<RenderClip>,
}

/// A scene's clip as the render plays it.
#[derive(Debug, Clone)]
pub struct RenderClip {
    pub id: i64,
    pub key: String,
    pub when_shorter: WhenShorter,
    /// Its own sound under the narration, 0–100 %.
    pub sound: u32,
}

impl RenderScene {
    /// A scene with no words is silent: it needs no narration and lasts its planned time.
    pub fn speaks(&self) -> bool {
        !self.narration.trim().is_empty()
    }

    fn ready(&self) -> bool {
        self.image_key.is_some() && (self.audio_key.is_some() || !self.speaks())
    }

    /// How long the scene lasts in the video, in milliseconds.
    pub fn video_ms(&self, pause_ms: u32) -> i64 {
        ms_of_frames(frames(self.sound_ms(), pause_ms))
    }

    /// How long the scene is heard: its narration, or its planned time when silent.
    fn sound_ms(&self) -> i64 {
        match (self.speaks(), self.audio_ms) {
            (true, Some(ms)) => ms,
            (true, None) => 0,
            (false, _) => self.planned_ms,
        }
    }
}

pub async fn scenes(
    pool: &sqlx::AnyPool,
    content_id: i64,
) -> Result<Vec<RenderScene>, sqlx::Error> {
    type Row = (
        String,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        f64,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        String,
        i64,
    );
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT s.narration, s.image_asset_id, ia.storage_key, s.audio_asset_id, aa.storage_key, aa.duration_ms, s.planned_seconds, c.language, aa.words, \
             s.clip_asset_id, ca.storage_key, s.clip_when_shorter, s.clip_sound \
             FROM scenes s JOIN contents c ON c.id = s.content_id \
             LEFT JOIN assets ia ON ia.id = s.image_asset_id LEFT JOIN assets aa ON aa.id = s.audio_asset_id \
             LEFT JOIN assets ca ON ca.id = s.clip_asset_id \
             WHERE s.content_id = $1 ORDER BY s.position",
        )
        .bind(content_id)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                narration,
                image_id,
                image_key,
                audio_id,
                audio_key,
                audio_ms,
                planned,
                language,
                words,
                clip_id,
                clip_key,
                when_shorter,
                sound,
            )| {
                RenderScene {
                    narration,
                    image_key,
                    image_id,
                    audio_key,
                    audio_id,
                    audio_ms,
                    planned_ms: (planned * 1000.0).round() as i64,
                    font: super::text_layout::font_for(&language),
                    // Unreadable timings (another version's) fall back to the estimate.
                    words: words.and_then(|w| serde_json::from_str(&w).ok()),
                    clip: clip_id.zip(clip_key).map(|(id, key)| RenderClip {
                        id,
                        key,
                        when_shorter: WhenShorter::parse(&when_shorter).unwrap_or_default(),
                        sound: sound.clamp(0, 100) as u32,
                    }),
                }
            },
        )
        .collect())
}

/// What a video is made from (each scene's picture and narration, in order, the music,
/// the transition and each scene's clip with how it plays), as stored with it and
/// compared to tell when it is out of date. The transition is named only when it is not
/// `fade`, which every video had before transitions were a choice: those videos stay up
/// to date.
pub fn sources_of(
    pairs: &[(Option<i64>, Option<i64>)],
    music: Option<i64>,
    transition: Transition,
    clips: &[Option<(i64, WhenShorter, u32)>],
) -> String {
    let mut sources = serde_json::json!({ "scenes": pairs, "music": music });
    if transition != Transition::Fade {
        sources["transition"] = serde_json::json!(transition);
    }
    // Likewise named only when a scene has a clip: each scene's clip and how it plays.
    if clips.iter().any(Option::is_some) {
        sources["clips"] = serde_json::json!(clips);
    }
    sources.to_string()
}

/// "scenes 2 and 5 have no picture; scene 3 has no narration", or None when all are ready.
pub fn missing(scenes: &[RenderScene]) -> Option<String> {
    let list = |numbers: Vec<String>, what: &str| -> Option<String> {
        match numbers.as_slice() {
            [] => None,
            [one] => Some(format!("scene {one} has no {what}")),
            [rest @ .., last] => Some(format!(
                "scenes {} and {last} have no {what}",
                rest.join(", ")
            )),
        }
    };
    let numbered = |pick: fn(&RenderScene) -> bool| -> Vec<String> {
        scenes
            .iter()
            .enumerate()
            .filter(|(_, s)| pick(s))
            .map(|(i, _)| (i + 1).to_string())
            .collect()
    };
    let problems: Vec<String> = [
        list(numbered(|s| s.image_key.is_none()), "picture"),
        list(
            numbered(|s| s.speaks() && s.audio_key.is_none()),
            "narration",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

pub fn frame_size(aspect_ratio: &str, height: u32) -> (u32, u32) {
    let long = height * 16 / 9;
    match aspect_ratio {
        "16:9" => (long, height),
        "1:1" => (height, height),
        _ => (height, long),
    }
}

/// A scene's length: its narration plus the pause, rounded to whole frames so segments
/// joined by stream copy add up exactly.
fn frames(audio_ms: i64, pause_ms: u32) -> u32 {
    (((audio_ms + i64::from(pause_ms)) as f64 * f64::from(FPS) / 1000.0).round() as u32).max(1)
}

fn ms_of_frames(frames: u32) -> i64 {
    i64::from(frames) * 1000 / i64::from(FPS)
}

pub use super::captions::Cue;

fn srt_time(ms: i64) -> String {
    format!(
        "{:02}:{:02}:{:02},{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// SubRip text for cues, each shifted by its offset.
pub fn srt(cues: &[(i64, Cue)]) -> String {
    cues.iter()
        .enumerate()
        .map(|(i, (offset, c))| {
            format!(
                "{}\n{} --> {}\n{}\n",
                i + 1,
                srt_time(offset + c.start_ms),
                srt_time(offset + c.end_ms),
                c.text
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Event text for libass, shown exactly as written: `{…}` would start an override block
/// and `\N`, `\n`, `\h` are line breaks and hard spaces, so braces get libass's `\{` `\}`
/// escapes and every other backslash a word joiner (U+2060, invisible and zero-width)
/// after it, which keeps it from pairing with the next letter. Our own line breaks
/// (`\n` in a cue) become `\N`.
pub fn ass_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\u{2060}"),
            '{' => out.push_str("\\{"),
            '}' => out.push_str("\\}"),
            '\n' => out.push_str("\\N"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn ass_time(ms: i64) -> String {
    // ASS times are h:mm:ss.cc (centiseconds).
    let cs = ms / 10;
    format!(
        "{}:{:02}:{:02}.{:02}",
        cs / 360_000,
        cs / 6_000 % 60,
        cs / 100 % 60,
        cs % 100
    )
}

/// An ASS script burning `cues` in with the settings' style. libass reads it directly:
/// unlike SubRip, whose decoder turns `<i>` and `{\…}` into styling, nothing in the
/// creator's words is markup. Sizes are against a 384×288 script, as ffmpeg's SubRip
/// conversion used, so the style settings look as they did.
pub fn ass(cues: &[(i64, Cue)], settings: &SettingsValues, portrait: bool, font: Font) -> String {
    let mut script = format!(
        "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\nScaledBorderAndShadow: yes\n\n\
         [V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
         BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, \
         Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n{}\n\n\
         [Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n",
        subtitle_style(settings, portrait, font)
    );
    // ASS colours are &HBBGGRR.
    let hex = settings.caption_highlight_colour.trim_start_matches('#');
    let highlight = match (hex.get(0..2), hex.get(2..4), hex.get(4..6)) {
        (Some(r), Some(g), Some(b)) => format!("{b}{g}{r}"),
        _ => "00D4FF".to_owned(),
    };
    for (offset, cue) in cues {
        let text = match cue.highlight {
            Some((from, to)) => {
                let chars: Vec<char> = cue.text.chars().collect();
                let part = |a: usize, b: usize| {
                    ass_text(
                        &chars[a.min(chars.len())..b.min(chars.len())]
                            .iter()
                            .collect::<String>(),
                    )
                };
                // Our own override tags around the escaped words: `\r` returns to the style.
                format!(
                    "{}{{\\c&H{highlight}&}}{}{{\\r}}{}",
                    part(0, from),
                    part(from, to),
                    part(to, chars.len())
                )
            }
            None => ass_text(&cue.text),
        };
        script.push_str(&format!(
            "Dialogue: 0,{},{},Default,,0,0,0,,{}\n",
            ass_time(offset + cue.start_ms),
            ass_time(offset + cue.end_ms),
            text
        ));
    }
    script
}

fn clock(ms: i64) -> String {
    format!("{}:{:02}", ms / 60_000, ms / 1000 % 60)
}

/// Writes "Rendering 0:42 / 1:30" (and the share done) to the job, at most twice a second.
/// Shared by the segments being encoded at once.
struct Progress<'a> {
    /// Turns true when the job is cancelled: ffmpeg is then killed and waited for.
    stop: tokio::sync::watch::Receiver<bool>,
    state: &'a AppState,
    /// None while segments are prepared ahead, for no job.
    job_id: Option<i64>,
    total_ms: i64,
    shown: tokio::sync::Mutex<Shown>,
}

#[derive(Default)]
struct Shown {
    last: Option<Instant>,
    /// Never goes back (the music mix counts from 0 again).
    ms: i64,
    /// How much of each scene's segment is encoded, in ms.
    scenes: HashMap<usize, i64>,
}

/// What one ffmpeg run makes: a scene's segment (several are encoded at once) or the
/// whole video.
#[derive(Clone, Copy)]
enum Part {
    Scene(usize),
    /// A transition, a fraction of a second: not shown.
    Join,
    Whole,
}

impl<'a> Progress<'a> {
    fn new(
        state: &'a AppState,
        job_id: Option<i64>,
        total_ms: i64,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            stop,
            state,
            job_id,
            total_ms,
            shown: Default::default(),
        }
    }

    /// `done_ms` of `part` is made.
    async fn report(&self, part: Part, done_ms: i64, force: bool) {
        let Some(job_id) = self.job_id else {
            return;
        };
        let mut shown = self.shown.lock().await;
        let done_ms = match part {
            Part::Scene(index) => {
                shown.scenes.insert(index, done_ms);
                shown.scenes.values().sum()
            }
            Part::Whole => done_ms,
            Part::Join => return,
        };
        if !force
            && shown
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        shown.last = Some(Instant::now());
        let done_ms = done_ms.clamp(0, self.total_ms).max(shown.ms);
        shown.ms = done_ms;
        let _ = sqlx::query(
            "UPDATE jobs SET stage = 'rendering', stage_message = $1, progress = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'processing'",
        )
        .bind(format!("Rendering {} / {}", clock(done_ms), clock(self.total_ms)))
        .bind(done_ms * 99 / self.total_ms.max(1))
        .bind(super::db::now_ms())
        .bind(job_id)
        .execute(self.state.pool())
        .await;
        // Whoever watches the queue in this process (tests) sees the job move.
        self.state.work.notify_waiters();
    }
}

/// How long an ffmpeg run making `media_ms` of video may take: two minutes to start plus
/// 30 times real time, far beyond this machine's 2× real time at 1080p. A run past it is
/// stuck (a hung filter, a file that never ends) and is killed and tried again.
fn deadline_for(media_ms: i64) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(media_ms.max(0) as u64) * 30
}

/// How many of `missing` scene segments (and then joins) a render encodes at once, and
/// x264's threads for each (0: ffmpeg's choice): two where there are two cores or more,
/// sharing the cores.
/// An ffmpeg's filter chain (scale, zoompan, fades, subtitles) runs on one thread beside
/// x264's, so one encode at a time leaves a core idle part of the time: on 2 cores, two
/// at once with one x264 thread each take 0.82× the time of one at a time
/// (bench/render-candidates.sh).
fn segments_at_once(missing: usize) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || missing < 2 {
        return (1, 0);
    }
    (2, cores / 2)
}

/// Runs ffmpeg with `-progress` on stdout, reporting each `out_time_us` as done of `part`;
/// a failure keeps the last lines of stderr.
async fn ffmpeg(
    mut command: Command,
    what: &str,
    progress: &Progress<'_>,
    (part, media_ms): (Part, i64),
) -> Result<(), TaskError> {
    let deadline = deadline_for(media_ms);
    command
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    super::media::die_with_server(&mut command);
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            TaskError::Permanent("ffmpeg is not installed (see the status page)".into())
        }
        _ => server_fault("ffmpeg could not start", e, true),
    })?;
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut stop = progress.stop.clone();
    let stopped = async move {
        // A dropped sender means nobody can cancel any more: never stop then.
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let collect_errors = async {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text).await;
        }
        text
    };
    let follow = async {
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(us) = line
                    .strip_prefix("out_time_us=")
                    .and_then(|v| v.parse::<i64>().ok())
                {
                    progress.report(part, us / 1000, false).await;
                }
            }
        }
    };
    let outcome = {
        let run = async {
            let (errors, ()) = tokio::join!(collect_errors, follow);
            (errors, child.wait().await)
        };
        tokio::pin!(run);
        tokio::select! {
            outcome = &mut run => Some(Some(outcome)),
            () = stopped => None,
            () = tokio::time::sleep(deadline) => Some(None),
        }
    };
    let (errors, status) = match outcome {
        Some(Some(outcome)) => outcome,
        Some(None) => {
            let _ = child.kill().await;
            return Err(server_fault(
                format!(
                    "{what}: ffmpeg took longer than {} min; it will be tried again",
                    deadline.as_secs() / 60
                ),
                format!("killed after {} s", deadline.as_secs()),
                true,
            ));
        }
        None => {
            let _ = child.kill().await;
            return Err(TaskError::Cancelled);
        }
    };
    let status = status.map_err(|e| server_fault("ffmpeg stopped unexpectedly", e, true))?;
    if status.success() {
        return Ok(());
    }
    Err(super::media::tool_failed(
        &format!("{what}: ffmpeg"),
        status,
        &errors,
    ))
}

/// The frames a scene lends to the transitions at its ends when `xfade` draws them:
/// `head` before its start (to the join with the scene before) and `tail` after its end
/// (to the next). Its own segment then holds only the frames between; each join is encoded
/// apart, from the ends the two scenes lent, so a changed scene re-encodes itself and its
/// two joins, never the whole video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overlap {
    head: u32,
    tail: u32,
}

/// ffmpeg's `xfade` transition drawing `transition`, None for those drawn inside each
/// scene's segment (a cut draws nothing, a fade through black fades each end).
fn xfade_name(transition: Transition) -> Option<&'static str> {
    match transition {
        Transition::Cut | Transition::Fade => None,
        Transition::Crossfade => Some("fade"),
        Transition::Slide => Some("slideleft"),
        Transition::Wipe => Some("wipeleft"),
    }
}

/// How each scene of `lengths` (frames) meets its neighbours: None for every scene unless
/// `transition` is drawn by `xfade`. Each join then takes the admin's transition time
/// (`video_fade_ms`) from each side, at most a third of either scene, so the video lasts
/// exactly as long as its scenes and every narration starts where it would after a cut.
fn overlaps(
    lengths: &[u32],
    settings: &SettingsValues,
    transition: Transition,
) -> Vec<Option<Overlap>> {
    let edge = (u64::from(settings.video_fade_ms) * u64::from(FPS)).div_ceil(1000) as u32;
    // No transition time: every join is a cut, and segments are whole.
    if xfade_name(transition).is_none() || edge == 0 {
        return vec![None; lengths.len()];
    }
    let halves: Vec<u32> = lengths
        .windows(2)
        .map(|pair| edge.min(pair[0] / 3).min(pair[1] / 3))
        .collect();
    (0..lengths.len())
        .map(|i| {
            Some(Overlap {
                head: i.checked_sub(1).map_or(0, |before| halves[before]),
                tail: halves.get(i).copied().unwrap_or(0),
            })
        })
        .collect()
}

/// One scene's segment: its files (no narration file for a silent scene), its place and
/// length.
struct Segment<'a> {
    visual: Visual<'a>,
    audio: Option<&'a Path>,
    index: usize,
    frames: u32,
    subtitles: bool,
    /// Faded in and out through black (the `fade` transition).
    fade: bool,
    /// x264's threads; 0 leaves the choice to ffmpeg.
    threads: usize,
}

/// What a scene shows.
#[derive(Clone, Copy)]
enum Visual<'a> {
    /// A still, zoomed slowly when the settings say so.
    Picture(&'a Path),
    /// The creator's clip, already in the content's frame at 30 fps (`clips`): cut to the
    /// scene's length, looped or frozen when shorter, its sound under the narration.
    Clip {
        path: &'a Path,
        when_shorter: WhenShorter,
        sound: u32,
    },
}

/// Where a scene's encode writes.
enum Outputs<'a> {
    /// Picture and sound in one file: joins that are cuts or fades through black.
    Whole(&'a Path),
    /// For joins `xfade` draws: the scene's own frames, the ends it lends to its joins
    /// (lossless, read once by the join's encode), and its sound apart, since its sound
    /// lasts the whole scene while its own frames do not.
    Split {
        core: &'a Path,
        overlap: Overlap,
        head: &'a Path,
        tail: &'a Path,
        audio: &'a Path,
    },
}

fn segment_command(
    dir: &Path,
    segment: Segment<'_>,
    outputs: Outputs<'_>,
    (w, h): (u32, u32),
    settings: &SettingsValues,
) -> Result<Command, TaskError> {
    let Segment {
        visual,
        audio,
        index,
        frames,
        subtitles: has_subtitles,
        fade,
        threads,
    } = segment;
    let Overlap { head, tail } = match outputs {
        Outputs::Split { overlap, .. } => overlap,
        Outputs::Whole(_) => Overlap::default(),
    };
    // Frames made: the scene's own and those lent to its joins.
    let made = frames + head + tail;
    let seconds = f64::from(frames) / f64::from(FPS);
    let mut video = if let Visual::Clip { when_shorter, .. } = visual {
        // Frames lent before the scene hold the clip's first frame; a short clip loops
        // (its input repeats) or holds its last.
        let mut chain = format!(
            "[0:v]fps={FPS},scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1"
        );
        if head > 0 {
            chain.push_str(&format!(",tpad=start_mode=clone:start={head}"));
        }
        if when_shorter == WhenShorter::Freeze {
            chain.push_str(",tpad=stop_mode=clone:stop=-1");
        }
        chain.push_str(&format!(
            ",trim=end_frame={made},settb=1/{FPS},setpts=N,format=yuv420p"
        ));
        chain
    } else if settings.video_motion {
        // zoompan makes all of a scene's frames from its one decoded picture, scaled to
        // twice the frame first so the slow zoom moves by half pixels, not whole ones.
        // Frames lent before the scene's start hold its first zoom.
        format!(
            "[0:v]scale={sw}:{sh}:force_original_aspect_ratio=increase,crop={sw}:{sh},setsar=1,\
             zoompan=z='min(1+0.08*max(on-{head},0)/{frames},1.08)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d={made}:s={w}x{h}:fps={FPS},format=yuv420p",
            sw = w * 2,
            sh = h * 2,
        )
    } else {
        // A still: the picture scaled once and its frame repeated, at half zoompan's cost
        // (bench/render-candidates.sh). The repeats are timed in the output's time base:
        // in the picture's own (1/25 s) two frames would round to one time and a fade
        // would step.
        format!(
            "[0:v]scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1,\
             loop=loop={repeats}:size=1:start=0,settb=1/{FPS},setpts=N,format=yuv420p",
            repeats = made.saturating_sub(1),
        )
    };
    if fade && settings.video_fade_ms > 0 {
        let fade = (f64::from(settings.video_fade_ms) / 1000.0).min(seconds / 3.0);
        video.push_str(&format!(
            ",fade=t=in:st=0:d={fade:.3},fade=t=out:st={:.3}:d={fade:.3}",
            seconds - fade
        ));
    }
    if has_subtitles {
        // The `ass` filter with complex shaping: `subtitles` shapes simply, which breaks
        // Arabic ligatures and Indic vowel signs (cards are drawn the same way). The
        // script's cues are shifted by the frames lent before the scene.
        video.push_str(&format!(",ass=filename=scene-{index}.ass:shaping=complex"));
    }
    let mut command = ffmpeg_in(dir);
    let scene = index + 1;
    match visual {
        Visual::Picture(image) => {
            super::media::add_input(&mut command, image, &format!("scene {scene}'s picture"))?
        }
        Visual::Clip {
            path, when_shorter, ..
        } => {
            if when_shorter == WhenShorter::Loop {
                command.args(["-stream_loop", "-1"]);
            }
            super::media::add_input(&mut command, path, &format!("scene {scene}'s clip"))?
        }
    }
    match audio {
        Some(audio) => {
            super::media::add_input(&mut command, audio, &format!("scene {scene}'s narration"))?
        }
        None => {
            command.args(["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]);
        }
    };
    let sound = match visual {
        Visual::Clip {
            sound,
            when_shorter,
            ..
        } if sound > 0 => format!(
            "[0:a]aresample=48000,aformat=channel_layouts=stereo,volume={:.2}{}[clip];\
             [1:a]aresample=48000,aformat=channel_layouts=stereo,apad[voice];\
             [voice][clip]amix=inputs=2:duration=first:normalize=0,atrim=0:{seconds:.3}[a]",
            f64::from(sound) / 100.0,
            if when_shorter == WhenShorter::Freeze {
                ",apad"
            } else {
                ""
            },
        ),
        _ => format!("[1:a]aresample=48000,apad,atrim=0:{seconds:.3}[a]"),
    };
    match outputs {
        Outputs::Whole(out) => {
            command.args([
                "-filter_complex",
                &format!("{video}[v];{sound}"),
                "-map",
                "[v]",
                "-map",
                "[a]",
            ]);
            h264(&mut command, threads);
            aac(&mut command, seconds);
            command.args(["-f", "mp4"]).arg(out);
        }
        Outputs::Split {
            core,
            head: head_out,
            tail: tail_out,
            audio,
            ..
        } => {
            // Made frames: [0, 2·head) the head lent, then the scene's own, then
            // [made − 2·tail, made) the tail lent.
            let own_end = made - 2 * tail;
            let mut branches = vec![("core", 2 * head, own_end, core)];
            if head > 0 {
                branches.push(("head", 0, 2 * head, head_out));
            }
            if tail > 0 {
                branches.push(("tail", own_end, made, tail_out));
            }
            let mut graph = format!("{video},split={}", branches.len());
            for (label, ..) in &branches {
                graph.push_str(&format!("[{label}_all]"));
            }
            for (label, from, to, _) in &branches {
                graph.push_str(&format!(
                    ";[{label}_all]trim=start_frame={from}:end_frame={to},setpts=PTS-STARTPTS[{label}]"
                ));
            }
            graph.push_str(&format!(";{sound}"));
            command.args(["-filter_complex", &graph]);
            for (label, _, _, out) in branches {
                command.args(["-map", &format!("[{label}]")]);
                if label == "core" {
                    h264(&mut command, threads);
                } else {
                    // Lossless: the join encodes these frames once more.
                    command.args([
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-qp",
                        "0",
                        "-threads",
                        &threads.to_string(),
                        "-r",
                        &FPS.to_string(),
                    ]);
                }
                command.args(["-f", "mp4"]).arg(out);
            }
            command.args(["-map", "[a]"]);
            aac(&mut command, seconds);
            command.args(["-f", "mp4"]).arg(audio);
        }
    }
    Ok(command)
}

/// The video codec of every segment and join: they are joined by stream copy, so they
/// must agree.
fn h264(command: &mut Command, threads: usize) {
    command.args([
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "22",
        "-threads",
        &threads.to_string(),
        "-r",
        &FPS.to_string(),
    ]);
}

/// A scene's sound, `seconds` long.
fn aac(command: &mut Command, seconds: f64) {
    command.args([
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-t",
        &format!("{seconds:.3}"),
    ]);
}

/// The transition at a join, drawn by `xfade` (`kind`) from the `tail` lent by the scene
/// before and the `head` lent by the scene after, `frames` long and centred on the join.
fn join_command(
    dir: &Path,
    (tail, head): (&Path, &Path),
    kind: &str,
    frames: u32,
    threads: usize,
    out: &Path,
) -> Result<Command, TaskError> {
    let mut command = ffmpeg_in(dir);
    super::media::add_input(&mut command, tail, "the end of a scene")?;
    super::media::add_input(&mut command, head, "the start of a scene")?;
    let seconds = f64::from(frames) / f64::from(FPS);
    command.args([
        "-filter_complex",
        &format!(
            "[0:v]settb=1/{FPS},setpts=N[a];[1:v]settb=1/{FPS},setpts=N[b];\
             [a][b]xfade=transition={kind}:duration={seconds:.4}:offset=0,format=yuv420p[v]"
        ),
        "-map",
        "[v]",
        "-frames:v",
        &frames.to_string(),
    ]);
    h264(&mut command, threads);
    command.args(["-f", "mp4"]).arg(out);
    Ok(command)
}

/// ffmpeg working in `dir`, quiet but for errors, with its progress on stdout.
fn ffmpeg_in(dir: &Path) -> Command {
    let mut command = Command::new("ffmpeg");
    command.current_dir(dir).args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-progress",
        "pipe:1",
        "-y",
    ]);
    command
}

/// The subtitle size in ASS script units (of a 288-line script): smaller in portrait
/// frames, which are narrow, times the admin's percentage.
fn subtitle_size(settings: &SettingsValues, portrait: bool) -> f64 {
    let base = if portrait { 13.0 } else { 18.0 };
    base * f64::from(settings.subtitle_size) / 100.0
}

/// How many display columns a subtitle line may take in a `w`×`h` frame. libass scales
/// the 384×288 script to the frame by its height and keeps the glyphs' proportions, so a
/// portrait frame fits far fewer letters than the script's width suggests. A column is
/// taken as 0.6 em (a Latin letter of DejaVu Sans is about 0.55; a CJK character, two
/// columns, is 1 em), the em as the size over DejaVu's 1.164 ascent plus descent.
pub fn subtitle_columns(settings: &SettingsValues, (w, h): (u32, u32)) -> usize {
    let scale = f64::from(h) / 288.0;
    let em_px = subtitle_size(settings, w < h) / f64::from(DEJAVU.height_em) * scale;
    // The style's 10-unit side margins, in the frame's pixels.
    let usable_px = f64::from(w) - 2.0 * 10.0 * f64::from(w) / 384.0;
    ((usable_px / (em_px * 0.6)).floor() as usize).max(8)
}

/// The ASS `Default` style line libass burns subtitles with, from the settings.
fn subtitle_style(settings: &SettingsValues, portrait: bool, font: Font) -> String {
    // The same em in every script: `subtitle_columns` counts on it.
    let size = font.ass_size((subtitle_size(settings, portrait) / DEJAVU.height_em as f64) as f32);
    // ASS colours are &HAABBGGRR.
    let hex = settings.subtitle_colour.trim_start_matches('#');
    let (r, g, b) = (&hex[0..2], &hex[2..4], &hex[4..6]);
    let (alignment, margin) = match settings.subtitle_position.as_str() {
        "top" => (8, 20),
        "middle" => (5, 0),
        _ => (2, 28),
    };
    // Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour,
    // Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle,
    // Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
    format!(
        "Style: Default,{family},{size:.1},&H00{b}{g}{r},&H00{b}{g}{r},&H00000000,&H00000000,\
         0,0,0,0,100,100,0,0,1,{},0,{alignment},10,10,{margin},1",
        settings.subtitle_outline,
        family = font.family,
    )
}

/// Names a scene's segment by everything that goes into it, so a render re-encodes only
/// the scenes whose picture or clip, narration, words or video settings changed, or
/// whose joins are now cut another way (a cut, a fade, or the frames lent to `xfade`:
/// one `xfade` kind for another changes only the joins, named in [`ensure_join`]).
fn segment_name(
    scene: &RenderScene,
    (frames, overlap): (u32, Option<Overlap>),
    size: (u32, u32),
    settings: &SettingsValues,
    (transition, subtitles): (Transition, &str),
) -> String {
    use sha2::{Digest, Sha256};
    // Fades name their segments as before transitions were a choice: kept segments stay.
    let joins = match (transition, overlap) {
        (_, Some(Overlap { head, tail })) => format!("|split|{head}|{tail}"),
        (Transition::Cut, None) => "|cut".to_owned(),
        _ => String::new(),
    };
    let clip = scene.clip.as_ref().map_or(String::new(), |c| {
        format!("|clip|{}|{}|{}", c.key, c.when_shorter.as_str(), c.sound)
    });
    let recipe = format!(
        "v3|{:?}|{:?}|{frames}|{}x{}|{}|{}|{}|{}|{subtitles}{joins}{clip}",
        scene.image_key,
        scene.audio_key,
        size.0,
        size.1,
        settings.video_motion,
        settings.video_subtitles,
        settings.video_fade_ms,
        subtitle_style(settings, size.0 < size.1, scene.font),
    );
    let digest = Sha256::digest(recipe.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A path inside a concat list: single-quoted, with quotes escaped as the demuxer wants.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

pub async fn render(
    state: &AppState,
    task: &ClaimedTask,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Output, TaskError> {
    // Before the scenes are read: a segment prepared ahead from here on is kept.
    let started = std::time::SystemTime::now();
    let content_id = task.content()?;
    let Plan {
        scenes,
        settings,
        size,
        transition,
    } = plan(state, content_id)
        .await?
        .ok_or_else(|| TaskError::Permanent("the content was deleted".into()))?;
    if scenes.is_empty() {
        return Err(TaskError::Permanent("the content has no scenes".into()));
    }
    if let Some(problem) = missing(&scenes) {
        return Err(TaskError::Permanent(format!(
            "cannot render yet: {problem}"
        )));
    }
    let music: Option<(i64, String)> = sqlx::query_as(
        "SELECT a.id, a.storage_key FROM contents c JOIN assets a ON a.id = c.music_asset_id WHERE c.id = $1",
    )
    .bind(content_id)
    .fetch_optional(state.pool())
    .await
    .map_err(|e| server_fault("the database could not be read", e, true))?;
    let media_dir = state.storage.root().to_path_buf();
    // What an earlier attempt of this task left when its worker died mid-way.
    for attempt in 1..task.attempt {
        let stem = format!("content-{content_id}/");
        let _ = tokio::fs::remove_dir_all(
            media_dir.join(format!("{stem}render-{}-{attempt}", task.id)),
        )
        .await;
        let _ = tokio::fs::remove_file(
            media_dir.join(format!("{stem}video-{}-{attempt}.partial.mp4", task.id)),
        )
        .await;
    }
    let work_key = format!("content-{content_id}/render-{}-{}", task.id, task.attempt);
    let work = media::prepare(state, &format!("{work_key}/list.txt"))
        .await?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| media_dir.clone());
    let music_path = match &music {
        Some((_, key)) => Some(input(state, "the music", key).await?),
        None => None,
    };
    let result = render_in(
        state,
        task,
        &scenes,
        &settings,
        size,
        &work,
        &media_dir,
        music_path.as_deref(),
        (transition, started),
        stop,
    )
    .await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    let (video_key, srt_key, total_ms) = result?;
    let video = new_asset(
        state,
        Made {
            kind: "video",
            key: video_key.clone(),
            path: media_dir.join(&video_key),
            mime: "video/mp4",
            duration_ms: Some(total_ms),
            size: Some(size),
            provider: "builtin:ffmpeg".into(),
            words: None,
        },
    )
    .await?;
    let subtitles = new_asset(
        state,
        Made {
            kind: "subtitles",
            key: srt_key.clone(),
            path: media_dir.join(&srt_key),
            mime: "application/x-subrip",
            duration_ms: Some(total_ms),
            size: None,
            provider: "builtin:ffmpeg".into(),
            words: None,
        },
    )
    .await?;
    Ok(Output {
        primary: Some(video),
        also: vec![subtitles],
        video_sources: Some(sources_of(
            &scenes
                .iter()
                .map(|s| (s.image_id, s.audio_id))
                .collect::<Vec<_>>(),
            music.as_ref().map(|m| m.0),
            transition,
            &scenes
                .iter()
                .map(|s| s.clip.as_ref().map(|c| (c.id, c.when_shorter, c.sound)))
                .collect::<Vec<_>>(),
        )),
        recorded: None,
    })
}

#[allow(clippy::too_many_arguments)]
async fn render_in(
    state: &AppState,
    task: &ClaimedTask,
    scenes: &[RenderScene],
    settings: &SettingsValues,
    size: (u32, u32),
    work: &Path,
    media_dir: &Path,
    music: Option<&Path>,
    (transition, started): (Transition, std::time::SystemTime),
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(String, String, i64), TaskError> {
    let content_id = task.content()?;
    let lengths: Vec<u32> = scenes
        .iter()
        .map(|s| frames(s.sound_ms(), settings.video_pause_ms))
        .collect();
    let overlaps = overlaps(&lengths, settings, transition);
    let total_ms: i64 = lengths.iter().map(|f| ms_of_frames(*f)).sum();
    let progress = Progress::new(state, Some(task.job_id), total_ms, stop);
    progress.report(Part::Whole, 0, true).await;
    let mut all_cues = Vec::new();
    let mut offset = 0i64;
    let mut list = String::new();
    // Segments outlive a render: the next one reuses every scene that did not change.
    let segments = segments_dir(media_dir, content_id);
    tokio::fs::create_dir_all(&segments)
        .await
        .map_err(|e| server_fault("the media directory could not be written", e, true))?;
    let mut used = Vec::new();
    let tag = format!("{}-{}", task.id, task.attempt);
    let mut places = Vec::with_capacity(scenes.len());
    for (index, ((scene, frames), overlap)) in
        scenes.iter().zip(&lengths).zip(&overlaps).enumerate()
    {
        let scene_cues = super::captions::captions(
            &scene.narration,
            scene.sound_ms(),
            subtitle_columns(settings, size),
            scene.words.as_deref(),
            &settings.caption_style,
        )
        .srt;
        all_cues.extend(scene_cues.iter().cloned().map(|c| (offset, c)));
        let place = Place {
            index,
            frames: *frames,
            size,
            tag: &tag,
            threads: 0,
        };
        let plan = plan_segment(scene, (*frames, *overlap), size, settings, transition);
        places.push((scene, place, plan));
        offset += ms_of_frames(*frames);
    }
    // Two encodes share the cores only when two or more segments are missing: a lone one
    // (a re-render, the tail after narration) gets every thread.
    let mut missing = 0;
    for (_, _, plan) in &places {
        if !tokio::fs::try_exists(segments.join(format!("{}.mp4", plan.name)))
            .await
            .unwrap_or(false)
        {
            missing += 1;
        }
    }
    let (at_once, threads) = segments_at_once(missing);
    for (_, place, _) in &mut places {
        place.threads = threads;
    }
    let dirs = (segments.as_path(), work);
    // Collected first: a stream over a lazy `map` makes the render's future not provably
    // `Send` (rust-lang/rust#102211).
    let encodes: Vec<_> = places
        .into_iter()
        .map(|(scene, place, plan)| {
            ensure_segment(state, dirs, (scene, plan), place, settings, &progress)
        })
        .collect();
    let files: Vec<SceneFiles> = futures::stream::iter(encodes)
        .buffered(at_once)
        .try_collect()
        .await?;
    used.extend(files.iter().flat_map(SceneFiles::all).cloned());
    let mut sound = String::new();
    if let Some(kind) = xfade_name(transition) {
        let joins: Vec<_> = files
            .windows(2)
            .enumerate()
            .filter_map(|(index, pair)| {
                let (tail, head) = (pair[0].tail.as_deref()?, pair[1].head.as_deref()?);
                let frames = overlaps[index].map_or(0, |o| 2 * o.tail);
                Some(ensure_join(
                    state,
                    (segments.as_path(), work),
                    (index, tail, head),
                    (kind, frames),
                    (&tag, threads),
                    &progress,
                ))
            })
            .collect();
        let mut joins: std::collections::VecDeque<String> = futures::stream::iter(joins)
            .buffered(at_once)
            .try_collect()
            .await?;
        used.extend(joins.iter().cloned());
        for (index, scene) in files.iter().enumerate() {
            list.push_str(&format!("file {}\n", quoted(&segments.join(&scene.video))));
            if let Some(audio) = &scene.audio {
                sound.push_str(&format!("file {}\n", quoted(&segments.join(audio))));
            }
            if scene.tail.is_some() && files.get(index + 1).is_some_and(|next| next.head.is_some())
            {
                if let Some(join) = joins.pop_front() {
                    list.push_str(&format!("file {}\n", quoted(&segments.join(join))));
                }
            }
        }
    } else {
        for scene in &files {
            list.push_str(&format!("file {}\n", quoted(&segments.join(&scene.video))));
        }
    }
    write(&work.join("list.txt"), &list).await?;
    // With `xfade` joins the pictures and the sound are joined apart: the sound lasts
    // each scene exactly, while each segment is shorter by what it lent to its joins.
    let apart = !sound.is_empty();
    if apart {
        write(&work.join("sound.txt"), &sound).await?;
    }
    let stem = format!("content-{content_id}/video-{}-{}", task.id, task.attempt);
    let (video_key, srt_key) = (format!("{stem}.mp4"), format!("{stem}.srt"));
    let partial = media_dir.join(format!("{stem}.partial.mp4"));
    let mut join = ffmpeg_in(work);
    join.args(["-f", "concat", "-safe", "0", "-i", "list.txt"]);
    if apart {
        join.args(["-f", "concat", "-safe", "0", "-i", "sound.txt"]);
    }
    let voice = if apart { "1:a" } else { "0:a" };
    let bed = if apart { "2:a" } else { "1:a" };
    match music {
        // The pictures are copied; only the sound is mixed again: the music looped or cut
        // to the video's length, at the set level, and pressed down while someone speaks.
        Some(music) => {
            join.args(["-stream_loop", "-1"]);
            super::media::add_input(&mut join, music, "the background music")?;
            join.args([
                "-filter_complex",
                &format!(
                    "[{voice}]asplit=2[voice][key];[{bed}]aresample=48000,aformat=channel_layouts=stereo,volume={:.2}[bed];\
                     [bed][key]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=300[ducked];\
                     [voice][ducked]amix=inputs=2:duration=first:normalize=0[a]",
                    f64::from(settings.music_volume) / 100.0
                ),
                "-map",
                "0:v",
                "-map",
                "[a]",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
            ]);
        }
        None => {
            join.args(["-map", "0:v", "-map", voice, "-c", "copy"]);
        }
    }
    join.args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(&partial);
    let total_ms = progress.total_ms;
    ffmpeg(
        join,
        "joining the scenes",
        &progress,
        (Part::Whole, total_ms),
    )
    .await?;
    // Only a complete file gets the name that is served.
    tokio::fs::rename(&partial, media_dir.join(&video_key))
        .await
        .map_err(|e| server_fault("the video could not be saved", e, true))?;
    write(&media_dir.join(&srt_key), &srt(&all_cues)).await?;
    prune(state, &segments, &used, started).await;
    progress.report(Part::Whole, total_ms, true).await;
    Ok((video_key, srt_key, total_ms))
}

/// Where a segment goes and how long it lasts; `tag` keeps concurrent writers' temporary
/// files apart.
struct Place<'a> {
    index: usize,
    frames: u32,
    size: (u32, u32),
    tag: &'a str,
    /// x264's threads for this encode; 0 leaves the choice to ffmpeg.
    threads: usize,
}

/// A scene's segment as it would be encoded: its burned-in cues, their ASS script, and
/// its name (made from everything that goes into it).
struct SegmentPlan {
    local: Vec<(i64, Cue)>,
    subtitles: String,
    name: String,
    /// Some when `xfade` draws the joins (see [`Overlap`]).
    overlap: Option<Overlap>,
    fade: bool,
}

fn plan_segment(
    scene: &RenderScene,
    (frames, overlap): (u32, Option<Overlap>),
    size: (u32, u32),
    settings: &SettingsValues,
    transition: Transition,
) -> SegmentPlan {
    // The segment starts with the frames lent before the scene: its cues come later.
    let lead_ms = ms_of_frames(overlap.map_or(0, |o| o.head));
    let local: Vec<(i64, Cue)> = super::captions::captions(
        &scene.narration,
        scene.sound_ms(),
        subtitle_columns(settings, size),
        scene.words.as_deref(),
        &settings.caption_style,
    )
    .burned
    .into_iter()
    .map(|c| (lead_ms, c))
    .collect();
    let subtitles = ass(&local, settings, size.0 < size.1, scene.font);
    let name = segment_name(
        scene,
        (frames, overlap),
        size,
        settings,
        (transition, &subtitles),
    );
    SegmentPlan {
        local,
        subtitles,
        name,
        overlap,
        fade: transition == Transition::Fade,
    }
}

/// A scene's files in the segments directory: its segment, and with `xfade` joins its
/// sound and the ends it lends to its joins.
struct SceneFiles {
    video: String,
    audio: Option<String>,
    head: Option<String>,
    tail: Option<String>,
}

impl SceneFiles {
    fn of(name: &str, overlap: Option<Overlap>) -> Self {
        let piece = |part: &str, wanted: bool| wanted.then(|| format!("{name}.{part}.mp4"));
        Self {
            video: format!("{name}.mp4"),
            audio: piece("audio", overlap.is_some()),
            head: piece("head", overlap.is_some_and(|o| o.head > 0)),
            tail: piece("tail", overlap.is_some_and(|o| o.tail > 0)),
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.video).chain(self.audio.iter().chain(&self.head).chain(&self.tail))
    }
}

/// Makes sure a scene's segment exists (encoding it unless a render or an earlier
/// preparation kept it) and returns its files in `segments`. When this process is
/// already encoding that very segment, this waits for it instead of encoding it twice.
async fn ensure_segment(
    state: &AppState,
    (segments, work): (&Path, &Path),
    (scene, plan): (&RenderScene, SegmentPlan),
    place: Place<'_>,
    settings: &SettingsValues,
    progress: &Progress<'_>,
) -> Result<SceneFiles, TaskError> {
    let Place {
        index,
        frames,
        size,
        tag,
        threads,
    } = place;
    let what = format!("scene {}", index + 1);
    let SegmentPlan {
        local,
        subtitles,
        name,
        overlap,
        fade,
    } = plan;
    let files = SceneFiles::of(&name, overlap);
    let mut stop = progress.stop.clone();
    let _guard = tokio::select! {
        guard = state.segments.lock(&name) => guard,
        Ok(_) = stop.wait_for(|s| *s) => return Err(TaskError::Cancelled),
    };
    let mut done = true;
    for file in files.all() {
        done &= tokio::fs::try_exists(segments.join(file))
            .await
            .unwrap_or(false);
    }
    if done {
        progress
            .report(Part::Scene(index), ms_of_frames(frames), false)
            .await;
        return Ok(files);
    }
    write(&work.join(format!("scene-{index}.ass")), &subtitles).await?;
    let image = match (&scene.clip, &scene.image_key) {
        (Some(clip), _) => &clip.key,
        (None, Some(key)) => key,
        (None, None) => return Err(TaskError::Permanent(format!("{what} has no picture"))),
    };
    let image = input(state, &what, image).await?;
    let audio = match scene.audio_key.as_deref().filter(|_| scene.speaks()) {
        Some(key) => Some(input(state, &what, key).await?),
        None => None,
    };
    let partial_of = |file: &str| {
        segments.join(format!(
            "{}.partial-{tag}.mp4",
            file.trim_end_matches(".mp4")
        ))
    };
    // Renamed in this order: the segment last.
    let pieces: Vec<(PathBuf, PathBuf)> = files
        .audio
        .iter()
        .chain(&files.head)
        .chain(&files.tail)
        .chain(std::iter::once(&files.video))
        .map(|file| (partial_of(file), segments.join(file)))
        .collect();
    let mut unfinished = Unfinished(pieces.iter().map(|(partial, _)| partial.clone()).collect());
    let visual = match &scene.clip {
        Some(clip) => Visual::Clip {
            path: &image,
            when_shorter: clip.when_shorter,
            sound: clip.sound,
        },
        None => Visual::Picture(&image),
    };
    let segment = Segment {
        visual,
        audio: audio.as_deref(),
        index,
        frames,
        subtitles: settings.video_subtitles && !local.is_empty(),
        fade,
        threads,
    };
    let partial = |file: &Option<String>| file.as_deref().map(partial_of).unwrap_or_default();
    let (core, head, tail, sound) = (
        partial_of(&files.video),
        partial(&files.head),
        partial(&files.tail),
        partial(&files.audio),
    );
    let outputs = match overlap {
        None => Outputs::Whole(&core),
        Some(overlap) => Outputs::Split {
            core: &core,
            overlap,
            head: &head,
            tail: &tail,
            audio: &sound,
        },
    };
    let command = segment_command(work, segment, outputs, size, settings)?;
    tracing::debug!(
        scene = index + 1,
        ahead = progress.job_id.is_none(),
        "encoding a segment"
    );
    let part = (Part::Scene(index), ms_of_frames(frames));
    ffmpeg(command, &what, progress, part).await?;
    for (partial, file) in &pieces {
        tokio::fs::rename(partial, file)
            .await
            .map_err(|e| server_fault(format!("{what}'s segment could not be saved"), e, true))?;
    }
    unfinished.0.clear();
    let lent = overlap.map_or(0, |o| o.head + o.tail);
    state.metrics.render_frames("scene", frames + lent);
    Ok(files)
}

/// Makes sure the transition at the join after scene `index` exists, drawn from the
/// `tail` of that scene and the `head` of the next (files in `segments`, `frames` long in
/// all), and returns its file name. Named by what goes into it, so it is encoded again
/// only when either scene or the transition changed.
async fn ensure_join(
    state: &AppState,
    (segments, work): (&Path, &Path),
    (index, tail, head): (usize, &str, &str),
    (kind, frames): (&str, u32),
    (tag, threads): (&str, usize),
    progress: &Progress<'_>,
) -> Result<String, TaskError> {
    use sha2::{Digest, Sha256};
    let recipe = format!("join|v1|{tail}|{head}|{kind}|{frames}");
    let digest = Sha256::digest(recipe.as_bytes());
    let name: String = std::iter::once("join-".to_owned())
        .chain(digest[..12].iter().map(|b| format!("{b:02x}")))
        .collect();
    let file = format!("{name}.mp4");
    let done = segments.join(&file);
    let mut stop = progress.stop.clone();
    let _guard = tokio::select! {
        guard = state.segments.lock(&name) => guard,
        Ok(_) = stop.wait_for(|s| *s) => return Err(TaskError::Cancelled),
    };
    if tokio::fs::try_exists(&done).await.unwrap_or(false) {
        return Ok(file);
    }
    let partial = segments.join(format!("{name}.partial-{tag}.mp4"));
    let mut unfinished = Unfinished(vec![partial.clone()]);
    let command = join_command(
        work,
        (&segments.join(tail), &segments.join(head)),
        kind,
        frames,
        threads,
        &partial,
    )?;
    let what = format!("the transition after scene {}", index + 1);
    ffmpeg(command, &what, progress, (Part::Join, ms_of_frames(frames))).await?;
    tokio::fs::rename(&partial, &done)
        .await
        .map_err(|e| server_fault(format!("{what} could not be saved"), e, true))?;
    unfinished.0.clear();
    state.metrics.render_frames("join", frames);
    Ok(file)
}

/// A segment's partial files, removed unless its encode got to rename them: it failed, or
/// was dropped because the encode beside it failed or the render was cancelled (its
/// ffmpeg is killed with it).
struct Unfinished(Vec<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The segments this process is encoding, by name, and the contents whose segments it is
/// preparing ahead of their render.
#[derive(Default)]
pub struct SegmentWork {
    encoding: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The contents being prepared ahead of their render.
    ahead: std::sync::Mutex<HashMap<i64, Ahead>>,
    /// Announces that a content's preparation ended.
    prepared: tokio::sync::Notify,
}

/// One content's preparation ahead of its render.
struct Ahead {
    /// Something changed while preparing: look at the content again afterwards.
    again: bool,
    /// Set when no render is expected any more (its job was cancelled): the encoding
    /// under way is stopped, as a render's is.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Held while a segment is checked for and encoded.
struct SegmentGuard<'a> {
    work: &'a SegmentWork,
    name: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl SegmentWork {
    async fn lock(&self, name: &str) -> SegmentGuard<'_> {
        let lock = self
            .encoding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone();
        SegmentGuard {
            work: self,
            name: name.to_owned(),
            _held: lock.lock_owned().await,
        }
    }

    fn busy(&self, file_name: &str) -> bool {
        let stem = file_name.split('.').next().unwrap_or_default();
        let mut encoding = self.encoding.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: its last waiter gave up (a cancelled render).
        if encoding
            .get(stem)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            encoding.remove(stem);
        }
        encoding.contains_key(stem)
    }
}

impl Drop for SegmentGuard<'_> {
    fn drop(&mut self) {
        let mut encoding = self
            .work
            .encoding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map's and this guard's are the only handles left: nobody waits for it.
        if encoding
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            encoding.remove(&self.name);
        }
    }
}

/// After a scene gets a new picture or narration: encodes the content's missing segments
/// in the background when a render is expected (a render is waiting, a job will render
/// when ready, or the content has a video that is now out of date). Best effort: a render
/// encodes whatever is still missing itself.
pub fn prepare_ahead(state: &AppState, content_id: i64) {
    let stop = {
        let mut ahead = state
            .segments
            .ahead
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = ahead.get_mut(&content_id) {
            running.again = true;
            return;
        }
        let stop = Arc::new(tokio::sync::watch::channel(false).0);
        ahead.insert(
            content_id,
            Ahead {
                again: false,
                stop: stop.clone(),
            },
        );
        stop
    };
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = prepare(&state, content_id, stop.subscribe()).await {
                tracing::info!(
                    content_id,
                    error = e.message(),
                    "preparing segments ahead stopped"
                );
            }
            let mut ahead = state
                .segments
                .ahead
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match ahead.get_mut(&content_id) {
                Some(running) if running.again && !*stop.borrow() => running.again = false,
                _ => {
                    ahead.remove(&content_id);
                    break;
                }
            }
        }
        state.segments.prepared.notify_waiters();
    });
}

/// After a job was cancelled: stops preparing the content's segments unless a render is
/// still expected, and returns once the preparation has ended (its ffmpeg killed and
/// waited for), or after 10 s.
pub async fn stop_preparing(state: &AppState, content_id: i64) {
    // Only a job still waiting to render keeps it going: an out-of-date video alone does
    // not, or cancelling a re-render would never stop its encoding.
    if render_job_active(state, content_id).await.unwrap_or(true) {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ended = state.segments.prepared.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        {
            let ahead = state
                .segments
                .ahead
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match ahead.get(&content_id) {
                Some(running) => {
                    running.stop.send_replace(true);
                }
                None => return,
            }
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            return;
        }
    }
}

async fn render_expected(state: &AppState, content_id: i64) -> Result<bool, sqlx::Error> {
    let has_video: Option<Option<i64>> =
        sqlx::query_scalar("SELECT video_asset_id FROM contents WHERE id = $1")
            .bind(content_id)
            .fetch_optional(state.pool())
            .await?;
    match has_video {
        None => Ok(false),
        Some(Some(_)) => Ok(true),
        Some(None) => render_job_active(state, content_id).await,
    }
}

/// Whether a queued or running job will render the content: a render, or a job that
/// renders when its scenes are ready.
async fn render_job_active(state: &AppState, content_id: i64) -> Result<bool, sqlx::Error> {
    let active: Vec<(String, Option<i64>, String, String)> = sqlx::query_as(
        "SELECT kind, content_id, content_ids, options FROM jobs WHERE status IN ('queued', 'processing') \
         AND (kind = 'render' OR options LIKE '%render_after\":true%')",
    )
    .fetch_all(state.pool())
    .await?;
    Ok(active.into_iter().any(|(kind, one, many, _)| {
        one == Some(content_id)
            || (kind != "render"
                && serde_json::from_str::<Vec<i64>>(&many)
                    .is_ok_and(|ids| ids.contains(&content_id)))
    }))
}

async fn prepare(
    state: &AppState,
    content_id: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TaskError> {
    let database = |e: sqlx::Error| server_fault("the database could not be read", e, true);
    if !render_expected(state, content_id).await.map_err(database)? {
        return Ok(());
    }
    let Some(Plan {
        scenes,
        settings,
        size,
        transition,
    }) = plan(state, content_id).await?
    else {
        return Ok(());
    };
    let media_dir = state.storage.root().to_path_buf();
    let segments = segments_dir(&media_dir, content_id);
    let tag = format!("ahead-{}", state.worker_id);
    let work = media_dir.join(format!("content-{content_id}/{tag}"));
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| server_fault("the media directory could not be written", e, true))?;
    tokio::fs::create_dir_all(&segments)
        .await
        .map_err(|e| server_fault("the media directory could not be written", e, true))?;
    let progress = Progress::new(state, None, 0, stop);
    let mut result = Ok(());
    let lengths: Vec<u32> = scenes
        .iter()
        .map(|s| frames(s.sound_ms(), settings.video_pause_ms))
        .collect();
    let overlaps = overlaps(&lengths, &settings, transition);
    for (index, scene) in scenes.iter().enumerate() {
        // What a scene lends its joins depends on its neighbours' lengths too.
        let neighbours_ready = overlaps[index].is_none()
            || [index.checked_sub(1), Some(index + 1)]
                .into_iter()
                .flatten()
                .filter_map(|i| scenes.get(i))
                .all(RenderScene::ready);
        if !scene.ready() || !neighbours_ready {
            continue;
        }
        let place = Place {
            index,
            frames: lengths[index],
            size,
            tag: &tag,
            // One segment at a time, as narration comes in: all of x264's threads.
            threads: 0,
        };
        let dirs = (segments.as_path(), work.as_path());
        let plan = plan_segment(
            scene,
            (place.frames, overlaps[index]),
            size,
            &settings,
            transition,
        );
        if let Err(e) =
            ensure_segment(state, dirs, (scene, plan), place, &settings, &progress).await
        {
            result = Err(e);
            break;
        }
        state.work.notify_waiters();
    }
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

/// What encoding a content's segments needs: its scenes, the settings and the frame size.
struct Plan {
    scenes: Vec<RenderScene>,
    settings: SettingsValues,
    size: (u32, u32),
    transition: Transition,
}

/// None when the content is gone.
async fn plan(state: &AppState, content_id: i64) -> Result<Option<Plan>, TaskError> {
    let database = |e: sqlx::Error| server_fault("the database could not be read", e, true);
    let content: Option<(String, String)> =
        sqlx::query_as("SELECT aspect_ratio, transition FROM contents WHERE id = $1")
            .bind(content_id)
            .fetch_optional(state.pool())
            .await
            .map_err(database)?;
    let Some((aspect, transition)) = content else {
        return Ok(None);
    };
    let scenes = scenes(state.pool(), content_id).await.map_err(database)?;
    let (settings, _) = super::settings::for_tasks(state)
        .await
        .map_err(|e| transient(e.message))?;
    let size = frame_size(&aspect, settings.video_height);
    Ok(Some(Plan {
        scenes,
        settings,
        size,
        transition: Transition::parse(&transition).unwrap_or_default(),
    }))
}

/// Where a content's segments are kept between renders.
/// A local file with `key`'s bytes for ffmpeg to read. A picture or narration replaced
/// since the render read the scenes has had its file removed; the next attempt reads the
/// scenes again.
async fn input(state: &AppState, what: &str, key: &str) -> Result<PathBuf, TaskError> {
    state.storage.fetch(key).await.map_err(|e| match e {
        super::storage::StorageError::NotFound(_) | super::storage::StorageError::BadKey(_) => {
            server_fault(
                format!("{what} changed while the video was being made; it will be tried again"),
                format!("{key} is gone"),
                true,
            )
        }
        e => server_fault("the media store could not be read", e, true),
    })
}

fn segments_dir(media_dir: &Path, content_id: i64) -> std::path::PathBuf {
    media_dir.join(format!("content-{content_id}/segments"))
}

/// Drops the segments of scenes as they no longer are (and leftovers of stopped renders),
/// but not one being encoded right now, nor one made since this render began (prepared
/// ahead for a scene that changed meanwhile, or another render's).
async fn prune(state: &AppState, segments: &Path, used: &[String], since: std::time::SystemTime) {
    let Ok(mut entries) = tokio::fs::read_dir(segments).await else {
        return;
    };
    // A segment is several files (its frames, its sound, the ends it lends): they are
    // kept or dropped together, by the stem before the first dot.
    let stem = |name: &str| name.split('.').next().unwrap_or_default().to_owned();
    let mut keep: std::collections::HashSet<String> = used.iter().map(|n| stem(n)).collect();
    let mut found = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let recent = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= since);
        if recent || state.segments.busy(&name) {
            keep.insert(stem(&name));
        }
        found.push((name, entry.path()));
    }
    for (name, path) in found {
        if !keep.contains(&stem(&name)) {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

async fn write(path: &Path, text: &str) -> Result<(), TaskError> {
    tokio::fs::write(path, text).await.map_err(|e| {
        server_fault(
            "a file could not be written",
            format!("{}: {e}", path.display()),
            true,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfade_joins_take_frames_from_both_sides() {
        let settings = SettingsValues::default();
        assert_eq!(settings.video_fade_ms, 250, "8 frames a side at 30 fps");
        for drawn_in_segments in [Transition::Cut, Transition::Fade] {
            assert_eq!(
                overlaps(&[90, 60, 120], &settings, drawn_in_segments),
                vec![None; 3]
            );
        }
        let lent = |head, tail| Some(Overlap { head, tail });
        assert_eq!(
            overlaps(&[90, 60, 120], &settings, Transition::Crossfade),
            vec![lent(0, 8), lent(8, 8), lent(8, 0)]
        );
        // A short scene lends at most a third of itself, to both of its joins.
        assert_eq!(
            overlaps(&[90, 12, 120], &settings, Transition::Wipe),
            vec![lent(0, 4), lent(4, 4), lent(4, 0)]
        );
        assert_eq!(
            overlaps(&[90], &settings, Transition::Slide),
            vec![lent(0, 0)]
        );
        let no_time = SettingsValues {
            video_fade_ms: 0,
            ..SettingsValues::default()
        };
        assert_eq!(
            overlaps(&[90, 60], &no_time, Transition::Crossfade),
            vec![None, None],
            "no time, no joins: whole segments"
        );
    }

    #[test]
    fn a_split_segment_cuts_its_frames_into_head_own_and_tail() {
        let settings = SettingsValues::default();
        let dir = Path::new("/tmp");
        let segment = Segment {
            visual: Visual::Picture(Path::new("/media/picture.png")),
            audio: Some(Path::new("/media/speech.wav")),
            index: 1,
            frames: 60,
            subtitles: false,
            fade: false,
            threads: 1,
        };
        let (core, head, tail, audio) = (
            Path::new("core.mp4"),
            Path::new("head.mp4"),
            Path::new("tail.mp4"),
            Path::new("audio.mp4"),
        );
        let outputs = Outputs::Split {
            core,
            overlap: Overlap { head: 8, tail: 4 },
            head,
            tail,
            audio,
        };
        let command = segment_command(dir, segment, outputs, (720, 1280), &settings).unwrap();
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let graph = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        // 72 frames made: 16 for the join before (8 a side), the scene's 60 less the 8 + 4
        // it lent, 8 for the join after; its sound is the whole 2 s.
        assert!(
            graph.contains("max(on-8,0)/60") && graph.contains(":d=72:"),
            "{graph}"
        );
        assert!(
            graph.contains("split=3[core_all][head_all][tail_all]"),
            "{graph}"
        );
        assert!(
            graph.contains("[core_all]trim=start_frame=16:end_frame=64,"),
            "{graph}"
        );
        assert!(
            graph.contains("[head_all]trim=start_frame=0:end_frame=16,"),
            "{graph}"
        );
        assert!(
            graph.contains("[tail_all]trim=start_frame=64:end_frame=72,"),
            "{graph}"
        );
        assert!(graph.contains("atrim=0:2.000[a]"), "{graph}");
        assert!(!graph.contains("fade=t="), "no fade through black: {graph}");
        let output_after = |map: &str| {
            let at = args.iter().position(|a| a == map).unwrap();
            args[at..]
                .iter()
                .find(|a| a.ends_with(".mp4"))
                .unwrap()
                .clone()
        };
        assert_eq!(output_after("[core]"), "core.mp4");
        assert_eq!(output_after("[head]"), "head.mp4");
        assert_eq!(output_after("[tail]"), "tail.mp4");
        assert_eq!(output_after("[a]"), "audio.mp4");
        // The lent ends are lossless: the join encodes them again.
        let head_at = args.iter().position(|a| a == "[head]").unwrap();
        assert_eq!(
            args[head_at + 1..head_at + 7],
            ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"]
        );
    }

    #[test]
    fn a_clip_is_cut_looped_or_frozen_with_its_sound_under_the_words() {
        let settings = SettingsValues::default();
        let command = |when_shorter, sound| {
            let segment = Segment {
                visual: Visual::Clip {
                    path: Path::new("/media/clip.mp4"),
                    when_shorter,
                    sound,
                },
                audio: Some(Path::new("/media/speech.wav")),
                index: 0,
                frames: 90,
                subtitles: false,
                fade: false,
                threads: 1,
            };
            let out = Path::new("out.mp4");
            let command = segment_command(
                Path::new("/tmp"),
                segment,
                Outputs::Whole(out),
                (720, 1280),
                &settings,
            )
            .unwrap();
            command
                .as_std()
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let looped = command(WhenShorter::Loop, 0);
        let input = looped.iter().position(|a| a == "/media/clip.mp4").unwrap();
        assert_eq!(
            looped[..input]
                .iter()
                .filter(|a| *a == "-stream_loop")
                .count(),
            1
        );
        let graph = &looped[looped.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert!(
            graph.contains("fps=30,") && graph.contains("trim=end_frame=90,"),
            "{graph}"
        );
        assert!(
            !graph.contains("zoompan") && !graph.contains("[0:a]"),
            "no zoom, no clip sound: {graph}"
        );

        let frozen = command(WhenShorter::Freeze, 50);
        assert!(!frozen.contains(&"-stream_loop".to_owned()));
        let graph = &frozen[frozen.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert!(
            graph.contains("tpad=stop_mode=clone:stop=-1,trim=end_frame=90,"),
            "{graph}"
        );
        assert!(
            graph.contains(
                "[0:a]aresample=48000,aformat=channel_layouts=stereo,volume=0.50,apad[clip]"
            ),
            "{graph}"
        );
        assert!(
            graph
                .contains("[voice][clip]amix=inputs=2:duration=first:normalize=0,atrim=0:3.000[a]"),
            "{graph}"
        );
    }

    #[test]
    fn subtitle_lines_fit_the_frame() {
        let settings = SettingsValues::default();
        // 9:16 is narrow: about 23 columns; 16:9 about 52; bigger text, fewer.
        assert_eq!(subtitle_columns(&settings, (720, 1280)), 22);
        assert_eq!(subtitle_columns(&settings, (1080, 1920)), 22);
        assert_eq!(subtitle_columns(&settings, (1280, 720)), 52);
        let big = SettingsValues {
            subtitle_size: 200,
            ..SettingsValues::default()
        };
        assert_eq!(subtitle_columns(&big, (1280, 720)), 26);
    }

    #[test]
    fn ass_text_is_never_markup() {
        assert_eq!(ass_text("plain words"), "plain words");
        assert_eq!(ass_text("{\\i1}x"), "\\{\\\u{2060}i1\\}x");
        assert_eq!(ass_text("a\\Nb"), "a\\\u{2060}Nb");
        assert_eq!(ass_text("C:\\new"), "C:\\\u{2060}new");
        assert_eq!(ass_text("line one\nline two"), "line one\\Nline two");
        assert_eq!(ass_text("50% %{e:1+1} ':"), "50% %\\{e:1+1\\} ':");
        // What libass sees as a tag or a break never survives the escaping.
        for awkward in ["{\\b1}", "\\N", "\\n", "\\h", "}{"] {
            let escaped = ass_text(awkward);
            assert!(
                !escaped.contains("\\N") && !escaped.contains("\\n") && !escaped.contains("\\h"),
                "{escaped}"
            );
            assert!(!escaped.replace("\\{", "").contains('{'), "{escaped}");
        }
    }

    #[test]
    fn every_ffmpeg_run_has_a_deadline() {
        assert_eq!(deadline_for(0), Duration::from_secs(120));
        assert_eq!(deadline_for(4_500), Duration::from_secs(255));
        assert_eq!(deadline_for(-5), Duration::from_secs(120));
    }

    #[test]
    fn ass_times_are_centiseconds() {
        assert_eq!(ass_time(0), "0:00:00.00");
        assert_eq!(ass_time(61_234), "0:01:01.23");
        assert_eq!(ass_time(3_600_000), "1:00:00.00");
    }

    #[test]
    fn srt_times_are_shifted() {
        let cue = Cue {
            start_ms: 500,
            end_ms: 2_250,
            text: "Hello".into(),
            highlight: None,
        };
        assert_eq!(
            srt(&[(61_000, cue)]),
            "1\n00:01:01,500 --> 00:01:03,250\nHello\n"
        );
    }

    #[test]
    fn missing_media_is_named() {
        let scene = |image: bool, audio: bool| RenderScene {
            narration: "x".into(),
            image_key: image.then(|| "a.png".into()),
            image_id: image.then_some(1),
            audio_key: audio.then(|| "a.wav".into()),
            audio_id: audio.then_some(2),
            audio_ms: audio.then_some(1000),
            planned_ms: 3000,
            font: DEJAVU,
            words: None,
            clip: None,
        };
        assert_eq!(missing(&[scene(true, true)]), None);
        assert_eq!(
            missing(&[scene(false, true), scene(true, false), scene(false, true)]).as_deref(),
            Some("scenes 1 and 3 have no picture; scene 2 has no narration")
        );
        // A scene with no words needs no narration, and lasts its planned time.
        let silent = RenderScene {
            narration: "  ".into(),
            ..scene(true, false)
        };
        assert_eq!(missing(&[silent.clone(), scene(true, true)]), None);
        assert_eq!(silent.sound_ms(), 3000);
    }
}
