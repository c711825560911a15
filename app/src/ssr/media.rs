//! Scene media: pictures from an OpenAI-compatible Images API or a scene card made offline
//! (the scene's words over a palette, at the content's aspect ratio, drawn by libass in the
//! language's font); narration from an OpenAI-compatible speech API (timed to its words by
//! a transcription endpoint when one is set) or espeak-ng (timed by its own word events).
//! Each result
//! becomes an asset with its measured size or duration; the scene keeps its previous asset
//! until the engine commits the new one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::db::now_ms;
use super::engine::{ClaimedTask, NewAsset, Output, TaskError};
use super::error::DbResultExt;
use super::openai::SpeechFormat;
use super::providers;
use super::settings::{Capability, Endpoint};
use super::state::AppState;
use crate::model::SettingsValues;

const PALETTE: [&str; 6] = [
    "0x3b2f8f", "0x0f5c6e", "0x7a2e4d", "0x2f6b3b", "0x8a4b12", "0x24324f",
];
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Less than this of provider speech is a header without sound (ms).
const MIN_NARRATION_MS: i64 = 50;
/// A scene's narration is at most 2 000 characters; even read at a quarter of normal
/// speed that is well under 30 minutes (ms).
const MAX_NARRATION_MS: i64 = 30 * 60_000;

pub fn dimensions(aspect_ratio: &str) -> (u32, u32) {
    match aspect_ratio {
        "16:9" => (1280, 720),
        "1:1" => (1080, 1080),
        _ => (720, 1280),
    }
}

/// A scene card's words as an ASS script for a `w`×`h` frame: centred lines on a dark
/// box, in the language's font, wrapped by Unicode's rules to 80% of the width. Long
/// words shrink the text (down to 1/60 of the width) until every line fits the frame,
/// across and down.
pub fn card_script(narration: &str, language: &str, (w, h): (u32, u32)) -> String {
    let font = super::text_layout::font_for(language);
    let (size, lines) = card_layout(narration, font, (w, h));
    let text = super::render::ass_text(&lines.join("\n"));
    let pad = size / 3;
    // The lines are already wrapped to 80% of the width; should a font be wider than
    // reckoned, libass wraps again inside these margins rather than past the edge.
    let margin = w / 10;
    // Bold white on a 25%-opaque black box (BorderStyle 3 boxes each line in the outline
    // colour); alpha in ASS colours counts transparency, so &HBF000000.
    format!(
        "[Script Info]\nScriptType: v4.00+\nPlayResX: {w}\nPlayResY: {h}\nScaledBorderAndShadow: yes\n\n\
         [V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
         BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, \
         Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n\
         Style: Card,{font},{size},&H00FFFFFF,&H00FFFFFF,&HBF000000,&HBF000000,-1,0,0,0,100,100,0,0,3,{pad},0,5,{margin},{margin},0,1\n\n\
         [Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n\
         Dialogue: 0,0:00:00.00,9:00:00.00,Card,,0,0,0,,{text}\n",
        font = font.family,
        size = font.ass_size(size as f32).round(),
    )
}

/// The card's em (px) and lines. A Latin letter of bold DejaVu is about 0.62 em wide, so
/// a display column is taken as that (a CJK character, two columns, is then 1.24 em: a
/// little more than it needs); lines are the font's height apart, plus a tenth for the
/// box.
fn card_layout(
    narration: &str,
    font: super::text_layout::Font,
    (w, h): (u32, u32),
) -> (u32, Vec<String>) {
    let mut size = w / 18;
    let smallest = w / 60;
    loop {
        let columns = ((w as f32 * 0.8) / (size as f32 * 0.62)) as usize;
        let lines = super::text_layout::wrap(narration, columns.max(4));
        let fits = lines.len() as f32 * size as f32 * font.height_em * 1.1 <= h as f32 * 0.85;
        if fits || size <= smallest {
            return (size, lines);
        }
        size = (size * 9 / 10).max(smallest);
    }
}

/// The container of a speech answer, as the file extension [`demuxer_for`] knows: read
/// from its first bytes, since servers that ignore `response_format` answer what they
/// like; raw PCM has no header, so it is known only from having been asked for.
pub fn speech_container(bytes: &[u8], asked: SpeechFormat) -> &'static str {
    match bytes {
        [b'R', b'I', b'F', b'F', ..] => "wav",
        [b'O', b'g', b'g', b'S', ..] => "ogg",
        [b'f', b'L', b'a', b'C', ..] => "flac",
        [b'I', b'D', b'3', ..] => "mp3",
        // Raw samples start with anything, a frame sync included (-1 is FF FF).
        _ if asked == SpeechFormat::Pcm => "pcm",
        // An MPEG audio frame sync: layer bits 00 are AAC's ADTS, others MP3.
        [0xFF, b, ..] if b & 0xF6 == 0xF0 => "aac",
        [0xFF, b, ..] if b & 0xE0 == 0xE0 => "mp3",
        _ => match asked {
            SpeechFormat::Pcm => "pcm",
            SpeechFormat::Wav => "wav",
            SpeechFormat::Flac => "flac",
            SpeechFormat::Mp3 => "mp3",
            SpeechFormat::Opus => "ogg",
            SpeechFormat::Aac => "aac",
        },
    }
}

/// The ffmpeg demuxer for a stored media file, from its extension (which CREVID chose when
/// it stored the file); None for anything else. Every file that came from outside (an
/// upload, a provider's answer) is opened with its format forced: ffmpeg's auto-detection
/// would read an HLS playlist or a concat list sent as "audio" and open the files it names.
pub fn demuxer_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "png_pipe",
        "jpg" | "jpeg" => "jpeg_pipe",
        "webp" => "webp_pipe",
        "wav" => "wav",
        "mp3" => "mp3",
        "ogg" => "ogg",
        "flac" => "flac",
        "aac" => "aac",
        "m4a" | "mp4" | "mov" => "mov",
        "webm" => "matroska",
        // OpenAI's `pcm` speech: 24 kHz, 16-bit little-endian, mono, no header.
        "pcm" => "s16le",
        _ => return None,
    })
}

/// Adds `path` as an input of `command` with its demuxer forced (`demuxer_for`) and only
/// the `file` protocol allowed, so that no input can make ffmpeg open another file or a
/// URL. An unknown extension is an error naming `what`.
pub fn add_input(command: &mut Command, path: &Path, what: &str) -> Result<(), TaskError> {
    let demuxer = demuxer_for(path)
        .ok_or_else(|| TaskError::Permanent(format!("{what} is not in a format CREVID reads")))?;
    command.args(["-protocol_whitelist", "file", "-f", demuxer]);
    if demuxer == "s16le" {
        command.args(["-ar", "24000", "-ac", "1"]);
    }
    command.arg("-i").arg(path);
    Ok(())
}

pub(crate) async fn run_tool(
    command: Command,
    stdin: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, TaskError> {
    run_tool_within(command, stdin, what, TOOL_TIMEOUT).await
}

/// [`run_tool`] with its own deadline, for work that may take longer (a clip converted).
pub(crate) async fn run_tool_within(
    mut command: Command,
    stdin: Option<&str>,
    what: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TaskError> {
    command
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    die_with_server(&mut command);
    if stdin.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            TaskError::Permanent(format!("{what} is not installed (see the status page)"))
        }
        _ => server_fault(format!("{what} could not start"), e, true),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| server_fault(format!("{what} could not be given its input"), e, true))?;
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| TaskError::Transient {
            message: format!("{what} took longer than {} s", timeout.as_secs()),
            retry_after: None,
        })?
        .map_err(|e| server_fault(format!("{what} stopped unexpectedly"), e, true))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(tool_failed(
            what,
            output.status,
            &String::from_utf8_lossy(&output.stderr),
        ))
    }
}

struct SceneInfo {
    narration: String,
    visual_prompt: String,
    position: i64,
    aspect_ratio: String,
    language: String,
    visual_style: String,
    voice: String,
    /// None: the admin's default (`tts_speed`).
    speed: Option<f64>,
}

/// A fault of the server itself (`TaskError::Server`): `message` for the creator, `detail`
/// (which may hold paths, a tool's stderr or the database's words) for admins only.
pub(crate) fn server_fault(
    message: impl Into<String>,
    detail: impl std::fmt::Display,
    transient: bool,
) -> TaskError {
    TaskError::Server {
        message: message.into(),
        detail: detail.to_string(),
        transient,
    }
}

/// A tool that exited unsuccessfully. Killed by a signal (the OOM killer, an admin) or
/// out of disk space is the server's trouble, not the input's: worth another attempt
/// (capped by the task's attempts). Anything else is the input's: permanent. Creators are
/// told which; the last lines of the tool's stderr go to admins.
pub(crate) fn tool_failed(what: &str, status: std::process::ExitStatus, stderr: &str) -> TaskError {
    use std::os::unix::process::ExitStatusExt;
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
    if let Some(signal) = status.signal() {
        return server_fault(
            format!("{what} was stopped by the system (signal {signal}); it will be tried again"),
            tail,
            true,
        );
    }
    if stderr.contains("No space left on device") {
        return server_fault(
            format!("{what} failed: the server's disk is full; it will be tried again"),
            tail,
            true,
        );
    }
    server_fault(
        format!("{what} failed (an admin finds its own words on the status page)"),
        tail,
        false,
    )
}

/// Whether a tool's failure is its input's fault: it ran and exited saying no. A signal, a
/// full disk, a timeout or a missing tool are the server's (see [`tool_failed`] and
/// [`run_tool`]).
pub(crate) fn input_refused(e: &TaskError) -> bool {
    matches!(
        e,
        TaskError::Server {
            transient: false,
            ..
        }
    )
}

/// Makes a child process die with the server: a server killed outright (SIGKILL, OOM)
/// runs no clean-up, so without this its ffmpeg, ffprobe and espeak-ng would live on as
/// orphans writing into files a retry is about to clear.
pub(crate) fn die_with_server(command: &mut Command) {
    let server = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe and touch only the forked child.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // A server killed between the fork and the prctl sends no signal: the child
            // sees it has another parent already and never starts (prctl(2)).
            if libc::getppid() != server {
                return Err(std::io::Error::other("the server is gone"));
            }
            Ok(())
        });
    }
}

pub(crate) fn transient(message: String) -> TaskError {
    TaskError::Transient {
        message,
        retry_after: None,
    }
}

async fn scene_info(state: &AppState, task: &ClaimedTask) -> Result<SceneInfo, TaskError> {
    #[allow(clippy::type_complexity)]
    let row: Option<(String, String, i64, String, String, String, String, Option<f64>)> = sqlx::query_as(
        "SELECT s.narration, s.visual_prompt, s.position, c.aspect_ratio, c.language, c.visual_style, c.voice, c.speed \
         FROM scenes s JOIN contents c ON c.id = s.content_id WHERE s.id = $1",
    )
    .bind(task.scene_id.ok_or_else(|| TaskError::Permanent("the task names no scene".into()))?)
    .fetch_optional(state.pool())
    .await
    .map_err(|e| server_fault("the database could not be read", e, true))?;
    let (narration, visual_prompt, position, aspect_ratio, language, visual_style, voice, speed) =
        row.ok_or_else(|| TaskError::Permanent("the scene was deleted".into()))?;
    Ok(SceneInfo {
        narration,
        visual_prompt,
        position,
        aspect_ratio,
        language,
        visual_style,
        voice,
        speed,
    })
}

/// The settings and key an OpenAI-compatible call needs; a missing key fails the task
/// with a message the creator can act on, not after five attempts.
/// The settings and the keys, read together (`settings::for_tasks`), so an endpoint is
/// only ever paired with the key stored for it.
async fn provider_setup(
    state: &AppState,
) -> Result<(SettingsValues, super::settings::Keys), TaskError> {
    super::settings::for_tasks(state)
        .await
        .map_err(|e| transient(e.message))
}

/// Where a task's output goes: unique per task and attempt, so two runs never share a file.
fn output_key(task: &ClaimedTask, ext: &str) -> String {
    format!(
        "content-{}/scene-{}-{}-{}.{ext}",
        task.content_id.unwrap_or_default(),
        task.scene_id.unwrap_or_default(),
        task.id,
        task.attempt
    )
}

pub(crate) async fn prepare(state: &AppState, key: &str) -> Result<PathBuf, TaskError> {
    state
        .storage
        .prepare(key)
        .await
        .map_err(|e| server_fault("the media directory could not be written", e, true))
}

/// What a provider made, before it becomes an asset.
pub(crate) struct Made<'a> {
    pub kind: &'static str,
    pub key: String,
    pub path: PathBuf,
    pub mime: &'a str,
    pub duration_ms: Option<i64>,
    pub size: Option<(u32, u32)>,
    pub provider: String,
    /// Where each word falls in a narration (JSON), when the speech engine said.
    pub words: Option<String>,
}

/// The made file as the asset it becomes; the engine inserts it in the same transaction
/// that records the task's outcome, so a task that lost its lease leaves no row behind.
async fn into_output(state: &AppState, made: Made<'_>) -> Result<Output, TaskError> {
    Ok(Output::one(new_asset(state, made).await?))
}

/// The made file, stored (uploaded to the object store, when there is one) and measured.
pub(crate) async fn new_asset(state: &AppState, made: Made<'_>) -> Result<NewAsset, TaskError> {
    let bytes = tokio::fs::metadata(&made.path)
        .await
        .map_err(|e| server_fault("the result could not be read back", e, true))?
        .len();
    state
        .storage
        .keep(&made.key)
        .await
        .map_err(|e| server_fault("the result could not be stored", e, true))?;
    Ok(NewAsset {
        kind: made.kind,
        storage_key: made.key,
        mime_type: made.mime.to_owned(),
        bytes: bytes as i64,
        duration_ms: made.duration_ms,
        size: made.size,
        provider: made.provider,
        words: made.words,
    })
}

pub async fn scene_image(state: &AppState, task: &ClaimedTask) -> Result<Output, TaskError> {
    let scene = scene_info(state, task).await?;
    let (settings, keys) = provider_setup(state).await?;
    if settings.image_provider == "openai" {
        let endpoint = super::settings::endpoint(&settings, &keys, Capability::Images);
        let prompt = image_prompt(&scene);
        let asked = std::time::Instant::now();
        let image =
            providers::image(state, &settings, &endpoint, &prompt, &scene.aspect_ratio).await;
        state.metrics.provider(
            "images",
            &settings.image_model,
            image.is_ok(),
            asked.elapsed(),
        );
        let image = image?;
        let key = output_key(task, image.ext);
        let path = prepare(state, &key).await?;
        tokio::fs::write(&path, &image.bytes)
            .await
            .map_err(|e| server_fault("the picture could not be saved", e, true))?;
        let size = match image_size(&image.bytes) {
            Some(size) => Some(size),
            None => probe(&path).await?.size,
        };
        return into_output(
            state,
            Made {
                kind: "image",
                key,
                path,
                mime: image.mime,
                duration_ms: None,
                size,
                provider: format!("openai:{}", settings.image_model),
                words: None,
            },
        )
        .await;
    }
    let (w, h) = dimensions(&scene.aspect_ratio);
    let key = output_key(task, "png");
    let path = prepare(state, &key).await?;
    // libass draws the words: it shapes Arabic and Indic scripts and takes each glyph from
    // whichever installed font has it, where drawtext has one font and no shaping.
    let script_path = path.with_extension("ass");
    let colour = PALETTE[scene.position.rem_euclid(PALETTE.len() as i64) as usize];
    tokio::fs::write(
        &script_path,
        card_script(&scene.narration, &scene.language, (w, h)),
    )
    .await
    .map_err(|e| server_fault("the card's words could not be saved", e, true))?;
    // The filter names the script relative to ffmpeg's working directory: a data
    // directory's `'`, `:` or `,` would otherwise be read as filter syntax. The file name
    // is ours (`scene-…-….ass`) and holds none of them.
    let (Some(card_dir), Some(script_name)) = (
        script_path.parent(),
        script_path.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(TaskError::Permanent("the card's file has no name".into()));
    };
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.current_dir(card_dir);
    ffmpeg
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("color=c={colour}:s={w}x{h}"))
        .args([
            "-vf",
            &format!("ass=filename={script_name}:shaping=complex"),
            "-frames:v",
            "1",
            "-update",
            "1",
        ]);
    ffmpeg.arg(&path);
    let result = run_tool(ffmpeg, None, "ffmpeg").await;
    let _ = tokio::fs::remove_file(&script_path).await;
    result?;
    into_output(
        state,
        Made {
            kind: "image",
            key,
            path,
            mime: "image/png",
            duration_ms: None,
            size: Some((w, h)),
            provider: "builtin:scene-card".into(),
            words: None,
        },
    )
    .await
}

fn image_prompt(scene: &SceneInfo) -> String {
    let subject = if scene.visual_prompt.trim().is_empty() {
        scene.narration.trim()
    } else {
        scene.visual_prompt.trim()
    };
    format!(
        "{subject}. Visual style: {}. Aspect ratio {}. No text, captions or watermarks in the image.",
        scene.visual_style.trim(),
        scene.aspect_ratio
    )
}

pub async fn scene_audio(state: &AppState, task: &ClaimedTask) -> Result<Output, TaskError> {
    let scene = scene_info(state, task).await?;
    if scene.narration.trim().is_empty() {
        // The words were removed after the job was queued.
        return Err(TaskError::Permanent(
            "the scene has no words to narrate; it is shown silently".into(),
        ));
    }
    let (settings, keys) = provider_setup(state).await?;
    if settings.tts_provider == "openai" {
        let endpoint = super::settings::endpoint(&settings, &keys, Capability::Speech);
        let asked = std::time::Instant::now();
        let speed = scene.speed.unwrap_or(settings.tts_speed);
        let speech = providers::speech(
            state,
            &settings,
            &endpoint,
            &scene.narration,
            super::voices::provider_voice(&scene.voice, &settings.default_voice),
            speed,
        )
        .await;
        state.metrics.provider(
            "speech",
            &settings.tts_model,
            speech.is_ok(),
            asked.elapsed(),
        );
        let speech = speech?;
        let bytes = speech.bytes;
        if bytes.is_empty() {
            return Err(transient(
                "the speech provider answered with no audio".into(),
            ));
        }
        let key = output_key(task, "wav");
        let path = prepare(state, &key).await?;
        let clean = provider_wav(&bytes, speech.format, &path).await?;
        let duration = match wav_duration_ms(&clean) {
            // Shorter than a spoken syllable: a header without sound. Servers do this
            // under load; asking again usually gets the audio.
            Some(ms) if ms >= MIN_NARRATION_MS => ms,
            _ => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(transient(
                    "the speech provider answered with no audio".into(),
                ));
            }
        };
        if duration > MAX_NARRATION_MS {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(TaskError::Permanent(format!(
                "the speech provider's audio lasts {} min, longer than any narration ({} min at most)",
                duration / 60_000,
                MAX_NARRATION_MS / 60_000
            )));
        }
        let transcription = super::settings::endpoint(&settings, &keys, Capability::Transcription);
        let words = heard_words(
            state,
            &settings,
            &transcription,
            &scene.narration,
            clean,
            duration,
        )
        .await;
        let mime = "audio/wav";
        return into_output(
            state,
            Made {
                kind: "audio",
                key,
                path,
                mime,
                duration_ms: Some(duration),
                size: None,
                provider: format!("openai:{}", settings.tts_model),
                words,
            },
        )
        .await;
    }
    let key = output_key(task, "wav");
    let path = prepare(state, &key).await?;
    let voice = super::voices::espeak_voice_for(&scene.language, &scene.voice);
    let speed = scene.speed.unwrap_or(settings.tts_speed);
    let spoken = speak_offline(state, &voice, &scene.narration, speed, &path).await?;
    if !spoken.on_disk {
        tokio::fs::write(&path, &spoken.wav)
            .await
            .map_err(|e| server_fault("the narration could not be saved", e, true))?;
    }
    let duration = wav_duration_ms(&spoken.wav)
        .ok_or_else(|| TaskError::Permanent("espeak-ng wrote an unreadable WAV file".into()))?;
    into_output(
        state,
        Made {
            kind: "audio",
            key,
            path,
            mime: "audio/wav",
            duration_ms: Some(duration),
            size: None,
            provider: "builtin:espeak-ng".into(),
            words: spoken.words,
        },
    )
    .await
}

/// Word timings of provider narration, from the transcription endpoint when the admin set
/// a transcription model (JSON of `espeak::WordTime`s). Never fails the narration: without
/// them captions take the estimate, and why is logged.
async fn heard_words(
    state: &AppState,
    settings: &SettingsValues,
    endpoint: &Endpoint,
    narration: &str,
    wav: Vec<u8>,
    duration_ms: i64,
) -> Option<String> {
    if settings.transcription_model.trim().is_empty() {
        return None;
    }
    let heard = match providers::transcribe(state, settings, endpoint, wav).await {
        Ok(heard) => heard,
        Err(why) => {
            tracing::warn!(%why, "transcribing the narration failed; captions take the estimate");
            return None;
        }
    };
    let heard: Vec<(String, i64)> = heard.into_iter().map(|w| (w.word, w.start_ms)).collect();
    let Some(words) = super::captions::align(narration, &heard, duration_ms) else {
        tracing::warn!("the transcript does not match the narration; captions take the estimate");
        return None;
    };
    serde_json::to_string(&words).ok()
}

/// Width and height from a PNG's header (what the Images API returns by default).
pub fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

#[derive(Default)]
struct Probed {
    size: Option<(u32, u32)>,
    duration_ms: Option<i64>,
}

/// Measures a file whose header we do not parse ourselves (JPEG, WebP, MP3, ...).
async fn probe(path: &Path) -> Result<Probed, TaskError> {
    let mut ffprobe = Command::new("ffprobe");
    ffprobe.args([
        "-v",
        "error",
        "-show_entries",
        "stream=width,height:format=duration",
        "-of",
        "default=noprint_wrappers=1",
        "-protocol_whitelist",
        "file",
    ]);
    // Like ffmpeg's inputs (`add_input`): never auto-detected, so a playlist posing as a
    // picture or a sound cannot make ffprobe open the files it names.
    if let Some(demuxer) = demuxer_for(path) {
        ffprobe.args(["-f", demuxer]);
    }
    ffprobe.arg(path).kill_on_drop(true);
    die_with_server(&mut ffprobe);
    let output = tokio::time::timeout(TOOL_TIMEOUT, ffprobe.output())
        .await
        .map_err(|_| transient("ffprobe took too long".into()))?
        .map_err(|e| server_fault("ffprobe could not run", e, false))?;
    if !output.status.success() {
        return Err(TaskError::Permanent(
            "the provider's file is not a readable image or audio file".into(),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| *v != "N/A")
    };
    let size = match (
        field("width").and_then(|v| v.parse().ok()),
        field("height").and_then(|v| v.parse().ok()),
    ) {
        (Some(w), Some(h)) => Some((w, h)),
        _ => None,
    };
    let duration_ms = field("duration")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|secs| (secs * 1000.0).round() as i64);
    Ok(Probed { size, duration_ms })
}

/// Duration of a PCM WAV file from its header: data bytes / byte rate.
/// A 16-bit PCM WAV read sample by sample (hound) and written again as a canonical WAV
/// of the same channels and rate: its length is the samples that are there, whatever the
/// header claims. None for anything else (another format or sample type, a data chunk
/// shorter than its header says, a streaming server's unset sizes), which ffmpeg converts.
pub fn rewritten_pcm_wav(bytes: &[u8]) -> Option<Vec<u8>> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).ok()?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return None;
    }
    let samples: Vec<i16> = reader.into_samples().collect::<Result<_, _>>().ok()?;
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut writer = hound::WavWriter::new(
        &mut out,
        hound::WavSpec {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .ok()?;
    let mut pcm = writer.get_i16_writer(samples.len() as u32);
    for sample in samples {
        pcm.write_sample(sample);
    }
    pcm.flush().ok()?;
    writer.finalize().ok()?;
    Some(out.into_inner())
}

pub fn wav_duration_ms(bytes: &[u8]) -> Option<i64> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let (mut pos, mut byte_rate, mut data_len) = (12usize, None, None);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        if id == b"fmt " && pos + 20 <= bytes.len() {
            byte_rate = Some(u32::from_le_bytes(
                bytes[pos + 16..pos + 20].try_into().ok()?,
            ));
        }
        if id == b"data" {
            // espeak-ng streaming to a file may leave the size at 0 or 0xFFFFFFFF.
            let available = bytes.len() - (pos + 8);
            data_len = Some(if len == 0 || len > available {
                available
            } else {
                len
            });
            break;
        }
        pos += 8 + len + (len % 2);
    }
    let rate = byte_rate.filter(|r| *r > 0)?;
    Some((data_len? as u64 * 1000 / u64::from(rate)) as i64)
}

/// The stored file of an asset the caller may read (its content's owner, or an admin).
pub async fn asset_file(
    state: &AppState,
    user: &super::auth::CurrentUser,
    id: i64,
) -> Result<String, crate::error::AppError> {
    sqlx::query_scalar(
        "SELECT a.storage_key FROM assets a JOIN contents c ON c.id = a.content_id \
         WHERE a.id = $1 AND ($2 = 1 OR c.owner_id = $3)",
    )
    .bind(id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(state.pool())
    .await
    .db("reading an asset")?
    .ok_or_else(|| crate::error::AppError::not_found("asset"))
}

/// Stores an uploaded music file as the content's background music (replacing any before).
/// The upload is read once with the demuxer its `Content-Type` names (never
/// auto-detected, only local file access) and re-encoded to AAC in MP4 (`.m4a`), so what
/// is stored, and later mixed into videos, is always a plain audio file of ours.
pub async fn save_music(
    state: &AppState,
    user: &super::auth::CurrentUser,
    content_id: i64,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<crate::model::ContentDetail, crate::error::AppError> {
    use crate::error::AppError;
    super::contents::get(state, user, content_id).await?;
    let ext = upload_ext(content_type, MUSIC_TYPES, "music file", bytes)?;
    let key = format!(
        "content-{content_id}/music-{}-{:08x}.m4a",
        now_ms(),
        rand::random::<u32>()
    );
    let (path, upload) = stage_upload(state, user, content_id, &key, ext, bytes).await?;
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
    let converted = match add_input(&mut ffmpeg, &upload, "the music") {
        Ok(()) => {
            ffmpeg
                .args([
                    "-map", "0:a:0", "-vn", "-c:a", "aac", "-b:a", "192k", "-f", "mp4",
                ])
                .arg(&path);
            run_tool(ffmpeg, None, "ffmpeg").await
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&upload).await;
    if let Err(e) = &converted {
        if !input_refused(e) {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::error!(error = e.message(), "converting a creator's music");
            return Err(AppError::internal());
        }
    }
    let duration_ms = match converted {
        Ok(_) => match probe(&path).await {
            Ok(Probed {
                duration_ms: Some(ms),
                ..
            }) if ms > 0 => Some(ms),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(duration_ms) = duration_ms else {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(AppError::validation(
            "body",
            format!("this file is not {ext} audio that ffmpeg can read"),
        ));
    };
    let stored_bytes = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len() as i64)
        .map_err(|e| super::error::internal("measuring music", e))?;
    if let Err(e) = state.storage.keep(&key).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(super::error::internal("storing music", e));
    }
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let asset_id: i64 = sqlx::query_scalar(
        "INSERT INTO assets (content_id, kind, storage_key, mime_type, bytes, duration_ms, provider, created_at) \
         VALUES ($1, 'audio', $2, $3, $4, $5, 'upload', $6) RETURNING id",
    )
    .bind(content_id)
    .bind(&key)
    .bind("audio/mp4")
    .bind(stored_bytes)
    .bind(duration_ms)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await
    .db("recording music")?;
    let replaced = set_music(&mut tx, content_id, Some(asset_id)).await?;
    tx.commit().await.db("committing music")?;
    for key in replaced {
        state.storage.remove(&key).await;
    }
    super::contents::get(state, user, content_id).await
}

/// Whether `content_type`'s top-level type is `top` (`image`, `video`), case aside.
pub fn top_type_is(content_type: Option<&str>, top: &str) -> bool {
    content_type
        .and_then(|t| t.trim_start().split_once('/'))
        .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top))
}

/// The media types a music upload may have (`Content-Type` names, the extension its demuxer
/// reads).
const MUSIC_TYPES: &[(&[&str], &str)] = &[
    (&["audio/mpeg", "audio/mp3"], "mp3"),
    (&["audio/wav", "audio/x-wav", "audio/wave"], "wav"),
    (&["audio/ogg", "audio/opus"], "ogg"),
    (&["audio/flac", "audio/x-flac"], "flac"),
    (&["audio/aac"], "aac"),
    (&["audio/mp4", "audio/x-m4a"], "m4a"),
];

/// The picture types a creator may upload, as [`MUSIC_TYPES`].
const PICTURE_TYPES: &[(&[&str], &str)] = &[
    (&["image/png"], "png"),
    (&["image/jpeg", "image/jpg"], "jpg"),
    (&["image/webp"], "webp"),
];

/// The extension for an upload whose `Content-Type` is one of `allowed`'s; 415 naming the
/// first name of each type otherwise, and 422 for an empty `what` (such as "music file").
pub(crate) fn upload_ext(
    content_type: Option<&str>,
    allowed: &[(&[&str], &'static str)],
    what: &str,
    bytes: &[u8],
) -> Result<&'static str, crate::error::AppError> {
    use crate::error::{AppError, ErrorCode};
    let essence = content_type.map(|t| t.split(';').next().unwrap_or_default().trim());
    let found = essence.and_then(|essence| {
        allowed
            .iter()
            .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(essence)))
    });
    let Some((_, ext)) = found else {
        let names: Vec<&str> = allowed.iter().map(|(names, _)| names[0]).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        let kind = what.split(' ').next().unwrap_or(what);
        return Err(AppError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Send the {kind} as {} or {last} (got {})",
                rest.join(", "),
                essence.unwrap_or("no Content-Type")
            ),
        ));
    };
    if bytes.is_empty() {
        return Err(AppError::validation("body", format!("the {what} is empty")));
    }
    Ok(ext)
}

/// An upload's next steps, for music and pictures alike, once [`upload_ext`] took it: a
/// full quota is refused, then the bytes are written beside where `key`'s converted file goes, as
/// `upload-….{ext}`. Returns (the converted file's path, the upload's path).
async fn stage_upload(
    state: &AppState,
    caller: &super::auth::CurrentUser,
    content_id: i64,
    key: &str,
    ext: &str,
    bytes: &[u8],
) -> Result<(PathBuf, PathBuf), crate::error::AppError> {
    use crate::error::{AppError, ErrorCode};
    check_quota(state, caller, content_id).await?;
    let path = prepare(state, key)
        .await
        .map_err(|e| AppError::new(ErrorCode::Internal, e.message().to_owned()))?;
    // Named for this upload alone: two at once never share a file.
    let upload = path.with_file_name(format!(
        "upload-{}-{:08x}.{ext}",
        now_ms(),
        rand::random::<u32>()
    ));
    tokio::fs::write(&upload, bytes)
        .await
        .map_err(|e| super::error::internal("saving an upload", e))?;
    Ok((path, upload))
}

/// Points the content at `music` (or none) and drops the music it replaces; the storage
/// keys to remove once the transaction commits are returned.
async fn set_music(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    content_id: i64,
    music: Option<i64>,
) -> Result<Vec<String>, crate::error::AppError> {
    sqlx::query("UPDATE contents SET music_asset_id = $1, updated_at = $2 WHERE id = $3")
        .bind(music)
        .bind(now_ms())
        .bind(content_id)
        .execute(&mut **tx)
        .await
        .db("setting music")?;
    drop_unowned(tx, content_id).await
}

/// Drops the asset rows of a content that nothing points at any more (a replaced
/// picture, narration, video, subtitle file or music; the narration of words that were
/// edited; the media of a deleted scene) and returns their storage keys, whose files are
/// removed once the transaction commits (`remove_file`): a file belongs to its row.
pub async fn drop_unowned(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    content_id: i64,
) -> Result<Vec<String>, crate::error::AppError> {
    sqlx::query_scalar(
        "DELETE FROM assets WHERE content_id = $1 \
         AND id NOT IN (SELECT image_asset_id FROM scenes WHERE content_id = $1 AND image_asset_id IS NOT NULL) \
         AND id NOT IN (SELECT clip_asset_id FROM scenes WHERE content_id = $1 AND clip_asset_id IS NOT NULL) \
         AND id NOT IN (SELECT audio_asset_id FROM scenes WHERE content_id = $1 AND audio_asset_id IS NOT NULL) \
         AND id NOT IN (SELECT x FROM (SELECT video_asset_id AS x FROM contents WHERE id = $1 \
           UNION ALL SELECT subtitles_asset_id FROM contents WHERE id = $1 \
           UNION ALL SELECT music_asset_id FROM contents WHERE id = $1) current WHERE x IS NOT NULL) \
         RETURNING storage_key",
    )
    .bind(content_id)
    .fetch_all(&mut **tx)
    .await
    .db("dropping replaced media")
}

/// The video goes back to narration alone (the next render).
pub async fn remove_music(
    state: &AppState,
    user: &super::auth::CurrentUser,
    content_id: i64,
) -> Result<crate::model::ContentDetail, crate::error::AppError> {
    super::contents::get(state, user, content_id).await?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let removed = set_music(&mut tx, content_id, None).await?;
    tx.commit().await.db("removing music")?;
    for key in removed {
        state.storage.remove(&key).await;
    }
    super::contents::get(state, user, content_id).await
}

/// How a creator's picture meets the content's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Fill the frame, cutting what overflows (the centre stays).
    Crop,
    /// The whole picture, with black bars where its shape differs.
    Pad,
}

impl Fit {
    /// ffmpeg's filters fitting a picture or clip into a `w`×`h` frame this way.
    pub fn filter(self, (w, h): (u32, u32)) -> String {
        match self {
            Fit::Crop => format!(
                "scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1"
            ),
            Fit::Pad => format!(
                "scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
            ),
        }
    }
}

/// Largest picture a creator may upload, in pixels a side and in all (a small file can
/// decode to gigabytes).
const PICTURE_MAX_SIDE: u32 = 12_000;
const PICTURE_MAX_PIXELS: u64 = 50_000_000;

/// Makes a creator's picture (PNG, JPEG or WebP, as `content_type` says) the scene's
/// current picture: checked and converted once, to a PNG of the content's frame
/// (`dimensions`), cropped or padded as `fit` says. Errors: 404 for another's content or a
/// scene not in it, 415 for another type, 422 for a file that is not that type or too
/// large a picture, 413 when the storage quota is full. The picture it replaces goes.
pub async fn save_scene_picture(
    state: &AppState,
    user: &super::auth::CurrentUser,
    content_id: i64,
    scene_id: i64,
    content_type: Option<&str>,
    fit: Fit,
    bytes: &[u8],
    credit: Option<&str>,
) -> Result<crate::model::ContentDetail, crate::error::AppError> {
    use crate::error::AppError;
    let content = super::contents::get(state, user, content_id).await?;
    if !content.scenes.iter().any(|s| s.id == scene_id) {
        return Err(AppError::not_found("scene"));
    }
    let ext = upload_ext(content_type, PICTURE_TYPES, "picture file", bytes)?;
    // Type and size from the header, before any decoder sees the file: a small file can
    // claim a picture that decodes to gigabytes.
    let claimed = match ext {
        "png" => imagesize::ImageType::Png,
        "jpg" => imagesize::ImageType::Jpeg,
        _ => imagesize::ImageType::Webp,
    };
    let not_readable = || {
        AppError::validation(
            "body",
            format!("this file is not a {ext} picture that ffmpeg can read"),
        )
    };
    if imagesize::image_type(bytes).ok() != Some(claimed) {
        return Err(not_readable());
    }
    let size = imagesize::blob_size(bytes).map_err(|_| not_readable())?;
    let (width, height) = (size.width as u64, size.height as u64);
    if width == 0
        || height == 0
        || width.max(height) > u64::from(PICTURE_MAX_SIDE)
        || width * height > PICTURE_MAX_PIXELS
    {
        return Err(AppError::validation(
            "body",
            format!(
                "the picture is {width}×{height} pixels; at most {PICTURE_MAX_SIDE} a side and {} megapixels",
                PICTURE_MAX_PIXELS / 1_000_000
            ),
        ));
    }
    let key = format!(
        "content-{content_id}/scene-{scene_id}-own-{}-{:08x}.png",
        now_ms(),
        rand::random::<u32>()
    );
    let (path, upload) = stage_upload(state, user, content_id, &key, ext, bytes).await?;
    let (w, h) = dimensions(&content.presets.aspect_ratio);
    // Transparency is flattened (rgb24): the video has no layer beneath to show through.
    let filter = format!("{},format=rgb24", fit.filter((w, h)));
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
    let converted = match add_input(&mut ffmpeg, &upload, "the picture") {
        Ok(()) => {
            ffmpeg
                .args(["-frames:v", "1", "-vf", &filter, "-c:v", "png"])
                .args(["-f", "image2", "-update", "1"])
                .arg(&path);
            run_tool(ffmpeg, None, "ffmpeg").await
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&upload).await;
    match converted {
        Ok(_) => {}
        // ffmpeg ran and could not decode it: the file's fault.
        Err(e) if input_refused(&e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(not_readable());
        }
        // A timeout, or ffmpeg could not run: the server's.
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            tracing::error!(error = e.message(), "converting a creator's picture");
            return Err(AppError::internal());
        }
    }
    let recorded =
        record_scene_picture(state, (content_id, scene_id), (&key, &path), (w, h), credit).await;
    match recorded {
        Ok(replaced) => {
            for key in replaced {
                state.storage.remove(&key).await;
            }
            super::render::prepare_ahead(state, content_id);
        }
        Err(e) => {
            // Nothing points at the file: it goes now, not at the next sweep.
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    }
    super::contents::get(state, user, content_id).await
}

/// Records the converted picture at `path` as the scene's current picture; returns the
/// storage keys of what it replaced.
async fn record_scene_picture(
    state: &AppState,
    (content_id, scene_id): (i64, i64),
    (key, path): (&str, &Path),
    (w, h): (u32, u32),
    credit: Option<&str>,
) -> Result<Vec<String>, crate::error::AppError> {
    let stored_bytes = tokio::fs::metadata(path)
        .await
        .map(|m| m.len() as i64)
        .map_err(|e| super::error::internal("measuring a picture", e))?;
    state
        .storage
        .keep(key)
        .await
        .map_err(|e| super::error::internal("storing a picture", e))?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let asset_id: i64 = sqlx::query_scalar(
        "INSERT INTO assets (content_id, scene_id, kind, storage_key, mime_type, bytes, width, height, provider, created_at, credit) \
         VALUES ($1, $2, 'image', $3, 'image/png', $4, $5, $6, 'upload', $7, $8) RETURNING id",
    )
    .bind(content_id)
    .bind(scene_id)
    .bind(key)
    .bind(stored_bytes)
    .bind(i64::from(w))
    .bind(i64::from(h))
    .bind(now_ms())
    .bind(credit)
    .fetch_one(&mut *tx)
    .await
    .db("recording a picture")?;
    let replaced = set_scene_picture(&mut tx, content_id, scene_id, Some(asset_id)).await?;
    tx.commit().await.db("committing a picture")?;
    Ok(replaced)
}

/// The scene has no picture again: the next "Generate images" makes one.
pub async fn remove_scene_picture(
    state: &AppState,
    user: &super::auth::CurrentUser,
    content_id: i64,
    scene_id: i64,
) -> Result<crate::model::ContentDetail, crate::error::AppError> {
    let content = super::contents::get(state, user, content_id).await?;
    if !content.scenes.iter().any(|s| s.id == scene_id) {
        return Err(crate::error::AppError::not_found("scene"));
    }
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let removed = set_scene_picture(&mut tx, content_id, scene_id, None).await?;
    tx.commit().await.db("removing a picture")?;
    for key in removed {
        state.storage.remove(&key).await;
    }
    super::contents::get(state, user, content_id).await
}

/// Points the scene at `picture` (or none) and drops the picture it replaces; the storage
/// keys to remove once the transaction commits are returned.
async fn set_scene_picture(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    content_id: i64,
    scene_id: i64,
    picture: Option<i64>,
) -> Result<Vec<String>, crate::error::AppError> {
    sqlx::query(
        "UPDATE scenes SET image_asset_id = $1, clip_asset_id = NULL, updated_at = $2 WHERE id = $3 AND content_id = $4",
    )
    .bind(picture)
    .bind(now_ms())
    .bind(scene_id)
    .bind(content_id)
    .execute(&mut **tx)
    .await
    .db("setting a scene's picture")?;
    drop_unowned(tx, content_id).await
}

pub enum ContentFile {
    Video,
    Subtitles,
}

/// The stored file of a content's current video or subtitles, for its owner or an admin.
pub async fn content_file(
    state: &AppState,
    user: &super::auth::CurrentUser,
    content_id: i64,
    which: ContentFile,
) -> Result<String, crate::error::AppError> {
    let column = match which {
        ContentFile::Video => "video_asset_id",
        ContentFile::Subtitles => "subtitles_asset_id",
    };
    let found: Option<Option<String>> = sqlx::query_scalar(&format!(
        "SELECT a.storage_key FROM contents c LEFT JOIN assets a ON a.id = c.{column} \
         WHERE c.id = $1 AND ($2 = 1 OR c.owner_id = $3)"
    ))
    .bind(content_id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .fetch_optional(state.pool())
    .await
    .db("reading a content's video")?;
    match found {
        None => Err(crate::error::AppError::not_found("content")),
        // The content exists and is theirs; what is missing is a render (409, not 404).
        Some(None) => Err(crate::error::AppError::new(
            crate::error::ErrorCode::Conflict,
            "This content has no rendered video yet: render it first.",
        )),
        Some(Some(key)) => Ok(key),
    }
}

/// Refuses new media for `owner_id` when their contents' stored media (pictures,
/// narration, videos, subtitles, music; bytes as recorded) reach the admin's quota
/// (`storage_quota_mb`, MiB; 0: none).
/// Refuses new media for `content_id` once its owner's media fill the storage quota: the
/// quota is the owner's, whoever asks (an admin working on a creator's content too).
pub async fn check_quota(
    state: &AppState,
    caller: &super::auth::CurrentUser,
    content_id: i64,
) -> Result<(), crate::error::AppError> {
    use crate::error::{AppError, ErrorCode};
    let quota_mb = i64::from(super::settings::values(state).await?.storage_quota_mb);
    if quota_mb == 0 {
        return Ok(());
    }
    let (owner, used): (Option<i64>, i64) = sqlx::query_as(
        "SELECT o.owner_id, CAST(COALESCE((SELECT SUM(a.bytes) FROM assets a JOIN contents c \
         ON c.id = a.content_id WHERE c.owner_id = o.owner_id), 0) AS BIGINT) \
         FROM contents o WHERE o.id = $1",
    )
    .bind(content_id)
    .fetch_optional(state.pool())
    .await
    .db("measuring media use")?
    .ok_or_else(|| AppError::not_found("content"))?;
    if used >= quota_mb * 1024 * 1024 {
        let whose = if owner == Some(caller.id) {
            "Your media take"
        } else {
            "The media of this content's owner take"
        };
        return Err(AppError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "{whose} {} MiB, and the storage quota is {quota_mb} MiB. Delete contents no longer needed (or ask an admin for more room), then try again.",
                used / 1024 / 1024
            ),
        ));
    }
    Ok(())
}

/// Files no row owns: what a crash between writing a file and recording it, or between
/// dropping a row and removing its file, left behind. Removes every file under the media
/// directory older than `min_age` that no asset row names, except the cached segments
/// and work directories of live contents (the render keeps and prunes those); and whole
/// directories of contents that no longer exist. With an object store, the same for its
/// objects, and local copies of stored objects fetched `min_age` ago are evicted too.
/// Returns how many files and objects went.
pub async fn sweep(state: &AppState, min_age: Duration) -> Result<usize, crate::error::AppError> {
    use std::collections::HashSet;
    let keys: HashSet<String> = sqlx::query_scalar("SELECT storage_key FROM assets")
        .fetch_all(state.pool())
        .await
        .db("listing stored media")?
        .into_iter()
        .collect();
    let contents: HashSet<i64> = sqlx::query_scalar("SELECT id FROM contents")
        .fetch_all(state.pool())
        .await
        .db("listing contents")?
        .into_iter()
        .collect();
    let storage = &state.storage;
    let now = std::time::SystemTime::now();
    let old_enough =
        |at: std::time::SystemTime| now.duration_since(at).is_ok_and(|age| age >= min_age);
    let content_of = |key: &str| {
        key.split('/')
            .next()
            .and_then(|dir| dir.strip_prefix("content-"))
            .and_then(|id| id.parse::<i64>().ok())
    };
    let mut removed = 0;
    // A store that does not answer now is swept next time; the directory still is.
    let objects = storage.objects().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not list the object store to sweep it");
        Vec::new()
    });
    for (key, written) in objects {
        // Only finished files are uploaded, so an object is an asset's or no one's.
        if !keys.contains(&key) && old_enough(written) {
            storage.remove(&key).await;
            removed += 1;
        }
    }
    let evict_copies = storage.copies_are_evictable();
    let Ok(mut dirs) = tokio::fs::read_dir(storage.root()).await else {
        return Ok(removed);
    };
    while let Ok(Some(entry)) = dirs.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(content_id) = content_of(&name) else {
            continue;
        };
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if !contents.contains(&content_id) {
            if meta.modified().is_ok_and(old_enough) {
                storage.remove_content(content_id).await;
                removed += 1;
            }
            continue;
        }
        let Ok(mut files) = tokio::fs::read_dir(entry.path()).await else {
            continue;
        };
        while let Ok(Some(file)) = files.next_entry().await {
            let Ok(meta) = file.metadata().await else {
                continue;
            };
            // Segments and render work directories belong to the render.
            if meta.is_dir() {
                continue;
            }
            let key = format!("{name}/{}", file.file_name().to_string_lossy());
            let evictable = !keys.contains(&key) || evict_copies;
            if evictable && meta.modified().is_ok_and(old_enough) {
                if keys.contains(&key) {
                    // Only the copy: the object stays.
                    let _ = tokio::fs::remove_file(file.path()).await;
                } else {
                    storage.remove(&key).await;
                }
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// A provider's speech (`bytes`, asked for in `format`) as a clean 16-bit PCM WAV written to
/// `path`, and its bytes. What is stored, and every duration read from it, comes from the
/// samples, never from the provider's header (a bogus byte rate once made a 1 s answer
/// "last" 13 hours). A whole 16-bit PCM WAV is rewritten here; anything else goes through
/// ffmpeg (about 80 ms a start, which capped narration at some 22 tasks a second on 2
/// cores).
pub(crate) async fn provider_wav(
    bytes: &[u8],
    format: super::openai::SpeechFormat,
    path: &std::path::Path,
) -> Result<Vec<u8>, TaskError> {
    let ext = speech_container(bytes, format);
    Ok(match rewritten_pcm_wav(bytes) {
        Some(clean) => {
            tokio::fs::write(path, &clean)
                .await
                .map_err(|e| server_fault("the narration could not be saved", e, true))?;
            clean
        }
        None => {
            let answer = path.with_extension(format!("provider.{ext}"));
            tokio::fs::write(&answer, bytes)
                .await
                .map_err(|e| server_fault("the narration could not be saved", e, true))?;
            let mut ffmpeg = Command::new("ffmpeg");
            ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
            add_input(&mut ffmpeg, &answer, "the provider's audio")?;
            ffmpeg
                .args(["-map", "0:a:0", "-vn", "-c:a", "pcm_s16le", "-f", "wav"])
                .arg(path);
            let converted = run_tool(ffmpeg, None, "ffmpeg").await;
            let _ = tokio::fs::remove_file(&answer).await;
            if converted.is_err() {
                let _ = tokio::fs::remove_file(path).await;
                return Err(TaskError::Permanent(
                    "the speech provider's answer is not audio ffmpeg can read".into(),
                ));
            }
            tokio::fs::read(path)
                .await
                .map_err(|e| server_fault("the narration could not be read back", e, true))?
        }
    })
}

/// What [`speak_offline`] made.
pub(crate) struct OfflineSpeech {
    /// A 16-bit PCM WAV.
    pub wav: Vec<u8>,
    /// Where each word falls (JSON of `espeak::WordTime`s), when the library could say.
    pub words: Option<String>,
    /// Whether `wav` is already at the path given (the command writes it there; the library
    /// leaves the bytes in memory).
    pub on_disk: bool,
}

/// `text` spoken offline by espeak-ng with `voice` at `speed` (1: 175 words a minute). The
/// library comes first and answers in memory; the `espeak-ng` command is the fallback and
/// writes the WAV at `path`.
pub(crate) async fn speak_offline(
    state: &AppState,
    voice: &str,
    text: &str,
    speed: f64,
    path: &std::path::Path,
) -> Result<OfflineSpeech, TaskError> {
    let rate = super::voices::espeak_rate(speed);
    if state.espeak.available() {
        let espeak = state.espeak.clone();
        let (voice_name, words) = (voice.to_owned(), text.to_owned());
        let spoken = tokio::task::spawn_blocking(move || espeak.speak(&voice_name, &words, rate))
            .await
            .map_err(|e| server_fault("the narration could not be made", e, true))?;
        match spoken {
            Ok(spoken) => {
                let words = serde_json::to_string(&spoken.words)
                    .map_err(|e| server_fault("the word timings could not be written", e, false))?;
                return Ok(OfflineSpeech {
                    wav: spoken.wav,
                    words: Some(words),
                    on_disk: false,
                });
            }
            // The command may still manage (another voice file, another build).
            Err(e) => tracing::warn!(error = %e, "espeak-ng's library failed; using the command"),
        }
    }
    let mut espeak = Command::new("espeak-ng");
    espeak
        .args(["-v", voice, "-s", &rate.to_string(), "-w"])
        .arg(path)
        .arg("--stdin");
    run_tool(espeak, Some(text), "espeak-ng").await?;
    let wav = tokio::fs::read(path)
        .await
        .map_err(|e| server_fault("the narration could not be read back", e, true))?;
    Ok(OfflineSpeech {
        wav,
        words: None,
        on_disk: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn uploads_are_typed_by_their_content_type() {
        let bytes = b"x";
        assert_eq!(
            upload_ext(
                Some("Audio/MPEG; charset=x"),
                MUSIC_TYPES,
                "music file",
                bytes
            )
            .ok(),
            Some("mp3"),
            "media types are case-insensitive (RFC 9110 8.3.1)"
        );
        assert_eq!(
            upload_ext(Some("image/jpg"), PICTURE_TYPES, "picture file", bytes).ok(),
            Some("jpg")
        );
        let refused = upload_ext(Some("image/gif"), PICTURE_TYPES, "picture file", bytes)
            .expect_err("not allowed");
        assert_eq!(refused.code, crate::error::ErrorCode::UnsupportedMediaType);
        assert_eq!(
            refused.message,
            "Send the picture as image/png, image/jpeg or image/webp (got image/gif)"
        );
        let refused = upload_ext(None, MUSIC_TYPES, "music file", bytes).expect_err("untyped");
        assert_eq!(
            refused.message,
            "Send the music as audio/mpeg, audio/wav, audio/ogg, audio/flac, audio/aac or audio/mp4 (got no Content-Type)"
        );
        let empty =
            upload_ext(Some("audio/wav"), MUSIC_TYPES, "music file", b"").expect_err("empty");
        assert_eq!(empty.message, "the music file is empty");
    }

    #[test]
    fn tool_failures_are_classified() {
        // A wait status: the low 7 bits are the signal that ended the process; an exit
        // code sits in the next byte.
        let killed = std::process::ExitStatus::from_raw(9);
        let error = tool_failed("ffmpeg", killed, "");
        assert!(error.is_transient(), "{error:?}");
        assert!(error.message().contains("signal 9"), "{error:?}");

        let exited = std::process::ExitStatus::from_raw(1 << 8);
        let stderr = "av_interleaved_write_frame(): No space left on device";
        let full = tool_failed("ffmpeg", exited, stderr);
        assert!(full.is_transient(), "{full:?}");
        assert!(full.message().contains("disk is full"), "{full:?}");

        let stderr = "/data/media/x.png: Invalid data found when processing input";
        let bad = tool_failed("ffmpeg", exited, stderr);
        assert!(!bad.is_transient(), "{bad:?}");
        assert!(!bad.message().contains('/'), "{bad:?}");
        assert!(
            bad.detail().is_some_and(|d| d.contains("Invalid data")),
            "{bad:?}"
        );
    }

    #[test]
    fn stored_files_have_forced_demuxers() {
        assert_eq!(demuxer_for(Path::new("a/scene-1.png")), Some("png_pipe"));
        assert_eq!(demuxer_for(Path::new("music-1.M4A")), Some("mov"));
        assert_eq!(demuxer_for(Path::new("list.m3u8")), None);
        assert_eq!(demuxer_for(Path::new("no-extension")), None);
    }

    #[test]
    fn speech_answers_are_known_by_their_first_bytes() {
        use SpeechFormat::*;
        assert_eq!(speech_container(b"RIFF....WAVE", Pcm), "wav");
        assert_eq!(speech_container(b"ID3\x04", Wav), "mp3");
        assert_eq!(speech_container(&[0xFF, 0xFB, 0x90, 0x64], Wav), "mp3");
        assert_eq!(speech_container(&[0xFF, 0xF1, 0x50, 0x80], Mp3), "aac");
        assert_eq!(speech_container(b"OggS\0\x02", Opus), "ogg");
        // Raw samples may begin like a frame sync: -1, -1 is FF FF FF FF.
        assert_eq!(speech_container(&[0xFF, 0xFF, 0xFF, 0xFF], Pcm), "pcm");
        assert_eq!(speech_container(&[0x01, 0x00, 0x02, 0x00], Pcm), "pcm");
        assert_eq!(speech_container(&[0x01, 0x00], Flac), "flac");
    }

    #[test]
    fn reads_wav_durations() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0]);
        wav.extend_from_slice(&22050u32.to_le_bytes());
        wav.extend_from_slice(&44100u32.to_le_bytes());
        wav.extend_from_slice(&[2, 0, 16, 0]);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&44100u32.to_le_bytes());
        wav.extend(std::iter::repeat_n(0u8, 44100));
        assert_eq!(wav_duration_ms(&wav), Some(1000));
        assert_eq!(wav_duration_ms(b"nope"), None);
    }

    /// A mono 16-bit WAV at 24 kHz whose header claims `claimed` data bytes and whose
    /// fmt chunk says `byte_rate`, holding `samples` samples of a ramp.
    fn wav(samples: u32, claimed: u32, byte_rate: u32) -> Vec<u8> {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0]);
        wav.extend_from_slice(&24_000u32.to_le_bytes());
        wav.extend_from_slice(&byte_rate.to_le_bytes());
        wav.extend_from_slice(&[2, 0, 16, 0]);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&claimed.to_le_bytes());
        for i in 0..samples {
            wav.extend_from_slice(&((i % 1000) as i16 * 30).to_le_bytes());
        }
        wav
    }

    #[test]
    fn whole_pcm_wavs_are_rewritten_from_their_samples() {
        let good = wav(24_000, 48_000, 48_000);
        let clean = rewritten_pcm_wav(&good).expect("a whole 16-bit WAV");
        assert_eq!(wav_duration_ms(&clean), Some(1000));
        assert_eq!(&clean[44..], &good[44..], "the samples are kept");
        // A header claiming more than is there, a streaming server's unset size, and
        // what is not 16-bit PCM WAV at all are left to ffmpeg.
        assert_eq!(rewritten_pcm_wav(&wav(24_000, 480_000, 48_000)), None);
        assert_eq!(rewritten_pcm_wav(&wav(24_000, u32::MAX, 48_000)), None);
        assert_eq!(rewritten_pcm_wav(b"ID3\x04 an mp3"), None);
        // A bogus byte rate does not reach the stored file: it is rewritten or refused.
        if let Some(clean) = rewritten_pcm_wav(&wav(24_000, 48_000, 1)) {
            assert_eq!(wav_duration_ms(&clean), Some(1000));
        }
    }
}
