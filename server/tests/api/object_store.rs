//! Media in an object store: the storage suite on the local directory and on a real
//! S3-compatible server (moto's, from PyPI: `target/pytools/bin/moto_server`), and the
//! scale-out runs: two `crevid serve` processes on one Postgres and one bucket.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::time::Duration;

use app::ssr::storage::ObjectStoreConfig;
use serde_json::json;

use testkit::qstash::{QStash, QStashOptions};

use crate::helpers::{
    content_with_scenes, pytool, spawn_binary, start_job, twenty_sentences, use_provider, Binary,
    Db, TestApp,
};

const BUCKET: &str = "crevid-media";
/// Keys live under this prefix of the bucket, as `CREVID_STORAGE_URL=s3://bucket/prefix`
/// puts them.
const PREFIX: &str = "media";

/// A moto S3 server on a free port with one empty bucket; stopped when dropped.
pub struct S3 {
    child: std::process::Child,
    port: u16,
    pub endpoint: String,
}

impl S3 {
    /// None when the Python tools are not installed (a failure under `CI=true`).
    pub async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Option<Self> {
        let moto = pytool("moto_server")?;
        let mut child = std::process::Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("moto_server starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready, listening) = tokio::sync::oneshot::channel();
        // Werkzeug says "Running on http://…" once it accepts connections; the pipe is then
        // drained so the server never blocks on it.
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("Running on") {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listening)
            .await
            .expect("moto_server listens within 60 s")
            .expect("moto_server exited before listening");
        let s3 = Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let made = reqwest::Client::new()
            .put(format!("{}/{BUCKET}", s3.endpoint))
            .send()
            .await
            .expect("create the bucket");
        assert_eq!(made.status(), 200, "the bucket was made");
        Some(s3)
    }

    /// The app's configuration for this store; `presign`: players are redirected.
    pub fn config(&self, presign: Option<Duration>) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url: format!("s3://{BUCKET}/{PREFIX}"),
            options: self
                .env()
                .into_iter()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            presign,
        }
    }

    /// The same, as `crevid serve`'s environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CREVID_STORAGE_URL", format!("s3://{BUCKET}/{PREFIX}")),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Every object under the prefix, as storage keys with their sizes (bytes), read
    /// with S3's ListObjectsV2 (one page holds 1,000; these tests store fewer).
    pub async fn objects(&self) -> Vec<(String, u64)> {
        let listing = reqwest::Client::new()
            .get(format!(
                "{}/{BUCKET}?list-type=2&prefix={PREFIX}/",
                self.endpoint
            ))
            .send()
            .await
            .expect("list the bucket")
            .text()
            .await
            .expect("the listing");
        assert!(
            listing.contains("<IsTruncated>false</IsTruncated>"),
            "{listing}"
        );
        let field = |item: &str, name: &str| {
            let open = format!("<{name}>");
            let start = item.find(&open).expect("field") + open.len();
            let end = item[start..].find('<').expect("field end") + start;
            item[start..end].to_owned()
        };
        listing
            .split("<Contents>")
            .skip(1)
            .map(|item| {
                let key = field(item, "Key");
                let key = key
                    .strip_prefix(&format!("{PREFIX}/"))
                    .expect("under the prefix")
                    .to_owned();
                (key, field(item, "Size").parse().expect("size"))
            })
            .collect()
    }

    /// An object written straight into the bucket, as a crash after an upload leaves one.
    pub async fn put(&self, key: &str, bytes: &'static [u8]) {
        let put = reqwest::Client::new()
            .put(format!("{}/{BUCKET}/{PREFIX}/{key}", self.endpoint))
            .header("content-length", bytes.len())
            .body(bytes)
            .send()
            .await
            .expect("put an object");
        assert_eq!(put.status(), 200);
    }
}

impl S3 {
    /// Stops the server, as an outage of the store.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new server on the same address with the bucket made again (empty: moto keeps
    /// nothing), as the store coming back.
    pub async fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(self.port).await.expect("moto_server again");
        *self = again;
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status page's media storage check: (verdict, message).
async fn storage_check(app: &TestApp) -> (String, String) {
    let check = crate::helpers::status_check(app, "Media storage").await;
    (
        check["verdict"].as_str().unwrap_or_default().to_owned(),
        check["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Where the suite's media live.
#[derive(Clone, Copy, Debug)]
enum Store {
    Local,
    S3,
}

/// The keys of every asset row with their recorded sizes.
async fn asset_rows(app: &TestApp) -> BTreeSet<(String, u64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT storage_key, bytes FROM assets")
        .fetch_all(app.state.pool())
        .await
        .expect("assets");
    rows.into_iter().map(|(k, b)| (k, b as u64)).collect()
}

/// The stored files of the local store (segments and render work left out: they are the
/// render's cache, not media), or the bucket's objects.
async fn stored(app: &TestApp, s3: Option<&S3>) -> BTreeSet<(String, u64)> {
    if let Some(s3) = s3 {
        return s3.objects().await.into_iter().collect();
    }
    let root = app.state.data_dir.join("media");
    let mut files = BTreeSet::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let meta = file.metadata().expect("metadata");
            if meta.is_file() {
                files.insert((
                    format!(
                        "{}/{}",
                        dir.file_name().to_string_lossy(),
                        file.file_name().to_string_lossy()
                    ),
                    meta.len(),
                ));
            }
        }
    }
    files
}

/// Renders content `id` and waits for the video.
async fn render(app: &TestApp, id: i64) {
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let detail = app.wait_for_job(job["data"]["id"].as_i64().unwrap()).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
}

/// A creator's picture as the scene's visual; the content as saved.
async fn upload_picture(app: &TestApp, id: i64, scene: i64) -> serde_json::Value {
    let uploaded = app
        .client
        .put(app.url(&format!("/api/contents/{id}/scenes/{scene}/visual")))
        .header("content-type", "image/png")
        .body(crate::visuals::picture("png", 400, 300, "red"))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), 200);
    uploaded.json().await.expect("the content")
}

async fn spawn(db: Db, s3: Option<&S3>, presign: Option<Duration>) -> Option<TestApp> {
    let config = s3.map(|s3| s3.config(presign));
    TestApp::spawn_configured(db, move |c| c.object_store = config).await
}

/// Pictures, narration, an uploaded picture, a render and a deletion: every asset row
/// has its file (same bytes as recorded) and every file its row, after each step; the
/// video plays with range requests even when no local copy is left; deleting the content
/// leaves nothing; the sweep removes what no row owns and nothing else.
async fn media_live_in_the_store(db: Db, store: Store) {
    let s3 = match store {
        Store::Local => None,
        Store::S3 => match S3::start().await {
            Some(s3) => Some(s3),
            None => return,
        },
    };
    let Some(app) = spawn(db, s3.as_ref(), None).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    let content = content_with_scenes(&app, "One scene here. And a second one. A third.", 3).await;
    let id = content["id"].as_i64().unwrap();
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let job = start_job(&app, path, &content).await;
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
    }
    let rows = asset_rows(&app).await;
    assert_eq!(
        rows.len(),
        6,
        "three pictures and three narrations: {rows:?}"
    );
    assert_eq!(stored(&app, s3.as_ref()).await, rows, "{store:?}");

    // An uploaded picture replaces the first scene's: its file goes, the new one is kept.
    let scene = content["scenes"][0]["id"].as_i64().unwrap();
    upload_picture(&app, id, scene).await;
    let rows = asset_rows(&app).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(stored(&app, s3.as_ref()).await, rows);

    // The render reads every input from the store (no local file is left to read in the
    // S3 case) and stores the video and subtitles.
    if s3.is_some() {
        std::fs::remove_dir_all(app.state.data_dir.join("media")).expect("drop local copies");
    }
    render(&app, id).await;
    let rows = asset_rows(&app).await;
    assert_eq!(rows.len(), 8, "and a video with its subtitles");
    assert_eq!(stored(&app, s3.as_ref()).await, rows);
    let (video_key, video_bytes) = rows
        .iter()
        .find(|(k, _)| k.contains("/video-") && k.ends_with(".mp4"))
        .cloned()
        .expect("the video's row");

    // Played from the store: whole, and by range, as a player seeks.
    if s3.is_some() {
        std::fs::remove_dir_all(app.state.data_dir.join("media")).expect("drop local copies");
    }
    let whole = app
        .client
        .get(app.url(&format!("/api/contents/{id}/video")))
        .send()
        .await
        .expect("video");
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap();
    assert_eq!(whole.len() as u64, video_bytes, "{video_key}");
    let part = app
        .client
        .get(app.url(&format!("/api/contents/{id}/video")))
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("a range");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{video_bytes}").as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), whole.slice(100..200));

    // The sweep: a file no row owns goes once old enough, the rest stays.
    let orphan = format!("content-{id}/scene-0-0-1.png");
    match &s3 {
        Some(s3) => s3.put(&orphan, b"left by a crash").await,
        None => std::fs::write(
            app.state.data_dir.join("media").join(&orphan),
            b"left by a crash",
        )
        .expect("orphan written"),
    }
    assert_eq!(stored(&app, s3.as_ref()).await.len(), 9);
    let removed = app::ssr::media::sweep(&app.state, Duration::ZERO)
        .await
        .expect("sweep");
    assert!(removed >= 1, "{removed}");
    assert_eq!(
        stored(&app, s3.as_ref()).await,
        rows,
        "only the orphan went"
    );

    let (status, body) = app.delete(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 204, "{body}");
    assert!(asset_rows(&app).await.is_empty());
    assert_eq!(
        stored(&app, s3.as_ref()).await,
        BTreeSet::new(),
        "nothing left"
    );
}

mod media_live_in_the_store {
    use super::{media_live_in_the_store as suite, Db, Store};

    #[tokio::test]
    async fn local_sqlite() {
        suite(Db::Sqlite, Store::Local).await
    }
    #[tokio::test]
    async fn local_postgres() {
        suite(Db::Postgres, Store::Local).await
    }
    #[tokio::test]
    async fn s3_sqlite() {
        suite(Db::Sqlite, Store::S3).await
    }
    #[tokio::test]
    async fn s3_postgres() {
        suite(Db::Postgres, Store::S3).await
    }
}

/// A 20-scene content whose pictures and narration come from the fake provider, slow
/// enough (150 ms, 100 ms) that a kill finds work in flight; with its id.
async fn twenty_scenes_through_the_fake(app: &TestApp) -> (serde_json::Value, i64) {
    use_provider(app, |v| {
        v.image_concurrency = 4;
        v.tts_concurrency = 4;
    })
    .await;
    app.fake.set_image_latency(Duration::from_millis(150));
    app.fake.set_speech_latency(Duration::from_millis(100));
    let content = content_with_scenes(app, &twenty_sentences(), 20).await;
    let id = content["id"].as_i64().unwrap();
    (content, id)
}

/// `crevid serve` on this test's database and bucket with a data directory of its own
/// (nothing shared with the test's server but Postgres and the bucket), and its URL.
async fn serve_beside(
    app: &TestApp,
    s3: &S3,
    dir: &std::path::Path,
    more: &[(&'static str, String)],
) -> (Binary, String) {
    let key = std::fs::read_to_string(app.state.data_dir.join("secret.key")).expect("key file");
    let mut env = s3.env();
    env.push(("CREVID_DATA_DIR", dir.display().to_string()));
    // Sealed provider keys are read by both processes.
    env.push(("CREVID_SECRET_KEY", key.trim().to_owned()));
    env.extend_from_slice(more);
    let mut server = spawn_binary(app, "info", &env);
    let line = server.wait_for_log("http://", 1).await;
    let at = line.find("http://").expect("an address");
    let base = line[at..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .expect("an address")
        .trim_end_matches('/')
        .to_owned();
    (server, base)
}

/// After a scale-out run of the 20-scene content `id`: the bucket holds every row's
/// object with the recorded size, and, until the sweep, nothing else but what a kill cut
/// off (an upload whose row never committed); both servers serve the same whole video.
async fn all_in_the_bucket_and_served_by_both(app: &TestApp, s3: &S3, id: i64, bases: [&str; 2]) {
    let rows = asset_rows(app).await;
    assert_eq!(
        rows.len(),
        42,
        "20 pictures, 20 narrations, a video, its subtitles"
    );
    let objects: BTreeSet<(String, u64)> = s3.objects().await.into_iter().collect();
    assert!(rows.is_subset(&objects), "{:?}", rows.difference(&objects));
    app::ssr::media::sweep(&app.state, Duration::ZERO)
        .await
        .expect("sweep");
    assert_eq!(
        s3.objects().await.into_iter().collect::<BTreeSet<_>>(),
        rows
    );
    let videos = [
        video_from(app, bases[0], id).await,
        video_from(app, bases[1], id).await,
    ];
    assert!(videos[0] == videos[1], "both serve the same video");
    let (_, video_bytes) = rows
        .iter()
        .find(|(k, _)| k.ends_with(".mp4") && k.contains("/video-"))
        .expect("the video's row");
    assert_eq!(videos[0].len() as u64, *video_bytes);
}

/// The content's video as `server` serves it to creator A.
async fn video_from(app: &TestApp, base: &str, id: i64) -> Vec<u8> {
    let response = app
        .client
        .get(format!("{base}/api/contents/{id}/video"))
        .send()
        .await
        .expect("video");
    assert_eq!(response.status(), 200, "{base}");
    response.bytes().await.expect("video bytes").to_vec()
}

/// Scale-out with the embedded queue: the test's server and a `crevid serve` process,
/// each with its own data directory, on one Postgres and one bucket. The process is
/// SIGKILLed in the middle of a 20-scene content's pictures and narration (uploads and
/// leases cut off); the test's server finishes them; the process is started again and
/// the two render; each serves the same video, which only one of them made.
#[tokio::test]
async fn two_processes_share_one_store_through_a_kill() {
    use testkit::Endpoint;
    let Some(s3) = S3::start().await else {
        return;
    };
    let Some(app) = spawn(Db::Postgres, Some(&s3), None).await else {
        return;
    };
    let (content, id) = twenty_scenes_through_the_fake(&app).await;
    let other_dir = tempfile::tempdir().expect("temp dir");

    let (mut other, _) = serve_beside(&app, &s3, other_dir.path(), &[]).await;
    let images = start_job(&app, "/api/media/generate", &content).await;
    let narration = start_job(&app, "/api/tts/generate", &content).await;
    app.fake.wait_for_requests(Endpoint::Images, 2).await;
    app.start_workers();
    app.fake.wait_for_requests(Endpoint::Images, 8).await;
    // SIGKILL: no shutdown, leases left behind, uploads and requests abandoned.
    other.child.kill().expect("kill the process");
    other.child.wait().expect("reap the process");
    let mut ran_again = false;
    for job in [images, narration] {
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        let tasks = detail["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 20);
        assert!(tasks.iter().all(|t| t["status"] == "succeeded"), "{detail}");
        ran_again |= tasks.iter().any(|t| t["attempt"].as_i64() > Some(1));
    }
    assert!(ran_again, "some task was cut off by the kill and ran again");
    assert!(
        finished_by(&app, [images, narration]).await.len() >= 2,
        "both processes finished tasks"
    );

    let (_other, other_base) = serve_beside(&app, &s3, other_dir.path(), &[]).await;
    render(&app, id).await;

    // Every row's object is in the bucket with the recorded size; what the kill left
    // (an upload whose row never committed) is only in the bucket, until the sweep.
    all_in_the_bucket_and_served_by_both(&app, &s3, id, [&app.base, &other_base]).await;
}

/// With `CREVID_STORAGE_PRESIGN_SECS`, players are sent to the bucket: a 307 to a
/// pre-signed URL that the store answers without the app, for owners only.
#[tokio::test]
async fn players_can_be_redirected_to_pre_signed_urls() {
    let Some(mut s3) = S3::start().await else {
        return;
    };
    let Some(app) = spawn(Db::Sqlite, Some(&s3), Some(Duration::from_secs(300))).await else {
        return;
    };
    let content = app.saved_content("A scene with an uploaded picture.").await;
    let (id, scene) = (
        content["id"].as_i64().unwrap(),
        content["scenes"][0]["id"].as_i64().unwrap(),
    );
    let saved = upload_picture(&app, id, scene).await;
    let asset = saved["data"]["scenes"][0]["image_asset_id"]
        .as_i64()
        .unwrap();
    let (key, bytes): (String, i64) =
        sqlx::query_as("SELECT storage_key, bytes FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_one(app.state.pool())
            .await
            .unwrap();

    let no_redirects = |token: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let redirected = no_redirects(&app.a.token)
        .get(app.url(&format!("/api/assets/{asset}")))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 307);
    let location = redirected.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&format!("{}/{BUCKET}/{PREFIX}/{key}?", s3.endpoint)),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().len() as i64, bytes);

    // Someone else's asset is still refused by the app, not signed.
    let refused = no_redirects(&app.b.token)
        .get(app.url(&format!("/api/assets/{asset}")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    // The pages may show what the store serves, and nothing else from elsewhere.
    let page = app.anonymous.get(app.url("/login")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in ["img-src", "media-src"] {
        let sources = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with(directive))
            .unwrap_or_default();
        assert!(sources.ends_with(&format!(" {}", s3.endpoint)), "{csp}");
    }

    // The status page says where media live, and when the store stops answering.
    let (verdict, message) = storage_check(&app).await;
    assert_eq!(verdict, "ok", "{message}");
    assert!(
        message.starts_with(&format!("Media in s3://{BUCKET}/{PREFIX}, which answers")),
        "{message}"
    );
    s3.stop();
    let (verdict, message) = storage_check(&app).await;
    assert_eq!(verdict, "error", "{message}");
    assert!(
        message.contains("does not answer") && message.contains("CREVID_STORAGE_URL"),
        "{message}"
    );
}

/// Waits for job `id` to end while its tasks run in other processes: each delivery the
/// stand-in finishes is a reason to look again.
async fn wait_through_qstash(app: &TestApp, qstash: &QStash, id: i64) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let seen = qstash.deliveries();
            let (_, detail) = app.get(&format!("/api/jobs/{id}")).await;
            let status = detail["data"]["job"]["status"].as_str().unwrap_or_default();
            if matches!(status, "completed" | "failed" | "cancelled") {
                return detail["data"].clone();
            }
            qstash.wait_until(|q| q.deliveries() > seen).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("job {id} did not end: {:?}", qstash.delivery_log()))
}

/// The processes (their worker ids) that finished the tasks of `jobs`.
async fn finished_by(app: &TestApp, jobs: [i64; 2]) -> BTreeSet<String> {
    let ids: Vec<Option<String>> =
        sqlx::query_scalar("SELECT worker_id FROM tasks WHERE job_id IN ($1, $2)")
            .bind(jobs[0])
            .bind(jobs[1])
            .fetch_all(app.state.pool())
            .await
            .expect("tasks");
    ids.into_iter().flatten().collect()
}

fn addr_of(base: &str) -> std::net::SocketAddr {
    base.trim_start_matches("http://")
        .parse()
        .expect("an address")
}

/// Scale-out through QStash: two `crevid serve` processes, each with its own data
/// directory, behind one public URL (a round-robin front) on one Postgres and one
/// bucket; the QStash stand-in delivers to either. One is SIGKILLed in the middle of a
/// 20-scene content's pictures and narration and taken out of the rotation; redeliveries
/// finish its tasks on the other; it comes back, a render runs through QStash, and both
/// serve the same video.
#[tokio::test]
async fn two_processes_behind_qstash_share_one_store_through_a_kill() {
    use testkit::Endpoint;
    let Some(s3) = S3::start().await else {
        return;
    };
    let qstash = QStash::start_with(QStashOptions::scaled(0.01)).await;
    let front = testkit::proxy::Front::start().await.expect("front");
    let config = crate::helpers::qstash_config(&qstash, 8);
    let public: url::Url = front.url().parse().expect("front url");
    let store = s3.config(None);
    // This test's server only queues; the two processes publish and work.
    let Some(app) = TestApp::spawn_configured(Db::Postgres, |c| {
        c.qstash = Some(config);
        c.public_url = Some(public);
        c.object_store = Some(store);
    })
    .await
    else {
        return;
    };
    let (content, id) = twenty_scenes_through_the_fake(&app).await;
    let mut env = qstash.env();
    env.push(("CREVID_PUBLIC_URL", front.url()));
    env.push(("CREVID_QSTASH_RETRIES", "8".into()));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (mut one, one_base) = serve_beside(&app, &s3, dirs[0].path(), &env).await;
    let (_two, two_base) = serve_beside(&app, &s3, dirs[1].path(), &env).await;
    front.balance(&[addr_of(&one_base), addr_of(&two_base)]);

    let images = start_job(&app, "/api/media/generate", &content).await;
    let narration = start_job(&app, "/api/tts/generate", &content).await;
    app.fake.wait_for_requests(Endpoint::Images, 8).await;
    one.child.kill().expect("kill the process");
    one.child.wait().expect("reap the process");
    // The load balancer's health check takes it out.
    front.balance(&[addr_of(&two_base)]);
    for job in [images, narration] {
        let detail = wait_through_qstash(&app, &qstash, job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        let tasks = detail["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 20);
        assert!(tasks.iter().all(|t| t["status"] == "succeeded"), "{detail}");
    }
    let workers = finished_by(&app, [images, narration]).await;
    assert!(
        workers.len() >= 2,
        "both processes finished tasks: {workers:?}"
    );

    let (_one, one_base) = serve_beside(&app, &s3, dirs[0].path(), &env).await;
    front.balance(&[addr_of(&one_base), addr_of(&two_base)]);
    let (status, job) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let detail = wait_through_qstash(&app, &qstash, job["data"]["id"].as_i64().unwrap()).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");

    all_in_the_bucket_and_served_by_both(&app, &s3, id, [&one_base, &two_base]).await;
    assert!(
        qstash.dead_letters().is_empty(),
        "{:?}",
        qstash.dead_letters()
    );
}

/// The store is down while pictures are made: each attempt fails saying the result could
/// not be stored (never a task left "running" by a panic, which once wedged a process's
/// workers for good), the job fails once its attempts are spent, and a retry after the
/// store is back stores every picture.
#[tokio::test]
async fn an_outage_of_the_store_fails_tasks_that_a_retry_then_finishes() {
    let Some(mut s3) = S3::start().await else {
        return;
    };
    let Some(app) = spawn(Db::Sqlite, Some(&s3), None).await else {
        return;
    };
    let content = content_with_scenes(&app, "One scene here. And a second one.", 2).await;
    s3.stop();
    app.start_workers();
    let job = start_job(&app, "/api/media/generate", &content).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "failed", "{detail}");
    for task in detail["tasks"].as_array().unwrap() {
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["attempt"], task["max_attempts"], "{task}");
        assert!(
            task["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("could not be stored")),
            "{task}"
        );
    }
    assert!(asset_rows(&app).await.is_empty());

    s3.restart().await;
    let (status, body) = app
        .post(&format!("/api/jobs/{job}/retry"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let rows = asset_rows(&app).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(stored(&app, Some(&s3)).await, rows);
}
