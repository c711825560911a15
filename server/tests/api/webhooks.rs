//! Webhooks: endpoints a creator registers, deliveries signed as Standard Webhooks
//! describe (checked by their reference library from PyPI), retried by the queue on either
//! transport, redelivered on request, and only to addresses the outbound rules allow.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testkit::qstash::{QStash, QStashOptions};
use testkit::webhooks::{Received, Receiver, DELIVERED_WITHIN};

use crate::both_databases;
use crate::helpers::{content_with_scenes, pytool, start_job, Db, TestApp, Who};

both_databases!(
    deliveries_are_signed_as_standard_webhooks_verify_them,
    a_failed_delivery_is_retried_then_redelivered_with_the_same_id,
    endpoints_are_checked_and_kept_to_their_owner,
    deliveries_travel_through_qstash_too,
);

/// Lets deliveries reach the test's receiver on loopback.
async fn allow_loopback(app: &TestApp) {
    app.configure_llm_with(|v| v.allowed_private_addresses = "127.0.0.0/8".into())
        .await;
}

async fn delete_content(app: &TestApp, content: &Value) {
    let (status, answer) = app
        .delete(&format!("/api/contents/{}", content["id"]))
        .await;
    assert_eq!(status, 204, "{answer}");
}

/// Registers an endpoint as creator A: (id, secret).
async fn register(app: &TestApp, body: Value) -> (i64, String) {
    let (status, created) = app.post("/api/webhooks", &body).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["data"]["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (created["data"]["endpoint"]["id"].as_i64().unwrap(), secret)
}

fn event_of(r: &Received) -> String {
    serde_json::from_str::<Value>(&r.body).unwrap()["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn answered_ok(got: &[Received], event: &str) -> usize {
    got.iter()
        .filter(|r| r.answered < 300 && event_of(r) == event)
        .count()
}

/// What the Standard Webhooks library says of each request under `secret`: the payload it
/// verified, or why it refused.
fn verify(requests: &[(String, &Received)]) -> Option<Vec<Value>> {
    let python = pytool("python")?;
    let items: Vec<Value> = requests
        .iter()
        .map(|(secret, r)| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            json!({ "secret": secret, "headers": headers, "body": r.body })
        })
        .collect();
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/verify_webhooks.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    serde_json::to_writer(child.stdin.take().unwrap(), &items).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "verify_webhooks.py failed");
    Some(serde_json::from_slice(&output.stdout).expect("verdicts"))
}

/// Waits, woken by each finished task, until the endpoint's deliveries satisfy `check`.
async fn deliveries_when(
    app: &TestApp,
    endpoint: i64,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DELIVERED_WITHIN;
    loop {
        let announced = app.state.work.notified();
        tokio::pin!(announced);
        announced.as_mut().enable();
        let (status, list) = app
            .get(&format!("/api/webhooks/{endpoint}/deliveries"))
            .await;
        assert_eq!(status, 200, "{list}");
        let rows = list["data"].as_array().unwrap().clone();
        if check(&rows) {
            return rows;
        }
        tokio::time::timeout_at(deadline, announced)
            .await
            .unwrap_or_else(|_| panic!("the deliveries never got there: {list}"));
    }
}

async fn deliveries_are_signed_as_standard_webhooks_verify_them(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    allow_loopback(&app).await;
    let receiver = Receiver::start().await;
    // The first attempt meets a server error; the queue tries again.
    receiver.answer_next(&[500]);
    let (endpoint, secret) = register(
        &app,
        json!({ "url": receiver.url("/hooks/crevid"), "description": "our channel" }),
    )
    .await;
    app.start_workers();
    let content = content_with_scenes(&app, "A fox runs. A bird sings.", 2).await;
    let id = content["id"].as_i64().unwrap();
    let mut jobs = Vec::new();
    for path in ["/api/media/generate", "/api/tts/generate"] {
        let job = start_job(&app, path, &content).await;
        assert_eq!(app.wait_for_job(job).await["job"]["status"], "completed");
        jobs.push(job);
    }
    let (status, render) = app
        .post(&format!("/api/contents/{id}/render"), &json!({}))
        .await;
    assert_eq!(status, 202, "{render}");
    let render = render["data"]["id"].as_i64().unwrap();
    assert_eq!(app.wait_for_job(render).await["job"]["status"], "completed");
    jobs.push(render);
    let (status, _) = app.delete(&format!("/api/contents/{id}")).await;
    assert_eq!(status, 204);
    let got = receiver
        .wait_until(DELIVERED_WITHIN, |got| {
            answered_ok(got, "job.completed") == 3
                && answered_ok(got, "video.ready") == 1
                && answered_ok(got, "content.deleted") == 1
        })
        .await;
    assert!(got.iter().all(|r| r.path == "/hooks/crevid"));
    assert_eq!(got.len(), 6, "five events, one of them sent twice");
    // The retry is the same message: same id and body.
    assert_eq!(got[0].answered, 500);
    let retry = got[1..]
        .iter()
        .find(|r| r.header("webhook-id") == got[0].header("webhook-id"))
        .expect("the first message was sent again");
    assert_eq!(retry.body, got[0].body);
    let ids: std::collections::HashSet<_> =
        got.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 5, "one id per message");
    for r in &got {
        assert_eq!(r.header("content-type"), Some("application/json"));
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - ts).abs() < 120,
            "timestamp {ts} is in seconds, near {now}"
        );
    }
    // What each event says.
    let bodies: Vec<Value> = got
        .iter()
        .filter(|r| r.answered < 300)
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let mut completed: Vec<i64> = bodies
        .iter()
        .filter(|b| b["type"] == "job.completed")
        .map(|b| {
            assert_eq!(b["data"]["status"], "completed", "{b}");
            assert_eq!(b["data"]["content_id"], id, "{b}");
            b["data"]["id"].as_i64().unwrap()
        })
        .collect();
    completed.sort();
    assert_eq!(completed, jobs);
    let ready = bodies.iter().find(|b| b["type"] == "video.ready").unwrap();
    assert_eq!(ready["data"]["content_id"], id);
    assert_eq!(ready["data"]["job_id"], render);
    assert_eq!(
        ready["data"]["video_url"],
        format!("/api/contents/{id}/video")
    );
    assert!(
        ready["data"]["duration_ms"].as_i64().unwrap() > 1000,
        "{ready}"
    );
    let deleted = bodies
        .iter()
        .find(|b| b["type"] == "content.deleted")
        .unwrap();
    assert_eq!(
        deleted["data"],
        json!({ "content_id": id, "title": content["title"] })
    );
    assert!(bodies
        .iter()
        .all(|b| b["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))));
    // The reference library accepts every request under the secret, and refuses a body
    // changed by one character, or another secret.
    let mut tampered = got[2].clone();
    tampered.body.push(' ');
    let (other, _) = register(
        &app,
        json!({ "url": receiver.url("/other"), "events": ["job.failed"] }),
    )
    .await;
    let (_, other_secret) = {
        let (status, rotated) = app
            .post(&format!("/api/webhooks/{other}/rotate-secret"), &json!({}))
            .await;
        assert_eq!(status, 200, "{rotated}");
        (
            other,
            rotated["data"]["secret"].as_str().unwrap().to_owned(),
        )
    };
    let mut checks: Vec<(String, &Received)> = got.iter().map(|r| (secret.clone(), r)).collect();
    checks.push((secret.clone(), &tampered));
    checks.push((other_secret.clone(), &got[1]));
    // Without the Python tools (outside CI) only this check is left out.
    if let Some(verdicts) = verify(&checks) {
        for (verdict, r) in verdicts.iter().zip(&got) {
            assert_eq!(
                verdict["verified"],
                serde_json::from_str::<Value>(&r.body).unwrap(),
                "{verdict}"
            );
        }
        assert_eq!(
            verdicts[got.len()]["refused"],
            "No matching signature found"
        );
        assert_eq!(
            verdicts[got.len() + 1]["refused"],
            "No matching signature found"
        );
    }
    // The endpoint's deliveries say the same: all succeeded, the first after two attempts.
    let rows = deliveries_when(&app, endpoint, |rows| {
        rows.len() == 5 && rows.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    assert!(
        rows.iter()
            .all(|d| d["status"] == "succeeded" && d["response_status"] == 204),
        "{rows:?}"
    );
    let first = rows.last().unwrap();
    assert_eq!(first["attempts"], 2);
    assert_eq!(first["message_id"].as_str(), got[0].header("webhook-id"));
    assert_eq!(first["payload"].as_str(), Some(got[0].body.as_str()));

    // A rotated secret signs beside the new one for a day: receivers holding either accept.
    let (status, rotated) = app
        .post(
            &format!("/api/webhooks/{endpoint}/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["data"]["endpoint"]["previous_secret_expires_at"].is_string());
    let second = app.saved_content("Rain falls. The river rises.").await;
    delete_content(&app, &second).await;
    let got = receiver
        .wait_until(DELIVERED_WITHIN, |got| {
            answered_ok(got, "content.deleted") == 2
        })
        .await;
    let last = got.last().unwrap();
    assert_eq!(
        last.header("webhook-signature").unwrap().split(' ').count(),
        2
    );
    if let Some(verdicts) = verify(&[
        (secret.clone(), last),
        (new_secret, last),
        (other_secret, last),
    ]) {
        assert!(
            verdicts[0]["verified"].is_object() && verdicts[1]["verified"].is_object(),
            "{verdicts:?}"
        );
        assert!(verdicts[2]["refused"].is_string());
    }
    // Secrets are never shown again.
    let (_, list) = app.get("/api/webhooks").await;
    assert!(!list.to_string().contains("whsec_"), "{list}");
}

async fn a_failed_delivery_is_retried_then_redelivered_with_the_same_id(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    allow_loopback(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer_always(503);
    let (endpoint, _) = register(
        &app,
        json!({ "url": receiver.url("/down"), "events": ["content.deleted"] }),
    )
    .await;
    let content = app.saved_content("Snow melts. Spring comes.").await;
    delete_content(&app, &content).await;
    let rows = deliveries_when(&app, endpoint, |rows| rows.len() == 1).await;
    let delivery = rows[0]["id"].as_i64().unwrap();
    assert_eq!(rows[0]["status"], "pending");
    assert_eq!(rows[0]["event"], "content.deleted");
    // Not while it is being sent.
    let redeliver = format!("/api/webhooks/{endpoint}/deliveries/{delivery}/redeliver");
    let (status, refused) = app.post(&redeliver, &json!({})).await;
    assert_eq!(status, 409, "{refused}");
    app.start_workers();
    let rows = deliveries_when(&app, endpoint, |rows| rows[0]["status"] == "failed").await;
    assert_eq!(rows[0]["attempts"], 8, "{rows:?}");
    assert_eq!(rows[0]["response_status"], 503);
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("503"),
        "{rows:?}"
    );
    let got = receiver.received();
    assert_eq!(got.len(), 8);
    let message = got[0].header("webhook-id").unwrap().to_owned();
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == Some(message.as_str())));
    // Its task failed (it stays off the admins' status page: the Webhooks page shows it).
    let failed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tasks WHERE kind = 'webhook.deliver' AND status = 'failed'",
    )
    .fetch_one(app.state.pool())
    .await
    .unwrap();
    assert_eq!(failed, 1);
    // Back up: Redeliver sends the same message again, signed anew.
    receiver.answer_always(200);
    let (status, again) = app.post(&redeliver, &json!({})).await;
    assert_eq!(status, 202, "{again}");
    // The last attempt's answer is cleared for the new one.
    assert!(
        again["data"]["last_error"].is_null() || again["data"]["status"] == "succeeded",
        "{again}"
    );
    // Pending, unless the running workers have sent it already.
    assert!(
        matches!(
            again["data"]["status"].as_str(),
            Some("pending" | "succeeded")
        ),
        "{again}"
    );
    let rows = deliveries_when(&app, endpoint, |rows| rows[0]["status"] == "succeeded").await;
    assert_eq!(rows[0]["attempts"], 9);
    assert_eq!(rows[0]["message_id"], message.as_str());
    let got = receiver.received();
    assert_eq!(got.len(), 9);
    assert_eq!(got[8].header("webhook-id"), Some(message.as_str()));
    assert_eq!(got[8].body, got[0].body);
    // Webhook jobs stay off the creator's job list.
    let (_, jobs) = app.get("/api/jobs").await;
    assert!(
        jobs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] != "webhook"),
        "{jobs}"
    );
}

async fn endpoints_are_checked_and_kept_to_their_owner(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let receiver = Receiver::start().await;
    // Loopback is refused until the admin allows it, before anything is sent.
    for (url, said) in [
        (receiver.url("/x"), "private address"),
        ("http://localhost:9/x".to_owned(), "private address"),
        (
            "http://169.254.169.254/latest".to_owned(),
            "private address",
        ),
        ("ftp://example.com/x".to_owned(), "http:// or https://"),
        ("not a url".to_owned(), "not a valid URL"),
        (String::new(), "must not be empty"),
    ] {
        let (status, refused) = app.post("/api/webhooks", &json!({ "url": url })).await;
        assert_eq!(status, 422, "{url}: {refused}");
        assert_eq!(refused["error"]["field"], "url", "{refused}");
        assert!(
            refused["error"]["message"].as_str().unwrap().contains(said),
            "{url}: {refused}"
        );
    }
    for (events, status) in [
        (json!([]), 422),
        (json!(["video.deleted"]), 422),
        (json!("video.ready"), 422),
    ] {
        let (got, answer) = app
            .post(
                "/api/webhooks",
                &json!({ "url": "https://93.184.215.14/h", "events": events }),
            )
            .await;
        assert_eq!(got, status, "{events}: {answer}");
    }
    assert_eq!(app.count("webhook_endpoints").await, 0);
    allow_loopback(&app).await;
    let (endpoint, _) = register(
        &app,
        json!({ "url": receiver.url("/mine"), "events": ["content.deleted", "content.deleted"], "description": null }),
    )
    .await;
    let (_, view) = app.get(&format!("/api/webhooks/{endpoint}")).await;
    assert_eq!(view["data"]["events"], json!(["content.deleted"]));
    assert_eq!(view["data"]["description"], "");
    assert_eq!(view["data"]["enabled"], true);
    // Another creator, and the admin too, see nothing of it.
    for who in [Who::CreatorB, Who::Admin] {
        for (method, path) in [
            (reqwest::Method::GET, format!("/api/webhooks/{endpoint}")),
            (reqwest::Method::DELETE, format!("/api/webhooks/{endpoint}")),
            (
                reqwest::Method::POST,
                format!("/api/webhooks/{endpoint}/rotate-secret"),
            ),
            (
                reqwest::Method::GET,
                format!("/api/webhooks/{endpoint}/deliveries"),
            ),
        ] {
            let (status, _) = app.call(who, method.clone(), &path, None).await;
            assert_eq!(status, 404, "{method} {path} as {who:?}");
        }
        let (_, list) = app
            .call(who, reqwest::Method::GET, "/api/webhooks", None)
            .await;
        assert_eq!(list["data"], json!([]));
    }
    // A change to a refused URL keeps the endpoint as it was.
    let (status, _) = app
        .put(
            &format!("/api/webhooks/{endpoint}"),
            &json!({ "url": "gopher://x" }),
        )
        .await;
    assert_eq!(status, 422);
    let (_, view) = app.get(&format!("/api/webhooks/{endpoint}")).await;
    assert_eq!(view["data"]["url"], receiver.url("/mine"));
    // A disabled endpoint is sent nothing; enabled again, it is.
    let (status, view) = app
        .put(
            &format!("/api/webhooks/{endpoint}"),
            &json!({ "enabled": false }),
        )
        .await;
    assert_eq!((status, &view["data"]["enabled"]), (200, &json!(false)));
    let content = app.saved_content("Waves break. Gulls call.").await;
    delete_content(&app, &content).await;
    assert_eq!(app.count("webhook_deliveries").await, 0);
    app.put(
        &format!("/api/webhooks/{endpoint}"),
        &json!({ "enabled": true }),
    )
    .await;
    let content = app.saved_content("Leaves fall. Birds leave.").await;
    delete_content(&app, &content).await;
    assert_eq!(app.count("webhook_deliveries").await, 1);
    // Events it did not ask for are not sent: a finished job here.
    let content = app.saved_content("Bells ring. Doors open.").await;
    let job = start_job(&app, "/api/tts/generate", &content).await;
    app.drain().await;
    let (_, detail) = app.get(&format!("/api/jobs/{job}")).await;
    assert_eq!(detail["data"]["job"]["status"], "completed");
    assert_eq!(app.count("webhook_deliveries").await, 1);
    assert_eq!(
        receiver.received().len(),
        1,
        "the drain sent the one delivery"
    );
    // A job that fails is told as such, and a failed render makes no video.ready.
    let (status, _) = app
        .put(
            &format!("/api/webhooks/{endpoint}"),
            &json!({ "events": ["job.failed", "video.ready"] }),
        )
        .await;
    assert_eq!(status, 200);
    crate::helpers::use_provider(&app, |v| {
        v.allowed_private_addresses = "127.0.0.0/8".into();
    })
    .await;
    app.fake.set_faults(testkit::Faults {
        permanent_marker: Some("forbidden".into()),
        ..testkit::Faults::default()
    });
    let content = content_with_scenes(&app, "A forbidden door stands alone.", 1).await;
    let job = start_job(&app, "/api/media/generate", &content).await;
    app.drain().await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let failed: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(failed["type"], "job.failed");
    assert_eq!(failed["data"]["id"], job);
    assert_eq!(failed["data"]["status"], "failed");
    assert!(failed["data"]["error"].is_string(), "{failed}");
    // Deleting the endpoint takes its deliveries with it.
    let (status, _) = app.delete(&format!("/api/webhooks/{endpoint}")).await;
    assert_eq!(status, 204);
    assert_eq!(app.count("webhook_deliveries").await, 0);
    // Its webhook jobs are reached through it only.
    let webhook_job: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'webhook' LIMIT 1")
        .fetch_one(app.state.pool())
        .await
        .unwrap();
    let (status, _) = app.get(&format!("/api/jobs/{webhook_job}")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/api/webhooks/{endpoint}")).await;
    assert_eq!(status, 404);
    // A disabled account's endpoints hear nothing, even of what an admin does to its work.
    register(&app, json!({ "url": receiver.url("/later") })).await;
    let content = app.saved_content("Clouds gather. Rain starts.").await;
    let (status, _) = app
        .call(
            Who::Admin,
            reqwest::Method::PUT,
            &format!("/api/users/{}", app.a.user.id),
            Some(&json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            Who::Admin,
            reqwest::Method::DELETE,
            &format!("/api/contents/{}", content["id"]),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.count("webhook_deliveries").await, 0);
}

async fn deliveries_travel_through_qstash_too(db: Db) {
    let qstash = QStash::start_with(QStashOptions::scaled(0.01)).await;
    let Some(app) = TestApp::spawn_with_qstash(db, &qstash).await else {
        return;
    };
    allow_loopback(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer_next(&[502]);
    let (endpoint, secret) = register(&app, json!({ "url": receiver.url("/q") })).await;
    app.start_workers();
    let content = app.saved_content("Stars shine. Night falls.").await;
    delete_content(&app, &content).await;
    let got = receiver
        .wait_until(DELIVERED_WITHIN, |got| {
            answered_ok(got, "content.deleted") == 1
        })
        .await;
    assert_eq!(got.len(), 2, "the 502 was retried");
    let rows = deliveries_when(&app, endpoint, |rows| rows[0]["status"] == "succeeded").await;
    assert!(qstash.deliveries_to("/api/workers/webhook-delivery") >= 1);
    assert_eq!(rows[0]["attempts"], 2);
    if let Some(verdicts) = verify(&[(secret, &got[1])]) {
        assert!(verdicts[0]["verified"].is_object(), "{verdicts:?}");
    }
}
