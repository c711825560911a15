//! A local OpenAI-compatible server for tests, browser tests and benchmarks: chat
//! completions that return a valid video script, `/models`, and switchable faults
//! (bad key, 429 with `Retry-After`, 5xx, slow answers, refusals, malformed output).
//! It counts requests, and requests in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

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

#[derive(Debug)]
struct Inner {
    behaviour: Mutex<Behaviour>,
    latency: Mutex<Duration>,
    api_key: Mutex<Option<String>>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    malformed_sent: AtomicUsize,
    last_body: Mutex<Option<Value>>,
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
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(Behaviour::Script),
            latency: Mutex::new(Duration::ZERO),
            api_key: Mutex::new(None),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            malformed_sent: AtomicUsize::new(0),
            last_body: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake OpenAI server");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    /// The base URL to put into CREVID's settings.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.inner.malformed_sent.store(0, Ordering::SeqCst);
        *self.inner.behaviour.lock().expect("lock") = behaviour;
    }

    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().expect("lock") = latency;
    }

    /// When set, any other bearer token gets a 401.
    pub fn require_key(&self, key: &str) {
        *self.inner.api_key.lock().expect("lock") = Some(key.to_owned());
    }

    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// The last chat request body, to check what CREVID sent.
    pub fn last_request(&self) -> Option<Value> {
        self.inner.last_body.lock().expect("lock").clone()
    }
}

struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        inner.requests.fetch_add(1, Ordering::SeqCst);
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })),
    )
        .into_response()
}

fn authorised(inner: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = inner.api_key.lock().expect("lock").clone() else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(invalid_key(given.unwrap_or_default()))
    }
}

fn invalid_key(given: &str) -> Response {
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
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        &format!("Incorrect API key provided: {shown}."),
    )
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let _guard = InFlight::enter(&inner);
    if let Err(r) = authorised(&inner, &headers) {
        return r;
    }
    if *inner.behaviour.lock().expect("lock") == Behaviour::InvalidKey {
        return invalid_key("");
    }
    Json(json!({ "object": "list", "data": [
        { "id": "fake-script-model", "object": "model", "created": 0, "owned_by": "crevid-testkit" },
        { "id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "crevid-testkit" }
    ]}))
    .into_response()
}

async fn chat(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let _guard = InFlight::enter(&inner);
    *inner.last_body.lock().expect("lock") = Some(body.clone());
    if let Err(r) = authorised(&inner, &headers) {
        return r;
    }
    let latency = *inner.latency.lock().expect("lock");
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let behaviour = inner.behaviour.lock().expect("lock").clone();
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake")
        .to_owned();
    match behaviour {
        Behaviour::InvalidKey => {
            let given = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            invalid_key(given)
        }
        Behaviour::RateLimited { retry_after } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            );
            r.headers_mut().insert(
                "retry-after",
                retry_after.to_string().parse().expect("header value"),
            );
            r
        }
        Behaviour::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "server_error",
            "The server had an error",
        ),
        Behaviour::UnknownModel => {
            // Some providers quote the key they were given; CREVID must scrub it.
            let given = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                &format!("The model `{model}` does not exist or key {given} has no access to it."),
            )
        }
        Behaviour::Refusal => completion(
            &model,
            Value::Null,
            json!("I can't help with that request."),
        ),
        Behaviour::Malformed { times }
            if inner.malformed_sent.fetch_add(1, Ordering::SeqCst) < times =>
        {
            completion(
                &model,
                json!("Sure! Here is your script: title = maybe"),
                Value::Null,
            )
        }
        Behaviour::Malformed { .. } | Behaviour::Script => {
            let script = script_for(&body);
            completion(&model, json!(script.to_string()), Value::Null)
        }
    }
}

fn completion(model: &str, content: Value, refusal: Value) -> Response {
    Json(json!({
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
    }))
    .into_response()
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
