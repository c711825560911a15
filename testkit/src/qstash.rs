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
//!   `Upstash-Method`, `Upstash-Retries` (default 3), `Upstash-Delay`, `Upstash-Not-Before`
//!   (wins over the delay), `Upstash-Deduplication-Id` and
//!   `Upstash-Content-Based-Deduplication` (a duplicate within the window answers 202 with
//!   the first message's id and `"deduplicated": true`), `Upstash-Failure-Callback` (with
//!   `-Forward-*` and `-Retries`), `Upstash-Flow-Control-Key` / `-Value`
//!   (`parallelism=N, rate=R, period=P`), `Upstash-Timeout`, `Upstash-Label`. Features it
//!   does not have (`Upstash-Callback`, `Upstash-Retry-Delay`, `Upstash-Cron`, the other
//!   `Upstash-Failure-Callback-*` settings, URL groups, queues) get a 400 naming them, so
//!   a test never passes by silently ignoring them.
//! - Delivery: the original method and body, with `Upstash-Signature`, `Upstash-Message-Id`,
//!   `Upstash-Retried` (0 on the first try), `Upstash-Caller-Ip`, `User-Agent:
//!   Upstash-QStash`. A 2xx ends it. Anything else, a connection error or a timeout is
//!   retried after `min(86400, e^(2.5·n))` seconds (n = 1, 2, …) or after the answer's
//!   `Retry-After` (seconds, a Go duration such as `6m5s`, or an HTTP date; also
//!   `X-RateLimit-Reset*`; above one day the backoff applies). The backoff is multiplied
//!   by the time scale; a `Retry-After` is the worker's word about real time and is not. 489 with `Upstash-NonRetryable-Error: true` goes straight to the dead-letter
//!   queue. When QStash gives up the message is dead-lettered and the failure callback, if
//!   any, gets the documented JSON body (as a message of its own: signed, retried).
//! - `GET`/`DELETE /v2/messages/{id}` (the stand-in keeps finished messages, and adds
//!   `state` and `retried`), `GET /v2/dlq`, `GET`/`DELETE /v2/dlq/{dlqId}`, `GET /v2/keys`.
//!
//! # Time scale
//!
//! Every wait QStash decides on — retry backoff, `Upstash-Delay` /
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
//! `validate_aud = false`).
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
//!   "sign_with_next", "duplicate_next", "duplicate_all"}`: answers the whole configuration.
//! - `GET /_fake/stats`: counters (see [`Stats`]).
//! - `POST /_fake/reset`: forgets every message, dead letter and counter ([`QStash::reset`]).
//! - `POST /_fake/release`: messages waiting on a delay or a backoff are tried now.
//! - `POST /_fake/redeliver/{id}`: one more delivery of a message; answers the [`Delivery`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

/// Headers that are QStash features the stand-in lacks: refusing them beats ignoring them.
const UNSUPPORTED_HEADERS: [&str; 8] = [
    "upstash-callback",
    "upstash-retry-delay",
    "upstash-cron",
    "upstash-queue-name",
    "upstash-failure-callback-timeout",
    "upstash-failure-callback-delay",
    "upstash-failure-callback-method",
    "upstash-failure-callback-retry-delay",
];

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
    /// The (scaled) wait before each retry so far: backoff or `Retry-After`.
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
    pub parallelism: Option<u32>,
    pub rate: Option<u32>,
    pub period_ms: u128,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Messages due but held back by the limits.
    pub waiting: usize,
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
    created_at_ms: u64,
    not_before_ms: Option<u64>,
    failure_callback: Option<String>,
    callback_headers: Vec<(HeaderName, HeaderValue)>,
    callback_retries: Option<u32>,
    flow: Option<FlowControl>,
    timeout: Option<Duration>,
    dedup_id: Option<String>,
    labels: Vec<String>,
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

#[derive(Debug, Default)]
struct Flow {
    parallelism: Option<u32>,
    rate: Option<u32>,
    period: Duration,
    in_flight: usize,
    max_in_flight: usize,
    /// Due messages, first come first served.
    queue: VecDeque<oneshot::Sender<()>>,
    /// When each delivery in the current rate period started.
    starts: VecDeque<Instant>,
    timer_armed: bool,
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
struct Inner {
    token: String,
    current_key: String,
    next_key: String,
    delivery_timeout: Duration,
    dedup_window: Duration,
    /// f64 bits; atomics so that no lock is ever taken inside the state lock.
    time_scale: AtomicU64,
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
            current_key: options.current_key,
            next_key: options.next_key,
            delivery_timeout: options.delivery_timeout,
            dedup_window: options.dedup_window,
            time_scale: AtomicU64::new(valid_scale(options.time_scale).to_bits()),
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

    pub fn current_key(&self) -> &str {
        &self.inner.current_key
    }

    pub fn next_key(&self) -> &str {
        &self.inner.next_key
    }

    /// `QSTASH_URL`, `QSTASH_TOKEN`, `QSTASH_CURRENT_SIGNING_KEY`, `QSTASH_NEXT_SIGNING_KEY`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QSTASH_URL", self.base_url()),
            ("QSTASH_TOKEN", self.inner.token.clone()),
            ("QSTASH_CURRENT_SIGNING_KEY", self.inner.current_key.clone()),
            ("QSTASH_NEXT_SIGNING_KEY", self.inner.next_key.clone()),
        ]
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
        cancel(&self.inner, id)
    }

    /// Forgets every message (those not finished are canceled), dead letter, delivery and
    /// counter. The configuration stays; calls in flight stay counted as in flight.
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
        .route("/v2/messages/{id}", get(message_get).delete(message_cancel))
        .route("/v2/dlq", get(dlq_list))
        .route("/v2/dlq/{dlq_id}", get(dlq_get).delete(dlq_delete))
        .route("/v2/keys", get(keys))
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
    /// Unscaled seconds to wait before the first try.
    delay_secs: f64,
    dedup_key: Option<String>,
    failure_callback: Option<String>,
    callback_headers: Vec<(HeaderName, HeaderValue)>,
    callback_retries: Option<u32>,
    flow: Option<FlowControl>,
    timeout: Option<Duration>,
    labels: Vec<String>,
}

impl NewMessage {
    fn parse(url: String, headers: &HeaderMap, body: Bytes) -> Result<Self, ApiError> {
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
            text(name)?
                .map(|r| {
                    r.parse::<u32>()
                        .ok()
                        .filter(|r| *r <= RETRIES_LIMIT)
                        .ok_or_else(|| {
                            ApiError::bad(format!(
                                "invalid {} {r:?}: expected an integer from 0 to {RETRIES_LIMIT}",
                                canonical(name)
                            ))
                        })
                })
                .transpose()
        };
        let max_retries = retries("upstash-retries")?.unwrap_or(DEFAULT_RETRIES);
        let callback_retries = retries("upstash-failure-callback-retries")?;

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
            delay_secs,
            dedup_key,
            failure_callback,
            callback_headers,
            callback_retries,
            flow,
            timeout,
            labels,
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
        let flow = st.flows.entry(spec.key.clone()).or_default();
        // The latest publish sets the key's limits.
        flow.parallelism = spec.parallelism;
        flow.rate = spec.rate;
        flow.period = spec.period;
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
        created_at_ms,
        not_before_ms: (new.delay_secs > 0.0)
            .then(|| created_at_ms + (new.delay_secs * 1000.0) as u64),
        failure_callback: new.failure_callback,
        callback_headers: new.callback_headers,
        callback_retries: new.callback_retries,
        flow: new.flow,
        timeout: new.timeout,
        dedup_id: new
            .dedup_key
            .as_deref()
            .and_then(|k| k.strip_prefix("id:"))
            .map(str::to_owned),
        labels: new.labels,
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
    let new = NewMessage::parse(destination, &headers, body)?;
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
        parsed.push(NewMessage::parse(item.destination, &map, body).map_err(at)?);
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
        let permit = match flow_key {
            Some(key) => match acquire(&inner, generation, key).await {
                Some(permit) => Some(permit),
                None => return,
            },
            None => None,
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
                deliver(&inner, generation, &attempt, false, false),
                deliver(&inner, generation, &attempt, true, false),
            );
            if first.is_success() || !second.is_success() {
                first
            } else {
                second
            }
        } else {
            deliver(&inner, generation, &attempt, false, false).await
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
        m.state = MessageState::Delivered;
        m.last = Some(answer);
        Next::Done
    } else if !answer.is_non_retryable() && m.retried < m.max_retries {
        m.retried += 1;
        // A worker's Retry-After speaks of real time (a lease running out, a provider's
        // own limit): it is honoured as said. Only QStash's own backoff is scaled.
        let delay = match retry_after_secs(&answer.headers).filter(|s| *s <= MAX_RETRY_DELAY_SECS) {
            Some(secs) => scale(secs, 1.0),
            None => inner.scaled(backoff_secs(m.retried)),
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
    let Some(m) = st.messages.get_mut(id) else {
        return;
    };
    m.state = MessageState::Failed;
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
    };
    let callback = match (&m.failure_callback, &m.callback_for) {
        (Some(url), None) => Some(Msg {
            id: format!("msg_{}", random_id(40)),
            url: url.clone(),
            method: Method::POST,
            body: Bytes::from(failure_callback_body(m, &last, &dlq_id).to_string()),
            headers: m.callback_headers.clone(),
            max_retries: m.callback_retries.unwrap_or(m.max_retries),
            retried: 0,
            created_at_ms: unix_ms(),
            not_before_ms: None,
            failure_callback: None,
            callback_headers: Vec::new(),
            callback_retries: None,
            flow: None,
            timeout: m.timeout,
            dedup_id: None,
            labels: Vec::new(),
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

/// One HTTP call, recorded when it finishes.
async fn deliver(
    inner: &Inner,
    generation: u64,
    attempt: &Attempt,
    duplicate: bool,
    redelivery: bool,
) -> Answer {
    let in_flight = InFlight::enter(inner);
    let key = if inner.sign_with_next.load(Ordering::SeqCst) {
        &inner.next_key
    } else {
        &inner.current_key
    };
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
    put("upstash-signature", &sign(key, &attempt.url, &attempt.body));
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
            st.deliveries.push(Delivery {
                message_id: attempt.id.clone(),
                url: attempt.url.clone(),
                retried: attempt.retried,
                status: answer.status,
                error: answer.error.clone(),
                duplicate,
                redelivery,
                failure_callback: attempt.callback_for.is_some(),
            });
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

async fn redeliver(inner: &Arc<Inner>, id: &str) -> Option<Delivery> {
    let (generation, attempt) = {
        let st = lock(&inner.state);
        (st.generation, st.messages.get(id)?.attempt())
    };
    let answer = deliver(inner, generation, &attempt, false, true).await;
    Some(Delivery {
        message_id: attempt.id,
        url: attempt.url,
        retried: attempt.retried,
        status: answer.status,
        error: answer.error,
        duplicate: false,
        redelivery: true,
        failure_callback: attempt.callback_for.is_some(),
    })
}

fn cancel(inner: &Inner, id: &str) -> bool {
    let mut st = lock(&inner.state);
    let Some(m) = st.messages.get_mut(id) else {
        return false;
    };
    if m.state.is_finished() {
        return false;
    }
    m.state = MessageState::Canceled;
    m.wake.notify_one();
    drop(st);
    inner.changed();
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

/// Waits in the key's queue for a slot; `None` if the stand-in was reset meanwhile.
async fn acquire(inner: &Arc<Inner>, generation: u64, key: String) -> Option<FlowPermit> {
    let granted = {
        let mut st = lock(&inner.state);
        if st.generation != generation {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.flows.entry(key.clone()).or_default().queue.push_back(tx);
        pump(inner, &mut st, &key);
        rx
    };
    inner.changed();
    granted.await.ok()?;
    Some(FlowPermit {
        inner: inner.clone(),
        generation,
        key,
    })
}

/// Hands slots to the head of the key's queue while the limits allow; when the rate is
/// what holds it back, arms a timer for the moment a slot frees up.
fn pump(inner: &Arc<Inner>, st: &mut St, key: &str) {
    let generation = st.generation;
    let time_scale = inner.time_scale();
    let Some(flow) = st.flows.get_mut(key) else {
        return;
    };
    while !flow.queue.is_empty() {
        if flow
            .parallelism
            .is_some_and(|p| flow.in_flight >= p as usize)
        {
            break;
        }
        let now = Instant::now();
        if let Some(rate) = flow.rate {
            let period = scale(flow.period.as_secs_f64(), time_scale);
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
        // A waiter that went away (its message was reset) takes no slot.
        if waiter.send(()).is_ok() {
            flow.in_flight += 1;
            flow.max_in_flight = flow.max_in_flight.max(flow.in_flight);
            if flow.rate.is_some() {
                flow.starts.push_back(now);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading messages and the DLQ

fn message_json(m: &Msg) -> Value {
    let mut v = json!({
        "messageId": m.id,
        "url": m.url,
        "method": m.method.as_str(),
        "header": header_lists(m.headers.iter().map(|(n, v)| (n, v))),
        "maxRetries": m.max_retries,
        "createdAt": m.created_at_ms,
        "callerIP": m.caller_ip,
        "state": m.state.as_str(),
        "retried": m.retried,
    });
    let o = v.as_object_mut().expect("an object");
    put_body(o, "body", "bodyBase64", &m.body);
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
    let mut v = json!({
        "dlqId": d.dlq_id,
        "messageId": d.message_id,
        "url": d.url,
        "method": d.method,
        "header": d.headers,
        "maxRetries": d.max_retries,
        "retried": d.retried,
        "createdAt": d.created_at_ms,
        "callerIP": d.caller_ip,
        "responseHeader": d.response_headers,
    });
    let o = v.as_object_mut().expect("an object");
    put_body(o, "body", "bodyBase64", &d.body);
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
    if cancel(&inner, &id) {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(not_found_error(&format!("pending message {id}")))
    }
}

async fn dlq_list(
    State(inner): State<Arc<Inner>>,
    Query(filters): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorised(&inner, &headers, &uri)?;
    let st = lock(&inner.state);
    let messages: Vec<Value> = st
        .dlq
        .iter()
        .filter(|d| {
            filters
                .get("messageId")
                .is_none_or(|id| &d.message_id == id)
        })
        .filter(|d| filters.get("url").is_none_or(|url| &d.url == url))
        .map(dead_letter_json)
        .collect();
    Ok(Json(json!({ "messages": messages })).into_response())
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
    Ok(Json(json!({ "current": inner.current_key, "next": inner.next_key })).into_response())
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
}

fn config_json(inner: &Inner) -> Value {
    json!({
        "time_scale": inner.time_scale(),
        "unreachable": inner.unreachable.load(Ordering::SeqCst),
        "sign_with_next": inner.sign_with_next.load(Ordering::SeqCst),
        "duplicate_next": inner.duplicate_next.load(Ordering::SeqCst),
        "duplicate_all": inner.duplicate_all.load(Ordering::SeqCst),
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
            .map(|(key, f)| {
                (
                    key.clone(),
                    FlowStats {
                        parallelism: f.parallelism,
                        rate: f.rate,
                        period_ms: f.period.as_millis(),
                        in_flight: f.in_flight,
                        max_in_flight: f.max_in_flight,
                        waiting: f.queue.len(),
                    },
                )
            })
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
