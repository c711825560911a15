//! Sign-in, sessions, tokens, CSRF, rate limits and secrets.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{Db, FreshApp, TestApp, Who, PASSWORD};

both_databases!(
    sessions_sign_in_rotate_and_end,
    disabling_a_user_stops_sessions_and_tokens_at_once,
    csrf_refuses_foreign_origins,
    tokens_are_shown_once_and_revocable,
    generation_is_rate_limited_and_recovers,
    sign_in_is_throttled_per_account_and_recovers,
    wrong_passwords_from_one_address_do_not_lock_out_the_owner,
    behind_a_trusted_proxy_its_header_names_the_client,
    set_up_beyond_this_machine_needs_the_code_from_the_log,
    a_rebinding_host_cannot_take_the_server,
    secrets_never_leave_the_server,
);

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("crevid_session="))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

async fn sign_in_raw(
    app: &TestApp,
    cookie: Option<&str>,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let mut request = app
        .anonymous
        .post(app.url("/api/auth/sign-in"))
        .header("origin", &app.base)
        .json(&json!({ "email": email, "password": password }));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn me_with(app: &TestApp, cookie: &str) -> Value {
    let response = app
        .anonymous
        .get(app.url("/api/auth/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn sessions_sign_in_rotate_and_end(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let wrong = sign_in_raw(&app, None, "a@example.com", "not the password").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        session_cookie(&wrong).is_none(),
        "no session for a failed sign-in"
    );
    let unknown = sign_in_raw(&app, None, "ghost@example.com", PASSWORD).await;
    let (status, body) = json_of(unknown).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"], "Wrong e-mail or password.",
        "no hint whether the account exists"
    );

    let first = sign_in_raw(&app, None, "A@Example.com ", PASSWORD).await;
    assert_eq!(first.status(), 200, "e-mail is case-insensitive");
    let set_cookie = first
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie1 = session_cookie(&first).unwrap();
    assert_eq!(me_with(&app, &cookie1).await["email"], "a@example.com");

    // Signing in again with the old session id gets a new id; the old one is dead, so an
    // id planted before sign-in is useless after it.
    let second = sign_in_raw(&app, Some(&cookie1), "a@example.com", PASSWORD).await;
    let cookie2 = session_cookie(&second).unwrap();
    assert_ne!(cookie1, cookie2);
    assert_eq!(me_with(&app, &cookie1).await, Value::Null);
    assert_eq!(me_with(&app, &cookie2).await["email"], "a@example.com");

    // Sign-out ends the session on the server, not just in the browser.
    let out = app
        .anonymous
        .post(app.url("/api/auth/sign-out"))
        .header("origin", &app.base)
        .header("cookie", &cookie2)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(me_with(&app, &cookie2).await, Value::Null);
    let after = app
        .anonymous
        .get(app.url("/api/contents"))
        .header("cookie", &cookie2)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

async fn disabling_a_user_stops_sessions_and_tokens_at_once(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let cookie = session_cookie(&sign_in_raw(&app, None, "a@example.com", PASSWORD).await).unwrap();
    assert_eq!(app.get("/api/contents").await.0, 200);
    let (status, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            &format!("/api/users/{}", app.a.user.id),
            Some(&json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["disabled"], true);
    assert_eq!(
        app.get("/api/contents").await.0,
        401,
        "the token stops at once"
    );
    assert_eq!(
        me_with(&app, &cookie).await,
        Value::Null,
        "the session stops at once"
    );
    assert_eq!(
        sign_in_raw(&app, None, "a@example.com", PASSWORD)
            .await
            .status(),
        401
    );
    // An admin cannot lock themselves out.
    let (status, body) = app
        .call(
            Who::Admin,
            Method::PUT,
            &format!("/api/users/{}", app.admin.user.id),
            Some(&json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // Enabled again, the account works with a new sign-in and its old token.
    app.call(
        Who::Admin,
        Method::PUT,
        &format!("/api/users/{}", app.a.user.id),
        Some(&json!({ "disabled": false })),
    )
    .await;
    assert_eq!(app.get("/api/contents").await.0, 200);
}

async fn csrf_refuses_foreign_origins(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let cookie = session_cookie(&sign_in_raw(&app, None, "a@example.com", PASSWORD).await).unwrap();
    let body = json!({ "mode": "script", "input": "A short script. It has two sentences." });
    let send = |origin: Option<&str>| {
        let mut request = app
            .anonymous
            .post(app.url("/api/content/generate"))
            .header("cookie", &cookie)
            .json(&body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let (status, answer) = json_of(send(Some("https://evil.example")).await.unwrap()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("csrf")),
        "{answer}"
    );
    let (status, answer) = json_of(send(Some("null")).await.unwrap()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("csrf")),
        "an opaque origin: {answer}"
    );
    let (status, answer) = json_of(send(None).await.unwrap()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("csrf")),
        "{answer}"
    );
    let (status, answer) = json_of(send(Some(&app.base)).await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    // Server functions are guarded the same way.
    let sfn = app
        .anonymous
        .post(
            app.url(
                app::api::server_fn_rules()
                    .iter()
                    .find(|(p, _)| p.contains("sign_out"))
                    .unwrap()
                    .0,
            ),
        )
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sfn.status(), 403);
    assert_eq!(
        me_with(&app, &cookie).await["email"],
        "a@example.com",
        "the foreign sign-out did nothing"
    );
    // Security headers come with every answer.
    let page = app
        .client_for(Who::CreatorA)
        .get(app.url("/"))
        .send()
        .await
        .unwrap();
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the page's script carries the CSP nonce"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    let api = app
        .client
        .get(app.url("/api/contents"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    assert_eq!(api.headers().get("x-frame-options").unwrap(), "DENY");
    assert!(api.headers().get("referrer-policy").is_some());
}

async fn tokens_are_shown_once_and_revocable(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let (status, created) = app
        .post("/api/tokens", &json!({ "name": "uploader" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    let id = created["data"]["token"]["id"].as_i64().unwrap();
    let (_, listed) = app.get("/api/tokens").await;
    assert!(
        !listed.to_string().contains(&secret),
        "the list never shows a secret"
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(app.state.pool())
        .await
        .unwrap();
    assert!(
        stored.iter().all(|h| h != &secret && h.len() == 64),
        "stored hashed"
    );
    let with_new = |s: &str| {
        app.anonymous
            .get(app.url("/api/contents"))
            .bearer_auth(s.to_owned())
            .send()
    };
    assert_eq!(with_new(&secret).await.unwrap().status(), 200);
    assert_eq!(app.delete(&format!("/api/tokens/{id}")).await.0, 204);
    assert_eq!(with_new(&secret).await.unwrap().status(), 401);
    assert_eq!(with_new("crevid_made-up").await.unwrap().status(), 401);
}

async fn generation_is_rate_limited_and_recovers(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    app.call(
        Who::Admin,
        Method::PUT,
        "/api/settings",
        Some(&json!({ "values": { "rate_generate_per_minute": 2 } })),
    )
    .await;
    let body = json!({ "mode": "script", "input": "A short script. It has two sentences." });
    for _ in 0..2 {
        assert_eq!(app.post("/api/content/generate", &body).await.0, 200);
    }
    let (status, headers, answer) = app
        .send(
            app.client
                .post(app.url("/api/content/generate"))
                .json(&body),
        )
        .await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limited");
    let wait: u64 = headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Per user: B is not held back by A.
    assert_eq!(
        app.call(
            Who::CreatorB,
            Method::POST,
            "/api/content/generate",
            Some(&body)
        )
        .await
        .0,
        200
    );
    // Retry-After is the promise: after it, A may generate again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(app.post("/api/content/generate", &body).await.0, 200);
}

async fn sign_in_is_throttled_per_account_and_recovers(db: Db) {
    let Some(app) = TestApp::spawn_with_window(db, 10).await else {
        return;
    };
    for _ in 0..5 {
        assert_eq!(
            sign_in_raw(&app, None, "b@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    let blocked = sign_in_raw(&app, None, "b@example.com", PASSWORD).await;
    assert_eq!(blocked.status(), 429, "even the right password waits");
    let wait: u64 = blocked
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Another account from the same address is not affected.
    assert_eq!(
        sign_in_raw(&app, None, "a@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        sign_in_raw(&app, None, "b@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // Per address: spraying many accounts from one address is stopped too. The dozen
    // attempts above have refilled by now (30 per 10 s come back one every 333 ms).
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Sent all at once, as a sprayer would, so the bucket has little time to refill.
    let mut attempts = tokio::task::JoinSet::new();
    for n in 0..80 {
        let (client, url, origin) = (
            app.anonymous.clone(),
            app.url("/api/auth/sign-in"),
            app.base.clone(),
        );
        attempts.spawn(async move {
            let body = json!({ "email": format!("spray{n}@example.com"), "password": "guess" });
            client
                .post(url)
                .header("origin", origin)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let statuses = attempts.join_all().await;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(refused + checked, 80, "{statuses:?}");
    assert!(
        checked >= 30,
        "30 attempts per window are allowed: {checked} were checked"
    );
    assert!(
        refused > 0,
        "attempts from one address are throttled: {statuses:?}"
    );
}

/// Every page and API answer, as admin and as creator, after every secret is set, and the
/// server's own log: none holds a secret or more than its first four characters.
async fn secrets_never_leave_the_server(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let secret = "sk-live-9f8e7d6c5b4a39281706f5e4";
    app.fake.require_key(secret);
    let (status, _) = app
        .call(Who::Admin, Method::PUT, "/api/settings", Some(&json!({ "values": { "llm_base_url": app.fake.base_url(), "llm_model": "fake-script-model" }, "llm_api_key": secret })))
        .await;
    assert_eq!(status, 200);
    // The provider rejects the key and quotes it back; errors must not repeat it.
    app.fake.set_behaviour(testkit::Behaviour::UnknownModel);
    let (status, answer) = app
        .post(
            "/api/content/generate",
            &json!({ "mode": "topic", "input": "bees" }),
        )
        .await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[key]"),
        "{answer}"
    );
    app.fake.set_behaviour(testkit::Behaviour::InvalidKey);
    app.post(
        "/api/content/generate",
        &json!({ "mode": "topic", "input": "bees" }),
    )
    .await;
    let id = app.saved_content("Secrets stay home. Always.").await["id"]
        .as_i64()
        .unwrap();

    let mut seen = Vec::new();
    for who in [Who::Admin, Who::CreatorA] {
        for route in app::ssr::rest::api_routes()
            .iter()
            .filter(|r| r.method == Method::GET)
        {
            let path = route.path.replace("{id}", &id.to_string());
            seen.push((
                path.clone(),
                app.call(who, Method::GET, &path, None).await.1.to_string(),
            ));
        }
        for (page, _) in app::ssr::security::PAGES {
            let path = page.replace(":id", &id.to_string());
            let html = app
                .client_for(who)
                .get(app.url(&path))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            seen.push((path, html));
        }
        for (path, _) in app::api::server_fn_rules() {
            let args = if path.contains("list_contents") {
                json!({ "query": {} })
            } else if path.contains("get_content") {
                json!({ "id": id })
            } else {
                json!({})
            };
            seen.push((
                path.to_owned(),
                app.call(who, Method::POST, path, Some(&args))
                    .await
                    .1
                    .to_string(),
            ));
        }
    }
    let prefix = &secret[..5];
    for (path, text) in &seen {
        assert!(
            !text.contains(prefix),
            "{path} shows the secret (or its first 5 characters)"
        );
    }
    assert!(
        seen.iter().any(|(_, t)| t.contains("sk-…f5e4")),
        "the masked form is shown"
    );
}

/// The real binary, its log at debug level captured: after the first admin is made with
/// `crevid user create`, the key set and rejected by the provider, no log line holds it.
#[tokio::test]
async fn the_server_log_holds_no_secret() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let env = |cmd: &mut Command| {
        cmd.env("CREVID_DATA_DIR", dir.path())
            .env("LEPTOS_SITE_ROOT", dir.path())
            .env("RUST_LOG", "debug,hyper=info,h2=info,rustls=info")
            .env_remove("DATABASE_URL");
    };
    let mut create = Command::new(env!("CARGO_BIN_EXE_crevid"));
    env(&mut create);
    let created = create
        .args(["user", "create", "--admin", "--email", "root@example.com"])
        .env("CREVID_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("created root@example.com (admin)"));

    let log = std::fs::File::create(&log_path).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_crevid"));
    env(&mut serve);
    let mut server = serve
        .arg("serve")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout into the log so the server never blocks on a full pipe.
    let drain_path = log_path.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(drain_path)
            .unwrap();
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
        }
    });

    let fake = testkit::FakeOpenAi::start().await;
    let secret = "sk-live-0a1b2c3d4e5f60718293a4b5";
    fake.require_key(secret);
    let client = reqwest::Client::new();
    let sign_in = client
        .post(format!("{base}/api/auth/sign-in"))
        .header("origin", &base)
        .json(&json!({ "email": "root@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), 200);
    let cookie = session_cookie(&sign_in).unwrap();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .header("origin", &base)
            .header("cookie", &cookie);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let settings = json!({ "values": { "llm_base_url": fake.base_url(), "llm_model": "fake-script-model" }, "llm_api_key": secret });
    assert_eq!(
        call(Method::PUT, "/api/settings", Some(settings))
            .await
            .unwrap()
            .status(),
        200
    );
    for behaviour in [
        testkit::Behaviour::UnknownModel,
        testkit::Behaviour::InvalidKey,
        testkit::Behaviour::ServerError,
    ] {
        fake.set_behaviour(behaviour);
        let answer = call(
            Method::POST,
            "/api/content/generate",
            Some(json!({ "mode": "topic", "input": "bees" })),
        )
        .await
        .unwrap();
        assert!(answer.status().is_server_error());
        assert!(!answer.text().await.unwrap().contains(&secret[..5]));
    }
    for path in [
        "/settings",
        "/status",
        "/api/settings",
        "/api/settings/status",
    ] {
        let text = call(Method::GET, path, None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(&secret[..5]), "{path}");
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("/api/content/generate"),
        "the log was captured at debug level"
    );
    assert!(
        !log.contains(&secret[..5]),
        "the server log holds the secret"
    );
    assert!(!log.contains(PASSWORD), "the server log holds a password");
}

/// A client whose connections come from `ip` (any 127.x address is this machine).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn sign_in_from(
    app: &TestApp,
    client: &reqwest::Client,
    forwarded_for: Option<&str>,
    password: &str,
) -> u16 {
    let mut request = client
        .post(app.url("/api/auth/sign-in"))
        .header("origin", &app.base)
        .json(&json!({ "email": "b@example.com", "password": password }));
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Only failures count, per account and address: 20 wrong passwords from one address hold
/// that address back (even with the right password) but never the owner elsewhere. A
/// forwarding header the admin did not configure is ignored, so rotating it helps nobody.
async fn wrong_passwords_from_one_address_do_not_lock_out_the_owner(db: Db) {
    let Some(app) = TestApp::spawn_with_window(db, 60).await else {
        return;
    };
    let (attacker, owner) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let mut statuses = Vec::new();
    for i in 0..20 {
        let spoofed = format!("198.51.100.{i}");
        statuses.push(sign_in_from(&app, &attacker, Some(&spoofed), "wrong password").await);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        sign_in_from(&app, &attacker, None, PASSWORD).await,
        429,
        "the guessing address waits, whatever it sends"
    );
    assert_eq!(sign_in_from(&app, &owner, None, PASSWORD).await, 200);
}

/// With `CREVID_CLIENT_IP_HEADER` set, every request comes from the proxy's address and the
/// header's last entry (what the proxy saw) is the client.
async fn behind_a_trusted_proxy_its_header_names_the_client(db: Db) {
    let Some(app) = TestApp::spawn_configured(db, |c| {
        c.rate_window_secs = 60;
        c.client_ip_header = Some(reqwest::header::HeaderName::from_static("x-forwarded-for"));
    })
    .await
    else {
        return;
    };
    let proxy = client_from("127.0.0.4");
    for _ in 0..20 {
        // The client may prepend anything; the proxy appends the address it saw.
        let status = sign_in_from(&app, &proxy, Some("203.0.113.1, 192.0.2.66"), "wrong").await;
        assert!(status == 401 || status == 429, "{status}");
    }
    assert_eq!(
        sign_in_from(&app, &proxy, Some("203.0.113.1, 192.0.2.66"), PASSWORD).await,
        429
    );
    assert_eq!(
        sign_in_from(&app, &proxy, Some("192.0.2.77"), PASSWORD).await,
        200,
        "the owner, behind the same proxy, signs in"
    );
}

async fn set_up(app: &FreshApp, host: Option<&str>, code: Option<&str>) -> (u16, Value) {
    let origin = host.map(|host| format!("http://{host}"));
    set_up_as(app, host, origin.as_deref(), code).await
}

/// `POST /api/auth/setup` with this Host and Origin (the app's own when None).
async fn set_up_as(
    app: &FreshApp,
    host: Option<&str>,
    origin: Option<&str>,
    code: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({ "email": "owner@example.com", "password": PASSWORD });
    if let Some(code) = code {
        body["setup_code"] = json!(code);
    }
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/auth/setup", app.base))
        .header("origin", origin.unwrap_or(&app.base))
        .json(&body);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    json_of(request.send().await.unwrap()).await
}

/// A set-up refused for want of the code, saying so.
fn asks_for_the_code((status, refused): (u16, Value)) {
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set-up code"),
        "{refused}"
    );
}

/// Listening beyond loopback with no account yet, whoever reached /setup first used to
/// own the server. Now set-up needs the one-time code the server logs at start (in any
/// case and grouping); on loopback a newcomer still sets up in one step.
async fn set_up_beyond_this_machine_needs_the_code_from_the_log(db: Db) {
    let Some(app) = FreshApp::spawn(db, "0.0.0.0:0").await else {
        return;
    };
    let code = app
        .state
        .setup_code
        .as_deref()
        .expect("a set-up code")
        .to_owned();
    asks_for_the_code(set_up(&app, None, None).await);
    assert_eq!(set_up(&app, None, Some("aaaa-bbbb-cccc")).await.0, 403);
    let typed = code.replace('-', " ").to_uppercase();
    let (status, admin) = set_up(&app, None, Some(&typed)).await;
    assert_eq!(status, 200, "{admin}");
    assert_eq!(admin["data"]["role"], "admin");

    let Some(local) = FreshApp::spawn(db, "127.0.0.1:0").await else {
        return;
    };
    assert!(local.state.setup_code.is_none());
    assert_eq!(set_up(&local, None, None).await.0, 200);

    // Behind a reverse proxy the socket is loopback, but the public URL is reachable by
    // anyone: the code is asked for there too.
    let Some(proxied) = FreshApp::spawn_configured(db, "127.0.0.1:0", |c| {
        c.public_url = Some("https://crevid.example.com".parse().unwrap());
    })
    .await
    else {
        return;
    };
    let code = proxied
        .state
        .setup_code
        .as_deref()
        .expect("a set-up code")
        .to_owned();
    // As the proxy forwards it: the public host and origin.
    let (host, origin) = (
        Some("crevid.example.com"),
        Some("https://crevid.example.com"),
    );
    asks_for_the_code(set_up_as(&proxied, host, origin, None).await);
    let (status, admin) = set_up_as(&proxied, host, origin, Some(&code)).await;
    assert_eq!(status, 200, "{admin}");
}

/// DNS rebinding: a page on attacker.example re-pointed at 127.0.0.1 sends requests whose
/// Host and Origin agree, so the CSRF check alone let it create the first admin. Names the
/// server was not told it has are refused; IP literals and localhost are served.
async fn a_rebinding_host_cannot_take_the_server(db: Db) {
    let Some(app) = FreshApp::spawn(db, "127.0.0.1:0").await else {
        return;
    };
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let (status, refused) = set_up(&app, Some(&format!("attacker.example:{port}")), None).await;
    assert_eq!(status, 421, "{refused}");
    let page = reqwest::Client::new()
        .get(format!("{}/setup", app.base))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 421);
    let (status, admin) = set_up(&app, Some(&format!("localhost:{port}")), None).await;
    assert_eq!(status, 200, "the owner, on localhost: {admin}");
}
