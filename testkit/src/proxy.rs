//! A TCP front for an app under test that can play a server restarting: the connections
//! it is told to drop are accepted and closed at once, unanswered, as a client meets a
//! process that is going down; the others are forwarded to the app byte for byte. Given
//! several apps it is a load balancer: each connection goes to the next in turn.
//!
//! QStash (or its stand-in) calls the front's address as the app's public URL, so a test
//! can make a delivery fail without an answer, which is where `Upstash-Retry-Delay`, not
//! a `Retry-After`, decides when QStash tries again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// See the module docs. Stops listening when dropped.
pub struct Front {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    targets: Mutex<Vec<SocketAddr>>,
    turn: AtomicUsize,
    to_drop: AtomicUsize,
    dropped: AtomicUsize,
    forwarded: AtomicUsize,
}

impl Front {
    /// Listens on a free port of 127.0.0.1; connections are dropped until
    /// [`Front::forward_to`] names where they go.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Front {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where forwarded connections go.
    pub fn forward_to(&self, target: SocketAddr) {
        self.balance(&[target]);
    }

    /// Forwarded connections go to each of `targets` in turn (from now on), as a load
    /// balancer's round robin; none: every connection is dropped.
    pub fn balance(&self, targets: &[SocketAddr]) {
        *self
            .shared
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = targets.to_vec();
    }

    /// The next `n` connections are closed as soon as they are accepted.
    pub fn drop_next(&self, n: usize) {
        self.shared.to_drop.store(n, Ordering::SeqCst);
    }

    /// Connections closed unanswered so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let dropping = shared
            .to_drop
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let target = {
            let targets = shared.targets.lock().unwrap_or_else(|e| e.into_inner());
            let turn = shared.turn.fetch_add(1, Ordering::SeqCst);
            (!targets.is_empty()).then(|| targets[turn % targets.len()])
        };
        match target {
            Some(target) if !dropping => {
                shared.forwarded.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(forward(client, target));
            }
            _ => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                drop(client);
            }
        }
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    if let Ok(mut upstream) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
