//! The built front end under `/pkg`: which of its files are named after their content, and
//! the caching and compression they are served with.
//!
//! `scripts/build.sh` names the JS, WASM and CSS `{output-name}.{hash}.{ext}` (16 hex
//! digits of the content's SHA-256) and lists the hashes in `pkg/hash.txt`, one
//! `js: …`, `wasm: …`, `css: …` line each, the format cargo-leptos writes for its
//! `hash-files` option and Leptos's `HydrationScripts` and `HashedStylesheet` read. A
//! hashed name never changes its content, so browsers may keep it for a year
//! (`immutable`, RFC 8246) and a new build is fetched because the page names new files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, VARY};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::Router;

/// `Cache-Control` of a file named after its content: a year, never revalidated.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The hashed front end of a build: the hash file's absolute path (for `LeptosOptions`)
/// and the file names it gives, such as `crevid.0123456789abcdef.wasm`.
#[derive(Clone, Debug, Default)]
pub struct Fingerprints {
    pub hash_file: Option<PathBuf>,
    pub names: HashSet<String>,
}

impl Fingerprints {
    /// Reads `{pkg}/hash.txt`. None of it counts unless every file it names is there: a
    /// `cargo leptos watch` build writes unhashed files beside an old hash file, and the
    /// page must then name the files that exist.
    pub fn read(pkg: &Path, output_name: &str) -> Self {
        let hash_file = pkg.join("hash.txt");
        let Ok(text) = std::fs::read_to_string(&hash_file) else {
            return Self::default();
        };
        let names: HashSet<String> = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(ext, _)| matches!(ext.trim(), "js" | "wasm" | "css"))
            .map(|(ext, hash)| format!("{output_name}.{}.{}", hash.trim(), ext.trim()))
            .collect();
        if names.is_empty() || !names.iter().all(|name| pkg.join(name).is_file()) {
            return Self::default();
        }
        Self {
            hash_file: std::path::absolute(&hash_file).ok(),
            names,
        }
    }
}

/// Serves `pkg`: the brotli or gzip copy the build made beside each file when the browser
/// accepts it (`Content-Encoding`, and `Vary: Accept-Encoding` so caches between keep them
/// apart), else the file itself. Hashed names are kept a year; anything else (an unhashed
/// development build) is revalidated (`no-cache` with `Last-Modified`: a 304 costs a few
/// hundred bytes) so a new build is never hidden behind an old one.
pub fn static_files(pkg: &Path, fingerprints: &Fingerprints) -> Router {
    let files = tower_http::services::ServeDir::new(pkg)
        .precompressed_br()
        .precompressed_gzip();
    let immutable = Arc::new(fingerprints.names.clone());
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let immutable = immutable.clone();
            async move {
                let hashed = request
                    .uri()
                    .path()
                    .rsplit('/')
                    .next()
                    .is_some_and(|name| immutable.contains(name));
                let mut response = next.run(request).await;
                let kept = response.status().is_success()
                    || response.status() == axum::http::StatusCode::NOT_MODIFIED;
                let cache = if hashed && kept {
                    IMMUTABLE
                } else {
                    "no-cache"
                };
                let headers = response.headers_mut();
                headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
                headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
                response
            }
        }))
}
