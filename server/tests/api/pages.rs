//! Server-rendered pages: each route renders with its data; unknown routes are 404s.

use crate::both_databases;
use crate::helpers::{Db, TestApp, Who};

both_databases!(
    pages_render_on_the_server,
    the_front_end_is_served_compressed,
    a_hashed_build_is_named_in_the_page_and_kept_for_a_year
);

async fn html(app: &TestApp, path: &str) -> (u16, String) {
    let (status, _, body) = html_with_headers(app, path).await;
    (status, body)
}

async fn html_with_headers(app: &TestApp, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = app
        .client_for(Who::Admin)
        .get(app.url(path))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
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
        let (status, headers, body) = html_with_headers(&app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(expected), "{path} lacks {expected:?}");
        // One user's page: no shared cache keeps it, and the browser asks again each time.
        assert_eq!(headers["cache-control"], "private, no-cache", "{path}");
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
    // The site's own files come from the site root (`public/` copied in by the build).
    let site = std::path::PathBuf::from(&*app.state.leptos_options.site_root);
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("favicon.svg"),
        include_str!("../../../public/favicon.svg"),
    )
    .unwrap();
    let (status, headers, body) = html_with_headers(&app, "/favicon.svg").await;
    assert_eq!(status, 200);
    assert!(body.contains("<svg"), "{body}");
    assert_eq!(headers["cache-control"], "public, max-age=86400");
    // A missing one is not kept a day.
    std::fs::remove_file(site.join("favicon.svg")).unwrap();
    let (status, headers, _) = html_with_headers(&app, "/favicon.svg").await;
    assert_eq!(status, 404);
    assert_ne!(
        headers.get("cache-control").map(|v| v.to_str().unwrap()),
        Some("public, max-age=86400")
    );
}

/// The WASM and JS go out brotli- or gzip-compressed (the copies the build made) to a
/// browser that accepts them, whole to one that does not, and are revalidated, not kept.
async fn the_front_end_is_served_compressed(db: Db) {
    let Some(app) = TestApp::spawn(db).await else {
        return;
    };
    let pkg = std::path::Path::new(&*app.state.leptos_options.site_root).join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let wasm = b"\0asm a pretend module".repeat(100);
    std::fs::write(pkg.join("crevid.wasm"), &wasm).unwrap();
    std::fs::write(pkg.join("crevid.wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(pkg.join("crevid.wasm.gz"), b"gzip bytes").unwrap();
    // A plain client: reqwest would otherwise ask for, and undo, compression itself.
    let client = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    for (accept, encoding, body) in [
        ("br, gzip", Some("br"), b"brotli bytes".to_vec()),
        ("gzip", Some("gzip"), b"gzip bytes".to_vec()),
        ("identity", None, wasm.clone()),
    ] {
        let response = client
            .get(app.url("/pkg/crevid.wasm"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{accept}");
        let headers = response.headers().clone();
        assert_eq!(
            headers.get("content-encoding").map(|v| v.to_str().unwrap()),
            encoding,
            "{accept}"
        );
        assert_eq!(headers["content-type"], "application/wasm");
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["vary"], "accept-encoding");
        let last_modified = headers["last-modified"].clone();
        assert_eq!(response.bytes().await.unwrap().to_vec(), body, "{accept}");
        let again = client
            .get(app.url("/pkg/crevid.wasm"))
            .header("accept-encoding", accept)
            .header("if-modified-since", last_modified)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "a warm cache costs no body");
    }
}

/// A build whose files are named after their content: the page names those files and
/// browsers may keep them for a year; anything else is revalidated. A hash file naming
/// files that are not there (a `cargo leptos watch` build over an old one) is ignored.
async fn a_hashed_build_is_named_in_the_page_and_kept_for_a_year(db: Db) {
    use crevid_server::site::IMMUTABLE;
    let (js, wasm, css) = (
        "crevid.00112233aabbccdd.js",
        "crevid.8899aabbccddeeff.wasm",
        "crevid.0123456789abcdef.css",
    );
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("hash.txt"),
        "js: 00112233aabbccdd\nwasm: 8899aabbccddeeff\ncss: 0123456789abcdef\n",
    )
    .unwrap();
    for name in [js, wasm, css, "crevid.wasm"] {
        std::fs::write(pkg.join(name), name).unwrap();
    }
    std::fs::write(pkg.join(format!("{wasm}.br")), b"brotli bytes").unwrap();
    let root = site.path().to_owned();
    let Some(app) = TestApp::spawn_configured(db, move |c| c.site_root = root).await else {
        return;
    };
    let (status, body) = html(&app, "/").await;
    assert_eq!(status, 200);
    for name in [js, wasm, css] {
        assert!(
            body.contains(&format!("/pkg/{name}")),
            "the page names {name}: {body}"
        );
    }
    assert!(!body.contains("/pkg/crevid.js"), "{body}");
    let client = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    for (name, status, cache, encoding) in [
        (wasm, 200, IMMUTABLE, Some("br")),
        (js, 200, IMMUTABLE, None),
        (css, 200, IMMUTABLE, None),
        ("crevid.wasm", 200, "no-cache", None),
        ("crevid.ffffffffffffffff.wasm", 404, "no-cache", None),
    ] {
        let response = client
            .get(app.url(&format!("/pkg/{name}")))
            .header("accept-encoding", "br")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        let headers = response.headers();
        assert_eq!(headers["cache-control"], cache, "{name}");
        assert_eq!(
            headers.get("content-encoding").map(|v| v.to_str().unwrap()),
            encoding,
            "{name}"
        );
    }
    drop(app);

    std::fs::remove_file(pkg.join(css)).unwrap();
    let root = site.path().to_owned();
    let Some(app) = TestApp::spawn_configured(db, move |c| c.site_root = root).await else {
        return;
    };
    let (_, body) = html(&app, "/").await;
    assert!(body.contains("/pkg/crevid.js"), "{body}");
    assert!(body.contains("/pkg/crevid.css"), "{body}");
    assert!(!body.contains(js), "{body}");
}
