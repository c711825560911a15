//! A webhook receiver: records every request it gets (headers and raw body, as a
//! signature check needs them) and answers with the statuses a test plans, so retries,
//! failures and redeliveries can be driven.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;

/// One request as it arrived, and what it was answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Received>>,
    /// Statuses for the next requests, in order; then `usual`.
    planned: Mutex<VecDeque<u16>>,
    usual: Mutex<u16>,
    arrived: tokio::sync::Notify,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// Listens on a free loopback port, answering 204 until told otherwise.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        *inner.usual.lock().expect("lock") = 204;
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests are answered `statuses`, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.inner
            .planned
            .lock()
            .expect("lock")
            .extend(statuses.iter().copied());
    }

    /// Requests past the planned ones are answered `status`.
    pub fn answer_always(&self, status: u16) {
        *self.inner.usual.lock().expect("lock") = status;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.got.lock().expect("lock").clone()
    }

    /// Waits (woken by each arrival, never polling) until `check` holds for what was
    /// received; panics after `within`.
    pub async fn wait_until(
        &self,
        within: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.received();
            if check(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the receiver did not get what was expected within {within:?}; it got {} requests: {:?}",
                    got.len(),
                    got.iter().map(|r| &r.body).collect::<Vec<_>>()
                );
            }
        }
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = inner
        .planned
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| *inner.usual.lock().expect("lock"));
    inner.got.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
    });
    inner.arrived.notify_waiters();
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The longest a test waits for deliveries that are due now (retries included).
pub const DELIVERED_WITHIN: Duration = Duration::from_secs(60);
