//! A local stand-in for Upstash QStash: it speaks the documented publish API and delivers
//! messages over HTTP, signed exactly as QStash signs them, so that the app's QStash mode
//! can be tested, benchmarked and run offline with the same configuration as Upstash's own
//! development server (`npx @upstash/qstash-cli dev`, see the `DEV_*` constants).
//!
//! # What it does
//!
//! - `POST /v2/publish/{destination}` and `POST /v2/batch`, with `Authorization: Bearer`
//!   (or `?qstash_token=`). The body passes through untouched; `Content-Type` and the
//!   `Upstash-Forward-*` headers (prefix stripped) reach the destination. Headers honoured:
//!   `Upstash-Method`, `Upstash-Retries` (default 3), `Upstash-Retry-Delay`,
//!   `Upstash-Delay`, `Upstash-Not-Before` (wins over the delay), `Upstash-Deduplication-Id`
//!   and `Upstash-Content-Based-Deduplication` (a duplicate within the window answers 202
//!   with the first message's id and `"deduplicated": true`), `Upstash-Failure-Callback`
//!   (with `-Forward-*`, `-Retries` and `-Retry-Delay`), `Upstash-Flow-Control-Key` /
//!   `-Value` (`parallelism=N, rate=R, period=P`), `Upstash-Timeout`, `Upstash-Label`
//!   (comma-separated), `Upstash-Redact-Fields`. Features it does not have
//!   (`Upstash-Callback`, `Upstash-Cron`, the other `Upstash-Failure-Callback-*` settings,
//!   URL groups, queues, schedules) get a 400 naming them, so a test never passes by
//!   silently ignoring them. A batch is all or nothing: one bad entry refuses it whole.
//! - Plan cap: with [`QStashOptions::plan_max_retries`] (or
//!   [`QStash::set_plan_max_retries`], or `plan_max_retries` in `/_fake/config`), an
//!   `Upstash-Retries` or `Upstash-Failure-Callback-Retries` above it answers 400
//!   `invalid Upstash-Retries 8: your plan allows at most 3 retries`, and a publish without
//!   the header gets `min(3, cap)`. Without it only [`RETRIES_LIMIT`] applies.
//! - Delivery: the original method and body, with `Upstash-Signature`, `Upstash-Message-Id`,
//!   `Upstash-Retried` (0 on the first try), `Upstash-Caller-Ip`, `User-Agent:
//!   Upstash-QStash`. A 2xx ends it. Anything else, a connection error or a timeout is
//!   retried after `min(86400, e^(2.5·n))` seconds (n = 1, 2, …), or after the
//!   `Upstash-Retry-Delay` expression's value in milliseconds when the publisher sent one,
//!   or after the answer's `Retry-After` (seconds, a Go duration such as `6m5s`, or an HTTP
//!   date; also `X-RateLimit-Reset*`; above one day the backoff or expression applies),
//!   which wins over both. The backoff and the expression's wait are QStash's own and are
//!   multiplied by the time scale; a `Retry-After` is the worker's word about real time and
//!   is not. 489 with `Upstash-NonRetryable-Error: true` goes straight to the dead-letter
//!   queue. When QStash gives up the message is dead-lettered and the failure callback, if
//!   any, gets the documented JSON body (as a message of its own: signed, retried).
//! - `Upstash-Retry-Delay` (openapi.yaml): an expression of the retries made so far,
//!   `retried` (0 for the first retry), with decimal numbers, `+ - * /`, unary minus,
//!   parentheses and `pow(x, y)`, `exp(x)`, `sqrt(x)`, `abs(x)`, `floor(x)`, `ceil(x)`,
//!   `round(x)`, `min(x, y)`, `max(x, y)`; e.g. `1000 * (1 + retried)`. Checked at publish
//!   (400 naming the header and the problem); a negative or NaN value waits 0, and a wait
//!   is capped at one day. `Upstash-Failure-Callback-Retry-Delay` is the same for the
//!   failure callback, which otherwise uses the source message's (as it does its retries).
//!   Shown as `retryDelayExpression`.
//! - `Upstash-Redact-Fields`: comma-separated `body`, `header` / `headers` (every delivered
//!   header), `header[Name]` / `headers[Name]`. What the API shows — `GET
//!   /v2/messages/{id}` and the DLQ routes — has the body replaced by `REDACTED:<hex
//!   SHA-256 of the body>` and each such header value by `REDACTED:<hex SHA-256 of the
//!   value>`. Deliveries, the failure callback's `sourceBody` / `sourceHeader`, and the raw
//!   views [`MessageInfo`] / [`DeadLetter`] keep the originals.
//! - Flow control: a key's limits are, unless pinned, the highest parallelism and the
//!   highest rate (with that message's period) among the key's messages not finished yet —
//!   "QStash will effectively allow the highest rate/period or highest parallelism" (the
//!   flow-control docs) — and stay as they were once none is left. A slot is granted only
//!   while the deliveries in flight are below the parallelism, the starts in the last
//!   (scaled) period below the rate (a sliding window), and the key is not paused; due
//!   messages wait first come first served. [`Delivery::flow_in_flight`] and
//!   [`Delivery::slot`] record each grant.
//! - `GET`/`DELETE /v2/messages/{id}` (the stand-in keeps finished messages, and adds
//!   `state` and `retried`). `DELETE /v2/messages` cancels in bulk: query `messageIds`
//!   (repeatable or comma-separated; other filters are then ignored) or the older body
//!   `{"messageIds": [...]}` (an empty list counts as none, as the docs of that form
//!   warn), else the filters `label`, `url`, `host`, `path`,
//!   `flowControlKey`, `callerIp` (several values of one filter match with OR, filters
//!   combine with AND) and `fromDate` / `toDate` (Unix ms, inclusive, on `createdAt`), at
//!   most `count` (1 to 500) of them; with no id and no filter it cancels every unfinished
//!   message, as documented. Answers `{"cancelled": n}`, counting the messages that were
//!   not finished. A canceled message is never delivered afterwards, whether it waits on a
//!   delay, a backoff or a flow-control slot (it leaves the wait list); a delivery already
//!   in flight finishes.
//! - `GET /v2/dlq` with the filters `dlqIds`, `messageId`, `label`, `url`,
//!   `flowControlKey`, `responseStatus`, `callerIp`, `fromDate` / `toDate`, in pages of
//!   `count` (default and most 100) with an opaque `cursor` in the answer while more remain;
//!   `DELETE /v2/dlq` with `dlqIds` (or the body `{"dlqIds": [...]}`) or the same filters,
//!   `count` at a time, answering `{"deleted": n}` (and a `cursor` while more remain);
//!   `GET`/`DELETE /v2/dlq/{dlqId}`. Dead letters show `labels` and the flow-control
//!   settings.
//! - `GET /v2/flowControl` (every key, as an array), `GET /v2/flowControl/{key}`
//!   (`flowControlKey`, `waitListSize`, `parallelismMax`, `parallelismCount`, `rateMax`,
//!   `rateCount`, `ratePeriod` in seconds, `ratePeriodStart` in Unix seconds,
//!   `isPinnedParallelism`, `isPinnedRate`, `isPaused`; 0 where a limit is not set), and
//!   `POST /v2/flowControl/{key}/pin?parallelism=N&rate=R&period=P` (overrides the
//!   messages' values for what it names, resets the rate count and period, creates a key
//!   never seen; lowering the parallelism holds new grants until the deliveries in flight
//!   drop below it), `/unpin?parallelism=true&rate=true` (the pinned values stay until the
//!   next message under the key brings its own, as documented), `/pause`, `/resume`,
//!   `/resetRate`. Unknown keys get a 404, pin aside.
//! - `GET /v2/keys`; `POST /v2/keys/rotate` (the next key becomes the current one, a new
//!   random next key is made; deliveries are signed with the new current key from then
//!   on) answers `{"current", "next"}` as well.
//! - List and bulk routes refuse an unknown query parameter, and the filters on features
//!   the stand-in lacks (`topicName`, `queueName`, `scheduleId`), with a 400 naming it.
//!
//! # Time scale
//!
//! Every wait QStash decides on — retry backoff, `Upstash-Retry-Delay`, `Upstash-Delay` /
//! `Upstash-Not-Before`, flow-control rate periods — is multiplied by the time scale (1.0 is
//! real time; 0.001 turns the 12 s first retry into 12 ms). A wait already started keeps its
//! length. Request timeouts and the deduplication window are not scaled: they are about the
//! real work and about the test's lifetime.
//!
//! # Signatures
//!
//! An HS256 JWT keyed with the UTF-8 bytes of the signing key, claims `aud` = `""`, `body`,
//! `exp` = now + 5 min, `iat`, `iss` = `Upstash`, `jti`, `nbf`, `sub` = the called URL. As
//! in tokens the real service issues, `body` is the base64url SHA-256 of the raw body *with*
//! `=` padding and `aud` is present but empty: the official receivers strip the padding
//! before comparing and ignore `aud`, and a verifier must do the same (with `jsonwebtoken`,
//! `validate_aud = false`). Deliveries are signed with the current key, or the next one
//! after [`QStash::set_sign_with_next`]; [`QStash::rotate_keys`] (`POST /v2/keys/rotate`)
//! changes both, so [`QStash::current_key`] and [`QStash::next_key`] answer owned strings.
//!
//! # At least once
//!
//! [`QStash::duplicate_next`] and [`QStash::set_duplicate_all`] make deliveries go out twice
//! at the same time (same message id and `Upstash-Retried`; the extra copy skips flow
//! control, as a real redelivery after a crash would); [`QStash::redeliver`] sends a given
//! message once more, whatever its state.
//!
//! # Outages
//!
//! [`QStash::set_unreachable`] answers 503 on every `/v2` route while the control API keeps
//! working; [`QStash::set_refusing`] closes the listening socket so connections are refused
//! (the control API too), and reopens it on the same port.
//!
//! # Control API
//!
//! Under `/_fake/`, needing no token:
//!
//! - `GET /_fake/config`, `POST /_fake/config` with any of `{"time_scale", "unreachable",
//!   "sign_with_next", "duplicate_next", "duplicate_all", "plan_max_retries"}`
//!   (`plan_max_retries`: a number, or `null` for no cap): answers the whole configuration.
//! - `GET /_fake/stats`: counters (see [`Stats`]; per flow-control key the limits in
//!   force, the pins and the pause, see [`FlowStats`]).
//! - `POST /_fake/reset`: forgets every message, dead letter, flow-control key (pins and
//!   pauses included) and counter ([`QStash::reset`]).
//! - `POST /_fake/release`: messages waiting on a delay or a backoff are tried now.
//! - `POST /_fake/redeliver/{id}`: one more delivery of a message; answers the [`Delivery`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify};

use super::lock;

/// Where Upstash's local development server listens, and so the stand-in's binary.
pub const DEV_ADDR: &str = "127.0.0.1:8080";
pub const DEV_URL: &str = "http://127.0.0.1:8080";
/// The development server's first test user, as Upstash publishes it (and as
/// `@upstash/qstash` ships it for its dev mode). Not secrets.
pub const DEV_TOKEN: &str =
    "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=";
pub const DEV_CURRENT_SIGNING_KEY: &str = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r";
pub const DEV_NEXT_SIGNING_KEY: &str = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs";

/// Retries when the publisher sends no `Upstash-Retries`.
pub const DEFAULT_RETRIES: u32 = 3;
/// The most `Upstash-Retries` the stand-in accepts; real plans allow fewer.
pub const RETRIES_LIMIT: u32 = 100;
/// Backoff and `Retry-After` are capped at one day, before scaling.
pub const MAX_RETRY_DELAY_SECS: f64 = 86_400.0;
/// The status that, with `Upstash-NonRetryable-Error: true`, stops retries at once.
pub const NON_RETRYABLE_STATUS: u16 = 489;
pub const SIGNATURE_LIFETIME_SECS: u64 = 300;
pub const USER_AGENT: &str = "Upstash-QStash";

/// The most messages one `DELETE /v2/messages` may cancel when it sends `count`.
pub const BULK_CANCEL_LIMIT: usize = 500;
/// `GET /v2/dlq` and `DELETE /v2/dlq` take at most this many per call, and this many when
/// the request sends no `count` (openapi.yaml: "default: 100, maximum: 100").
pub const DLQ_PAGE: usize = 100;

/// Headers that are QStash features the stand-in lacks: refusing them beats ignoring them.
const UNSUPPORTED_HEADERS: [&str; 6] = [
    "upstash-callback",
    "upstash-cron",
    "upstash-queue-name",
    "upstash-failure-callback-timeout",
    "upstash-failure-callback-delay",
    "upstash-failure-callback-method",
];

/// Filters of the list and bulk routes that name features the stand-in lacks (URL groups,
/// queues, schedules): refused rather than matching nothing in silence.
const UNSUPPORTED_FILTERS: [&str; 5] = ["topicName", "urlGroup", "queueName", "scheduleId", "api"];

/// Forwarded headers that would break the delivery request itself.
const UNFORWARDABLE: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

// ---------------------------------------------------------------------------------------
// Signatures

/// The claims of an `Upstash-Signature`, in the order the real service writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub aud: String,
    pub body: String,
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub jti: String,
    pub nbf: u64,
    pub sub: String,
}

impl Claims {
    /// What QStash signs for a delivery of `body` to `url`, now.
    pub fn new(url: &str, body: &[u8]) -> Self {
        let now = unix_secs();
        Claims {
            aud: String::new(),
            body: body_hash(body),
            exp: now + SIGNATURE_LIFETIME_SECS,
            iat: now,
            iss: "Upstash".into(),
            jti: format!("jwt_{}", random_id(28)),
            nbf: now,
            sub: url.to_owned(),
        }
    }
}

/// base64url of SHA-256 of `body`, with padding, as the real service writes it.
pub fn body_hash(body: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(Sha256::digest(body))
}

/// An `Upstash-Signature` for a delivery of `body` to `url`, signed with `key`.
pub fn sign(key: &str, url: &str, body: &[u8]) -> String {
    sign_claims(key, &Claims::new(url, body))
}

/// A token with any claims, to craft expired, misdirected or tampered signatures.
pub fn sign_claims(key: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Why [`verify`] refused a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureError(pub String);

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid QStash signature: {}", self.0)
    }
}

impl std::error::Error for SignatureError {}

/// Checks a signature as the official `Receiver` does: the JWT with the current key, then
/// the next; `iss`, `exp`, `nbf` with no leeway; `sub` against `url` when given; `body`
/// against the hash of `body`, padding ignored. For the stand-in's own tests; the app has
/// its own verifier.
pub fn verify(
    signature: &str,
    current_key: &str,
    next_key: &str,
    url: Option<&str>,
    body: &[u8],
) -> Result<Claims, SignatureError> {
    let decode = |key: &str| {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["Upstash"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(
            signature,
            &jsonwebtoken::DecodingKey::from_secret(key.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
    };
    let claims = decode(current_key)
        .or_else(|_| decode(next_key))
        .map_err(|e| SignatureError(e.to_string()))?;
    if let Some(url) = url {
        if claims.sub != url {
            return Err(SignatureError(format!(
                "subject {:?}, expected {url:?}",
                claims.sub
            )));
        }
    }
    let want = body_hash(body);
    if claims.body.trim_end_matches('=') != want.trim_end_matches('=') {
        return Err(SignatureError(format!(
            "body hash {:?}, expected {want:?}",
            claims.body
        )));
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------------------
// Public views

/// How the stand-in is set up at start; [`Default`] is Upstash's development server.
#[derive(Debug, Clone)]
pub struct QStashOptions {
    pub token: String,
    pub current_key: String,
    pub next_key: String,
    /// See the module docs; changeable later with [`QStash::set_time_scale`].
    pub time_scale: f64,
    /// Delivery request timeout when the publisher sends no `Upstash-Timeout`.
    pub delivery_timeout: Duration,
    /// How long a deduplication id is remembered (QStash documents 10 minutes).
    pub dedup_window: Duration,
    /// The most `Upstash-Retries` the plan allows (Upstash's pricing page: 3 on the free
    /// plan, more on paid ones); `None` leaves only [`RETRIES_LIMIT`]. Changeable later with
    /// [`QStash::set_plan_max_retries`].
    pub plan_max_retries: Option<u32>,
}

impl Default for QStashOptions {
    fn default() -> Self {
        QStashOptions {
            token: DEV_TOKEN.into(),
            current_key: DEV_CURRENT_SIGNING_KEY.into(),
            next_key: DEV_NEXT_SIGNING_KEY.into(),
            time_scale: 1.0,
            delivery_timeout: Duration::from_secs(15 * 60),
            dedup_window: Duration::from_secs(10 * 60),
            plan_max_retries: None,
        }
    }
}

impl QStashOptions {
    /// The development credentials with every wait multiplied by `time_scale`.
    pub fn scaled(time_scale: f64) -> Self {
        QStashOptions {
            time_scale,
            ..Self::default()
        }
    }
}

/// Where a message stands; `as_str` gives QStash's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageState {
    /// Waiting for its first try: a delay, or a flow-control slot.
    Created,
    /// A delivery is in flight.
    Active,
    /// Failed at least once, waiting for the next try.
    Retry,
    Delivered,
    /// Dead-lettered.
    Failed,
    Canceled,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Created => "CREATED",
            MessageState::Active => "ACTIVE",
            MessageState::Retry => "RETRY",
            MessageState::Delivered => "DELIVERED",
            MessageState::Failed => "FAILED",
            MessageState::Canceled => "CANCELED",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            MessageState::Delivered | MessageState::Failed | MessageState::Canceled
        )
    }
}

/// `Upstash-Flow-Control-Key` and the limits of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowControl {
    pub key: String,
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    /// The rate's period, unscaled (default one second).
    pub period: Duration,
}

/// A message as the stand-in holds it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageInfo {
    pub id: String,
    pub url: String,
    pub method: String,
    pub state: MessageState,
    /// Failed tries so far; the next delivery carries it as `Upstash-Retried`.
    pub retried: u32,
    pub max_retries: u32,
    pub body: Vec<u8>,
    /// `Content-Type` and the forwarded headers, as delivered.
    pub headers: Vec<(String, String)>,
    pub deduplication_id: Option<String>,
    pub failure_callback: Option<String>,
    pub flow_control: Option<FlowControl>,
    pub labels: Vec<String>,
    /// `Upstash-Retry-Delay` as published (for a failure callback: its
    /// `Upstash-Failure-Callback-Retry-Delay`, else the source message's).
    pub retry_delay_expression: Option<String>,
    /// `Upstash-Redact-Fields`, one entry per field as published. What the API shows is
    /// redacted; this view, like deliveries, keeps the originals.
    pub redact_fields: Vec<String>,
    /// The (scaled) wait before each retry so far: backoff, the `Upstash-Retry-Delay`
    /// expression, or `Retry-After`.
    pub retry_delays: Vec<Duration>,
    /// Status of the last answer; `None` before any, or after a connection error.
    pub last_status: Option<u16>,
    /// Set on failure-callback messages: the message that failed.
    pub failure_callback_for: Option<String>,
    pub dlq_id: Option<String>,
    pub created_at_ms: u64,
    pub not_before_ms: Option<u64>,
}

/// One HTTP call the stand-in made, recorded when it finished.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub message_id: String,
    pub url: String,
    /// The `Upstash-Retried` it carried.
    pub retried: u32,
    /// `None` on a connection error or timeout (see `error`).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The extra copy of a duplicated delivery.
    pub duplicate: bool,
    /// Sent by [`QStash::redeliver`].
    pub redelivery: bool,
    /// A call to a failure callback.
    pub failure_callback: bool,
    /// Deliveries in flight under the message's flow-control key right after this one was
    /// granted its slot, itself included; `None` without flow control, and for duplicate
    /// copies and redeliveries, which take no slot.
    pub flow_in_flight: Option<usize>,
    /// The slot's number among every slot the stand-in granted since the last reset (1, 2,
    /// …; see [`QStash::slots_granted`]), to tell what was granted before and after a change
    /// of limits; `None` when `flow_in_flight` is.
    pub slot: Option<u64>,
}

/// A message QStash gave up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub dlq_id: String,
    pub message_id: String,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
    pub retried: u32,
    pub max_retries: u32,
    /// The last answer; `None` if the last try got no answer.
    pub response_status: Option<u16>,
    pub response_headers: BTreeMap<String, Vec<String>>,
    pub response_body: Vec<u8>,
    pub error: Option<String>,
    /// Answered 489 with `Upstash-NonRetryable-Error: true`.
    pub non_retryable: bool,
    pub failure_callback: Option<String>,
    pub created_at_ms: u64,
    pub not_before_ms: Option<u64>,
    pub caller_ip: String,
    pub labels: Vec<String>,
    pub flow_control: Option<FlowControl>,
    /// As in [`MessageInfo::redact_fields`]: the DLQ API shows redacted values, this raw
    /// view the originals.
    pub redact_fields: Vec<String>,
}

/// One call to a failure callback, with the body it carried.
#[derive(Debug, Clone, Serialize)]
pub struct FailureCallbackCall {
    /// The callback's own message id.
    pub message_id: String,
    pub source_message_id: String,
    pub url: String,
    pub body: Value,
    pub status: Option<u16>,
}

/// Per flow-control key.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStats {
    /// The limits in force: pinned, else the highest among the key's messages (see the
    /// module docs).
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    /// The period of `rate`, unscaled (1000 when no rate is set).
    pub period_ms: u128,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Messages due but held back by the limits or a pause.
    pub waiting: usize,
    /// Set by `POST /v2/flowControl/{key}/pin`.
    pub pinned_parallelism: Option<u32>,
    pub pinned_rate: Option<u32>,
    pub paused: bool,
}

/// Counters since the last reset, as `GET /_fake/stats` answers them.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Messages accepted (duplicates not included), failure callbacks not included.
    pub published: usize,
    pub deduplicated: usize,
    /// Finished HTTP calls, duplicates, redeliveries and callbacks included.
    pub deliveries: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Messages not finished: waiting, in flight or waiting to retry.
    pub pending: usize,
    pub delivered: usize,
    pub failed: usize,
    pub canceled: usize,
    pub dead_letters: usize,
    pub failure_callbacks: usize,
    pub flows: BTreeMap<String, FlowStats>,
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, Default)]
struct Answer {
    status: Option<u16>,
    headers: BTreeMap<String, Vec<String>>,
    body: Bytes,
    error: Option<String>,
}

impl Answer {
    fn failed(error: String) -> Self {
        Answer {
            error: Some(error),
            ..Answer::default()
        }
    }

    fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn is_non_retryable(&self) -> bool {
        self.status == Some(NON_RETRYABLE_STATUS)
            && self
                .headers
                .get("Upstash-Nonretryable-Error")
                .and_then(|v| v.first())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

#[derive(Debug)]
struct Msg {
    id: String,
    url: String,
    method: Method,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_retries: u32,
    retried: u32,
    /// `Upstash-Retry-Delay`: replaces the default backoff.
    retry_delay: Option<RetryDelay>,
    created_at_ms: u64,
    not_before_ms: Option<u64>,
    failure_callback: Option<String>,
    callback_headers: Vec<(HeaderName, HeaderValue)>,
    callback_retries: Option<u32>,
    callback_retry_delay: Option<RetryDelay>,
    flow: Option<FlowControl>,
    timeout: Option<Duration>,
    dedup_id: Option<String>,
    labels: Vec<String>,
    redact_fields: Vec<String>,
    caller_ip: String,
    callback_for: Option<String>,
    state: MessageState,
    retry_delays: Vec<Duration>,
    last: Option<Answer>,
    dlq_id: Option<String>,
    /// Set by a release: the current (or next) delay or backoff is skipped.
    released: bool,
    /// Wakes the message's task from a delay or backoff, to look at `state` and `released`.
    wake: Arc<Notify>,
}

impl Msg {
    fn info(&self) -> MessageInfo {
        MessageInfo {
            id: self.id.clone(),
            url: self.url.clone(),
            method: self.method.to_string(),
            state: self.state,
            retried: self.retried,
            max_retries: self.max_retries,
            body: self.body.to_vec(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        canonical(n.as_str()),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            deduplication_id: self.dedup_id.clone(),
            failure_callback: self.failure_callback.clone(),
            flow_control: self.flow.clone(),
            labels: self.labels.clone(),
            retry_delay_expression: self.retry_delay.as_ref().map(|d| d.source.clone()),
            redact_fields: self.redact_fields.clone(),
            retry_delays: self.retry_delays.clone(),
            last_status: self.last.as_ref().and_then(|a| a.status),
            failure_callback_for: self.callback_for.clone(),
            dlq_id: self.dlq_id.clone(),
            created_at_ms: self.created_at_ms,
            not_before_ms: self.not_before_ms,
        }
    }

    fn attempt(&self) -> Attempt {
        Attempt {
            id: self.id.clone(),
            url: self.url.clone(),
            method: self.method.clone(),
            body: self.body.clone(),
            headers: self.headers.clone(),
            timeout: self.timeout,
            retried: self.retried,
            caller_ip: self.caller_ip.clone(),
            callback_for: self.callback_for.clone(),
        }
    }
}

/// What one delivery needs, copied out of the lock.
#[derive(Debug, Clone)]
struct Attempt {
    id: String,
    url: String,
    method: Method,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Option<Duration>,
    retried: u32,
    caller_ip: String,
    callback_for: Option<String>,
}

/// A flow-control slot handed to a waiting message.
#[derive(Debug, Clone, Copy)]
struct Grant {
    slot: u64,
    /// The key's deliveries in flight with this one.
    in_flight: usize,
}

/// A due message waiting for a slot.
#[derive(Debug)]
struct Waiter {
    id: String,
    grant: oneshot::Sender<Grant>,
}

/// A rate limit: so many starts per period (unscaled).
type Rate = (u32, Duration);

#[derive(Debug, Default)]
struct Flow {
    /// Parallelism values of the key's unfinished messages, with how many carry each.
    parallelisms: BTreeMap<u32, usize>,
    /// `(rate, Reverse(period))` of the unfinished messages: the last entry is the highest
    /// rate, with the shorter period on a tie.
    rates: BTreeMap<(u32, Reverse<Duration>), usize>,
    unfinished: usize,
    /// The highest values among the unfinished messages, kept once none is left.
    parallelism: Option<u32>,
    rate: Option<Rate>,
    pinned_parallelism: Option<u32>,
    pinned_rate: Option<Rate>,
    /// What an unpin leaves in force until the next message under the key arrives.
    carried_parallelism: Option<u32>,
    carried_rate: Option<Rate>,
    paused: bool,
    in_flight: usize,
    max_in_flight: usize,
    /// Due messages, first come first served.
    queue: VecDeque<Waiter>,
    /// When each delivery in the current rate period started.
    starts: VecDeque<Instant>,
    /// The last pin or rate reset: a rate period starts there.
    period_reset: Option<SystemTime>,
    timer_armed: bool,
}

impl Flow {
    fn parallelism(&self) -> Option<u32> {
        self.pinned_parallelism
            .or(self.carried_parallelism)
            .or(self.parallelism)
    }

    fn rate(&self) -> Option<Rate> {
        self.pinned_rate.or(self.carried_rate).or(self.rate)
    }

    /// A message under the key was accepted: its limits count until it is finished.
    fn add(&mut self, spec: &FlowControl) {
        self.unfinished += 1;
        if let Some(p) = spec.parallelism {
            *self.parallelisms.entry(p).or_default() += 1;
        }
        if let Some(r) = spec.rate {
            *self.rates.entry((r, Reverse(spec.period))).or_default() += 1;
        }
        // Upstash's "Unpin": the pinned values stay until a new message brings its own.
        self.carried_parallelism = None;
        self.carried_rate = None;
        self.refresh();
    }

    /// A message under the key is finished: its limits no longer count.
    fn remove(&mut self, spec: &FlowControl) {
        self.unfinished = self.unfinished.saturating_sub(1);
        if let Some(p) = spec.parallelism {
            take_one(&mut self.parallelisms, p);
        }
        if let Some(r) = spec.rate {
            take_one(&mut self.rates, (r, Reverse(spec.period)));
        }
        self.refresh();
    }

    fn refresh(&mut self) {
        if self.unfinished > 0 {
            self.parallelism = self.parallelisms.keys().next_back().copied();
            self.rate = self
                .rates
                .keys()
                .next_back()
                .map(|(rate, Reverse(period))| (*rate, *period));
        }
    }

    /// Starts within the current (scaled) period: the sliding window the rate counts in.
    fn counted_starts(&self, time_scale: f64) -> Vec<Instant> {
        let Some((_, period)) = self.rate() else {
            return Vec::new();
        };
        let period = scale(period.as_secs_f64(), time_scale);
        let now = Instant::now();
        self.starts
            .iter()
            .filter(|t| now.duration_since(**t) < period)
            .copied()
            .collect()
    }

    fn stats(&self) -> FlowStats {
        let rate = self.rate();
        FlowStats {
            parallelism: self.parallelism(),
            rate: rate.map(|(r, _)| r),
            period_ms: rate.map_or(1000, |(_, p)| p.as_millis()),
            in_flight: self.in_flight,
            max_in_flight: self.max_in_flight,
            waiting: self.queue.len(),
            pinned_parallelism: self.pinned_parallelism,
            pinned_rate: self.pinned_rate.map(|(r, _)| r),
            paused: self.paused,
        }
    }
}

fn take_one<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

#[derive(Debug, Default)]
struct St {
    /// Bumped by reset, so that tasks of forgotten messages stop and record nothing.
    generation: u64,
    messages: HashMap<String, Msg>,
    order: Vec<String>,
    dedup: HashMap<String, (String, Instant)>,
    dlq: Vec<DeadLetter>,
    flows: HashMap<String, Flow>,
    deliveries: Vec<Delivery>,
    callbacks: Vec<FailureCallbackCall>,
    published: usize,
    deduplicated: usize,
    in_flight: usize,
    max_in_flight: usize,
    dlq_seq: u64,
    /// Flow-control slots granted, all keys together.
    slots: u64,
}

impl St {
    fn msg(&mut self, generation: u64, id: &str) -> Option<&mut Msg> {
        if self.generation != generation {
            return None;
        }
        self.messages.get_mut(id)
    }
}

#[derive(Debug)]
struct SigningKeys {
    current: String,
    next: String,
}

/// `u64::MAX` in [`Inner::plan_max_retries`]: no plan cap.
const NO_PLAN_CAP: u64 = u64::MAX;

#[derive(Debug)]
struct Inner {
    token: String,
    /// Changed by a rotation. Taken only on its own, never with the state lock held, so
    /// the two locks cannot deadlock.
    keys: Mutex<SigningKeys>,
    delivery_timeout: Duration,
    dedup_window: Duration,
    /// f64 bits; atomics so that no lock is ever taken inside the state lock.
    time_scale: AtomicU64,
    /// The plan's cap on retries, or [`NO_PLAN_CAP`].
    plan_max_retries: AtomicU64,
    unreachable: AtomicBool,
    sign_with_next: AtomicBool,
    duplicate_next: AtomicUsize,
    duplicate_all: AtomicBool,
    state: Mutex<St>,
    /// Told of every change, for the wait helpers.
    changed: Notify,
    http: reqwest::Client,
}

impl Inner {
    fn time_scale(&self) -> f64 {
        f64::from_bits(self.time_scale.load(Ordering::SeqCst))
    }

    fn scaled(&self, secs: f64) -> Duration {
        scale(secs, self.time_scale())
    }

    fn plan_max_retries(&self) -> Option<u32> {
        match self.plan_max_retries.load(Ordering::SeqCst) {
            NO_PLAN_CAP => None,
            cap => Some(u32::try_from(cap).unwrap_or(u32::MAX)),
        }
    }

    fn set_plan_max_retries(&self, cap: Option<u32>) {
        self.plan_max_retries
            .store(cap.map_or(NO_PLAN_CAP, u64::from), Ordering::SeqCst);
    }

    /// The key deliveries are signed with now.
    fn signing_key(&self) -> String {
        let keys = lock(&self.keys);
        if self.sign_with_next.load(Ordering::SeqCst) {
            keys.next.clone()
        } else {
            keys.current.clone()
        }
    }

    /// The next key becomes the current one and a new next key is made, as
    /// `POST /v2/keys/rotate` does; answers the new (current, next).
    fn rotate_keys(&self) -> (String, String) {
        let mut keys = lock(&self.keys);
        keys.current = std::mem::replace(&mut keys.next, format!("sig_{}", random_id(28)));
        (keys.current.clone(), keys.next.clone())
    }

    fn keys(&self) -> (String, String) {
        let keys = lock(&self.keys);
        (keys.current.clone(), keys.next.clone())
    }

    fn changed(&self) {
        self.changed.notify_waiters();
    }

    fn copies(&self) -> usize {
        if self.duplicate_all.load(Ordering::SeqCst)
            || self
                .duplicate_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            2
        } else {
            1
        }
    }
}

fn scale(secs: f64, time_scale: f64) -> Duration {
    Duration::try_from_secs_f64((secs * time_scale).max(0.0)).unwrap_or(Duration::MAX)
}

// ---------------------------------------------------------------------------------------
// The handle

/// The stand-in; clones share it. Lives as long as the runtime.
#[derive(Clone, Debug)]
pub struct QStash {
    inner: Arc<Inner>,
    server: Arc<tokio::sync::Mutex<Option<Server>>>,
    pub addr: SocketAddr,
}

#[derive(Debug)]
struct Server {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl QStash {
    /// Development credentials, real-time delays, on a free loopback port.
    pub async fn start() -> Self {
        Self::start_with(QStashOptions::default()).await
    }

    /// On a free loopback port.
    pub async fn start_with(options: QStashOptions) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), options)
            .await
            .expect("bind the QStash stand-in")
    }

    pub async fn start_on(addr: SocketAddr, options: QStashOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            token: options.token,
            keys: Mutex::new(SigningKeys {
                current: options.current_key,
                next: options.next_key,
            }),
            delivery_timeout: options.delivery_timeout,
            dedup_window: options.dedup_window,
            time_scale: AtomicU64::new(valid_scale(options.time_scale).to_bits()),
            plan_max_retries: AtomicU64::new(
                options.plan_max_retries.map_or(NO_PLAN_CAP, u64::from),
            ),
            unreachable: AtomicBool::new(false),
            sign_with_next: AtomicBool::new(false),
            duplicate_next: AtomicUsize::new(0),
            duplicate_all: AtomicBool::new(false),
            state: Mutex::default(),
            changed: Notify::new(),
            http,
        });
        let server = serve(listener, inner.clone());
        Ok(QStash {
            inner,
            server: Arc::new(tokio::sync::Mutex::new(Some(server))),
            addr,
        })
    }

    /// `QSTASH_URL`: the API is under `<base_url>/v2/`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the control API lives: `<control_url>/config`, `/stats`, `/reset`, ….
    pub fn control_url(&self) -> String {
        format!("http://{}/_fake", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// The current signing key; owned, since a rotation changes it.
    pub fn current_key(&self) -> String {
        self.inner.keys().0
    }

    pub fn next_key(&self) -> String {
        self.inner.keys().1
    }

    /// Key rotation, as `POST /v2/keys/rotate`: the next key becomes the current one and a
    /// new random next key (`sig_` and 28 letters and digits) is made. Answers the new
    /// (current, next); deliveries from now on are signed with the new current key (or the
    /// new next one with [`QStash::set_sign_with_next`]).
    pub fn rotate_keys(&self) -> (String, String) {
        self.inner.rotate_keys()
    }

    /// `QSTASH_URL`, `QSTASH_TOKEN`, `QSTASH_CURRENT_SIGNING_KEY`, `QSTASH_NEXT_SIGNING_KEY`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let (current, next) = self.inner.keys();
        vec![
            ("QSTASH_URL", self.base_url()),
            ("QSTASH_TOKEN", self.inner.token.clone()),
            ("QSTASH_CURRENT_SIGNING_KEY", current),
            ("QSTASH_NEXT_SIGNING_KEY", next),
        ]
    }

    /// The plan's cap on `Upstash-Retries` (see [`QStashOptions::plan_max_retries`]); it
    /// applies to publishes from now on.
    pub fn set_plan_max_retries(&self, cap: Option<u32>) {
        self.inner.set_plan_max_retries(cap);
    }

    pub fn plan_max_retries(&self) -> Option<u32> {
        self.inner.plan_max_retries()
    }

    /// Negative or non-finite scales count as 0 (no waiting at all).
    pub fn set_time_scale(&self, time_scale: f64) {
        self.inner
            .time_scale
            .store(valid_scale(time_scale).to_bits(), Ordering::SeqCst);
    }

    pub fn time_scale(&self) -> f64 {
        self.inner.time_scale()
    }

    /// Every `/v2` route answers 503 while set; messages already accepted are still
    /// delivered, and the control API keeps working.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.inner.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Closes the listening socket (connections are refused, the control API's too), or
    /// reopens it on the same port. Deliveries go on meanwhile.
    pub async fn set_refusing(&self, refusing: bool) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        match (refusing, server.take()) {
            (true, Some(running)) => {
                let _ = running.stop.send(());
                // The listener is dropped as soon as the signal arrives; waiting for the
                // connections to wind down keeps a quick set_refusing(false) from racing it.
                let _ = running.done.await;
            }
            (false, None) => {
                let listener = tokio::net::TcpListener::bind(self.addr).await?;
                *server = Some(serve(listener, self.inner.clone()));
            }
            (_, running) => *server = running,
        }
        Ok(())
    }

    /// Sign deliveries with the next key instead of the current one (key rotation).
    pub fn set_sign_with_next(&self, next: bool) {
        self.inner.sign_with_next.store(next, Ordering::SeqCst);
    }

    /// The next `n` delivery tries go out twice, at the same time.
    pub fn duplicate_next(&self, n: usize) {
        self.inner.duplicate_next.store(n, Ordering::SeqCst);
    }

    /// Every delivery try goes out twice, at the same time.
    pub fn set_duplicate_all(&self, duplicate: bool) {
        self.inner.duplicate_all.store(duplicate, Ordering::SeqCst);
    }

    /// Delivers message `id` once more, now, whatever its state, without changing it;
    /// `None` if there is no such message. Call it twice concurrently for a concurrent
    /// duplicate.
    pub async fn redeliver(&self, id: &str) -> Option<Delivery> {
        redeliver(&self.inner, id).await
    }

    /// Messages waiting on a delay or a retry backoff are tried now ("Run now" / "Retry
    /// now" in Upstash's console). Messages held by flow control stay held.
    pub fn release_waiting(&self) {
        release_waiting(&self.inner);
    }

    /// Cancels a message that is not finished, as `DELETE /v2/messages/{id}` does.
    pub fn cancel(&self, id: &str) -> bool {
        let mut st = lock(&self.inner.state);
        let canceled = cancel_in(&self.inner, &mut st, id);
        drop(st);
        self.inner.changed();
        canceled
    }

    /// Messages canceled since the last reset (one by one or in bulk).
    pub fn canceled(&self) -> usize {
        lock(&self.inner.state)
            .messages
            .values()
            .filter(|m| m.state == MessageState::Canceled)
            .count()
    }

    /// Forgets every message (those not finished are canceled), dead letter, delivery,
    /// flow-control key (pins and pauses included) and counter. The configuration stays
    /// (signing keys and the plan cap too); calls in flight stay counted as in flight.
    pub fn reset(&self) {
        reset(&self.inner);
    }

    pub fn stats(&self) -> Stats {
        stats(&self.inner)
    }

    /// Messages accepted since the last reset, duplicates and failure callbacks excluded.
    pub fn published(&self) -> usize {
        lock(&self.inner.state).published
    }

    /// Publishes answered as duplicates.
    pub fn deduplicated(&self) -> usize {
        lock(&self.inner.state).deduplicated
    }

    /// Finished HTTP calls to destinations and callbacks.
    pub fn deliveries(&self) -> usize {
        lock(&self.inner.state).deliveries.len()
    }

    /// Finished HTTP calls to URLs containing `url_part`.
    pub fn deliveries_to(&self, url_part: &str) -> usize {
        lock(&self.inner.state)
            .deliveries
            .iter()
            .filter(|d| d.url.contains(url_part))
            .count()
    }

    /// Every finished HTTP call, in order of finishing.
    pub fn delivery_log(&self) -> Vec<Delivery> {
        lock(&self.inner.state).deliveries.clone()
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).in_flight
    }

    /// The most HTTP calls in flight at once, all destinations together.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.inner.state).max_in_flight
    }

    /// Flow-control slots granted since the last reset, all keys together: the last
    /// [`Delivery::slot`] handed out.
    pub fn slots_granted(&self) -> u64 {
        lock(&self.inner.state).slots
    }

    /// A flow-control key's limits and counters; `None` for a key never published to nor
    /// pinned.
    pub fn flow(&self, key: &str) -> Option<FlowStats> {
        lock(&self.inner.state).flows.get(key).map(Flow::stats)
    }

    /// The most deliveries in flight at once under a flow-control key (duplicates, which
    /// bypass flow control, not included).
    pub fn max_in_flight_for(&self, flow_key: &str) -> usize {
        lock(&self.inner.state)
            .flows
            .get(flow_key)
            .map_or(0, |f| f.max_in_flight)
    }

    pub fn message(&self, id: &str) -> Option<MessageInfo> {
        lock(&self.inner.state).messages.get(id).map(Msg::info)
    }

    /// Every message, in order of publishing (failure callbacks included).
    pub fn messages(&self) -> Vec<MessageInfo> {
        let st = lock(&self.inner.state);
        st.order
            .iter()
            .filter_map(|id| st.messages.get(id).map(Msg::info))
            .collect()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.inner.state).dlq.clone()
    }

    pub fn failure_callbacks(&self) -> Vec<FailureCallbackCall> {
        lock(&self.inner.state).callbacks.clone()
    }

    /// Resolves once `done(self)` holds, re-checking on every change, without polling.
    /// Wrap it in a timeout: it waits for ever otherwise.
    pub async fn wait_until(&self, mut done: impl FnMut(&QStash) -> bool) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// No message waiting, in flight or waiting to retry, and no HTTP call in flight.
    /// Messages delayed far ahead keep it from being idle.
    pub async fn wait_idle(&self) {
        self.wait_until(|q| {
            let st = lock(&q.inner.state);
            st.in_flight == 0 && st.messages.values().all(|m| m.state.is_finished())
        })
        .await
    }

    pub async fn wait_for_deliveries(&self, n: usize) {
        self.wait_until(|q| q.deliveries() >= n).await
    }

    pub async fn wait_for_deliveries_to(&self, url_part: &str, n: usize) {
        self.wait_until(|q| q.deliveries_to(url_part) >= n).await
    }

    pub async fn wait_for_published(&self, n: usize) {
        self.wait_until(|q| q.published() >= n).await
    }

    pub async fn wait_for_dead_letters(&self, n: usize) {
        self.wait_until(|q| lock(&q.inner.state).dlq.len() >= n)
            .await
    }

    pub async fn wait_for_failure_callbacks(&self, n: usize) {
        self.wait_until(|q| lock(&q.inner.state).callbacks.len() >= n)
            .await
    }

    pub async fn wait_for_state(&self, id: &str, state: MessageState) {
        self.wait_until(|q| {
            lock(&q.inner.state)
                .messages
                .get(id)
                .is_some_and(|m| m.state == state)
        })
        .await
    }
}

fn valid_scale(time_scale: f64) -> f64 {
    if time_scale.is_finite() && time_scale > 0.0 {
        time_scale
    } else {
        0.0
    }
}

fn serve(listener: tokio::net::TcpListener, inner: Arc<Inner>) -> Server {
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(inner).into_make_service_with_connect_info::<SocketAddr>();
    let done = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Server { stop, done }
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v2/publish/{*destination}", post(publish))
        .route("/v2/batch", post(batch))
        .route("/v2/messages", delete(messages_cancel))
        .route("/v2/messages/{id}", get(message_get).delete(message_cancel))
        .route("/v2/dlq", get(dlq_list).delete(dlq_delete_many))
        .route("/v2/dlq/{dlq_id}", get(dlq_get).delete(dlq_delete))
        .route("/v2/flowControl", get(flow_list))
        .route("/v2/flowControl/", get(flow_list))
        .route("/v2/flowControl/{key}", get(flow_get))
        .route("/v2/flowControl/{key}/{action}", post(flow_action))
        .route("/v2/keys", get(keys))
        .route("/v2/keys/rotate", post(keys_rotate))
        .route("/_fake/config", get(config_view).post(config_update))
        .route("/_fake/stats", get(stats_view))
        .route("/_fake/reset", post(reset_route))
        .route("/_fake/release", post(release_route))
        .route("/_fake/redeliver/{id}", post(redeliver_route))
        .fallback(not_found)
        .with_state(inner)
}

// ---------------------------------------------------------------------------------------
// Publishing

/// A QStash error answer: `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

fn available(inner: &Inner) -> Result<(), ApiError> {
    if inner.unreachable.load(Ordering::SeqCst) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "QStash is unavailable (stand-in set unreachable)".into(),
        });
    }
    Ok(())
}

/// Also checks availability: every `/v2` route does both, in this order.
fn authorised(inner: &Inner, headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    available(inner)?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "qstash_token")
            .map(|(_, v)| v.into_owned())
    });
    if bearer == Some(inner.token.as_str()) || query.as_deref() == Some(inner.token.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Unauthorized: send 'Authorization: Bearer <QSTASH_TOKEN>'".into(),
        })
    }
}

/// The destination is the rest of the path, and the query minus `qstash_token`.
fn destination_of(uri: &Uri) -> Result<String, ApiError> {
    let rest = uri
        .path()
        .strip_prefix("/v2/publish/")
        .unwrap_or_default()
        .to_owned();
    let encoded = rest
        .get(..6)
        .is_some_and(|start| start.eq_ignore_ascii_case("http%3"));
    let rest = if encoded {
        percent_decode(&rest)?
    } else {
        rest
    };
    let query: Vec<&str> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("qstash_token="))
                .collect()
        })
        .unwrap_or_default();
    let destination = if query.is_empty() {
        rest
    } else {
        format!("{rest}?{}", query.join("&"))
    };
    check_url(&destination, "destination")?;
    Ok(destination)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad(format!("invalid percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad(format!("{s:?} does not decode to UTF-8")))
}

fn check_url(value: &str, what: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(value).map_err(|e| {
        ApiError::bad(format!(
            "invalid {what} {value:?}: {e} (the stand-in takes full http(s) URLs only, no URL groups)"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ApiError::bad(format!(
            "invalid {what} {value:?}: expected an http:// or https:// URL"
        )));
    }
    Ok(())
}

/// A publish request, checked.
#[derive(Debug)]
struct NewMessage {
    url: String,
    method: Method,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_retries: u32,
    retry_delay: Option<RetryDelay>,
    /// Unscaled seconds to wait before the first try.
    delay_secs: f64,
    dedup_key: Option<String>,
    failure_callback: Option<String>,
    callback_headers: Vec<(HeaderName, HeaderValue)>,
    callback_retries: Option<u32>,
    callback_retry_delay: Option<RetryDelay>,
    flow: Option<FlowControl>,
    timeout: Option<Duration>,
    labels: Vec<String>,
    redact_fields: Vec<String>,
}

impl NewMessage {
    /// `plan_cap`: the plan's most retries, if any ([`QStashOptions::plan_max_retries`]).
    fn parse(
        url: String,
        headers: &HeaderMap,
        body: Bytes,
        plan_cap: Option<u32>,
    ) -> Result<Self, ApiError> {
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|v| Some(v.trim().to_owned())).map_err(|_| {
                    ApiError::bad(format!("header {} is not valid text", canonical(name)))
                }),
            }
        };
        for name in headers.keys() {
            let name = name.as_str();
            if UNSUPPORTED_HEADERS.contains(&name) || name.starts_with("upstash-callback-") {
                return Err(ApiError::bad(format!(
                    "header {} is not supported by the QStash stand-in",
                    canonical(name)
                )));
            }
        }

        let method = match text("upstash-method")? {
            None => Method::POST,
            Some(m) => match m.to_ascii_uppercase().as_str() {
                "GET" => Method::GET,
                "POST" => Method::POST,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                "DELETE" => Method::DELETE,
                _ => {
                    return Err(ApiError::bad(format!(
                        "invalid Upstash-Method {m:?}: expected GET, POST, PUT, PATCH or DELETE"
                    )))
                }
            },
        };
        let retries = |name: &str| -> Result<Option<u32>, ApiError> {
            let Some(r) = text(name)? else {
                return Ok(None);
            };
            let n = r.parse::<u32>().ok();
            // The plan's cap, with the wording Upstash answers it with.
            if let (Some(n), Some(cap)) = (n, plan_cap) {
                if n > cap {
                    return Err(ApiError::bad(format!(
                        "invalid {} {n}: your plan allows at most {cap} retries",
                        canonical(name)
                    )));
                }
            }
            n.filter(|n| *n <= RETRIES_LIMIT).map(Some).ok_or_else(|| {
                ApiError::bad(format!(
                    "invalid {} {r:?}: expected an integer from 0 to {RETRIES_LIMIT}",
                    canonical(name)
                ))
            })
        };
        let default_retries = plan_cap.map_or(DEFAULT_RETRIES, |cap| DEFAULT_RETRIES.min(cap));
        let max_retries = retries("upstash-retries")?.unwrap_or(default_retries);
        let callback_retries = retries("upstash-failure-callback-retries")?;
        let retry_delay = |name: &str| -> Result<Option<RetryDelay>, ApiError> {
            text(name)?
                .map(|e| {
                    RetryDelay::parse(&e).map_err(|why| {
                        ApiError::bad(format!(
                            "invalid {} {e:?}: {why} (expected an expression in milliseconds \
                             of `retried`, numbers, + - * / and pow, exp, sqrt, abs, floor, \
                             ceil, round, min, max; e.g. pow(2, retried) * 1000)",
                            canonical(name)
                        ))
                    })
                })
                .transpose()
        };
        let retry_delay_expr = retry_delay("upstash-retry-delay")?;
        let callback_retry_delay = retry_delay("upstash-failure-callback-retry-delay")?;

        let delay_secs = match (text("upstash-not-before")?, text("upstash-delay")?) {
            (Some(nb), _) => {
                let nb: u64 = nb.parse().map_err(|_| {
                    ApiError::bad(format!(
                        "invalid Upstash-Not-Before {nb:?}: expected unix seconds"
                    ))
                })?;
                nb.saturating_sub(unix_secs()) as f64
            }
            (None, Some(delay)) => parse_upstash_duration(&delay)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "invalid Upstash-Delay {delay:?}: expected e.g. 10s, 2m, 1h, 1d10h30m"
                    ))
                })?
                .as_secs_f64(),
            (None, None) => 0.0,
        };
        let timeout = text("upstash-timeout")?
            .map(|t| {
                parse_upstash_duration(&t)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "invalid Upstash-Timeout {t:?}: expected e.g. 30s, 5m, 1h"
                        ))
                    })
            })
            .transpose()?;

        let failure_callback = text("upstash-failure-callback")?;
        if let Some(callback) = &failure_callback {
            check_url(callback, "Upstash-Failure-Callback")?;
        }
        let flow = match (
            text("upstash-flow-control-key")?,
            text("upstash-flow-control-value")?,
        ) {
            (None, None) => None,
            (Some(key), Some(value)) if !key.is_empty() => Some(parse_flow(key, &value)?),
            (Some(_), Some(_)) => return Err(ApiError::bad("Upstash-Flow-Control-Key is empty")),
            (Some(_), None) => {
                return Err(ApiError::bad(
                    "Upstash-Flow-Control-Key needs Upstash-Flow-Control-Value (parallelism=N, rate=R, period=P)",
                ))
            }
            (None, Some(_)) => {
                return Err(ApiError::bad(
                    "Upstash-Flow-Control-Value needs Upstash-Flow-Control-Key",
                ))
            }
        };
        let labels = text("upstash-label")?
            .map(|l| {
                l.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut redact_fields = Vec::new();
        if let Some(value) = text("upstash-redact-fields")? {
            for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                if redact_field(field).is_none() {
                    return Err(ApiError::bad(format!(
                        "invalid Upstash-Redact-Fields {value:?}: unknown field {field:?} \
                         (expected body, header, headers, header[Name] or headers[Name])"
                    )));
                }
                redact_fields.push(field.to_owned());
            }
        }

        let forwarded = |prefix: &str| -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
            let mut out = Vec::new();
            for (name, value) in headers {
                let Some(stripped) = name.as_str().strip_prefix(prefix) else {
                    continue;
                };
                if UNFORWARDABLE.contains(&stripped) {
                    continue;
                }
                let stripped = HeaderName::from_bytes(stripped.as_bytes()).map_err(|_| {
                    ApiError::bad(format!(
                        "header {} has no name after the prefix",
                        canonical(name.as_str())
                    ))
                })?;
                out.push((stripped, value.clone()));
            }
            Ok(out)
        };
        let mut delivered_headers = Vec::new();
        if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
            delivered_headers.push((header::CONTENT_TYPE, content_type.clone()));
        }
        delivered_headers.extend(forwarded("upstash-forward-")?);
        let mut callback_headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        callback_headers.extend(forwarded("upstash-failure-callback-forward-")?);

        let dedup_key = match text("upstash-deduplication-id")? {
            Some(id) if id.is_empty() => {
                return Err(ApiError::bad("Upstash-Deduplication-Id is empty"))
            }
            Some(id) => Some(format!("id:{id}")),
            None => match text("upstash-content-based-deduplication")?.as_deref() {
                None | Some("false") => None,
                Some("true") => Some(format!(
                    "content:{}",
                    content_hash(&url, &method, &body, &delivered_headers)
                )),
                Some(other) => {
                    return Err(ApiError::bad(format!(
                    "invalid Upstash-Content-Based-Deduplication {other:?}: expected true or false"
                )))
                }
            },
        };

        Ok(NewMessage {
            url,
            method,
            body,
            headers: delivered_headers,
            max_retries,
            retry_delay: retry_delay_expr,
            delay_secs,
            dedup_key,
            failure_callback,
            callback_headers,
            callback_retries,
            callback_retry_delay,
            flow,
            timeout,
            labels,
            redact_fields,
        })
    }
}

fn content_hash(
    url: &str,
    method: &Method,
    body: &[u8],
    headers: &[(HeaderName, HeaderValue)],
) -> String {
    let mut sorted: Vec<_> = headers.iter().collect();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1.as_bytes()).cmp(&(b.0.as_str(), b.1.as_bytes())));
    let mut hash = Sha256::new();
    for part in [url.as_bytes(), method.as_str().as_bytes(), body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    for (name, value) in sorted {
        hash.update(name.as_str());
        hash.update(b":");
        hash.update(value.as_bytes());
        hash.update(b"\n");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// `parallelism=N, rate=R, period=P` in any order and case; at least one of the first two.
fn parse_flow(key: String, value: &str) -> Result<FlowControl, ApiError> {
    let mut flow = FlowControl {
        key,
        parallelism: None,
        rate: None,
        period: Duration::from_secs(1),
    };
    let bad = |why: String| {
        ApiError::bad(format!(
            "invalid Upstash-Flow-Control-Value {value:?}: {why} (expected parallelism=N, rate=R, period=P)"
        ))
    };
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} has no '='")))?;
        let (name, v) = (name.trim().to_ascii_lowercase(), v.trim());
        let positive = || {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("{name} must be a positive integer, not {v:?}")))
        };
        match name.as_str() {
            "parallelism" => flow.parallelism = Some(positive()?),
            "rate" => flow.rate = Some(positive()?),
            "period" => {
                flow.period = v
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
                    .or_else(|| parse_upstash_duration(v))
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        bad(format!("period {v:?} is not a duration such as 1s or 1m"))
                    })?
            }
            _ => return Err(bad(format!("unknown setting {name:?}"))),
        }
    }
    if flow.parallelism.is_none() && flow.rate.is_none() {
        return Err(bad("neither parallelism nor rate is given".into()));
    }
    Ok(flow)
}

/// `<value><unit>` repeated, units `d`, `h`, `m`, `s` (`1d10h30m`, `50s`).
fn parse_upstash_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest.as_bytes().get(digits)? {
            b'd' => 86_400,
            b'h' => 3_600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    Some(Duration::from_secs(total))
}

/// Go's `time.ParseDuration`: `1.5h`, `6m5s`, `300ms`.
fn parse_go_duration(s: &str) -> Option<f64> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let n: f64 = rest[..number].parse().ok()?;
        rest = &rest[number..];
        let (unit, len) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .iter()
        .find(|(u, _)| rest.starts_with(u))
        .map(|(u, f)| (*f, u.len()))?;
        total += n * unit;
        rest = &rest[len..];
    }
    Some(total)
}

/// Seconds to wait asked by an answer: `Retry-After` or the rate-limit resets, as a number
/// of seconds, a Go duration or an HTTP date.
fn retry_after_secs(headers: &BTreeMap<String, Vec<String>>) -> Option<f64> {
    [
        "Retry-After",
        "X-Ratelimit-Reset",
        "X-Ratelimit-Reset-Requests",
        "X-Ratelimit-Reset-Tokens",
    ]
    .iter()
    .find_map(|name| {
        let value = headers.get(*name)?.first()?.trim();
        if let Ok(secs) = value.parse::<f64>() {
            return (secs.is_finite() && secs >= 0.0).then_some(secs);
        }
        if let Some(secs) = parse_go_duration(value) {
            return Some(secs);
        }
        let at = httpdate::parse_http_date(value).ok()?;
        Some(
            at.duration_since(SystemTime::now())
                .map_or(0.0, |d| d.as_secs_f64()),
        )
    })
}

/// QStash's default backoff before retry number `n` (1, 2, …), in seconds.
pub fn backoff_secs(n: u32) -> f64 {
    (2.5 * f64::from(n)).exp().min(MAX_RETRY_DELAY_SECS)
}

// ---------------------------------------------------------------------------------------
// Retry-delay expressions

/// The value of an `Upstash-Retry-Delay` expression, in milliseconds as QStash reads it,
/// with `retried` retries made so far (0 before the first retry); `Err` says why it does
/// not parse. The stand-in waits `max(0, value)` ms, at most a day, scaled.
pub fn retry_delay_ms(expression: &str, retried: u32) -> Result<f64, String> {
    RetryDelay::parse(expression).map(|d| d.expr.eval(f64::from(retried)))
}

/// A parsed `Upstash-Retry-Delay` (or `Upstash-Failure-Callback-Retry-Delay`).
///
/// The grammar is the documented one (openapi.yaml, `Upstash-Retry-Delay`): decimal
/// numbers, the variable `retried`, `+ - * /`, unary minus, parentheses and the functions
/// `pow(x, y)`, `exp(x)`, `sqrt(x)`, `abs(x)`, `floor(x)`, `ceil(x)`, `round(x)`,
/// `min(x, y)`, `max(x, y)`. Written here rather than taken from a crate: the grammar is
/// tiny, and the crates that fit are either unmaintained or AGPL (evalexpr ≥ 12).
#[derive(Debug, Clone)]
struct RetryDelay {
    source: String,
    expr: Expr,
}

impl RetryDelay {
    fn parse(source: &str) -> Result<Self, String> {
        let mut parser = ExprParser {
            src: source,
            pos: 0,
        };
        if parser.peek().is_none() {
            return Err("the expression is empty".into());
        }
        let expr = parser.sum()?;
        if let Some(c) = parser.peek_char() {
            return Err(format!("unexpected {c:?} at column {}", parser.pos + 1));
        }
        Ok(RetryDelay {
            source: source.to_owned(),
            expr,
        })
    }

    /// Seconds to wait before a retry when `retried` retries were made before it:
    /// negative or NaN values count as 0, and the wait is capped at one day like the
    /// backoff (unscaled).
    fn secs(&self, retried: u32) -> f64 {
        let ms = self.expr.eval(f64::from(retried));
        if ms.is_nan() || ms <= 0.0 {
            0.0
        } else {
            (ms / 1000.0).min(MAX_RETRY_DELAY_SECS)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Pow,
    Exp,
    Sqrt,
    Abs,
    Floor,
    Ceil,
    Round,
    Min,
    Max,
}

impl Func {
    fn named(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "pow" => (Func::Pow, 2),
            "exp" => (Func::Exp, 1),
            "sqrt" => (Func::Sqrt, 1),
            "abs" => (Func::Abs, 1),
            "floor" => (Func::Floor, 1),
            "ceil" => (Func::Ceil, 1),
            "round" => (Func::Round, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Num(f64),
    Retried,
    Neg(Box<Expr>),
    /// `+ - * /` and its operands.
    Bin(u8, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

impl Expr {
    fn eval(&self, retried: f64) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::Retried => retried,
            Expr::Neg(e) => -e.eval(retried),
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(retried), b.eval(retried));
                match op {
                    b'+' => a + b,
                    b'-' => a - b,
                    b'*' => a * b,
                    _ => a / b,
                }
            }
            Expr::Call(func, args) => {
                let arg = |i: usize| args.get(i).map_or(f64::NAN, |a| a.eval(retried));
                match func {
                    Func::Pow => arg(0).powf(arg(1)),
                    Func::Exp => arg(0).exp(),
                    Func::Sqrt => arg(0).sqrt(),
                    Func::Abs => arg(0).abs(),
                    Func::Floor => arg(0).floor(),
                    Func::Ceil => arg(0).ceil(),
                    // Half away from zero, as Go's math.Round.
                    Func::Round => arg(0).round(),
                    Func::Min => arg(0).min(arg(1)),
                    Func::Max => arg(0).max(arg(1)),
                }
            }
        }
    }
}

/// Recursive descent: sum := product (('+' | '-') product)*; product := unary (('*' | '/')
/// unary)*; unary := '-' unary | primary; primary := number | `retried` | name '(' sum
/// (',' sum)* ')' | '(' sum ')'.
struct ExprParser<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl ExprParser<'_> {
    /// The next byte after blanks.
    fn peek(&mut self) -> Option<u8> {
        while self
            .src
            .as_bytes()
            .get(self.pos)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.pos += 1;
        }
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_char(&mut self) -> Option<char> {
        self.peek()?;
        self.src[self.pos..].chars().next()
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(format!(
                "expected {:?} at column {}, found {:?}",
                want as char,
                self.pos + 1,
                self.peek_char().unwrap_or(' ')
            )),
            None => Err(format!("expected {:?}, found the end", want as char)),
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            left = Expr::Bin(op, Box::new(left), Box::new(self.product()?));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.pos += 1;
            left = Expr::Bin(op, Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    /// Length of the run of bytes from `pos` that pass `ok`.
    fn run(&self, ok: fn(&u8) -> bool) -> usize {
        self.src.as_bytes()[self.pos..]
            .iter()
            .take_while(|b| ok(b))
            .count()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            None => Err("the expression ends too early".into()),
            Some(b'(') => {
                self.pos += 1;
                let inner = self.sum()?;
                self.expect(b')')?;
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                let len = self.run(|b| b.is_ascii_digit() || *b == b'.');
                let text = &self.src[start..start + len];
                self.pos += len;
                text.parse()
                    .map(Expr::Num)
                    .map_err(|_| format!("{text:?} at column {} is not a number", start + 1))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                let len = self.run(|b| b.is_ascii_alphanumeric() || *b == b'_');
                let name = &self.src[start..start + len];
                self.pos += len;
                let called = self.peek() == Some(b'(');
                if name == "retried" && !called {
                    return Ok(Expr::Retried);
                }
                let Some((func, arity)) = Func::named(name).filter(|_| called) else {
                    return Err(if called {
                        format!("unknown function {name:?}")
                    } else {
                        format!("unknown name {name:?} (the only variable is retried)")
                    });
                };
                self.pos += 1;
                let mut args = vec![self.sum()?];
                while self.peek() == Some(b',') {
                    self.pos += 1;
                    args.push(self.sum()?);
                }
                self.expect(b')')?;
                if args.len() != arity {
                    return Err(format!(
                        "{name} takes {arity} argument{}, not {}",
                        if arity == 1 { "" } else { "s" },
                        args.len()
                    ));
                }
                Ok(Expr::Call(func, args))
            }
            Some(_) => Err(format!(
                "unexpected {:?} at column {}",
                self.peek_char().unwrap_or(' '),
                self.pos + 1
            )),
        }
    }
}

/// Accepts (or deduplicates) a message and starts delivering it.
fn enqueue(inner: &Arc<Inner>, new: NewMessage, caller_ip: String) -> (String, bool) {
    let mut st = lock(&inner.state);
    let now = Instant::now();
    let window = inner.dedup_window;
    st.dedup
        .retain(|_, (_, at)| now.duration_since(*at) < window);
    if let Some(key) = &new.dedup_key {
        if let Some((id, _)) = st.dedup.get(key) {
            let id = id.clone();
            st.deduplicated += 1;
            drop(st);
            inner.changed();
            return (id, true);
        }
    }
    let id = format!("msg_{}", random_id(40));
    if let Some(key) = &new.dedup_key {
        st.dedup.insert(key.clone(), (id.clone(), now));
    }
    if let Some(spec) = &new.flow {
        // Its limits count, with the other unfinished messages' ones, until it is finished.
        st.flows.entry(spec.key.clone()).or_default().add(spec);
        pump(inner, &mut st, &spec.key);
    }
    let created_at_ms = unix_ms();
    let msg = Msg {
        id: id.clone(),
        url: new.url,
        method: new.method,
        body: new.body,
        headers: new.headers,
        max_retries: new.max_retries,
        retried: 0,
        retry_delay: new.retry_delay,
        created_at_ms,
        not_before_ms: (new.delay_secs > 0.0)
            .then(|| created_at_ms + (new.delay_secs * 1000.0) as u64),
        failure_callback: new.failure_callback,
        callback_headers: new.callback_headers,
        callback_retries: new.callback_retries,
        callback_retry_delay: new.callback_retry_delay,
        flow: new.flow,
        timeout: new.timeout,
        dedup_id: new
            .dedup_key
            .as_deref()
            .and_then(|k| k.strip_prefix("id:"))
            .map(str::to_owned),
        labels: new.labels,
        redact_fields: new.redact_fields,
        caller_ip,
        callback_for: None,
        state: MessageState::Created,
        retry_delays: Vec::new(),
        last: None,
        dlq_id: None,
        released: false,
        wake: Arc::new(Notify::new()),
    };
    st.published += 1;
    let wait = inner.scaled(new.delay_secs);
    start_message(inner, &mut st, msg, wait);
    drop(st);
    inner.changed();
    (id, false)
}

fn start_message(inner: &Arc<Inner>, st: &mut St, msg: Msg, wait: Duration) {
    let id = msg.id.clone();
    st.order.push(id.clone());
    st.messages.insert(id.clone(), msg);
    tokio::spawn(run_message(inner.clone(), st.generation, id, wait));
}

fn published_response(id: String, deduplicated: bool) -> Response {
    let status = if deduplicated {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({ "messageId": id, "deduplicated": deduplicated })),
    )
        .into_response()
}

async fn publish(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let destination = destination_of(&uri)?;
    let new = NewMessage::parse(destination, &headers, body, inner.plan_max_retries())?;
    let (id, deduplicated) = enqueue(&inner, new, peer.ip().to_string());
    Ok(published_response(id, deduplicated))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    destination: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    queue: Option<String>,
}

async fn batch(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let items: Vec<BatchItem> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "invalid batch body: {e} (expected a JSON array of {{destination, body, headers}})"
        ))
    })?;
    // All or nothing: every item is checked before any is accepted.
    let plan_cap = inner.plan_max_retries();
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |e: ApiError| ApiError::bad(format!("batch[{i}]: {}", e.message));
        if item.queue.is_some() {
            return Err(at(ApiError::bad(
                "queues are not supported by the QStash stand-in",
            )));
        }
        check_url(&item.destination, "destination").map_err(at)?;
        let mut map = HeaderMap::new();
        for (name, value) in item.headers.unwrap_or_default() {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| at(ApiError::bad(format!("invalid header name {name:?}"))))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| at(ApiError::bad(format!("invalid value for header {name}"))))?;
            map.append(name, value);
        }
        let body = Bytes::from(item.body.unwrap_or_default());
        parsed.push(NewMessage::parse(item.destination, &map, body, plan_cap).map_err(at)?);
    }
    let answers: Vec<Value> = parsed
        .into_iter()
        .map(|new| {
            let (id, deduplicated) = enqueue(&inner, new, peer.ip().to_string());
            json!({ "messageId": id, "deduplicated": deduplicated })
        })
        .collect();
    Ok(Json(answers).into_response())
}

// ---------------------------------------------------------------------------------------
// Delivering

enum Next {
    Done,
    Retry(Duration),
}

/// A century: longer waits (a huge time scale) are as good as for ever.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

async fn run_message(inner: Arc<Inner>, generation: u64, id: String, mut wait: Duration) {
    loop {
        let (wake, flow_key) = {
            let mut st = lock(&inner.state);
            let Some(m) = st.msg(generation, &id) else {
                return;
            };
            if m.state.is_finished() {
                return;
            }
            (m.wake.clone(), m.flow.as_ref().map(|f| f.key.clone()))
        };
        if !wait.is_zero() {
            let deadline = tokio::time::Instant::now() + wait.min(FOREVER);
            loop {
                {
                    let mut st = lock(&inner.state);
                    let Some(m) = st.msg(generation, &id) else {
                        return;
                    };
                    if m.state.is_finished() {
                        return;
                    }
                    if std::mem::take(&mut m.released) {
                        break;
                    }
                }
                // A wake with neither flag set is a stale one: sleep on.
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = wake.notified() => {}
                }
            }
        }
        // A message canceled while it waits here leaves the queue, which ends the wait.
        let (permit, grant) = match flow_key {
            Some(key) => match acquire(&inner, generation, key, &id).await {
                Some((permit, grant)) => (Some(permit), Some(grant)),
                None => return,
            },
            None => (None, None),
        };
        let attempt = {
            let mut st = lock(&inner.state);
            let Some(m) = st.msg(generation, &id) else {
                return;
            };
            if m.state.is_finished() {
                return;
            }
            m.state = MessageState::Active;
            m.released = false;
            m.attempt()
        };
        inner.changed();
        let answer = if inner.copies() > 1 {
            let (first, second) = tokio::join!(
                deliver(&inner, generation, &attempt, CallKind::First(grant)),
                deliver(&inner, generation, &attempt, CallKind::Duplicate),
            );
            if first.is_success() || !second.is_success() {
                first
            } else {
                second
            }
        } else {
            deliver(&inner, generation, &attempt, CallKind::First(grant)).await
        };
        drop(permit);
        match finish_attempt(&inner, generation, &id, answer) {
            Next::Done => return,
            Next::Retry(next) => wait = next,
        }
    }
}

fn finish_attempt(inner: &Arc<Inner>, generation: u64, id: &str, answer: Answer) -> Next {
    let mut st = lock(&inner.state);
    let Some(m) = st.msg(generation, id) else {
        return Next::Done;
    };
    if m.state == MessageState::Canceled {
        m.last = Some(answer);
        drop(st);
        inner.changed();
        return Next::Done;
    }
    let next = if answer.is_success() {
        m.last = Some(answer);
        finish_msg(inner, &mut st, id, MessageState::Delivered);
        Next::Done
    } else if !answer.is_non_retryable() && m.retried < m.max_retries {
        let retried_before = m.retried;
        m.retried += 1;
        // A worker's Retry-After speaks of real time (a lease running out, a provider's
        // own limit): it is honoured as said. QStash's own waits, the backoff or the
        // publisher's Upstash-Retry-Delay (evaluated with the retries made before this
        // one), are scaled.
        let delay = match retry_after_secs(&answer.headers).filter(|s| *s <= MAX_RETRY_DELAY_SECS) {
            Some(secs) => scale(secs, 1.0),
            None => match &m.retry_delay {
                Some(expression) => inner.scaled(expression.secs(retried_before)),
                None => inner.scaled(backoff_secs(m.retried)),
            },
        };
        m.retry_delays.push(delay);
        m.state = MessageState::Retry;
        m.last = Some(answer);
        Next::Retry(delay)
    } else {
        m.last = Some(answer);
        dead_letter(inner, &mut st, id);
        Next::Done
    };
    drop(st);
    inner.changed();
    next
}

/// Moves a message to the DLQ and starts its failure callback, if any.
fn dead_letter(inner: &Arc<Inner>, st: &mut St, id: &str) {
    st.dlq_seq += 1;
    let dlq_id = format!("{}-{}", unix_ms(), st.dlq_seq);
    finish_msg(inner, st, id, MessageState::Failed);
    let Some(m) = st.messages.get_mut(id) else {
        return;
    };
    m.dlq_id = Some(dlq_id.clone());
    let last = m.last.clone().unwrap_or_default();
    let letter = DeadLetter {
        dlq_id: dlq_id.clone(),
        message_id: m.id.clone(),
        url: m.url.clone(),
        method: m.method.to_string(),
        headers: header_lists(m.headers.iter().map(|(n, v)| (n, v))),
        body: m.body.to_vec(),
        retried: m.retried,
        max_retries: m.max_retries,
        response_status: last.status,
        response_headers: last.headers.clone(),
        response_body: last.body.to_vec(),
        error: last.error.clone(),
        non_retryable: last.is_non_retryable(),
        failure_callback: m.failure_callback.clone(),
        created_at_ms: m.created_at_ms,
        not_before_ms: m.not_before_ms,
        caller_ip: m.caller_ip.clone(),
        labels: m.labels.clone(),
        flow_control: m.flow.clone(),
        redact_fields: m.redact_fields.clone(),
    };
    let callback = match (&m.failure_callback, &m.callback_for) {
        (Some(url), None) => Some(Msg {
            id: format!("msg_{}", random_id(40)),
            url: url.clone(),
            method: Method::POST,
            body: Bytes::from(failure_callback_body(m, &last, &dlq_id).to_string()),
            headers: m.callback_headers.clone(),
            // "Failure callbacks will use the retry setting from the original request"
            // (openapi.yaml), unless their own headers say otherwise.
            max_retries: m.callback_retries.unwrap_or(m.max_retries),
            retried: 0,
            retry_delay: m
                .callback_retry_delay
                .clone()
                .or_else(|| m.retry_delay.clone()),
            created_at_ms: unix_ms(),
            not_before_ms: None,
            failure_callback: None,
            callback_headers: Vec::new(),
            callback_retries: None,
            callback_retry_delay: None,
            flow: None,
            timeout: m.timeout,
            dedup_id: None,
            labels: Vec::new(),
            redact_fields: Vec::new(),
            caller_ip: m.caller_ip.clone(),
            callback_for: Some(m.id.clone()),
            state: MessageState::Created,
            retry_delays: Vec::new(),
            last: None,
            dlq_id: None,
            released: false,
            wake: Arc::new(Notify::new()),
        }),
        _ => None,
    };
    st.dlq.push(letter);
    if let Some(callback) = callback {
        start_message(inner, st, callback, Duration::ZERO);
    }
}

/// The body QStash sends a failure callback (see its "Callbacks" page): the last answer
/// base64-encoded, the source message, and the DLQ id. Header maps are lists of values,
/// as Go writes an `http.Header`; the timestamps are strings of milliseconds, as
/// documented. URL group, endpoint and schedule fields are left out: they never apply.
fn failure_callback_body(m: &Msg, last: &Answer, dlq_id: &str) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({
        "status": last.status.unwrap_or(0),
        "header": last.headers,
        "body": b64(&last.body),
        "retried": m.retried,
        "maxRetries": m.max_retries,
        "dlqId": dlq_id,
        "sourceMessageId": m.id,
        "url": m.url,
        "method": m.method.as_str(),
        "sourceHeader": header_lists(m.headers.iter().map(|(n, v)| (n, v))),
        "sourceBody": b64(&m.body),
        "notBefore": m.not_before_ms.unwrap_or(m.created_at_ms).to_string(),
        "createdAt": m.created_at_ms.to_string(),
        "callerIP": m.caller_ip,
    })
}

/// Counts an HTTP call in flight while it lives.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let mut st = lock(&inner.state);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        drop(st);
        inner.changed();
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.in_flight = st.in_flight.saturating_sub(1);
        drop(st);
        self.0.changed();
    }
}

/// Which copy of a delivery an HTTP call is.
#[derive(Debug, Clone, Copy)]
enum CallKind {
    /// The delivery itself, with its flow-control slot if it took one.
    First(Option<Grant>),
    /// The extra copy of a duplicated delivery.
    Duplicate,
    /// Sent by [`QStash::redeliver`].
    Redelivery,
}

/// One HTTP call, recorded when it finishes.
async fn deliver(inner: &Inner, generation: u64, attempt: &Attempt, kind: CallKind) -> Answer {
    let in_flight = InFlight::enter(inner);
    // Read before the state lock is taken: the two locks are never held together.
    let key = inner.signing_key();
    let mut headers = HeaderMap::new();
    for (name, value) in &attempt.headers {
        headers.append(name.clone(), value.clone());
    }
    // `insert` replaces forwarded headers of the same name: a publisher cannot forge these.
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put(
        "upstash-signature",
        &sign(&key, &attempt.url, &attempt.body),
    );
    put("upstash-message-id", &attempt.id);
    put("upstash-retried", &attempt.retried.to_string());
    put("upstash-caller-ip", &attempt.caller_ip);
    put("user-agent", USER_AGENT);
    let request = inner
        .http
        .request(attempt.method.clone(), &attempt.url)
        .timeout(attempt.timeout.unwrap_or(inner.delivery_timeout))
        .headers(headers)
        .body(attempt.body.clone());
    let answer = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let headers = header_lists(response.headers());
            match response.bytes().await {
                Ok(body) => Answer {
                    status: Some(status),
                    headers,
                    body,
                    error: None,
                },
                Err(e) => Answer::failed(format!("reading the answer: {e}")),
            }
        }
        Err(e) => Answer::failed(if e.is_timeout() {
            format!("timed out: {e}")
        } else {
            format!("{e}")
        }),
    };
    {
        let mut st = lock(&inner.state);
        if st.generation == generation {
            st.deliveries.push(delivery_record(attempt, &answer, kind));
            if let Some(source) = &attempt.callback_for {
                st.callbacks.push(FailureCallbackCall {
                    message_id: attempt.id.clone(),
                    source_message_id: source.clone(),
                    url: attempt.url.clone(),
                    body: serde_json::from_slice(&attempt.body).unwrap_or(Value::Null),
                    status: answer.status,
                });
            }
        }
    }
    drop(in_flight);
    answer
}

fn delivery_record(attempt: &Attempt, answer: &Answer, kind: CallKind) -> Delivery {
    let grant = match kind {
        CallKind::First(grant) => grant,
        CallKind::Duplicate | CallKind::Redelivery => None,
    };
    Delivery {
        message_id: attempt.id.clone(),
        url: attempt.url.clone(),
        retried: attempt.retried,
        status: answer.status,
        error: answer.error.clone(),
        duplicate: matches!(kind, CallKind::Duplicate),
        redelivery: matches!(kind, CallKind::Redelivery),
        failure_callback: attempt.callback_for.is_some(),
        flow_in_flight: grant.map(|g| g.in_flight),
        slot: grant.map(|g| g.slot),
    }
}

async fn redeliver(inner: &Arc<Inner>, id: &str) -> Option<Delivery> {
    let (generation, attempt) = {
        let st = lock(&inner.state);
        (st.generation, st.messages.get(id)?.attempt())
    };
    let answer = deliver(inner, generation, &attempt, CallKind::Redelivery).await;
    Some(delivery_record(&attempt, &answer, CallKind::Redelivery))
}

/// Ends a message that is not finished yet: takes it out of its flow-control key's limits
/// and wait list (a canceled message stops waiting for a slot), and lets the key hand out
/// what that frees.
fn finish_msg(inner: &Arc<Inner>, st: &mut St, id: &str, state: MessageState) {
    let Some(m) = st.messages.get_mut(id) else {
        return;
    };
    if m.state.is_finished() {
        return;
    }
    m.state = state;
    let Some(spec) = m.flow.clone() else {
        return;
    };
    if let Some(flow) = st.flows.get_mut(&spec.key) {
        flow.remove(&spec);
        // Dropping the waiter's sender ends its wait in `acquire`.
        flow.queue.retain(|w| w.id != id);
    }
    // Limits can rise when a message leaves (a lower rate with a shorter period).
    pump(inner, st, &spec.key);
}

/// Cancels a message not finished yet: it is never delivered afterwards, whether it waits
/// on a delay, a backoff or a flow-control slot. A delivery already in flight finishes,
/// and its answer is only recorded.
fn cancel_in(inner: &Arc<Inner>, st: &mut St, id: &str) -> bool {
    let Some(m) = st.messages.get(id) else {
        return false;
    };
    if m.state.is_finished() {
        return false;
    }
    m.wake.notify_one();
    finish_msg(inner, st, id, MessageState::Canceled);
    true
}

// ---------------------------------------------------------------------------------------
// Flow control

/// A slot under a flow-control key, held for one delivery.
struct FlowPermit {
    inner: Arc<Inner>,
    generation: u64,
    key: String,
}

impl Drop for FlowPermit {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state);
        if st.generation == self.generation {
            if let Some(flow) = st.flows.get_mut(&self.key) {
                flow.in_flight = flow.in_flight.saturating_sub(1);
            }
            pump(&self.inner, &mut st, &self.key);
        }
        drop(st);
        self.inner.changed();
    }
}

/// Waits in the key's queue for a slot; `None` if the message was canceled (it left the
/// queue) or the stand-in was reset meanwhile.
async fn acquire(
    inner: &Arc<Inner>,
    generation: u64,
    key: String,
    id: &str,
) -> Option<(FlowPermit, Grant)> {
    let granted = {
        let mut st = lock(&inner.state);
        if st.generation != generation {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.flows
            .entry(key.clone())
            .or_default()
            .queue
            .push_back(Waiter {
                id: id.to_owned(),
                grant: tx,
            });
        pump(inner, &mut st, &key);
        rx
    };
    inner.changed();
    let grant = granted.await.ok()?;
    let permit = FlowPermit {
        inner: inner.clone(),
        generation,
        key,
    };
    Some((permit, grant))
}

/// Hands slots to the head of the key's queue while the limits in force allow and the key
/// is not paused; when the rate is what holds it back, arms a timer for the moment a slot
/// frees up. Limits are read afresh on every call, so a pin that lowers the parallelism
/// holds back every grant until the deliveries in flight drop below it.
fn pump(inner: &Arc<Inner>, st: &mut St, key: &str) {
    let generation = st.generation;
    let time_scale = inner.time_scale();
    let St { flows, slots, .. } = st;
    let Some(flow) = flows.get_mut(key) else {
        return;
    };
    while !flow.queue.is_empty() && !flow.paused {
        if flow
            .parallelism()
            .is_some_and(|p| flow.in_flight >= p as usize)
        {
            break;
        }
        let now = Instant::now();
        let rate = flow.rate();
        if let Some((rate, period)) = rate {
            let period = scale(period.as_secs_f64(), time_scale);
            while flow
                .starts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= period)
            {
                flow.starts.pop_front();
            }
            if flow.starts.len() >= rate as usize {
                if !flow.timer_armed {
                    flow.timer_armed = true;
                    let at = flow.starts[0] + period;
                    let (inner, key) = (inner.clone(), key.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                        let mut st = lock(&inner.state);
                        if st.generation != generation {
                            return;
                        }
                        if let Some(flow) = st.flows.get_mut(&key) {
                            flow.timer_armed = false;
                        }
                        pump(&inner, &mut st, &key);
                    });
                }
                break;
            }
        }
        let Some(waiter) = flow.queue.pop_front() else {
            break;
        };
        let grant = Grant {
            slot: *slots + 1,
            in_flight: flow.in_flight + 1,
        };
        // A waiter that went away (its message was reset) takes no slot.
        if waiter.grant.send(grant).is_ok() {
            *slots = grant.slot;
            flow.in_flight = grant.in_flight;
            flow.max_in_flight = flow.max_in_flight.max(flow.in_flight);
            if rate.is_some() {
                flow.starts.push_back(now);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Redaction

/// One `Upstash-Redact-Fields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RedactField {
    Body,
    AllHeaders,
    /// Lower case: header names do not depend on case.
    Header(String),
}

/// `body`, `header` / `headers`, `header[Name]` / `headers[Name]` (the docs write
/// `headers` and `header[Name]`; the JS SDK sends `header` and `header[Name]`).
fn redact_field(field: &str) -> Option<RedactField> {
    match field {
        "body" => return Some(RedactField::Body),
        "header" | "headers" => return Some(RedactField::AllHeaders),
        _ => {}
    }
    let name = field
        .strip_prefix("headers[")
        .or_else(|| field.strip_prefix("header["))?
        .strip_suffix(']')?
        .trim();
    HeaderName::from_bytes(name.as_bytes())
        .ok()
        .map(|n| RedactField::Header(n.as_str().to_owned()))
}

/// What QStash shows of a message published with `Upstash-Redact-Fields`: the value
/// replaced by `REDACTED:<hex SHA-256 of it>` in API answers; deliveries and the failure
/// callback's `sourceBody` / `sourceHeader` keep the originals (openapi.yaml,
/// `Upstash-Redact-Fields`).
#[derive(Debug, Default)]
struct Redaction {
    body: bool,
    all_headers: bool,
    headers: Vec<String>,
}

impl Redaction {
    /// From fields checked at publish; anything else is ignored.
    fn of(fields: &[String]) -> Self {
        let mut redaction = Redaction::default();
        for field in fields.iter().filter_map(|f| redact_field(f)) {
            match field {
                RedactField::Body => redaction.body = true,
                RedactField::AllHeaders => redaction.all_headers = true,
                RedactField::Header(name) => redaction.headers.push(name),
            }
        }
        redaction
    }

    fn headers(&self, mut headers: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
        for (name, values) in &mut headers {
            if self.all_headers || self.headers.contains(&name.to_ascii_lowercase()) {
                for value in values {
                    *value = redacted(value.as_bytes());
                }
            }
        }
        headers
    }

    fn put_body(&self, o: &mut Map<String, Value>, body: &[u8]) {
        if self.body {
            o.insert("body".into(), redacted(body).into());
        } else {
            put_body(o, "body", "bodyBase64", body);
        }
    }
}

fn redacted(value: &[u8]) -> String {
    let hex: String = Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("REDACTED:{hex}")
}

// ---------------------------------------------------------------------------------------
// Reading messages and the DLQ

fn message_json(m: &Msg) -> Value {
    let redaction = Redaction::of(&m.redact_fields);
    let mut v = json!({
        "messageId": m.id,
        "url": m.url,
        "method": m.method.as_str(),
        "header": redaction.headers(header_lists(m.headers.iter().map(|(n, v)| (n, v)))),
        "maxRetries": m.max_retries,
        "createdAt": m.created_at_ms,
        "callerIP": m.caller_ip,
        "state": m.state.as_str(),
        "retried": m.retried,
    });
    let o = v.as_object_mut().expect("an object");
    redaction.put_body(o, &m.body);
    if let Some(delay) = &m.retry_delay {
        o.insert("retryDelayExpression".into(), delay.source.clone().into());
    }
    if let Some(nb) = m.not_before_ms {
        o.insert("notBefore".into(), nb.into());
    }
    if let Some(callback) = &m.failure_callback {
        o.insert("failureCallback".into(), callback.clone().into());
    }
    if let Some(flow) = &m.flow {
        put_flow(o, flow);
    }
    if !m.labels.is_empty() {
        o.insert("labels".into(), m.labels.clone().into());
    }
    v
}

fn put_flow(o: &mut Map<String, Value>, flow: &FlowControl) {
    o.insert("flowControlKey".into(), flow.key.clone().into());
    if let Some(p) = flow.parallelism {
        o.insert("parallelism".into(), p.into());
    }
    if let Some(r) = flow.rate {
        o.insert("rate".into(), r.into());
        o.insert("period".into(), flow.period.as_secs().into());
    }
}

/// UTF-8 bodies go in `text`, others base64-encoded in `b64`, as QStash answers them.
fn put_body(o: &mut Map<String, Value>, text: &str, b64: &str, body: &[u8]) {
    match std::str::from_utf8(body) {
        Ok(s) => o.insert(text.into(), s.into()),
        Err(_) => o.insert(
            b64.into(),
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .into(),
        ),
    };
}

fn dead_letter_json(d: &DeadLetter) -> Value {
    let redaction = Redaction::of(&d.redact_fields);
    let mut v = json!({
        "dlqId": d.dlq_id,
        "messageId": d.message_id,
        "url": d.url,
        "method": d.method,
        "header": redaction.headers(d.headers.clone()),
        "maxRetries": d.max_retries,
        "retried": d.retried,
        "createdAt": d.created_at_ms,
        "callerIP": d.caller_ip,
        "responseHeader": d.response_headers,
    });
    let o = v.as_object_mut().expect("an object");
    redaction.put_body(o, &d.body);
    if let Some(flow) = &d.flow_control {
        put_flow(o, flow);
    }
    put_body(o, "responseBody", "responseBodyBase64", &d.response_body);
    if let Some(status) = d.response_status {
        o.insert("responseStatus".into(), status.into());
    }
    if let Some(nb) = d.not_before_ms {
        o.insert("notBefore".into(), nb.into());
    }
    if let Some(callback) = &d.failure_callback {
        o.insert("failureCallback".into(), callback.clone().into());
    }
    if !d.labels.is_empty() {
        o.insert("labels".into(), d.labels.clone().into());
    }
    v
}

fn not_found_error(what: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{what} not found"),
    }
}

async fn message_get(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let st = lock(&inner.state);
    let m = st
        .messages
        .get(&id)
        .ok_or_else(|| not_found_error(&format!("message {id}")))?;
    Ok(Json(message_json(m)).into_response())
}

async fn message_cancel(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let mut st = lock(&inner.state);
    let canceled = cancel_in(&inner, &mut st, &id);
    drop(st);
    inner.changed();
    if canceled {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(not_found_error(&format!("pending message {id}")))
    }
}

/// Query parameters of the list and bulk routes, by name. A name may repeat and a value
/// may be a comma-separated list: both mean several values (openapi.yaml: "label=label_1&
/// label=label_2" or "label=label_1,label_2").
struct Params(BTreeMap<String, Vec<String>>);

impl Params {
    /// Refuses parameters the route does not know (and the filters on features the
    /// stand-in lacks), naming them; `qstash_token` is always allowed.
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let query = uri.query().unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == "qstash_token" {
                continue;
            }
            if UNSUPPORTED_FILTERS.contains(&name.as_ref()) {
                return Err(ApiError::bad(format!(
                    "query parameter {name} is not supported by the QStash stand-in (it has no \
                     URL groups, queues or schedules)"
                )));
            }
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::bad(if allowed.is_empty() {
                    format!("unknown query parameter {name:?} (this route takes none)")
                } else {
                    format!(
                        "unknown query parameter {name:?} (expected one of {})",
                        allowed.join(", ")
                    )
                }));
            }
            // `callerIP` is the deprecated spelling of `callerIp`.
            let name = if name == "callerIP" {
                "callerIp".to_owned()
            } else {
                name.into_owned()
            };
            params.entry(name).or_default().extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(Params(params))
    }

    fn list(&mut self, name: &str) -> Option<Vec<String>> {
        self.0.remove(name)
    }

    /// A parameter that takes one value, parsed; `what` says what it should be.
    fn one<T: std::str::FromStr>(&mut self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        let Some(values) = self.0.remove(name) else {
            return Ok(None);
        };
        match values.as_slice() {
            [value] => value
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad(format!("invalid {name} {value:?}: expected {what}"))),
            [] => Err(ApiError::bad(format!("{name} is empty: expected {what}"))),
            _ => Err(ApiError::bad(format!(
                "{name} takes one value, not {}",
                values.join(",")
            ))),
        }
    }

    /// `count` of the DLQ routes: 1 or more, [`DLQ_PAGE`] when not given, and no more than
    /// that.
    fn page(&mut self) -> Result<usize, ApiError> {
        match self.one::<usize>("count", "a positive integer")? {
            Some(0) => Err(ApiError::bad(
                "invalid count 0: expected a positive integer",
            )),
            Some(n) => Ok(n.min(DLQ_PAGE)),
            None => Ok(DLQ_PAGE),
        }
    }

    /// `cursor` of the DLQ routes: an opaque string to the client; here the sequence
    /// number of the last dead letter already handed out.
    fn cursor(&mut self) -> Result<Option<u64>, ApiError> {
        self.one("cursor", "a cursor from an earlier answer")
    }
}

/// The filters of the bulk-cancel and DLQ routes. Several values of one filter match with
/// OR, different filters combine with AND; an absent filter matches everything
/// (openapi.yaml, `DELETE /v2/messages`, `GET /v2/dlq`).
#[derive(Debug, Default)]
struct Filter {
    labels: Vec<String>,
    urls: Vec<String>,
    hosts: Vec<String>,
    paths: Vec<String>,
    flow_keys: Vec<String>,
    caller_ips: Vec<String>,
    message_ids: Vec<String>,
    statuses: Vec<u16>,
    /// Unix milliseconds, inclusive, on `createdAt`.
    from_ms: Option<u64>,
    to_ms: Option<u64>,
}

/// What a [`Filter`] looks at, of a message or a dead letter.
struct Subject<'a> {
    message_id: &'a str,
    url: &'a str,
    labels: &'a [String],
    flow: Option<&'a FlowControl>,
    caller_ip: &'a str,
    created_at_ms: u64,
    status: Option<u16>,
}

impl Filter {
    /// Takes every filter parameter out of `params` (which the route allowed).
    fn parse(params: &mut Params) -> Result<Self, ApiError> {
        let mut list = |name: &str| params.list(name).unwrap_or_default();
        let mut filter = Filter {
            labels: list("label"),
            urls: list("url"),
            hosts: list("host"),
            paths: list("path"),
            flow_keys: list("flowControlKey"),
            caller_ips: list("callerIp"),
            message_ids: list("messageId"),
            ..Filter::default()
        };
        for status in params.list("responseStatus").unwrap_or_default() {
            filter.statuses.push(status.parse().map_err(|_| {
                ApiError::bad(format!(
                    "invalid responseStatus {status:?}: expected an HTTP status code"
                ))
            })?);
        }
        filter.from_ms = params.one("fromDate", "Unix milliseconds")?;
        filter.to_ms = params.one("toDate", "Unix milliseconds")?;
        Ok(filter)
    }

    fn matches(&self, s: &Subject) -> bool {
        fn any<T>(values: &[T], hit: impl Fn(&T) -> bool) -> bool {
            values.is_empty() || values.iter().any(hit)
        }
        let parsed = url::Url::parse(s.url).ok();
        any(&self.labels, |l| s.labels.contains(l))
            && any(&self.urls, |u| u == s.url)
            && any(&self.hosts, |h| {
                parsed.as_ref().and_then(|u| u.host_str()) == Some(h.as_str())
            })
            && any(&self.paths, |p| {
                parsed.as_ref().map(url::Url::path) == Some(p.as_str())
            })
            && any(&self.flow_keys, |k| s.flow.is_some_and(|f| &f.key == k))
            && any(&self.caller_ips, |ip| ip == s.caller_ip)
            && any(&self.message_ids, |id| id == s.message_id)
            && any(&self.statuses, |status| s.status == Some(*status))
            && self.from_ms.is_none_or(|from| s.created_at_ms >= from)
            && self.to_ms.is_none_or(|to| s.created_at_ms <= to)
    }
}

impl Msg {
    fn subject(&self) -> Subject<'_> {
        Subject {
            message_id: &self.id,
            url: &self.url,
            labels: &self.labels,
            flow: self.flow.as_ref(),
            caller_ip: &self.caller_ip,
            created_at_ms: self.created_at_ms,
            status: self.last.as_ref().and_then(|a| a.status),
        }
    }
}

fn dead_letter_subject(d: &DeadLetter) -> Subject<'_> {
    Subject {
        message_id: &d.message_id,
        url: &d.url,
        labels: &d.labels,
        flow: d.flow_control.as_ref(),
        caller_ip: &d.caller_ip,
        created_at_ms: d.created_at_ms,
        status: d.response_status,
    }
}

/// The sequence number at the end of a dead letter's id (`<unix ms>-<seq>`): the order
/// the DLQ is paged in.
fn dlq_seq(d: &DeadLetter) -> u64 {
    d.dlq_id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The older JSON-body form of the bulk routes (`{"messageIds": [...]}`, `{"dlqIds":
/// [...]}`), which the Python SDK still sends; `None` for an empty body.
fn ids_body(body: &[u8], field: &str) -> Result<Option<Vec<String>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |why: String| {
        ApiError::bad(format!(
            "invalid body: {why} (expected {{\"{field}\": [...]}})"
        ))
    };
    let value: Map<String, Value> = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let mut ids = None;
    for (name, v) in value {
        if name != field {
            return Err(bad(format!("unknown field {name:?}")));
        }
        let list: Vec<String> = serde_json::from_value(v)
            .map_err(|_| bad(format!("{field} must be a list of strings")))?;
        ids = Some(list);
    }
    Ok(ids)
}

/// `DELETE /v2/messages`: bulk cancel by ids (query `messageIds`, or the older body
/// `{"messageIds": [...]}`; other filters are then ignored), or by filters, at most
/// `count` (1 to 500) of them; with neither (an empty id list included), every unfinished
/// message, as documented. Answers how many unfinished messages it canceled.
async fn messages_cancel(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let mut params = Params::parse(
        &uri,
        &[
            "messageIds",
            "label",
            "url",
            "host",
            "path",
            "flowControlKey",
            "callerIp",
            "callerIP",
            "fromDate",
            "toDate",
            "count",
        ],
    )?;
    let mut ids = params.list("messageIds");
    if let Some(listed) = ids_body(&body, "messageIds")? {
        ids.get_or_insert_with(Vec::new).extend(listed);
    }
    // "If the messageIds array is empty, QStash will cancel all of your messages" (the
    // docs of the body form); the SDKs refuse to send one for that reason.
    let ids = ids.filter(|ids| !ids.is_empty());
    let count = params.one::<usize>(
        "count",
        &format!("an integer from 1 to {BULK_CANCEL_LIMIT}"),
    )?;
    if let Some(n) = count.filter(|n| !(1..=BULK_CANCEL_LIMIT).contains(n)) {
        return Err(ApiError::bad(format!(
            "invalid count {n}: expected an integer from 1 to {BULK_CANCEL_LIMIT}"
        )));
    }
    let filter = Filter::parse(&mut params)?;
    let mut st = lock(&inner.state);
    let unfinished =
        |st: &St, id: &str| st.messages.get(id).is_some_and(|m| !m.state.is_finished());
    let mut targets: Vec<String> = match ids {
        Some(ids) => {
            let mut seen = Vec::new();
            for id in ids {
                if unfinished(&st, &id) && !seen.contains(&id) {
                    seen.push(id);
                }
            }
            seen
        }
        None => st
            .order
            .iter()
            .filter(|id| {
                st.messages
                    .get(*id)
                    .is_some_and(|m| !m.state.is_finished() && filter.matches(&m.subject()))
            })
            .cloned()
            .collect(),
    };
    targets.truncate(count.unwrap_or(usize::MAX));
    let cancelled = targets
        .iter()
        .filter(|id| cancel_in(&inner, &mut st, id))
        .count();
    drop(st);
    inner.changed();
    Ok(Json(json!({ "cancelled": cancelled })).into_response())
}

const DLQ_PARAMS: [&str; 12] = [
    "dlqIds",
    "messageId",
    "label",
    "url",
    "flowControlKey",
    "responseStatus",
    "callerIp",
    "callerIP",
    "fromDate",
    "toDate",
    "count",
    "cursor",
];

/// Dead letters matching the request's `dlqIds` (which win) or filters, after `cursor`,
/// in order: at most `page`, and whether more remain.
fn dlq_select(
    st: &St,
    ids: Option<&[String]>,
    filter: &Filter,
    cursor: Option<u64>,
    page: usize,
) -> (Vec<usize>, bool) {
    let mut picked = Vec::new();
    let mut more = false;
    for (i, d) in st.dlq.iter().enumerate() {
        let hit = match ids {
            Some(ids) => ids.contains(&d.dlq_id),
            None => filter.matches(&dead_letter_subject(d)),
        };
        if !hit || cursor.is_some_and(|c| dlq_seq(d) <= c) {
            continue;
        }
        if picked.len() == page {
            more = true;
            break;
        }
        picked.push(i);
    }
    (picked, more)
}

/// `GET /v2/dlq`: filters `dlqIds`, `messageId`, `label`, `url`, `flowControlKey`,
/// `responseStatus`, `callerIp`, `fromDate` / `toDate` (on `createdAt`); pages of `count`
/// (default and most 100) with a `cursor` when more remain.
async fn dlq_list(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let mut params = Params::parse(&uri, &DLQ_PARAMS)?;
    let ids = params.list("dlqIds");
    let page = params.page()?;
    let cursor = params.cursor()?;
    let filter = Filter::parse(&mut params)?;
    let st = lock(&inner.state);
    let (picked, more) = dlq_select(&st, ids.as_deref(), &filter, cursor, page);
    let messages: Vec<Value> = picked
        .iter()
        .map(|i| dead_letter_json(&st.dlq[*i]))
        .collect();
    let mut answer = json!({ "messages": messages });
    if let (true, Some(last)) = (more, picked.last()) {
        answer["cursor"] = dlq_seq(&st.dlq[*last]).to_string().into();
    }
    Ok(Json(answer).into_response())
}

/// `DELETE /v2/dlq`: by `dlqIds` (query, or the older body `{"dlqIds": [...]}`; other
/// filters are then ignored), or by the filters of the list, `count` at a time (default
/// and most 100) with a `cursor` when more remain. Answers `{"deleted": n}`.
async fn dlq_delete_many(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let mut params = Params::parse(&uri, &DLQ_PARAMS)?;
    let mut ids = params.list("dlqIds");
    if let Some(listed) = ids_body(&body, "dlqIds")? {
        ids.get_or_insert_with(Vec::new).extend(listed);
    }
    // As for messages: an empty list is no list, so the filters (or nothing) apply.
    let ids = ids.filter(|ids| !ids.is_empty());
    let page = if ids.is_some() {
        usize::MAX
    } else {
        params.page()?
    };
    let cursor = params.cursor()?;
    let filter = Filter::parse(&mut params)?;
    let mut st = lock(&inner.state);
    let (picked, more) = dlq_select(&st, ids.as_deref(), &filter, cursor, page);
    let next = picked.last().map(|i| dlq_seq(&st.dlq[*i]));
    let mut index = 0;
    st.dlq.retain(|_| {
        let keep = !picked.contains(&index);
        index += 1;
        keep
    });
    drop(st);
    inner.changed();
    let mut answer = json!({ "deleted": picked.len() });
    if let (true, Some(next)) = (more, next) {
        answer["cursor"] = next.to_string().into();
    }
    Ok(Json(answer).into_response())
}

async fn dlq_get(
    State(inner): State<Arc<Inner>>,
    Path(dlq_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let st = lock(&inner.state);
    let d = st
        .dlq
        .iter()
        .find(|d| d.dlq_id == dlq_id)
        .ok_or_else(|| not_found_error(&format!("DLQ message {dlq_id}")))?;
    Ok(Json(dead_letter_json(d)).into_response())
}

async fn dlq_delete(
    State(inner): State<Arc<Inner>>,
    Path(dlq_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let mut st = lock(&inner.state);
    let before = st.dlq.len();
    st.dlq.retain(|d| d.dlq_id != dlq_id);
    if st.dlq.len() == before {
        return Err(not_found_error(&format!("DLQ message {dlq_id}")));
    }
    drop(st);
    inner.changed();
    Ok(StatusCode::OK.into_response())
}

async fn keys(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let (current, next) = inner.keys();
    Ok(Json(json!({ "current": current, "next": next })).into_response())
}

/// `POST /v2/keys/rotate`: the next key becomes the current one, a new next key is made;
/// answers both, as `GET /v2/keys` does.
async fn keys_rotate(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let (current, next) = inner.rotate_keys();
    Ok(Json(json!({ "current": current, "next": next })).into_response())
}

// ---------------------------------------------------------------------------------------
// Flow-control management

/// A key as `GET /v2/flowControl` shows it (openapi.yaml, `FlowControlKey`). Every field is
/// always there, 0 where it does not apply (no parallelism or rate set), as the SDKs read
/// them as plain numbers. The rate counts over a sliding window (stricter than a fixed
/// period): `rateCount` is the starts in the last period, `ratePeriodStart` the oldest of
/// them, else the last pin or rate reset, else 0.
fn flow_json(key: &str, flow: &Flow, time_scale: f64) -> Value {
    let rate = flow.rate();
    let counted = flow.counted_starts(time_scale);
    let (now, wall) = (Instant::now(), SystemTime::now());
    let period_start = counted
        .first()
        .and_then(|t| wall.checked_sub(now.duration_since(*t)))
        .or(flow.period_reset)
        .filter(|_| rate.is_some())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({
        "flowControlKey": key,
        "waitListSize": flow.queue.len(),
        "parallelismMax": flow.parallelism().unwrap_or(0),
        "parallelismCount": flow.in_flight,
        "rateMax": rate.map_or(0, |(r, _)| r),
        "rateCount": counted.len(),
        "ratePeriod": rate.map_or(0, |(_, p)| p.as_secs()),
        "ratePeriodStart": period_start,
        "isPinnedParallelism": flow.pinned_parallelism.is_some(),
        "isPinnedRate": flow.pinned_rate.is_some(),
        "isPaused": flow.paused,
    })
}

async fn flow_list(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let time_scale = inner.time_scale();
    let st = lock(&inner.state);
    let mut keys: Vec<_> = st.flows.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let list: Vec<Value> = keys
        .into_iter()
        .map(|(key, flow)| flow_json(key, flow, time_scale))
        .collect();
    Ok(Json(list).into_response())
}

async fn flow_get(
    State(inner): State<Arc<Inner>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let time_scale = inner.time_scale();
    let st = lock(&inner.state);
    let flow = st
        .flows
        .get(&key)
        .ok_or_else(|| not_found_error(&format!("flow-control key {key}")))?;
    Ok(Json(flow_json(&key, flow, time_scale)).into_response())
}

/// `POST /v2/flowControl/{key}/{pin|unpin|pause|resume|resetRate}` (openapi.yaml). Pin
/// takes `parallelism`, `rate`, `period` (seconds, default 1; only with `rate`), at least
/// one of the first two, replaces the key's limits for what it names until an unpin, and
/// resets the rate count and period; it creates a key never seen. Unpin takes booleans
/// `parallelism`, `rate` (at least one true); the pinned values stay in force until the
/// next message under the key brings its own ("Unpin" in the docs). Pause holds every
/// grant (messages still join the wait list; the rate period keeps running); resume lets
/// them go; resetRate clears the rate count and starts a period now. Answers 200 with an
/// empty body; 404 for a key never seen (pin aside).
async fn flow_action(
    State(inner): State<Arc<Inner>>,
    Path((key, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let unknown_key = || not_found_error(&format!("flow-control key {key}"));
    let mut st = lock(&inner.state);
    match action.as_str() {
        "pin" => {
            let mut params = Params::parse(&uri, &["parallelism", "rate", "period"])?;
            let mut positive = |name: &str| -> Result<Option<u32>, ApiError> {
                match params.one::<u32>(name, "a positive integer")? {
                    Some(0) => Err(ApiError::bad(format!(
                        "invalid {name} 0: expected a positive integer"
                    ))),
                    n => Ok(n),
                }
            };
            let parallelism = positive("parallelism")?;
            let rate = positive("rate")?;
            let period = positive("period")?;
            if parallelism.is_none() && rate.is_none() {
                return Err(ApiError::bad(
                    "pin needs parallelism=N and/or rate=R (with period=P in seconds)",
                ));
            }
            if rate.is_none() && period.is_some() {
                return Err(ApiError::bad("period goes with rate: pin rate=R&period=P"));
            }
            let flow = st.flows.entry(key.clone()).or_default();
            if parallelism.is_some() {
                flow.pinned_parallelism = parallelism;
            }
            if let Some(rate) = rate {
                let period = Duration::from_secs(u64::from(period.unwrap_or(1)));
                flow.pinned_rate = Some((rate, period));
            }
            flow.starts.clear();
            flow.period_reset = Some(SystemTime::now());
        }
        "unpin" => {
            let mut params = Params::parse(&uri, &["parallelism", "rate"])?;
            let parallelism = params.one::<bool>("parallelism", "true or false")?;
            let rate = params.one::<bool>("rate", "true or false")?;
            let (parallelism, rate) = (parallelism.unwrap_or(false), rate.unwrap_or(false));
            if !parallelism && !rate {
                return Err(ApiError::bad(
                    "nothing to unpin: pass parallelism=true and/or rate=true",
                ));
            }
            let flow = st.flows.get_mut(&key).ok_or_else(unknown_key)?;
            if parallelism {
                if let Some(p) = flow.pinned_parallelism.take() {
                    flow.carried_parallelism = Some(p);
                }
            }
            if rate {
                if let Some(r) = flow.pinned_rate.take() {
                    flow.carried_rate = Some(r);
                }
            }
        }
        "pause" | "resume" | "resetRate" => {
            Params::parse(&uri, &[])?;
            let flow = st.flows.get_mut(&key).ok_or_else(unknown_key)?;
            match action.as_str() {
                "pause" => flow.paused = true,
                "resume" => flow.paused = false,
                _ => {
                    flow.starts.clear();
                    flow.period_reset = Some(SystemTime::now());
                }
            }
        }
        _ => return Err(not_found_error(&format!("route {}", uri.path()))),
    }
    pump(&inner, &mut st, &key);
    drop(st);
    inner.changed();
    Ok(StatusCode::OK.into_response())
}

async fn not_found(uri: Uri) -> ApiError {
    not_found_error(&format!("route {}", uri.path()))
}

// ---------------------------------------------------------------------------------------
// Control API

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    time_scale: Option<f64>,
    unreachable: Option<bool>,
    sign_with_next: Option<bool>,
    duplicate_next: Option<usize>,
    duplicate_all: Option<bool>,
    /// Absent: unchanged; `null`: no cap; a number: the cap.
    #[serde(default, deserialize_with = "present")]
    plan_max_retries: Option<Option<u32>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`, by `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn config_json(inner: &Inner) -> Value {
    json!({
        "time_scale": inner.time_scale(),
        "unreachable": inner.unreachable.load(Ordering::SeqCst),
        "sign_with_next": inner.sign_with_next.load(Ordering::SeqCst),
        "duplicate_next": inner.duplicate_next.load(Ordering::SeqCst),
        "duplicate_all": inner.duplicate_all.load(Ordering::SeqCst),
        "plan_max_retries": inner.plan_max_retries(),
    })
}

async fn config_view(State(inner): State<Arc<Inner>>) -> Json<Value> {
    Json(config_json(&inner))
}

async fn config_update(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let patch: ConfigPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid configuration: {e}")))?;
    if let Some(scale) = patch.time_scale {
        if !scale.is_finite() || scale < 0.0 {
            return Err(ApiError::bad(format!(
                "invalid 'time_scale': {scale}; expected a number of 0 or more"
            )));
        }
        inner.time_scale.store(scale.to_bits(), Ordering::SeqCst);
    }
    if let Some(v) = patch.unreachable {
        inner.unreachable.store(v, Ordering::SeqCst);
    }
    if let Some(v) = patch.sign_with_next {
        inner.sign_with_next.store(v, Ordering::SeqCst);
    }
    if let Some(v) = patch.duplicate_next {
        inner.duplicate_next.store(v, Ordering::SeqCst);
    }
    if let Some(v) = patch.duplicate_all {
        inner.duplicate_all.store(v, Ordering::SeqCst);
    }
    if let Some(cap) = patch.plan_max_retries {
        inner.set_plan_max_retries(cap);
    }
    Ok(Json(config_json(&inner)))
}

fn stats(inner: &Inner) -> Stats {
    let st = lock(&inner.state);
    let count = |state: MessageState| st.messages.values().filter(|m| m.state == state).count();
    Stats {
        published: st.published,
        deduplicated: st.deduplicated,
        deliveries: st.deliveries.len(),
        in_flight: st.in_flight,
        max_in_flight: st.max_in_flight,
        pending: st
            .messages
            .values()
            .filter(|m| !m.state.is_finished())
            .count(),
        delivered: count(MessageState::Delivered),
        failed: count(MessageState::Failed),
        canceled: count(MessageState::Canceled),
        dead_letters: st.dlq.len(),
        failure_callbacks: st.callbacks.len(),
        flows: st
            .flows
            .iter()
            .map(|(key, f)| (key.clone(), f.stats()))
            .collect(),
    }
}

async fn stats_view(State(inner): State<Arc<Inner>>) -> Json<Stats> {
    Json(stats(&inner))
}

async fn reset_route(State(inner): State<Arc<Inner>>) -> Json<Stats> {
    reset(&inner);
    Json(stats(&inner))
}

async fn release_route(State(inner): State<Arc<Inner>>) -> StatusCode {
    release_waiting(&inner);
    StatusCode::NO_CONTENT
}

async fn redeliver_route(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    redeliver(&inner, &id)
        .await
        .map(Json)
        .ok_or_else(|| not_found_error(&format!("message {id}")))
}

fn reset(inner: &Inner) {
    let mut st = lock(&inner.state);
    for m in st.messages.values() {
        m.wake.notify_one();
    }
    let fresh = St {
        generation: st.generation + 1,
        in_flight: st.in_flight,
        max_in_flight: st.in_flight,
        dlq_seq: st.dlq_seq,
        ..St::default()
    };
    *st = fresh;
    drop(st);
    inner.changed();
}

fn release_waiting(inner: &Inner) {
    let mut st = lock(&inner.state);
    for m in st.messages.values_mut() {
        if matches!(m.state, MessageState::Created | MessageState::Retry) {
            m.released = true;
            m.wake.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// Header maps as Go writes an `http.Header`: canonical names, lists of values.
fn header_lists<'a>(
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        out.entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// `content-type` → `Content-Type`, as Go canonicalises header names.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let c = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            c
        })
        .collect()
}

fn random_id(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstash_durations() {
        let d = |s| parse_upstash_duration(s).map(|d| d.as_secs());
        assert_eq!(d("50s"), Some(50));
        assert_eq!(d("2m"), Some(120));
        assert_eq!(d("1d10h30m"), Some(86_400 + 36_000 + 1_800));
        for bad in ["", "10", "s", "1x", "1.5s", "-1s", "1s2"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_durations_and_retry_after() {
        assert_eq!(parse_go_duration("6m5s"), Some(365.0));
        assert_eq!(parse_go_duration("1.5h"), Some(5400.0));
        assert_eq!(parse_go_duration("300ms"), Some(0.3));
        assert_eq!(parse_go_duration("5x"), None);
        let after = |v: &str| {
            retry_after_secs(&BTreeMap::from([(
                "Retry-After".to_owned(),
                vec![v.to_owned()],
            )]))
        };
        assert_eq!(after("10"), Some(10.0));
        assert_eq!(after("0"), Some(0.0));
        assert_eq!(after("6m5s"), Some(365.0));
        assert_eq!(after("soon"), None);
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let secs = after(&in_a_minute).expect("an HTTP date");
        assert!((59.0..=61.0).contains(&secs), "{secs}");
        assert_eq!(after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(0.0));
    }

    #[test]
    fn backoff_follows_the_documented_table() {
        assert_eq!(backoff_secs(1).round(), 12.0);
        assert_eq!(backoff_secs(2).round(), 148.0); // 2m28s
        assert_eq!(backoff_secs(3).round(), 1808.0); // 30m8s
        assert_eq!(backoff_secs(4).round(), 22026.0); // 6h7m6s
        assert_eq!(backoff_secs(5), 86_400.0);
        assert_eq!(scale(backoff_secs(1), 0.001).as_micros(), 12_182);
    }

    #[test]
    fn flow_control_values() {
        let f = parse_flow("k".into(), "parallelism=2, rate=10, period=1m").expect("valid");
        assert_eq!(
            (f.parallelism, f.rate, f.period),
            (Some(2), Some(10), Duration::from_secs(60))
        );
        let f = parse_flow("k".into(), "Rate=20,Parallelism=10").expect("valid");
        assert_eq!(
            (f.parallelism, f.rate, f.period),
            (Some(10), Some(20), Duration::from_secs(1))
        );
        let f = parse_flow("k".into(), "rate=1, period=30").expect("valid");
        assert_eq!(f.period, Duration::from_secs(30));
        for bad in [
            "",
            "period=1s",
            "parallelism=0",
            "parallelism",
            "speed=3",
            "rate=x",
        ] {
            assert!(parse_flow("k".into(), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retry_delay_expressions_follow_the_documented_grammar() {
        let ms = |e: &str, retried: u32| retry_delay_ms(e, retried).expect(e);
        assert_eq!(ms("1000", 5), 1000.0);
        assert_eq!(ms("1000 * (1 + retried)", 0), 1000.0);
        assert_eq!(ms("1000 * (1 + retried)", 2), 3000.0);
        assert_eq!(ms("pow(2, retried) * 1000", 3), 8000.0);
        assert_eq!(ms("max(1000, pow(2, retried) * 100)", 1), 1000.0);
        assert_eq!(ms("max(1000, pow(2, retried) * 100)", 5), 3200.0);
        assert_eq!(ms("min(5, 2) + abs(-3) * 2 - 1", 0), 7.0);
        assert_eq!(ms("-(2 + 3) * -2", 0), 10.0);
        assert_eq!(ms("10 - 4 - 3", 0), 3.0);
        assert_eq!(ms("100 / 4 / 5", 0), 5.0);
        assert_eq!(
            ms(
                "sqrt(16) + floor(1.7) + ceil(1.2) + round(2.5) + round(-2.5)",
                0
            ),
            7.0
        );
        assert_eq!(ms(".5 * 4", 0), 2.0);
        assert!((ms("exp(1)", 0) - std::f64::consts::E).abs() < 1e-12);
        assert_eq!(ms("  retried*retried  ", 3), 9.0);

        for (bad, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("1000 +", "ends too early"),
            ("foo * 2", "unknown name \"foo\""),
            ("log(2)", "unknown function \"log\""),
            ("pow(2)", "pow takes 2 arguments, not 1"),
            ("sqrt(1, 2)", "sqrt takes 1 argument, not 2"),
            ("(1 + 2", "expected ')'"),
            ("1 2", "unexpected '2'"),
            ("1.2.3", "not a number"),
            ("2 ^ 3", "unexpected '^'"),
            ("retried(1)", "unknown function \"retried\""),
            ("max", "unknown name \"max\""),
            ("1000 * é", "unexpected 'é'"),
        ] {
            let error = retry_delay_ms(bad, 0).expect_err(bad);
            assert!(error.contains(why), "{bad:?}: {error:?} should say {why:?}");
        }
    }

    #[test]
    fn retry_delay_waits_are_clamped() {
        let secs = |e: &str, retried: u32| RetryDelay::parse(e).expect(e).secs(retried);
        assert_eq!(secs("1500", 0), 1.5);
        assert_eq!(secs("-1000", 0), 0.0);
        assert_eq!(secs("sqrt(-1)", 0), 0.0);
        assert_eq!(secs("1 / 0", 0), MAX_RETRY_DELAY_SECS);
        assert_eq!(secs("pow(10, retried)", 12), MAX_RETRY_DELAY_SECS);
    }

    #[test]
    fn redact_fields() {
        assert_eq!(redact_field("body"), Some(RedactField::Body));
        assert_eq!(redact_field("header"), Some(RedactField::AllHeaders));
        assert_eq!(redact_field("headers"), Some(RedactField::AllHeaders));
        assert_eq!(
            redact_field("header[Authorization]"),
            Some(RedactField::Header("authorization".into()))
        );
        assert_eq!(
            redact_field("headers[X-Secret]"),
            Some(RedactField::Header("x-secret".into()))
        );
        for bad in ["footer", "header[]", "header[a b]", "headers[X", "Body"] {
            assert_eq!(redact_field(bad), None, "{bad:?}");
        }
        let r = Redaction::of(&["body".into(), "header[X-Secret]".into()]);
        let headers = r.headers(BTreeMap::from([
            ("X-Secret".to_owned(), vec!["s".to_owned()]),
            ("X-Open".to_owned(), vec!["o".to_owned()]),
        ]));
        assert_eq!(headers["X-Secret"], [redacted(b"s")]);
        assert_eq!(headers["X-Open"], ["o"]);
        // sha256("s")
        assert_eq!(
            redacted(b"s"),
            "REDACTED:043a718774c572bd8a25adbeb1bfcd5c0256ae11cecf9f9c3f925d0e52beaf89"
        );
    }

    #[test]
    fn flow_limits_are_the_highest_of_the_unfinished_messages() {
        let spec = |p: Option<u32>, r: Option<u32>, period: u64| FlowControl {
            key: "k".into(),
            parallelism: p,
            rate: r,
            period: Duration::from_secs(period),
        };
        let mut flow = Flow::default();
        let (low, high, rated) = (
            spec(Some(1), None, 1),
            spec(Some(3), Some(5), 60),
            spec(None, Some(5), 1),
        );
        flow.add(&low);
        assert_eq!((flow.parallelism(), flow.rate()), (Some(1), None));
        flow.add(&high);
        assert_eq!(flow.parallelism(), Some(3));
        assert_eq!(flow.rate(), Some((5, Duration::from_secs(60))));
        // A tie on the rate: the shorter period wins.
        flow.add(&rated);
        assert_eq!(flow.rate(), Some((5, Duration::from_secs(1))));
        flow.remove(&high);
        assert_eq!(flow.parallelism(), Some(1));
        flow.remove(&rated);
        assert_eq!((flow.parallelism(), flow.rate()), (Some(1), None));
        // None left: the last limits stay.
        flow.remove(&low);
        assert_eq!(flow.parallelism(), Some(1));

        flow.pinned_parallelism = Some(7);
        flow.add(&high);
        assert_eq!(flow.parallelism(), Some(7));
        // Unpinned: the pinned value carries on until the next message.
        flow.carried_parallelism = flow.pinned_parallelism.take();
        assert_eq!(flow.parallelism(), Some(7));
        flow.add(&low);
        assert_eq!(flow.parallelism(), Some(3));
    }

    #[test]
    fn the_plan_cap_refuses_more_retries_and_lowers_the_default() {
        let parse = |headers: &[(&'static str, &'static str)], cap| {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.insert(*name, HeaderValue::from_static(value));
            }
            NewMessage::parse("http://x/y".into(), &map, Bytes::new(), cap)
        };
        let error = parse(&[("upstash-retries", "8")], Some(3)).expect_err("over the cap");
        assert_eq!(
            error.message,
            "invalid Upstash-Retries 8: your plan allows at most 3 retries"
        );
        let error =
            parse(&[("upstash-failure-callback-retries", "4")], Some(3)).expect_err("over the cap");
        assert_eq!(
            error.message,
            "invalid Upstash-Failure-Callback-Retries 4: your plan allows at most 3 retries"
        );
        assert_eq!(parse(&[], Some(2)).expect("valid").max_retries, 2);
        assert_eq!(
            parse(&[], Some(5)).expect("valid").max_retries,
            DEFAULT_RETRIES
        );
        assert_eq!(
            parse(&[], None).expect("valid").max_retries,
            DEFAULT_RETRIES
        );
        assert_eq!(
            parse(&[("upstash-retries", "3")], Some(3))
                .expect("valid")
                .max_retries,
            3
        );
        assert!(parse(&[("upstash-retries", "101")], None).is_err());
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(
            canonical("upstash-nonretryable-error"),
            "Upstash-Nonretryable-Error"
        );
        assert_eq!(canonical("X-RATELIMIT-RESET"), "X-Ratelimit-Reset");
    }

    /// A token the real service issued (published in an SDK's example): our tokens have
    /// its header, its set of claims, a padded `body` and an empty `aud`. Its HMAC
    /// cannot be checked: the example's keys are not the ones it was signed with.
    #[test]
    fn our_tokens_have_the_shape_of_a_real_one() {
        const REAL: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiIiLCJib2R5IjoicFpHbTFBdjBJRUJLQVJjeno3ZXhrTllzWmI4THphTXJWN0ozMmEyZkZHND0iLCJleHAiOjE2NjQ3MTM0NjQsImlhdCI6MTY2NDcxMzE2NCwiaXNzIjoiVXBzdGFzaCIsImp0aSI6Imp3dF82dVpvN1VMV3I5TXVlellTb1R2eGlZRUtZSG9CIiwibmJmIjoxNjY0NzEzMTY0LCJzdWIiOiJodHRwczovL3JlYmF6LXFzdGFzaC5yZXF1ZXN0Y2F0Y2hlci5jb20vdGVzdCJ9.bCqTHNMDIXxkvOP1b66t00lwF405LLayzHndSXirDlM";
        let url = "https://rebaz-qstash.requestcatcher.com/test";
        let part = |token: &str, i: usize| -> Map<String, Value> {
            let part = token.split('.').nth(i).expect("a JWT part");
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(part)
                    .expect("base64url"),
            )
            .expect("JSON")
        };
        let real: Claims =
            serde_json::from_value(Value::Object(part(REAL, 1))).expect("QStash claims");
        assert_eq!(real.body, body_hash(b"Hello World"));
        assert!(real.body.ends_with('='), "the real service pads");
        assert_eq!(real.aud, "");
        assert_eq!(real.exp - real.iat, SIGNATURE_LIFETIME_SECS);
        assert_eq!(real.sub, url);

        let token = sign(DEV_CURRENT_SIGNING_KEY, url, b"Hello World");
        let ours = verify(
            &token,
            DEV_CURRENT_SIGNING_KEY,
            DEV_NEXT_SIGNING_KEY,
            Some(url),
            b"Hello World",
        )
        .expect("our own token verifies");
        assert_eq!(ours.body, real.body);
        assert_eq!(
            (&ours.aud, &ours.iss, &ours.sub),
            (&real.aud, &real.iss, &real.sub)
        );
        assert!(ours.jti.starts_with("jwt_") && ours.jti.len() == real.jti.len());
        assert_eq!(ours.exp - ours.iat, SIGNATURE_LIFETIME_SECS);
        let keys = |m: Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(part(&token, 1)), keys(part(REAL, 1)));
        assert_eq!(part(&token, 0), part(REAL, 0));
    }

    #[test]
    fn verify_checks_key_subject_and_body() {
        let (cur, next) = (DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY);
        let url = "http://127.0.0.1:3000/api/workers/image";
        let body = br#"{"task":"t1"}"#;
        assert!(verify(&sign(cur, url, body), cur, next, Some(url), body).is_ok());
        assert!(verify(&sign(next, url, body), cur, next, Some(url), body).is_ok());
        assert!(verify(&sign("sig_other", url, body), cur, next, Some(url), body).is_err());
        assert!(verify(&sign(cur, url, body), cur, next, Some("http://x/y"), body).is_err());
        assert!(verify(&sign(cur, url, body), cur, next, None, body).is_ok());
        assert!(verify(&sign(cur, url, body), cur, next, Some(url), b"{}").is_err());

        let mut unpadded = Claims::new(url, body);
        unpadded.body = unpadded.body.trim_end_matches('=').to_owned();
        assert!(verify(&sign_claims(cur, &unpadded), cur, next, Some(url), body).is_ok());
        let mut expired = Claims::new(url, body);
        expired.exp = expired.iat - 1;
        assert!(verify(&sign_claims(cur, &expired), cur, next, Some(url), body).is_err());
        let mut early = Claims::new(url, body);
        early.nbf += 60;
        assert!(verify(&sign_claims(cur, &early), cur, next, Some(url), body).is_err());
        let mut issuer = Claims::new(url, body);
        issuer.iss = "Someone".into();
        assert!(verify(&sign_claims(cur, &issuer), cur, next, Some(url), body).is_err());
    }
}
