//! Server-rendered pages: each route renders with its data; unknown routes are 404s.

use crate::both_databases;
use crate::helpers::{Db, TestApp, Who};

both_databases!(pages_render_on_the_server);

async fn html(app: &TestApp, path: &str) -> (u16, String) {
    let response = app
        .client_for(Who::Admin)
        .get(app.url(path))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn pages_render_on_the_server(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let saved = app
        .saved_content("Lighthouses guide ships at night. Their beams rotate.")
        .await;
    for (path, expected) in [
        ("/", "Generate a script"),
        ("/library", "Lighthouses guide ships at night"),
        ("/library?q=nothing-matches", "No content matches"),
        (
            &format!("/contents/{}", saved["id"]) as &str,
            "Their beams rotate.",
        ),
        ("/settings", "Language model (script writing)"),
        ("/status", "ffmpeg"),
    ] {
        let (status, body) = html(&app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(expected), "{path} lacks {expected:?}");
        assert!(
            body.contains("/pkg/crevid.js"),
            "{path} loads the app script"
        );
    }
    let (status, body) = html(&app, "/no/such/page").await;
    assert_eq!(status, 404);
    assert!(body.contains("Page not found"));
    let (status, body) = html(&app, "/contents/999999").await;
    assert_eq!(
        status, 404,
        "the page says the content is not there, with the status to match"
    );
    assert!(body.contains("content not found"), "{body}");
    let (status, body) = html(&app, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
}
