//! Local stand-ins for the Pexels and Pixabay search APIs, served by [`crate::FakeOpenAi`]
//! under `/pexels` and `/pixabay/api`, with the documented answers' shapes:
//!
//! - Pexels (<https://www.pexels.com/api/documentation/>): `GET /pexels/v1/search` and
//!   `GET /pexels/videos/search` with `query`, `orientation`, `per_page` and `page`; the key
//!   in `Authorization`; a wrong key answers 401.
//! - Pixabay (<https://pixabay.com/api/docs/>): `GET /pixabay/api/` and
//!   `GET /pixabay/api/videos/` with `key`, `q`, `per_page`, `page` (and `orientation` for
//!   photos); a wrong key answers 400 `[ERROR 400] Invalid or missing API key`.
//!
//! Results follow the words: each is one colour ([`crate::prompt_colour`] of its place and
//! the query), sized for the orientation asked (Pixabay's videos are always landscape,
//! as its API has no orientation for them). Photos are real PNGs and clips real MP4s made
//! by ffmpeg, served under `/stock-media/`. A query containing `nothing` finds nothing.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{lock, media};

/// Seconds every stock clip lasts.
pub const CLIP_SECONDS: u32 = 3;
/// Results a library has for any query that finds something.
pub const TOTAL: usize = 40;

/// One search as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct StockRequest {
    /// `pexels` or `pixabay`.
    pub library: &'static str,
    /// `photos` or `videos`.
    pub kind: &'static str,
    pub query: HashMap<String, String>,
    /// Pexels' `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Stock {
    /// The keys each library accepts; any non-empty key when none is set.
    pexels_key: Mutex<Option<String>>,
    pixabay_key: Mutex<Option<String>>,
    requests: Mutex<Vec<StockRequest>>,
    media_requests: Mutex<Vec<String>>,
    /// Every search answers 429 with the library's own reset header.
    rate_limited: Mutex<bool>,
    /// Made clips by name, so each is encoded once.
    clips: Mutex<HashMap<String, Vec<u8>>>,
}

impl Stock {
    pub(crate) fn require_keys(&self, pexels: Option<&str>, pixabay: Option<&str>) {
        *lock(&self.pexels_key) = pexels.map(str::to_owned);
        *lock(&self.pixabay_key) = pixabay.map(str::to_owned);
    }

    pub(crate) fn set_rate_limited(&self, on: bool) {
        *lock(&self.rate_limited) = on;
    }

    pub(crate) fn requests(&self) -> Vec<StockRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn media_requests(&self) -> Vec<String> {
        lock(&self.media_requests).clone()
    }
}

pub(crate) fn routes<S>(stock: Arc<Stock>, origin: String) -> Router<S> {
    Router::new()
        .route("/pexels/v1/search", get(pexels_photos))
        .route("/pexels/videos/search", get(pexels_videos))
        .route("/pixabay/api/", get(pixabay_photos))
        .route("/pixabay/api/videos/", get(pixabay_videos))
        .route("/stock-media/{name}", get(stock_media))
        .with_state((stock, Arc::new(origin)))
}

type Shared = State<(Arc<Stock>, Arc<String>)>;

/// A result's look: its colour, and its size for the orientation.
fn look(query: &str, i: usize, orientation: &str) -> (String, u32, u32) {
    // The place first: FNV-1a mixes what comes first into every byte of the colour.
    let [r, g, b] = media::prompt_colour(&format!("{i}#{query}"));
    let (w, h) = match orientation {
        "landscape" | "horizontal" => (640, 360),
        "square" => (480, 480),
        _ => (360, 640),
    };
    (format!("{r:02x}{g:02x}{b:02x}"), w, h)
}

/// How many results the library has for `query`, whichever page was asked for.
fn total_for(query: &str) -> usize {
    if query.contains("nothing") {
        0
    } else {
        TOTAL
    }
}

/// The orientation asked for, else `default`.
fn oriented<'a>(params: &'a HashMap<String, String>, default: &'a str) -> &'a str {
    params.get("orientation").map_or(default, String::as_str)
}

/// The page of results for `query`: each result's index and look.
fn page(
    query: &str,
    params: &HashMap<String, String>,
    orientation: &str,
) -> Vec<(usize, String, u32, u32)> {
    if query.contains("nothing") {
        return Vec::new();
    }
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(15);
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    ((page - 1) * per_page..(page * per_page).min(TOTAL))
        .map(|i| {
            let (colour, w, h) = look(query, i, orientation);
            (i, colour, w, h)
        })
        .collect()
}

/// Records a search and checks its key as the library does (Pexels: `Authorization`, a
/// 401; Pixabay: `key=`, a 400); the words searched for.
fn admit(
    stock: &Stock,
    (library, kind): (&'static str, &'static str),
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&stock.requests).push(StockRequest {
        library,
        kind,
        query: params.clone(),
        authorization: authorization.clone(),
    });
    let pexels = library == "pexels";
    if *lock(&stock.rate_limited) {
        // As documented: Pexels sends when the limit resets as a UNIX time, Pixabay the
        // seconds until it does; neither sends Retry-After.
        let reset = if pexels {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (now + 120).to_string()
        } else {
            "30".to_owned()
        };
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset),
            ],
            "Too Many Requests",
        )
            .into_response());
    }
    let (given, wanted) = if pexels {
        (
            authorization.unwrap_or_default(),
            lock(&stock.pexels_key).clone(),
        )
    } else {
        (
            params.get("key").cloned().unwrap_or_default(),
            lock(&stock.pixabay_key).clone(),
        )
    };
    let accepted = match wanted {
        Some(key) => given == key,
        None => !given.is_empty(),
    };
    match (accepted, pexels) {
        (true, _) => Ok(params
            .get(if pexels { "query" } else { "q" })
            .cloned()
            .unwrap_or_default()),
        (false, true) => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Authorization field missing or invalid"})),
        )
            .into_response()),
        (false, false) => Err((
            StatusCode::BAD_REQUEST,
            "[ERROR 400] Invalid or missing API key",
        )
            .into_response()),
    }
}

async fn pexels_photos(
    State((stock, origin)): Shared,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query = match admit(&stock, ("pexels", "photos"), &params, &headers) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let photos: Vec<Value> = page(&query, &params, oriented(&params, "landscape"))
        .into_iter()
        .map(|(i, colour, w, h)| {
            let photo =
                |(pw, ph): (u32, u32)| format!("{origin}/stock-media/{colour}-{pw}x{ph}.png");
            json!({
                "id": 1000 + i,
                "width": w * 4,
                "height": h * 4,
                "url": format!("https://www.pexels.com/photo/{i}/"),
                "photographer": format!("Pexels Photographer {i}"),
                "photographer_url": format!("https://www.pexels.com/@photographer-{i}"),
                "photographer_id": 500 + i,
                "avg_color": format!("#{colour}"),
                "src": {
                    "original": photo((w * 2, h * 2)),
                    "large2x": photo((w * 2, h * 2)),
                    "large": photo((w, h)),
                    "medium": photo((w / 2, h / 2)),
                    "small": photo((w / 4, h / 4)),
                    "portrait": photo((w, h)),
                    "landscape": photo((w, h)),
                    "tiny": photo((w / 4, h / 4)),
                },
                "liked": false,
                "alt": query,
            })
        })
        .collect();
    Json(json!({"total_results": total_for(&query), "page": 1, "per_page": photos.len(), "photos": photos})).into_response()
}

async fn pexels_videos(
    State((stock, origin)): Shared,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query = match admit(&stock, ("pexels", "videos"), &params, &headers) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let videos: Vec<Value> = page(&query, &params, oriented(&params, "landscape"))
        .into_iter()
        .map(|(i, colour, w, h)| {
            let file = |id: u32, quality: &str, (fw, fh): (u32, u32)| json!({
                "id": id, "quality": quality, "file_type": "video/mp4", "width": fw, "height": fh,
                "fps": 30.0, "link": format!("{origin}/stock-media/{colour}-{fw}x{fh}.mp4"),
            });
            json!({
                "id": 2000 + i,
                "width": w,
                "height": h,
                "url": format!("https://www.pexels.com/video/{i}/"),
                "image": format!("{origin}/stock-media/{colour}-{}x{}.png", w / 2, h / 2),
                "duration": CLIP_SECONDS,
                "user": {"id": 700 + i, "name": format!("Pexels Videographer {i}"), "url": format!("https://www.pexels.com/@videographer-{i}")},
                "video_files": [
                    // An HLS stream has no size: never the one chosen.
                    {"id": 1, "quality": null, "file_type": "video/mp4", "width": null, "height": null, "link": format!("{origin}/stock-media/none.m3u8")},
                    file(2, "sd", (w / 2, h / 2)),
                    file(3, "hd", (w, h)),
                ],
                "video_pictures": [{"id": 1, "picture": format!("{origin}/stock-media/{colour}-{}x{}.png", w / 2, h / 2), "nr": 0}],
            })
        })
        .collect();
    Json(json!({"total_results": total_for(&query), "page": 1, "per_page": videos.len(), "videos": videos, "url": "https://www.pexels.com/videos/"})).into_response()
}

async fn pixabay_photos(
    State((stock, origin)): Shared,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query = match admit(&stock, ("pixabay", "photos"), &params, &headers) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let hits: Vec<Value> = page(&query, &params, oriented(&params, "all"))
        .into_iter()
        .map(|(i, colour, w, h)| {
            json!({
                "id": 3000 + i,
                "pageURL": format!("https://pixabay.com/photos/{i}/"),
                "type": "photo",
                "tags": query,
                "previewURL": format!("{origin}/stock-media/{colour}-{}x{}.png", w / 4, h / 4),
                "webformatURL": format!("{origin}/stock-media/{colour}-{}x{}.png", w / 2, h / 2),
                "largeImageURL": format!("{origin}/stock-media/{colour}-{}x{}.png", w * 2, h * 2),
                "imageWidth": w * 4,
                "imageHeight": h * 4,
                "user_id": 900 + i,
                "user": format!("pixabay_user_{i}"),
            })
        })
        .collect();
    let total = total_for(&query);
    Json(json!({"total": total, "totalHits": total, "hits": hits})).into_response()
}

async fn pixabay_videos(
    State((stock, origin)): Shared,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let query = match admit(&stock, ("pixabay", "videos"), &params, &headers) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let hits: Vec<Value> = page(&query, &params, "landscape")
        .into_iter()
        .map(|(i, colour, w, h)| {
            let size = |(fw, fh): (u32, u32)| {
                json!({
                    "url": format!("{origin}/stock-media/{colour}-{fw}x{fh}.mp4"),
                    "width": fw, "height": fh, "size": 100_000,
                    "thumbnail": format!("{origin}/stock-media/{colour}-{}x{}.png", fw / 2, fh / 2),
                })
            };
            json!({
                "id": 4000 + i,
                "pageURL": format!("https://pixabay.com/videos/{i}/"),
                "type": "film",
                "tags": query,
                "duration": CLIP_SECONDS,
                "videos": {
                    // As Pixabay answers a size it does not have.
                    "large": {"url": "", "width": 0, "height": 0, "size": 0, "thumbnail": ""},
                    "medium": size((w, h)),
                    "small": size((w / 2, h / 2)),
                    "tiny": size((w / 4, h / 4)),
                },
                "user_id": 800 + i,
                "user": format!("pixabay_filmer_{i}"),
            })
        })
        .collect();
    let total = total_for(&query);
    Json(json!({"total": total, "totalHits": total, "hits": hits})).into_response()
}

/// `{rrggbb}-{w}x{h}.png` or `.mp4`: a picture or a [`CLIP_SECONDS`] clip of that colour.
async fn stock_media(State((stock, _)): Shared, Path(name): Path<String>) -> Response {
    lock(&stock.media_requests).push(name.clone());
    let parsed = name.split_once('.').and_then(|(stem, ext)| {
        let (colour, size) = stem.split_once('-')?;
        let (w, h) = size.split_once('x')?;
        let rgb = u32::from_str_radix(colour, 16).ok()?;
        Some((
            ext.to_owned(),
            rgb,
            w.parse::<u32>().ok()?,
            h.parse::<u32>().ok()?,
        ))
    });
    let Some((ext, rgb, w, h)) =
        parsed.filter(|(_, _, w, h)| *w > 0 && *h > 0 && *w <= 4096 && *h <= 4096)
    else {
        return (StatusCode::NOT_FOUND, "no such stock file").into_response();
    };
    let [_, r, g, b] = rgb.to_be_bytes();
    match ext.as_str() {
        "png" => (
            [(header::CONTENT_TYPE, "image/png")],
            media::solid_png(w, h, [r, g, b]),
        )
            .into_response(),
        "mp4" => {
            if let Some(made) = lock(&stock.clips).get(&name).cloned() {
                return ([(header::CONTENT_TYPE, "video/mp4")], made).into_response();
            }
            let made =
                tokio::task::spawn_blocking(move || colour_clip(&format!("0x{rgb:06x}"), w, h))
                    .await;
            match made {
                Ok(Ok(bytes)) => {
                    lock(&stock.clips).insert(name, bytes.clone());
                    ([(header::CONTENT_TYPE, "video/mp4")], bytes).into_response()
                }
                Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
        _ => (StatusCode::NOT_FOUND, "no such stock file").into_response(),
    }
}

/// A fragmented MP4 (H.264, 30 fps, no sound) of one colour, written to a pipe.
fn colour_clip(colour: &str, w: u32, h: u32) -> Result<Vec<u8>, String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("color=c={colour}:s={w}x{h}:d={CLIP_SECONDS}:r=30"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-movflags",
            "frag_keyframe+empty_moov",
            "-f",
            "mp4",
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ffmpeg could not run: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}
