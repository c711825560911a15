//! Script generation, the direct path: the creator waits for the answer.

use super::auth::CurrentUser;
use super::limits::Bucket;
use super::state::AppState;
use super::{llm, settings, splitter, validate};
use crate::error::{AppError, ErrorCode};
use crate::model::{
    limits, GenerateRequest, GeneratedScript, Mode, Presets, PresetsInput, SettingsValues,
    ASPECT_RATIOS,
};

/// Fills every missing preset from the admin's defaults and checks the ones given.
/// `prefix` is the JSON path of the presets object, for error messages.
pub fn resolve_presets(
    input: &PresetsInput,
    defaults: &SettingsValues,
    prefix: &str,
) -> Result<Presets, AppError> {
    let f = |name: &str| format!("{prefix}.{name}");
    let short = limits::SHORT_TEXT_MAX_CHARS;
    let text = |name: &str, given: &Option<String>, default: &str| match given {
        Some(v) => validate::text(&f(name), v, 1, short),
        None => Ok(default.to_owned()),
    };
    Ok(Presets {
        language: text("language", &input.language, &defaults.default_language)?,
        tone: text("tone", &input.tone, &defaults.default_tone)?,
        target_seconds: validate::range_u32(
            &f("target_seconds"),
            input
                .target_seconds
                .unwrap_or(defaults.default_target_seconds),
            limits::TARGET_SECONDS_MIN,
            limits::TARGET_SECONDS_MAX,
        )?,
        scene_count: validate::range_u32(
            &f("scene_count"),
            input.scene_count.unwrap_or(defaults.default_scene_count),
            limits::SCENE_COUNT_MIN,
            limits::SCENE_COUNT_MAX,
        )?,
        aspect_ratio: validate::one_of(
            &f("aspect_ratio"),
            input
                .aspect_ratio
                .as_deref()
                .unwrap_or(&defaults.default_aspect_ratio),
            &ASPECT_RATIOS,
        )?,
        visual_style: text(
            "visual_style",
            &input.visual_style,
            &defaults.default_visual_style,
        )?,
        voice: text("voice", &input.voice, &defaults.default_voice)?,
        // Left out, the admin's default applies when narrating, whatever it is by then.
        speed: input
            .speed
            .map(|s| validate::range_f64(&f("speed"), s, limits::SPEED_MIN, limits::SPEED_MAX))
            .transpose()?,
        transition: input.transition.unwrap_or_default(),
    })
}

impl From<&Presets> for PresetsInput {
    fn from(p: &Presets) -> Self {
        PresetsInput {
            language: Some(p.language.clone()),
            tone: Some(p.tone.clone()),
            target_seconds: Some(p.target_seconds),
            scene_count: Some(p.scene_count),
            aspect_ratio: Some(p.aspect_ratio.clone()),
            visual_style: Some(p.visual_style.clone()),
            voice: Some(p.voice.clone()),
            speed: p.speed,
            transition: Some(p.transition),
        }
    }
}

pub fn validate_input(mode: Mode, input: &str) -> Result<String, AppError> {
    match mode {
        Mode::Topic => validate::text(
            "input",
            input,
            limits::TOPIC_MIN_CHARS,
            limits::TOPIC_MAX_CHARS,
        ),
        Mode::Script => validate::text(
            "input",
            input,
            limits::SCRIPT_MIN_CHARS,
            limits::SCRIPT_MAX_CHARS,
        ),
    }
}

#[tracing::instrument(name = "script.generate", skip_all, fields(mode = req.mode.as_str()))]
pub async fn generate(
    state: &AppState,
    user: &CurrentUser,
    req: GenerateRequest,
) -> Result<GeneratedScript, AppError> {
    let defaults = settings::values(state).await?;
    let input = validate_input(req.mode, &req.input)?;
    let mut presets = resolve_presets(&req.presets, &defaults, "presets")?;
    // Not chosen: the language the creator wrote in, when it can be told.
    if req.presets.language.is_none() {
        if let Some(language) = super::text_layout::detect(&input) {
            presets.language = language.to_owned();
        }
    }
    state
        .limits
        .check(
            Bucket::Generate,
            &user.id.to_string(),
            defaults.rate_generate_per_minute,
        )
        .map_err(|secs| AppError::rate_limited("script generations", secs))?;
    let (out, provider) = match req.mode {
        Mode::Topic => {
            let key = settings::llm_api_key(state).await?.ok_or_else(|| {
                AppError::new(
                    ErrorCode::ProviderNotConfigured,
                    "No API key is configured for the language model. An admin can add one in Settings; \
                     meanwhile \"Use my script\" works without one.",
                )
            })?;
            let request = llm::LlmRequest {
                settings: &defaults,
                api_key: &key,
                topic: &input,
                presets: &presets,
            };
            let asked = std::time::Instant::now();
            let answer = llm::generate(state, request).await;
            state.metrics.provider(
                "script",
                &defaults.llm_model,
                answer.is_ok(),
                asked.elapsed(),
            );
            (answer?, format!("openai-compatible:{}", defaults.llm_model))
        }
        Mode::Script => (
            splitter::split(&input, &presets),
            "builtin:splitter".to_owned(),
        ),
    };
    Ok(GeneratedScript {
        title: out.title,
        hook: out.hook,
        scenes: out.scenes,
        description: out.description,
        hashtags: out.hashtags,
        presets,
        provider,
    })
}
