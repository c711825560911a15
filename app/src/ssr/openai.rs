//! One way to build an async-openai client for any capability: our shared reqwest pool, a
//! per-request timeout, no hidden retries (the engine and the creator decide), a record
//! of the last answer's status and `Retry-After`, which async-openai's errors do not keep,
//! and a byte cap on every answer body.
//!
//! async-openai reads answer bodies itself, whole, with no limit. Our transport (its
//! `middleware` feature) therefore reads the body first, chunk by chunk, stopping at the
//! cap, and hands async-openai an answer made from the bytes it kept. An endless answer
//! costs at most the cap in memory and is a permanent error ([`TooLarge`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::Client;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The largest JSON answer other than images' (chat completions, the model list), in
/// bytes: 10 MiB. A script is a few KiB; a provider listing hundreds of models with
/// descriptions stays well under a few MiB.
pub const JSON_ANSWER_MAX_BYTES: u64 = 10 * MIB;

/// The largest image accepted, in bytes: 50 MiB, whether fetched from the URL a provider
/// returned or decoded from its base64. A 4096×4096 photo as PNG is about 30 MiB.
pub const IMAGE_MAX_BYTES: u64 = 50 * MIB;

/// The largest Images API answer (JSON), in bytes: one [`IMAGE_MAX_BYTES`] image in
/// base64 (4/3 as long) and 1 MiB for the rest, about 67 MiB.
pub const IMAGE_ANSWER_MAX_BYTES: u64 = IMAGE_MAX_BYTES / 3 * 4 + MIB;

/// The largest speech answer, in bytes: 50 MiB. 24 kHz 16-bit mono WAV is 48 000 bytes a
/// second, so about 18 minutes, several times what the 4096-character input takes to say.
pub const SPEECH_MAX_BYTES: u64 = 50 * MIB;

/// How much of an error answer (any non-2xx status) is kept, in bytes: 64 KiB. The rest is
/// dropped rather than refused: the status decides what happens and the text is only
/// shown clipped, so a 500 with a huge HTML page is still a 500, retried.
pub const ERROR_ANSWER_MAX_BYTES: u64 = 64 * KIB;

/// `bytes` for people: "50 MiB", "64 KiB", "512 bytes".
pub fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// An answer body longer than its cap; reading stopped there (or before reading at all,
/// when its `Content-Length` said so). Always permanent: asking again gets the same.
#[derive(Debug, Clone, Copy)]
pub struct TooLarge {
    /// What was too large, as the message names it: "speech answer", "image".
    pub what: &'static str,
    /// The cap, in bytes.
    pub max_bytes: u64,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the provider's {} is larger than {}, the most CREVID accepts; refused",
            self.what,
            size_text(self.max_bytes)
        )
    }
}

impl std::error::Error for TooLarge {}

impl TooLarge {
    /// The [`TooLarge`] inside an error from a client made by [`client`], if that is what
    /// it is.
    pub fn of(err: &OpenAIError) -> Option<TooLarge> {
        match err {
            OpenAIError::Boxed(inner) => inner.downcast_ref::<TooLarge>().copied(),
            _ => None,
        }
    }
}

/// Why a capped read failed.
#[derive(Debug)]
pub enum ReadError {
    TooLarge(TooLarge),
    /// The connection failed or timed out mid-body.
    Http(reqwest::Error),
}

/// Reads `response`'s body chunk by chunk and stops as soon as it would pass `max_bytes`
/// (a declared `Content-Length` over the cap fails before anything is read), so an endless
/// answer costs at most the cap in memory. Dropping the response there closes the
/// connection. The time is bounded by the request's own timeout, which in reqwest covers
/// the body as well.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: u64,
    what: &'static str,
) -> Result<Vec<u8>, ReadError> {
    let too_large = ReadError::TooLarge(TooLarge { what, max_bytes });
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if (body.len() + chunk.len()) as u64 > max_bytes {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `max_bytes` of `response`'s body and drops the rest.
async fn read_prefix(
    mut response: reqwest::Response,
    max_bytes: u64,
) -> Result<Vec<u8>, reqwest::Error> {
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The cap on one kind of answer: what it is called in messages, and its size in bytes.
#[derive(Debug, Clone, Copy)]
pub struct AnswerLimit {
    pub what: &'static str,
    pub max_bytes: u64,
}

/// What the transport saw of the last answer.
#[derive(Default, Debug, Clone, Copy)]
pub struct Seen {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
}

/// The server's own reason for an error, whatever shape its body had: OpenAI's
/// `{"error": {"message"}}`, `{"error": "text"}` (Ollama, llama.cpp), FastAPI's
/// `{"detail": …}` (Kokoro-FastAPI, openedai-speech), `{"message"}`, or plain text (a
/// proxy's page), clipped to 300 characters. Empty when there is none.
pub fn error_reason(err: &OpenAIError) -> String {
    let reason = match err {
        OpenAIError::ApiError(api) => {
            let e = &api.api_error;
            if !e.message.trim().is_empty() {
                reason_in_text(&e.message)
            } else {
                e.code
                    .clone()
                    .or_else(|| e.r#type.clone())
                    .unwrap_or_default()
            }
        }
        OpenAIError::JSONDeserialize(_, content) => reason_in_text(content),
        _ => String::new(),
    };
    reason
        .chars()
        .take(300)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A body's reason: from its JSON when it is JSON (a 5xx body reaches us as text, and
/// may hold OpenAI's error object), else the text itself.
fn reason_in_text(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => reason_in(&value).unwrap_or_else(|| text.trim().to_owned()),
        Err(_) => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The message inside an error value of any of the shapes servers use.
pub fn reason_in(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Object(o) => ["error", "message", "detail", "error_description", "msg"]
            .iter()
            .find_map(|k| o.get(*k).and_then(reason_in)),
        // FastAPI's validation errors: a list of {loc, msg}.
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|item| {
                    let msg = item
                        .get("msg")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| reason_in(item))?;
                    let loc = item.get("loc").and_then(Value::as_array).map(|l| {
                        l.iter()
                            .filter_map(|p| {
                                p.as_str()
                                    .map(str::to_owned)
                                    .or_else(|| Some(p.to_string()))
                            })
                            .collect::<Vec<_>>()
                            .join(".")
                    });
                    Some(match loc {
                        Some(loc) if !loc.is_empty() => format!("{loc}: {msg}"),
                        _ => msg,
                    })
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    }
}

/// Whether a failed request was refused for one of `parameters`: a 400 or 422 whose
/// `param` or reason names one of them (OpenAI: "Unknown parameter: 'response_format'.";
/// FastAPI servers: `body.response_format: Input should be …`; DeepSeek: "This
/// response_format type is unavailable now"). Any other refusal (a context too long, an
/// unknown model) is the server's answer to pass on, not a reason to ask differently.
pub fn refused(err: &OpenAIError, seen: Seen, parameters: &[&str]) -> bool {
    let (status, param) = match err {
        OpenAIError::ApiError(api) => (Some(api.status_code.as_u16()), api.api_error.param.clone()),
        OpenAIError::JSONDeserialize(..) => (seen.status, None),
        _ => (None, None),
    };
    if !matches!(status, Some(400 | 422)) {
        return false;
    }
    let reason = error_reason(err).to_lowercase();
    parameters
        .iter()
        .any(|p| param.as_deref() == Some(*p) || reason.contains(p))
}

/// The HTTP status of a failed request: the API error's, or (for an answer whose body
/// was not OpenAI's error object) the one the transport saw for this very request.
pub fn failed_status(err: &OpenAIError, seen: Seen) -> Option<u16> {
    match err {
        OpenAIError::ApiError(api) => Some(api.status_code.as_u16()),
        OpenAIError::JSONDeserialize(..) => seen.status.filter(|code| *code >= 400),
        _ => None,
    }
}

/// The longest wait a provider's `Retry-After` is taken at: one hour. A date far ahead
/// (a clock set wrong) must not park a task for days.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// How long the provider asks to wait, from whichever form it sent:
/// `retry-after-ms` (milliseconds, OpenAI and Azure OpenAI), `Retry-After` in seconds,
/// with a fraction or not (RFC 9110 allows only whole seconds; Groq and others send
/// fractions), or `Retry-After` as an HTTP date (RFC 9110 §10.2.3). Capped at
/// [`RETRY_AFTER_MAX`]; `None` when absent or unreadable.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let from_number = |text: &str, unit_secs: f64| {
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| Duration::from_secs_f64((n * unit_secs).min(RETRY_AFTER_MAX.as_secs_f64())))
    };
    let wait = header("retry-after-ms")
        .and_then(|ms| from_number(ms, 0.001))
        .or_else(|| {
            let value = header("retry-after")?;
            from_number(value, 1.0).or_else(|| {
                let at = httpdate::parse_http_date(value).ok()?;
                Some(
                    at.duration_since(std::time::SystemTime::now())
                        .unwrap_or_default(),
                )
            })
        })?;
    Some(wait.min(RETRY_AFTER_MAX))
}

/// What CREVID learned about one server and model (see [`Learned`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quirks {
    /// The strongest chat `response_format` the server accepted.
    pub chat_format: Option<ChatFormat>,
    /// The model refused `temperature` (reasoning models).
    pub no_temperature: bool,
    /// The images endpoint refused `response_format` (GPT image models).
    pub image_no_response_format: bool,
    /// The speech `response_format` the server last answered.
    pub speech_format: Option<SpeechFormat>,
}

/// How the script's JSON is asked for, strongest first (so `a < b` means `a` is the
/// stronger). A server that refuses one is asked again with the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChatFormat {
    /// `response_format: {type: json_schema}` (OpenAI structured outputs).
    JsonSchema,
    /// `response_format: {type: json_object}` (JSON mode).
    JsonObject,
    /// No `response_format`: the schema is in the prompt and the JSON is found in the
    /// answer.
    Prompt,
}

impl ChatFormat {
    pub fn weaker(self) -> Option<ChatFormat> {
        match self {
            ChatFormat::JsonSchema => Some(ChatFormat::JsonObject),
            ChatFormat::JsonObject => Some(ChatFormat::Prompt),
            ChatFormat::Prompt => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChatFormat::JsonSchema => "json_schema",
            ChatFormat::JsonObject => "json_object",
            ChatFormat::Prompt => "none (schema in the prompt)",
        }
    }
}

/// Speech formats in the order they are asked for: WAV carries its length and needs no
/// decoder; then lossless FLAC; then the lossy ones; raw PCM last, as it only works when
/// the server keeps to OpenAI's documented 24 kHz 16-bit mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechFormat {
    Wav,
    Flac,
    Mp3,
    Opus,
    Aac,
    Pcm,
}

impl SpeechFormat {
    pub const ALL: [SpeechFormat; 6] = [
        SpeechFormat::Wav,
        SpeechFormat::Flac,
        SpeechFormat::Mp3,
        SpeechFormat::Opus,
        SpeechFormat::Aac,
        SpeechFormat::Pcm,
    ];

    /// The `response_format` value (OpenAI's speech API).
    pub fn as_str(self) -> &'static str {
        match self {
            SpeechFormat::Wav => "wav",
            SpeechFormat::Flac => "flac",
            SpeechFormat::Mp3 => "mp3",
            SpeechFormat::Opus => "opus",
            SpeechFormat::Aac => "aac",
            SpeechFormat::Pcm => "pcm",
        }
    }

    pub fn next(self) -> Option<SpeechFormat> {
        let i = SpeechFormat::ALL.iter().position(|f| *f == self)?;
        SpeechFormat::ALL.get(i + 1).copied()
    }
}

/// What each OpenAI-compatible server (base URL and model) turned out to accept, so the
/// fallbacks are paid once per server, not once per request. Kept in memory: a restart
/// learns again, at the cost of one refused request per capability.
#[derive(Debug, Default)]
pub struct Learned(Mutex<std::collections::HashMap<(String, String), Quirks>>);

impl Learned {
    pub fn get(&self, base_url: &str, model: &str) -> Quirks {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&(base_url.to_owned(), model.to_owned())).cloned())
            .unwrap_or_default()
    }

    pub fn update(&self, base_url: &str, model: &str, change: impl FnOnce(&mut Quirks)) {
        if let Ok(mut map) = self.0.lock() {
            change(
                map.entry((base_url.to_owned(), model.to_owned()))
                    .or_default(),
            );
        }
    }
}

#[derive(Clone, Default)]
pub struct LastAnswer(Arc<Mutex<Seen>>);

impl LastAnswer {
    pub fn get(&self) -> Seen {
        self.0.lock().map(|g| *g).unwrap_or_default()
    }
}

/// A client for the admin's `base_url`: every request times out after `timeout` (body
/// included) and every successful answer's body is capped by `limit`.
pub fn client(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    timeout: Duration,
    limit: AnswerLimit,
) -> (Client<OpenAIConfig>, LastAnswer) {
    let seen = LastAnswer::default();
    let service = {
        let http = http.clone();
        let seen = seen.clone();
        tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            let seen = seen.clone();
            async move {
                let mut request = factory.build().await?;
                *request.timeout_mut() = Some(timeout);
                // What was seen belongs to this request only: a timeout must never be
                // read with the status of the answer before it.
                if let Ok(mut seen) = seen.0.lock() {
                    *seen = Seen::default();
                }
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                let retry_after = retry_after(response.headers());
                if let Ok(mut seen) = seen.0.lock() {
                    *seen = Seen {
                        status: Some(response.status().as_u16()),
                        retry_after,
                    };
                }
                capped(response, limit).await
            }
        })
    };
    let config = OpenAIConfig::new()
        .with_api_base(base_url.to_owned())
        .with_api_key(api_key.to_owned());
    (
        Client::build(http.clone(), config).with_http_service(service),
        seen,
    )
}

/// The same answer with its body already read under the cap, for async-openai to read
/// again from memory.
async fn capped(
    response: reqwest::Response,
    limit: AnswerLimit,
) -> Result<reqwest::Response, OpenAIError> {
    let status = response.status();
    let version = response.version();
    let mut headers = response.headers().clone();
    let body = if status.is_success() {
        read_capped(response, limit.max_bytes, limit.what)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(too_large) => OpenAIError::Boxed(Box::new(too_large)),
                ReadError::Http(e) => OpenAIError::Reqwest(e),
            })?
    } else {
        read_prefix(response, ERROR_ANSWER_MAX_BYTES)
            .await
            .map_err(OpenAIError::Reqwest)?
    };
    // The body may have been cut, and it is no longer encoded for the wire.
    headers.remove(reqwest::header::CONTENT_LENGTH);
    headers.remove(reqwest::header::TRANSFER_ENCODING);
    let mut kept = axum::http::Response::new(body);
    *kept.status_mut() = status;
    *kept.version_mut() = version;
    *kept.headers_mut() = headers;
    Ok(reqwest::Response::from(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_every_form_servers_send() {
        let wait = |pairs: &[(&'static str, String)]| {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().expect("a header value"));
            }
            retry_after(&headers)
        };
        assert_eq!(
            wait(&[("retry-after", "7".into())]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            wait(&[("retry-after", "0.5".into())]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "250".into())]),
            Some(Duration::from_millis(250))
        );
        // The millisecond form is the more precise; it wins over the seconds.
        assert_eq!(
            wait(&[
                ("retry-after", "1".into()),
                ("retry-after-ms", "1500".into())
            ]),
            Some(Duration::from_millis(1500))
        );
        let at = std::time::SystemTime::now() + Duration::from_secs(30);
        let from_date = wait(&[("retry-after", httpdate::fmt_http_date(at))]).expect("a wait");
        assert!((28..=30).contains(&from_date.as_secs()), "{from_date:?}");
        let past = std::time::SystemTime::now() - Duration::from_secs(30);
        assert_eq!(
            wait(&[("retry-after", httpdate::fmt_http_date(past))]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            wait(&[("retry-after", "99999999".into())]),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(wait(&[("retry-after", "soon".into())]), None);
        assert_eq!(wait(&[("retry-after", "-3".into())]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn reasons_in_every_error_shape() {
        let reason = |text: &str| reason_in_text(text);
        assert_eq!(
            reason(
                r#"{"error":{"message":"Unknown parameter: 'response_format'.","param":"response_format"}}"#
            ),
            "Unknown parameter: 'response_format'."
        );
        assert_eq!(
            reason(r#"{"error":"model 'llama9' not found"}"#),
            "model 'llama9' not found"
        );
        assert_eq!(
            reason(
                r#"{"detail":[{"loc":["body","response_format"],"msg":"Input should be 'mp3', 'wav' or 'pcm'","type":"literal_error"}]}"#
            ),
            "body.response_format: Input should be 'mp3', 'wav' or 'pcm'"
        );
        assert_eq!(reason(r#"{"detail":"Voice not found"}"#), "Voice not found");
        assert_eq!(
            reason("<html>\n<h1>502   Bad Gateway</h1></html>"),
            "<html> <h1>502 Bad Gateway</h1></html>"
        );
    }

    #[test]
    fn speech_formats_fall_back_in_order() {
        let mut order = vec![SpeechFormat::Wav];
        while let Some(next) = order.last().and_then(|f| f.next()) {
            order.push(next);
        }
        assert_eq!(order, SpeechFormat::ALL);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(JSON_ANSWER_MAX_BYTES), "10 MiB");
        assert_eq!(size_text(SPEECH_MAX_BYTES), "50 MiB");
        assert_eq!(size_text(ERROR_ANSWER_MAX_BYTES), "64 KiB");
        assert_eq!(size_text(IMAGE_ANSWER_MAX_BYTES), "67.7 MiB");
        assert_eq!(size_text(100), "100 bytes");
    }
}
