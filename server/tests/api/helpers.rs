//! Every test starts the real app on port 0 with a fresh database (SQLite file or a new
//! Postgres database, dropped afterwards) and its own fake OpenAI-compatible server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use app::model::{CreateTokenRequest, CreateUserRequest, Role, SettingsUpdate, SettingsValues};
use app::ssr::auth::CurrentUser;
use app::ssr::state::AppState;
use crevid_server::config::Config;
use crevid_server::startup::Application;
use serde_json::Value;
use testkit::FakeOpenAi;

pub const TEST_KEY: &str = "sk-test-abcdefghijklmnopqrstuvwxyz";
pub const PASSWORD: &str = "correct horse battery staple";

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Anonymous,
    /// A creator: the default caller of `get`/`post`/`put`/`delete`.
    CreatorA,
    /// Another creator, who must never see A's things.
    CreatorB,
    Admin,
}

pub const EVERYONE: [Who; 4] = [Who::Anonymous, Who::CreatorA, Who::CreatorB, Who::Admin];

pub struct Account {
    pub user: CurrentUser,
    pub token: String,
    client: reqwest::Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("CREVID_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A Postgres database made for one test; dropped (with its connections) when the guard goes.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
}

impl PgDatabase {
    /// None when no server answers and this is not CI (one line says so); under CI=true a
    /// missing Postgres fails the test.
    pub async fn create() -> Option<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        // scripts/test.sh found no server and has said so once.
        if std::env::var("CREVID_TEST_SKIP_POSTGRES").is_ok() {
            return None;
        }
        sqlx::any::install_default_drivers();
        let admin_url = postgres_admin_url();
        let admin =
            match tokio::time::timeout(Duration::from_secs(5), sqlx::AnyPool::connect(&admin_url))
                .await
            {
                Ok(Ok(pool)) => pool,
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!(
                        "Postgres is required under CI=true but {admin_url} is unreachable: {why}"
                    );
                    }
                    eprintln!("skipping Postgres test: {admin_url} unreachable ({why})");
                    return None;
                }
            };
        let name = format!(
            "crevid_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        Some(Self { admin_url, name })
    }

    pub fn url(&self) -> String {
        let mut url = url::Url::parse(&self.admin_url).expect("CREVID_TEST_POSTGRES_URL parses");
        url.set_path(&self.name);
        url.to_string()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

pub struct TestApp {
    pub base: String,
    /// Creator A's client (bearer token).
    pub client: reqwest::Client,
    pub anonymous: reqwest::Client,
    pub a: Account,
    pub b: Account,
    pub admin: Account,
    pub fake: FakeOpenAi,
    pub state: AppState,
    /// Embedded workers started by `start_workers`, and servers started beside this one;
    /// stopped with the test.
    background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Ok(handles) = self.background.lock() {
            handles.iter().for_each(|h| h.abort());
        }
    }
}

/// A temporary data directory and a fresh database for one test: a SQLite file in the
/// directory, or a new Postgres database (None when Postgres is skipped).
async fn fresh_database(db: Db) -> Option<(tempfile::TempDir, String, Option<PgDatabase>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    Some(match db {
        Db::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("crevid.db").display());
            (dir, url, None)
        }
        Db::Postgres => {
            let pg = PgDatabase::create().await?;
            (dir, pg.url(), Some(pg))
        }
    })
}

/// A server as a newcomer starts it: no account yet, nothing configured.
pub struct FreshApp {
    pub base: String,
    pub state: AppState,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl FreshApp {
    /// Listening on `addr` (`127.0.0.1:0`, or `0.0.0.0:0` for beyond this machine).
    pub async fn spawn(db: Db, addr: &str) -> Option<Self> {
        Self::spawn_configured(db, addr, |_| {}).await
    }

    /// `spawn`, with `edit` on the configuration.
    pub async fn spawn_configured(
        db: Db,
        addr: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let (dir, url, pg) = fresh_database(db).await?;
        let mut config = test_config(&url, dir.path());
        config.site_addr = addr.parse().expect("a socket address");
        edit(&mut config);
        let app = Application::build(config).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        Some(Self {
            base,
            state,
            _dir: dir,
            _pg: pg,
        })
    }
}

/// `path` (absolute) as a path relative to the working directory: `../../tmp/x`.
fn relative_to_cwd(path: &std::path::Path) -> std::path::PathBuf {
    let cwd = std::env::current_dir().expect("working directory");
    let up = cwd.components().count().saturating_sub(1);
    let mut relative: std::path::PathBuf = std::iter::repeat_n("..", up).collect();
    relative.push(path.strip_prefix("/").expect("an absolute path"));
    assert!(relative.is_relative());
    relative
}

pub fn test_config(database_url: &str, data_dir: &std::path::Path) -> Config {
    let vars = [
        ("LEPTOS_SITE_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("CREVID_DATA_DIR".to_owned(), data_dir.display().to_string()),
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        (
            "LEPTOS_SITE_ROOT".to_owned(),
            data_dir.join("site").display().to_string(),
        ),
        // Rate limits count in 2-second windows, so tests can watch them recover.
        ("CREVID_RATE_WINDOW_SECS".to_owned(), "2".to_owned()),
        // A crashed worker's tasks are due again after 1.5 s; retries start at 20 ms.
        ("CREVID_TASK_LEASE_MS".to_owned(), "1500".to_owned()),
        ("CREVID_RETRY_BASE_MS".to_owned(), "20".to_owned()),
        // Tests run background tasks on purpose, with `TestApp::drain` or `start_workers`.
        ("CREVID_EMBEDDED_WORKERS".to_owned(), "false".to_owned()),
    ];
    Config::load(&move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .expect("test config")
}

impl TestApp {
    pub async fn spawn(db: Db) -> Option<Self> {
        Self::spawn_with_window(db, 2).await
    }

    /// With rate limits counting in windows of `secs` (a longer window keeps a busy
    /// machine from refilling a bucket in the middle of a test).
    pub async fn spawn_with_window(db: Db, secs: u64) -> Option<Self> {
        Self::spawn_configured(db, |config| config.rate_window_secs = secs).await
    }

    /// Tasks through QStash: the local stand-in `qstash` delivers them to this app.
    pub async fn spawn_with_qstash(db: Db, qstash: &testkit::qstash::QStash) -> Option<Self> {
        let config = qstash_config(qstash, 5);
        Self::spawn_configured(db, |c| c.qstash = Some(config)).await
    }

    pub async fn spawn_configured(db: Db, edit: impl FnOnce(&mut Config)) -> Option<Self> {
        Self::spawn_inner(db, false, edit).await
    }

    /// With `CREVID_DATA_DIR` given relative to the working directory, as a newcomer's
    /// default `./data` is.
    pub async fn spawn_with_relative_data_dir(db: Db) -> Option<Self> {
        Self::spawn_inner(db, true, |_| {}).await
    }

    async fn spawn_inner(
        db: Db,
        relative_data_dir: bool,
        edit: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        if std::env::var("TEST_LOG").is_ok() {
            crevid_server::telemetry::init(crevid_server::config::LogFormat::Text);
        }
        let (dir, url, pg) = fresh_database(db).await?;
        let data_dir = if relative_data_dir {
            relative_to_cwd(dir.path())
        } else {
            dir.path().to_path_buf()
        };
        let mut config = test_config(&url, &data_dir);
        edit(&mut config);
        let app = Application::build(config).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let fake = FakeOpenAi::start().await;
        fake.require_key(TEST_KEY);
        let admin = account(&state, "admin@example.com", Role::Admin).await;
        let a = account(&state, "a@example.com", Role::Creator).await;
        let b = account(&state, "b@example.com", Role::Creator).await;
        // Generous limits for every test but the one about limits.
        let values = SettingsValues {
            rate_generate_per_minute: 10_000,
            rate_jobs_per_minute: 10_000,
            ..SettingsValues::default()
        };
        app::ssr::settings::update(
            &state,
            SettingsUpdate {
                values: values.to_update_map(),
                ..SettingsUpdate::default()
            },
        )
        .await
        .expect("settings");
        Some(Self {
            base,
            client: a.client.clone(),
            anonymous: reqwest::Client::new(),
            a,
            b,
            admin,
            fake,
            state,
            background: Default::default(),
            _dir: dir,
            _pg: pg,
        })
    }

    pub fn client_for(&self, who: Who) -> &reqwest::Client {
        match who {
            Who::Anonymous => &self.anonymous,
            Who::CreatorA => &self.a.client,
            Who::CreatorB => &self.b.client,
            Who::Admin => &self.admin.client,
        }
    }

    /// A request as `who`, with this app's Origin (as a browser would send).
    pub async fn call(
        &self,
        who: Who,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client_for(who)
            .request(method, self.url(path))
            .header("origin", &self.base);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, _, json) = self.send(request).await;
        (status, json)
    }

    /// Points the language model at the fake, with the fake's key.
    pub async fn configure_llm(&self) {
        self.configure_llm_with(|_| {}).await;
    }

    pub async fn configure_llm_with(&self, edit: impl FnOnce(&mut SettingsValues)) {
        let mut values = SettingsValues {
            llm_base_url: self.fake.base_url(),
            llm_model: "fake-script-model".into(),
            ..SettingsValues::default()
        };
        edit(&mut values);
        app::ssr::settings::update(
            &self.state,
            SettingsUpdate {
                values: values.to_update_map(),
                llm_api_key: Some(TEST_KEY.into()),
                ..SettingsUpdate::default()
            },
        )
        .await
        .expect("settings update");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, j) = self.send(self.client.get(self.url(path))).await;
        (s, j)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, j) = self.send(self.client.post(self.url(path)).json(body)).await;
        (s, j)
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, j) = self.send(self.client.put(self.url(path)).json(body)).await;
        (s, j)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, _, j) = self.send(self.client.delete(self.url(path))).await;
        (s, j)
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.state.pool())
            .await
            .expect("count")
    }

    /// Runs this server's embedded workers, as `crevid serve` does.
    pub fn start_workers(&self) {
        let handles = app::ssr::engine::spawn_workers(self.state.clone());
        self.background.lock().expect("lock").extend(handles);
    }

    /// Another server process on the same database and data directory, with its workers
    /// running; it stops with the test.
    pub async fn start_second_server(&self) -> AppState {
        let mut config = test_config(&self.state.db.url, &self.state.data_dir);
        config.embedded_workers = true;
        let app = Application::build(config)
            .await
            .expect("second server builds");
        let state = app.state().clone();
        let handle = tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
        });
        self.background.lock().expect("lock").push(handle);
        state
    }

    /// Waits, without polling on a timer, until the job has ended: every finished task
    /// announces itself on `state.work`, and each announcement is a reason to look again.
    pub async fn wait_for_job(&self, id: i64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let announced = self.state.work.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();
            let (status, detail) = self.get(&format!("/api/jobs/{id}")).await;
            assert_eq!(status, 200, "{detail}");
            let job_status = detail["data"]["job"]["status"].as_str().unwrap_or_default();
            let running = detail["data"]["tasks"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["status"] == "queued" || t["status"] == "running")
            });
            if matches!(job_status, "completed" | "failed" | "cancelled") && !running {
                return detail["data"].clone();
            }
            tokio::time::timeout_at(deadline, announced)
                .await
                .unwrap_or_else(|_| panic!("job {id} did not end within 120 s: {detail}"));
        }
    }

    /// Waits, like `wait_for_job`, until `check` holds for the job's detail.
    pub async fn wait_until(&self, id: i64, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let announced = self.state.work.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();
            let (_, detail) = self.get(&format!("/api/jobs/{id}")).await;
            if check(&detail["data"]) {
                return detail["data"].clone();
            }
            tokio::time::timeout_at(deadline, announced)
                .await
                .unwrap_or_else(|_| panic!("job {id} never got there: {detail}"));
        }
    }

    /// Runs every due background task now, in this test.
    pub async fn drain(&self) -> usize {
        app::ssr::engine::drain(&self.state).await.expect("drain")
    }

    /// Generates from the splitter and saves: a content without any network.
    pub async fn saved_content(&self, script: &str) -> Value {
        let (status, generated) = self
            .post(
                "/api/content/generate",
                &serde_json::json!({ "mode": "script", "input": script }),
            )
            .await;
        assert_eq!(status, 200, "{generated}");
        let (status, saved) = self
            .post("/api/contents", &serde_json::json!({ "mode": "script", "input": script, "script": generated["data"] }))
            .await;
        assert_eq!(status, 201, "{saved}");
        saved["data"].clone()
    }
}

pub fn twenty_sentences() -> String {
    (1..=20)
        .map(|i| format!("This is sentence number {i} of the story."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A saved content of `scenes` scenes, split from `script` (no network).
pub async fn content_with_scenes(app: &TestApp, script: &str, scenes: u32) -> Value {
    let (status, generated) = app
        .post(
            "/api/content/generate",
            &serde_json::json!({ "mode": "script", "input": script, "presets": { "scene_count": scenes } }),
        )
        .await;
    assert_eq!(status, 200, "{generated}");
    let (status, saved) = app
        .post(
            "/api/contents",
            &serde_json::json!({ "mode": "script", "input": script, "script": generated["data"] }),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    saved["data"].clone()
}

async fn account(state: &AppState, email: &str, role: Role) -> Account {
    let view = app::ssr::users::create(
        state,
        CreateUserRequest {
            email: email.into(),
            password: PASSWORD.into(),
            role,
        },
    )
    .await
    .expect("create user");
    let user = CurrentUser {
        id: view.id,
        email: view.email,
        role,
    };
    let token = app::ssr::tokens::create(
        state,
        &user,
        CreateTokenRequest {
            name: "tests".into(),
        },
    )
    .await
    .expect("token")
    .secret;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    Account {
        user,
        token,
        client,
    }
}

/// Runs each named test on SQLite and on Postgres.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            }
        )*
    };
}

/// The app's configuration for the stand-in: its development credentials, `retries`
/// deliveries after the first, five minutes per delivery, 5 s of clock tolerance.
pub fn qstash_config(
    qstash: &testkit::qstash::QStash,
    retries: u32,
) -> app::ssr::qstash::QStashConfig {
    app::ssr::qstash::QStashConfig::new(
        &qstash.base_url(),
        qstash.token().to_owned(),
        qstash.current_key(),
        Some(qstash.next_key()),
        (retries, Duration::from_secs(300), Duration::from_secs(5)),
    )
}

/// The real `crevid serve` binary on this test's database and data directory, with the
/// test's lease and retry timing, logging at `log` (RUST_LOG) to a pipe the test reads.
pub struct Binary {
    pub child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

pub fn spawn_binary(app: &TestApp, log: &str, env: &[(&str, String)]) -> Binary {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crevid"));
    command
        .arg("serve")
        .env("DATABASE_URL", &*app.state.db.url)
        .env("CREVID_DATA_DIR", &*app.state.data_dir)
        .env("LEPTOS_SITE_ROOT", app.state.data_dir.join("site"))
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("CREVID_TASK_LEASE_MS", "1500")
        .env("CREVID_RETRY_BASE_MS", "20")
        .env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start crevid serve");
    let (send, lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("piped stdout");
    // A thread, not a task: the pipe is read with blocking calls until the server dies.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Kept draining after the test stops listening, so the server never blocks.
            let _ = send.send(line);
        }
    });
    Binary { child, lines }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A server left running would outlive the test and its database.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Waits (off the runtime) for the process to exit; its status and the lines it logged
    /// that were not read yet.
    pub async fn exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true")
                .spawn()
                .expect("a placeholder process"),
        );
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("waiting for the server")
            .expect("the server's exit status");
        let mut rest = Vec::new();
        while let Some(line) = self.lines.recv().await {
            rest.push(line);
        }
        (status, rest)
    }

    /// Waits for the `n`th log line containing `needle`, and returns it.
    pub async fn wait_for_log(&mut self, needle: &str, n: usize) -> String {
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => {
                    seen += 1;
                    if seen == n {
                        return line;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("the server stopped before logging {needle:?}"),
                Err(_) => panic!("the server never logged {needle:?} {n} times"),
            }
        }
    }
}

/// Pictures and narration through the fake provider, with `edit` on top.
pub async fn use_provider(app: &TestApp, edit: impl FnOnce(&mut SettingsValues)) {
    app.configure_llm_with(|v| {
        v.image_provider = "openai".into();
        v.tts_provider = "openai".into();
        v.image_model = "fake-image-model".into();
        v.tts_model = "fake-speech-model".into();
        v.rate_jobs_per_minute = 10_000;
        edit(v);
    })
    .await;
}

/// Starts a media or narration job (`path`) for every scene of `content`; its id.
pub async fn start_job(app: &TestApp, path: &str, content: &Value) -> i64 {
    let (status, job) = app
        .post(path, &serde_json::json!({ "content_id": content["id"] }))
        .await;
    assert_eq!(status, 202, "{job}");
    job["data"]["id"].as_i64().unwrap()
}

/// A command from the Python tools `scripts/setup.sh --test` installs into
/// `target/pytools` (`bin/<name>`); None (said once) when they are not installed, which
/// under `CI=true` is a failure.
pub fn pytool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/pytools/bin")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "target/pytools/bin/{name} is missing: run scripts/setup.sh --test"
    );
    eprintln!("SKIPPED: target/pytools/bin/{name} is missing; run scripts/setup.sh --test");
    None
}

/// Frames of each scene of `content` as the render counts them: its narration plus the
/// default 400 ms pause, in whole frames at 30 fps.
pub async fn scene_frames(app: &TestApp, content: i64) -> Vec<i64> {
    let narration: Vec<i64> = sqlx::query_scalar(
        "SELECT a.duration_ms FROM scenes s JOIN assets a ON a.id = s.audio_asset_id \
         WHERE s.content_id = $1 ORDER BY s.position",
    )
    .bind(content)
    .fetch_all(app.state.pool())
    .await
    .expect("narration");
    narration
        .iter()
        .map(|ms| ((ms + 400) as f64 * 30.0 / 1000.0).round() as i64)
        .collect()
}

/// Renders content `id` and returns its video, checking with ffprobe that it holds
/// `frames` frames at 30 fps (every frame once; picture and sound within 0.1 s) of `size`.
pub async fn render_video(app: &TestApp, id: i64, frames: i64, size: (u64, u64)) -> Vec<u8> {
    let (status, job) = app
        .post(
            &format!("/api/contents/{id}/render"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let detail = app
        .wait_for_job(job["data"]["id"].as_i64().expect("job id"))
        .await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let response = app
        .client
        .get(app.url(&format!("/api/contents/{id}/video")))
        .send()
        .await
        .expect("video");
    assert_eq!(response.status(), 200);
    let video = response.bytes().await.expect("video bytes").to_vec();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("video.mp4");
    std::fs::write(&path, &video).expect("video written");
    let probed = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    let probed: Value = serde_json::from_slice(&probed.stdout).expect("ffprobe json");
    let planned = frames as f64 / 30.0;
    for stream in probed["streams"].as_array().expect("streams") {
        let seconds: f64 = stream["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("duration");
        assert!(
            (seconds - planned).abs() <= 0.1,
            "{} lasts {seconds} s, the plan {planned} s",
            stream["codec_type"]
        );
        if stream["codec_type"] == "video" {
            assert_eq!(stream["nb_frames"], frames.to_string(), "every frame once");
            assert_eq!(
                (stream["width"].as_u64(), stream["height"].as_u64()),
                (Some(size.0), Some(size.1))
            );
        }
    }
    video
}

/// The status page's line named `name`, as an admin sees it.
pub async fn status_check(app: &TestApp, name: &str) -> Value {
    let (status, body) = app
        .call(
            Who::Admin,
            reqwest::Method::GET,
            "/api/settings/status",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("a {name} check: {body}"))
}
