//! Stock footage from Pexels and Pixabay: searched by a scene's visual prompt (or the
//! creator's words) with the admin's keys, shown with their authors as both licences ask,
//! and made a scene's visual by the same fetch, checks and conversion as a pasted URL
//! ([`clips::visual_from`]). A background "footage" job picks the best match per scene.
//!
//! The APIs, as documented: Pexels <https://www.pexels.com/api/documentation/> (photos at
//! `GET /v1/search`, videos at `GET /videos/search`; the key in `Authorization`); Pixabay
//! <https://pixabay.com/api/docs/> (photos at `GET /api/`, videos at `GET /api/videos/`; the
//! key as `key=`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::clips::{self, ClipOptions, Fetched};
use super::db::now_ms;
use super::engine::{ClaimedTask, Output, TaskError};
use super::error::DbResultExt;
use super::settings::{Capability, Endpoint, Keys};
use super::state::AppState;
use crate::error::{AppError, ErrorCode};
use crate::model::{
    ContentDetail, SceneView, SettingsValues, StockCandidate, StockCredit, StockKind,
    StockProvider, StockResults, WhenShorter,
};

/// Results per page.
pub const PER_PAGE: u32 = crate::model::limits::STOCK_PER_PAGE;
/// The longest query, as Pixabay's API allows (`q` "may not exceed 100 characters").
pub const QUERY_MAX_CHARS: usize = 100;
/// How long a pick token is good for: Pixabay's result URLs are valid for 24 hours.
const PICK_TTL_MS: i64 = 24 * 3600 * 1000;
/// The largest preview passed through to the browser.
const PREVIEW_MAX_BYTES: u64 = 2 * 1024 * 1024;
/// Sealed pick tokens start with this, so no other sealed value passes for one.
const PICK_PREFIX: &str = "stock-pick:";
/// How many words of a visual prompt are searched for: libraries match every word, and a
/// whole sentence finds little.
const PROMPT_TERMS: usize = 5;

/// How long one search may take: the admin's media timeout, at most 30 s (a search is a
/// small JSON answer; a library slower than that is better tried again).
fn search_timeout(values: &SettingsValues) -> Duration {
    Duration::from_secs(u64::from(values.media_timeout_secs).min(30))
}

/// The libraries searched, in order: those with a key.
pub fn configured(values: &SettingsValues, keys: &Keys) -> Vec<StockProvider> {
    StockProvider::ALL
        .into_iter()
        .filter(|p| !endpoint(values, keys, *p).api_key.is_empty())
        .collect()
}

fn endpoint(values: &SettingsValues, keys: &Keys, provider: StockProvider) -> Endpoint {
    super::settings::endpoint(values, keys, Capability::of_stock(provider))
}

/// What a pick token holds, sealed with the server's secret key: what to download, and
/// whom to credit. Only the server makes them, so a pick cannot send it anywhere else.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pick {
    credit: StockCredit,
    media_url: String,
    preview_url: String,
    issued_ms: i64,
}

/// A search result as the library describes it.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub width: u32,
    pub height: u32,
    pub duration_ms: Option<i64>,
    pub credit: StockCredit,
    /// The file to download: a photo at a size that fills the 720×1280 still it becomes
    /// (Pexels' `large2x`, up to 1880 px; Pixabay's `largeImageURL`, up to 1280 px: its
    /// full size needs approved API access), or the clip file closest above the video.
    pub media_url: String,
    pub preview_url: String,
}

/// A search: `terms` of `kind` shaped for `orientation` (`portrait`, `landscape`,
/// `square`), one page.
pub struct Search<'a> {
    pub kind: StockKind,
    pub terms: &'a str,
    pub orientation: &'a str,
    pub page: u32,
    pub per_page: u32,
    /// The video's short side in px: the clip file closest above it is chosen.
    pub short_side: u32,
}

impl Found {
    /// Credit links go into pages' `href`s: anything but http(s) becomes the library's
    /// home page.
    fn web_links_only(mut self) -> Self {
        let home = self.credit.provider.home();
        for link in [&mut self.credit.author_url, &mut self.credit.page_url] {
            if !(link.starts_with("https://") || link.starts_with("http://")) {
                *link = home.to_owned();
            }
        }
        self
    }
}

impl From<Found> for Pick {
    fn from(found: Found) -> Self {
        Pick {
            credit: found.credit,
            media_url: found.media_url,
            preview_url: found.preview_url,
            issued_ms: now_ms(),
        }
    }
}

/// How a stock picture or clip is put on a scene: cropped to fill the frame, a clip
/// looped and silent (`PUT …/clip` changes that afterwards).
pub const PICKED: ClipOptions = ClipOptions {
    fit: super::media::Fit::Crop,
    when_shorter: WhenShorter::Loop,
    sound: 0,
};

/// `portrait`, `landscape` or `square` for a content's aspect ratio (Pexels' words).
pub fn orientation(aspect_ratio: &str) -> &'static str {
    match aspect_ratio {
        "16:9" => "landscape",
        "1:1" => "square",
        _ => "portrait",
    }
}

/// Search words from a visual prompt: its first [`PROMPT_TERMS`] words that say what is
/// seen, without the style and camera words image models want and libraries do not
/// ("cinematic", "shot of"), at most [`QUERY_MAX_CHARS`].
pub fn prompt_terms(prompt: &str) -> String {
    const SKIP: &[&str] = &[
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "with",
        "and",
        "or",
        "by",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "as",
        "is",
        "are",
        "its",
        "their",
        "his",
        "her",
        "this",
        "that",
        "these",
        "those",
        "while",
        "during",
        "very",
        "some",
        "cinematic",
        "photo",
        "photograph",
        "photorealistic",
        "realistic",
        "image",
        "picture",
        "illustration",
        "shot",
        "close",
        "closeup",
        "close-up",
        "wide",
        "angle",
        "view",
        "scene",
        "style",
        "detailed",
        "high",
        "quality",
        "4k",
        "8k",
        "hd",
        "lighting",
        "render",
        "rendering",
        "depicting",
        "showing",
        "shows",
        "background",
        "foreground",
        "frame",
        "text",
        "no",
        "without",
        "words",
        "letters",
    ];
    let mut seen = std::collections::HashSet::new();
    let mut terms = String::new();
    let words = prompt
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .map(|w| w.trim_matches(|c| c == '-' || c == '\'').to_lowercase())
        .filter(|w| !w.is_empty() && !SKIP.contains(&w.as_str()))
        // An aspect ratio ("9:16 frame") is not something to see.
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()));
    for word in words.filter(|w| seen.insert(w.clone())).take(PROMPT_TERMS) {
        if terms.chars().count() + word.chars().count() + 1 > QUERY_MAX_CHARS {
            break;
        }
        if !terms.is_empty() {
            terms.push(' ');
        }
        terms.push_str(&word);
    }
    terms
}

/// Why a search failed, each with the message a creator reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchError {
    /// The library refused the key (Pexels: 401 or 403; Pixabay: 400 naming the key).
    Key(String),
    /// 429: the library's limit is reached; `retry_after` from its reset header.
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    Timeout(String),
    /// Unreachable, a 5xx, an answer cut off.
    Unavailable(String),
    /// Another 4xx, or an answer that is not search results.
    Refused(String),
}

impl SearchError {
    /// What the creator reads.
    pub fn message(&self) -> &str {
        match self {
            SearchError::Key(m)
            | SearchError::RateLimited { message: m, .. }
            | SearchError::Timeout(m)
            | SearchError::Unavailable(m)
            | SearchError::Refused(m) => m,
        }
    }
}

impl From<SearchError> for TaskError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::RateLimited {
                message,
                retry_after,
            } => TaskError::Transient {
                message,
                retry_after,
            },
            SearchError::Timeout(message) | SearchError::Unavailable(message) => {
                TaskError::Transient {
                    message,
                    retry_after: None,
                }
            }
            SearchError::Key(message) | SearchError::Refused(message) => {
                TaskError::Permanent(message)
            }
        }
    }
}

impl From<SearchError> for AppError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Key(m) => AppError::new(ErrorCode::ProviderAuth, m),
            SearchError::RateLimited {
                message,
                retry_after,
            } => AppError {
                retry_after_secs: Some(retry_after.map_or(60, |w| w.as_secs().max(1))),
                ..AppError::new(ErrorCode::ProviderRateLimited, message)
            },
            SearchError::Timeout(m) => AppError::new(ErrorCode::ProviderTimeout, m),
            SearchError::Unavailable(m) => AppError::new(ErrorCode::ProviderUnavailable, m),
            SearchError::Refused(m) => AppError::new(ErrorCode::ProviderBadRequest, m),
        }
    }
}

/// When a library's rate limit resets: `Retry-After` (seconds), else Pexels'
/// `X-Ratelimit-Reset` (a UNIX time, in seconds) or Pixabay's `X-RateLimit-Reset`
/// (seconds left); header names are case-insensitive, so one lookup serves both.
fn reset_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = number("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    let reset = number("x-ratelimit-reset")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A time after 2001 is a UNIX time; anything smaller counts seconds from now.
    Some(Duration::from_secs(if reset > 1_000_000_000 {
        reset.saturating_sub(now)
    } else {
        reset
    }))
}

/// Searches `provider` for `search`: the library's total and this page's results.
pub async fn search(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    provider: StockProvider,
    search: &Search<'_>,
    timeout: Duration,
) -> Result<(u64, Vec<Found>), SearchError> {
    let base = endpoint.base_url.trim_end_matches('/');
    let (per_page, page) = (search.per_page.to_string(), search.page.to_string());
    let request = match provider {
        StockProvider::Pexels => {
            let path = match search.kind {
                StockKind::Photos => "/v1/search",
                StockKind::Videos => "/videos/search",
            };
            http.get(format!("{base}{path}"))
                .header(reqwest::header::AUTHORIZATION, &endpoint.api_key)
                .query(&[
                    ("query", search.terms),
                    ("orientation", search.orientation),
                    ("per_page", &per_page),
                    ("page", &page),
                ])
        }
        StockProvider::Pixabay => {
            let path = match search.kind {
                StockKind::Photos => "/",
                StockKind::Videos => "/videos/",
            };
            // Pixabay's photo orientations are horizontal and vertical; its videos have
            // none (the conversion crops or pads them to the frame either way).
            let orientation = match search.orientation {
                "landscape" => "horizontal",
                "portrait" => "vertical",
                _ => "all",
            };
            let mut query = vec![
                ("key", endpoint.api_key.as_str()),
                ("q", search.terms),
                ("per_page", &per_page),
                ("page", &page),
                ("safesearch", "true"),
            ];
            if search.kind == StockKind::Photos {
                query.extend([("image_type", "photo"), ("orientation", orientation)]);
            }
            http.get(format!("{base}{path}")).query(&query)
        }
    };
    let label = provider.label();
    let response = request.timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            SearchError::Timeout(format!(
                "{label} did not answer within {} s; try again",
                timeout.as_secs()
            ))
        } else {
            SearchError::Unavailable(format!("{label} could not be reached: {}", e.without_url()))
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = reset_after(response.headers());
        let said = response.text().await.unwrap_or_default();
        let said: String = said.trim().chars().take(200).collect();
        let name = provider.as_str();
        return Err(match status.as_u16() {
            401 | 403 => SearchError::Key(format!(
                "{label} refused the API key ({status}): check {name}_api_key in Settings"
            )),
            // Pixabay answers a wrong key with 400 "[ERROR 400] Invalid or missing API key".
            400 if said.to_lowercase().contains("key") => SearchError::Key(format!(
                "{label} refused the API key ({said}): check {name}_api_key in Settings"
            )),
            429 => SearchError::RateLimited {
                message: format!("{label}'s rate limit for this key is reached; try again later"),
                retry_after,
            },
            s if s >= 500 => {
                SearchError::Unavailable(format!("{label} failed with status {status}"))
            }
            _ => SearchError::Refused(format!("{label} refused the search ({status}): {said}")),
        });
    }
    let body = response.bytes().await.map_err(|e| {
        SearchError::Unavailable(format!("{label}'s answer broke off: {}", e.without_url()))
    })?;
    let malformed = |e: serde_json::Error| {
        SearchError::Refused(format!(
            "{label} answered something that is not its search results: {e}"
        ))
    };
    let (total, found): (u64, Vec<Found>) = match (provider, search.kind) {
        (StockProvider::Pexels, StockKind::Photos) => {
            let page: pexels::Photos = serde_json::from_slice(&body).map_err(malformed)?;
            let found = page.photos.into_iter().map(Found::from).collect();
            (page.total_results, found)
        }
        (StockProvider::Pexels, StockKind::Videos) => {
            let page: pexels::Videos = serde_json::from_slice(&body).map_err(malformed)?;
            let found = page
                .videos
                .into_iter()
                .filter_map(|v| v.found(search.short_side))
                .collect();
            (page.total_results, found)
        }
        (StockProvider::Pixabay, kind) => {
            let page: pixabay::Page = serde_json::from_slice(&body).map_err(malformed)?;
            let found = page
                .hits
                .into_iter()
                .filter_map(|hit| hit.found(kind, search.short_side))
                .collect();
            (page.total_hits, found)
        }
    };
    Ok((
        total,
        found.into_iter().map(Found::web_links_only).collect(),
    ))
}

/// The smallest file whose short side reaches `short_side`, else the largest.
fn closest<T>(files: Vec<(u32, u32, T)>, short_side: u32) -> Option<(u32, u32, T)> {
    let mut files: Vec<_> = files
        .into_iter()
        .filter(|(w, h, _)| *w > 0 && *h > 0)
        .collect();
    files.sort_by_key(|(w, h, _)| u64::from(*w) * u64::from(*h));
    match files
        .iter()
        .position(|(w, h, _)| (*w).min(*h) >= short_side)
    {
        Some(i) => Some(files.swap_remove(i)),
        None => files.pop(),
    }
}

/// Pexels' search answers, the fields CREVID reads.
mod pexels {
    use serde::Deserialize;

    use super::{closest, Found};
    use crate::model::{StockCredit, StockKind, StockProvider};

    #[derive(Deserialize)]
    pub struct Photos {
        #[serde(default)]
        pub total_results: u64,
        #[serde(default)]
        pub photos: Vec<Photo>,
    }

    #[derive(Deserialize)]
    pub struct Photo {
        id: u64,
        width: u32,
        height: u32,
        url: String,
        photographer: String,
        photographer_url: String,
        src: Src,
    }

    #[derive(Deserialize)]
    struct Src {
        large2x: String,
        medium: String,
    }

    impl From<Photo> for Found {
        fn from(p: Photo) -> Self {
            Found {
                id: p.id.to_string(),
                width: p.width,
                height: p.height,
                duration_ms: None,
                credit: StockCredit {
                    provider: StockProvider::Pexels,
                    kind: StockKind::Photos,
                    author: p.photographer,
                    author_url: p.photographer_url,
                    page_url: p.url,
                },
                media_url: p.src.large2x,
                preview_url: p.src.medium,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Videos {
        #[serde(default)]
        pub total_results: u64,
        #[serde(default)]
        pub videos: Vec<Video>,
    }

    #[derive(Deserialize)]
    pub struct Video {
        id: u64,
        width: u32,
        height: u32,
        url: String,
        /// Whole seconds.
        duration: f64,
        image: String,
        user: User,
        video_files: Vec<File>,
    }

    #[derive(Deserialize)]
    struct User {
        name: String,
        url: String,
    }

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        file_type: Option<String>,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        link: String,
    }

    impl Video {
        /// None when it has no MP4 file of known size (an HLS stream only).
        pub fn found(self, short_side: u32) -> Option<Found> {
            let files = self
                .video_files
                .into_iter()
                .filter(|f| f.file_type.as_deref() == Some("video/mp4"))
                .filter_map(|f| Some((f.width?, f.height?, f.link)))
                .collect();
            let (_, _, link) = closest(files, short_side)?;
            Some(Found {
                id: self.id.to_string(),
                width: self.width,
                height: self.height,
                duration_ms: Some((self.duration * 1000.0).round() as i64),
                credit: StockCredit {
                    provider: StockProvider::Pexels,
                    kind: StockKind::Videos,
                    author: self.user.name,
                    author_url: self.user.url,
                    page_url: self.url,
                },
                media_url: link,
                preview_url: self.image,
            })
        }
    }
}

/// Pixabay's search answers (photos and videos share the page), the fields CREVID reads.
mod pixabay {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::{closest, Found};
    use crate::model::{StockCredit, StockKind, StockProvider};

    #[derive(Deserialize)]
    pub struct Page {
        /// The results reachable through the API (at most 500), rather than `total`.
        #[serde(default, rename = "totalHits")]
        pub total_hits: u64,
        #[serde(default)]
        pub hits: Vec<Hit>,
    }

    #[derive(Deserialize)]
    pub struct Hit {
        id: u64,
        #[serde(rename = "pageURL")]
        page_url: String,
        user: String,
        user_id: u64,
        #[serde(default, rename = "imageWidth")]
        image_width: u32,
        #[serde(default, rename = "imageHeight")]
        image_height: u32,
        #[serde(default, rename = "largeImageURL")]
        large_image_url: Option<String>,
        #[serde(default, rename = "webformatURL")]
        webformat_url: Option<String>,
        /// Whole seconds (videos).
        #[serde(default)]
        duration: Option<f64>,
        /// `large`, `medium`, `small`, `tiny` (videos); a size may be empty.
        #[serde(default)]
        videos: HashMap<String, File>,
    }

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        url: String,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
        #[serde(default)]
        thumbnail: Option<String>,
    }

    impl Hit {
        pub fn found(self, kind: StockKind, short_side: u32) -> Option<Found> {
            let credit = StockCredit {
                provider: StockProvider::Pixabay,
                kind,
                author_url: format!("https://pixabay.com/users/{}-{}/", self.user, self.user_id),
                author: self.user,
                page_url: self.page_url,
            };
            match kind {
                StockKind::Photos => Some(Found {
                    id: self.id.to_string(),
                    width: self.image_width,
                    height: self.image_height,
                    duration_ms: None,
                    credit,
                    media_url: self.large_image_url.filter(|u| !u.is_empty())?,
                    preview_url: self.webformat_url.unwrap_or_default(),
                }),
                StockKind::Videos => {
                    let preview = ["medium", "small", "tiny", "large"]
                        .iter()
                        .filter_map(|size| self.videos.get(*size)?.thumbnail.clone())
                        .find(|t| !t.is_empty())
                        .unwrap_or_default();
                    let (w, h, url) = closest(
                        self.videos
                            .into_values()
                            .filter(|f| !f.url.is_empty())
                            .map(|f| (f.width, f.height, f.url))
                            .collect(),
                        short_side,
                    )?;
                    Some(Found {
                        id: self.id.to_string(),
                        width: w,
                        height: h,
                        duration_ms: self.duration.map(|d| (d * 1000.0).round() as i64),
                        credit,
                        media_url: url,
                        preview_url: preview,
                    })
                }
            }
        }
    }
}

/// What a creator asks for: `query` (the scene's visual prompt's words when empty) of
/// `kind` from `provider` (the first library with a key when none), `page` from 1.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub query: Option<String>,
    pub kind: StockKind,
    pub provider: Option<StockProvider>,
    pub page: u32,
}

/// One page of stock results for a scene of the caller's content. Errors: 404 for
/// another's content or a scene not in it; 409 (`provider_not_configured`) when no
/// library has a key, or the one asked for has none; 422 for a query too long or a page
/// past the results; 429 past the user's rate; 401-like `provider_auth` when the library
/// refuses the key; 502/504 when it fails.
pub async fn search_for_scene(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    asked: Asked,
) -> Result<StockResults, AppError> {
    let content = super::contents::get(state, user, content_id).await?;
    let scene = content
        .scenes
        .iter()
        .find(|s| s.id == scene_id)
        .ok_or_else(|| AppError::not_found("scene"))?;
    let (values, keys) = super::settings::for_tasks(state).await?;
    let providers = configured(&values, &keys);
    let provider = match asked.provider {
        Some(p) if providers.contains(&p) => p,
        Some(p) => {
            return Err(AppError::new(
                ErrorCode::ProviderNotConfigured,
                format!(
                    "{} has no API key in Settings (an admin sets {}_api_key)",
                    p.label(),
                    p.as_str()
                ),
            ))
        }
        None => *providers.first().ok_or_else(not_configured)?,
    };
    let terms = match asked.query.as_deref().map(str::trim) {
        Some(q) if !q.is_empty() => {
            if q.chars().count() > QUERY_MAX_CHARS {
                return Err(AppError::validation(
                    "q",
                    format!("q is at most {QUERY_MAX_CHARS} characters"),
                ));
            }
            q.to_owned()
        }
        _ => scene_terms(scene),
    };
    if terms.is_empty() {
        return Err(AppError::validation(
            "q",
            "this scene has no visual prompt to search by: type what to look for",
        ));
    }
    let page = asked.page.max(1);
    let last = provider.last_page();
    if page > last {
        return Err(AppError::validation(
            "page",
            format!("{} shows at most {last} pages of results", provider.label()),
        ));
    }
    state
        .limits
        .check(
            super::limits::Bucket::StockSearches,
            &user.id.to_string(),
            values.rate_jobs_per_minute,
        )
        .map_err(|secs| AppError::rate_limited("stock searches", secs))?;
    let orientation = orientation(&content.presets.aspect_ratio);
    let timeout = search_timeout(&values);
    let (total, found) = search(
        &state.http,
        &endpoint(&values, &keys, provider),
        provider,
        &Search {
            kind: asked.kind,
            terms: &terms,
            orientation,
            page,
            per_page: PER_PAGE,
            short_side: values.video_height,
        },
        timeout,
    )
    .await
    .map_err(AppError::from)?;
    let candidates = found
        .into_iter()
        .map(|f| candidate(state, f))
        .collect::<Result<_, _>>()?;
    Ok(StockResults {
        provider,
        kind: asked.kind,
        query: terms,
        orientation: orientation.to_owned(),
        page,
        total,
        candidates,
    })
}

pub(crate) fn not_configured() -> AppError {
    AppError::new(
        ErrorCode::ProviderNotConfigured,
        "Stock footage needs a Pexels or Pixabay API key: an admin sets one in Settings",
    )
}

/// The words a scene is searched by: its visual prompt's, else its narration's.
fn scene_terms(scene: &SceneView) -> String {
    let terms = prompt_terms(&scene.visual_prompt);
    if terms.is_empty() {
        prompt_terms(&scene.narration)
    } else {
        terms
    }
}

fn candidate(state: &AppState, found: Found) -> Result<StockCandidate, AppError> {
    let shown = (
        found.id.clone(),
        found.width,
        found.height,
        found.duration_ms,
    );
    let credit = found.credit.clone();
    let json = serde_json::to_string(&Pick::from(found))
        .map_err(|e| super::error::internal("sealing a pick", e))?;
    let token = state.secrets.seal(&format!("{PICK_PREFIX}{json}"));
    let preview_url = format!(
        "/api/stock/preview?pick={}",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    );
    let (id, width, height, duration_ms) = shown;
    Ok(StockCandidate {
        id,
        width,
        height,
        duration_ms,
        credit,
        preview_url,
        pick: token,
    })
}

/// The pick a token holds; 422 naming `field` for a token this server did not make (or
/// made with another secret key) or one older than 24 hours.
fn open_pick(state: &AppState, token: &str, field: &str) -> Result<Pick, AppError> {
    let refused = || {
        AppError::validation(
            field,
            format!("{field} is not a pick from this server's stock search results"),
        )
    };
    let opened = state.secrets.open(token.trim()).ok_or_else(refused)?;
    let json = opened.strip_prefix(PICK_PREFIX).ok_or_else(refused)?;
    let pick: Pick = serde_json::from_str(json).map_err(|_| refused())?;
    if now_ms() - pick.issued_ms > PICK_TTL_MS {
        return Err(AppError::validation(
            field,
            format!("{field} is from a search over 24 hours old: search again"),
        ));
    }
    Ok(pick)
}

/// How a stock file is fetched: by the outbound rules, the library's own origin (its base
/// URL, which may be a local stand-in) trusted as the admin's other endpoints are.
fn fetched<'a>(
    values: &SettingsValues,
    keys: &Keys,
    credit: &StockCredit,
) -> Result<Fetched<'a>, AppError> {
    let base = endpoint(values, keys, credit.provider).base_url;
    let credit = serde_json::to_string(credit)
        .map_err(|e| super::error::internal("encoding a credit", e))?;
    Ok(Fetched {
        field: "stock",
        credit: Some(credit),
        rules: super::outbound::Rules::new(
            "the stock library",
            url::Url::parse(&base).ok().map(|u| u.origin()),
            &values.allowed_private_addresses,
        ),
        timeout: Duration::from_secs(u64::from(values.media_timeout_secs)),
    })
}

/// Makes a picked stock photo or clip the scene's visual, credited to its author: fetched,
/// checked and converted as a pasted URL is (`clips::visual_from`), counted against the
/// user's rate. Errors: as [`clips::save_scene_visual_from_url`], naming `stock`.
pub async fn use_pick(
    state: &AppState,
    user: &CurrentUser,
    (content_id, scene_id): (i64, i64),
    token: &str,
    options: ClipOptions,
) -> Result<ContentDetail, AppError> {
    let content = clips::scene_of(state, user, (content_id, scene_id), options).await?;
    let pick = open_pick(state, token, "stock")?;
    let (values, keys) = super::settings::for_tasks(state).await?;
    apply(
        state,
        user,
        (&content, scene_id),
        &pick,
        &values,
        &keys,
        options,
    )
    .await
}

async fn apply(
    state: &AppState,
    user: &CurrentUser,
    (content, scene_id): (&ContentDetail, i64),
    pick: &Pick,
    values: &SettingsValues,
    keys: &Keys,
    options: ClipOptions,
) -> Result<ContentDetail, AppError> {
    let source = fetched(values, keys, &pick.credit)?;
    // The credit is recorded with the files, in their transaction.
    clips::visual_from(
        state,
        user,
        (content, scene_id),
        &pick.media_url,
        &source,
        options,
    )
    .await
}

/// A picked candidate's preview, fetched for the browser (whose pages may load pictures
/// from this server only): its `Content-Type` (an `image/*`) and bytes, at most 2 MiB.
pub async fn preview(state: &AppState, token: &str) -> Result<(String, Vec<u8>), AppError> {
    let pick = open_pick(state, token, "pick")?;
    let (values, keys) = super::settings::for_tasks(state).await?;
    let source = fetched(&values, &keys, &pick.credit)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let unavailable = |message: String| AppError::new(ErrorCode::ProviderUnavailable, message);
    let response = super::outbound::get(&pick.preview_url, &source.rules, deadline)
        .await
        .map_err(|e| unavailable(format!("the preview: {}", e.message())))?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let allowed = ["image/jpeg", "image/png", "image/webp", "image/gif"];
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    if !allowed.contains(&essence.as_str()) {
        return Err(unavailable(format!(
            "the preview is {content_type:?}, not a picture"
        )));
    }
    let bytes = super::openai::read_capped(response, PREVIEW_MAX_BYTES, "preview")
        .await
        .map_err(|e| match e {
            super::openai::ReadError::TooLarge(too_large) => unavailable(too_large.to_string()),
            super::openai::ReadError::Http(e) => {
                unavailable(format!("the preview broke off: {}", e.without_url()))
            }
        })?;
    Ok((essence, bytes.to_vec()))
}

/// A footage task: the best match for the scene from the libraries with a key, made the
/// scene's visual as a creator's pick is. The job's options say whether clips (falling
/// back to photos) or photos are wanted. Nothing found is a permanent failure naming the
/// words searched.
pub async fn scene_footage(state: &AppState, task: &ClaimedTask) -> Result<Output, TaskError> {
    let fault = |e: AppError| match e.code {
        ErrorCode::Internal
        | ErrorCode::ProviderUnavailable
        | ErrorCode::ProviderTimeout
        | ErrorCode::ProviderRateLimited => TaskError::Transient {
            message: e.message,
            retry_after: e.retry_after_secs.map(Duration::from_secs),
        },
        _ => TaskError::Permanent(e.message),
    };
    let (owner_id, options): (i64, String) =
        sqlx::query_as("SELECT owner_id, options FROM jobs WHERE id = $1")
            .bind(task.job_id)
            .fetch_one(state.pool())
            .await
            .db("reading a job")
            .map_err(fault)?;
    let kind = serde_json::from_str::<serde_json::Value>(&options)
        .ok()
        .and_then(|o| o["stock_kind"].as_str().and_then(StockKind::parse))
        .unwrap_or_default();
    let owner = super::users::active_by_id(state, owner_id)
        .await
        .map_err(fault)?
        .ok_or_else(|| TaskError::Permanent("the job's owner can no longer sign in".into()))?;
    let content = super::contents::get(state, &owner, task.content()?)
        .await
        .map_err(fault)?;
    let scene = content
        .scenes
        .iter()
        .find(|s| Some(s.id) == task.scene_id)
        .ok_or_else(|| TaskError::Permanent("the scene is gone".into()))?;
    let (values, keys) = super::settings::for_tasks(state).await.map_err(fault)?;
    let providers = configured(&values, &keys);
    if providers.is_empty() {
        return Err(TaskError::Permanent(not_configured().message));
    }
    let terms = scene_terms(scene);
    if terms.is_empty() {
        return Err(TaskError::Permanent(
            "this scene has no visual prompt or narration to search by".into(),
        ));
    }
    let orientation = orientation(&content.presets.aspect_ratio);
    let scene_ms = (scene.seconds * 1000.0) as i64;
    let Some(found) = best_match(
        state,
        &values,
        &keys,
        &providers,
        (kind, &terms, orientation),
        scene_ms,
    )
    .await?
    else {
        return Err(TaskError::Permanent(format!(
            "no stock footage matches \"{terms}\" on {}; pick a picture by hand or change the scene's visual prompt",
            providers.iter().map(|p| p.label()).collect::<Vec<_>>().join(" or ")
        )));
    };
    // Looked at again after the searches: a job cancelled meanwhile records nothing, and
    // a visual the creator put on the scene after this task was queued stays, as it does
    // for a picture task.
    let now: i64 = sqlx::query_scalar(
        "SELECT CAST(CASE \
           WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status = 'cancelled') THEN 1 \
           WHEN EXISTS (SELECT 1 FROM scenes s JOIN assets a ON a.id = s.image_asset_id \
             WHERE s.id = $2 AND a.provider = 'upload' \
             AND a.created_at > (SELECT t.created_at FROM tasks t WHERE t.id = $3)) THEN 2 \
           ELSE 0 END AS BIGINT)",
    )
    .bind(task.job_id)
    .bind(scene.id)
    .bind(task.id)
    .fetch_one(state.pool())
    .await
    .db("reading a scene")
    .map_err(fault)?;
    match now {
        1 => return Err(TaskError::Cancelled),
        2 => return Ok(Output::recorded(None)),
        _ => {}
    }
    let detail = apply(
        state,
        &owner,
        (&content, scene.id),
        &Pick::from(found),
        &values,
        &keys,
        PICKED,
    )
    .await
    .map_err(fault)?;
    let picture = detail
        .scenes
        .iter()
        .find(|s| s.id == scene.id)
        .and_then(|s| s.image_asset_id);
    Ok(Output::recorded(picture))
}

/// The first result that suits the scene: shorter and shorter queries (the prompt's words,
/// then its first three, then its first), each asked of every library in turn, clips
/// before photos when clips are wanted. A result in the frame's orientation, and a clip at
/// least as long as the scene, is preferred within a page. A library that fails is left
/// out of the rest of the search; the search fails only when every library did.
async fn best_match(
    state: &AppState,
    values: &SettingsValues,
    keys: &Keys,
    providers: &[StockProvider],
    (kind, terms, orientation): (StockKind, &str, &str),
    scene_ms: i64,
) -> Result<Option<Found>, TaskError> {
    let words: Vec<&str> = terms.split(' ').collect();
    let mut queries = vec![terms.to_owned()];
    for n in [3, 1] {
        if words.len() > n {
            queries.push(words[..n].join(" "));
        }
    }
    let kinds: &[StockKind] = match kind {
        StockKind::Videos => &[StockKind::Videos, StockKind::Photos],
        StockKind::Photos => &[StockKind::Photos],
    };
    let timeout = search_timeout(values);
    let mut failed: Vec<(StockProvider, SearchError)> = Vec::new();
    for kind in kinds {
        for query in &queries {
            for provider in providers {
                if failed.iter().any(|(p, _)| p == provider) {
                    continue;
                }
                let searched = search(
                    &state.http,
                    &endpoint(values, keys, *provider),
                    *provider,
                    &Search {
                        kind: *kind,
                        terms: query,
                        orientation,
                        page: 1,
                        per_page: PER_PAGE,
                        short_side: values.video_height,
                    },
                    timeout,
                )
                .await;
                let found = match searched {
                    Ok((_, found)) => found,
                    Err(e) => {
                        failed.push((*provider, e));
                        continue;
                    }
                };
                let fits = |f: &Found| {
                    let shape = match orientation {
                        "portrait" => f.height > f.width,
                        "landscape" => f.width > f.height,
                        _ => true,
                    };
                    shape && f.duration_ms.is_none_or(|d| d >= scene_ms)
                };
                if let Some(i) = found.iter().position(fits) {
                    return Ok(found.into_iter().nth(i));
                }
                if let Some(first) = found.into_iter().next() {
                    return Ok(Some(first));
                }
            }
        }
    }
    // Every library failed: each one's reason, the last one's kind (a rate limit retries).
    if failed.len() == providers.len() {
        let said: Vec<String> = failed.iter().map(|(_, e)| e.message().to_owned()).collect();
        if let Some((_, last)) = failed.pop() {
            return Err(match TaskError::from(last) {
                TaskError::Transient { retry_after, .. } => TaskError::Transient {
                    message: said.join("; "),
                    retry_after,
                },
                _ => TaskError::Permanent(said.join("; ")),
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_terms_keep_what_is_seen() {
        assert_eq!(
            prompt_terms(
                "cinematic illustration of firefighters, unroll, long, hose, beside, old, wooden, barn, 9:16 frame, no text"
            ),
            "firefighters unroll long hose beside"
        );
        assert_eq!(
            prompt_terms("A close-up shot of the Eiffel Tower at dusk"),
            "eiffel tower dusk"
        );
        assert_eq!(
            prompt_terms("Rue de l'Église, Paris"),
            "rue de l'église paris"
        );
        assert_eq!(prompt_terms("cinematic 4k photo"), "");
        let long = "supercalifragilisticexpialidocious ".repeat(5);
        assert!(prompt_terms(&long).chars().count() <= QUERY_MAX_CHARS);
    }

    #[test]
    fn credit_links_are_web_links() {
        let found = Found {
            id: "1".into(),
            width: 1,
            height: 1,
            duration_ms: None,
            credit: StockCredit {
                provider: StockProvider::Pexels,
                kind: StockKind::Photos,
                author: "A".into(),
                author_url: "javascript:alert(1)".into(),
                page_url: "https://www.pexels.com/photo/1/".into(),
            },
            media_url: String::new(),
            preview_url: String::new(),
        }
        .web_links_only();
        assert_eq!(found.credit.author_url, "https://www.pexels.com");
        assert_eq!(found.credit.page_url, "https://www.pexels.com/photo/1/");
    }

    #[test]
    fn reset_headers_say_when_to_come_back() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut pixabay = HeaderMap::new();
        pixabay.insert("X-RateLimit-Reset", HeaderValue::from_static("42"));
        assert_eq!(reset_after(&pixabay), Some(Duration::from_secs(42)));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut pexels = HeaderMap::new();
        pexels.insert(
            "X-Ratelimit-Reset",
            (now + 600).to_string().parse().unwrap(),
        );
        let wait = reset_after(&pexels).unwrap().as_secs();
        assert!((598..=600).contains(&wait), "{wait}");
        pexels.insert("Retry-After", HeaderValue::from_static("7"));
        assert_eq!(reset_after(&pexels), Some(Duration::from_secs(7)));
        assert_eq!(reset_after(&HeaderMap::new()), None);
    }

    #[test]
    fn closest_file_reaches_the_short_side_or_is_the_largest() {
        let files = vec![
            (1920, 1080, "fhd"),
            (640, 360, "sd"),
            (1280, 720, "hd"),
            (0, 0, "hls"),
        ];
        assert_eq!(closest(files.clone(), 720).map(|f| f.2), Some("hd"));
        assert_eq!(closest(files.clone(), 1080).map(|f| f.2), Some("fhd"));
        assert_eq!(closest(files, 2160).map(|f| f.2), Some("fhd"));
        assert_eq!(closest(vec![(0, 0, "hls")], 720), None);
    }

    #[test]
    fn pexels_videos_as_documented() {
        // The example answer of https://www.pexels.com/api/documentation/#videos-search,
        // shortened: an HLS file without a size is never chosen.
        let answer = r#"{"page":1,"per_page":1,"total_results":20475,"url":"https://www.pexels.com/videos/","videos":[{"id":1448735,"width":4096,"height":2160,"url":"https://www.pexels.com/video/video-of-forest-1448735/","image":"https://images.pexels.com/videos/1448735/free-video-1448735.jpg?fit=crop&w=1200&h=630&auto=compress&cs=tinysrgb","duration":32,"user":{"id":574687,"name":"Ruvim Miksanskiy","url":"https://www.pexels.com/@digitech"},"video_files":[{"id":58649,"quality":"sd","file_type":"video/mp4","width":640,"height":338,"link":"https://player.vimeo.com/external/291648067.sd.mp4"},{"id":58650,"quality":"hd","file_type":"video/mp4","width":2048,"height":1080,"link":"https://player.vimeo.com/external/291648067.hd.mp4"},{"id":58652,"quality":null,"file_type":"video/mp4","width":null,"height":null,"link":"https://player.vimeo.com/external/291648067.m3u8"},{"id":58653,"quality":"hd","file_type":"video/mp4","width":1366,"height":720,"link":"https://player.vimeo.com/external/291648067.hd2.mp4"}],"video_pictures":[]}]}"#;
        let page: pexels::Videos = serde_json::from_str(answer).unwrap();
        assert_eq!(page.total_results, 20475);
        let found: Vec<Found> = page
            .videos
            .into_iter()
            .filter_map(|v| v.found(720))
            .collect();
        assert_eq!(
            found[0].media_url,
            "https://player.vimeo.com/external/291648067.hd2.mp4"
        );
        assert_eq!(found[0].duration_ms, Some(32_000));
        assert_eq!(
            found[0].credit.line(),
            "Video by Ruvim Miksanskiy on Pexels"
        );
    }

    #[test]
    fn pixabay_photos_and_videos_as_documented() {
        // Shortened from the examples of https://pixabay.com/api/docs/.
        let photos = r#"{"total":4692,"totalHits":500,"hits":[{"id":195893,"pageURL":"https://pixabay.com/en/blossom-bloom-flower-195893/","type":"photo","tags":"blossom, bloom, flower","previewURL":"https://cdn.pixabay.com/photo/2013/10/15/09/12/flower-195893_150.jpg","webformatURL":"https://pixabay.com/get/35bbf209e13e39d2_640.jpg","largeImageURL":"https://pixabay.com/get/ed6a99fd0a76647_1280.jpg","imageWidth":4000,"imageHeight":2250,"views":7671,"user_id":48777,"user":"Josch13","userImageURL":"https://cdn.pixabay.com/user/2013/11/05/02-10-23-764_250x250.jpg"}]}"#;
        let page: pixabay::Page = serde_json::from_str(photos).unwrap();
        assert_eq!(page.total_hits, 500);
        let found = page
            .hits
            .into_iter()
            .next()
            .unwrap()
            .found(StockKind::Photos, 720)
            .unwrap();
        assert_eq!(
            found.media_url,
            "https://pixabay.com/get/ed6a99fd0a76647_1280.jpg"
        );
        assert_eq!(
            found.credit.author_url,
            "https://pixabay.com/users/Josch13-48777/"
        );
        let videos = r#"{"total":42,"totalHits":42,"hits":[{"id":125,"pageURL":"https://pixabay.com/videos/id-125/","type":"film","tags":"flowers, yellow, blossom","duration":12,"videos":{"large":{"url":"","width":0,"height":0,"size":0,"thumbnail":""},"medium":{"url":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_medium.mp4","width":1280,"height":720,"size":3562083,"thumbnail":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_medium.jpg"},"small":{"url":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_small.mp4","width":960,"height":540,"size":2375276,"thumbnail":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_small.jpg"},"tiny":{"url":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_tiny.mp4","width":640,"height":360,"size":885630,"thumbnail":"https://cdn.pixabay.com/video/2015/08/08/125-135736646_tiny.jpg"}},"views":4462,"user_id":1281706,"user":"Coverr-Free-Footage"}]}"#;
        let page: pixabay::Page = serde_json::from_str(videos).unwrap();
        let found = page
            .hits
            .into_iter()
            .next()
            .unwrap()
            .found(StockKind::Videos, 720)
            .unwrap();
        assert_eq!(
            found.media_url,
            "https://cdn.pixabay.com/video/2015/08/08/125-135736646_medium.mp4"
        );
        assert_eq!(
            found.preview_url,
            "https://cdn.pixabay.com/video/2015/08/08/125-135736646_medium.jpg"
        );
        assert_eq!(found.duration_ms, Some(12_000));
    }
}
