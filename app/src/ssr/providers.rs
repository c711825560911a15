//! OpenAI-compatible image and speech providers (async-openai, against the admin's base
//! URL and key), with their errors sorted into what the engine retries and what it does not.
//!
//! Every answer body is read under a byte cap (see [`openai`]'s `*_MAX_BYTES`) and a
//! deadline. An image URL the provider *returns* is fetched by [`outbound`]'s rules: the
//! admin chose the base URL, but whatever it answers is data, and must not make the server
//! reach into its own network.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::audio::{CreateSpeechRequest, SpeechModel, SpeechResponseFormat, Voice};
use base64::Engine as _;
use serde_json::{json, Value};

use super::engine::TaskError;
use super::llm::scrub;
use super::openai::{self, AnswerLimit, ReadError, Seen, SpeechFormat, TooLarge};
use super::outbound;
use super::settings::Endpoint;
use super::state::AppState;
use crate::model::SettingsValues;

pub struct ImageFile {
    pub bytes: Vec<u8>,
    pub ext: &'static str,
    pub mime: &'static str,
}

/// A client for one media request to `endpoint`, within the admin's media timeout
/// (`media_timeout_secs`) and with answers cut off at `max_bytes`, named `what` in errors.
fn media_client(
    state: &AppState,
    settings: &SettingsValues,
    endpoint: &Endpoint,
    what: &'static str,
    max_bytes: u64,
) -> (
    async_openai::Client<async_openai::config::OpenAIConfig>,
    openai::LastAnswer,
) {
    openai::client(
        &state.http,
        &endpoint.base_url,
        &endpoint.api_key,
        Duration::from_secs(u64::from(settings.media_timeout_secs)),
        AnswerLimit { what, max_bytes },
    )
}

fn require_key(endpoint: &Endpoint, what: &str) -> Result<(), TaskError> {
    if endpoint.key_missing {
        return Err(TaskError::Permanent(format!(
            "{what} uses the OpenAI-compatible provider, but no API key is set. An admin can add one in Settings, or switch {what} to the built-in provider."
        )));
    }
    Ok(())
}

/// The size to ask for: the admin's, or the model family's closest to the aspect ratio.
pub fn request_size(settings: &SettingsValues, aspect_ratio: &str) -> String {
    if settings.image_size != "auto" {
        return settings.image_size.clone();
    }
    let model = settings.image_model.as_str();
    let (portrait, landscape, square) = if model.starts_with("dall-e-3") {
        ("1024x1792", "1792x1024", "1024x1024")
    } else if model.starts_with("dall-e") {
        ("1024x1024", "1024x1024", "1024x1024")
    } else {
        ("1024x1536", "1536x1024", "1024x1024")
    };
    match aspect_ratio {
        "9:16" => portrait,
        "16:9" => landscape,
        _ => square,
    }
    .to_owned()
}

/// One picture from the Images API at `endpoint`.
///
/// Base64 is asked for (`response_format: b64_json`), except from GPT image models, which
/// always answer so and refuse the parameter; a server that refuses it too is asked again
/// without, and remembered. The answer may carry `b64_json` or a `url` (fetched under
/// [`fetch_image_url`]'s rules) and any other fields.
pub async fn image(
    state: &AppState,
    settings: &SettingsValues,
    endpoint: &Endpoint,
    prompt: &str,
    aspect_ratio: &str,
) -> Result<ImageFile, TaskError> {
    require_key(endpoint, "Pictures")?;
    let (client, seen) = media_client(
        state,
        settings,
        endpoint,
        "image answer",
        openai::IMAGE_ANSWER_MAX_BYTES,
    );
    let model = settings.image_model.as_str();
    let learned = state.learned.get(&endpoint.base_url, model);
    let mut ask_base64 = !learned.image_no_response_format && !model.starts_with("gpt-image");
    let response = loop {
        let mut body = json!({
            "prompt": prompt,
            "model": model,
            "n": 1,
            "size": request_size(settings, aspect_ratio),
        });
        if !matches!(settings.image_quality.as_str(), "auto" | "") {
            body["quality"] = json!(settings.image_quality);
        }
        if ask_base64 {
            body["response_format"] = json!("b64_json");
        }
        match client.images().generate_byot::<Value, Value>(body).await {
            Ok(response) => break response,
            Err(e) if ask_base64 && refuses_format(&e, seen.get()) => {
                tracing::info!(
                    model,
                    "the images endpoint refuses response_format; asking without it"
                );
                ask_base64 = false;
                state.learned.update(&endpoint.base_url, model, |q| {
                    q.image_no_response_format = true
                });
            }
            Err(e) => return Err(classify(e, seen.get(), &endpoint.api_key, "image")),
        }
    };
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        let reason = openai::reason_in(error).unwrap_or_else(|| error.to_string());
        return Err(TaskError::Transient {
            message: format!(
                "The provider reported an error: {}",
                scrub(&super::llm::clip(&reason, 500), &endpoint.api_key)
            ),
            retry_after: None,
        });
    }
    let first = response.get("data").and_then(|d| d.get(0));
    let text = |field: &str| {
        first
            .and_then(|f| f.get(field))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let bytes = match (text("b64_json"), text("url")) {
        (Some(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim().as_bytes())
            .map_err(|_| TaskError::Permanent("the provider's image is not valid base64".into()))?,
        (None, Some(url)) => {
            fetch_image_url(
                &endpoint.base_url,
                url,
                Duration::from_secs(u64::from(settings.media_timeout_secs)),
                &settings.allowed_private_addresses,
            )
            .await?
        }
        (None, None) => {
            return Err(TaskError::Permanent(
                "the provider's answer holds no image (neither data[0].b64_json nor data[0].url)"
                    .into(),
            ))
        }
    };
    // The answer's cap already bounds this; the image's own cap is the documented one.
    if bytes.len() as u64 > openai::IMAGE_MAX_BYTES {
        return Err(TaskError::Permanent(
            TooLarge {
                what: "image",
                max_bytes: openai::IMAGE_MAX_BYTES,
            }
            .to_string(),
        ));
    }
    let (ext, mime) = if bytes.starts_with(b"\x89PNG") {
        ("png", "image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        ("jpg", "image/jpeg")
    } else if bytes.len() > 12 && &bytes[8..12] == b"WEBP" {
        ("webp", "image/webp")
    } else {
        return Err(TaskError::Permanent(
            "the provider's answer is not a PNG, JPEG or WebP image".into(),
        ));
    };
    Ok(ImageFile { bytes, ext, mime })
}

/// Whether the server refused the `response_format` it was sent (see `openai::refused`).
fn refuses_format(err: &OpenAIError, seen: Seen) -> bool {
    openai::refused(err, seen, &["response_format"])
}

/// Fetches the image at a URL the provider returned (see [`outbound::get`]), within
/// `timeout` in all and at most [`openai::IMAGE_MAX_BYTES`] of it. A URL on the same origin
/// as the admin's base URL is as trusted as the base URL itself, which may well be local
/// (Ollama, LocalAI on `localhost`); its redirects elsewhere are checked like any other.
async fn fetch_image_url(
    base_url: &str,
    url: &str,
    timeout: Duration,
    allowed_private: &str,
) -> Result<Vec<u8>, TaskError> {
    let rules = outbound::Rules::new(
        "the provider's image URL",
        reqwest::Url::parse(base_url).ok().map(|u| u.origin()),
        allowed_private,
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let response = outbound::get(url, &rules, deadline).await?;
    openai::read_capped(response, openai::IMAGE_MAX_BYTES, "image")
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(too_large) => TaskError::Permanent(too_large.to_string()),
            ReadError::Http(e) => outbound::download_failed(rules.what, e),
        })
}

/// A speech answer and the format it was asked in (raw PCM is known only from that).
pub struct Speech {
    pub bytes: Vec<u8>,
    pub format: SpeechFormat,
}

/// Narration from the speech API at `endpoint`, in `voice` at `speed` (0.25–4.0, as
/// OpenAI's `speed`). WAV is asked for first; a server that
/// refuses a format is asked for the next in [`SpeechFormat::ALL`], and the one that
/// worked is remembered for the endpoint and model. ffmpeg converts whatever comes.
pub async fn speech(
    state: &AppState,
    settings: &SettingsValues,
    endpoint: &Endpoint,
    text: &str,
    voice: &str,
    speed: f64,
) -> Result<Speech, TaskError> {
    require_key(endpoint, "Narration")?;
    let (client, seen) = media_client(
        state,
        settings,
        endpoint,
        "speech answer",
        openai::SPEECH_MAX_BYTES,
    );
    let model = settings.tts_model.as_str();
    let mut format = state
        .learned
        .get(&endpoint.base_url, model)
        .speech_format
        .unwrap_or(SpeechFormat::Wav);
    loop {
        let request = CreateSpeechRequest {
            input: text.to_owned(),
            model: SpeechModel::Other(model.to_owned()),
            voice: Voice::Other(voice.trim().to_lowercase()),
            response_format: Some(match format {
                SpeechFormat::Wav => SpeechResponseFormat::Wav,
                SpeechFormat::Flac => SpeechResponseFormat::Flac,
                SpeechFormat::Mp3 => SpeechResponseFormat::Mp3,
                SpeechFormat::Opus => SpeechResponseFormat::Opus,
                SpeechFormat::Aac => SpeechResponseFormat::Aac,
                SpeechFormat::Pcm => SpeechResponseFormat::Pcm,
            }),
            speed: Some(speed as f32),
            ..Default::default()
        };
        match client.audio().speech().create(request).await {
            Ok(answer) => {
                state.learned.update(&endpoint.base_url, model, |q| {
                    q.speech_format = Some(format)
                });
                return Ok(Speech {
                    bytes: answer.bytes.to_vec(),
                    format,
                });
            }
            Err(e) if refuses_format(&e, seen.get()) && format.next().is_some() => {
                let next = format.next().unwrap_or(SpeechFormat::Pcm);
                tracing::info!(
                    model,
                    from = format.as_str(),
                    to = next.as_str(),
                    "the speech endpoint refuses this format; asking for the next"
                );
                format = next;
            }
            Err(e) => return Err(classify(e, seen.get(), &endpoint.api_key, "speech")),
        }
    }
}

/// A word of a transcript and when it starts, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct HeardWord {
    pub word: String,
    pub start_ms: i64,
}

/// Where each word falls in `wav`, by the OpenAI-compatible transcription endpoint
/// (`/audio/transcriptions` with `response_format: verbose_json` and
/// `timestamp_granularities[]: word`, OpenAI's API, which faster-whisper servers copy).
/// Words are read from the answer's `words`, or from its `segments[].words` as some
/// servers give them. Errors are for the log: captions then take the estimate.
pub async fn transcribe(
    state: &AppState,
    settings: &SettingsValues,
    endpoint: &Endpoint,
    wav: Vec<u8>,
) -> Result<Vec<HeardWord>, String> {
    use async_openai::types::audio::{
        AudioInput, AudioResponseFormat, CreateTranscriptionRequest, TimestampGranularity,
    };
    let (client, seen) = media_client(
        state,
        settings,
        endpoint,
        "transcription answer",
        openai::JSON_ANSWER_MAX_BYTES,
    );
    let request = CreateTranscriptionRequest {
        file: AudioInput::from_vec_u8("narration.wav".into(), wav),
        model: settings.transcription_model.clone(),
        response_format: Some(AudioResponseFormat::VerboseJson),
        timestamp_granularities: Some(vec![TimestampGranularity::Word]),
        ..Default::default()
    };
    let answer: Value = client
        .audio()
        .transcription()
        .create_verbose_json_byot(request)
        .await
        .map_err(
            |e| match classify(e, seen.get(), &endpoint.api_key, "transcription") {
                TaskError::Permanent(m) => m,
                TaskError::Transient { message, .. } => message,
                other => other.message().to_owned(),
            },
        )?;
    let listed = |words: &Value| -> Vec<HeardWord> {
        words
            .as_array()
            .map(|words| {
                words
                    .iter()
                    .filter_map(|w| {
                        Some(HeardWord {
                            word: w.get("word")?.as_str()?.trim().to_owned(),
                            start_ms: (w.get("start")?.as_f64()? * 1000.0).round() as i64,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut words = listed(&answer["words"]);
    if words.is_empty() {
        words = answer["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|segment| listed(&segment["words"]))
            .collect();
    }
    if words.is_empty() {
        return Err("the transcription has no word timestamps".into());
    }
    Ok(words)
}

/// Transient: timeouts, connection failures, 408, 409, 429 (not quota), 5xx. Permanent:
/// bad key, no quota, a refused prompt or an unknown model, with the provider's words.
/// An answer over its cap is permanent too: asking again gets the same answer.
fn classify(err: OpenAIError, seen: Seen, key: &str, what: &str) -> TaskError {
    if let Some(too_large) = TooLarge::of(&err) {
        return TaskError::Permanent(too_large.to_string());
    }
    let status = openai::failed_status(&err, seen);
    // Shown to the creator: short, and never with a trace of the key. (Scrubbing a whole
    // HTML error page would also cost seconds of CPU; `error_reason` clips it first.)
    let message = scrub(&openai::error_reason(&err), key);
    let quota = matches!(&err, OpenAIError::ApiError(api) if api.api_error.r#type.as_deref() == Some("insufficient_quota"));
    let transient = |message: String| TaskError::Transient {
        message,
        retry_after: seen.retry_after,
    };
    // A 429 without Retry-After: wait out most of a provider's minute rather than spend the
    // attempts in seconds.
    let rate_limited = |message: String| TaskError::Transient {
        message,
        retry_after: Some(seen.retry_after.unwrap_or(Duration::from_secs(20))),
    };
    match (status, &err) {
        (Some(code @ (401 | 403)), _) => TaskError::Permanent(if message.is_empty() {
            format!("The provider rejected the API key for {what}, or its access to the model ({code}). An admin can check them in Settings.")
        } else {
            format!("The provider rejected the API key for {what}, or its access to the model ({code}): {message}. An admin can check them in Settings.")
        }),
        (Some(429), _) if quota => TaskError::Permanent(
            "The provider account has no quota left. Check its billing, or use another key in Settings.".into(),
        ),
        (Some(429), _) => rate_limited(format!("The provider is rate limiting {what} requests")),
        (Some(code @ (408 | 409)), _) => transient(format!("The provider answered {code}")),
        (Some(code), _) if code >= 500 => {
            transient(format!("The provider failed on its side ({code})"))
        }
        (Some(code), _) => TaskError::Permanent(if message.is_empty() {
            format!("The provider refused the {what} request ({code})")
        } else {
            format!("The provider refused the {what} request ({code}): {message}")
        }),
        (_, OpenAIError::Reqwest(e)) if e.is_timeout() => {
            transient(format!("The {what} request timed out"))
        }
        (_, OpenAIError::Reqwest(_)) => {
            transient(format!("The provider could not be reached for {what}"))
        }
        (_, OpenAIError::JSONDeserialize(..)) => TaskError::Permanent(if message.is_empty() {
            format!("The server's answer to the {what} request is not JSON")
        } else {
            format!("The server's answer to the {what} request is not JSON; it said: {message}")
        }),
        // A request we could not even build is our bug, not the provider's mood.
        (_, OpenAIError::InvalidArgument(_)) => {
            TaskError::Permanent(format!("The {what} request could not be built: {err}"))
        }
        _ => transient(scrub(&super::llm::clip(&err.to_string(), 500), key)),
    }
}
