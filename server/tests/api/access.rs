//! Who may do what. The access matrix walks every REST route, every server function and
//! every page the router has (a route without a rule or a sample request fails the test),
//! as anonymous, creator A, creator B and admin; B gets 404 on every one of A's ids.

use app::ssr::rest::api_routes;
use app::ssr::security::{Access, PAGES};
use leptos_axum::generate_route_list;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_databases;
use crate::helpers::{Db, TestApp, Who, EVERYONE, PASSWORD};

both_databases!(
    rest_routes_follow_their_rules,
    server_functions_follow_their_rules,
    pages_follow_their_rules
);

/// Whose id a route's `{id}` names, and so who must get 404 for it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Owner {
    None,
    /// A's content (or its job or asset): B gets 404, an admin may act on it.
    ContentOfA,
    /// A's token or webhook endpoint: only A may touch it (admins get 404 too).
    PrivateOfA,
    /// A's account (admin-only routes).
    UserA,
}

fn counter() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

async fn fresh_content_of_a(app: &TestApp) -> i64 {
    app.saved_content("Owls turn their heads far. They see in the dark.")
        .await["id"]
        .as_i64()
        .unwrap()
}

/// A's new content with a clip on its first scene: (content, scene).
async fn content_of_a_with_clip(app: &TestApp) -> (i64, i64) {
    let content = app
        .saved_content("Owls turn their heads far. They see in the dark.")
        .await;
    let (id, scene) = (
        content["id"].as_i64().unwrap(),
        content["scenes"][0]["id"].as_i64().unwrap(),
    );
    let (status, _, answer) = app
        .send(
            app.client_for(Who::CreatorA)
                .put(app.url(&format!("/api/contents/{id}/scenes/{scene}/visual")))
                .header("content-type", "video/mp4")
                .body(crate::clips::clip("mp4", (64, 48), &["red"], false)),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    (id, scene)
}

async fn fresh_token_of_a(app: &TestApp) -> i64 {
    let (_, created) = app
        .call(
            Who::CreatorA,
            Method::POST,
            "/api/tokens",
            Some(&json!({ "name": "matrix" })),
        )
        .await;
    created["data"]["token"]["id"].as_i64().unwrap()
}

/// A's new webhook endpoint, disabled so that events in the other samples queue nothing
/// for it; and a finished delivery of it.
async fn fresh_webhook_of_a(app: &TestApp) -> (i64, i64) {
    // The matrix makes dozens; one account may have 20.
    sqlx::query("DELETE FROM webhook_endpoints WHERE owner_id = $1")
        .bind(app.a.user.id)
        .execute(app.state.pool())
        .await
        .unwrap();
    let (status, created) = app
        .call(
            Who::CreatorA,
            Method::POST,
            "/api/webhooks",
            Some(&json!({ "url": "https://93.184.215.14/crevid", "events": ["video.ready"] })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["endpoint"]["id"].as_i64().unwrap();
    let (status, _) = app
        .call(
            Who::CreatorA,
            Method::PUT,
            &format!("/api/webhooks/{id}"),
            Some(&json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    let delivery: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (endpoint_id, message_id, event, payload, created_at, updated_at) \
         VALUES ($1, 'msg_matrix', 'video.ready', '{}', 0, 0) RETURNING id",
    )
    .bind(id)
    .fetch_one(app.state.pool())
    .await
    .unwrap();
    (id, delivery)
}

async fn job_of_a(app: &TestApp) -> i64 {
    let content = fresh_content_of_a(app).await;
    let (_, job) = app
        .post("/api/tts/generate", &json!({ "content_id": content }))
        .await;
    job["data"]["id"].as_i64().unwrap()
}

async fn asset_of_a(app: &TestApp) -> i64 {
    let content = fresh_content_of_a(app).await;
    app.post("/api/tts/generate", &json!({ "content_id": content }))
        .await;
    app.drain().await;
    sqlx::query_scalar("SELECT id FROM assets WHERE content_id = $1 ORDER BY id LIMIT 1")
        .bind(content)
        .fetch_one(app.state.pool())
        .await
        .unwrap()
}

fn script_sample() -> Value {
    json!({ "title": "T", "hook": "", "scenes": [{ "narration": "One.", "visual_prompt": "", "seconds": 2.0 }],
            "description": "", "hashtags": [], "provider": "builtin:splitter",
            "presets": { "language": "English", "tone": "calm", "target_seconds": 30, "scene_count": 1,
                         "aspect_ratio": "9:16", "visual_style": "flat", "voice": "alloy" } })
}

/// A well-formed request for a REST route: its path with ids filled in, a body, and whose
/// id it names. A new route needs a line here.
async fn rest_sample(app: &TestApp, method: &Method, path: &str) -> (String, Option<Value>, Owner) {
    let n = counter();
    match (method.as_str(), path) {
        ("GET", "/healthz") | ("GET", "/api/auth/me") | ("GET", "/api/openapi.json") => {
            (path.into(), None, Owner::None)
        }
        ("POST", "/api/auth/setup") => (
            path.into(),
            Some(json!({ "email": format!("late{n}@example.com"), "password": PASSWORD })),
            Owner::None,
        ),
        ("POST", "/api/auth/sign-in") => (
            path.into(),
            Some(json!({ "email": "a@example.com", "password": PASSWORD })),
            Owner::None,
        ),
        ("POST", "/api/auth/sign-out") => (path.into(), None, Owner::None),
        ("POST", "/api/content/generate") => (
            path.into(),
            Some(json!({ "mode": "script", "input": "A short script. It has two sentences." })),
            Owner::None,
        ),
        ("GET", "/api/contents")
        | ("GET", "/api/tokens")
        | ("GET", "/api/webhooks")
        | ("GET", "/api/settings")
        | ("GET", "/api/settings/status")
        | ("GET", "/metrics")
        | ("GET", "/api/users")
        | ("POST", "/api/settings/reset") => (path.into(), None, Owner::None),
        ("POST", "/api/contents") => (
            path.into(),
            Some(
                json!({ "mode": "script", "input": "One sentence here, long enough.", "script": script_sample() }),
            ),
            Owner::None,
        ),
        ("GET", "/api/contents/{id}") | ("DELETE", "/api/contents/{id}") => (
            format!("/api/contents/{}", fresh_content_of_a(app).await),
            None,
            Owner::ContentOfA,
        ),
        ("PUT", "/api/contents/{id}") => (
            format!("/api/contents/{}", fresh_content_of_a(app).await),
            Some(json!({ "title": "Edited", "scenes": [{ "narration": "New." }] })),
            Owner::ContentOfA,
        ),
        ("PUT", "/api/contents/{id}/voice") => (
            format!("/api/contents/{}/voice", fresh_content_of_a(app).await),
            Some(json!({ "voice": "en+f3", "speed": 1.25 })),
            Owner::ContentOfA,
        ),
        ("PUT", "/api/contents/{id}/scenes/{scene_id}/clip") => {
            let (content, scene) = content_of_a_with_clip(app).await;
            (
                format!("/api/contents/{content}/scenes/{scene}/clip"),
                Some(json!({ "when_shorter": "loop", "sound": 0 })),
                Owner::ContentOfA,
            )
        }
        ("PUT", "/api/contents/{id}/transition") => (
            format!("/api/contents/{}/transition", fresh_content_of_a(app).await),
            Some(json!({ "transition": "crossfade" })),
            Owner::ContentOfA,
        ),
        ("PUT", "/api/contents/{id}/scenes/{scene_id}/visual")
        | ("DELETE", "/api/contents/{id}/scenes/{scene_id}/visual") => {
            let content = app
                .saved_content("Owls turn their heads far. They see in the dark.")
                .await;
            (
                format!(
                    "/api/contents/{}/scenes/{}/visual",
                    content["id"], content["scenes"][0]["id"]
                ),
                None,
                Owner::ContentOfA,
            )
        }
        ("GET", "/api/contents/{id}/scenes/{scene_id}/footage") => {
            let content = app
                .saved_content("Owls turn their heads far. They see in the dark.")
                .await;
            (
                format!(
                    "/api/contents/{}/scenes/{}/footage?q=owls",
                    content["id"], content["scenes"][0]["id"]
                ),
                None,
                Owner::ContentOfA,
            )
        }
        ("GET", "/api/stock/preview") => ("/api/stock/preview?pick=x".into(), None, Owner::None),
        ("POST", "/api/footage/find") => (
            path.into(),
            Some(json!({ "content_id": fresh_content_of_a(app).await })),
            Owner::ContentOfA,
        ),
        ("GET", "/api/voices") => ("/api/voices?language=French".into(), None, Owner::None),
        ("GET", "/api/voices/preview") => (
            format!(
                "/api/voices/preview?voice=en%2Bf3&content_id={}",
                fresh_content_of_a(app).await
            ),
            None,
            Owner::ContentOfA,
        ),
        ("POST", "/api/tokens") => (path.into(), Some(json!({ "name": "matrix" })), Owner::None),
        ("POST", "/api/media/generate") | ("POST", "/api/tts/generate") => (
            path.into(),
            Some(json!({ "content_id": fresh_content_of_a(app).await })),
            Owner::ContentOfA,
        ),
        ("POST", "/api/contents/{id}/render")
        | ("PUT", "/api/contents/{id}/music")
        | ("DELETE", "/api/contents/{id}/music")
        | ("GET", "/api/contents/{id}/video")
        | ("GET", "/api/contents/{id}/subtitles") => (
            path.replace("{id}", &fresh_content_of_a(app).await.to_string()),
            None,
            Owner::ContentOfA,
        ),
        ("POST", "/api/media/batch") | ("POST", "/api/tts/batch") => (
            path.into(),
            Some(json!({ "content_ids": [fresh_content_of_a(app).await] })),
            Owner::ContentOfA,
        ),
        ("GET", "/api/jobs") => (path.into(), None, Owner::None),
        ("GET", "/api/jobs/{id}") | ("POST", "/api/jobs/{id}/cancel") => (
            path.replace("{id}", &job_of_a(app).await.to_string()),
            None,
            Owner::ContentOfA,
        ),
        ("POST", "/api/jobs/{id}/retry") => {
            let job = job_of_a(app).await;
            // Something to retry: one of its tasks failed.
            sqlx::query(
                "UPDATE tasks SET status = 'failed', last_error = 'boom' WHERE job_id = $1",
            )
            .bind(job)
            .execute(app.state.pool())
            .await
            .unwrap();
            (
                path.replace("{id}", &job.to_string()),
                None,
                Owner::ContentOfA,
            )
        }
        ("GET", "/api/assets/{id}") => (
            format!("/api/assets/{}", asset_of_a(app).await),
            None,
            Owner::ContentOfA,
        ),
        ("DELETE", "/api/tokens/{id}") => (
            format!("/api/tokens/{}", fresh_token_of_a(app).await),
            None,
            Owner::PrivateOfA,
        ),
        ("POST", "/api/webhooks") => (
            path.into(),
            Some(
                json!({ "url": format!("https://93.184.215.14/hook{n}"), "events": ["video.ready"] }),
            ),
            Owner::None,
        ),
        ("GET", "/api/webhooks/{id}")
        | ("DELETE", "/api/webhooks/{id}")
        | ("POST", "/api/webhooks/{id}/rotate-secret")
        | ("GET", "/api/webhooks/{id}/deliveries") => (
            path.replace("{id}", &fresh_webhook_of_a(app).await.0.to_string()),
            None,
            Owner::PrivateOfA,
        ),
        ("PUT", "/api/webhooks/{id}") => (
            path.replace("{id}", &fresh_webhook_of_a(app).await.0.to_string()),
            Some(json!({ "description": "matrix" })),
            Owner::PrivateOfA,
        ),
        ("POST", "/api/webhooks/{id}/deliveries/{delivery_id}/redeliver") => {
            let (id, delivery) = fresh_webhook_of_a(app).await;
            (
                format!("/api/webhooks/{id}/deliveries/{delivery}/redeliver"),
                None,
                Owner::PrivateOfA,
            )
        }
        ("PUT", "/api/settings") => (path.into(), Some(json!({ "values": {} })), Owner::None),
        ("POST", "/api/users") => (
            path.into(),
            Some(json!({ "email": format!("new{n}@example.com"), "password": PASSWORD })),
            Owner::None,
        ),
        ("PUT", "/api/users/{id}") => (
            format!("/api/users/{}", app.a.user.id),
            Some(json!({ "role": "creator" })),
            Owner::UserA,
        ),
        other => panic!("no sample request for {other:?}: add one to access.rs"),
    }
}

/// Checks one answer against the rule. Public routes answer everyone alike (compared with
/// the admin's answer), never "sign in".
fn check(route: &str, access: Access, owner: Owner, who: Who, status: u16, body: &Value) {
    let ctx = format!("{route} as {who:?}: {status} {body}");
    let denied = matches!(status, 401 | 403 | 404);
    match (access, who) {
        (Access::Public, _) => assert_ne!(status, 401, "{ctx}"),
        (_, Who::Anonymous) => assert_eq!(status, 401, "{ctx}"),
        (Access::Admin, Who::CreatorA | Who::CreatorB) => assert_eq!(status, 403, "{ctx}"),
        (Access::User, Who::CreatorB)
            if owner == Owner::ContentOfA || owner == Owner::PrivateOfA =>
        {
            assert_eq!(status, 404, "{ctx}")
        }
        (Access::User, Who::Admin) if owner == Owner::PrivateOfA => {
            assert_eq!(status, 404, "{ctx}")
        }
        _ => assert!(!denied && status < 500, "{ctx}"),
    }
}

async fn rest_routes_follow_their_rules(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let routes = api_routes();
    assert!(routes.len() >= 20);
    for route in &routes {
        for who in EVERYONE {
            let (path, body, owner) = rest_sample(&app, &route.method, route.path).await;
            let (status, answer) = app
                .call(who, route.method.clone(), &path, body.as_ref())
                .await;
            check(
                &format!("{} {}", route.method, route.path),
                route.access,
                owner,
                who,
                status,
                &answer,
            );
        }
    }
}

async fn server_functions_follow_their_rules(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let rules = app::api::server_fn_rules();
    let registered: Vec<&str> = server_fn::axum::server_fn_paths()
        .map(|(path, _)| path)
        .collect();
    for path in &registered {
        assert!(
            rules.iter().any(|(p, _)| p == path),
            "server function {path} has no access rule in api::server_fn_rules"
        );
    }
    let name_of = |path: &str| {
        path.trim_start_matches("/_sfn/")
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned()
    };
    for (path, access) in rules {
        for who in EVERYONE {
            let n = counter();
            let name = name_of(path);
            let (args, owner) = match name.as_str() {
                "me" | "sign_out" | "list_tokens" | "list_webhooks" | "get_settings"
                | "reset_settings" | "system_status" | "list_users" => (json!({}), Owner::None),
                "setup_admin" => (
                    json!({ "req": { "email": format!("late{n}@example.com"), "password": PASSWORD } }),
                    Owner::None,
                ),
                "sign_in" => (
                    json!({ "req": { "email": "a@example.com", "password": PASSWORD } }),
                    Owner::None,
                ),
                "generate_script" => (
                    json!({ "req": { "mode": "script", "input": "A short script. It has two sentences." } }),
                    Owner::None,
                ),
                "save_content" => (
                    json!({ "req": { "mode": "script", "input": "One sentence here, long enough.", "script": script_sample() } }),
                    Owner::None,
                ),
                "list_contents" => (json!({ "query": {} }), Owner::None),
                "get_content" | "delete_content" => (
                    json!({ "id": fresh_content_of_a(&app).await }),
                    Owner::ContentOfA,
                ),
                "update_content" => (
                    json!({ "id": fresh_content_of_a(&app).await, "req": { "title": "E", "scenes": [{ "narration": "N." }] } }),
                    Owner::ContentOfA,
                ),
                "create_token" => (json!({ "req": { "name": "m" } }), Owner::None),
                "list_voices" => (json!({ "language": "French" }), Owner::None),
                "set_voice" => (
                    json!({ "id": fresh_content_of_a(&app).await, "req": { "voice": "alloy" } }),
                    Owner::ContentOfA,
                ),
                "set_clip_options" => {
                    let (content, scene) = content_of_a_with_clip(&app).await;
                    (
                        json!({ "id": content, "scene_id": scene, "update": { "when_shorter": "loop", "sound": 0 } }),
                        Owner::ContentOfA,
                    )
                }
                "stock_sources" => (json!({}), Owner::None),
                "search_footage" | "pick_footage" => {
                    let content = app
                        .saved_content("Owls turn their heads far. They see in the dark.")
                        .await;
                    let (id, scene) = (&content["id"], &content["scenes"][0]["id"]);
                    let args = if name == "pick_footage" {
                        json!({ "id": id, "scene_id": scene, "pick": "x" })
                    } else {
                        json!({ "id": id, "scene_id": scene, "query": "owls", "kind": "videos", "provider": null, "page": 1 })
                    };
                    (args, Owner::ContentOfA)
                }
                "find_footage" => (
                    json!({ "req": { "content_id": fresh_content_of_a(&app).await } }),
                    Owner::ContentOfA,
                ),
                "set_transition" => (
                    json!({ "id": fresh_content_of_a(&app).await, "transition": "wipe" }),
                    Owner::ContentOfA,
                ),
                "start_job" => (
                    json!({ "kind": "media", "req": { "content_id": fresh_content_of_a(&app).await } }),
                    Owner::ContentOfA,
                ),
                "list_jobs" => (json!({ "filter": {} }), Owner::None),
                "start_render" => (
                    json!({ "content_id": fresh_content_of_a(&app).await }),
                    Owner::ContentOfA,
                ),
                "content_jobs" => (
                    json!({ "content_id": fresh_content_of_a(&app).await }),
                    Owner::ContentOfA,
                ),
                "cancel_job" => (json!({ "id": job_of_a(&app).await }), Owner::ContentOfA),
                "retry_job" => {
                    let job = job_of_a(&app).await;
                    sqlx::query("UPDATE tasks SET status = 'failed' WHERE job_id = $1")
                        .bind(job)
                        .execute(app.state.pool())
                        .await
                        .unwrap();
                    (json!({ "id": job }), Owner::ContentOfA)
                }
                "create_webhook" => (
                    json!({ "req": { "url": format!("https://93.184.215.14/sfn{n}"), "events": ["video.ready"] } }),
                    Owner::None,
                ),
                "update_webhook" => (
                    json!({ "id": fresh_webhook_of_a(&app).await.0, "req": { "description": "m" } }),
                    Owner::PrivateOfA,
                ),
                "delete_webhook" | "rotate_webhook_secret" | "webhook_deliveries" => (
                    json!({ "id": fresh_webhook_of_a(&app).await.0 }),
                    Owner::PrivateOfA,
                ),
                "redeliver_webhook" => {
                    let (id, delivery) = fresh_webhook_of_a(&app).await;
                    (
                        json!({ "id": id, "delivery_id": delivery }),
                        Owner::PrivateOfA,
                    )
                }
                "revoke_token" => (
                    json!({ "id": fresh_token_of_a(&app).await }),
                    Owner::PrivateOfA,
                ),
                "update_settings" => (json!({ "update": { "values": {} } }), Owner::None),
                "create_user" => (
                    json!({ "req": { "email": format!("new{n}@example.com"), "password": PASSWORD } }),
                    Owner::None,
                ),
                "update_user" => (
                    json!({ "id": app.a.user.id, "req": { "role": "creator" } }),
                    Owner::UserA,
                ),
                other => {
                    panic!("no sample arguments for server function {other}: add them to access.rs")
                }
            };
            let (status, answer) = app.call(who, Method::POST, path, Some(&args)).await;
            check(path, access, owner, who, status, &answer);
        }
    }
}

async fn pages_follow_their_rules(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let normalise = |p: &str| p.replace('{', ":").replace('}', "");
    let routed: Vec<String> = generate_route_list(app::App)
        .iter()
        .map(|r| normalise(r.path()))
        .collect();
    for path in &routed {
        assert!(
            PAGES.iter().any(|(p, _)| p == path),
            "page {path} has no rule in security::PAGES"
        );
    }
    for (pattern, _) in PAGES {
        assert!(
            routed.iter().any(|p| p == pattern),
            "PAGES lists {pattern}, which the router does not have"
        );
    }
    let id = fresh_content_of_a(&app).await;
    for (pattern, access) in PAGES {
        let path = pattern.replace(":id", &id.to_string());
        for who in EVERYONE {
            let mut builder =
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
            if who != Who::Anonymous {
                let token = match who {
                    Who::CreatorA => &app.a.token,
                    Who::CreatorB => &app.b.token,
                    _ => &app.admin.token,
                };
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
                builder = builder.default_headers(headers);
            }
            // A page that never finishes (seen once under CI's load, not reproduced) fails
            // naming the page, rather than holding the whole run.
            let response = builder
                .timeout(std::time::Duration::from_secs(90))
                .build()
                .unwrap()
                .get(app.url(&path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path} as {who:?}: {e}"));
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = response
                .text()
                .await
                .unwrap_or_else(|e| panic!("GET {path} as {who:?}: reading the page: {e}"));
            let ctx = format!("{path} as {who:?}: {status} → {location}");
            match (*access, who, *pattern) {
                (_, _, "/setup") => assert_eq!(
                    (status, location.as_str()),
                    (303, "/"),
                    "set up already: {ctx}"
                ),
                (_, Who::Anonymous, "/login") => assert_eq!(status, 200, "{ctx}"),
                (_, _, "/login") => assert_eq!((status, location.as_str()), (303, "/"), "{ctx}"),
                (Access::Public, _, _) => assert_eq!(status, 200, "{ctx}"),
                (_, Who::Anonymous, _) => {
                    assert_eq!(status, 303, "{ctx}");
                    assert!(location.starts_with("/login?next="), "{ctx}");
                }
                (Access::Admin, Who::CreatorA | Who::CreatorB, _) => {
                    assert_eq!((status, location.as_str()), (303, "/"), "{ctx}")
                }
                (_, Who::CreatorB, "/contents/:id") => {
                    assert_eq!(status, 404, "{ctx}");
                    assert!(
                        body.contains("content not found"),
                        "B must not see A's content: {ctx}"
                    );
                }
                _ => assert_eq!(status, 200, "{ctx}"),
            }
        }
    }
}
