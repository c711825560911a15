//! Settings: one JSON document of values plus sealed secrets, in the `settings` table.

use sqlx::AnyPool;

use super::crypto;
use super::db::now_ms;
use super::error::DbResultExt;
use super::state::AppState;
use super::validate;
use crate::error::AppError;
use crate::model::{
    limits, SettingsUpdate, SettingsValues, SettingsView, StockProvider, ASPECT_RATIOS,
};

const VALUES_KEY: &str = "values";
const LLM_KEY: &str = "secret.llm_api_key";

async fn read(pool: &AnyPool, key: &str) -> Result<Option<String>, AppError> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .db("reading settings")
}

async fn write<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    pool: E,
    key: &str,
    value: &str,
) -> Result<(), AppError> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(value)
    .bind(now_ms())
    .execute(pool)
    .await
    .db("writing settings")?;
    Ok(())
}

async fn remove<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    pool: E,
    key: &str,
) -> Result<(), AppError> {
    sqlx::query("DELETE FROM settings WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await
        .db("removing a setting")?;
    Ok(())
}

pub async fn values(state: &AppState) -> Result<SettingsValues, AppError> {
    Ok(parse(read(state.pool(), VALUES_KEY).await?.as_deref()))
}

fn parse(stored: Option<&str>) -> SettingsValues {
    match stored {
        // A document written by another version may not parse; its defaults still work.
        Some(json) => serde_json::from_str(json).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored settings do not parse; using defaults");
            SettingsValues::default()
        }),
        None => SettingsValues::default(),
    }
}

/// One OpenAI-compatible capability, each with its own endpoint and key in Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Script,
    Images,
    Speech,
    /// Word timestamps of provider narration, for captions; defaults to the speech
    /// endpoint rather than the script's.
    Transcription,
    /// Stock footage searches (not OpenAI-compatible; never the script's key).
    Pexels,
    Pixabay,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Script,
        Capability::Images,
        Capability::Speech,
        Capability::Transcription,
        Capability::Pexels,
        Capability::Pixabay,
    ];

    pub fn of_stock(provider: StockProvider) -> Self {
        match provider {
            StockProvider::Pexels => Capability::Pexels,
            StockProvider::Pixabay => Capability::Pixabay,
        }
    }

    fn is_stock(self) -> bool {
        matches!(self, Capability::Pexels | Capability::Pixabay)
    }

    /// Where its sealed key is stored.
    fn secret(self) -> &'static str {
        match self {
            Capability::Script => LLM_KEY,
            Capability::Images => "secret.image_api_key",
            Capability::Speech => "secret.tts_api_key",
            Capability::Transcription => "secret.transcription_api_key",
            Capability::Pexels => "secret.pexels_api_key",
            Capability::Pixabay => "secret.pixabay_api_key",
        }
    }

    /// Its own base URL as set; empty for the media capabilities means the script's.
    fn own_base_url(self, v: &SettingsValues) -> &str {
        match self {
            Capability::Script => &v.llm_base_url,
            Capability::Images => &v.image_base_url,
            Capability::Speech => &v.tts_base_url,
            Capability::Transcription => &v.transcription_base_url,
            Capability::Pexels => &v.pexels_base_url,
            Capability::Pixabay => &v.pixabay_base_url,
        }
    }
}

/// The stored keys, decrypted, one per [`Capability`] (in `Capability::ALL`'s order).
#[derive(Debug, Clone, Default)]
pub struct Keys([Option<String>; 6]);

impl Keys {
    fn get(&self, capability: Capability) -> Option<&str> {
        self.0[capability as usize].as_deref()
    }
}

/// Where a capability's requests go, and with which key.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub base_url: String,
    /// Empty when none applies: requests then carry an empty bearer token, which local
    /// servers (Ollama, Kokoro-FastAPI, LocalAI) ignore.
    pub api_key: String,
    /// The endpoint is the script's and no key is stored for it (the script's endpoint
    /// always needs one): the task says so instead of asking.
    pub key_missing: bool,
}

/// The endpoint for `capability`: its own base URL and key when set; with no base URL of
/// its own, the script's with the script's key. An own endpoint without an own key uses
/// the script's key only on the script's origin (a key is never sent to another host).
pub fn endpoint(values: &SettingsValues, keys: &Keys, capability: Capability) -> Endpoint {
    let own = capability.own_base_url(values).trim();
    if capability == Capability::Transcription && own.is_empty() {
        return endpoint(values, keys, Capability::Speech);
    }
    let script_key = keys.get(Capability::Script);
    if capability == Capability::Script || own.is_empty() {
        return Endpoint {
            base_url: values.llm_base_url.clone(),
            api_key: script_key.unwrap_or_default().to_owned(),
            key_missing: script_key.is_none(),
        };
    }
    let key = keys.get(capability).or_else(|| {
        (!capability.is_stock() && origin(own) == origin(&values.llm_base_url))
            .then_some(script_key)
            .flatten()
    });
    Endpoint {
        base_url: own.to_owned(),
        api_key: key.unwrap_or_default().to_owned(),
        key_missing: false,
    }
}

/// `for_tasks`'s copy of the settings and keys: when it was read, and a generation that
/// every change made here advances.
#[derive(Default)]
pub struct TaskSettingsCache {
    generation: u64,
    read: Option<(std::time::Instant, SettingsValues, Keys)>,
}

/// Settings and keys as background tasks see them: read from the database at most once a
/// second per process (a task would otherwise read them for every scene). A change made
/// here is seen at once; one made by another process within a second.
pub async fn for_tasks(state: &AppState) -> Result<(SettingsValues, Keys), AppError> {
    let generation = match state.task_settings.lock() {
        Ok(cache) => {
            if let Some((read, values, keys)) = cache.read.as_ref() {
                if read.elapsed() < std::time::Duration::from_secs(1) {
                    return Ok((values.clone(), keys.clone()));
                }
            }
            cache.generation
        }
        Err(_) => 0,
    };
    // One statement for all, so a key is never paired with another endpoint's settings.
    let placeholders: Vec<String> = (1..=Capability::ALL.len() + 1)
        .map(|i| format!("${i}"))
        .collect();
    let sql = format!(
        "SELECT key, value FROM settings WHERE key IN ({})",
        placeholders.join(", ")
    );
    let query = Capability::ALL
        .iter()
        .fold(sqlx::query_as(&sql).bind(VALUES_KEY), |q, c| {
            q.bind(c.secret())
        });
    let rows: Vec<(String, String)> = query.fetch_all(state.pool()).await.db("reading settings")?;
    let find = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let values = parse(find(VALUES_KEY));
    let keys = Keys(
        Capability::ALL.map(|c| find(c.secret()).and_then(|sealed| state.secrets.open(sealed))),
    );
    if let Ok(mut cache) = state.task_settings.lock() {
        // A change made while this read was under way may not be in it: keeping it would
        // hide that change for a second.
        if cache.generation == generation {
            cache.read = Some((std::time::Instant::now(), values.clone(), keys.clone()));
        }
    }
    Ok((values, keys))
}

fn forget_cached(state: &AppState) {
    if let Ok(mut cache) = state.task_settings.lock() {
        cache.generation += 1;
        cache.read = None;
    }
}

/// The language-model key, decrypted. Never log or return it.
pub async fn llm_api_key(state: &AppState) -> Result<Option<String>, AppError> {
    stored_key(state, Capability::Script).await
}

async fn stored_key(state: &AppState, capability: Capability) -> Result<Option<String>, AppError> {
    let Some(sealed) = read(state.pool(), capability.secret()).await? else {
        return Ok(None);
    };
    match state.secrets.open(&sealed) {
        Some(key) => Ok(Some(key)),
        None => {
            tracing::warn!(
                secret = capability.secret(),
                "a stored API key cannot be decrypted with the current secret key"
            );
            Ok(None)
        }
    }
}

pub async fn view(state: &AppState) -> Result<SettingsView, AppError> {
    let masked = |key: Option<String>| key.map(|k| crypto::mask(&k));
    Ok(SettingsView {
        values: values(state).await?,
        llm_api_key_masked: masked(stored_key(state, Capability::Script).await?),
        image_api_key_masked: masked(stored_key(state, Capability::Images).await?),
        tts_api_key_masked: masked(stored_key(state, Capability::Speech).await?),
        transcription_api_key_masked: masked(stored_key(state, Capability::Transcription).await?),
        pexels_api_key_masked: masked(stored_key(state, Capability::Pexels).await?),
        pixabay_api_key_masked: masked(stored_key(state, Capability::Pixabay).await?),
    })
}

pub fn validate(v: SettingsValues) -> Result<SettingsValues, AppError> {
    let short = limits::SHORT_TEXT_MAX_CHARS;
    Ok(SettingsValues {
        llm_base_url: validate::http_url("values.llm_base_url", &v.llm_base_url)?,
        llm_model: validate::text("values.llm_model", &v.llm_model, 1, short)?,
        llm_temperature: match v.llm_temperature {
            Some(t) => Some(validate::range_f64("values.llm_temperature", t, 0.0, 2.0)?),
            None => None,
        },
        llm_timeout_secs: validate::range_u32(
            "values.llm_timeout_secs",
            v.llm_timeout_secs,
            1,
            600,
        )?,
        llm_json_schema: v.llm_json_schema,
        default_language: validate::text("values.default_language", &v.default_language, 1, short)?,
        default_tone: validate::text("values.default_tone", &v.default_tone, 1, short)?,
        default_target_seconds: validate::range_u32(
            "values.default_target_seconds",
            v.default_target_seconds,
            limits::TARGET_SECONDS_MIN,
            limits::TARGET_SECONDS_MAX,
        )?,
        default_scene_count: validate::range_u32(
            "values.default_scene_count",
            v.default_scene_count,
            limits::SCENE_COUNT_MIN,
            limits::SCENE_COUNT_MAX,
        )?,
        default_aspect_ratio: validate::one_of(
            "values.default_aspect_ratio",
            &v.default_aspect_ratio,
            &ASPECT_RATIOS,
        )?,
        default_visual_style: validate::text(
            "values.default_visual_style",
            &v.default_visual_style,
            1,
            short,
        )?,
        default_voice: validate::text("values.default_voice", &v.default_voice, 1, short)?,
        rate_generate_per_minute: validate::range_u32(
            "values.rate_generate_per_minute",
            v.rate_generate_per_minute,
            1,
            10_000,
        )?,
        rate_jobs_per_minute: validate::range_u32(
            "values.rate_jobs_per_minute",
            v.rate_jobs_per_minute,
            1,
            10_000,
        )?,
        storage_quota_mb: validate::range_u32(
            "values.storage_quota_mb",
            v.storage_quota_mb,
            0,
            10_000_000,
        )?,
        allowed_private_addresses: super::outbound::parse_ranges(&v.allowed_private_addresses)
            .map(|ranges| {
                ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .map_err(|bad| {
                AppError::validation(
                    "values.allowed_private_addresses",
                    format!("{bad:?} is not an address range like 192.168.1.0/24 or fd00::/8"),
                )
            })?,
        image_provider: validate::one_of("values.image_provider", &v.image_provider, &PROVIDERS)?,
        image_base_url: optional_url("values.image_base_url", &v.image_base_url)?,
        image_model: validate::text("values.image_model", &v.image_model, 1, short)?,
        image_size: image_size("values.image_size", &v.image_size)?,
        image_quality: validate::one_of(
            "values.image_quality",
            &v.image_quality,
            &[
                "auto", "low", "medium", "high", "xhigh", "max", "standard", "hd",
            ],
        )?,
        image_concurrency: validate::range_u32(
            "values.image_concurrency",
            v.image_concurrency,
            1,
            64,
        )?,
        image_per_minute: validate::range_u32(
            "values.image_per_minute",
            v.image_per_minute,
            0,
            100_000,
        )?,
        tts_provider: validate::one_of("values.tts_provider", &v.tts_provider, &PROVIDERS)?,
        tts_base_url: optional_url("values.tts_base_url", &v.tts_base_url)?,
        transcription_model: validate::text(
            "values.transcription_model",
            &v.transcription_model,
            0,
            short,
        )?,
        transcription_base_url: optional_url(
            "values.transcription_base_url",
            &v.transcription_base_url,
        )?,
        tts_model: validate::text("values.tts_model", &v.tts_model, 1, short)?,
        tts_speed: validate::range_f64("values.tts_speed", v.tts_speed, 0.25, 4.0)?,
        tts_concurrency: validate::range_u32("values.tts_concurrency", v.tts_concurrency, 1, 64)?,
        tts_per_minute: validate::range_u32("values.tts_per_minute", v.tts_per_minute, 0, 100_000)?,
        media_timeout_secs: validate::range_u32(
            "values.media_timeout_secs",
            v.media_timeout_secs,
            5,
            900,
        )?,
        render_concurrency: validate::range_u32(
            "values.render_concurrency",
            v.render_concurrency,
            1,
            8,
        )?,
        video_height: match v.video_height {
            720 | 1080 => v.video_height,
            other => {
                return Err(AppError::validation(
                    "values.video_height",
                    format!("values.video_height must be 720 or 1080 (got {other})"),
                ))
            }
        },
        video_pause_ms: validate::range_u32("values.video_pause_ms", v.video_pause_ms, 0, 5_000)?,
        video_subtitles: v.video_subtitles,
        video_motion: v.video_motion,
        video_fade_ms: validate::range_u32("values.video_fade_ms", v.video_fade_ms, 0, 1_000)?,
        subtitle_size: validate::range_u32("values.subtitle_size", v.subtitle_size, 50, 200)?,
        subtitle_colour: colour("values.subtitle_colour", &v.subtitle_colour)?,
        subtitle_outline: validate::range_u32("values.subtitle_outline", v.subtitle_outline, 0, 6)?,
        subtitle_position: validate::one_of(
            "values.subtitle_position",
            &v.subtitle_position,
            &["bottom", "middle", "top"],
        )?,
        caption_style: validate::one_of(
            "values.caption_style",
            &v.caption_style,
            &super::captions::STYLES,
        )?,
        caption_highlight_colour: colour(
            "values.caption_highlight_colour",
            &v.caption_highlight_colour,
        )?,
        music_volume: validate::range_u32("values.music_volume", v.music_volume, 0, 100)?,
        pexels_base_url: validate::http_url("values.pexels_base_url", &v.pexels_base_url)?,
        pixabay_base_url: validate::http_url("values.pixabay_base_url", &v.pixabay_base_url)?,
    })
}

const PROVIDERS: [&str; 2] = ["builtin", "openai"];

/// Empty (the script's endpoint), or an http(s) URL.
fn optional_url(field: &str, value: &str) -> Result<String, AppError> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    validate::http_url(field, value)
}

/// `#RRGGBB`, upper-cased.
fn colour(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    match value.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(value.to_uppercase())
        }
        _ => Err(AppError::validation(
            field,
            format!("{field} must be a colour like #FFFFFF (got {value:?})"),
        )),
    }
}

/// `auto`, or `WxH` with both sides between 64 and 4096.
fn image_size(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    if value == "auto" {
        return Ok(value.to_owned());
    }
    let parsed = value
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| (64..=4096).contains(w) && (64..=4096).contains(h));
    match parsed {
        Some((w, h)) => Ok(format!("{w}x{h}")),
        None => Err(AppError::validation(
            field,
            format!("{field} must be auto or WIDTHxHEIGHT, e.g. 1024x1536 (got {value:?})"),
        )),
    }
}

/// Applies the given fields over the current values. When the endpoint's origin changes
/// and no new key comes with it, the stored key is dropped: a key is only ever sent to the
/// host it was entered for.
#[tracing::instrument(name = "settings.update", skip_all)]
pub async fn update(state: &AppState, update: SettingsUpdate) -> Result<SettingsView, AppError> {
    let current = values(state).await?;
    let mut merged = serde_json::to_value(&current)
        .map_err(|e| super::error::internal("encoding settings", e))?;
    let known = merged.as_object().cloned().unwrap_or_default();
    for (field, value) in update.values {
        if !known.contains_key(&field) {
            return Err(AppError::validation(
                &format!("values.{field}"),
                format!("values.{field} is not a setting"),
            ));
        }
        merged[&field] = value;
        // Parsed after each field, so a value of the wrong type is named.
        if let Err(e) = serde_json::from_value::<SettingsValues>(merged.clone()) {
            return Err(AppError::validation(
                &format!("values.{field}"),
                format!("values.{field}: {e}"),
            ));
        }
    }
    let parsed: SettingsValues =
        serde_json::from_value(merged).map_err(|e| super::error::internal("settings", e))?;
    let new_values = validate(parsed)?;
    let given = |c: Capability| match c {
        Capability::Script => update.llm_api_key.as_deref(),
        Capability::Images => update.image_api_key.as_deref(),
        Capability::Speech => update.tts_api_key.as_deref(),
        Capability::Transcription => update.transcription_api_key.as_deref(),
        Capability::Pexels => update.pexels_api_key.as_deref(),
        Capability::Pixabay => update.pixabay_api_key.as_deref(),
    };
    let mut key_changes = Vec::new();
    for capability in Capability::ALL {
        let field = capability.secret().trim_start_matches("secret.");
        let old_url = endpoint_url(&current, capability);
        let new_url = endpoint_url(&new_values, capability);
        let own_url = capability.own_base_url(&new_values).trim().is_empty();
        let change = match given(capability).map(str::trim) {
            Some("") => Some(None),
            // It would never be used: without an endpoint of its own, the capability
            // uses the script's (or, for transcription, the narration's) key.
            Some(_) if capability != Capability::Script && own_url => {
                let base = match capability {
                    Capability::Images => "image_base_url",
                    Capability::Speech => "tts_base_url",
                    _ => "transcription_base_url",
                };
                return Err(AppError::validation(
                    field,
                    format!(
                        "{field} is used only with an endpoint of its own: set values.{base} too"
                    ),
                ));
            }
            // A line break or other control character cannot go into an HTTP header.
            Some(k) if k.chars().any(char::is_control) => {
                return Err(AppError::validation(
                    field,
                    format!(
                        "{field} must not contain line breaks, tabs or other control characters"
                    ),
                ))
            }
            Some(k) => Some(Some(validate::text(field, k, 1, 500)?)),
            None if origin(&new_url) != origin(&old_url) => Some(None),
            None => None,
        };
        if let Some(change) = change {
            key_changes.push((capability, change));
        }
    }
    let json = serde_json::to_string(&new_values)
        .map_err(|e| super::error::internal("encoding settings", e))?;
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    write(&mut *tx, VALUES_KEY, &json).await?;
    for (capability, change) in key_changes {
        match change {
            Some(k) => write(&mut *tx, capability.secret(), &state.secrets.seal(&k)).await?,
            None => remove(&mut *tx, capability.secret()).await?,
        }
    }
    tx.commit().await.db("committing settings")?;
    forget_cached(state);
    // A lowered limit holds in QStash at once, not only for messages published from now.
    super::qstash::sync_flow_control(state).await;
    view(state).await
}

/// The URL a capability's own key is tied to: its own base URL, or the script's.
fn endpoint_url(values: &SettingsValues, capability: Capability) -> String {
    match capability.own_base_url(values).trim() {
        "" if capability == Capability::Transcription => endpoint_url(values, Capability::Speech),
        "" => values.llm_base_url.clone(),
        own => own.to_owned(),
    }
}

fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Back to the defaults. The stored key is kept while the endpoint stays the same host,
/// so resetting models and presets does not make an admin paste the key again.
pub async fn reset(state: &AppState) -> Result<SettingsView, AppError> {
    let current = values(state).await?;
    let defaults = SettingsValues::default();
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    remove(&mut *tx, VALUES_KEY).await?;
    for capability in Capability::ALL {
        if origin(&endpoint_url(&current, capability))
            != origin(&endpoint_url(&defaults, capability))
        {
            remove(&mut *tx, capability.secret()).await?;
        }
    }
    tx.commit().await.db("committing settings")?;
    forget_cached(state);
    // A lowered limit holds in QStash at once, not only for messages published from now.
    super::qstash::sync_flow_control(state).await;
    view(state).await
}
