//! OpenAI-compatible image and speech providers (async-openai, against the admin's base
//! URL and key), with their errors sorted into what the engine retries and what it does not.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::audio::{CreateSpeechRequest, SpeechModel, SpeechResponseFormat, Voice};
use async_openai::types::images::{
    CreateImageRequest, Image, ImageModel, ImageQuality, ImageResponseFormat, ImageSize,
};
use base64::Engine as _;

use super::engine::TaskError;
use super::llm::scrub;
use super::openai::{self, Seen};
use super::state::AppState;
use crate::model::SettingsValues;

pub struct ImageFile {
    pub bytes: Vec<u8>,
    pub ext: &'static str,
    pub mime: &'static str,
}

fn require_key(key: &str, what: &str) -> Result<(), TaskError> {
    if key.trim().is_empty() {
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

pub async fn image(
    state: &AppState,
    settings: &SettingsValues,
    api_key: &str,
    prompt: &str,
    aspect_ratio: &str,
) -> Result<ImageFile, TaskError> {
    require_key(api_key, "Pictures")?;
    let timeout = Duration::from_secs(u64::from(settings.media_timeout_secs));
    let (client, seen) = openai::client(&state.http, &settings.llm_base_url, api_key, timeout);
    let model = settings.image_model.as_str();
    // `response_format` is deprecated with DALL·E itself, but OpenAI-compatible servers
    // that serve DALL·E-style models still answer with URLs unless asked for base64.
    #[allow(deprecated)]
    let request = CreateImageRequest {
        prompt: prompt.to_owned(),
        model: ImageModel::Other(model.to_owned()),
        n: Some(1),
        size: Some(ImageSize::Other(request_size(settings, aspect_ratio))),
        quality: match settings.image_quality.as_str() {
            "auto" | "" => None,
            q => {
                serde_json::from_value::<ImageQuality>(serde_json::Value::String(q.to_owned())).ok()
            }
        },
        // GPT image models always answer in base64 and refuse the parameter; DALL·E
        // answers with a URL unless asked.
        response_format: model
            .starts_with("dall-e")
            .then_some(ImageResponseFormat::B64Json),
        ..Default::default()
    };
    let response = client
        .images()
        .generate(request)
        .await
        .map_err(|e| classify(e, seen.get(), api_key, "image"))?;
    let Some(first) = response.data.first() else {
        return Err(TaskError::Permanent(
            "the provider returned no image".into(),
        ));
    };
    let bytes = match first.as_ref() {
        Image::B64Json { b64_json, .. } => base64::engine::general_purpose::STANDARD
            .decode(b64_json.as_bytes())
            .map_err(|_| TaskError::Permanent("the provider's image is not valid base64".into()))?,
        Image::Url { url, .. } => download(state, url, timeout).await?,
    };
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

async fn download(state: &AppState, url: &str, timeout: Duration) -> Result<Vec<u8>, TaskError> {
    let response = state
        .http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| TaskError::Transient {
            message: format!("downloading the image failed: {}", e.without_url()),
            retry_after: None,
        })?;
    if !response.status().is_success() {
        return Err(TaskError::Transient {
            message: format!(
                "downloading the image failed with status {}",
                response.status()
            ),
            retry_after: None,
        });
    }
    response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| TaskError::Transient {
            message: format!("downloading the image failed: {}", e.without_url()),
            retry_after: None,
        })
}

pub async fn speech(
    state: &AppState,
    settings: &SettingsValues,
    api_key: &str,
    text: &str,
    voice: &str,
) -> Result<Vec<u8>, TaskError> {
    require_key(api_key, "Narration")?;
    let timeout = Duration::from_secs(u64::from(settings.media_timeout_secs));
    let (client, seen) = openai::client(&state.http, &settings.llm_base_url, api_key, timeout);
    let request = CreateSpeechRequest {
        input: text.to_owned(),
        model: SpeechModel::Other(settings.tts_model.clone()),
        voice: Voice::Other(voice.trim().to_lowercase()),
        // WAV: its duration is in the header, and the render re-encodes anyway.
        response_format: Some(SpeechResponseFormat::Wav),
        speed: Some(settings.tts_speed as f32),
        ..Default::default()
    };
    client
        .audio()
        .speech()
        .create(request)
        .await
        .map(|r| r.bytes.to_vec())
        .map_err(|e| classify(e, seen.get(), api_key, "speech"))
}

/// Transient: timeouts, connection failures, 408, 409, 429 (not quota), 5xx. Permanent:
/// bad key, no quota, a refused prompt or an unknown model, with the provider's words.
fn classify(err: OpenAIError, seen: Seen, key: &str, what: &str) -> TaskError {
    let status = match &err {
        OpenAIError::ApiError(api) => Some(api.status_code.as_u16()),
        _ => seen.status.filter(|code| *code >= 400),
    };
    // Shown to the creator: short, and never with a trace of the key. (Scrubbing a whole
    // HTML error page would also cost seconds of CPU.)
    let message = match &err {
        OpenAIError::ApiError(api) => scrub(&super::llm::clip(&api.api_error.message, 500), key),
        _ => String::new(),
    };
    let quota = matches!(&err, OpenAIError::ApiError(api) if api.api_error.r#type.as_deref() == Some("insufficient_quota"));
    let transient = |message: String| TaskError::Transient {
        message,
        retry_after: seen.retry_after.map(Duration::from_secs),
    };
    // A 429 without Retry-After: wait out most of a provider's minute rather than spend the
    // attempts in seconds.
    let rate_limited = |message: String| TaskError::Transient {
        message,
        retry_after: Some(Duration::from_secs(seen.retry_after.unwrap_or(20))),
    };
    match (status, &err) {
        (Some(401 | 403), _) => TaskError::Permanent(
            "The provider rejected the API key. An admin can check it in Settings.".into(),
        ),
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
        (_, OpenAIError::JSONDeserialize(..)) => TaskError::Permanent(format!(
            "The endpoint did not answer the {what} request like an OpenAI-compatible API. Check the base URL in Settings."
        )),
        // A request we could not even build is our bug, not the provider's mood.
        (_, OpenAIError::InvalidArgument(_)) => {
            TaskError::Permanent(format!("The {what} request could not be built: {err}"))
        }
        _ => transient(scrub(&super::llm::clip(&err.to_string(), 500), key)),
    }
}
