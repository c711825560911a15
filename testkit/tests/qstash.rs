//! The QStash stand-in through real HTTP: publishing, signed deliveries to a receiver
//! started here, retries (backoff, `Retry-After`, retry-delay expressions, the plan's cap),
//! the dead-letter queue (paging, filters, bulk delete), failure callbacks, deduplication,
//! flow control (limits, pins, pauses), bulk cancel, redaction, key rotation, batches,
//! outages, duplicates, the control API, and cross-checks of its signatures and routes with
//! Upstash's own SDK.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::qstash::{
    backoff_secs, retry_delay_ms, sign, sign_claims, verify, Claims, MessageState, QStash,
    QStashOptions, DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN,
};
use tokio::io::AsyncWriteExt as _;

/// Every wait in these tests is bounded: a stand-in that never gets there fails, not hangs.
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out waiting")
}

// ---------------------------------------------------------------------------------------
// A destination the tests control

#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
}

#[derive(Debug, Clone)]
struct Received {
    method: Method,
    /// Path and query.
    target: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Replies per path, in order; once used up, `defaults`, then 200.
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
    /// How long each request takes, to make deliveries overlap.
    work: Mutex<Duration>,
    /// Requests to this path wait here until two are in: proof of concurrency.
    pair_path: Mutex<Option<String>>,
    pair: tokio::sync::Barrier,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
struct Receiver {
    state: Arc<ReceiverState>,
    addr: SocketAddr,
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::default(),
            script: Mutex::default(),
            defaults: Mutex::default(),
            work: Mutex::default(),
            pair_path: Mutex::default(),
            pair: tokio::sync::Barrier::new(2),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { state, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .script
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    fn default_reply(&self, path: &str, reply: Reply) {
        self.state
            .defaults
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    fn set_work(&self, work: Duration) {
        *self.state.work.lock().unwrap() = work;
    }

    fn pair_up(&self, path: &str) {
        *self.state.pair_path.lock().unwrap() = Some(path.to_owned());
    }

    /// Requests whose path starts with `path`, in order of arrival.
    fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target.starts_with(path))
            .cloned()
            .collect()
    }

    fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let path = uri.path().to_owned();
    state.received.lock().unwrap().push(Received {
        method,
        target: uri
            .path_and_query()
            .map_or(path.clone(), |p| p.as_str().to_owned()),
        headers,
        body,
        at: Instant::now(),
    });
    let work = *state.work.lock().unwrap();
    if !work.is_zero() {
        // Simulated work, so that deliveries overlap; nothing waits on it.
        tokio::time::sleep(work).await;
    }
    let paired = state.pair_path.lock().unwrap().as_deref() == Some(path.as_str());
    if paired {
        within(state.pair.wait()).await;
    }
    let reply = state
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .or_else(|| state.defaults.lock().unwrap().get(&path).cloned())
        .unwrap_or_else(|| Reply::status(200));
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).expect("a status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("a header value"),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------
// Publishing helpers

struct Setup {
    qstash: QStash,
    receiver: Receiver,
    http: reqwest::Client,
}

async fn setup(time_scale: f64) -> Setup {
    setup_with(QStashOptions::scaled(time_scale)).await
}

async fn setup_with(options: QStashOptions) -> Setup {
    Setup {
        qstash: QStash::start_with(options).await,
        receiver: Receiver::start().await,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    }
}

impl Setup {
    async fn publish(&self, destination: &str, body: &str, headers: &[(&str, &str)]) -> Published {
        let mut request = self
            .http
            .post(format!(
                "{}/v2/publish/{destination}",
                self.qstash.base_url()
            ))
            .bearer_auth(self.qstash.token())
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Published::from(request.send().await.expect("publish reaches the stand-in")).await
    }

    /// Publishes, expecting a new message; answers its id.
    async fn publish_ok(&self, destination: &str, body: &str, headers: &[(&str, &str)]) -> String {
        let published = self.publish(destination, body, headers).await;
        assert_eq!(published.status, 200, "{}", published.body);
        assert_eq!(published.body["deduplicated"], false);
        published.id()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.call(Method::POST, path, None).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// A call to the control API (`/_fake/...`, no token); answers the status and the
    /// JSON body (`Null` if none).
    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.qstash.control_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("reaches the control API");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An API call with the token; answers the status and the JSON body (`Null` if none).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.qstash.base_url()))
            .bearer_auth(self.qstash.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("reaches the stand-in");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

struct Published {
    status: u16,
    body: Value,
}

impl Published {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Published { status, body }
    }

    fn id(&self) -> String {
        self.body["messageId"]
            .as_str()
            .expect("a messageId")
            .to_owned()
    }
}

fn verified(qstash: &QStash, request: &Received, url: &str) -> Claims {
    let signature = request
        .header("upstash-signature")
        .expect("an Upstash-Signature");
    verify(
        signature,
        &qstash.current_key(),
        &qstash.next_key(),
        Some(url),
        &request.body,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn scaled(secs: f64, time_scale: f64) -> Duration {
    Duration::from_secs_f64(secs * time_scale)
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// For a query parameter's value.
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// What QStash shows instead of a redacted value.
fn redacted(value: &str) -> String {
    let hex: String = Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("REDACTED:{hex}")
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

/// The `node` command and the installed SDK, or why a Node test is skipped. Under
/// `CI=true` (as `scripts/test.sh` installs both) a missing one fails the test instead.
fn node_and_sdk(test: &str) -> Option<std::path::PathBuf> {
    let skip = |why: &str| {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} cannot run under CI: {why}"
        );
        eprintln!("SKIPPED {test}: {why}");
        None
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("node_modules/@upstash/qstash").is_dir() {
        return skip(
            "node_modules/@upstash/qstash is missing; run `npm install` at the repository root",
        );
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return skip("`node` is not installed");
    }
    Some(root)
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn publish_delivers_the_body_signed_with_the_forwarded_headers() {
    let s = setup(0.001).await;
    let url = s.receiver.url("/api/workers/image?scene=3");
    let body = r#"{"task_id":"t-1","kind":"image"}"#;
    let id = s
        .publish_ok(
            &url,
            body,
            &[
                ("Content-Type", "application/json"),
                ("Upstash-Forward-X-Trace", "abc"),
                ("X-Not-Forwarded", "1"),
            ],
        )
        .await;
    assert!(id.starts_with("msg_"), "{id}");
    within(s.qstash.wait_idle()).await;

    let received = s.receiver.received("/api/workers/image");
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.target, "/api/workers/image?scene=3");
    assert_eq!(&r.body[..], body.as_bytes());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-trace"), Some("abc"));
    assert_eq!(r.header("x-not-forwarded"), None);
    assert_eq!(r.header("user-agent"), Some("Upstash-QStash"));
    assert_eq!(r.header("upstash-message-id"), Some(id.as_str()));
    assert_eq!(r.header("upstash-retried"), Some("0"));
    assert_eq!(r.header("upstash-caller-ip"), Some("127.0.0.1"));
    let claims = verified(&s.qstash, r, &url);
    assert_eq!(claims.iss, "Upstash");
    assert_eq!(claims.sub, url);
    assert_eq!(claims.exp, claims.iat + 300);
    assert_eq!(claims.nbf, claims.iat);
    assert!(claims.body.ends_with('='), "padded, as the real service");

    let message = s.qstash.message(&id).expect("the message");
    assert_eq!(message.state, MessageState::Delivered);
    assert_eq!((message.retried, message.max_retries), (0, 3));
    assert_eq!((s.qstash.published(), s.qstash.deliveries()), (1, 1));

    let (status, view) = s.get(&format!("/v2/messages/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["messageId"], id.as_str());
    assert_eq!(view["url"], url.as_str());
    assert_eq!(view["state"], "DELIVERED");
    assert_eq!(view["body"], body);
    assert_eq!(view["header"]["Content-Type"], json!(["application/json"]));
    assert_eq!(view["header"]["X-Trace"], json!(["abc"]));
}

#[tokio::test]
async fn retries_follow_the_scaled_backoff_then_dead_letter_and_call_back_once() {
    let scale = 0.0001;
    let s = setup(scale).await;
    s.receiver
        .default_reply("/work", Reply::status(500).body("boom"));
    let (url, callback) = (s.receiver.url("/work"), s.receiver.url("/failed"));
    let body = r#"{"task_id":"t-2"}"#;
    let id = s
        .publish_ok(
            &url,
            body,
            &[
                ("Content-Type", "application/json"),
                ("Upstash-Retries", "3"),
                ("Upstash-Failure-Callback", &callback),
                ("Upstash-Failure-Callback-Forward-X-Callback", "yes"),
            ],
        )
        .await;
    within(s.qstash.wait_idle()).await;

    let tries = s.receiver.received("/work");
    let retried: Vec<_> = tries.iter().map(|r| r.header("upstash-retried")).collect();
    assert_eq!(retried, [Some("0"), Some("1"), Some("2"), Some("3")]);
    for r in &tries {
        verified(&s.qstash, r, &url);
        assert_eq!(r.header("upstash-message-id"), Some(id.as_str()));
    }
    let message = s.qstash.message(&id).expect("the message");
    assert_eq!(message.state, MessageState::Failed);
    assert_eq!(message.retried, 3);
    let expected: Vec<_> = (1..=3).map(|n| scaled(backoff_secs(n), scale)).collect();
    assert_eq!(message.retry_delays, expected);

    let letters = s.qstash.dead_letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.message_id, id);
    assert_eq!(letter.response_status, Some(500));
    assert_eq!(letter.response_body, b"boom");
    assert_eq!((letter.retried, letter.max_retries), (3, 3));
    assert!(!letter.non_retryable);
    assert_eq!(message.dlq_id.as_deref(), Some(letter.dlq_id.as_str()));

    let calls = s.receiver.received("/failed");
    assert_eq!(calls.len(), 1, "the failure callback is called once");
    let call = &calls[0];
    verified(&s.qstash, call, &callback);
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("x-callback"), Some("yes"));
    let payload: Value = serde_json::from_slice(&call.body).expect("a JSON body");
    assert_eq!(payload["status"], 500);
    assert_eq!(payload["body"], b64("boom"));
    assert_eq!(payload["retried"], 3);
    assert_eq!(payload["maxRetries"], 3);
    assert_eq!(payload["dlqId"], letter.dlq_id.as_str());
    assert_eq!(payload["sourceMessageId"], id.as_str());
    assert_eq!(payload["url"], url.as_str());
    assert_eq!(payload["method"], "POST");
    assert_eq!(payload["sourceBody"], b64(body));
    assert_eq!(
        payload["sourceHeader"]["Content-Type"],
        json!(["application/json"])
    );
    assert!(payload["header"].is_object());
    assert!(payload["createdAt"]
        .as_str()
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    assert!(payload["notBefore"]
        .as_str()
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    assert_eq!(payload["callerIP"], "127.0.0.1");
    let recorded = s.qstash.failure_callbacks();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].source_message_id, id);
    assert_eq!(recorded[0].body, payload);
    assert_eq!(recorded[0].status, Some(200));

    let (status, dlq) = s.get("/v2/dlq").await;
    assert_eq!(status, 200);
    assert_eq!(dlq["messages"][0]["dlqId"], letter.dlq_id.as_str());
    assert_eq!(dlq["messages"][0]["responseStatus"], 500);
    assert_eq!(dlq["messages"][0]["responseBody"], "boom");
    let (status, _) = s.get(&format!("/v2/dlq/{}", letter.dlq_id)).await;
    assert_eq!(status, 200);
    let deleted = s
        .http
        .delete(format!("{}/v2/dlq/{}", s.qstash.base_url(), letter.dlq_id))
        .bearer_auth(s.qstash.token())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert!(s.qstash.dead_letters().is_empty());
}

#[tokio::test]
async fn retry_after_replaces_the_backoff_up_to_a_day() {
    let scale = 0.0001;
    let s = setup(scale).await;
    // Retry-After is real time, whatever the scale: kept short here.
    s.receiver.script(
        "/limited",
        [
            Reply::status(503).header("retry-after", "1"),
            Reply::status(429).header("retry-after", "0m0.2s"),
            Reply::status(500).header("retry-after", "100000"),
            Reply::status(429).header("x-ratelimit-reset", "0"),
        ],
    );
    let id = s
        .publish_ok(
            &s.receiver.url("/limited"),
            "{}",
            &[("Upstash-Retries", "5")],
        )
        .await;
    within(s.qstash.wait_for_state(&id, MessageState::Delivered)).await;
    let message = s.qstash.message(&id).expect("the message");
    assert_eq!(
        message.retry_delays,
        [
            scaled(1.0, 1.0),
            scaled(0.2, 1.0),
            // More than a day: QStash's own backoff applies, scaled.
            scaled(backoff_secs(3), scale),
            scaled(0.0, 1.0),
        ]
    );
    assert_eq!(s.receiver.received("/limited").len(), 5);
}

#[tokio::test]
async fn retry_after_zero_retries_at_once_even_in_real_time() {
    // At real time the backoff would be 12 s; Retry-After: 0 must not wait.
    let s = setup(1.0).await;
    s.receiver
        .script("/now", [Reply::status(503).header("retry-after", "0")]);
    let id = s.publish_ok(&s.receiver.url("/now"), "x", &[]).await;
    tokio::time::timeout(
        Duration::from_secs(5),
        s.qstash.wait_for_state(&id, MessageState::Delivered),
    )
    .await
    .expect("retried at once");
    assert_eq!(
        s.qstash.message(&id).expect("message").retry_delays,
        [Duration::ZERO]
    );
}

#[tokio::test]
async fn non_retryable_489_goes_to_the_dlq_at_once() {
    let s = setup(0.001).await;
    s.receiver.default_reply(
        "/permanent",
        Reply::status(489)
            .header("upstash-nonretryable-error", "true")
            .body(r#"{"error":"bad scene"}"#),
    );
    // 489 without the header is an ordinary failure, retried.
    s.receiver.script("/plain489", [Reply::status(489)]);
    let callback = s.receiver.url("/failed");
    let id = s
        .publish_ok(
            &s.receiver.url("/permanent"),
            "payload",
            &[("Upstash-Failure-Callback", &callback)],
        )
        .await;
    let plain = s.publish_ok(&s.receiver.url("/plain489"), "", &[]).await;
    within(s.qstash.wait_idle()).await;

    assert_eq!(s.receiver.received("/permanent").len(), 1);
    let letters = s.qstash.dead_letters();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].non_retryable);
    assert_eq!(letters[0].retried, 0);
    let calls = s.receiver.received("/failed");
    assert_eq!(calls.len(), 1);
    let payload: Value = serde_json::from_slice(&calls[0].body).expect("JSON");
    assert_eq!(payload["status"], 489);
    assert_eq!(payload["retried"], 0);
    assert_eq!(payload["body"], b64(r#"{"error":"bad scene"}"#));
    assert_eq!(payload["sourceMessageId"], id.as_str());
    assert_eq!(
        payload["header"]["Upstash-Nonretryable-Error"],
        json!(["true"])
    );
    for field in [
        "status",
        "header",
        "body",
        "retried",
        "maxRetries",
        "dlqId",
        "sourceMessageId",
        "url",
        "method",
        "sourceHeader",
        "sourceBody",
        "notBefore",
        "createdAt",
        "callerIP",
    ] {
        assert!(
            payload.get(field).is_some(),
            "failure callback lacks {field}"
        );
    }

    assert_eq!(s.receiver.received("/plain489").len(), 2);
    assert_eq!(
        s.qstash.message(&plain).expect("message").state,
        MessageState::Delivered
    );
}

#[tokio::test]
async fn a_deduplication_id_delivers_once() {
    let s = setup(0.001).await;
    let url = s.receiver.url("/dedup");
    let headers = [("Upstash-Deduplication-Id", "task-42")];
    let first = s.publish(&url, "a", &headers).await;
    let second = s.publish(&url, "b", &headers).await;
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 202);
    assert_eq!(second.body["deduplicated"], true);
    assert_eq!(second.id(), first.id());

    let content = [("Upstash-Content-Based-Deduplication", "true")];
    let third = s.publish(&url, "same", &content).await;
    let fourth = s.publish(&url, "same", &content).await;
    let fifth = s.publish(&url, "other", &content).await;
    assert_eq!((third.status, fourth.status, fifth.status), (200, 202, 200));
    assert_eq!(fourth.id(), third.id());

    within(s.qstash.wait_idle()).await;
    let bodies: Vec<_> = s
        .receiver
        .received("/dedup")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 3);
    for body in ["a", "same", "other"] {
        assert!(bodies.iter().any(|b| b == body), "{bodies:?}");
    }
    assert_eq!((s.qstash.published(), s.qstash.deduplicated()), (3, 2));
}

#[tokio::test]
async fn flow_control_parallelism_bounds_deliveries_in_flight() {
    let s = setup(0.001).await;
    s.receiver.set_work(Duration::from_millis(15));
    let url = s.receiver.url("/images");
    for i in 0..12 {
        s.publish_ok(
            &url,
            &format!("{i}"),
            &[
                ("Upstash-Flow-Control-Key", "images"),
                ("Upstash-Flow-Control-Value", "parallelism=2"),
            ],
        )
        .await;
    }
    within(s.qstash.wait_idle()).await;
    assert_eq!(s.receiver.received("/images").len(), 12);
    assert_eq!(s.receiver.max_in_flight(), 2, "seen by the destination");
    assert_eq!(s.qstash.max_in_flight_for("images"), 2);
    let stats = s.qstash.stats();
    assert_eq!(stats.flows["images"].parallelism, Some(2));
    assert_eq!(stats.flows["images"].waiting, 0);
}

#[tokio::test]
async fn flow_control_rate_spreads_starts_over_the_period() {
    // rate=2 per 1 s at scale 0.1: at most two starts in any 100 ms.
    let s = setup(0.1).await;
    let url = s.receiver.url("/speech");
    for i in 0..6 {
        s.publish_ok(
            &url,
            &format!("{i}"),
            &[
                ("Upstash-Flow-Control-Key", "speech"),
                ("Upstash-Flow-Control-Value", "rate=2, period=1s"),
            ],
        )
        .await;
    }
    within(s.qstash.wait_idle()).await;
    let arrivals: Vec<Instant> = s
        .receiver
        .received("/speech")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 6);
    for pair in arrivals.windows(3) {
        // Allowing for jitter between the stand-in's clock and the destination's arrival.
        assert!(
            pair[2].duration_since(pair[0]) >= Duration::from_millis(80),
            "three starts within one period: {:?}",
            pair[2].duration_since(pair[0])
        );
    }
}

#[tokio::test]
async fn batch_publishes_each_item_and_checks_them_all_first() {
    let s = setup(0.001).await;
    let (a, b) = (s.receiver.url("/batch-a"), s.receiver.url("/batch-b"));
    let batch = json!([
        { "destination": a, "body": "one", "headers": { "Content-Type": "text/plain", "Upstash-Deduplication-Id": "b-1" } },
        { "destination": b, "body": "two", "headers": { "Upstash-Forward-X-Kind": "b" } },
        { "destination": a, "body": "one again", "headers": { "Upstash-Deduplication-Id": "b-1" } },
    ]);
    let response = s
        .http
        .post(format!("{}/v2/batch", s.qstash.base_url()))
        .bearer_auth(s.qstash.token())
        .json(&batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.expect("JSON");
    let answers = answers.as_array().expect("an array");
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["deduplicated"], false);
    assert_eq!(answers[1]["deduplicated"], false);
    assert_eq!(answers[2]["deduplicated"], true);
    assert_eq!(answers[2]["messageId"], answers[0]["messageId"]);
    within(s.qstash.wait_idle()).await;
    let to_a = s.receiver.received("/batch-a");
    assert_eq!(to_a.len(), 1);
    assert_eq!(&to_a[0].body[..], b"one");
    assert_eq!(to_a[0].header("content-type"), Some("text/plain"));
    let to_b = s.receiver.received("/batch-b");
    assert_eq!(to_b[0].header("x-kind"), Some("b"));

    let bad = json!([
        { "destination": a, "body": "fine" },
        { "destination": "not a url", "body": "wrong" },
    ]);
    let response = s
        .http
        .post(format!("{}/v2/batch", s.qstash.base_url()))
        .bearer_auth(s.qstash.token())
        .json(&bad)
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("batch[1]")),
        "{error}"
    );
    assert_eq!(
        s.qstash.published(),
        2,
        "nothing of a bad batch is accepted"
    );
}

#[tokio::test]
async fn publishing_needs_the_token() {
    let s = setup(0.001).await;
    let endpoint = format!(
        "{}/v2/publish/{}",
        s.qstash.base_url(),
        s.receiver.url("/auth")
    );
    let none = s.http.post(&endpoint).body("x").send().await.expect("sent");
    assert_eq!(none.status(), 401);
    let error: Value = none.json().await.expect("JSON");
    assert!(error["error"].is_string());
    let wrong = s
        .http
        .post(&endpoint)
        .bearer_auth("not-the-token")
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let query = s
        .http
        .post(format!("{endpoint}?qstash_token={DEV_TOKEN}"))
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(query.status(), 200);
    within(s.qstash.wait_idle()).await;
    let received = s.receiver.received("/auth");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].target, "/auth", "the token is not forwarded");
    assert_eq!(s.qstash.published(), 1);
}

/// A destination, the publish headers, and what the 400's message must name.
type BadCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn bad_publishes_get_a_400_naming_the_problem() {
    let s = setup(0.001).await;
    let url = s.receiver.url("/bad");
    let cases: [BadCase; 7] = [
        ("not-a-url", &[], "destination"),
        (
            url.as_str(),
            &[("Upstash-Retries", "many")],
            "Upstash-Retries",
        ),
        (url.as_str(), &[("Upstash-Delay", "10")], "Upstash-Delay"),
        (
            url.as_str(),
            &[("Upstash-Callback", "http://x/y")],
            "not supported",
        ),
        (
            url.as_str(),
            &[
                ("Upstash-Flow-Control-Key", "k"),
                ("Upstash-Flow-Control-Value", "parallelism=0"),
            ],
            "Upstash-Flow-Control-Value",
        ),
        (
            url.as_str(),
            &[("Upstash-Flow-Control-Key", "k")],
            "Upstash-Flow-Control-Value",
        ),
        (
            url.as_str(),
            &[("Upstash-Failure-Callback", "nowhere")],
            "Upstash-Failure-Callback",
        ),
    ];
    for (destination, headers, named) in cases {
        let published = s.publish(destination, "x", headers).await;
        assert_eq!(published.status, 400, "{destination} {headers:?}");
        let error = published.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(named), "{error:?} should name {named}");
    }
    assert_eq!(s.qstash.published(), 0);
}

#[tokio::test]
async fn delayed_messages_wait_and_can_be_released_or_canceled() {
    let s = setup(1.0).await;
    let later = s
        .publish_ok(&s.receiver.url("/later"), "x", &[("Upstash-Delay", "1h")])
        .await;
    let never = s
        .publish_ok(&s.receiver.url("/never"), "y", &[("Upstash-Delay", "10m")])
        .await;
    let past = s
        .publish_ok(
            &s.receiver.url("/past"),
            "z",
            &[("Upstash-Not-Before", "1000")],
        )
        .await;
    within(s.qstash.wait_for_state(&past, MessageState::Delivered)).await;

    let (status, view) = s.get(&format!("/v2/messages/{never}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["state"], "CREATED");
    assert!(view["notBefore"].as_u64().is_some());
    let canceled = s
        .http
        .delete(format!("{}/v2/messages/{never}", s.qstash.base_url()))
        .bearer_auth(s.qstash.token())
        .send()
        .await
        .expect("cancel");
    assert_eq!(canceled.status(), 200);
    assert_eq!(
        s.qstash.message(&never).expect("message").state,
        MessageState::Canceled
    );
    assert_eq!(
        s.qstash.message(&later).expect("message").state,
        MessageState::Created
    );

    s.qstash.release_waiting();
    within(s.qstash.wait_idle()).await;
    assert_eq!(s.receiver.received("/later").len(), 1);
    assert!(s.receiver.received("/never").is_empty());
    let (status, _) = s.get(&format!("/v2/messages/{never}")).await;
    assert_eq!(status, 200);
    let again = s
        .http
        .delete(format!("{}/v2/messages/{never}", s.qstash.base_url()))
        .bearer_auth(s.qstash.token())
        .send()
        .await
        .expect("cancel");
    assert_eq!(again.status(), 404, "nothing left to cancel");
}

#[tokio::test]
async fn an_unreachable_qstash_fails_publishes_then_comes_back() {
    let s = setup(0.001).await;
    let url = s.receiver.url("/outage");

    s.qstash.set_unreachable(true);
    assert_eq!(s.publish(&url, "x", &[]).await.status, 503);
    s.qstash.set_unreachable(false);
    s.publish_ok(&url, "x", &[]).await;

    s.qstash.set_refusing(true).await.expect("stop listening");
    let refused = s
        .http
        .post(format!("{}/v2/publish/{url}", s.qstash.base_url()))
        .bearer_auth(s.qstash.token())
        .body("y")
        .send()
        .await
        .expect_err("connection refused");
    assert!(refused.is_connect(), "{refused}");
    s.qstash.set_refusing(false).await.expect("listen again");
    s.publish_ok(&url, "y", &[]).await;

    within(s.qstash.wait_idle()).await;
    assert_eq!(s.receiver.received("/outage").len(), 2);
}

#[tokio::test]
async fn deliveries_can_be_duplicated_concurrently() {
    let s = setup(0.001).await;
    // Both copies must be in the destination at the same time to get past the barrier.
    s.receiver.pair_up("/twice");
    s.qstash.duplicate_next(1);
    let id = s.publish_ok(&s.receiver.url("/twice"), "once", &[]).await;
    within(s.qstash.wait_idle()).await;
    let received = s.receiver.received("/twice");
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.header("upstash-message-id"), Some(id.as_str()));
        assert_eq!(r.header("upstash-retried"), Some("0"));
    }
    assert_eq!(s.receiver.max_in_flight(), 2);
    let log = s.qstash.delivery_log();
    assert_eq!(log.iter().filter(|d| d.duplicate).count(), 1);

    // Redelivering a delivered message, twice at once.
    let (first, second) = tokio::join!(s.qstash.redeliver(&id), s.qstash.redeliver(&id));
    assert_eq!(first.expect("a delivery").status, Some(200));
    assert_eq!(second.expect("a delivery").status, Some(200));
    assert_eq!(s.receiver.received("/twice").len(), 4);
    assert!(s.qstash.redeliver("msg_unknown").await.is_none());

    // Duplicating everything.
    s.qstash.set_duplicate_all(true);
    s.publish_ok(&s.receiver.url("/twice"), "again", &[]).await;
    within(s.qstash.wait_idle()).await;
    assert_eq!(s.receiver.received("/twice").len(), 6);
}

#[tokio::test]
async fn signing_with_the_next_key_for_rotation() {
    let s = setup(0.001).await;
    s.qstash.set_sign_with_next(true);
    let url = s.receiver.url("/rotated");
    s.publish_ok(&url, "k", &[]).await;
    within(s.qstash.wait_idle()).await;
    let r = &s.receiver.received("/rotated")[0];
    let signature = r.header("upstash-signature").expect("signed");
    let (cur, next) = (s.qstash.current_key(), s.qstash.next_key());
    assert!(verify(signature, &next, &next, Some(&url), &r.body).is_ok());
    assert!(verify(signature, &cur, &cur, Some(&url), &r.body).is_err());
    assert!(verify(signature, &cur, &next, Some(&url), &r.body).is_ok());
}

#[tokio::test]
async fn the_control_api_configures_reports_and_resets() {
    let s = setup(1.0).await;
    let (_, config) = s
        .control(
            Method::POST,
            "/config",
            Some(json!({ "time_scale": 0.001, "duplicate_next": 1 })),
        )
        .await;
    assert_eq!(config["time_scale"], 0.001);
    assert_eq!(config["duplicate_next"], 1);
    assert_eq!(s.qstash.time_scale(), 0.001);
    for bad in [json!({ "time_scale": -1 }), json!({ "speed": 2 })] {
        let (response, _) = s.control(Method::POST, "/config", Some(bad.clone())).await;
        assert_eq!(response, 400, "{bad}");
    }

    let (response, _) = s
        .control(
            Method::POST,
            "/config",
            Some(json!({ "unreachable": true })),
        )
        .await;
    assert_eq!(response, 200);
    assert_eq!(s.publish(&s.receiver.url("/c"), "x", &[]).await.status, 503);
    s.qstash.set_unreachable(false);

    let id = s.publish_ok(&s.receiver.url("/c"), "x", &[]).await;
    within(s.qstash.wait_idle()).await;
    let (_, stats) = s.control(Method::GET, "/stats", None).await;
    assert_eq!(stats["published"], 1);
    assert_eq!(stats["deliveries"], 2, "duplicated once");
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["pending"], 0);

    let (_, redelivered) = s
        .control(Method::POST, &format!("/redeliver/{id}"), None)
        .await;
    assert_eq!(redelivered["status"], 200);
    assert_eq!(redelivered["redelivery"], true);

    let (_, reset) = s.control(Method::POST, "/reset", None).await;
    assert_eq!(reset["published"], 0);
    assert_eq!(reset["deliveries"], 0);
    assert!(s.qstash.message(&id).is_none());
    let (gone, _) = s
        .control(Method::POST, &format!("/redeliver/{id}"), None)
        .await;
    assert_eq!(gone, 404);

    // After a reset, a delayed message is forgotten and never delivered.
    s.qstash.set_time_scale(1.0);
    s.publish_ok(
        &s.receiver.url("/forgotten"),
        "x",
        &[("Upstash-Delay", "1s")],
    )
    .await;
    s.qstash.reset();
    within(s.qstash.wait_idle()).await;
    let (release, _) = s.control(Method::POST, "/release", None).await;
    assert_eq!(release, 204);
    assert!(s.receiver.received("/forgotten").is_empty());
}

#[tokio::test]
async fn signatures_pass_upstash_own_receiver() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !root.join("node_modules/@upstash/qstash").is_dir() {
        eprintln!(
            "SKIPPED signatures_pass_upstash_own_receiver: node_modules/@upstash/qstash is \
             missing; run `npm install` at the repository root"
        );
        return;
    }
    let script = root.join("testkit/tests/qstash_receiver.mjs");
    let check = |signature: String, body: &str, url: &str| {
        let input = json!({
            "currentSigningKey": DEV_CURRENT_SIGNING_KEY,
            "nextSigningKey": DEV_NEXT_SIGNING_KEY,
            "signature": signature,
            "body": body,
            "url": url,
        })
        .to_string();
        let script = script.clone();
        async move {
            let mut child = tokio::process::Command::new("node")
                .arg(&script)
                .env_remove("QSTASH_DEV")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("node runs");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).await.expect("write");
            drop(stdin);
            let output = within(child.wait_with_output()).await.expect("node output");
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert_ne!(
                output.status.code(),
                Some(2),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success(), text)
        }
    };

    // A real delivery from the stand-in, checked by the official SDK.
    let s = setup(0.001).await;
    let url = s.receiver.url("/api/workers/speech");
    let body = r#"{"task_id":"t-9","text":"héllo"}"#;
    s.publish_ok(&url, body, &[("Content-Type", "application/json")])
        .await;
    within(s.qstash.wait_idle()).await;
    let delivered = s.receiver.received("/api/workers/speech")[0]
        .header("upstash-signature")
        .expect("signed")
        .to_owned();
    assert_eq!(check(delivered, body, &url).await, (true, "valid".into()));

    let url = "http://127.0.0.1:3000/api/workers/image";
    let body = r#"{"task_id":"t-1"}"#;
    assert_eq!(
        check(
            sign(DEV_CURRENT_SIGNING_KEY, url, body.as_bytes()),
            body,
            url
        )
        .await,
        (true, "valid".into())
    );
    assert_eq!(
        check(sign(DEV_NEXT_SIGNING_KEY, url, body.as_bytes()), body, url).await,
        (true, "valid".into())
    );
    let mut unpadded = Claims::new(url, body.as_bytes());
    unpadded.body = unpadded.body.trim_end_matches('=').to_owned();
    assert!(
        check(sign_claims(DEV_CURRENT_SIGNING_KEY, &unpadded), body, url)
            .await
            .0
    );

    let (ok, text) = check(
        sign(DEV_CURRENT_SIGNING_KEY, url, body.as_bytes()),
        r#"{"task_id":"t-2"}"#,
        url,
    )
    .await;
    assert!(!ok && text.contains("body hash"), "tampered body: {text}");
    let (ok, text) = check(
        sign(DEV_CURRENT_SIGNING_KEY, url, body.as_bytes()),
        body,
        "http://127.0.0.1:3000/api/workers/speech",
    )
    .await;
    assert!(!ok && text.contains("subject"), "other URL: {text}");
    let (ok, _) = check(sign("sig_not_ours", url, body.as_bytes()), body, url).await;
    assert!(!ok, "unknown key");
}

// ---------------------------------------------------------------------------------------
// Retry-delay expressions, the plan's cap

#[tokio::test]
async fn a_retry_delay_expression_sets_the_waits_and_a_bad_one_is_refused() {
    let scale = 0.001;
    let s = setup(scale).await;
    s.receiver.script(
        "/paced",
        [Reply::status(500), Reply::status(503), Reply::status(500)],
    );
    let expression = "1000 * (1 + retried)";
    let id = s
        .publish_ok(
            &s.receiver.url("/paced"),
            "x",
            &[
                ("Upstash-Retries", "3"),
                ("Upstash-Retry-Delay", expression),
            ],
        )
        .await;
    within(s.qstash.wait_for_state(&id, MessageState::Delivered)).await;
    let message = s.qstash.message(&id).expect("the message");
    // `retried` is the retries made before this one: 1 s, 2 s, 3 s, scaled to 1, 2, 3 ms.
    assert_eq!(
        message.retry_delays,
        [scaled(1.0, scale), scaled(2.0, scale), scaled(3.0, scale)]
    );
    for (n, want) in [(0, 1000.0), (1, 2000.0), (2, 3000.0)] {
        assert_eq!(retry_delay_ms(expression, n), Ok(want));
    }
    assert_eq!(message.retry_delay_expression.as_deref(), Some(expression));
    let retried: Vec<_> = s
        .receiver
        .received("/paced")
        .iter()
        .map(|r| r.header("upstash-retried").map(str::to_owned))
        .collect();
    assert_eq!(retried.len(), 4);
    let (_, view) = s.get(&format!("/v2/messages/{id}")).await;
    assert_eq!(view["retryDelayExpression"], expression);

    // A Retry-After still wins, unscaled, over the expression.
    s.receiver
        .script("/told", [Reply::status(429).header("retry-after", "0")]);
    let told = s
        .publish_ok(
            &s.receiver.url("/told"),
            "y",
            &[("Upstash-Retry-Delay", "pow(2, retried) * 3600000")],
        )
        .await;
    within(s.qstash.wait_for_state(&told, MessageState::Delivered)).await;
    assert_eq!(
        s.qstash.message(&told).expect("message").retry_delays,
        [Duration::ZERO]
    );

    // The failure callback takes its own expression.
    s.receiver.default_reply("/dead", Reply::status(500));
    s.receiver
        .script("/callback", [Reply::status(500), Reply::status(500)]);
    let dead = s
        .publish_ok(
            &s.receiver.url("/dead"),
            "z",
            &[
                ("Upstash-Retries", "0"),
                ("Upstash-Failure-Callback", &s.receiver.url("/callback")),
                ("Upstash-Failure-Callback-Retries", "2"),
                ("Upstash-Failure-Callback-Retry-Delay", "5000"),
            ],
        )
        .await;
    within(s.qstash.wait_idle()).await;
    let callback = s
        .qstash
        .messages()
        .into_iter()
        .find(|m| m.failure_callback_for.as_deref() == Some(dead.as_str()))
        .expect("the failure callback's message");
    assert_eq!(callback.state, MessageState::Delivered);
    assert_eq!(callback.retry_delay_expression.as_deref(), Some("5000"));
    assert_eq!(
        callback.retry_delays,
        [scaled(5.0, scale), scaled(5.0, scale)]
    );

    let url = s.receiver.url("/never");
    for (header, bad, why) in [
        ("Upstash-Retry-Delay", "1000 +", "ends too early"),
        ("Upstash-Retry-Delay", "foo * 2", "unknown name \"foo\""),
        ("Upstash-Retry-Delay", "pow(2)", "pow takes 2 arguments"),
        (
            "Upstash-Retry-Delay",
            "log(retried)",
            "unknown function \"log\"",
        ),
        (
            "Upstash-Failure-Callback-Retry-Delay",
            "1000 * x",
            "unknown name \"x\"",
        ),
    ] {
        let published = s.publish(&url, "x", &[(header, bad)]).await;
        assert_eq!(published.status, 400, "{bad:?}");
        let error = error_of(&published.body);
        assert!(
            error.contains(header) && error.contains(why),
            "{error:?} should name {header} and say {why:?}"
        );
    }
    let (status, answer) = s
        .call(
            Method::POST,
            "/v2/batch",
            Some(json!([
                { "destination": url, "body": "fine", "headers": { "Upstash-Retry-Delay": "1000" } },
                { "destination": url, "body": "bad", "headers": { "Upstash-Retry-Delay": "1000 *" } },
            ])),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("batch[1]"), "{answer}");
    assert!(s.receiver.received("/never").is_empty());
    assert_eq!(s.qstash.published(), 3);
}

#[tokio::test]
async fn the_plan_cap_refuses_retries_above_it_and_lowers_the_default() {
    let s = setup_with(QStashOptions {
        plan_max_retries: Some(3),
        ..QStashOptions::scaled(0.001)
    })
    .await;
    let url = s.receiver.url("/capped");
    let published = s.publish(&url, "x", &[("Upstash-Retries", "8")]).await;
    assert_eq!(published.status, 400);
    assert_eq!(
        error_of(&published.body),
        "invalid Upstash-Retries 8: your plan allows at most 3 retries"
    );
    let published = s
        .publish(
            &url,
            "x",
            &[
                ("Upstash-Failure-Callback", &s.receiver.url("/cb")),
                ("Upstash-Failure-Callback-Retries", "5"),
            ],
        )
        .await;
    assert_eq!(published.status, 400);
    assert_eq!(
        error_of(&published.body),
        "invalid Upstash-Failure-Callback-Retries 5: your plan allows at most 3 retries"
    );
    // One entry over the cap refuses the whole batch.
    let (status, answer) = s
        .call(
            Method::POST,
            "/v2/batch",
            Some(json!([
                { "destination": url, "body": "a" },
                { "destination": url, "body": "b", "headers": { "Upstash-Retries": "4" } },
            ])),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&answer),
        "batch[1]: invalid Upstash-Retries 4: your plan allows at most 3 retries"
    );
    assert_eq!(s.qstash.published(), 0);

    let at_cap = s.publish_ok(&url, "x", &[("Upstash-Retries", "3")]).await;
    assert_eq!(s.qstash.message(&at_cap).expect("message").max_retries, 3);

    s.qstash.set_plan_max_retries(Some(1));
    assert_eq!(s.qstash.plan_max_retries(), Some(1));
    let default = s.publish_ok(&url, "x", &[]).await;
    assert_eq!(s.qstash.message(&default).expect("message").max_retries, 1);

    let (_, config) = s
        .control(
            Method::POST,
            "/config",
            Some(json!({ "plan_max_retries": null })),
        )
        .await;
    assert_eq!(config["plan_max_retries"], Value::Null);
    s.publish_ok(&url, "x", &[("Upstash-Retries", "50")]).await;
    let (_, config) = s
        .control(
            Method::POST,
            "/config",
            Some(json!({ "plan_max_retries": 2 })),
        )
        .await;
    assert_eq!(config["plan_max_retries"], 2);
    let (_, seen) = s.control(Method::GET, "/config", None).await;
    assert_eq!(seen["plan_max_retries"], 2);
    let default = s.publish_ok(&url, "x", &[]).await;
    assert_eq!(s.qstash.message(&default).expect("message").max_retries, 2);
    let (bad, _) = s
        .control(
            Method::POST,
            "/config",
            Some(json!({ "plan_max_retries": -1 })),
        )
        .await;
    assert_eq!(bad, 400);
    within(s.qstash.wait_idle()).await;
}

// ---------------------------------------------------------------------------------------
// Bulk cancel

#[tokio::test]
async fn bulk_cancel_by_label_stops_delayed_messages_and_those_waiting_for_a_slot() {
    let s = setup(1.0).await;
    let url = s.receiver.url("/bulk");
    let mut swept = Vec::new();
    for i in 0..3 {
        swept.push(
            s.publish_ok(
                &url,
                &format!("delayed {i}"),
                &[("Upstash-Delay", "1h"), ("Upstash-Label", "sweep")],
            )
            .await,
        );
    }
    let kept = s
        .publish_ok(
            &url,
            "kept",
            &[("Upstash-Delay", "1h"), ("Upstash-Label", "keep")],
        )
        .await;
    // Pinning creates the key; pausing holds every slot, so these wait in its wait list.
    assert_eq!(
        s.post("/v2/flowControl/held/pin?parallelism=1").await.0,
        200
    );
    assert_eq!(s.post("/v2/flowControl/held/pause").await.0, 200);
    for i in 0..3 {
        swept.push(
            s.publish_ok(
                &url,
                &format!("held {i}"),
                &[
                    ("Upstash-Flow-Control-Key", "held"),
                    ("Upstash-Flow-Control-Value", "parallelism=2"),
                    ("Upstash-Label", "other, sweep"),
                ],
            )
            .await,
        );
    }
    within(
        s.qstash
            .wait_until(|q| q.flow("held").is_some_and(|f| f.waiting == 3)),
    )
    .await;
    let (_, view) = s.get("/v2/flowControl/held").await;
    assert_eq!(view["waitListSize"], 3);
    assert_eq!(view["isPaused"], true);

    let (status, answer) = s.delete("/v2/messages?label=sweep").await;
    assert_eq!((status, answer), (200, json!({ "cancelled": 6 })));
    // Canceled messages left the wait list.
    assert_eq!(s.qstash.flow("held").expect("the key").waiting, 0);
    let (_, view) = s.get("/v2/flowControl/held").await;
    assert_eq!(view["waitListSize"], 0);
    let (_, again) = s.delete("/v2/messages?label=sweep").await;
    assert_eq!(
        again,
        json!({ "cancelled": 0 }),
        "only unfinished ones count"
    );

    assert_eq!(s.post("/v2/flowControl/held/resume").await.0, 200);
    s.qstash.release_waiting();
    within(s.qstash.wait_for_state(&kept, MessageState::Delivered)).await;
    within(s.qstash.wait_idle()).await;
    let received = s.receiver.received("/bulk");
    assert_eq!(received.len(), 1, "nothing canceled is delivered");
    assert_eq!(&received[0].body[..], b"kept");
    for id in &swept {
        assert_eq!(
            s.qstash.message(id).expect("message").state,
            MessageState::Canceled
        );
    }
    assert_eq!(s.qstash.canceled(), 6);
    assert_eq!(s.qstash.stats().canceled, 6);
}

#[tokio::test]
async fn bulk_cancel_by_ids_and_filters() {
    let s = setup(1.0).await;
    let (x, y) = (s.receiver.url("/x"), s.receiver.url("/y"));
    let delayed = [("Upstash-Delay", "1h")];
    let mut on_x = Vec::new();
    for i in 0..4 {
        on_x.push(s.publish_ok(&x, &format!("{i}"), &delayed).await);
    }
    let on_y = s.publish_ok(&y, "y", &delayed).await;

    // The older JSON-body form, as the Python SDK sends it.
    let (status, answer) = s
        .call(
            Method::DELETE,
            "/v2/messages",
            Some(json!({ "messageIds": [on_x[0], "msg_unknown"] })),
        )
        .await;
    assert_eq!((status, answer), (200, json!({ "cancelled": 1 })));
    // Ids, comma-separated: other filters are then ignored.
    let (_, answer) = s
        .delete(&format!(
            "/v2/messages?messageIds={},{}&label=nothing",
            on_x[1], on_x[0]
        ))
        .await;
    assert_eq!(answer, json!({ "cancelled": 1 }));
    // A filter with a count.
    let (_, answer) = s
        .delete(&format!("/v2/messages?url={}&count=1", enc(&x)))
        .await;
    assert_eq!(answer, json!({ "cancelled": 1 }));
    assert_eq!(
        s.qstash.message(&on_x[2]).expect("message").state,
        MessageState::Canceled
    );
    // Filters combine with AND; values of one filter with OR; dates are inclusive.
    let (_, answer) = s
        .delete(&format!("/v2/messages?url={}&label=none", enc(&x)))
        .await;
    assert_eq!(answer, json!({ "cancelled": 0 }));
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let (_, answer) = s.delete(&format!("/v2/messages?fromDate={future}")).await;
    assert_eq!(answer, json!({ "cancelled": 0 }));
    let created = s.qstash.message(&on_y).expect("message").created_at_ms;
    let (_, answer) = s
        .delete(&format!(
            "/v2/messages?host=127.0.0.1&path=/nowhere,/y&fromDate={created}&toDate={created}&callerIp=127.0.0.1"
        ))
        .await;
    assert_eq!(answer, json!({ "cancelled": 1 }));

    for (query, named) in [
        ("count=0", "count"),
        ("count=501", "count"),
        ("count=many", "count"),
        ("fromDate=yesterday", "fromDate"),
        ("topicName=group", "topicName"),
        ("color=red", "color"),
    ] {
        let (status, answer) = s.delete(&format!("/v2/messages?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            error_of(&answer).contains(named),
            "{answer} should name {named}"
        );
    }
    let (status, answer) = s
        .call(
            Method::DELETE,
            "/v2/messages",
            Some(json!({ "ids": ["x"] })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("messageIds"), "{answer}");

    // No ids, no filter: every unfinished message, as documented; an empty id list in the
    // older body form too ("If the messageIds array is empty, QStash will cancel all").
    let (_, answer) = s
        .call(
            Method::DELETE,
            "/v2/messages",
            Some(json!({ "messageIds": [] })),
        )
        .await;
    assert_eq!(answer, json!({ "cancelled": 1 }));
    s.publish_ok(&y, "y again", &delayed).await;
    let (_, answer) = s.delete("/v2/messages").await;
    assert_eq!(answer, json!({ "cancelled": 1 }));
    assert_eq!(s.qstash.stats().pending, 0);
    assert_eq!(s.qstash.canceled(), 6);
    assert!(s.qstash.delivery_log().is_empty());
}

// ---------------------------------------------------------------------------------------
// Flow control: highest value wins, pins, the management API

#[tokio::test]
async fn pinning_a_lower_parallelism_holds_new_grants_at_once() {
    let s = setup(0.001).await;
    s.receiver.set_work(Duration::from_millis(50));
    let url = s.receiver.url("/pinned");
    let headers = [
        ("Upstash-Flow-Control-Key", "pin-me"),
        ("Upstash-Flow-Control-Value", "parallelism=4"),
    ];
    for i in 0..12 {
        s.publish_ok(&url, &format!("{i}"), &headers).await;
    }
    within(s.qstash.wait_for_deliveries_to("/pinned", 2)).await;
    let (status, body) = s.post("/v2/flowControl/pin-me/pin?parallelism=1").await;
    assert_eq!((status, body), (200, Value::Null), "200 with an empty body");
    let after_pin = s.qstash.slots_granted();
    within(s.qstash.wait_idle()).await;

    let log: Vec<_> = s
        .qstash
        .delivery_log()
        .into_iter()
        .filter(|d| d.url.contains("/pinned"))
        .collect();
    assert_eq!(log.len(), 12);
    let most = log.iter().filter_map(|d| d.flow_in_flight).max();
    assert_eq!(most, Some(4), "four at once before the pin");
    let later: Vec<_> = log
        .iter()
        .filter(|d| d.slot.is_some_and(|n| n > after_pin))
        .collect();
    assert!(!later.is_empty(), "some slots were granted after the pin");
    for d in &later {
        assert_eq!(d.flow_in_flight, Some(1), "{d:?}");
    }
    let mut slots: Vec<u64> = log.iter().filter_map(|d| d.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, (1..=12).collect::<Vec<_>>());
    assert_eq!(s.qstash.slots_granted(), 12);

    let flow = s.qstash.flow("pin-me").expect("the key");
    assert_eq!(
        (flow.parallelism, flow.pinned_parallelism),
        (Some(1), Some(1))
    );
    let (_, view) = s.get("/v2/flowControl/pin-me").await;
    assert_eq!(view["parallelismMax"], 1);
    assert_eq!(view["isPinnedParallelism"], true);
    assert_eq!(view["isPinnedRate"], false);

    // While pinned, a message's own value is ignored.
    s.publish_ok(&url, "ignored", &headers).await;
    assert_eq!(s.qstash.flow("pin-me").expect("key").parallelism, Some(1));
    within(s.qstash.wait_idle()).await;
    // Unpinned, the pinned value stays until the next message brings its own.
    let (status, _) = s
        .post("/v2/flowControl/pin-me/unpin?parallelism=true")
        .await;
    assert_eq!(status, 200);
    let flow = s.qstash.flow("pin-me").expect("key");
    assert_eq!((flow.parallelism, flow.pinned_parallelism), (Some(1), None));
    s.publish_ok(&url, "after", &headers).await;
    assert_eq!(s.qstash.flow("pin-me").expect("key").parallelism, Some(4));
    within(s.qstash.wait_idle()).await;

    for (path, status, named) in [
        ("/v2/flowControl/pin-me/pin", 400, "parallelism"),
        (
            "/v2/flowControl/pin-me/pin?parallelism=0",
            400,
            "parallelism",
        ),
        (
            "/v2/flowControl/pin-me/pin?parallelism=x",
            400,
            "parallelism",
        ),
        ("/v2/flowControl/pin-me/pin?period=10", 400, "period"),
        ("/v2/flowControl/pin-me/pin?speed=2", 400, "speed"),
        ("/v2/flowControl/pin-me/unpin", 400, "unpin"),
        ("/v2/flowControl/pin-me/unpin?rate=yes", 400, "rate"),
        ("/v2/flowControl/nobody/pause", 404, "nobody"),
        ("/v2/flowControl/nobody/unpin?rate=true", 404, "nobody"),
        ("/v2/flowControl/pin-me/explode", 404, "explode"),
    ] {
        let (got, answer) = s.post(path).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(error_of(&answer).contains(named), "{path}: {answer}");
    }
}

#[tokio::test]
async fn the_highest_parallelism_among_unfinished_messages_wins() {
    let s = setup(1.0).await;
    s.receiver.set_work(Duration::from_millis(60));
    let url = s.receiver.url("/highest");
    let key = ("Upstash-Flow-Control-Key", "mixed");
    // Waiting on its delay, this message keeps its parallelism=3 in force.
    let high = s
        .publish_ok(
            &url,
            "high",
            &[
                key,
                ("Upstash-Flow-Control-Value", "parallelism=3"),
                ("Upstash-Delay", "1h"),
            ],
        )
        .await;
    let low = [key, ("Upstash-Flow-Control-Value", "parallelism=1")];
    for i in 0..6 {
        s.publish_ok(&url, &format!("first {i}"), &low).await;
    }
    assert_eq!(s.qstash.flow("mixed").expect("key").parallelism, Some(3));
    let (_, view) = s.get("/v2/flowControl/mixed").await;
    assert_eq!(view["parallelismMax"], 3);
    within(s.qstash.wait_for_deliveries_to("/highest", 6)).await;
    let first_max = s
        .qstash
        .delivery_log()
        .iter()
        .filter_map(|d| d.flow_in_flight)
        .max();
    assert_eq!(first_max, Some(3));
    assert_eq!(s.receiver.max_in_flight(), 3, "seen by the destination");

    // Once it is gone, the 1 of the messages that follow is the highest.
    assert!(s.qstash.cancel(&high));
    for i in 0..4 {
        s.publish_ok(&url, &format!("second {i}"), &low).await;
    }
    assert_eq!(s.qstash.flow("mixed").expect("key").parallelism, Some(1));
    within(s.qstash.wait_idle()).await;
    let log = s.qstash.delivery_log();
    assert_eq!(log.len(), 10);
    for d in &log[6..] {
        assert_eq!(d.flow_in_flight, Some(1), "{d:?}");
    }
}

#[tokio::test]
async fn flow_control_keys_are_listed_described_paused_and_reset() {
    let s = setup(1.0).await;
    let url = s.receiver.url("/shape");
    let headers = [
        ("Upstash-Flow-Control-Key", "shape"),
        (
            "Upstash-Flow-Control-Value",
            "parallelism=2, rate=10, period=1m",
        ),
    ];
    for i in 0..2 {
        s.publish_ok(&url, &format!("{i}"), &headers).await;
    }
    within(s.qstash.wait_idle()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();

    let (status, view) = s.get("/v2/flowControl/shape").await;
    assert_eq!(status, 200);
    let mut fields: Vec<_> = view
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "flowControlKey",
            "isPaused",
            "isPinnedParallelism",
            "isPinnedRate",
            "parallelismCount",
            "parallelismMax",
            "rateCount",
            "rateMax",
            "ratePeriod",
            "ratePeriodStart",
            "waitListSize",
        ]
    );
    assert_eq!(view["flowControlKey"], "shape");
    assert_eq!(view["waitListSize"], 0);
    assert_eq!(view["parallelismMax"], 2);
    assert_eq!(view["parallelismCount"], 0);
    assert_eq!(view["rateMax"], 10);
    assert_eq!(view["rateCount"], 2);
    assert_eq!(view["ratePeriod"], 60);
    let start = view["ratePeriodStart"].as_u64().expect("Unix seconds");
    assert!((now - 5..=now).contains(&start), "{start} vs {now}");
    assert_eq!(
        (
            &view["isPinnedParallelism"],
            &view["isPinnedRate"],
            &view["isPaused"]
        ),
        (&json!(false), &json!(false), &json!(false))
    );

    assert_eq!(
        s.post("/v2/flowControl/other/pin?rate=5&period=10").await.0,
        200
    );
    let (status, list) = s.get("/v2/flowControl").await;
    assert_eq!(status, 200);
    let keys: Vec<_> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|k| k["flowControlKey"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["other", "shape"]);
    let other = &list[0];
    assert_eq!(other["rateMax"], 5);
    assert_eq!(other["ratePeriod"], 10);
    assert_eq!(other["rateCount"], 0);
    assert_eq!(other["parallelismMax"], 0, "0 where no limit is set");
    assert_eq!(other["isPinnedRate"], true);

    // A rate reset clears the count; a new period starts now.
    assert_eq!(s.post("/v2/flowControl/shape/resetRate").await.0, 200);
    let (_, view) = s.get("/v2/flowControl/shape").await;
    assert_eq!(view["rateCount"], 0);
    assert!(view["ratePeriodStart"].as_u64().is_some_and(|t| t >= now));

    // Paused: messages wait; resumed: they go.
    assert_eq!(s.post("/v2/flowControl/shape/pause").await.0, 200);
    let waiting = s.publish_ok(&url, "waits", &headers).await;
    within(
        s.qstash
            .wait_until(|q| q.flow("shape").is_some_and(|f| f.waiting == 1)),
    )
    .await;
    let (_, view) = s.get("/v2/flowControl/shape").await;
    assert_eq!(
        (&view["isPaused"], &view["waitListSize"]),
        (&json!(true), &json!(1))
    );
    assert!(s.qstash.flow("shape").expect("key").paused);
    assert_eq!(s.post("/v2/flowControl/shape/resume").await.0, 200);
    within(s.qstash.wait_for_state(&waiting, MessageState::Delivered)).await;

    let (status, answer) = s.get("/v2/flowControl/nothing").await;
    assert_eq!(status, 404);
    assert!(error_of(&answer).contains("nothing"));
    let anonymous = s
        .http
        .get(format!("{}/v2/flowControl", s.qstash.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
}

// ---------------------------------------------------------------------------------------
// The DLQ

#[tokio::test]
async fn the_dlq_pages_with_a_cursor_filters_and_deletes_in_bulk() {
    let s = setup(0.001).await;
    s.receiver.default_reply("/dlq-a", Reply::status(500));
    s.receiver.default_reply("/dlq-b", Reply::status(404));
    let (a, b) = (s.receiver.url("/dlq-a"), s.receiver.url("/dlq-b"));
    for i in 0..3 {
        s.publish_ok(
            &a,
            &format!("a{i}"),
            &[("Upstash-Retries", "0"), ("Upstash-Label", "red")],
        )
        .await;
    }
    for i in 0..2 {
        s.publish_ok(
            &b,
            &format!("b{i}"),
            &[
                ("Upstash-Retries", "0"),
                ("Upstash-Label", "blue"),
                ("Upstash-Flow-Control-Key", "dlq-key"),
                ("Upstash-Flow-Control-Value", "parallelism=5"),
            ],
        )
        .await;
    }
    within(s.qstash.wait_for_dead_letters(5)).await;
    within(s.qstash.wait_idle()).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v2/dlq?count=2&cursor={}", enc(c)),
            None => "/v2/dlq?count=2".to_owned(),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let messages = page["messages"].as_array().expect("messages");
        seen.extend(
            messages
                .iter()
                .map(|m| m["dlqId"].as_str().unwrap_or_default().to_owned()),
        );
        match page.get("cursor").and_then(Value::as_str) {
            Some(next) => {
                assert_eq!(messages.len(), 2);
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let all: Vec<String> = s
        .qstash
        .dead_letters()
        .into_iter()
        .map(|d| d.dlq_id)
        .collect();
    assert_eq!(seen, all);

    let count = |page: &Value| page["messages"].as_array().map_or(0, Vec::len);
    let (_, red) = s.get("/v2/dlq?label=red").await;
    assert_eq!(count(&red), 3);
    assert!(red.get("cursor").is_none());
    assert!(red["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .all(|m| m["labels"] == json!(["red"])));
    for (query, want) in [
        ("label=red,blue", 5),
        ("label=red&label=blue", 5),
        ("label=red&responseStatus=404", 0),
        ("responseStatus=404", 2),
        ("responseStatus=500,404", 5),
        ("flowControlKey=dlq-key", 2),
        ("count=1000", 5),
        ("callerIp=127.0.0.1", 5),
        ("callerIp=10.0.0.1", 0),
    ] {
        let (status, page) = s.get(&format!("/v2/dlq?{query}")).await;
        assert_eq!((status, count(&page)), (200, want), "{query}: {page}");
    }
    let (_, by_url) = s.get(&format!("/v2/dlq?url={}", enc(&b))).await;
    assert_eq!(count(&by_url), 2);
    assert_eq!(by_url["messages"][0]["flowControlKey"], "dlq-key");
    assert_eq!(by_url["messages"][0]["parallelism"], 5);
    for (query, named) in [
        ("count=0", "count"),
        ("cursor=abc", "cursor"),
        ("queueName=q", "queueName"),
        ("responseStatus=bad", "responseStatus"),
        ("sort=asc", "sort"),
    ] {
        let (status, answer) = s.get(&format!("/v2/dlq?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            error_of(&answer).contains(named),
            "{answer} should name {named}"
        );
    }

    let (status, answer) = s.delete("/v2/dlq?label=blue").await;
    assert_eq!((status, answer), (200, json!({ "deleted": 2 })));
    let first_red = s.qstash.dead_letters()[0].dlq_id.clone();
    let (status, answer) = s
        .call(
            Method::DELETE,
            "/v2/dlq",
            Some(json!({ "dlqIds": [first_red, "nope"] })),
        )
        .await;
    assert_eq!((status, answer), (200, json!({ "deleted": 1 })));
    let (_, answer) = s.delete("/v2/dlq?count=1").await;
    assert_eq!(answer["deleted"], 1);
    let cursor = answer["cursor"]
        .as_str()
        .expect("one more remains")
        .to_owned();
    let (_, answer) = s
        .delete(&format!("/v2/dlq?count=1&cursor={}", enc(&cursor)))
        .await;
    assert_eq!(answer, json!({ "deleted": 1 }));
    assert!(s.qstash.dead_letters().is_empty());
    let (_, answer) = s.delete("/v2/dlq").await;
    assert_eq!(answer, json!({ "deleted": 0 }));
}

// ---------------------------------------------------------------------------------------
// Signing keys, redaction

#[tokio::test]
async fn rotating_the_signing_keys() {
    let s = setup(0.001).await;
    let (old_current, old_next) = (s.qstash.current_key(), s.qstash.next_key());
    let (status, keys) = s.post("/v2/keys/rotate").await;
    assert_eq!(status, 200);
    let current = keys["current"].as_str().expect("current").to_owned();
    let next = keys["next"].as_str().expect("next").to_owned();
    assert_eq!(current, old_next, "the next key becomes the current one");
    let random = next.strip_prefix("sig_").expect("a sig_ key");
    assert_eq!(random.len(), 28);
    assert!(random.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(next != old_current && next != old_next);
    assert_eq!(s.get("/v2/keys").await, (200, keys.clone()));
    assert_eq!(
        (s.qstash.current_key(), s.qstash.next_key()),
        (current.clone(), next.clone())
    );

    let url = s.receiver.url("/rotated-keys");
    s.publish_ok(&url, "after", &[]).await;
    within(s.qstash.wait_idle()).await;
    let r = &s.receiver.received("/rotated-keys")[0];
    let signature = r.header("upstash-signature").expect("signed");
    assert!(verify(signature, &current, &current, Some(&url), &r.body).is_ok());
    assert!(verify(signature, &old_current, &old_current, Some(&url), &r.body).is_err());

    let (current2, next2) = s.qstash.rotate_keys();
    assert_eq!(current2, next);
    assert_ne!(next2, next);
    let env: HashMap<_, _> = s.qstash.env().into_iter().collect();
    assert_eq!(env["QSTASH_CURRENT_SIGNING_KEY"], current2);
    assert_eq!(env["QSTASH_NEXT_SIGNING_KEY"], next2);
    let anonymous = s
        .http
        .post(format!("{}/v2/keys/rotate", s.qstash.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        s.qstash.current_key(),
        current2,
        "a refused rotation changes nothing"
    );
}

#[tokio::test]
async fn redacted_fields_are_hidden_from_the_api_not_from_the_delivery() {
    let s = setup(0.001).await;
    let url = s.receiver.url("/secret");
    let id = s
        .publish_ok(
            &url,
            "card=4242",
            &[
                ("Content-Type", "text/plain"),
                ("Upstash-Forward-X-Secret", "s3cret"),
                ("Upstash-Forward-X-Open", "open"),
                ("Upstash-Redact-Fields", "body, header[X-Secret]"),
            ],
        )
        .await;
    within(s.qstash.wait_idle()).await;
    let r = &s.receiver.received("/secret")[0];
    assert_eq!(&r.body[..], b"card=4242");
    assert_eq!(r.header("x-secret"), Some("s3cret"));

    let (_, view) = s.get(&format!("/v2/messages/{id}")).await;
    assert_eq!(view["body"], redacted("card=4242"));
    assert!(view.get("bodyBase64").is_none());
    assert_eq!(view["header"]["X-Secret"], json!([redacted("s3cret")]));
    assert_eq!(view["header"]["X-Open"], json!(["open"]));
    assert_eq!(view["header"]["Content-Type"], json!(["text/plain"]));
    let raw = s.qstash.message(&id).expect("message");
    assert_eq!(raw.body, b"card=4242");
    assert_eq!(raw.redact_fields, ["body", "header[X-Secret]"]);

    // In the DLQ too; the failure callback still gets the originals.
    s.receiver.default_reply("/secret-dlq", Reply::status(500));
    s.publish_ok(
        &s.receiver.url("/secret-dlq"),
        "plain",
        &[
            ("Upstash-Retries", "0"),
            ("Upstash-Forward-Authorization", "Bearer t"),
            ("Upstash-Redact-Fields", "headers"),
            ("Upstash-Failure-Callback", &s.receiver.url("/secret-cb")),
        ],
    )
    .await;
    within(s.qstash.wait_for_failure_callbacks(1)).await;
    within(s.qstash.wait_idle()).await;
    let (_, dlq) = s.get("/v2/dlq").await;
    let letter = &dlq["messages"][0];
    assert_eq!(
        letter["header"]["Authorization"],
        json!([redacted("Bearer t")])
    );
    assert_eq!(letter["body"], "plain");
    let (_, one) = s
        .get(&format!(
            "/v2/dlq/{}",
            letter["dlqId"].as_str().expect("dlqId")
        ))
        .await;
    assert_eq!(
        one["header"]["Authorization"],
        json!([redacted("Bearer t")])
    );
    assert_eq!(
        s.qstash.dead_letters()[0].headers["Authorization"],
        ["Bearer t"]
    );
    let callback = &s.qstash.failure_callbacks()[0].body;
    assert_eq!(
        callback["sourceHeader"]["Authorization"],
        json!(["Bearer t"])
    );
    assert_eq!(callback["sourceBody"], b64("plain"));

    for bad in ["body, footer", "header[]", "headers[X-A"] {
        let published = s
            .publish(&url, "x", &[("Upstash-Redact-Fields", bad)])
            .await;
        assert_eq!(published.status, 400, "{bad:?}");
        let error = error_of(&published.body);
        assert!(error.contains("Upstash-Redact-Fields"), "{error}");
    }
}

// ---------------------------------------------------------------------------------------
// The official SDK against the newer routes

#[tokio::test]
async fn upstash_own_client_drives_the_newer_routes() {
    let Some(root) = node_and_sdk("upstash_own_client_drives_the_newer_routes") else {
        return;
    };
    let s = setup(1.0).await;
    // Dead letters for the SDK to page through and delete: three labeled, one not.
    s.receiver.default_reply("/sdk-dead", Reply::status(500));
    let dead = s.receiver.url("/sdk-dead");
    for i in 0..3 {
        s.publish_ok(
            &dead,
            &format!("{i}"),
            &[("Upstash-Retries", "0"), ("Upstash-Label", "sdk-dlq")],
        )
        .await;
    }
    s.publish_ok(&dead, "other", &[("Upstash-Retries", "0")])
        .await;
    within(s.qstash.wait_for_dead_letters(4)).await;
    let labeled: Vec<String> = s
        .qstash
        .dead_letters()
        .into_iter()
        .filter(|d| d.labels == ["sdk-dlq"])
        .map(|d| d.dlq_id)
        .collect();

    let input = json!({
        "baseUrl": s.qstash.base_url(),
        "token": s.qstash.token(),
        "url": s.receiver.url("/target"),
        "dlqLabel": "sdk-dlq",
    })
    .to_string();
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("testkit/tests/qstash_sdk.mjs"))
        .env_remove("QSTASH_DEV")
        .env("UPSTASH_DISABLE_TELEMETRY", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let output = within(child.wait_with_output()).await.expect("node output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("a JSON report");

    // Publish with retryDelay, labels, redaction, flow control; read back with messages.get.
    let id = report["published"]["messageId"].as_str().expect("an id");
    let raw = s.qstash.message(id).expect("the SDK's message");
    assert_eq!(
        raw.retry_delay_expression.as_deref(),
        Some("1000 * (1 + retried)")
    );
    assert_eq!(raw.labels, ["sdk", "batch-1"]);
    assert_eq!(raw.redact_fields, ["body", "header[X-Secret]"]);
    assert_eq!(raw.max_retries, 2);
    let message = &report["message"];
    assert_eq!(message["retryDelayExpression"], "1000 * (1 + retried)");
    assert_eq!(message["labels"], json!(["sdk", "batch-1"]));
    assert_eq!(message["body"], redacted(r#"{"task":"sdk"}"#));
    assert_eq!(message["header"]["X-Secret"], json!([redacted("s3cret")]));
    assert_eq!(message["flowControlKey"], "sdk-key");
    assert_eq!(message["parallelism"], 2);
    assert_eq!(
        (&message["rate"], &message["period"]),
        (&json!(10), &json!(60))
    );

    // Flow-control management.
    let pinned = &report["pinned"];
    assert_eq!(pinned["flowControlKey"], "sdk-key");
    assert_eq!(
        (&pinned["parallelismMax"], &pinned["rateMax"]),
        (&json!(1), &json!(5))
    );
    assert_eq!(pinned["ratePeriod"], 30);
    assert_eq!(
        (&pinned["isPinnedParallelism"], &pinned["isPinnedRate"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(report["paused"]["isPaused"], true);
    let unpinned = &report["unpinned"];
    assert_eq!(
        (&unpinned["isPinnedParallelism"], &unpinned["isPinnedRate"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(unpinned["isPaused"], false);
    assert_eq!(
        unpinned["parallelismMax"], 1,
        "the pinned value stays until a new message"
    );
    assert_eq!(report["unknownKey"]["status"], 404);

    // Bulk cancel.
    assert_eq!(report["cancelByLabel"], json!({ "cancelled": 2 }));
    assert_eq!(report["cancelAgain"], json!({ "cancelled": 0 }));
    assert_eq!(report["deleteMany"], 1);
    for id in report["ids"].as_array().expect("ids") {
        let id = id.as_str().expect("an id");
        assert_eq!(
            s.qstash.message(id).expect("message").state,
            MessageState::Canceled
        );
    }
    assert!(
        s.receiver.received("/target").is_empty(),
        "nothing canceled is delivered"
    );

    // DLQ paging and bulk delete.
    let pages = report["dlqPages"].as_array().expect("pages");
    assert_eq!(pages[0]["dlqIds"].as_array().map(Vec::len), Some(2));
    assert!(pages[0]["cursor"].is_string());
    assert_eq!(pages[1]["dlqIds"].as_array().map(Vec::len), Some(1));
    assert_eq!(pages[1]["cursor"], Value::Null);
    let listed: Vec<String> = pages
        .iter()
        .flat_map(|p| p["dlqIds"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, labeled);
    assert!(pages[0]["labels"][0] == json!(["sdk-dlq"]));
    assert_eq!(report["dlqDelete"]["deleted"], 3);
    assert_eq!(report["dlqRest"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["dlqDeleteMany"]["deleted"], 1);
    assert_eq!(report["dlqLeft"], 0);
    assert!(s.qstash.dead_letters().is_empty());
}
