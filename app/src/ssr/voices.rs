//! Voices: which ones a content can be narrated in, a sample to hear one before anything
//! is generated, and a content's own voice and speed.
//!
//! Offline, the voice is espeak-ng's voice for the content's language with one of its
//! variants (`fr+f3`); with a speech provider it is the provider's voice name, listed by
//! the provider where it has a list (Kokoro-FastAPI's `GET /v1/audio/voices`) and
//! otherwise OpenAI's documented voices (openedai-speech takes the same names).

use std::time::Duration;

use super::auth::CurrentUser;
use super::engine::TaskError;
use super::error::DbResultExt;
use super::limits::Bucket;
use super::media;
use super::settings::{self, Capability};
use super::state::AppState;
use super::text_layout;
use super::validate;
use crate::error::{AppError, ErrorCode};
use crate::model::{limits, ContentDetail, VoiceList, VoiceOption, VoiceUpdate};

/// OpenAI's voices for its speech models (the text-to-speech guide's "Voice options";
/// `tts-1` takes the first nine).
pub const OPENAI_VOICES: [&str; 13] = [
    "alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "ballad", "verse",
    "marin", "cedar",
];

/// How long the provider has to list its voices before the known list is shown.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// A voice list larger than this is not one (bytes).
const LIST_MAX_BYTES: usize = 256 * 1024;

/// The voice to send a speech provider: an espeak-ng voice (`en+f3`, or a language's own
/// `fr`, chosen while narration was offline) means nothing to it, so the admin's default
/// is sent instead.
pub fn provider_voice<'a>(voice: &'a str, default_voice: &'a str) -> &'a str {
    if variant_of(voice).is_some() || text_layout::is_espeak_voice(voice) {
        default_voice
    } else {
        voice
    }
}

/// The espeak-ng voice for `language` with the variant `voice` names after a `+`
/// (`en+f3` → `fr+f3` for French): a content keeps its variant when its language changes.
/// Any other voice (a provider's `alloy`) means the language's own voice.
pub fn espeak_voice_for(language: &str, voice: &str) -> String {
    let base = text_layout::espeak_voice(language);
    match variant_of(voice) {
        Some(variant) => format!("{base}+{variant}"),
        None => base.to_owned(),
    }
}

/// The variant part of an espeak-ng voice (`f3` of `en+f3`): the part before the `+` is a
/// language's espeak-ng voice, and variant file names are letters, digits, `_` and `-`
/// (espeak-ng's `espeak-ng-data/voices/!v`). A provider's voice mix (Kokoro-FastAPI's
/// `af_bella+af_sky`) is none.
fn variant_of(voice: &str) -> Option<&str> {
    let (base, variant) = voice.split_once('+')?;
    (text_layout::is_espeak_voice(base)
        && !variant.is_empty()
        && variant.len() <= 40
        && variant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(variant)
}

/// espeak-ng's rate in words per minute for `speed` (1: its default 175), within the
/// 80–450 it accepts (espeak-ng's `--help`, `-s`).
pub fn espeak_rate(speed: f64) -> u32 {
    (175.0 * speed).round().clamp(80.0, 450.0) as u32
}

/// The voices narration can use now, for a content in `language` (the admin's default
/// language when None).
pub async fn list(state: &AppState, language: Option<&str>) -> Result<VoiceList, AppError> {
    let (values, keys) = settings::for_tasks(state).await?;
    let language = match language.map(str::trim).filter(|l| !l.is_empty()) {
        Some(l) => validate::text("language", l, 1, limits::SHORT_TEXT_MAX_CHARS)?,
        None => values.default_language.clone(),
    };
    let (source, voices) = if values.tts_provider == "openai" {
        let endpoint = settings::endpoint(&values, &keys, Capability::Speech);
        match provider_voices(state, &endpoint).await {
            Ok(voices) if !voices.is_empty() => ("provider", voices),
            outcome => {
                if let Err(e) = outcome {
                    tracing::info!(error = %e, "the speech endpoint lists no voices; showing OpenAI's");
                }
                (
                    "known",
                    OPENAI_VOICES
                        .iter()
                        .map(|v| option(v, &title_case(v)))
                        .collect(),
                )
            }
        }
    } else {
        ("espeak-ng", espeak_voices(state, &language).await)
    };
    Ok(VoiceList {
        provider: values.tts_provider.clone(),
        source: source.into(),
        voices,
        default_voice: values.default_voice.clone(),
        default_speed: values.tts_speed,
    })
}

fn option(id: &str, label: &str) -> VoiceOption {
    VoiceOption {
        id: id.to_owned(),
        label: label.to_owned(),
    }
}

fn title_case(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `GET {base}/audio/voices`: Kokoro-FastAPI answers `{"voices": ["af_bella", …]}`; a
/// list of objects with `id` or `name` is read too. Errors say why, for the log.
async fn provider_voices(
    state: &AppState,
    endpoint: &settings::Endpoint,
) -> Result<Vec<VoiceOption>, String> {
    let url = format!("{}/audio/voices", endpoint.base_url.trim_end_matches('/'));
    let mut request = state.http.get(&url).timeout(LIST_TIMEOUT);
    if !endpoint.api_key.is_empty() {
        request = request.bearer_auth(&endpoint.api_key);
    }
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    // Read under the cap as it arrives: a chunked answer says no length first.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > LIST_MAX_BYTES {
            return Err(format!("{url} sent more than {LIST_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let items = json
        .get("voices")
        .or(json.get("data"))
        .unwrap_or(&json)
        .as_array()
        .ok_or("no list of voices")?;
    let mut voices: Vec<VoiceOption> = items
        .iter()
        .filter_map(|item| match item {
            serde_json::Value::String(id) => Some(option(id, id)),
            serde_json::Value::Object(o) => {
                let id = o
                    .get("id")
                    .or(o.get("voice_id"))
                    .or(o.get("name"))?
                    .as_str()?;
                let label = o.get("name").and_then(|n| n.as_str()).unwrap_or(id);
                Some(option(id, label))
            }
            _ => None,
        })
        .filter(|v| !v.id.trim().is_empty() && v.id.chars().count() <= limits::SHORT_TEXT_MAX_CHARS)
        .collect();
    let mut seen = std::collections::HashSet::new();
    voices.retain(|v| seen.insert(v.id.clone()));
    Ok(voices)
}

/// The language's espeak-ng voice, then each of espeak-ng's variants on it
/// (`espeak-ng --voices=variant`: `Pty Language Age/Gender VoiceName File (Other
/// Languages)`, as ` 5  variant  --/M  Alex  !v/Alex`; a file name with a space, such as
/// `!v/Mr serious`, cannot be named in a voice and is left out). Without the listing (espeak-ng missing: the status page says so),
/// the language's own voice alone.
async fn espeak_voices(state: &AppState, language: &str) -> Vec<VoiceOption> {
    let base = text_layout::espeak_voice(language);
    let listing = state
        .espeak
        .variant_listing
        .get_or_try_init(|| async {
            let mut command = tokio::process::Command::new("espeak-ng");
            command.arg("--voices=variant");
            let listing = media::run_tool(command, None, "espeak-ng").await?;
            Ok::<_, TaskError>(String::from_utf8_lossy(&listing).into_owned())
        })
        .await;
    match listing {
        Ok(listing) => variants_from(listing, language, base),
        Err(e) => {
            tracing::warn!(
                error = e.message(),
                "espeak-ng could not list its voice variants"
            );
            variants_from("", language, base)
        }
    }
}

/// The voice list from `espeak-ng --voices=variant`'s `listing`.
fn variants_from(listing: &str, language: &str, base: &str) -> Vec<VoiceOption> {
    let mut voices = vec![option(base, &format!("{language}: espeak-ng's own"))];
    for line in listing.lines().skip(1) {
        let Some(at) = line.find("!v/") else {
            continue;
        };
        let file = line[at + 3..].split(" (").next().unwrap_or_default().trim();
        let Some(variant) = variant_of(&format!("{base}+{file}")).map(str::to_owned) else {
            continue;
        };
        let fields: Vec<&str> = line[..at].split_whitespace().collect();
        let gender = match fields.get(2).and_then(|g| g.rsplit('/').next()) {
            Some("M") => " (male)",
            Some("F") => " (female)",
            _ => "",
        };
        let name = fields
            .get(3)
            .map(|n| n.replace('_', " "))
            .unwrap_or(variant.clone());
        voices.push(option(
            &format!("{base}+{variant}"),
            &format!("{language}: {name}{gender}"),
        ));
    }
    voices
}

/// What to say in a voice sample: `text` when given, else the content's first scene,
/// else a sentence in the language.
pub struct PreviewRequest {
    pub voice: String,
    pub language: Option<String>,
    pub speed: Option<f64>,
    pub content_id: Option<i64>,
    pub text: Option<String>,
}

/// A spoken sample: a 16-bit PCM WAV.
pub struct Sample {
    pub wav: Vec<u8>,
}

/// Speaks a short sample in `req.voice`, as narration would: offline by espeak-ng, or by
/// the speech endpoint in Settings. Counts against the user's background jobs a minute
/// (each sample is a provider call). Errors: 404 for another's content, 422 when the
/// provider refuses the voice or the text, 502/429 when it fails or limits.
pub async fn preview(
    state: &AppState,
    user: &CurrentUser,
    req: PreviewRequest,
) -> Result<Sample, AppError> {
    let (values, keys) = settings::for_tasks(state).await?;
    let voice = validate::text("voice", &req.voice, 1, limits::SHORT_TEXT_MAX_CHARS)?;
    let speed = validate::range_f64(
        "speed",
        req.speed.unwrap_or(values.tts_speed),
        limits::SPEED_MIN,
        limits::SPEED_MAX,
    )?;
    let mut language = match req
        .language
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        Some(l) => Some(validate::text(
            "language",
            l,
            1,
            limits::SHORT_TEXT_MAX_CHARS,
        )?),
        None => None,
    };
    let mut text = match req.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(validate::text("text", t, 1, limits::PREVIEW_MAX_CHARS)?),
        None => None,
    };
    if let Some(id) = req.content_id {
        let content = super::contents::get(state, user, id).await?;
        language.get_or_insert(content.presets.language);
        if text.is_none() {
            text = content
                .scenes
                .iter()
                .map(|s| s.narration.trim())
                .find(|n| !n.is_empty())
                .map(|n| shortened(n, limits::PREVIEW_MAX_CHARS));
        }
    }
    let language = language.unwrap_or_else(|| values.default_language.clone());
    let text = text.unwrap_or_else(|| sample_sentence(&language).to_owned());
    state
        .limits
        .check(
            Bucket::VoiceSamples,
            &user.id.to_string(),
            values.rate_jobs_per_minute,
        )
        .map_err(|secs| AppError::rate_limited("voice samples", secs))?;

    let dir = state.data_dir.join("previews");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| super::error::internal("creating the previews directory", e))?;
    let file = Scratch(dir.join(format!("{:032x}.wav", rand::random::<u128>())));
    let made = if values.tts_provider == "openai" {
        let endpoint = settings::endpoint(&values, &keys, Capability::Speech);
        if endpoint.key_missing {
            return Err(AppError::new(
                ErrorCode::ProviderNotConfigured,
                "No API key is configured for narration. An admin can add one in Settings.",
            ));
        }
        let voice = provider_voice(&voice, &values.default_voice);
        match super::providers::speech(state, &values, &endpoint, &text, voice, speed).await {
            Ok(speech) => media::provider_wav(&speech.bytes, speech.format, &file.0).await,
            Err(e) => Err(e),
        }
    } else {
        let voice = espeak_voice_for(&language, &voice);
        media::speak_offline(state, &voice, &text, speed, &file.0)
            .await
            .map(|spoken| spoken.wav)
    };
    Ok(Sample {
        wav: made.map_err(task_error)?,
    })
}

/// Where a sample may be written while it is made (a provider's answer converted, or the
/// espeak-ng command's output), removed when dropped: also when the request is (▶ Play
/// pressed again drops the last one).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `text` cut at a word boundary to at most `max` characters.
fn shortened(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    match cut.rfind(char::is_whitespace) {
        Some(at) if at > 0 => cut[..at].to_owned(),
        _ => cut,
    }
}

/// A sentence to hear a voice by, in the language where one is written here (by its
/// espeak-ng voice), else in English.
fn sample_sentence(language: &str) -> &'static str {
    match text_layout::espeak_voice(language) {
        "fr" => "Bonjour ! Voici comment je sonnerai dans votre vidéo.",
        "de" => "Hallo! So klinge ich in deinem Video.",
        "es" => "¡Hola! Así sonaré en tu vídeo.",
        "it" => "Ciao! Ecco come suonerò nel tuo video.",
        "pt" => "Olá! É assim que vou soar no seu vídeo.",
        "nl" => "Hallo! Zo klink ik in je video.",
        "pl" => "Cześć! Tak będę brzmieć w twoim filmie.",
        "ru" => "Привет! Вот так я буду звучать в вашем видео.",
        "tr" => "Merhaba! Videonuzda sesim böyle olacak.",
        "ja" => "こんにちは。これが動画での私の声です。",
        "cmn" => "你好！这就是我在视频里的声音。",
        "ko" => "안녕하세요! 영상에서 제 목소리는 이렇게 들립니다.",
        "ar" => "مرحبا! هكذا سيبدو صوتي في الفيديو.",
        "hi" => "नमस्ते! आपके वीडियो में मेरी आवाज़ ऐसी होगी।",
        _ => "Hello! This is how I will sound in your video.",
    }
}

/// A sample's failure as the caller's error: a refused voice or text names `voice`; a
/// provider that fails or limits is a 502 or 429; the server's own fault is logged.
fn task_error(e: TaskError) -> AppError {
    match e {
        TaskError::Permanent(message) => AppError::validation(
            "voice",
            format!("The voice sample could not be made: {message}"),
        ),
        TaskError::Transient {
            message,
            retry_after: Some(after),
        } => AppError {
            retry_after_secs: Some(after.as_secs().max(1)),
            ..AppError::new(
                ErrorCode::ProviderRateLimited,
                format!("The speech provider asks to wait: {message}"),
            )
        },
        TaskError::Transient { message, .. } => AppError::new(
            ErrorCode::ProviderUnavailable,
            format!("The voice sample could not be made: {message}. Try again."),
        ),
        TaskError::Server { detail, .. } => {
            tracing::error!(%detail, "making a voice sample");
            AppError::internal()
        }
        TaskError::Cancelled => AppError::internal(),
    }
}

/// Sets a content's voice and speed. Narration made from now on uses them; what is
/// already made stays until it is made again.
pub async fn set(
    state: &AppState,
    user: &CurrentUser,
    content_id: i64,
    req: VoiceUpdate,
) -> Result<ContentDetail, AppError> {
    let voice = validate::text("voice", &req.voice, 1, limits::SHORT_TEXT_MAX_CHARS)?;
    let speed = req
        .speed
        .map(|s| validate::range_f64("speed", s, limits::SPEED_MIN, limits::SPEED_MAX))
        .transpose()?;
    let touched = sqlx::query(
        "UPDATE contents SET voice = $1, speed = NULLIF($2, -1.0), updated_at = $3 \
         WHERE id = $4 AND ($5 = 1 OR owner_id = $6)",
    )
    .bind(&voice)
    .bind(super::db::nullable_f64(speed))
    .bind(super::db::now_ms())
    .bind(content_id)
    .bind(i64::from(user.is_admin()))
    .bind(user.id)
    .execute(state.pool())
    .await
    .db("saving a content's voice")?;
    if touched.rows_affected() == 0 {
        return Err(AppError::not_found("content"));
    }
    super::contents::get(state, user, content_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_follows_the_content_into_another_language() {
        assert_eq!(espeak_voice_for("French", "en+f3"), "fr+f3");
        assert_eq!(espeak_voice_for("English", "en+Alex"), "en+Alex");
        // A provider's voice, or nothing usable after the `+`: the language's own voice.
        assert_eq!(espeak_voice_for("German", "alloy"), "de");
        assert_eq!(espeak_voice_for("German", "en+"), "de");
        assert_eq!(espeak_voice_for("German", "en+../../etc"), "de");
        assert_eq!(espeak_voice_for("German", "en+f3 -w /tmp/x"), "de");
        // A provider's voice mix is not a variant, and goes to the provider as it is.
        assert_eq!(espeak_voice_for("English", "af_bella+af_sky"), "en");
        assert_eq!(
            provider_voice("af_bella+af_sky", "alloy"),
            "af_bella+af_sky"
        );
        assert_eq!(provider_voice("en+f3", "alloy"), "alloy");
        assert_eq!(provider_voice("fr", "alloy"), "alloy");
        assert_eq!(provider_voice("nova", "alloy"), "nova");
    }

    #[test]
    fn espeak_variants_are_read_from_its_listing() {
        let listing = "Pty Language       Age/Gender VoiceName          File                 Other Languages\n \
             5  variant         --/M      Alex               !v/Alex              \n \
             5  variant         --/F      Annie              !v/Annie             \n \
             5  variant         --/M      Mr_Serious         !v/Mr serious        \n \
             5  variant         --/M      Storm              !v/Storm             (en-us 5)\n \
             5  variant         --/F      female3            !v/f3                \n";
        let voices = variants_from(listing, "French", "fr");
        let got: Vec<(&str, &str)> = voices
            .iter()
            .map(|v| (v.id.as_str(), v.label.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("fr", "French: espeak-ng's own"),
                ("fr+Alex", "French: Alex (male)"),
                ("fr+Annie", "French: Annie (female)"),
                ("fr+Storm", "French: Storm (male)"),
                ("fr+f3", "French: female3 (female)"),
            ]
        );
    }

    #[test]
    fn speed_maps_onto_espeak_rates_it_accepts() {
        assert_eq!(espeak_rate(1.0), 175);
        assert_eq!(espeak_rate(2.0), 350);
        assert_eq!(espeak_rate(0.25), 80);
        assert_eq!(espeak_rate(4.0), 450);
    }

    #[test]
    fn a_long_first_scene_is_cut_between_words() {
        let text = "word ".repeat(100);
        let cut = shortened(text.trim(), 23);
        assert_eq!(cut, "word word word word");
        assert_eq!(shortened("short", 23), "short");
    }
}
