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
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB && bytes % KIB == 0 {
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
    pub retry_after: Option<u64>,
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
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
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
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(JSON_ANSWER_MAX_BYTES), "10 MiB");
        assert_eq!(size_text(SPEECH_MAX_BYTES), "50 MiB");
        assert_eq!(size_text(ERROR_ANSWER_MAX_BYTES), "64 KiB");
        assert_eq!(size_text(IMAGE_ANSWER_MAX_BYTES), "67.7 MiB");
        assert_eq!(size_text(100), "100 bytes");
    }
}
