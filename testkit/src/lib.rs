//! A local OpenAI-compatible server for tests, browser tests and benchmarks:
//!
//! - chat completions that return a valid video script, `/models`, and switchable faults
//!   ([`Behaviour`]: bad key, 429 with `Retry-After`, 5xx, refusals, malformed output);
//! - image generations (`/v1/images/generations`) answering real PNGs of the requested
//!   size, as base64 or as a URL under `/files/`;
//! - speech (`/v1/audio/speech`) answering a real WAV whose length follows the input,
//!   whatever `response_format` asks for;
//! - per-endpoint latency, applied before every image and speech answer, errors included;
//! - answers a careful client must refuse: image URLs pointing anywhere
//!   ([`FakeOpenAi::set_image_url_prefix`], with a redirecting prefix in
//!   [`FakeOpenAi::redirecting_files_url`]) and endless bodies streamed without being held
//!   in memory ([`FakeOpenAi::set_huge_answer`], [`FakeOpenAi::set_huge_files`]), with
//!   counters of what was sent and of answers the client hung up on;
//! - seeded, reproducible fault injection for images and speech ([`Faults`]);
//! - counters per [`Endpoint`]: requests, successes, in flight, and the busiest window;
//! - a control API under `/_fake/` so other processes can configure it and read counters;
//! - [`profiles`] of real OpenAI-compatible servers ([`FakeOpenAi::set_profile`]): their
//!   refusals, wrapped JSON, extra fields, 429 forms and speech formats, really encoded.
//!
//! [`qstash`] holds a local stand-in for Upstash QStash ([`QStash`]), with its own binary.
//!
//! # Control API
//!
//! It needs no key and is not counted.
//!
//! - `POST /_fake/config` with any of `{"chat_latency_ms", "image_latency_ms",
//!   "speech_latency_ms", "faults": {"rate_limited", "retry_after_secs", "server_error",
//!   "timeout", "hang_ms", "permanent_marker", "seed"}}`. Missing fields stay as they are;
//!   `"permanent_marker": null` clears the marker. Answers the whole configuration, as
//!   `GET /_fake/config` does.
//! - `GET /_fake/stats[?window_ms=N]`: `{"total"|"chat"|"images"|"speech": {"requests",
//!   "successes", "in_flight", "max_in_flight"[, "max_in_window"]}}`.
//! - `POST /_fake/reset`: clears the counters ([`FakeOpenAi::reset_counts`]) and answers
//!   the (cleared) stats. The configuration stays.

mod media;
pub mod profiles;
pub mod proxy;
pub mod qstash;
mod stock;
pub mod webhooks;

pub use stock::{StockRequest, CLIP_SECONDS as STOCK_CLIP_SECONDS, TOTAL as STOCK_TOTAL};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

pub use media::{
    probe_size, prompt_colour, solid_png, speech_duration, tone_wav, SPEECH_SAMPLE_RATE,
};
pub use profiles::{Knobs, Profile};
pub use qstash::{QStash, QStashOptions};

/// The largest image side the fake makes; bigger sizes are rejected, not shrunk, since
/// callers rely on getting exactly the size they asked for.
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// OpenAI's limit on the speech input, which also bounds the WAV the fake has to build.
pub const MAX_SPEECH_INPUT_CHARS: usize = 4096;
const MAX_IMAGES_PER_REQUEST: u32 = 10;
/// The size of each chunk of a huge answer, in bytes: all a huge answer ever holds.
const HUGE_CHUNK_BYTES: usize = 64 * 1024;

/// What the next chat completions answer with.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// A valid script, after `latency`.
    Script,
    /// 401 as OpenAI sends it, echoing part of the key.
    InvalidKey,
    /// 429 with `Retry-After: secs`.
    RateLimited { retry_after: u64 },
    /// 500 from the provider.
    ServerError,
    /// A refusal in the message.
    Refusal,
    /// Not JSON at all, `times` times, then valid scripts (exercises the repair attempt).
    Malformed { times: usize },
    /// 404 for an unknown model.
    UnknownModel,
}

/// The APIs the fake counts separately. `/v1/models` only counts in the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Chat,
    Images,
    Speech,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Chat, Endpoint::Images, Endpoint::Speech];

    fn index(self) -> usize {
        self as usize
    }
}

/// Faults injected into image and speech requests (chat has [`Behaviour`]).
///
/// Each request that would otherwise succeed takes the next draw of a splitmix64 sequence
/// seeded with `seed`, one sequence per endpoint, restarted by [`FakeOpenAi::set_faults`]
/// and [`FakeOpenAi::reset_counts`]: the same seed and the same requests give the same
/// faults. A draw below `rate_limited` answers 429; below `rate_limited + server_error`,
/// 500; below `rate_limited + server_error + timeout`, a hang; shares beyond a total of 1
/// never happen.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Share of 429 `rate_limit_exceeded` answers.
    pub rate_limited: f64,
    /// The `Retry-After` header of the 429s.
    pub retry_after_secs: u64,
    /// Share of 500 `server_error` answers.
    pub server_error: f64,
    /// Share of requests that wait `hang`, then get a 504: the client should give up first.
    pub timeout: f64,
    pub hang: Duration,
    /// A prompt or input containing it is always refused (400 `content_policy_violation`),
    /// whatever the draw: a permanent error a client must not retry. Empty matches nothing.
    pub permanent_marker: Option<String>,
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limited: 0.0,
            retry_after_secs: 0,
            server_error: 0.0,
            timeout: 0.0,
            hang: Duration::from_secs(30),
            permanent_marker: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RateLimited,
    ServerError,
    Timeout,
}

impl Faults {
    fn draw(&self, index: u64) -> Option<Fault> {
        // The index-th output of a splitmix64 generator seeded with `seed`.
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits, as a uniform float in [0, 1).
        let x = (z >> 11) as f64 / (1u64 << 53) as f64;
        let mut bound = self.rate_limited;
        if x < bound {
            return Some(Fault::RateLimited);
        }
        bound += self.server_error;
        if x < bound {
            return Some(Fault::ServerError);
        }
        bound += self.timeout;
        (x < bound).then_some(Fault::Timeout)
    }

    fn refuses(&self, text: &str) -> bool {
        self.permanent_marker
            .as_deref()
            .is_some_and(|marker| !marker.is_empty() && text.contains(marker))
    }
}

#[derive(Debug, Clone, Default)]
struct Settings {
    api_key: Option<String>,
    chat_latency: Duration,
    image_latency: Duration,
    speech_latency: Duration,
    faults: Faults,
    /// Answers every speech request with these bytes instead of a WAV of the input.
    speech_body: Option<Bytes>,
    /// Answers every image request by URL, this prefix then the file's name.
    image_url_prefix: Option<String>,
    /// Streamed answers of this many bytes, by [`Endpoint::index`].
    huge_answers: [Option<u64>; 3],
    /// Files under `/files/` are streamed answers of this many bytes.
    huge_files: Option<u64>,
    /// The server imitated ([`FakeOpenAi::set_profile`]).
    knobs: Knobs,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicUsize,
    successes: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Arrival instants, in order: they are taken while holding the lock.
    starts: Mutex<Vec<Instant>>,
    fault_draws: AtomicU64,
    /// Requests that met the profile's rate limit ([`profiles::RateLimit`]).
    rate_limited: AtomicUsize,
    /// Told of every arrival, for tests that act after the n-th request.
    arrived: tokio::sync::Notify,
    /// The prompt or input of every request answered with success.
    answered: Mutex<Vec<String>>,
}

impl Counters {
    fn enter(&self) {
        lock(&self.starts).push(Instant::now());
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.arrived.notify_waiters();
    }

    fn reset(&self) {
        lock(&self.starts).clear();
        lock(&self.answered).clear();
        self.requests.store(0, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        // Requests still in flight will leave; the maximum must not drop below them.
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        self.fault_draws.store(0, Ordering::SeqCst);
        self.rate_limited.store(0, Ordering::SeqCst);
    }

    fn view(&self, window: Option<Duration>) -> CountersView {
        CountersView {
            requests: self.requests.load(Ordering::SeqCst),
            successes: self.successes.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            max_in_window: window.map(|w| busiest_window(&lock(&self.starts), w)),
        }
    }
}

/// The most instants of the sorted `starts` inside any half-open window `[t, t + window)`.
fn busiest_window(starts: &[Instant], window: Duration) -> usize {
    if window.is_zero() {
        return 0;
    }
    let mut first = 0;
    let mut best = 0;
    for (last, &t) in starts.iter().enumerate() {
        while t.duration_since(starts[first]) >= window {
            first += 1;
        }
        best = best.max(last + 1 - first);
    }
    best
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    settings: Mutex<Settings>,
    behaviour: Mutex<Behaviour>,
    malformed_sent: AtomicUsize,
    last_body: Mutex<Option<Value>>,
    /// Every chat request body, in order.
    chat_bodies: Mutex<Vec<Value>>,
    speech_formats: Mutex<Vec<SpeechFormat>>,
    /// The `voice`, `speed` and `input` of every speech request, in order.
    speech_voices: Mutex<Vec<(Option<String>, f64, String)>>,
    /// What the fake said, and for how long: a transcription finds its words by length.
    spoken: Mutex<Vec<(Duration, String)>>,
    /// Every transcription answer since the last reset, in order.
    transcripts: Mutex<Vec<Value>>,
    total: Counters,
    endpoints: [Counters; 3],
    /// Images answered by URL, by file name.
    files: Mutex<HashMap<String, Bytes>>,
    next_file: AtomicU64,
    /// Requests under `/files/` and `/redirect/`, whatever they were answered.
    file_requests: AtomicUsize,
    huge: Arc<HugeCounters>,
    /// The Pexels and Pixabay stand-ins.
    stock: Arc<stock::Stock>,
}

/// What became of the huge answers.
#[derive(Debug, Default)]
struct HugeCounters {
    /// Bytes handed to the connection, in all.
    sent: AtomicU64,
    /// Answers dropped before their end: the client hung up.
    cut_off: AtomicUsize,
    /// Told of every cut-off.
    cut: tokio::sync::Notify,
}

impl Inner {
    fn counters(&self, endpoint: Endpoint) -> &Counters {
        &self.endpoints[endpoint.index()]
    }

    fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    fn reset_counts(&self) {
        lock(&self.chat_bodies).clear();
        lock(&self.speech_formats).clear();
        lock(&self.transcripts).clear();
        self.total.reset();
        for counters in &self.endpoints {
            counters.reset();
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Debug)]
pub struct FakeOpenAi {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl FakeOpenAi {
    /// Starts on a free loopback port; lives as long as the runtime.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake OpenAI server");
        let addr = listener.local_addr().expect("local address");
        let inner = Arc::new(Inner {
            addr,
            settings: Mutex::default(),
            behaviour: Mutex::new(Behaviour::Script),
            malformed_sent: AtomicUsize::new(0),
            last_body: Mutex::new(None),
            chat_bodies: Mutex::default(),
            speech_formats: Mutex::default(),
            spoken: Mutex::default(),
            speech_voices: Mutex::default(),
            transcripts: Mutex::default(),
            total: Counters::default(),
            endpoints: Default::default(),
            files: Mutex::default(),
            next_file: AtomicU64::new(1),
            file_requests: AtomicUsize::new(0),
            huge: Arc::default(),
            stock: Arc::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/images/generations", post(images))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/voices", get(voices))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/files/{name}", get(file))
            .route("/redirect/{target}/{name}", get(redirect))
            .route("/_fake/config", get(config_view).post(config_update))
            .route("/_fake/stats", get(stats))
            .route("/_fake/reset", post(reset))
            .with_state(inner.clone())
            .merge(stock::routes(inner.stock.clone(), format!("http://{addr}")));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    /// The base URL to put into CREVID's settings.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The stand-in for Pexels' API, for `pexels_base_url` (`stock` module).
    pub fn pexels_url(&self) -> String {
        format!("http://{}/pexels", self.addr)
    }

    /// The stand-in for Pixabay's API, for `pixabay_base_url`.
    pub fn pixabay_url(&self) -> String {
        format!("http://{}/pixabay/api", self.addr)
    }

    /// The keys the stock stand-ins accept; any non-empty key when None.
    pub fn require_stock_keys(&self, pexels: Option<&str>, pixabay: Option<&str>) {
        self.inner.stock.require_keys(pexels, pixabay);
    }

    /// Every stock search answers 429 with the library's reset header while `on`.
    pub fn set_stock_rate_limited(&self, on: bool) {
        self.inner.stock.set_rate_limited(on);
    }

    /// Every stock search received, oldest first.
    pub fn stock_requests(&self) -> Vec<StockRequest> {
        self.inner.stock.requests()
    }

    /// The names of the stock files fetched (`{rrggbb}-{w}x{h}.png|mp4`), oldest first.
    pub fn stock_media_requests(&self) -> Vec<String> {
        self.inner.stock.media_requests()
    }

    /// Where images answered by URL live: `http://ADDR/files/`, then a file's name.
    pub fn files_url(&self) -> String {
        format!("http://{}/files/", self.addr)
    }

    /// A prefix for [`FakeOpenAi::set_image_url_prefix`] whose URLs answer `302 Found`
    /// with `Location: http://<target>/files/NAME`: `target` is a `host:port` such as
    /// `localhost:PORT`, another name for this fake.
    pub fn redirecting_files_url(&self, target: &str) -> String {
        format!("http://{}/redirect/{target}/", self.addr)
    }

    /// Where the control API lives: `<control_url>/config`, `/stats`, `/reset`.
    pub fn control_url(&self) -> String {
        format!("http://{}/_fake", self.addr)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.inner.malformed_sent.store(0, Ordering::SeqCst);
        *lock(&self.inner.behaviour) = behaviour;
    }

    /// Delay before each chat answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.settings).chat_latency = latency;
    }

    /// Delay before each image answer, whatever the answer is.
    pub fn set_image_latency(&self, latency: Duration) {
        lock(&self.inner.settings).image_latency = latency;
    }

    /// Delay before each speech answer, whatever the answer is.
    pub fn set_speech_latency(&self, latency: Duration) {
        lock(&self.inner.settings).speech_latency = latency;
    }

    /// Answers every later speech request with `body` (as `audio/wav`, whatever the
    /// profile) instead of a WAV of its input: a bogus header, an empty body. `None` goes
    /// back to real WAVs.
    pub fn set_speech_body(&self, body: Option<Vec<u8>>) {
        lock(&self.inner.settings).speech_body = body.map(Bytes::from);
    }

    /// Answers every later image request by URL, whatever `response_format` asks (as some
    /// OpenAI-compatible servers do): `prefix` followed by the file's name (`img-1.png`).
    /// The image is kept under `/files/` as usual, so [`FakeOpenAi::files_url`] is the
    /// fake's own prefix; any other prefix (another name for the fake, a private address,
    /// [`FakeOpenAi::redirecting_files_url`]) tests what a client agrees to fetch. `None`
    /// goes back to answering as asked, with URLs under `files_url`.
    pub fn set_image_url_prefix(&self, prefix: Option<String>) {
        lock(&self.inner.settings).image_url_prefix = prefix;
    }

    /// Answers every later request to `endpoint` that would otherwise succeed with a body
    /// of `bytes` bytes, sent chunked without a `Content-Length`, made chunk by chunk as
    /// the connection takes them (a 100 MB answer costs 64 KiB here): for chat and images
    /// a JSON answer whose one string (the content, the `b64_json`) runs on to the end; for
    /// speech a WAV header followed by silence. `None` goes back to real answers. See
    /// [`FakeOpenAi::huge_bytes_sent`] and [`FakeOpenAi::wait_for_huge_cut_off`].
    pub fn set_huge_answer(&self, endpoint: Endpoint, bytes: Option<u64>) {
        lock(&self.inner.settings).huge_answers[endpoint.index()] = bytes;
    }

    /// Answers every later request under `/files/`, whatever its name, with a PNG
    /// signature followed by zeros, `bytes` long in all, streamed as
    /// [`FakeOpenAi::set_huge_answer`] does. `None` goes back to the stored images.
    pub fn set_huge_files(&self, bytes: Option<u64>) {
        lock(&self.inner.settings).huge_files = bytes;
    }

    /// Bytes of huge answers handed to the connection so far (a few hundred KiB of it may
    /// still sit in buffers): far less than a huge answer's size means the client stopped
    /// reading.
    pub fn huge_bytes_sent(&self) -> u64 {
        self.inner.huge.sent.load(Ordering::SeqCst)
    }

    /// Huge answers dropped before their end because the client hung up.
    pub fn huge_answers_cut_off(&self) -> usize {
        self.inner.huge.cut_off.load(Ordering::SeqCst)
    }

    /// Resolves once at least `n` huge answers have been cut off, without polling.
    pub async fn wait_for_huge_cut_off(&self, n: usize) {
        let huge = &self.inner.huge;
        loop {
            let cut = huge.cut.notified();
            tokio::pin!(cut);
            cut.as_mut().enable();
            if huge.cut_off.load(Ordering::SeqCst) >= n {
                return;
            }
            cut.await;
        }
    }

    /// Requests under `/files/` and `/redirect/`: how often a client fetched an image URL.
    pub fn file_requests(&self) -> usize {
        self.inner.file_requests.load(Ordering::SeqCst)
    }

    /// Replaces the faults of image and speech requests and restarts their draws.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.inner.settings).faults = faults;
        for endpoint in [Endpoint::Images, Endpoint::Speech] {
            self.inner
                .counters(endpoint)
                .fault_draws
                .store(0, Ordering::SeqCst);
        }
    }

    pub fn faults(&self) -> Faults {
        self.inner.settings().faults
    }

    /// When set, any other bearer token gets a 401, on every endpoint.
    pub fn require_key(&self, key: &str) {
        lock(&self.inner.settings).api_key = Some(key.to_owned());
    }

    /// Requests to all endpoints, `/v1/models` included.
    pub fn requests(&self) -> usize {
        self.inner.total.requests.load(Ordering::SeqCst)
    }

    /// The most requests in flight at once, across all endpoints.
    pub fn max_in_flight(&self) -> usize {
        self.inner.total.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests to `endpoint`, whatever they were answered.
    pub fn requests_to(&self, endpoint: Endpoint) -> usize {
        self.inner
            .counters(endpoint)
            .requests
            .load(Ordering::SeqCst)
    }

    pub fn in_flight_to(&self, endpoint: Endpoint) -> usize {
        self.inner
            .counters(endpoint)
            .in_flight
            .load(Ordering::SeqCst)
    }

    pub fn max_in_flight_to(&self, endpoint: Endpoint) -> usize {
        self.inner
            .counters(endpoint)
            .max_in_flight
            .load(Ordering::SeqCst)
    }

    /// Requests to `endpoint` answered with a 2xx.
    pub fn successes_to(&self, endpoint: Endpoint) -> usize {
        self.inner
            .counters(endpoint)
            .successes
            .load(Ordering::SeqCst)
    }

    /// The most requests to `endpoint` that arrived within any `window` (half-open, so
    /// arrivals exactly `window` apart are in different windows), faulted ones included.
    /// For checking a client's own rate limiting.
    pub fn max_in_window(&self, endpoint: Endpoint, window: Duration) -> usize {
        busiest_window(&lock(&self.inner.counters(endpoint).starts), window)
    }

    /// Resolves once `endpoint` has received at least `n` requests (counted since the
    /// last reset), without polling.
    pub async fn wait_for_requests(&self, endpoint: Endpoint, n: usize) {
        let counters = self.inner.counters(endpoint);
        loop {
            let arrived = counters.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if counters.requests.load(Ordering::SeqCst) >= n {
                return;
            }
            arrived.await;
        }
    }

    /// The prompt (images) or input (speech) of every successful answer, in order.
    pub fn answered(&self, endpoint: Endpoint) -> Vec<String> {
        lock(&self.inner.counters(endpoint).answered).clone()
    }

    /// Clears every counter and recorded arrival, and restarts the fault draws. Requests
    /// in flight stay counted as in flight.
    pub fn reset_counts(&self) {
        self.inner.reset_counts();
    }

    /// The `voice`, `speed` (1.0 when not sent) and `input` of every speech request, in
    /// order.
    pub fn speech_voices(&self) -> Vec<(Option<String>, f64, String)> {
        lock(&self.inner.speech_voices).clone()
    }

    /// The last chat request body, to check what CREVID sent.
    pub fn last_request(&self) -> Option<Value> {
        lock(&self.inner.last_body).clone()
    }

    /// Every chat request body since the last reset, in order: which `response_format`
    /// each asked for, whether it sent `temperature`.
    pub fn chat_requests(&self) -> Vec<Value> {
        lock(&self.inner.chat_bodies).clone()
    }

    /// The format of every speech request since the last reset that was answered or whose
    /// format was refused, in order.
    pub fn speech_formats(&self) -> Vec<SpeechFormat> {
        lock(&self.inner.speech_formats).clone()
    }

    /// Every transcription answer (`verbose_json`) since the last reset, in order.
    pub fn transcripts(&self) -> Vec<Value> {
        lock(&self.inner.transcripts).clone()
    }

    /// Answers from now on as `profile`'s server does ([`Profile::OpenAi`], the default,
    /// changes nothing). Like the other settings it outlasts [`FakeOpenAi::reset_counts`],
    /// which restarts its rate limit as it restarts the fault draws.
    pub fn set_profile(&self, profile: Profile) {
        self.set_knobs(*profile.knobs());
    }

    /// Answers from now on with `knobs`: a server no profile describes (a proxy sending a
    /// fractional `Retry-After`, say). Restarts the rate limit, as [`FakeOpenAi::set_profile`].
    ///
    /// # Panics
    /// If a patch's `set` is not a JSON object ([`Knobs::bad_patch`]): a typo in a test
    /// should fail there, not quietly change nothing.
    pub fn set_knobs(&self, knobs: Knobs) {
        if let Some(set) = knobs.bad_patch() {
            panic!("a patch's `set` must be a JSON object, not {set:?}");
        }
        lock(&self.inner.settings).knobs = knobs;
        for counters in &self.inner.endpoints {
            counters.rate_limited.store(0, Ordering::SeqCst);
        }
    }
}

/// What one speech request asked for and got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechFormat {
    /// Its `response_format` (JSON text if not a string); `None` when it sent none.
    pub requested: Option<String>,
    /// The format of the answer ([`profiles::Audio::name`]); `None` when refused.
    pub answered: Option<&'static str>,
}

/// Counts a request while it lives; [`InFlight::finish`] counts its success.
struct InFlight {
    inner: Arc<Inner>,
    endpoint: Option<Endpoint>,
}

impl InFlight {
    fn enter(inner: &Arc<Inner>, endpoint: Option<Endpoint>) -> Self {
        inner.total.enter();
        if let Some(endpoint) = endpoint {
            inner.counters(endpoint).enter();
        }
        InFlight {
            inner: inner.clone(),
            endpoint,
        }
    }

    fn finish(self, response: Response) -> Response {
        if response.status().is_success() {
            self.inner.total.successes.fetch_add(1, Ordering::SeqCst);
            if let Some(endpoint) = self.endpoint {
                self.inner
                    .counters(endpoint)
                    .successes
                    .fetch_add(1, Ordering::SeqCst);
            }
        }
        response
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.total.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(endpoint) = self.endpoint {
            self.inner
                .counters(endpoint)
                .in_flight
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An error answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<String>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            retry_after: None,
        }
    }

    fn on(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn invalid_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

fn invalid_param(param: &str, message: impl Into<String>) -> ApiError {
    invalid_request("invalid_value", message).on(param)
}

fn rate_limited(message: impl Into<String>, retry_after: u64) -> ApiError {
    ApiError {
        retry_after: Some(retry_after),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            message,
        )
    }
}

fn server_error() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "server_error",
        "The server had an error",
    )
}

/// Request bodies are parsed by hand so that bad JSON gets OpenAI's 400, not axum's text.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        invalid_request(
            "invalid_json",
            format!("We could not parse the JSON body of your request: {e}."),
        )
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = inner.settings().api_key else {
        return Ok(());
    };
    let given = bearer(headers);
    if given == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(invalid_key(given.unwrap_or_default()))
    }
}

fn invalid_key(given: &str) -> ApiError {
    // Like OpenAI: the message repeats the start and end of the key it got.
    let shown: String = given
        .chars()
        .take(8)
        .chain("****".chars())
        .chain(
            given
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        )
        .collect();
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        format!("Incorrect API key provided: {shown}."),
    )
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let guard = InFlight::enter(&inner, None);
    let response = (|| {
        authorised(&inner, &headers)?;
        if *lock(&inner.behaviour) == Behaviour::InvalidKey {
            return Err(invalid_key(""));
        }
        Ok(Json(json!({ "object": "list", "data": [
            { "id": "fake-script-model", "object": "model", "created": 0, "owned_by": "crevid-testkit" },
            { "id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "crevid-testkit" }
        ]}))
        .into_response())
    })();
    guard.finish(response.into_response())
}

/// Kokoro-FastAPI's `GET /v1/audio/voices` (`api/src/routers/openai_compatible.py`:
/// `{"voices": [...]}`) where the profile has a list; elsewhere OpenAI's answer to a
/// route it does not have.
async fn voices(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let guard = InFlight::enter(&inner, None);
    let response = (|| -> Result<Response, ApiError> {
        authorised(&inner, &headers)?;
        match inner.settings().knobs.voices {
            Some(voices) => Ok(Json(json!({ "voices": voices })).into_response()),
            None => Ok((
                StatusCode::NOT_FOUND,
                Json(json!({ "error": {
                    "message": "Invalid URL (GET /v1/audio/voices)",
                    "type": "invalid_request_error",
                    "param": null,
                    "code": null
                }})),
            )
                .into_response()),
        }
    })();
    guard.finish(response.into_response())
}

async fn chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::enter(&inner, Some(Endpoint::Chat));
    let response = chat_answer(&inner, &headers, &body).await;
    guard.finish(response.into_response())
}

async fn chat_answer(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let settings = inner.settings();
    if let Some(missing) = settings.knobs.missing(Endpoint::Chat) {
        return Ok(missing);
    }
    let body: Value = parse(body)?;
    *lock(&inner.last_body) = Some(body.clone());
    lock(&inner.chat_bodies).push(body.clone());
    authorised(inner, headers)?;
    sleep(settings.chat_latency).await;
    if let Some(bytes) = settings.huge_answers[Endpoint::Chat.index()] {
        return Ok(huge_answer(
            inner,
            "application/json",
            concat!(
                r#"{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"#,
                r#""model":"fake","choices":[{"index":0,"message":{"role":"assistant","content":""#
            )
            .as_bytes(),
            br#""},"finish_reason":"stop"}]}"#,
            b'A',
            bytes,
        ));
    }
    let chat = &settings.knobs.chat;
    if let Some(refusal) = chat.refusal(&body) {
        return Ok(refusal);
    }
    if let Some(limited) = profile_rate_limit(inner, Endpoint::Chat, &settings.knobs) {
        return Ok(limited);
    }
    let behaviour = lock(&inner.behaviour).clone();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake")
        .to_owned();
    match behaviour {
        Behaviour::InvalidKey => Err(invalid_key(bearer(headers).unwrap_or_default())),
        Behaviour::RateLimited { retry_after } => {
            Err(rate_limited("Rate limit reached for requests", retry_after))
        }
        Behaviour::ServerError => Err(server_error()),
        Behaviour::UnknownModel => {
            // Some providers quote the key they were given; CREVID must scrub it.
            let given = bearer(headers).unwrap_or_default();
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("The model `{model}` does not exist or key {given} has no access to it."),
            ))
        }
        Behaviour::Refusal => Ok(completion(
            &model,
            Value::Null,
            json!("I can't help with that request."),
            chat,
        )),
        Behaviour::Malformed { times }
            if inner.malformed_sent.fetch_add(1, Ordering::SeqCst) < times =>
        {
            Ok(completion(
                &model,
                json!("Sure! Here is your script: title = maybe"),
                Value::Null,
                chat,
            ))
        }
        Behaviour::Malformed { .. } | Behaviour::Script => {
            let content = chat.content(script_for(&body), &body);
            Ok(completion(&model, json!(content), Value::Null, chat))
        }
    }
}

/// The profile's 429 while `endpoint` has not had its count of them yet.
fn profile_rate_limit(inner: &Inner, endpoint: Endpoint, knobs: &Knobs) -> Option<Response> {
    let limit = knobs.rate_limit?;
    let seen = inner
        .counters(endpoint)
        .rate_limited
        .fetch_add(1, Ordering::SeqCst);
    (seen < limit.times).then(|| limit.response())
}

/// A completion in OpenAI's shape, changed as the profile's server answers.
fn completion(model: &str, content: Value, refusal: Value, chat: &profiles::ChatKnobs) -> Response {
    let mut completion = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": refusal },
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": 50, "completion_tokens": 200, "total_tokens": 250 }
    });
    chat.patch(&mut completion);
    Json(completion).into_response()
}

/// A deterministic script that follows the prompt's "Topic:" and "Scenes:" lines.
pub fn script_for(body: &Value) -> Value {
    let prompt = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let line = |key: &str| {
        prompt
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let topic = Some(line("Topic:"))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "Something".into());
    let scenes: usize = line("Scenes:").parse().unwrap_or(3).clamp(1, 30);
    let seconds: f64 = line("Target length:")
        .trim_end_matches(" seconds")
        .parse()
        .unwrap_or(30.0);
    json!({
        "title": format!("All about {topic}"),
        "hook": format!("You won't believe this about {topic}."),
        "scenes": (1..=scenes).map(|i| json!({
            "narration": format!("Part {i} of the story of {topic}, told in a few clear sentences."),
            "visual_prompt": format!("A striking picture of {topic}, part {i}"),
            "seconds": (seconds / scenes as f64 * 10.0).round() / 10.0,
        })).collect::<Vec<_>>(),
        "description": format!("A short video about {topic}."),
        "hashtags": ["crevid", "shorts"],
    })
}

/// A non-empty text field, or OpenAI's 400 naming it.
fn required_text(value: Option<String>, param: &str) -> Result<String, ApiError> {
    let value = value.ok_or_else(|| {
        invalid_request(
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
        )
        .on(param)
    })?;
    if value.trim().is_empty() {
        return Err(invalid_request(
            "empty_string",
            format!("Invalid '{param}': empty string. Expected a non-empty string."),
        )
        .on(param));
    }
    Ok(value)
}

/// The permanent refusal, then the drawn fault if any. Runs only for requests that would
/// otherwise succeed, so invalid requests do not shift the fault sequence.
async fn inject_faults(
    inner: &Inner,
    endpoint: Endpoint,
    faults: &Faults,
    text: &str,
    model: &str,
) -> Result<(), ApiError> {
    if faults.refuses(text) {
        return Err(invalid_request(
            "content_policy_violation",
            "Your request was rejected as a result of our safety system.",
        ));
    }
    let index = inner
        .counters(endpoint)
        .fault_draws
        .fetch_add(1, Ordering::SeqCst);
    match faults.draw(index) {
        None => Ok(()),
        Some(Fault::RateLimited) => {
            let secs = faults.retry_after_secs;
            Err(rate_limited(
                format!("Rate limit reached for {model} on requests per min (RPM). Please try again in {secs}s."),
                secs,
            ))
        }
        Some(Fault::ServerError) => Err(server_error()),
        Some(Fault::Timeout) => {
            sleep(faults.hang).await;
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                "Request timed out.",
            ))
        }
    }
}

#[derive(Deserialize)]
struct ImageRequest {
    model: Option<String>,
    prompt: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<String>,
    // `quality`, `style` and the rest are accepted and ignored.
}

#[derive(Clone, Copy, PartialEq)]
enum ImageFormat {
    Base64,
    Url,
}

async fn images(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::enter(&inner, Some(Endpoint::Images));
    let response = images_answer(&inner, &headers, &body).await;
    guard.finish(response.into_response())
}

async fn images_answer(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let settings = inner.settings();
    sleep(settings.image_latency).await;
    if let Some(missing) = settings.knobs.missing(Endpoint::Images) {
        return Ok(missing);
    }
    authorised(inner, headers)?;
    let request: ImageRequest = parse(body)?;
    let prompt = required_text(request.prompt, "prompt")?;
    let n = request.n.unwrap_or(1);
    if !(1..=MAX_IMAGES_PER_REQUEST).contains(&n) {
        return Err(invalid_param(
            "n",
            format!("Invalid 'n': {n}. Expected 1 to {MAX_IMAGES_PER_REQUEST} images."),
        ));
    }
    let (width, height) = image_size(request.size.as_deref().unwrap_or("auto"))?;
    let knobs = &settings.knobs.images;
    if let (Some(_), Some(refusal)) = (&request.response_format, knobs.refuse_response_format) {
        return Ok(refusal.render(&[]));
    }
    let format = match request.response_format.as_deref() {
        _ if settings.image_url_prefix.is_some() => ImageFormat::Url,
        None if knobs.url_by_default => ImageFormat::Url,
        None | Some("b64_json") => ImageFormat::Base64,
        Some("url") => ImageFormat::Url,
        Some(other) => {
            return Err(invalid_param(
                "response_format",
                format!("Invalid 'response_format': '{other}'. Expected 'b64_json' or 'url'."),
            ))
        }
    };
    let model = request.model.as_deref().unwrap_or("gpt-image-1");
    if let Some(limited) = profile_rate_limit(inner, Endpoint::Images, &settings.knobs) {
        return Ok(limited);
    }
    inject_faults(inner, Endpoint::Images, &settings.faults, &prompt, model).await?;
    if let Some(bytes) = settings.huge_answers[Endpoint::Images.index()] {
        return Ok(huge_answer(
            inner,
            "application/json",
            br#"{"created":1700000000,"data":[{"b64_json":""#,
            br#""}]}"#,
            b'A',
            bytes,
        ));
    }

    let rgb = prompt_colour(&prompt);
    // Deflating a large image takes a while in test builds; keep it off the runtime.
    let png = tokio::task::spawn_blocking(move || solid_png(width, height, rgb))
        .await
        .map(Bytes::from)
        .map_err(|_| server_error())?;
    let mut data: Vec<Value> = (0..n)
        .map(|_| match format {
            ImageFormat::Base64 => json!({
                "b64_json": base64::engine::general_purpose::STANDARD.encode(&png),
                "revised_prompt": null,
            }),
            ImageFormat::Url => {
                let id = inner.next_file.fetch_add(1, Ordering::SeqCst);
                let name = format!("img-{id}.png");
                let url = match &settings.image_url_prefix {
                    Some(prefix) => format!("{prefix}{name}"),
                    None => format!("http://{}/files/{name}", inner.addr),
                };
                lock(&inner.files).insert(name, png.clone());
                json!({ "url": url, "revised_prompt": null })
            }
        })
        .collect();
    for item in &mut data {
        knobs.item.apply(item);
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    lock(&inner.counters(Endpoint::Images).answered).push(prompt);
    let mut answer = json!({ "created": created, "data": data });
    knobs.response.apply(&mut answer);
    Ok(Json(answer).into_response())
}

/// `"WxH"` with each side 1 to [`MAX_IMAGE_SIDE`], or `"auto"` (1024x1024).
fn image_size(size: &str) -> Result<(u32, u32), ApiError> {
    if size == "auto" {
        return Ok((1024, 1024));
    }
    let side = |s: &str| {
        Some(s)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|v| (1..=MAX_IMAGE_SIDE).contains(v))
    };
    size.split_once('x')
        .and_then(|(w, h)| Some((side(w)?, side(h)?)))
        .ok_or_else(|| {
            invalid_param(
                "size",
                format!(
                    "Invalid 'size': '{size}'. Expected 'auto' or 'WIDTHxHEIGHT', each side 1 to {MAX_IMAGE_SIDE}."
                ),
            )
        })
}

#[derive(Deserialize)]
struct SpeechRequest {
    model: Option<String>,
    input: Option<String>,
    speed: Option<f64>,
    /// Without a profile's speech knobs the answer is a WAV whatever this says.
    response_format: Option<Value>,
    /// Any is accepted; recorded for the tests.
    voice: Option<String>,
}

async fn speech(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::enter(&inner, Some(Endpoint::Speech));
    let response = speech_answer(&inner, &headers, &body).await;
    guard.finish(response.into_response())
}

/// A WAV whatever `response_format` asks for, unless the profile has speech knobs: then
/// the format it picks, encoded by ffmpeg.
async fn speech_answer(
    inner: &Inner,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let settings = inner.settings();
    sleep(settings.speech_latency).await;
    if let Some(missing) = settings.knobs.missing(Endpoint::Speech) {
        return Ok(missing);
    }
    authorised(inner, headers)?;
    let request: SpeechRequest = parse(body)?;
    let input = required_text(request.input, "input")?;
    if input.chars().count() > MAX_SPEECH_INPUT_CHARS {
        return Err(invalid_param(
            "input",
            format!("Invalid 'input': longer than {MAX_SPEECH_INPUT_CHARS} characters."),
        ));
    }
    let speed = request.speed.unwrap_or(1.0);
    lock(&inner.speech_voices).push((request.voice.clone(), speed, input.clone()));
    if !(0.25..=4.0).contains(&speed) {
        return Err(invalid_param(
            "speed",
            format!("Invalid 'speed': {speed}. Expected 0.25 to 4.0."),
        ));
    }
    let requested = request.response_format.map(|format| match format {
        Value::String(format) => format,
        other => other.to_string(),
    });
    let record = |answered| {
        lock(&inner.speech_formats).push(SpeechFormat {
            requested: requested.clone(),
            answered,
        });
    };
    // A body set by `set_speech_body` is sent as it is, whatever the profile.
    let encoding = match settings.knobs.speech {
        Some(speech) if settings.speech_body.is_none() => match speech.pick(requested.as_deref()) {
            Ok((audio, content_type)) => Some((speech, audio, content_type)),
            Err(refusal) => {
                record(None);
                return Ok(*refusal);
            }
        },
        _ => None,
    };
    let model = request.model.as_deref().unwrap_or("tts-1");
    if let Some(limited) = profile_rate_limit(inner, Endpoint::Speech, &settings.knobs) {
        return Ok(limited);
    }
    inject_faults(inner, Endpoint::Speech, &settings.faults, &input, model).await?;
    if let Some(bytes) = settings.huge_answers[Endpoint::Speech.index()] {
        // A header claiming the longest data chunk there is, then silence.
        return Ok(huge_answer(
            inner,
            "audio/wav",
            b"RIFF\xff\xff\xff\xffWAVE",
            b"",
            0,
            bytes,
        ));
    }

    let wav = match settings.speech_body {
        Some(body) => body.to_vec(),
        None => {
            let duration = speech_duration(&input, speed);
            lock(&inner.spoken).push((duration, input.clone()));
            tokio::task::spawn_blocking(move || tone_wav(duration))
                .await
                .map_err(|_| server_error())?
        }
    };
    let (answered, response) = match encoding {
        Some((speech, audio, content_type)) => {
            let bytes = audio.encode(wav).await.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "server_error",
                    format!("The fake could not make {}: {e}", audio.name()),
                )
            })?;
            (audio.name(), speech.respond(bytes, content_type))
        }
        None => (
            "wav",
            ([(header::CONTENT_TYPE, "audio/wav")], wav).into_response(),
        ),
    };
    lock(&inner.counters(Endpoint::Speech).answered).push(input);
    record(Some(answered));
    Ok(response)
}

/// OpenAI's `/v1/audio/transcriptions` for the fake's own speech: the audio's length
/// names what the fake said (the tone carries no words), and each word starts at its
/// place among the words, as the fake's speech gives every word the same time. Only
/// `verbose_json` with word timestamps is offered; other requests get OpenAI's 400.
async fn transcriptions(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let answer = async {
        authorised(&inner, &headers)?;
        let mut file = None;
        let mut format = None;
        let mut granularities = Vec::new();
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or_default().to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|_| invalid_request("invalid_file", "The upload was cut short."))?;
            match name.as_str() {
                "file" => file = Some(bytes),
                "response_format" => format = Some(String::from_utf8_lossy(&bytes).into_owned()),
                "timestamp_granularities[]" => {
                    granularities.push(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => {}
            }
        }
        let file = file.ok_or_else(|| {
            invalid_request(
                "missing_required_parameter",
                "Missing required parameter: 'file'.",
            )
            .on("file")
        })?;
        if format.as_deref() != Some("verbose_json") || !granularities.iter().any(|g| g == "word") {
            return Err(invalid_param(
                "timestamp_granularities",
                "The fake answers only verbose_json with word timestamps.",
            ));
        }
        let Some(length) = wav_length(&file) else {
            return Err(invalid_request(
                "invalid_value",
                "Audio file might be corrupted or unsupported.",
            ));
        };
        // The closest length the fake spoke, within a frame of the re-encoding.
        let spoken = lock(&inner.spoken)
            .iter()
            .min_by_key(|(d, _)| d.abs_diff(length))
            .filter(|(d, _)| d.abs_diff(length) <= Duration::from_millis(100))
            .cloned();
        let (said, duration) = match spoken {
            Some((duration, said)) => (said, duration),
            None => (String::new(), length),
        };
        let words: Vec<&str> = said.split_whitespace().collect();
        let per_word = duration.as_secs_f64() / words.len().max(1) as f64;
        let answer = json!({
            "task": "transcribe",
            "language": "english",
            "duration": length.as_secs_f64(),
            "text": said,
            "words": words.iter().enumerate().map(|(i, word)| json!({
                "word": word,
                "start": i as f64 * per_word,
                "end": (i + 1) as f64 * per_word,
            })).collect::<Vec<_>>(),
            "segments": [],
        });
        lock(&inner.transcripts).push(answer.clone());
        Ok::<_, ApiError>(Json(answer).into_response())
    }
    .await;
    answer.into_response()
}

/// The length of a PCM WAV's sound, from its `fmt ` and `data` chunks.
fn wav_length(wav: &[u8]) -> Option<Duration> {
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= wav.len() {
            byte_rate = Some(u32::from_le_bytes(
                wav[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let len = size.min(wav.len() - body);
            return Some(Duration::from_secs_f64(
                len as f64 / f64::from(byte_rate?.max(1)),
            ));
        }
        at = body + size + size % 2;
    }
    None
}

async fn file(State(inner): State<Arc<Inner>>, Path(name): Path<String>) -> Response {
    inner.file_requests.fetch_add(1, Ordering::SeqCst);
    if let Some(bytes) = inner.settings().huge_files {
        return huge_answer(&inner, "image/png", b"\x89PNG\r\n\x1a\n", b"", 0, bytes);
    }
    match lock(&inner.files).get(&name) {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png.clone()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("No file named '{name}'."),
        )
        .into_response(),
    }
}

/// `302 Found` to `http://<target>/files/<name>`.
async fn redirect(
    State(inner): State<Arc<Inner>>,
    Path((target, name)): Path<(String, String)>,
) -> Response {
    inner.file_requests.fetch_add(1, Ordering::SeqCst);
    match HeaderValue::from_str(&format!("http://{target}/files/{name}")) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => invalid_request("invalid_value", "Not a usable redirect target.").into_response(),
    }
}

/// A streamed answer of `len` bytes: `head`, then `fill` bytes, then `tail`.
fn huge_answer(
    inner: &Inner,
    content_type: &'static str,
    head: &'static [u8],
    tail: &'static [u8],
    fill: u8,
    len: u64,
) -> Response {
    let head = Bytes::from_static(head);
    let tail = Bytes::from_static(tail);
    let body = HugeBody {
        fill_left: len.saturating_sub((head.len() + tail.len()) as u64),
        head,
        tail,
        fill: Bytes::from(vec![fill; HUGE_CHUNK_BYTES]),
        counters: inner.huge.clone(),
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// A body made a chunk at a time, only when the connection asks for the next one, with no
/// size hint (so it is sent chunked, and a client cannot refuse it by its length). It
/// counts what it hands over, and counts itself cut off if dropped before its end.
struct HugeBody {
    head: Bytes,
    fill_left: u64,
    /// One chunk of the fill, sliced for each frame (no copy).
    fill: Bytes,
    tail: Bytes,
    counters: Arc<HugeCounters>,
}

impl http_body::Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = if !this.head.is_empty() {
            std::mem::take(&mut this.head)
        } else if this.fill_left > 0 {
            let n = this.fill_left.min(this.fill.len() as u64);
            this.fill_left -= n;
            this.fill.slice(..n as usize)
        } else if !this.tail.is_empty() {
            std::mem::take(&mut this.tail)
        } else {
            return Poll::Ready(None);
        };
        this.counters
            .sent
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

impl Drop for HugeBody {
    fn drop(&mut self) {
        if !self.head.is_empty() || self.fill_left > 0 || !self.tail.is_empty() {
            self.counters.cut_off.fetch_add(1, Ordering::SeqCst);
            self.counters.cut.notify_waiters();
        }
    }
}

/// `Some(Some(x))` for a value, `Some(None)` for `null`, `None` (by `default`) if missing.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A change to the configuration; missing fields stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    chat_latency_ms: Option<u64>,
    image_latency_ms: Option<u64>,
    speech_latency_ms: Option<u64>,
    faults: Option<FaultsPatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsPatch {
    rate_limited: Option<f64>,
    retry_after_secs: Option<u64>,
    server_error: Option<f64>,
    timeout: Option<f64>,
    hang_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    permanent_marker: Option<Option<String>>,
    seed: Option<u64>,
}

impl FaultsPatch {
    fn apply(self, faults: &mut Faults) {
        let FaultsPatch {
            rate_limited,
            retry_after_secs,
            server_error,
            timeout,
            hang_ms,
            permanent_marker,
            seed,
        } = self;
        faults.rate_limited = rate_limited.unwrap_or(faults.rate_limited);
        faults.retry_after_secs = retry_after_secs.unwrap_or(faults.retry_after_secs);
        faults.server_error = server_error.unwrap_or(faults.server_error);
        faults.timeout = timeout.unwrap_or(faults.timeout);
        faults.hang = hang_ms.map_or(faults.hang, Duration::from_millis);
        faults.permanent_marker = permanent_marker.unwrap_or(faults.permanent_marker.take());
        faults.seed = seed.unwrap_or(faults.seed);
    }
}

/// Shares must be probabilities that add up to at most 1; a typo in a benchmark script
/// should fail loudly rather than quietly change the mix.
fn check_shares(faults: &Faults) -> Result<(), ApiError> {
    let shares = [
        ("rate_limited", faults.rate_limited),
        ("server_error", faults.server_error),
        ("timeout", faults.timeout),
    ];
    if let Some((name, share)) = shares.iter().find(|(_, s)| !(0.0..=1.0).contains(s)) {
        return Err(invalid_param(
            &format!("faults.{name}"),
            format!("Invalid 'faults.{name}': {share}. Expected a share from 0 to 1."),
        ));
    }
    let total: f64 = shares.iter().map(|(_, s)| s).sum();
    if total > 1.0 + 1e-9 {
        return Err(invalid_param(
            "faults",
            format!("The fault shares add up to {total}, more than 1."),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct ConfigView {
    chat_latency_ms: u128,
    image_latency_ms: u128,
    speech_latency_ms: u128,
    faults: FaultsView,
}

#[derive(Serialize)]
struct FaultsView {
    rate_limited: f64,
    retry_after_secs: u64,
    server_error: f64,
    timeout: f64,
    hang_ms: u128,
    permanent_marker: Option<String>,
    seed: u64,
}

impl From<Settings> for ConfigView {
    fn from(s: Settings) -> Self {
        let f = s.faults;
        ConfigView {
            chat_latency_ms: s.chat_latency.as_millis(),
            image_latency_ms: s.image_latency.as_millis(),
            speech_latency_ms: s.speech_latency.as_millis(),
            faults: FaultsView {
                rate_limited: f.rate_limited,
                retry_after_secs: f.retry_after_secs,
                server_error: f.server_error,
                timeout: f.timeout,
                hang_ms: f.hang.as_millis(),
                permanent_marker: f.permanent_marker,
                seed: f.seed,
            },
        }
    }
}

async fn config_view(State(inner): State<Arc<Inner>>) -> Response {
    Json(ConfigView::from(inner.settings())).into_response()
}

async fn config_update(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Json<ConfigView>, ApiError> {
    let patch: ConfigPatch = parse(&body)?;
    let mut settings = lock(&inner.settings);
    let mut next = settings.clone();
    let ms = Duration::from_millis;
    next.chat_latency = patch.chat_latency_ms.map_or(next.chat_latency, ms);
    next.image_latency = patch.image_latency_ms.map_or(next.image_latency, ms);
    next.speech_latency = patch.speech_latency_ms.map_or(next.speech_latency, ms);
    let faults_changed = patch.faults.is_some();
    if let Some(faults) = patch.faults {
        faults.apply(&mut next.faults);
    }
    check_shares(&next.faults)?;
    *settings = next.clone();
    drop(settings);
    if faults_changed {
        // As set_faults does: a new configuration starts its sequence from the beginning.
        for endpoint in [Endpoint::Images, Endpoint::Speech] {
            inner
                .counters(endpoint)
                .fault_draws
                .store(0, Ordering::SeqCst);
        }
    }
    Ok(Json(ConfigView::from(next)))
}

#[derive(Serialize)]
struct CountersView {
    requests: usize,
    successes: usize,
    in_flight: usize,
    max_in_flight: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_window: Option<usize>,
}

#[derive(Serialize)]
struct StatsView {
    total: CountersView,
    chat: CountersView,
    images: CountersView,
    speech: CountersView,
}

impl StatsView {
    fn of(inner: &Inner, window: Option<Duration>) -> Self {
        StatsView {
            total: inner.total.view(window),
            chat: inner.counters(Endpoint::Chat).view(window),
            images: inner.counters(Endpoint::Images).view(window),
            speech: inner.counters(Endpoint::Speech).view(window),
        }
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    window_ms: Option<u64>,
}

async fn stats(
    State(inner): State<Arc<Inner>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(query)) => Json(StatsView::of(
            &inner,
            query.window_ms.map(Duration::from_millis),
        ))
        .into_response(),
        Err(rejection) => invalid_param("window_ms", rejection.body_text()).into_response(),
    }
}

async fn reset(State(inner): State<Arc<Inner>>) -> Response {
    inner.reset_counts();
    Json(StatsView::of(&inner, None)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_window_is_half_open() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let starts = [
            at(0),
            at(10),
            at(20),
            at(1000),
            at(1100),
            at(1999),
            at(2000),
        ];
        let window = |ms| busiest_window(&starts, Duration::from_millis(ms));
        assert_eq!(window(0), 0);
        assert_eq!(window(1), 1);
        assert_eq!(window(20), 2);
        assert_eq!(window(21), 3);
        // 1000, 1100, 1999; 2000 is exactly one window after 1000.
        assert_eq!(window(1000), 3);
        assert_eq!(window(1001), 4);
        assert_eq!(window(10_000), starts.len());
        assert_eq!(busiest_window(&[], Duration::from_secs(1)), 0);
    }

    #[test]
    fn fault_draws_follow_the_shares_and_the_seed() {
        let faults = Faults {
            rate_limited: 0.3,
            server_error: 0.1,
            timeout: 0.05,
            seed: 42,
            ..Faults::default()
        };
        let draws: Vec<_> = (0..100_000).map(|i| faults.draw(i)).collect();
        let share = |f| draws.iter().filter(|d| **d == Some(f)).count() as f64 / 1e5;
        assert!((share(Fault::RateLimited) - 0.3).abs() < 0.01);
        assert!((share(Fault::ServerError) - 0.1).abs() < 0.01);
        assert!((share(Fault::Timeout) - 0.05).abs() < 0.01);

        let again: Vec<_> = (0..100_000).map(|i| faults.draw(i)).collect();
        assert_eq!(draws, again);
        let other_seed = Faults { seed: 43, ..faults };
        assert_ne!(
            draws[..100],
            (0..100).map(|i| other_seed.draw(i)).collect::<Vec<_>>()
        );
        assert!((0..1000).all(|i| Faults::default().draw(i).is_none()));
    }

    #[test]
    fn sizes_parse_strictly() {
        assert_eq!(image_size("auto").ok(), Some((1024, 1024)));
        assert_eq!(image_size("1536x1024").ok(), Some((1536, 1024)));
        assert_eq!(image_size("4096x1").ok(), Some((4096, 1)));
        for bad in [
            "", "x", "10x", "x10", "0x10", "4097x10", "+5x5", "5x5x5", "10 x 10", "big",
        ] {
            assert!(image_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn marker_refuses_only_when_present_and_non_empty() {
        let mut faults = Faults::default();
        assert!(!faults.refuses("anything"));
        faults.permanent_marker = Some(String::new());
        assert!(!faults.refuses("anything"));
        faults.permanent_marker = Some("FORBIDDEN".into());
        assert!(faults.refuses("a FORBIDDEN picture"));
        assert!(!faults.refuses("a fine picture"));
    }
}
