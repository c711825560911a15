//! Data shapes shared by the server and the browser: request and response bodies of the
//! server functions and of the REST API.

use serde::{Deserialize, Serialize};

/// Reads `null` as the type's default, as an absent field is read: clients that write
/// every optional field (OpenAPI generators, n8n) send `null` for "not given".
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Bounds on what a client may send. They are part of the API contract (README) and are
/// checked in `ssr::validate` before anything is written.
pub mod limits {
    /// Stock search results a page holds, as Pexels' default.
    pub const STOCK_PER_PAGE: u32 = 15;
    pub const TOPIC_MIN_CHARS: usize = 3;
    pub const TOPIC_MAX_CHARS: usize = 500;
    pub const SCRIPT_MIN_CHARS: usize = 20;
    pub const SCRIPT_MAX_CHARS: usize = 20_000;
    pub const SCENE_COUNT_MIN: u32 = 1;
    pub const SCENE_COUNT_MAX: u32 = 30;
    pub const TARGET_SECONDS_MIN: u32 = 10;
    pub const TARGET_SECONDS_MAX: u32 = 600;
    pub const TITLE_MAX_CHARS: usize = 200;
    pub const NARRATION_MAX_CHARS: usize = 2_000;
    pub const VISUAL_PROMPT_MAX_CHARS: usize = 1_000;
    pub const SCENE_SECONDS_MAX: f64 = 120.0;
    /// Scenes a saved content may hold (edits can add scenes beyond the generated count).
    pub const SCENES_PER_CONTENT_MAX: usize = 50;
    pub const SHORT_TEXT_MAX_CHARS: usize = 100;
    pub const DESCRIPTION_MAX_CHARS: usize = 5_000;
    pub const HASHTAGS_MAX: usize = 30;
    pub const SEARCH_MAX_CHARS: usize = 200;
    pub const PAGE_SIZE_MAX: u32 = 100;
    /// Narration speed, as OpenAI's speech API bounds it.
    pub const SPEED_MIN: f64 = 0.25;
    pub const SPEED_MAX: f64 = 4.0;
    /// Words a voice preview speaks at most.
    pub const PREVIEW_MAX_CHARS: usize = 300;
    /// The highest page number a list accepts (0 reads as 1).
    pub const PAGE_MAX: u32 = 1_000_000;
    pub const PASSWORD_MIN_CHARS: usize = 12;
    pub const PASSWORD_MAX_CHARS: usize = 128;
    pub const EMAIL_MAX_CHARS: usize = 254;
    pub const TOKEN_NAME_MAX_CHARS: usize = 100;
    /// Webhook endpoints one user may register.
    pub const WEBHOOKS_PER_USER: i64 = 20;
    /// A webhook endpoint's URL, in characters.
    pub const WEBHOOK_URL_MAX_CHARS: usize = 2000;
    /// A webhook endpoint's description, in characters.
    pub const WEBHOOK_DESCRIPTION_MAX_CHARS: usize = 200;
    /// Whole request bodies, enforced before any parsing.
    pub const BODY_MAX_BYTES: usize = 256 * 1024;
    /// An uploaded background music file.
    pub const MUSIC_MAX_BYTES: usize = 20 * 1024 * 1024;
    /// A creator's own picture for a scene.
    pub const PICTURE_MAX_BYTES: usize = 20 * 1024 * 1024;
    /// A creator's video clip for a scene, as uploaded (it is converted once and stored
    /// smaller).
    pub const CLIP_MAX_BYTES: usize = 200 * 1024 * 1024;

    /// The body limit for a request path: uploads (music, a scene's picture or clip) may
    /// be large, nothing else.
    pub fn body_max_for(path: &str) -> usize {
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let number = |s: &str| s.parse::<i64>().is_ok();
        match parts.as_slice() {
            ["", "api", "contents", id, "music"] if number(id) => MUSIC_MAX_BYTES,
            ["", "api", "contents", id, "scenes", scene, "visual"]
                if number(id) && number(scene) =>
            {
                CLIP_MAX_BYTES
            }
            _ => BODY_MAX_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A language model writes the script from a topic.
    #[default]
    Topic,
    /// The built-in splitter cuts a pasted script into scenes, offline.
    Script,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Topic => "topic",
            Mode::Script => "script",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "topic" => Some(Mode::Topic),
            "script" => Some(Mode::Script),
            _ => None,
        }
    }
}

pub const ASPECT_RATIOS: [&str; 3] = ["9:16", "16:9", "1:1"];

/// How one scene gives way to the next in the video. The admin's transition time
/// (`video_fade_ms`, per side of a join) sets how long; 0 makes every join a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// The next scene starts at once.
    Cut,
    /// Each scene fades out to black and the next fades in.
    #[default]
    Fade,
    /// The scenes blend into each other (ffmpeg's `xfade=transition=fade`).
    Crossfade,
    /// The next scene pushes the last one out to the left (`xfade`'s `slideleft`).
    Slide,
    /// The next scene is uncovered from right to left (`xfade`'s `wipeleft`).
    Wipe,
}

impl Transition {
    pub const ALL: [Transition; 5] = [
        Transition::Cut,
        Transition::Fade,
        Transition::Crossfade,
        Transition::Slide,
        Transition::Wipe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Cut => "cut",
            Transition::Fade => "fade",
            Transition::Crossfade => "crossfade",
            Transition::Slide => "slide",
            Transition::Wipe => "wipe",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// What the content page calls it.
    pub fn label(self) -> &'static str {
        match self {
            Transition::Cut => "Cut",
            Transition::Fade => "Fade through black",
            Transition::Crossfade => "Crossfade",
            Transition::Slide => "Slide",
            Transition::Wipe => "Wipe",
        }
    }
}

/// Every preset is optional in a request; a missing one takes the admin's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresetsInput {
    pub language: Option<String>,
    pub tone: Option<String>,
    pub target_seconds: Option<u32>,
    pub scene_count: Option<u32>,
    pub aspect_ratio: Option<String>,
    pub visual_style: Option<String>,
    pub voice: Option<String>,
    /// Narration speed, 0.25–4.0 (1: the voice's own pace).
    #[serde(default)]
    pub speed: Option<f64>,
    /// How scenes give way to each other; `fade` when left out.
    #[serde(default)]
    pub transition: Option<Transition>,
}

/// Presets with every default filled in: what a content is generated and stored with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Presets {
    pub language: String,
    pub tone: String,
    pub target_seconds: u32,
    pub scene_count: u32,
    pub aspect_ratio: String,
    pub visual_style: String,
    pub voice: String,
    /// Narration speed, 0.25–4.0. None for contents made before speeds were per content:
    /// they are narrated at the admin's default (`tts_speed`).
    #[serde(default)]
    pub speed: Option<f64>,
    /// How scenes give way to each other in the video.
    #[serde(default)]
    pub transition: Transition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub mode: Mode,
    /// The topic (mode `topic`) or the pasted script (mode `script`).
    pub input: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub presets: PresetsInput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SceneDraft {
    pub narration: String,
    pub visual_prompt: String,
    pub seconds: f64,
}

/// A generated script, not yet saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GeneratedScript {
    pub title: String,
    pub hook: String,
    pub scenes: Vec<SceneDraft>,
    pub description: String,
    pub hashtags: Vec<String>,
    pub presets: Presets,
    /// Which provider wrote it: `openai-compatible:<model>` or `builtin:splitter`.
    pub provider: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SaveContentRequest {
    pub mode: Mode,
    pub input: String,
    pub script: GeneratedScript,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SceneView {
    pub id: i64,
    pub position: i64,
    pub narration: String,
    pub visual_prompt: String,
    pub seconds: f64,
    /// The scene's current picture and narration, once made.
    pub image_asset_id: Option<i64>,
    pub audio_asset_id: Option<i64>,
    /// The picture is the creator's own (uploaded): "Generate images" for every scene
    /// keeps it; naming the scene replaces it.
    #[serde(default)]
    pub own_image: bool,
    /// The creator's video clip, when the scene's visual is one (its picture is then the
    /// clip's first frame).
    #[serde(default)]
    pub clip: Option<SceneClip>,
    /// Who made the picture or clip, when it is stock footage (the licences ask for it).
    #[serde(default)]
    pub credit: Option<StockCredit>,
}

/// A stock library CREVID searches with the admin's key (`pexels_api_key`,
/// `pixabay_api_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StockProvider {
    Pexels,
    Pixabay,
}

impl StockProvider {
    pub const ALL: [StockProvider; 2] = [StockProvider::Pexels, StockProvider::Pixabay];

    pub fn as_str(self) -> &'static str {
        match self {
            StockProvider::Pexels => "pexels",
            StockProvider::Pixabay => "pixabay",
        }
    }

    /// The last page the library serves at [`limits::STOCK_PER_PAGE`]: Pixabay's API
    /// reaches its first 500 results (`totalHits`); Pexels documents no bound, so 66 pages
    /// (about 1 000 results) it is.
    pub fn last_page(self) -> u32 {
        match self {
            StockProvider::Pixabay => 500 / limits::STOCK_PER_PAGE,
            StockProvider::Pexels => 66,
        }
    }

    /// The library's own name, as credits write it.
    pub fn label(self) -> &'static str {
        match self {
            StockProvider::Pexels => "Pexels",
            StockProvider::Pixabay => "Pixabay",
        }
    }

    /// The library's home page, linked wherever its results are shown (both ask for it).
    pub fn home(self) -> &'static str {
        match self {
            StockProvider::Pexels => "https://www.pexels.com",
            StockProvider::Pixabay => "https://pixabay.com",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Stock photos or stock video clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StockKind {
    Photos,
    #[default]
    Videos,
}

impl StockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StockKind::Photos => "photos",
            StockKind::Videos => "videos",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [StockKind::Photos, StockKind::Videos]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Who made a stock picture or clip: "Photo by {author} on Pexels", linked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StockCredit {
    pub provider: StockProvider,
    pub kind: StockKind,
    pub author: String,
    /// The author's page at the library.
    pub author_url: String,
    /// The picture's or clip's page at the library.
    pub page_url: String,
}

impl StockCredit {
    /// `Photo by Jane Doe on Pexels`.
    pub fn line(&self) -> String {
        let what = match self.kind {
            StockKind::Photos => "Photo",
            StockKind::Videos => "Video",
        };
        format!("{what} by {} on {}", self.author, self.provider.label())
    }
}

/// One search result: show `preview_url`, credit `credit`, and send `pick` to use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StockCandidate {
    /// The library's id for it.
    pub id: String,
    pub width: u32,
    pub height: u32,
    /// A clip's length, in milliseconds; none for a photo.
    pub duration_ms: Option<i64>,
    pub credit: StockCredit,
    /// A small picture of it, served through CREVID (`GET /api/stock/preview`).
    pub preview_url: String,
    /// An opaque token for `PUT …/scenes/{scene_id}/visual` with `{"stock": pick}`; it names
    /// what to download and is valid for 24 hours.
    pub pick: String,
}

/// One page of stock search results for a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StockResults {
    pub provider: StockProvider,
    pub kind: StockKind,
    /// The words searched for (the creator's, or some of the scene's visual prompt).
    pub query: String,
    /// `portrait`, `landscape` or `square`, from the content's aspect ratio.
    pub orientation: String,
    pub page: u32,
    /// How many results the library has for the query.
    pub total: u64,
    pub candidates: Vec<StockCandidate>,
}

/// A stock picture or clip chosen from search results, as a scene's visual (`PUT
/// …/visual` with a JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StockPick {
    /// A candidate's `pick` token.
    pub stock: String,
}

/// Stock footage for a content's scenes, found in the background: each scene gets the
/// best match for its visual prompt. All scenes without a creator's own visual when
/// `scene_ids` is left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FootageRequest {
    pub content_id: i64,
    #[serde(default)]
    pub scene_ids: Option<Vec<i64>>,
    /// Clips (the default; a photo when no clip is found) or photos.
    #[serde(default, deserialize_with = "null_as_default")]
    pub kind: StockKind,
    /// Render the video once every scene has its picture and narration.
    #[serde(default, deserialize_with = "null_as_default")]
    pub render_after: bool,
}

/// A picture or clip for a scene, fetched from a URL (`PUT …/visual` with a JSON body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VisualUrl {
    /// An http or https URL answering `image/*` or `video/*`.
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 2048))]
    pub url: String,
}

/// A scene's video clip: converted once at upload to H.264 at 30 fps in the content's
/// frame, with AAC sound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SceneClip {
    pub asset_id: i64,
    /// The clip's length, in milliseconds (at most `limits::SCENE_SECONDS_MAX`).
    pub duration_ms: i64,
    /// What the clip does when the scene outlasts it.
    pub when_shorter: WhenShorter,
    /// How loud the clip's own sound plays under the narration, in percent (0: not at all).
    pub sound: u32,
}

/// How a scene's clip plays, changed after upload (`PUT …/scenes/{scene_id}/clip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClipUpdate {
    pub when_shorter: WhenShorter,
    /// The clip's own sound under the narration, 0–100 %.
    #[cfg_attr(feature = "ssr", schema(minimum = 0, maximum = 100))]
    pub sound: u32,
}

/// What a clip does when its scene lasts longer than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WhenShorter {
    /// Start again from its first frame.
    #[default]
    Loop,
    /// Hold its last frame.
    Freeze,
}

impl WhenShorter {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenShorter::Loop => "loop",
            WhenShorter::Freeze => "freeze",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [WhenShorter::Loop, WhenShorter::Freeze]
            .into_iter()
            .find(|w| w.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ContentSummary {
    pub id: i64,
    pub title: String,
    pub mode: Mode,
    pub status: String,
    pub scene_count: i64,
    pub aspect_ratio: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ContentDetail {
    pub id: i64,
    pub title: String,
    pub mode: Mode,
    pub input: String,
    pub status: String,
    pub hook: String,
    pub description: String,
    pub hashtags: Vec<String>,
    pub presets: Presets,
    pub provider: String,
    pub scenes: Vec<SceneView>,
    pub created_at: String,
    pub updated_at: String,
    /// The latest rendered MP4 and its subtitles, if any.
    pub video_asset_id: Option<i64>,
    pub subtitles_asset_id: Option<i64>,
    /// Background music for the video, if uploaded.
    pub music_asset_id: Option<i64>,
    /// A scene's picture or narration changed (or scenes were added, moved or removed)
    /// since the video was rendered.
    pub video_out_of_date: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SceneEdit {
    /// An existing scene's id, or none for a new scene.
    #[serde(default)]
    pub id: Option<i64>,
    pub narration: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub visual_prompt: String,
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// A full edit of a content: the title, and the scenes in their new order. Scenes left out
/// are deleted, scenes without an id are added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateContentRequest {
    pub title: String,
    pub scenes: Vec<SceneEdit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ListQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub page: Option<u32>,
    #[serde(default)]
    pub per_page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ContentPage {
    pub items: Vec<ContentSummary>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

impl ContentPage {
    pub fn pages(&self) -> u32 {
        let per = self.per_page.max(1) as i64;
        ((self.total + per - 1) / per).max(1) as u32
    }
}

/// Settings as the UI and API see them: secrets appear only masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SettingsView {
    pub values: SettingsValues,
    /// `sk-…abcd`, or none when no key is stored.
    pub llm_api_key_masked: Option<String>,
    /// The pictures endpoint's own key, masked; none when it has none (it then uses the
    /// script's key if it is the script's endpoint, else no key).
    #[serde(default)]
    pub image_api_key_masked: Option<String>,
    /// The speech endpoint's own key, masked, as `image_api_key_masked`.
    #[serde(default)]
    pub tts_api_key_masked: Option<String>,
    /// The transcription endpoint's own key, masked.
    #[serde(default)]
    pub transcription_api_key_masked: Option<String>,
    /// The Pexels API key, masked; none: Pexels is not searched.
    #[serde(default)]
    pub pexels_api_key_masked: Option<String>,
    /// The Pixabay API key, masked; none: Pixabay is not searched.
    #[serde(default)]
    pub pixabay_api_key_masked: Option<String>,
}

/// Every non-secret setting. Stored as one JSON document; unknown keys from older
/// versions are ignored and missing ones take their defaults, so adding a setting needs
/// no migration. (Updates are checked more strictly: see `SettingsUpdate`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct SettingsValues {
    /// OpenAI-compatible endpoint, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub llm_base_url: String,
    pub llm_model: String,
    /// Sent as `temperature` when set (0–2). Empty: not sent, as reasoning models (OpenAI's
    /// o-series and GPT-5, DeepSeek-R1) require; a model that refuses it is asked again
    /// without it either way.
    pub llm_temperature: Option<f64>,
    pub llm_timeout_secs: u32,
    /// Send a JSON-schema `response_format` (OpenAI, vLLM, recent Ollama); when off, ask
    /// for a JSON object and validate it ourselves (older servers).
    pub llm_json_schema: bool,
    pub default_language: String,
    pub default_tone: String,
    pub default_target_seconds: u32,
    pub default_scene_count: u32,
    pub default_aspect_ratio: String,
    pub default_visual_style: String,
    pub default_voice: String,
    /// Script generations one user may start per minute.
    pub rate_generate_per_minute: u32,
    /// Background jobs one user may create per minute.
    pub rate_jobs_per_minute: u32,
    /// Media one user's contents may hold on disk, in MiB (pictures, narration, videos,
    /// music); new media is refused beyond it. 0: no quota.
    pub storage_quota_mb: u32,
    /// Non-public address ranges that URLs from outside (a creator's pasted picture or
    /// clip, an image URL in a provider's answer) may reach anyway, as comma-separated
    /// CIDR blocks (`192.168.1.0/24, fd00::/8`): a media server on the LAN. Empty: only
    /// public addresses are fetched (`outbound`). As Mastodon's
    /// `ALLOWED_PRIVATE_ADDRESSES`.
    pub allowed_private_addresses: String,
    /// `builtin` (a scene card drawn offline) or `openai` (the Images API at
    /// `image_base_url`).
    pub image_provider: String,
    /// The OpenAI-compatible endpoint for pictures; empty: the script's (`llm_base_url`,
    /// with its key).
    pub image_base_url: String,
    pub image_model: String,
    /// `auto` (from the content's aspect ratio) or the provider's `WxH`.
    pub image_size: String,
    /// `auto`, or what the model accepts (`low`/`medium`/`high`, `standard`/`hd`).
    pub image_quality: String,
    /// Image tasks in flight at once, across every server process.
    pub image_concurrency: u32,
    /// Image requests started per minute (0: no limit), as the provider's tier allows.
    pub image_per_minute: u32,
    /// `builtin` (espeak-ng, offline) or `openai` (the speech API at `tts_base_url`).
    pub tts_provider: String,
    /// The OpenAI-compatible endpoint for narration (e.g. a local Kokoro-FastAPI at
    /// `http://localhost:8880/v1`); empty: the script's, with its key.
    pub tts_base_url: String,
    /// A transcription model with word timestamps (OpenAI's `whisper-1`, a local
    /// faster-whisper server's model) to time captions of provider narration to its words;
    /// empty: no transcription, captions take each word's share of the letters.
    pub transcription_model: String,
    /// The OpenAI-compatible endpoint for transcription; empty: the narration's.
    pub transcription_base_url: String,
    pub tts_model: String,
    pub tts_speed: f64,
    pub tts_concurrency: u32,
    pub tts_per_minute: u32,
    /// How long one image or speech request may take before it is retried.
    pub media_timeout_secs: u32,
    /// Renders at once, across every server process (ffmpeg uses every core it gets).
    pub render_concurrency: u32,
    /// 720 or 1080: the short side of the video (9:16 at 1080 is 1080×1920).
    pub video_height: u32,
    /// Silence after each scene's narration, in milliseconds.
    pub video_pause_ms: u32,
    /// Burn the subtitles into the picture (an .srt is written either way).
    pub video_subtitles: bool,
    /// A slow zoom on each scene's picture.
    pub video_motion: bool,
    /// The transition time, in milliseconds, taken from each side of a join between scenes:
    /// a fade from and to black, or half of an `xfade` (the content's `Transition`). 0: every
    /// join is a cut.
    pub video_fade_ms: u32,
    /// Subtitle text size, in percent of the default for the frame.
    pub subtitle_size: u32,
    /// `#RRGGBB`.
    pub subtitle_colour: String,
    /// Width of the dark outline around the letters (0–6).
    pub subtitle_outline: u32,
    /// `bottom`, `middle` or `top`.
    pub subtitle_position: String,
    /// `lines` (up to two lines at a time), `word` (one word at a time, as it is spoken)
    /// or `highlight` (the lines, the spoken word in `caption_highlight_colour`). Timed by
    /// espeak-ng's word events for offline narration, by the transcription model's word
    /// timestamps for provider narration when one is set, else by the share of letters.
    pub caption_style: String,
    /// `#RRGGBB`: the spoken word's colour in the `highlight` style.
    pub caption_highlight_colour: String,
    /// Background music level, in percent of its own loudness (it is also lowered further
    /// while someone speaks).
    pub music_volume: u32,
    /// Pexels' API (photos at `{base}/v1/search`, videos at `{base}/videos/search`); searched
    /// once `pexels_api_key` is set. Another URL only for a stand-in.
    pub pexels_base_url: String,
    /// Pixabay's API (photos at `{base}/`, videos at `{base}/videos/`); searched once
    /// `pixabay_api_key` is set.
    pub pixabay_base_url: String,
}

impl SettingsValues {
    /// Every field, as the `values` of a `SettingsUpdate`.
    pub fn to_update_map(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}

impl Default for SettingsValues {
    fn default() -> Self {
        Self {
            llm_base_url: "https://api.openai.com/v1".into(),
            llm_model: "gpt-4o-mini".into(),
            llm_temperature: Some(0.7),
            llm_timeout_secs: 60,
            llm_json_schema: true,
            default_language: "English".into(),
            default_tone: "informative".into(),
            default_target_seconds: 60,
            default_scene_count: 6,
            default_aspect_ratio: "9:16".into(),
            default_visual_style: "cinematic".into(),
            default_voice: "alloy".into(),
            rate_generate_per_minute: 10,
            rate_jobs_per_minute: 30,
            storage_quota_mb: 0,
            allowed_private_addresses: String::new(),
            image_provider: "builtin".into(),
            image_base_url: String::new(),
            image_model: "gpt-image-1-mini".into(),
            image_size: "auto".into(),
            image_quality: "auto".into(),
            image_concurrency: 4,
            image_per_minute: 0,
            tts_provider: "builtin".into(),
            tts_base_url: String::new(),
            transcription_model: String::new(),
            transcription_base_url: String::new(),
            tts_model: "gpt-4o-mini-tts".into(),
            tts_speed: 1.0,
            tts_concurrency: 4,
            tts_per_minute: 0,
            media_timeout_secs: 120,
            render_concurrency: 1,
            video_height: 720,
            video_pause_ms: 400,
            video_subtitles: true,
            video_motion: true,
            video_fade_ms: 250,
            subtitle_size: 100,
            subtitle_colour: "#FFFFFF".into(),
            subtitle_outline: 2,
            subtitle_position: "bottom".into(),
            caption_style: "lines".into(),
            caption_highlight_colour: "#FFD400".into(),
            music_volume: 25,
            pexels_base_url: "https://api.pexels.com".into(),
            pixabay_base_url: "https://pixabay.com/api".into(),
        }
    }
}

/// An update: the values to change (a JSON object of `SettingsValues` fields; fields left
/// out keep their current value, unknown fields are refused), plus what to do with the key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[cfg_attr(feature = "ssr", schema(value_type = SettingsValues))]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Absent: keep the stored key. Empty string: remove it. Otherwise: the new key.
    #[serde(default)]
    pub llm_api_key: Option<String>,
    /// The pictures endpoint's own key, as `llm_api_key`.
    #[serde(default)]
    pub image_api_key: Option<String>,
    /// The speech endpoint's own key, as `llm_api_key`.
    #[serde(default)]
    pub tts_api_key: Option<String>,
    /// The transcription endpoint's own key, as `llm_api_key`.
    #[serde(default)]
    pub transcription_api_key: Option<String>,
    /// The Pexels API key (pexels.com/api), as `llm_api_key`; with it, creators can search
    /// Pexels for stock footage.
    #[serde(default)]
    pub pexels_api_key: Option<String>,
    /// The Pixabay API key (pixabay.com/api/docs), as `llm_api_key`.
    #[serde(default)]
    pub pixabay_api_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StatusCheck {
    pub name: String,
    pub verdict: Verdict,
    /// Plain words: what was found and, when not OK, what to do.
    pub message: String,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StatusReport {
    pub version: String,
    pub database: String,
    pub checks: Vec<StatusCheck>,
    /// The latest failed tasks, newest first, with what only admins see of a failure.
    #[serde(default)]
    pub recent_failures: Vec<TaskFailure>,
}

/// A failed task as the status page shows it to admins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TaskFailure {
    pub task_id: i64,
    pub job_id: i64,
    pub content_id: Option<i64>,
    /// `scene.image`, `scene.audio`, `content.render`.
    pub kind: String,
    /// `2026-11-24 09:12 UTC`.
    pub failed_at: String,
    /// What the creator was told.
    pub message: String,
    /// A tool's own words, paths, the database's: for admins only.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Creator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "creator" => Some(Role::Creator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The signed-in user as the browser sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

/// The first admin. `setup_code` is required only when the server listens beyond this
/// machine: it prints one in its log at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub email: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    pub password: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
}

/// A new token: `secret` is shown this once and never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub token: TokenView,
    pub secret: String,
}

/// What a webhook endpoint can be told about. The names and the payload's envelope
/// (`{"type", "timestamp", "data"}`) follow the Standard Webhooks specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum WebhookEvent {
    /// A job finished with every task done; `data` is the job (as `GET /api/jobs` lists it).
    #[serde(rename = "job.completed")]
    JobCompleted,
    /// A job finished with a task failed; `data` is the job.
    #[serde(rename = "job.failed")]
    JobFailed,
    /// A render made the content's video; `data`: `content_id`, `job_id`, `title`,
    /// `video_url`, `duration_ms`.
    #[serde(rename = "video.ready")]
    VideoReady,
    /// A content was deleted; `data`: `content_id`, `title`.
    #[serde(rename = "content.deleted")]
    ContentDeleted,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 4] = [
        WebhookEvent::JobCompleted,
        WebhookEvent::JobFailed,
        WebhookEvent::VideoReady,
        WebhookEvent::ContentDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::JobCompleted => "job.completed",
            WebhookEvent::JobFailed => "job.failed",
            WebhookEvent::VideoReady => "video.ready",
            WebhookEvent::ContentDeleted => "content.deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A webhook endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct WebhookEndpointView {
    pub id: i64,
    pub url: String,
    pub description: String,
    pub events: Vec<WebhookEvent>,
    /// A disabled endpoint is sent nothing new.
    pub enabled: bool,
    pub created_at: String,
    /// Until when the secret before the last rotation still signs deliveries too.
    pub previous_secret_expires_at: Option<String>,
}

/// A new endpoint. `events` left out or `null`: every event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// http or https; it must reach a public address unless the admin allows the range
    /// (`allowed_private_addresses`).
    pub url: String,
    #[serde(default)]
    pub events: Option<Vec<WebhookEvent>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Changes to an endpoint; a field left out or `null` stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<WebhookEvent>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An endpoint with its signing secret (`whsec_` and base64, as Standard Webhooks
/// libraries take it): shown when the endpoint is made and when the secret is rotated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct WebhookWithSecret {
    pub endpoint: WebhookEndpointView,
    pub secret: String,
}

/// One event sent (or being sent) to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct WebhookDeliveryView {
    pub id: i64,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub message_id: String,
    pub event: WebhookEvent,
    /// `pending` (being sent or waiting to retry), `succeeded` (a 2xx answer) or `failed`
    /// (no attempt left; Redeliver sends it again).
    pub status: String,
    /// Attempts to send, answered or not, over every redelivery (a URL refused for what
    /// it is, such as a private address, is none).
    pub attempts: i64,
    /// The last answer's HTTP status, if one came.
    pub response_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// The JSON body sent.
    pub payload: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Scene images.
    Media,
    /// Scene narration.
    Tts,
    /// The content's video, from every scene's picture and narration.
    Render,
    /// Stock footage for scenes (Pexels, Pixabay).
    Footage,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Media => "media",
            JobKind::Tts => "tts",
            JobKind::Render => "render",
            JobKind::Footage => "footage",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "media" => Some(JobKind::Media),
            "tts" => Some(JobKind::Tts),
            "render" => Some(JobKind::Render),
            "footage" => Some(JobKind::Footage),
            _ => None,
        }
    }
}

/// Scenes of one content to make images or narration for; all of them when `scene_ids`
/// is left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MediaRequest {
    pub content_id: i64,
    #[serde(default)]
    pub scene_ids: Option<Vec<i64>>,
    /// Render the video once every scene has its picture and narration.
    #[serde(default, deserialize_with = "null_as_default")]
    pub render_after: bool,
}

/// Every scene of several contents, in one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub content_ids: Vec<i64>,
    /// Render each content's video once all its scenes are ready.
    #[serde(default, deserialize_with = "null_as_default")]
    pub render_after: bool,
}

/// Most contents one batch may cover.
pub const BATCH_CONTENTS_MAX: usize = 50;

/// Which jobs to list; every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub content_id: Option<i64>,
}

pub const JOB_STATUSES: [&str; 5] = ["queued", "processing", "completed", "failed", "cancelled"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub content_id: Option<i64>,
    pub status: String,
    pub progress: i64,
    pub stage: String,
    pub stage_message: String,
    pub error: Option<String>,
    pub total_tasks: i64,
    pub done_tasks: i64,
    pub failed_tasks: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// While the job waits for a free slot: how many tasks of its kind are queued ahead of
    /// its first waiting task.
    pub queue_ahead: Option<i64>,
    /// The contents a batch job covers (one for other jobs).
    pub content_ids: Vec<i64>,
    /// The content's title, for a one-content job.
    pub content_title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TaskView {
    pub id: i64,
    pub kind: String,
    pub scene_id: Option<i64>,
    pub status: String,
    pub attempt: i64,
    pub max_attempts: i64,
    /// What the creator is told when the task failed: a plain message.
    pub last_error: Option<String>,
    /// For admins only (absent otherwise): the failure's detail, such as a tool's own
    /// words or the database's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    pub output_asset_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobDetail {
    pub job: JobView,
    pub tasks: Vec<TaskView>,
}

/// A voice a content can be narrated in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct VoiceOption {
    /// What `voice` takes: the provider's voice name (`alloy`, `af_bella`), or offline an
    /// espeak-ng voice with its variant (`fr+f3`).
    pub id: String,
    /// How people call it: `Alloy`, `French: Alex (male)`.
    pub label: String,
}

/// The voices narration can use now, with what the list comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct VoiceList {
    /// `builtin` (espeak-ng, offline) or `openai` (the speech endpoint in Settings).
    pub provider: String,
    /// `espeak-ng` (its voice variants for the language), `provider` (the endpoint's own
    /// `GET /audio/voices`, as Kokoro-FastAPI serves) or `known` (OpenAI's documented
    /// voices, for endpoints without a list).
    pub source: String,
    pub voices: Vec<VoiceOption>,
    /// The admin's default voice (Settings).
    pub default_voice: String,
    /// The admin's default speed (Settings).
    pub default_speed: f64,
}

/// A content's transition between scenes; the next render uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TransitionUpdate {
    pub transition: Transition,
}

/// A content's voice and speed; narration made after the change uses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VoiceUpdate {
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 100))]
    pub voice: String,
    /// 0.25–4.0; absent or null: the admin's default. Offline, espeak-ng's 80–450 words a
    /// minute bound it to about 0.46–2.6.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", schema(minimum = 0.25, maximum = 4.0))]
    pub speed: Option<f64>,
}
