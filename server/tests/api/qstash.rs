//! The QStash transport through the local stand-in (testkit::qstash): the outbox and its
//! relay, signed worker routes, duplicates, outages, a killed server, flow control and
//! QStash giving up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::qstash::{QStash, QStashOptions, DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY};
use testkit::{Endpoint, Faults};

use crate::both_databases;
use crate::helpers::{
    content_with_scenes, qstash_config, spawn_binary, start_job as start, twenty_sentences,
    use_provider, Db, TestApp,
};

both_databases!(
    twenty_scenes_through_qstash,
    only_signed_deliveries_run,
    a_message_delivered_twice_runs_once,
    nothing_is_lost_while_qstash_is_away,
    a_killed_server_s_task_is_finished_by_redelivery,
    flow_control_caps_deliveries_in_flight,
    qstash_giving_up_fails_the_task,
    a_task_whose_worker_died_is_published_again,
    two_installs_on_one_qstash_account_each_get_their_deliveries,
    a_task_qstash_never_delivers_is_published_again_then_failed,
    a_delivery_meeting_a_restarting_server_is_retried_after_crevid_s_delay,
    cancelling_a_job_cancels_its_messages_in_qstash,
    a_lowered_limit_holds_in_qstash_at_once,
    a_permanent_failure_leaves_qstash_s_dlq_clean_unless_kept,
    retries_above_the_plan_are_clamped_and_said,
    the_status_page_notices_a_signing_key_roll,
    with_qstash_away_a_cancel_still_holds_and_the_status_page_says_why,
    qstash_giving_up_on_a_server_that_never_answered_leaves_the_task_to_the_relay,
    a_stopping_server_hands_its_delivery_back_after_the_grace_period,
);

/// Waits are scaled down a hundredfold: QStash's first retry (12 s) comes after 120 ms.
fn stand_in_options() -> QStashOptions {
    QStashOptions::scaled(0.01)
}

fn tasks(detail: &Value) -> Vec<Value> {
    detail["tasks"].as_array().unwrap().clone()
}

/// A picture job for a new one-scene content; its id.
async fn one_picture_job(app: &TestApp) -> i64 {
    let content = content_with_scenes(app, "This content has only one scene in it.", 1).await;
    start(app, "/api/media/generate", &content).await
}

async fn first_task(app: &TestApp, job: i64) -> i64 {
    sqlx::query_scalar("SELECT id FROM tasks WHERE job_id = $1 ORDER BY id LIMIT 1")
        .bind(job)
        .fetch_one(app.state.pool())
        .await
        .unwrap()
}

/// The `Upstash-Flow-Control-Key` the app published its messages to `route` under.
fn flow_key(qstash: &QStash, route: &str) -> String {
    qstash
        .messages()
        .into_iter()
        .find(|m| m.url.ends_with(route))
        .and_then(|m| m.flow_control)
        .map(|f| f.key)
        .unwrap_or_else(|| panic!("no message to {route} with flow control"))
}

async fn twenty_scenes_through_qstash(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |v| {
        v.image_concurrency = 3;
        v.tts_concurrency = 2;
    })
    .await;
    app.fake.set_image_latency(Duration::from_millis(30));
    app.fake.set_faults(Faults {
        server_error: 0.3,
        seed: 7,
        ..Faults::default()
    });
    app.start_workers();
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let images = start(&app, "/api/media/generate", &content).await;
    let narration = start(&app, "/api/tts/generate", &content).await;
    for job in [images, narration] {
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        assert!(tasks(&detail).iter().all(|t| t["status"] == "succeeded"));
    }
    let (_, after) = app.get(&format!("/api/contents/{}", content["id"])).await;
    for scene in after["data"]["scenes"].as_array().unwrap() {
        assert!(
            scene["image_asset_id"].is_i64() && scene["audio_asset_id"].is_i64(),
            "{scene}"
        );
    }
    // Every task went out as a message to its seeds' route, and faults were retried by
    // QStash's redeliveries.
    assert!(qstash.deliveries_to("/api/workers/media-generation") >= 20);
    assert!(qstash.deliveries_to("/api/workers/tts-generation") >= 20);
    assert!(
        qstash.deliveries() > 40,
        "some deliveries were retried after a fault"
    );
    let image_key = flow_key(&qstash, "/api/workers/media-generation");
    let audio_key = flow_key(&qstash, "/api/workers/tts-generation");
    assert!(image_key.starts_with("crevid-") && image_key.ends_with("-scene.image"));
    assert!(qstash.max_in_flight_for(&image_key) <= 3);
    assert!(qstash.max_in_flight_for(&audio_key) <= 2);
    assert!(app.fake.max_in_flight_to(Endpoint::Images) <= 3);
    assert!(
        qstash.dead_letters().is_empty(),
        "{:?}",
        qstash.dead_letters()
    );
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert_eq!(outbox, 0);
    // The status page says how tasks travel.
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "ok", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("QStash at") && message.contains("0 waiting"),
        "{message}"
    );
}

/// The status page's "Background tasks" line, as an admin sees it.
async fn background_check(app: &TestApp) -> Value {
    crate::helpers::status_check(app, "Background tasks").await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token made by a JWT library from the documented claims alone (not by the stand-in).
fn token(key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn claims(url: &str, body: &[u8]) -> Value {
    let now = unix_now();
    json!({
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "jwt_test",
        "body": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(body)),
    })
}

async fn only_signed_deliveries_run(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    // No relay: the test is QStash here.
    let job = one_picture_job(&app).await;
    let task = first_task(&app, job).await;
    let url = app.url("/api/workers/media-generation");
    let body = serde_json::to_vec(&json!({ "task_id": task })).unwrap();
    let current = qstash.current_key();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&url, &body);
        edit(&mut c);
        c
    };
    let now = unix_now();
    let cases: Vec<(&str, Option<String>, Vec<u8>, &str)> = vec![
        ("no header", None, body.clone(), "missing_signature"),
        (
            "not a JWT",
            Some("not-a-token".into()),
            body.clone(),
            "malformed_token",
        ),
        (
            "wrong key",
            Some(token("sig_wrongwrongwrong", &claims(&url, &body))),
            body.clone(),
            "bad_signature",
        ),
        (
            "expired",
            Some(token(
                &current,
                &edited(&|c| {
                    c["exp"] = json!(now - 60);
                    c["nbf"] = json!(now - 400);
                }),
            )),
            body.clone(),
            "expired",
        ),
        (
            "not yet valid",
            Some(token(&current, &edited(&|c| c["nbf"] = json!(now + 60)))),
            body.clone(),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            Some(token(&current, &edited(&|c| c["iss"] = json!("Someone")))),
            body.clone(),
            "wrong_issuer",
        ),
        (
            "another URL",
            Some(token(
                &current,
                &edited(&|c| c["sub"] = json!(app.url("/api/workers/tts-generation"))),
            )),
            body.clone(),
            "wrong_url",
        ),
        (
            "body changed after signing",
            Some(token(&current, &claims(&url, &body))),
            serde_json::to_vec(&json!({ "task_id": task + 1 })).unwrap(),
            "body_mismatch",
        ),
        (
            "hash of another body",
            Some(token(&current, &claims(&url, b"{\"task_id\":0}"))),
            body.clone(),
            "body_mismatch",
        ),
    ];
    for (what, signature, sent, reason) in cases {
        let mut request = app
            .anonymous
            .post(&url)
            .header("content-type", "application/json")
            .body(sent);
        if let Some(signature) = signature {
            request = request.header("upstash-signature", signature);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["reason"], reason, "{what}: {answer}");
    }
    // Nothing ran.
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(detail["data"]["tasks"][0]["status"], "queued");
    assert_eq!(detail["data"]["tasks"][0]["attempt"], 0);
    assert_eq!(app.fake.requests_to(Endpoint::Images), 0);

    // Signed with the next key (a rotation under way), padded body hash as QStash sends
    // it: accepted, and the task runs within the request.
    let mut padded = claims(&url, &body);
    padded["body"] = json!(base64::engine::general_purpose::URL_SAFE.encode(Sha256::digest(&body)));
    padded["aud"] = json!("");
    let response = app
        .anonymous
        .post(&url)
        .header("content-type", "application/json")
        .header("upstash-signature", token(&qstash.next_key(), &padded))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed", "{detail}");
    assert_eq!(app.fake.requests_to(Endpoint::Images), 1);
}

async fn a_message_delivered_twice_runs_once(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 4).await;
    app.fake.set_image_latency(Duration::from_millis(200));
    app.start_workers();
    // Every delivery goes out twice at once.
    qstash.set_duplicate_all(true);
    let content = content_with_scenes(&app, "First scene. Second scene. Third scene.", 3).await;
    let job = start(&app, "/api/media/generate", &content).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    qstash.set_duplicate_all(false);
    qstash.wait_idle().await;
    assert!(qstash.deliveries() >= 6, "{}", qstash.deliveries());
    // And one more, after the task finished.
    let message = qstash
        .messages()
        .into_iter()
        .find(|m| m.url.contains("/api/workers/media-generation"))
        .unwrap();
    let again = qstash.redeliver(&message.id).await.unwrap();
    assert_eq!(again.status, Some(200), "{again:?}");
    assert_eq!(
        app.fake.requests_to(Endpoint::Images),
        3,
        "each scene's picture made once"
    );
    for task in tasks(&detail) {
        assert_eq!(task["attempt"], 1, "{task}");
    }
    let assets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assets WHERE content_id = $1")
        .bind(content["id"].as_i64().unwrap())
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert_eq!(assets, 3);
}

async fn nothing_is_lost_while_qstash_is_away(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    qstash.set_unreachable(true);
    app.start_workers();
    let content = content_with_scenes(&app, "First scene. Second scene. Third scene.", 3).await;
    let job = start(&app, "/api/media/generate", &content).await;
    // The relay tried, failed, and says so (each relay pass is announced).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        let announced = app.state.work.notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        let row: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM outbox WHERE published_at IS NULL AND last_error IS NOT NULL LIMIT 1",
        )
        .fetch_optional(app.state.pool())
        .await
        .unwrap();
        if let Some(error) = row {
            break error;
        }
        tokio::time::timeout_at(deadline, announced)
            .await
            .expect("the relay tried to publish");
    };
    assert!(error.contains("503"), "{error}");
    let check = background_check(&app).await;
    assert_ne!(check["verdict"], "ok", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains("3 waiting"),
        "{check}"
    );
    assert_eq!(qstash.published(), 0);
    qstash.set_unreachable(false);
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert_eq!(app.fake.requests_to(Endpoint::Images), 3);
}

/// The server is killed with SIGKILL while a worker route runs a task; the server comes
/// back on the same address and QStash's redelivery finishes the task there. QStash keeps
/// real time here and the binaries CREVID's default backoff (`Upstash-Retry-Delay`: 2 s,
/// 4 s, 8 s …), so its retries span the restart as they would in production.
async fn a_killed_server_s_task_is_finished_by_redelivery(db: Db) {
    let qstash = QStash::start_with(QStashOptions::scaled(1.0)).await;
    // This test's own app queues the job; only the real binary publishes and works.
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.fake.set_image_latency(Duration::from_millis(1500));
    let job = one_picture_job(&app).await;
    let mut env = qstash.env().into_iter().collect::<Vec<_>>();
    env.push(("CREVID_QSTASH_RETRIES", "5".into()));
    env.push(("CREVID_RETRY_BASE_MS", "1000".into()));
    let mut first = spawn_binary(&app, "warn,crevid=info", &env);
    let line = first.wait_for_log("CREVID listening on", 1).await;
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    app.fake.wait_for_requests(Endpoint::Images, 1).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let (_, midway) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(midway["data"]["tasks"][0]["status"], "running", "{midway}");
    app.fake.set_image_latency(Duration::ZERO);
    env.push(("LEPTOS_SITE_ADDR", addr));
    let _second = spawn_binary(&app, "warn", &env);
    // The work happens in another process: each delivery the stand-in makes is a reason
    // to look at the task again.
    let detail = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let seen = qstash.deliveries();
            let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
            if detail["data"]["job"]["status"] != "processing" {
                return detail["data"].clone();
            }
            qstash.wait_until(|q| q.deliveries() > seen).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the task was not finished after the kill: {:?}",
            qstash.delivery_log()
        )
    });
    assert_eq!(
        detail["job"]["status"],
        "completed",
        "{detail} {:?}",
        qstash.delivery_log()
    );
    assert_eq!(detail["tasks"][0]["attempt"], 2, "{detail}");
    assert!(
        qstash.dead_letters().is_empty(),
        "{:?}",
        qstash.dead_letters()
    );
    assert!(qstash.deliveries_to("/api/workers/media-generation") >= 2);
}

async fn flow_control_caps_deliveries_in_flight(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 2).await;
    app.fake.set_image_latency(Duration::from_millis(150));
    app.start_workers();
    let content = content_with_scenes(&app, &twenty_sentences(), 8).await;
    let job = start(&app, "/api/media/generate", &content).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let key = flow_key(&qstash, "/api/workers/media-generation");
    assert_eq!(qstash.max_in_flight_for(&key), 2);
    assert_eq!(app.fake.max_in_flight_to(Endpoint::Images), 2);
}

async fn qstash_giving_up_fails_the_task(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let config = qstash_config(&qstash, 1);
    let Some(app) = TestApp::spawn_configured(db, |c| c.qstash = Some(config)).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    // Every image request fails with a 500: the task would retry five times, but QStash
    // is told to deliver only twice.
    app.fake.set_faults(Faults {
        server_error: 1.0,
        seed: 1,
        ..Faults::default()
    });
    app.start_workers();
    let job = one_picture_job(&app).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "failed", "{detail}");
    let error = detail["tasks"][0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("QStash gave up after 2 deliveries"),
        "{error}"
    );
    // The callback's call is logged once its answer came back.
    qstash.wait_for_failure_callbacks(1).await;
    assert_eq!(qstash.failure_callbacks().len(), 1);
    // Recorded on the task, the failure is deleted from QStash's dead-letter queue.
    assert!(
        qstash.dead_letters().is_empty(),
        "{:?}",
        qstash.dead_letters()
    );
}

/// The worker holding a task died and no delivery will come back for it (its message was
/// answered, or the relay died before recording it): once the lease has run out, the relay
/// publishes the task again, once, and the new delivery finishes it.
async fn a_task_whose_worker_died_is_published_again(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    let job = one_picture_job(&app).await;
    let task = first_task(&app, job).await;
    // As a killed server leaves it: published, claimed, its lease run out.
    let now = app::ssr::db::now_ms();
    sqlx::query(
        "UPDATE outbox SET created_at = $1, published_at = $1, message_id = 'msg_gone' WHERE task_id = $2",
    )
        .bind(now - 10_000)
        .bind(task)
        .execute(app.state.pool())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tasks SET status = 'running', attempt = 1, worker_id = 'dead', locked_until = $1 WHERE id = $2",
    )
    .bind(now - 1_000)
    .bind(task)
    .execute(app.state.pool())
    .await
    .unwrap();
    let published = app::ssr::qstash::relay_once(&app.state).await.unwrap();
    assert_eq!(published, 1);
    // Until the new delivery claims it, the task still looks orphaned: not published twice.
    assert_eq!(app::ssr::qstash::relay_once(&app.state).await.unwrap(), 0);
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert_eq!(detail["tasks"][0]["attempt"], 2);
    assert_eq!(app.fake.requests_to(Endpoint::Images), 1);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE task_id = $1")
        .bind(task)
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

/// This app's installation id, as stored in its database (None before it has one).
async fn install_id(app: &TestApp) -> Option<String> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = 'install.id'")
        .fetch_optional(app.state.pool())
        .await
        .unwrap()
}

/// Waits until `check` holds, looking again at every announcement on `state.work` (each
/// relay pass that publishes or fails a task announces itself), for at most a minute.
async fn wait_for<F, Fut>(app: &TestApp, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let announced = app.state.work.notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        if check().await {
            return;
        }
        tokio::time::timeout_at(deadline, announced)
            .await
            .unwrap_or_else(|_| panic!("{what} did not happen within 60 s"));
    }
}

/// Two installations on fresh databases share one QStash account: both number their first
/// task and outbox row 1, and each still gets its own delivery (QStash deduplicates by
/// `Upstash-Deduplication-Id` across the whole account).
async fn two_installs_on_one_qstash_account_each_get_their_deliveries(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(first) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    let Some(second) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&first, |_| {}).await;
    use_provider(&second, |_| {}).await;
    let jobs = [
        one_picture_job(&first).await,
        one_picture_job(&second).await,
    ];
    assert_eq!(
        first_task(&first, jobs[0]).await,
        first_task(&second, jobs[1]).await,
        "both databases number their tasks alike"
    );
    first.start_workers();
    second.start_workers();
    tokio::time::timeout(
        Duration::from_secs(60),
        qstash.wait_until(|q| q.published() + q.deduplicated() >= 2),
    )
    .await
    .expect("both installs published their task");
    assert_eq!(
        qstash.deduplicated(),
        0,
        "one install's message was dropped as the other's duplicate: {:?}",
        qstash.messages()
    );
    for (app, job) in [(&first, jobs[0]), (&second, jobs[1])] {
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "completed", "{detail}");
        assert_eq!(app.fake.requests_to(Endpoint::Images), 1);
    }
    // Every id the installs gave QStash carries their own installation id.
    let installs = [
        install_id(&first).await.expect("an install id"),
        install_id(&second).await.expect("an install id"),
    ];
    assert_ne!(installs[0], installs[1]);
    let messages = qstash.messages();
    for install in &installs {
        let mine: Vec<_> = messages
            .iter()
            .filter(|m| {
                m.deduplication_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(&format!("crevid-{install}-")))
            })
            .collect();
        assert_eq!(mine.len(), 1, "{messages:?}");
        let flow = mine[0].flow_control.as_ref().expect("flow control");
        assert_eq!(flow.key, format!("crevid-{install}-scene.image"));
    }
}

/// QStash signs with a key this app does not know (an old key after a rotation, another
/// account's): every delivery and the failure callback are answered 401 and QStash gives
/// up. The relay notices that no delivery reached the task within its lease and that
/// QStash no longer holds the message, publishes it again, shows it stuck on the status
/// page, and after three messages fails it saying what to check.
async fn a_task_qstash_never_delivers_is_published_again_then_failed(db: Db) {
    let qstash = QStash::start_with(QStashOptions {
        current_key: "sig_3yDbkT7wQvRfgNp2LmZs8cXa4HuE".into(),
        next_key: "sig_9pKeW2rVnBq6JtYo1GdLx5MzC7sF".into(),
        ..stand_in_options()
    })
    .await;
    // The app has the development keys; one retry, so QStash gives up quickly.
    let config = app::ssr::qstash::QStashConfig::new(
        &qstash.base_url(),
        qstash.token().to_owned(),
        DEV_CURRENT_SIGNING_KEY.to_owned(),
        Some(DEV_NEXT_SIGNING_KEY.to_owned()),
        (1, Duration::from_secs(300), Duration::from_secs(5)),
    );
    let Some(app) = TestApp::spawn_configured(db, |c| c.qstash = Some(config)).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    let job = one_picture_job(&app).await;
    let task = first_task(&app, job).await;
    let published = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE task_id = $1 AND published_at IS NOT NULL",
        )
        .bind(task)
        .fetch_one(app.state.pool())
        .await
        .unwrap()
    };
    wait_for(&app, "publishing the task again", || async {
        published().await >= 2
    })
    .await;
    // The status page names the cause (the account's keys are not the configured ones)
    // and the symptom.
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "error", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("QStash's current signing key is neither")
            && message.contains("1 task(s) published to QStash but not delivered within the lease"),
        "{message}"
    );
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "failed", "{detail}");
    let error = detail["tasks"][0]["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("QStash never delivered this task in 3 tries")
            && error.contains("signing keys"),
        "{error}"
    );
    assert_eq!(published().await, 3);
    assert_eq!(detail["tasks"][0]["attempt"], 0, "nothing ever ran");
    assert_eq!(app.fake.requests_to(Endpoint::Images), 0);
    // Every call QStash made was refused, failure callbacks included.
    tokio::time::timeout(
        Duration::from_secs(60),
        qstash.wait_until(|q| q.delivery_log().iter().any(|d| d.failure_callback)),
    )
    .await
    .expect("QStash called the failure callback");
    let log = qstash.delivery_log();
    assert!(log.iter().all(|d| d.status == Some(401)), "{log:?}");
    // A failed task is no longer stuck; the keys still differ.
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "error", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("QStash's current signing key is neither")
            && !message.contains("not delivered within the lease"),
        "{message}"
    );
}

/// Creator A's job `job` cancelled through the REST API.
async fn cancel_job(app: &TestApp, job: i64) -> Value {
    let (status, body) = app
        .post(&format!("/api/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// An app whose public URL is a TCP front that drops the first `drops` connections (a
/// server restarting), publishing with `retries`; pictures through the fake, workers on.
async fn app_behind_a_restarting_front(
    db: Db,
    qstash: &QStash,
    retries: u32,
    drops: usize,
) -> Option<(TestApp, testkit::proxy::Front)> {
    let front = testkit::proxy::Front::start().await.unwrap();
    front.drop_next(drops);
    let config = qstash_config(qstash, retries);
    let public: url::Url = front.url().parse().unwrap();
    let app = TestApp::spawn_configured(db, |c| {
        c.qstash = Some(config);
        c.public_url = Some(public);
    })
    .await?;
    front.forward_to(app.base.trim_start_matches("http://").parse().unwrap());
    use_provider(&app, |_| {}).await;
    app.start_workers();
    Some((app, front))
}

/// The server behind the public URL is restarting when QStash first calls: the connection
/// closes unanswered, so no `Retry-After` speaks, and QStash waits what
/// `Upstash-Retry-Delay` says (CREVID's backoff: 2 × 20 ms here) instead of its own 12 s.
async fn a_delivery_meeting_a_restarting_server_is_retried_after_crevid_s_delay(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some((app, front)) = app_behind_a_restarting_front(db, &qstash, 5, 1).await else {
        return;
    };
    let job = one_picture_job(&app).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert_eq!(front.dropped(), 1);
    let message = qstash
        .messages()
        .into_iter()
        .find(|m| m.url.ends_with("/api/workers/media-generation"))
        .expect("the picture's message");
    assert_eq!(
        message.retry_delay_expression.as_deref(),
        Some("max(min(300000, 20 * pow(2, retried + 1)), 1000 * exp(2.5 * (retried - 3)))")
    );
    assert_eq!(message.retried, 1, "{message:?}");
    // 40 ms of CREVID's backoff at the stand-in's time scale of 0.01 is 0.4 ms; QStash's
    // own first retry would have been 12.18 s × 0.01.
    let waited = message.retry_delays[0].as_secs_f64();
    assert!((waited - 0.0004).abs() < 1e-6, "{:?}", message.retry_delays);
}

/// A 20-scene picture job cancelled midway: QStash cancels its remaining messages (by the
/// job's label) and delivers none of them; only deliveries already in flight finish.
async fn cancelling_a_job_cancels_its_messages_in_qstash(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 2).await;
    app.fake.set_image_latency(Duration::from_millis(200));
    app.start_workers();
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let job = start(&app, "/api/media/generate", &content).await;
    qstash
        .wait_for_deliveries_to("/api/workers/media-generation", 3)
        .await;
    let detail = cancel_job(&app, job).await;
    assert_eq!(detail["job"]["status"], "cancelled", "{detail}");
    let at_cancel = qstash.stats();
    assert!(at_cancel.canceled > 0, "{at_cancel:?}");
    qstash.wait_until(|q| q.stats().pending == 0).await;
    let after = qstash.stats();
    assert!(
        after.deliveries <= at_cancel.deliveries + at_cancel.in_flight,
        "deliveries started after the cancel: {at_cancel:?} then {after:?}"
    );
    assert_eq!(after.delivered + after.canceled, 20, "{after:?}");
    // Every message carries the installation's, the job's and the kind's labels, and
    // the console shows its body redacted.
    let install = install_id(&app).await.unwrap();
    let message = qstash.messages().into_iter().next().unwrap();
    assert_eq!(
        message.labels,
        [
            format!("crevid-{install}"),
            format!("crevid-{install}-job-{job}"),
            format!("crevid-{install}-scene-image")
        ]
    );
    assert_eq!(message.redact_fields, ["body"]);
    let shown: Value = reqwest::Client::new()
        .get(format!("{}/v2/messages/{}", qstash.base_url(), message.id))
        .bearer_auth(qstash.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        shown["body"].as_str().unwrap().starts_with("REDACTED:"),
        "{shown}"
    );
}

/// An admin lowers the picture limit from 4 to 1 while 20 messages are published: the
/// flow-control key is pinned at once, so no delivery granted after the change runs
/// beside another.
async fn a_lowered_limit_holds_in_qstash_at_once(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |v| v.image_concurrency = 4).await;
    app.fake.set_image_latency(Duration::from_millis(100));
    app.start_workers();
    let content = content_with_scenes(&app, &twenty_sentences(), 20).await;
    let job = start(&app, "/api/media/generate", &content).await;
    qstash
        .wait_for_deliveries_to("/api/workers/media-generation", 4)
        .await;
    use_provider(&app, |v| v.image_concurrency = 1).await;
    let changed = qstash.slots_granted();
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let key = flow_key(&qstash, "/api/workers/media-generation");
    let before: Vec<_> = qstash
        .delivery_log()
        .into_iter()
        .filter(|d| d.slot.is_some_and(|s| s <= changed) && d.url.ends_with("media-generation"))
        .collect();
    assert!(
        before.iter().any(|d| d.flow_in_flight > Some(1)),
        "4 ran at once before the change: {before:?}"
    );
    let after: Vec<_> = qstash
        .delivery_log()
        .into_iter()
        .filter(|d| d.slot.is_some_and(|s| s > changed) && d.url.ends_with("media-generation"))
        .collect();
    assert!(after.len() >= 8, "{after:?}");
    assert!(
        after.iter().all(|d| d.flow_in_flight == Some(1)),
        "a delivery granted after the change ran beside another: {after:?}"
    );
    let flow = qstash.flow(&key).expect("the key's flow");
    assert_eq!(flow.pinned_parallelism, Some(1), "{flow:?}");
    let check = background_check(&app).await;
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("pictures 0 waiting (at most 1 at once)"),
        "{message}"
    );
}

/// A provider refusing a prompt for good: the task fails with the provider's words, QStash
/// dead-letters the message and calls the failure route, and the app deletes the dead
/// letter; with `keep_dead_letters` it stays for the admin and the status page counts it.
async fn a_permanent_failure_leaves_qstash_s_dlq_clean_unless_kept(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    // Kept first: the second installation's count then shows the DLQ is counted by its
    // own label, not the whole account's.
    for keep in [true, false] {
        let config = qstash_config(&qstash, 5).keeping_dead_letters(keep);
        let Some(app) = TestApp::spawn_configured(db, |c| c.qstash = Some(config)).await else {
            return;
        };
        use_provider(&app, |_| {}).await;
        app.fake.set_faults(Faults {
            permanent_marker: Some("only one scene".into()),
            ..Faults::default()
        });
        app.start_workers();
        let callbacks = qstash.failure_callbacks().len();
        let content = content_with_scenes(&app, "This content has only one scene in it.", 1).await;
        let job = start(&app, "/api/tts/generate", &content).await;
        let detail = app.wait_for_job(job).await;
        assert_eq!(detail["job"]["status"], "failed", "{detail}");
        let error = detail["tasks"][0]["last_error"].as_str().unwrap();
        assert!(
            error.contains("(400)") && error.contains("safety system"),
            "the provider's words: {error}"
        );
        qstash.wait_for_failure_callbacks(callbacks + 1).await;
        let install = install_id(&app).await.unwrap();
        let ours: Vec<_> = qstash
            .dead_letters()
            .into_iter()
            .filter(|d| d.labels.contains(&format!("crevid-{install}")))
            .collect();
        let check = background_check(&app).await;
        let message = check["message"].as_str().unwrap().to_owned();
        if keep {
            assert_eq!(ours.len(), 1, "{ours:?}");
            assert_eq!(check["verdict"], "ok", "{check}");
            assert!(
                message.contains("In QStash's dead-letter queue: 1 message(s)"),
                "{message}"
            );
        } else {
            assert!(ours.is_empty(), "{ours:?}");
            assert_eq!(qstash.dead_letters().len(), 1, "the first installation's");
            assert_eq!(check["verdict"], "ok", "{check}");
            assert!(
                message.contains("In QStash's dead-letter queue: 0 message(s)"),
                "{message}"
            );
        }
    }
}

/// The account's plan allows 3 retries and CREVID is set to 8: QStash refuses the first
/// publish, the relay publishes again with 3, and the status page says so.
async fn retries_above_the_plan_are_clamped_and_said(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    qstash.set_plan_max_retries(Some(3));
    let config = qstash_config(&qstash, 8);
    let Some(app) = TestApp::spawn_configured(db, |c| c.qstash = Some(config)).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.start_workers();
    let job = one_picture_job(&app).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    let messages = qstash.messages();
    assert!(!messages.is_empty());
    assert!(messages.iter().all(|m| m.max_retries == 3), "{messages:?}");
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "warning", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("CREVID_QSTASH_RETRIES=8") && message.contains("3 retries"),
        "{message}"
    );
}

/// QStash rolls its signing keys: deliveries still verify with the next key, and the status
/// page says to copy the new ones; after a second roll it says every delivery is refused.
async fn the_status_page_notices_a_signing_key_roll(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    assert_eq!(background_check(&app).await["verdict"], "ok");
    qstash.rotate_keys();
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "warning", "{check}");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains("rolled its signing keys"),
        "{check}"
    );
    use_provider(&app, |_| {}).await;
    app.start_workers();
    let job = one_picture_job(&app).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    qstash.rotate_keys();
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "error", "{check}");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains("every delivery is refused"),
        "{check}"
    );
}

/// QStash answers 503 to everything: a creator's cancel still answers at once and holds,
/// and the status page says QStash cannot be asked.
async fn with_qstash_away_a_cancel_still_holds_and_the_status_page_says_why(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    qstash.set_unreachable(true);
    let job = one_picture_job(&app).await;
    // The relay cannot publish it: it waits in the outbox, as the metrics say.
    if let Some(metrics) = crate::metrics::scrape(&app).await {
        assert_eq!(metrics.value("crevid_outbox_depth", &[]), Some(1.0));
    }
    let detail = cancel_job(&app, job).await;
    assert_eq!(detail["job"]["status"], "cancelled", "{detail}");
    let check = background_check(&app).await;
    assert_eq!(check["verdict"], "error", "{check}");
    assert!(
        check["message"].as_str().unwrap().contains("503"),
        "{check}"
    );
    // Nothing of the cancelled job is published once QStash is back.
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    assert_eq!(outbox, 0);
    qstash.set_unreachable(false);
    app::ssr::qstash::relay_once(&app.state).await.unwrap();
    assert_eq!(qstash.stats().published, 0);
}

/// Every delivery of a message meets the server down (the front drops the connection) and
/// QStash gives up: the failure callback, which does get through, does not fail the task
/// (no server ever answered), and the relay publishes it again after its lease.
async fn qstash_giving_up_on_a_server_that_never_answered_leaves_the_task_to_the_relay(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    // One retry: the first delivery and the retry are dropped; the callback gets through.
    let Some((app, front)) = app_behind_a_restarting_front(db, &qstash, 1, 2).await else {
        return;
    };
    let job = one_picture_job(&app).await;
    let detail = app.wait_for_job(job).await;
    assert_eq!(detail["job"]["status"], "completed", "{detail}");
    assert_eq!(front.dropped(), 2);
    let callbacks = qstash.failure_callbacks();
    assert_eq!(callbacks.len(), 1, "{callbacks:?}");
    assert_eq!(callbacks[0].body["status"], 0, "no answer: {callbacks:?}");
    assert_eq!(detail["tasks"][0]["attempt"], 1, "{detail}");
    let published: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL")
            .fetch_one(app.state.pool())
            .await
            .unwrap();
    assert_eq!(published, 2, "published again once");
}

/// SIGTERM while a delivery runs a slow picture: after `CREVID_SHUTDOWN_GRACE_SECS` the
/// task goes back to the queue without spending an attempt, the delivery is answered 503
/// so that QStash redelivers it elsewhere, and the process exits (the relay stops too).
async fn a_stopping_server_hands_its_delivery_back_after_the_grace_period(db: Db) {
    let qstash = QStash::start_with(stand_in_options()).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    use_provider(&app, |_| {}).await;
    app.fake.set_image_latency(Duration::from_secs(20));
    let job = one_picture_job(&app).await;
    let mut env = qstash.env().into_iter().collect::<Vec<_>>();
    env.push(("CREVID_SHUTDOWN_GRACE_SECS", "1".into()));
    let mut server = spawn_binary(&app, "warn,crevid=info", &env);
    server.wait_for_log("CREVID listening on", 1).await;
    app.fake.wait_for_requests(Endpoint::Images, 1).await;
    let pid = server.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // Well before the picture's 20 s: the grace period, not the work, decides.
    let (exited, logged) = server.exit().await;
    assert!(exited.success(), "{exited:?}");
    // The 503 is an answer QStash is meant to get, not an error for an admin's alerts.
    let alarming: Vec<_> = logged
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("response failed"))
        .collect();
    assert!(alarming.is_empty(), "{alarming:?}");
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    let task = &detail["data"]["tasks"][0];
    assert_eq!(task["status"], "queued", "{detail}");
    assert_eq!(task["attempt"], 0, "no attempt spent: {detail}");
    let answered: Vec<_> = qstash
        .delivery_log()
        .into_iter()
        .filter(|d| d.url.ends_with("/api/workers/media-generation"))
        .collect();
    assert_eq!(
        answered.first().and_then(|d| d.status),
        Some(503),
        "{answered:?}"
    );
    assert!(app.fake.successes_to(Endpoint::Images) == 0);
}
