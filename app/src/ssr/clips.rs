//! A creator's video clip as a scene's visual: received as a stream onto disk (never whole
//! in memory), checked by ffprobe with its demuxer forced, converted once to H.264 at 30
//! fps in the content's frame (cropped or padded) with AAC sound, and given a thumbnail
//! (its first frame) that stands as the scene's picture everywhere a picture is shown.
//! The render then plays the clip (`render::segment_command`).

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::auth::CurrentUser;
use super::db::now_ms;
use super::engine::TaskError;
use super::error::DbResultExt;
use super::media::{self, Fit};
use super::state::AppState;
use crate::error::{AppError, ErrorCode};
use crate::model::{limits, ContentDetail, WhenShorter};

/// The clip types a creator may upload (`Content-Type` names, the extension whose demuxer
/// reads them: `mov` for MP4 and QuickTime, `matroska` for WebM).
const CLIP_TYPES: &[(&[&str], &str)] = &[
    (&["video/mp4"], "mp4"),
    (&["video/quicktime"], "mov"),
    (&["video/webm"], "webm"),
];

/// Whether an upload's `Content-Type` names a video clip rather than a picture.
pub fn is_clip(content_type: Option<&str>) -> bool {
    media::top_type_is(content_type, "video")
}

/// Largest clip frame accepted, in pixels a side (4K and DCI 4K fit).
const CLIP_MAX_SIDE: u64 = 4096;

/// How long an upload may send nothing before it is given up.
const UPLOAD_IDLE: Duration = Duration::from_secs(30);

/// How long converting one clip may take: two minutes of 4K source on 2 cores with room.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(600);

/// How many clips one process converts at once: each is an ffmpeg using the cores for up
/// to [`CONVERT_TIMEOUT`]; more wait their turn rather than starve renders and pages.
const CONVERSIONS_AT_ONCE: usize = 2;

/// The clip conversions running in this process.
#[derive(Debug)]
pub struct Conversions(tokio::sync::Semaphore);

impl Default for Conversions {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(CONVERSIONS_AT_ONCE))
    }
}

/// Counts one clip or URL visual against the user's background jobs a minute.
fn count_against_rate(
    state: &AppState,
    user: &CurrentUser,
    per_minute: u32,
) -> Result<(), AppError> {
    state
        .limits
        .check(
            super::limits::Bucket::Visuals,
            &user.id.to_string(),
            per_minute,
        )
        .map_err(|secs| AppError::rate_limited("clips and URLs", secs))
}

/// How a creator's clip is fitted and played.
#[derive(Debug, Clone, Copy)]
pub struct ClipOptions {
    pub fit: Fit,
    pub when_shorter: WhenShorter,
    /// The clip's own sound under the narration, 0–100 %.
    pub sound: u32,
}

/// Makes a creator's video clip (MP4, QuickTime or WebM, as `content_type` says) the
/// scene's visual. The body is streamed to disk under [`limits::CLIP_MAX_BYTES`], probed,
/// and converted once: at most [`limits::SCENE_SECONDS_MAX`] of it, to the content's frame
/// (`media::dimensions`) at 30 fps, H.264 and stereo AAC (silence when it has no sound).
/// Errors: 404 for another's content or a scene not in it, 415 for another type, 413 over
/// the size or when the storage quota is full, 422 for a file ffmpeg cannot read as that
/// type, with no video, or a frame over 4096 px a side. The visual it replaces goes.
pub async fn save_scene_clip<S, B>(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    content_type: Option<&str>,
    options: ClipOptions,
    body: S,
) -> Result<ContentDetail, AppError>
where
    S: Stream<Item = Result<B, BodyError>> + Unpin,
    B: AsRef<[u8]>,
{
    let content = scene_of(state, user, (content_id, scene_id), options).await?;
    clip_from(
        state,
        user,
        (&content, scene_id),
        content_type,
        (options, None),
        body,
    )
    .await
}

/// The content, when `scene_id` is one of its scenes and `options` hold; the visual is
/// counted against the user's rate (a clip converted, a URL fetched).
pub(crate) async fn scene_of(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    options: ClipOptions,
) -> Result<ContentDetail, AppError> {
    let content = super::contents::get(state, user, content_id).await?;
    if !content.scenes.iter().any(|s| s.id == scene_id) {
        return Err(AppError::not_found("scene"));
    }
    if options.sound > 100 {
        return Err(AppError::validation(
            "sound",
            format!("sound is 0 to 100 % (got {})", options.sound),
        ));
    }
    let (settings, _) = super::settings::for_tasks(state).await?;
    count_against_rate(state, user, settings.rate_jobs_per_minute)?;
    Ok(content)
}

/// [`save_scene_clip`] once the scene is known to be the caller's; `credit` (a stock
/// clip's author, JSON) is recorded with the clip and its thumbnail.
async fn clip_from<S, B>(
    state: &AppState,
    user: &CurrentUser,
    (content, scene_id): (&ContentDetail, i64),
    content_type: Option<&str>,
    (options, credit): (ClipOptions, Option<&str>),
    body: S,
) -> Result<ContentDetail, AppError>
where
    S: Stream<Item = Result<B, BodyError>> + Unpin,
    B: AsRef<[u8]>,
{
    let content_id = content.id;
    // Emptiness is told by the stream below, so the type is checked on a stand-in byte.
    let ext = media::upload_ext(content_type, CLIP_TYPES, "video clip", b" ")?;
    media::check_quota(state, user, content_id).await?;
    let stamp = format!("{}-{:08x}", now_ms(), rand::random::<u32>());
    let key = format!("content-{content_id}/scene-{scene_id}-clip-{stamp}.mp4");
    let thumb_key = format!("content-{content_id}/scene-{scene_id}-clip-{stamp}.png");
    let path = media::prepare(state, &key)
        .await
        .map_err(|e| AppError::new(ErrorCode::Internal, e.message().to_owned()))?;
    let thumb = state
        .storage
        .path(&thumb_key)
        .map_err(|e| super::error::internal("naming a clip's thumbnail", e))?;
    let upload = path.with_file_name(format!("upload-{stamp}.{ext}"));
    // Until the clip is on record its files are ours to remove, also when the request is
    // dropped half-way (the client went away; ffmpeg dies with it).
    let mut unrecorded = Unrecorded(vec![upload.clone(), path.clone(), thumb.clone()]);
    let made = async {
        receive(&upload, body).await?;
        let _turn = state
            .conversions
            .0
            .acquire()
            .await
            .map_err(|e| super::error::internal("waiting to convert a clip", e))?;
        let probed = probe(&upload, ext).await?;
        let (w, h) = media::dimensions(&content.presets.aspect_ratio);
        convert(&upload, &path, &thumb, (w, h), options.fit, &probed).await?;
        let duration_ms = probe(&path, "mp4").await?.duration_ms;
        // Two frames at least, and a first one to show: a clip that decodes to nothing is
        // the file's fault.
        let thumb_made = tokio::fs::try_exists(&thumb).await.unwrap_or(false);
        if duration_ms < 2 * 1000 / 30 || !thumb_made {
            return Err(AppError::validation(
                "body",
                "this clip is too short to play (under two frames); use a picture instead",
            ));
        }
        Ok::<_, AppError>((w, h, duration_ms))
    }
    .await;
    let _ = tokio::fs::remove_file(&upload).await;
    let recorded = match made {
        Ok((w, h, duration_ms)) => {
            let files = [(key.as_str(), &path), (thumb_key.as_str(), &thumb)];
            record(
                state,
                (content_id, scene_id),
                files,
                (w, h, duration_ms),
                (options, credit),
            )
            .await
        }
        Err(e) => Err(e),
    };
    // Nothing points at the files of a clip that failed: they go now (`unrecorded`), not
    // at the next sweep.
    let replaced = recorded?;
    unrecorded.0.clear();
    for key in replaced {
        state.storage.remove(&key).await;
    }
    super::render::prepare_ahead(state, content_id);
    super::contents::get(state, user, content_id).await
}

/// Files of a clip not on record yet, removed when dropped unless cleared.
struct Unrecorded(Vec<std::path::PathBuf>);

impl Drop for Unrecorded {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why a clip's body stopped arriving.
#[derive(Debug)]
pub enum BodyError {
    /// Past the route's body limit.
    TooLarge,
    /// The client's upload broke off.
    Broken(String),
    /// The server a URL named failed or was too slow (502).
    Upstream(String),
}

impl BodyError {
    /// An upload stream's error: the route's body limit (`http_body_util::Limited`) ends
    /// the stream with "length limit exceeded".
    pub fn of_upload(e: impl std::fmt::Display) -> Self {
        let why = e.to_string();
        if why.contains("length limit") {
            BodyError::TooLarge
        } else {
            BodyError::Broken(why)
        }
    }
}

/// Writes the body to `path` as it arrives, refusing an empty one and stopping past
/// [`limits::CLIP_MAX_BYTES`].
async fn receive<S, B>(path: &Path, mut body: S) -> Result<(), AppError>
where
    S: Stream<Item = Result<B, BodyError>> + Unpin,
    B: AsRef<[u8]>,
{
    let too_large = || {
        AppError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The video clip is larger than {} MiB",
                limits::CLIP_MAX_BYTES / 1024 / 1024
            ),
        )
    };
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| super::error::internal("saving an upload", e))?;
    let mut received = 0usize;
    loop {
        // A client that stops sending holds a request and a file: it is let go.
        let Ok(next) = tokio::time::timeout(UPLOAD_IDLE, body.next()).await else {
            return Err(AppError::validation(
                "body",
                format!(
                    "the video clip stopped arriving (nothing for {} s)",
                    UPLOAD_IDLE.as_secs()
                ),
            ));
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            BodyError::Broken(why) => AppError::validation(
                "body",
                format!("the video clip did not arrive whole: {why}"),
            ),
            BodyError::Upstream(why) => AppError::new(ErrorCode::ProviderUnavailable, why),
        })?;
        let chunk = chunk.as_ref();
        received += chunk.len();
        if received > limits::CLIP_MAX_BYTES {
            return Err(too_large());
        }
        file.write_all(chunk)
            .await
            .map_err(|e| super::error::internal("saving an upload", e))?;
    }
    file.flush()
        .await
        .map_err(|e| super::error::internal("saving an upload", e))?;
    if received == 0 {
        return Err(AppError::validation("body", "the video clip file is empty"));
    }
    Ok(())
}

/// What ffprobe says of a clip.
struct Probed {
    has_sound: bool,
    /// The picture's length.
    duration_ms: i64,
}

/// Reads the clip's streams with its demuxer forced (`media::add_input`'s rules, for
/// ffprobe): it must have a video stream no larger than [`CLIP_MAX_SIDE`] a side.
async fn probe(path: &Path, ext: &str) -> Result<Probed, AppError> {
    let not_readable = || {
        AppError::validation(
            "body",
            format!("this file is not a {ext} video clip that ffmpeg can read"),
        )
    };
    let demuxer = media::demuxer_for(path).ok_or_else(not_readable)?;
    let mut ffprobe = Command::new("ffprobe");
    ffprobe
        .args(["-v", "error", "-protocol_whitelist", "file", "-f", demuxer])
        .args([
            "-show_entries",
            "stream=codec_type,width,height,duration:stream_disposition=attached_pic:format=duration",
            "-of",
            "json",
        ])
        .arg(path);
    let out = match media::run_tool(ffprobe, None, "ffprobe").await {
        Ok(out) => out,
        Err(e) if media::input_refused(&e) => return Err(not_readable()),
        Err(e) => return Err(server_side(e)),
    };
    let json: serde_json::Value = serde_json::from_slice(&out).map_err(|_| not_readable())?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    // A cover picture in an audio file is a "video" stream too, but not a clip.
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .ok_or_else(|| AppError::validation("body", "this clip has no video"))?;
    let (w, h) = (
        video["width"].as_u64().unwrap_or(0),
        video["height"].as_u64().unwrap_or(0),
    );
    if w == 0 || h == 0 {
        return Err(not_readable());
    }
    if w.max(h) > CLIP_MAX_SIDE {
        return Err(AppError::validation(
            "body",
            format!("the clip is {w}×{h} pixels; at most {CLIP_MAX_SIDE} a side"),
        ));
    }
    let seconds_of = |v: &serde_json::Value| v.as_str().and_then(|d| d.parse::<f64>().ok());
    // The picture's own length where the container says it (WebM does not, per stream).
    let seconds = seconds_of(&video["duration"])
        .or_else(|| seconds_of(&json["format"]["duration"]))
        .unwrap_or(0.0);
    Ok(Probed {
        has_sound: streams.iter().any(|s| s["codec_type"] == "audio"),
        duration_ms: (seconds * 1000.0).round() as i64,
    })
}

/// The clip as the render wants it at `path`, and its first frame as a PNG at `thumb`.
async fn convert(
    upload: &Path,
    path: &Path,
    thumb: &Path,
    size: (u32, u32),
    fit: Fit,
    probed: &Probed,
) -> Result<(), AppError> {
    let has_sound = probed.has_sound;
    // As long as the picture, up to the longest scene.
    let seconds = (probed.duration_ms as f64 / 1000.0).min(limits::SCENE_SECONDS_MAX);
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
    media::add_input(&mut ffmpeg, upload, "the clip").map_err(server_side)?;
    if !has_sound {
        ffmpeg.args(["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]);
    }
    // The picture sets the length: a shorter sound is padded with silence, and a clip
    // without one gets silence.
    let sound = if has_sound {
        "[0:a:0]apad[a]"
    } else {
        "[1:a]anull[a]"
    };
    ffmpeg
        .args(["-t", &format!("{seconds:.3}")])
        .args([
            "-filter_complex",
            &format!(
                "[0:V:0]fps=30,{},format=yuv420p[v];{sound}",
                fit.filter(size)
            ),
            "-map",
            "[v]",
            "-map",
            "[a]",
        ])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000"])
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(path);
    match media::run_tool_within(ffmpeg, None, "ffmpeg", CONVERT_TIMEOUT).await {
        Ok(_) => {}
        // ffmpeg ran and could not decode it: the file's fault.
        Err(e) if media::input_refused(&e) => {
            return Err(AppError::validation(
                "body",
                "this clip could not be decoded to the end; it may be damaged",
            ))
        }
        Err(e) => return Err(server_side(e)),
    }
    let mut first = Command::new("ffmpeg");
    first.args(["-hide_banner", "-loglevel", "error", "-y"]);
    media::add_input(&mut first, path, "the clip").map_err(server_side)?;
    first
        .args([
            "-frames:v",
            "1",
            "-c:v",
            "png",
            "-f",
            "image2",
            "-update",
            "1",
        ])
        .arg(thumb);
    media::run_tool(first, None, "ffmpeg")
        .await
        .map_err(server_side)?;
    Ok(())
}

fn server_side(e: TaskError) -> AppError {
    tracing::error!(error = e.message(), "converting a creator's clip");
    AppError::internal()
}

/// Records the clip and its thumbnail as the scene's visual; returns the storage keys of
/// what they replaced.
async fn record(
    state: &AppState,
    (content_id, scene_id): (i64, i64),
    [(key, path), (thumb_key, thumb)]: [(&str, &std::path::PathBuf); 2],
    (w, h, duration_ms): (u32, u32, i64),
    (options, credit): (ClipOptions, Option<&str>),
) -> Result<Vec<String>, AppError> {
    let size = |p: &Path| {
        let p = p.to_owned();
        async move {
            tokio::fs::metadata(&p)
                .await
                .map(|m| m.len() as i64)
                .map_err(|e| super::error::internal("measuring a clip", e))
        }
    };
    let (clip_bytes, thumb_bytes) = (size(path).await?, size(thumb).await?);
    for key in [key, thumb_key] {
        state
            .storage
            .keep(key)
            .await
            .map_err(|e| super::error::internal("storing a clip", e))?;
    }
    let now = now_ms();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    let insert = "INSERT INTO assets (content_id, scene_id, kind, storage_key, mime_type, bytes, duration_ms, width, height, provider, created_at, credit) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'upload', $10, $11) RETURNING id";
    let mut ids = Vec::with_capacity(2);
    for (kind, key, mime, bytes, duration) in [
        ("video", key, "video/mp4", clip_bytes, Some(duration_ms)),
        ("image", thumb_key, "image/png", thumb_bytes, None),
    ] {
        let id: i64 = sqlx::query_scalar(insert)
            .bind(content_id)
            .bind(scene_id)
            .bind(kind)
            .bind(key)
            .bind(mime)
            .bind(bytes)
            .bind(duration)
            .bind(i64::from(w))
            .bind(i64::from(h))
            .bind(now)
            .bind(credit)
            .fetch_one(&mut *tx)
            .await
            .db("recording a clip")?;
        ids.push(id);
    }
    sqlx::query(
        "UPDATE scenes SET image_asset_id = $1, clip_asset_id = $2, clip_when_shorter = $3, clip_sound = $4, updated_at = $5 \
         WHERE id = $6 AND content_id = $7",
    )
    .bind(ids[1])
    .bind(ids[0])
    .bind(options.when_shorter.as_str())
    .bind(i64::from(options.sound))
    .bind(now)
    .bind(scene_id)
    .bind(content_id)
    .execute(&mut *tx)
    .await
    .db("setting a scene's clip")?;
    let replaced = media::drop_unowned(&mut tx, content_id).await?;
    tx.commit().await.db("committing a clip")?;
    Ok(replaced)
}

/// Makes the picture or clip at a URL the creator pasted the scene's visual: fetched by
/// [`outbound`](super::outbound)'s rules (http or https, public addresses unless the admin
/// allows private ones, redirects checked), within the admin's media timeout, then kept
/// as an upload of the type the answer names (`image/*` as [`media::save_scene_picture`],
/// `video/*` as [`save_scene_clip`]). Errors: 422 naming `url` for a URL that may not be
/// fetched, answers 4xx, or is neither a picture nor a clip; 502 when the server there
/// fails or times out; otherwise as the upload would.
pub async fn save_scene_visual_from_url(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    url: &str,
    options: ClipOptions,
) -> Result<ContentDetail, AppError> {
    let content = scene_of(state, user, (content_id, scene_id), options).await?;
    let url = super::validate::text("url", url, 1, 2048)?;
    let (settings, _) = super::settings::for_tasks(state).await?;
    let source = Fetched {
        field: "url",
        credit: None,
        rules: super::outbound::Rules::new("the URL", None, &settings.allowed_private_addresses),
        timeout: Duration::from_secs(u64::from(settings.media_timeout_secs)),
    };
    visual_from(state, user, (&content, scene_id), &url, &source, options).await
}

/// Where a visual is fetched from and how its errors are named.
pub(crate) struct Fetched<'a> {
    /// The request field that errors about the file name (`url`, `stock`).
    pub field: &'a str,
    /// Who made the file (a stock library's credit, JSON), recorded with it.
    pub credit: Option<String>,
    pub rules: super::outbound::Rules<'a>,
    pub timeout: Duration,
}

/// [`save_scene_visual_from_url`] once the scene is known to be the caller's (and the
/// fetch counted against their rate, where it is to be).
pub(crate) async fn visual_from(
    state: &AppState,
    user: &CurrentUser,
    (content, scene_id): (&ContentDetail, i64),
    url: &str,
    source: &Fetched<'_>,
    options: ClipOptions,
) -> Result<ContentDetail, AppError> {
    let (content_id, field, what) = (content.id, source.field, source.rules.what);
    let deadline = tokio::time::Instant::now() + source.timeout;
    let fetched = |e: TaskError| match e {
        TaskError::Permanent(message) => AppError::validation(field, message),
        other => AppError::new(ErrorCode::ProviderUnavailable, other.message().to_owned()),
    };
    let response = super::outbound::get(url, &source.rules, deadline)
        .await
        .map_err(fetched)?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let read_failed = |e: reqwest::Error| fetched(super::outbound::download_failed(what, e));
    // What is wrong with the file there is said of the URL, not of a body the caller sent.
    let of_url = |e: AppError| match e.field.as_deref() {
        Some("body") => AppError::validation(field, format!("{what}'s file: {}", e.message)),
        _ => e,
    };
    if response
        .content_length()
        .is_some_and(|n| n > limits::CLIP_MAX_BYTES as u64)
    {
        return Err(AppError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{what}'s file is larger than {} MiB",
                limits::CLIP_MAX_BYTES / 1024 / 1024
            ),
        ));
    }
    if is_clip(content_type.as_deref()) {
        // Another video type names the URL, not the (absent) upload.
        media::upload_ext(content_type.as_deref(), CLIP_TYPES, "video clip", b" ")
            .map_err(|e| AppError::validation(field, format!("{what} answered: {}", e.message)))?;
        let body = within_deadline(response.bytes_stream(), deadline);
        return clip_from(
            state,
            user,
            (content, scene_id),
            content_type.as_deref(),
            (options, source.credit.as_deref()),
            Box::pin(body),
        )
        .await
        .map_err(of_url);
    }
    if !media::top_type_is(content_type.as_deref(), "image") {
        return Err(AppError::validation(
            field,
            format!(
                "{what} answered {}, not a picture or a video clip",
                content_type.as_deref().unwrap_or("without a Content-Type")
            ),
        ));
    }
    let max = limits::PICTURE_MAX_BYTES as u64;
    let bytes = super::openai::read_capped(response, max, "picture")
        .await
        .map_err(|e| match e {
            super::openai::ReadError::TooLarge(too_large) => {
                AppError::new(ErrorCode::PayloadTooLarge, too_large.to_string())
            }
            super::openai::ReadError::Http(e) => read_failed(e),
        })?;
    media::save_scene_picture(
        state,
        user,
        content_id,
        scene_id,
        content_type.as_deref(),
        options.fit,
        &bytes,
        source.credit.as_deref(),
    )
    .await
    .map_err(|e| match e.code {
        ErrorCode::UnsupportedMediaType => {
            AppError::validation(field, format!("{what} answered: {}", e.message))
        }
        _ => of_url(e),
    })
}

/// A download's body that ends with an error once `deadline` passes, so a server that
/// trickles bytes cannot hold the request open.
fn within_deadline<S, B>(
    body: S,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<B, BodyError>>
where
    S: Stream<Item = Result<B, reqwest::Error>>,
{
    let expired = Box::pin(tokio::time::sleep_until(deadline));
    futures::stream::unfold(
        (Box::pin(body), expired, false),
        |(mut body, mut expired, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                item = body.next() => item.map(|item| {
                    let item = item.map_err(|e| {
                        BodyError::Upstream(format!("downloading from the URL failed: {}", e.without_url()))
                    });
                    (item, (body, expired, false))
                }),
                () = &mut expired => Some((
                    Err(BodyError::Upstream(
                        "downloading from the URL took longer than the media timeout".to_owned(),
                    )),
                    (body, expired, true),
                )),
            }
        },
    )
}

/// Changes how the scene's clip plays; the next render uses it (the video is out of date
/// until then). Errors: 404 for another's content, a scene not in it or a scene without a
/// clip; 422 for a sound over 100 %.
pub async fn set_clip_options(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    update: crate::model::ClipUpdate,
) -> Result<ContentDetail, AppError> {
    let content = super::contents::get(state, user, content_id).await?;
    let has_clip = content
        .scenes
        .iter()
        .any(|s| s.id == scene_id && s.clip.is_some());
    if !has_clip {
        return Err(AppError::not_found("clip"));
    }
    if update.sound > 100 {
        return Err(AppError::validation(
            "sound",
            format!("sound is 0 to 100 % (got {})", update.sound),
        ));
    }
    sqlx::query(
        "UPDATE scenes SET clip_when_shorter = $1, clip_sound = $2, updated_at = $3 \
         WHERE id = $4 AND content_id = $5 AND clip_asset_id IS NOT NULL",
    )
    .bind(update.when_shorter.as_str())
    .bind(i64::from(update.sound))
    .bind(now_ms())
    .bind(scene_id)
    .bind(content_id)
    .execute(state.pool())
    .await
    .db("changing a clip")?;
    super::render::prepare_ahead(state, content_id);
    super::contents::get(state, user, content_id).await
}
