//! The OpenAI-compatible script provider: one chat completion with a JSON-schema
//! structured output, through async-openai, against whatever base URL the admin set
//! (OpenAI, Azure, Ollama, vLLM, LM Studio, OpenRouter, ...).
//!
//! The creator is waiting on this call, so it never retries on its own: a rate limit or
//! timeout is reported at once, with the provider's `Retry-After`, for the creator to act on.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequestArgs, FinishReason, ResponseFormat, ResponseFormatJsonSchema,
};
use serde::Deserialize;

use crate::error::{AppError, ErrorCode};
use crate::model::{limits, Presets, SceneDraft, SettingsValues};

/// What the model must return; mirrors `SCRIPT_SCHEMA`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptOut {
    pub title: String,
    pub hook: String,
    pub scenes: Vec<SceneDraft>,
    pub description: String,
    pub hashtags: Vec<String>,
}

pub fn script_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["title", "hook", "scenes", "description", "hashtags"],
        "properties": {
            "title": { "type": "string", "description": "Short, catchy video title" },
            "hook": { "type": "string", "description": "The opening line that grabs attention" },
            "scenes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["narration", "visual_prompt", "seconds"],
                    "properties": {
                        "narration": { "type": "string", "description": "What the narrator says in this scene" },
                        "visual_prompt": { "type": "string", "description": "A prompt for an image model describing the scene's picture" },
                        "seconds": { "type": "number", "description": "Planned duration of the scene in seconds" }
                    }
                }
            },
            "description": { "type": "string", "description": "Video description for the upload page" },
            "hashtags": { "type": "array", "items": { "type": "string" } }
        }
    })
}

pub struct LlmRequest<'a> {
    pub settings: &'a SettingsValues,
    pub api_key: &'a str,
    pub topic: &'a str,
    pub presets: &'a Presets,
}

fn system_prompt() -> &'static str {
    "You write scripts for short narrated videos. Answer with one JSON object that matches \
     the given schema and nothing else. Each scene has the narrator's words, a visual prompt \
     an image model can draw (no text in the image), and its planned duration in seconds. \
     Write the narration, title, hook, description and hashtags in the requested language."
}

fn user_prompt(topic: &str, p: &Presets) -> String {
    format!(
        "Topic: {topic}\nLanguage: {}\nTone: {}\nTarget length: {} seconds\nScenes: {}\n\
         Aspect ratio: {}\nVisual style: {}\n\nWrite exactly {} scenes whose durations add up to \
         about {} seconds. Narration is spoken at about 150 words per minute.",
        p.language,
        p.tone,
        p.target_seconds,
        p.scene_count,
        p.aspect_ratio,
        p.visual_style,
        p.scene_count,
        p.target_seconds
    )
}

pub async fn generate(http: &reqwest::Client, req: LlmRequest<'_>) -> Result<ScriptOut, AppError> {
    let s = req.settings;
    let timeout = Duration::from_secs(u64::from(s.llm_timeout_secs));
    let limit = super::openai::AnswerLimit {
        what: "chat answer",
        max_bytes: super::openai::JSON_ANSWER_MAX_BYTES,
    };
    let (client, seen) = super::openai::client(http, &s.llm_base_url, req.api_key, timeout, limit);

    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestSystemMessageArgs::default()
            .content(system_prompt())
            .build()
            .map_err(bad_args)?
            .into(),
        ChatCompletionRequestUserMessageArgs::default()
            .content(user_prompt(req.topic, req.presets))
            .build()
            .map_err(bad_args)?
            .into(),
    ];

    // One repair attempt: the model sees its own answer and what was wrong with it.
    for attempt in 0..2 {
        let response_format = if s.llm_json_schema {
            ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("A short narrated video script split into scenes".into()),
                    name: "video_script".into(),
                    schema: script_schema(),
                    strict: Some(true),
                },
            }
        } else {
            ResponseFormat::JsonObject
        };
        let request = CreateChatCompletionRequestArgs::default()
            .model(s.llm_model.clone())
            .messages(messages.clone())
            .temperature(s.llm_temperature as f32)
            .response_format(response_format)
            .build()
            .map_err(bad_args)?;
        let response = client.chat().create(request).await;
        let seen_now = seen.get();
        let response = response.map_err(|e| map_error(e, seen_now, s, req.api_key))?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(AppError::new(
                ErrorCode::ProviderMalformed,
                "The model returned no answer at all.",
            ));
        };
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
            return Err(AppError::new(
                ErrorCode::ProviderRefused,
                format!("The model declined to write this script: {refusal}"),
            ));
        }
        if choice.finish_reason == Some(FinishReason::ContentFilter) {
            return Err(AppError::new(
                ErrorCode::ProviderRefused,
                "The provider's content filter stopped the answer. Rephrase the topic and try again.",
            ));
        }
        let content = choice.message.content.unwrap_or_default();
        match parse_script(&content, req.presets) {
            Ok(script) => return Ok(script),
            Err(problem) if attempt == 0 => {
                tracing::warn!(%problem, "model output did not match the script schema; asking for a repair");
                messages.push(ChatCompletionRequestAssistantMessageArgs::default().content(content).build().map_err(bad_args)?.into());
                messages.push(
                    ChatCompletionRequestUserMessageArgs::default()
                        .content(format!(
                            "That answer was not valid: {problem}. Reply again with only the JSON object, \
                             matching the schema exactly."
                        ))
                        .build()
                        .map_err(bad_args)?
                        .into(),
                );
            }
            Err(problem) => {
                return Err(AppError::new(
                    ErrorCode::ProviderMalformed,
                    format!(
                        "The model's answer was not a usable script, even after asking it to fix it ({problem}). \
                         Try again, or choose a model that supports structured output."
                    ),
                ))
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

fn bad_args(e: OpenAIError) -> AppError {
    super::error::internal("building a chat request", e)
}

/// Parses and checks the model's JSON. The error says what was wrong, in words the model
/// (for the repair) and the creator can both read.
pub fn parse_script(content: &str, presets: &Presets) -> Result<ScriptOut, String> {
    let trimmed = content.trim();
    // Some servers wrap JSON in a Markdown fence despite response_format.
    let json = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(trimmed);
    let mut out: ScriptOut =
        serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    if out.title.trim().is_empty() {
        return Err("the title is empty".into());
    }
    if out.scenes.is_empty() {
        return Err("there are no scenes".into());
    }
    if out.scenes.len() > limits::SCENE_COUNT_MAX as usize {
        return Err(format!(
            "there are {} scenes, more than {}",
            out.scenes.len(),
            limits::SCENE_COUNT_MAX
        ));
    }
    if let Some(i) = out
        .scenes
        .iter()
        .position(|s| s.narration.trim().is_empty())
    {
        return Err(format!("scene {} has no narration", i + 1));
    }
    let fallback = f64::from(presets.target_seconds) / out.scenes.len() as f64;
    for scene in &mut out.scenes {
        scene.narration = clip(scene.narration.trim(), limits::NARRATION_MAX_CHARS);
        scene.visual_prompt = clip(scene.visual_prompt.trim(), limits::VISUAL_PROMPT_MAX_CHARS);
        if !(scene.seconds.is_finite() && scene.seconds > 0.0) {
            scene.seconds = fallback;
        }
        scene.seconds = (scene.seconds.clamp(1.0, limits::SCENE_SECONDS_MAX) * 10.0).round() / 10.0;
    }
    out.title = clip(out.title.trim(), limits::TITLE_MAX_CHARS);
    out.hook = clip(out.hook.trim(), limits::NARRATION_MAX_CHARS);
    out.description = clip(out.description.trim(), limits::DESCRIPTION_MAX_CHARS);
    out.hashtags = out
        .hashtags
        .iter()
        .map(|h| h.trim().trim_start_matches('#').replace(' ', ""))
        .filter(|h| !h.is_empty())
        .take(limits::HASHTAGS_MAX)
        .map(|h| format!("#{}", clip(&h, limits::SHORT_TEXT_MAX_CHARS - 1)))
        .collect();
    Ok(out)
}

pub fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn map_error(
    err: OpenAIError,
    seen: super::openai::Seen,
    s: &SettingsValues,
    key: &str,
) -> AppError {
    // Asking again would get the same answer.
    if let Some(too_large) = super::openai::TooLarge::of(&err) {
        return AppError::new(
            ErrorCode::ProviderMalformed,
            format!(
                "The provider's {} is larger than {}, the most CREVID accepts. Check the base URL and model in Settings.",
                too_large.what,
                super::openai::size_text(too_large.max_bytes)
            ),
        );
    }
    let status = match &err {
        OpenAIError::ApiError(api) => Some(api.status_code.as_u16()),
        _ => seen.status.filter(|code| *code >= 400),
    };
    let provider_message = match &err {
        // Providers echo parts of a bad key in their messages; keep every trace of it out.
        OpenAIError::ApiError(api) => scrub(&api.api_error.message, key),
        _ => String::new(),
    };
    let quota = matches!(&err, OpenAIError::ApiError(api) if api.api_error.r#type.as_deref() == Some("insufficient_quota"));
    match (status, &err) {
        (Some(401 | 403), _) => AppError::new(
            ErrorCode::ProviderAuth,
            format!("The provider at {} rejected the API key. Check the key in Settings.", s.llm_base_url),
        ),
        (Some(429), _) if quota => AppError::new(
            ErrorCode::ProviderAuth,
            "The provider account has no quota left. Check its billing, or use another key in Settings.",
        ),
        (Some(429), _) => {
            let mut e = AppError::new(
                ErrorCode::ProviderRateLimited,
                match seen.retry_after {
                    Some(secs) => format!("The provider is rate limiting requests. Try again in {secs} s."),
                    None => "The provider is rate limiting requests. Try again in a minute.".to_owned(),
                },
            );
            e.retry_after_secs = Some(seen.retry_after.unwrap_or(60));
            e
        }
        (Some(code @ (400 | 404 | 422)), _) => AppError::new(
            ErrorCode::ProviderBadRequest,
            format!(
                "The provider rejected the request ({code}){}. Check the model name and endpoint in Settings.",
                if provider_message.is_empty() { String::new() } else { format!(": {provider_message}") }
            ),
        ),
        (Some(code), _) if code >= 500 => AppError::new(
            ErrorCode::ProviderUnavailable,
            format!("The provider failed on its side ({code}). Try again shortly."),
        ),
        (_, OpenAIError::Reqwest(e)) if e.is_timeout() => AppError::new(
            ErrorCode::ProviderTimeout,
            format!(
                "The model did not answer within {} s. Try again, or raise the timeout in Settings.",
                s.llm_timeout_secs
            ),
        ),
        (_, OpenAIError::Reqwest(e)) if e.is_connect() => AppError::new(
            ErrorCode::ProviderUnavailable,
            format!("Cannot reach the provider at {}. Check the base URL in Settings.", s.llm_base_url),
        ),
        (_, OpenAIError::JSONDeserialize(..)) => AppError::new(
            ErrorCode::ProviderMalformed,
            format!(
                "The endpoint at {} did not answer like an OpenAI-compatible API. Check the base URL in Settings.",
                s.llm_base_url
            ),
        ),
        _ => {
            tracing::warn!(error = %scrub(&err.to_string(), key), "language model call failed");
            AppError::new(ErrorCode::ProviderUnavailable, "The provider could not be reached. Try again shortly.")
        }
    }
}

/// Removes the key, and any run of 6+ of its characters, from a provider's text.
pub fn scrub(text: &str, key: &str) -> String {
    let mut out = text.to_owned();
    if key.len() >= 6 {
        out = out.replace(key, "[key]");
        let chars: Vec<char> = key.chars().collect();
        for window in (6..chars.len()).rev() {
            for start in 0..=chars.len() - window {
                let part: String = chars[start..start + window].iter().collect();
                if out.contains(&part) {
                    out = out.replace(&part, "[key]");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presets() -> Presets {
        Presets {
            language: "English".into(),
            tone: "fun".into(),
            target_seconds: 30,
            scene_count: 3,
            aspect_ratio: "9:16".into(),
            visual_style: "flat".into(),
            voice: "alloy".into(),
        }
    }

    #[test]
    fn parses_fenced_json_and_normalises() {
        let text = "```json\n{\"title\":\" T \",\"hook\":\"h\",\"scenes\":[{\"narration\":\"a\",\"visual_prompt\":\"b\",\"seconds\":-1}],\"description\":\"d\",\"hashtags\":[\"x y\",\"#z\"]}\n```";
        let out = parse_script(text, &presets()).unwrap();
        assert_eq!(out.title, "T");
        assert_eq!(out.scenes[0].seconds, 30.0);
        assert_eq!(out.hashtags, vec!["#xy", "#z"]);
    }

    #[test]
    fn rejects_scripts_without_scenes() {
        let err = parse_script(
            r#"{"title":"t","hook":"h","scenes":[],"description":"","hashtags":[]}"#,
            &presets(),
        )
        .unwrap_err();
        assert!(err.contains("no scenes"));
        assert!(parse_script("not json", &presets())
            .unwrap_err()
            .starts_with("invalid JSON"));
    }

    #[test]
    fn scrubs_key_fragments() {
        let key = "sk-proj-abcdefghijkl";
        let text = "Incorrect API key provided: sk-proj-****ijkl and sk-proj-abcdefghijkl";
        let out = scrub(text, key);
        assert!(!out.contains("sk-proj-abcdefghijkl"));
        assert!(!out.contains("sk-proj-"));
    }
}
