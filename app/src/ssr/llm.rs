//! The OpenAI-compatible script provider: one chat completion through async-openai,
//! against whatever base URL the admin set (OpenAI, Azure, Ollama, vLLM, LM Studio,
//! llama.cpp, LocalAI, DeepSeek, Groq, OpenRouter, ...).
//!
//! Servers bend the API, so the request and the answer are plain JSON (async-openai's
//! "bring your own types"), and only the parts CREVID needs are read:
//! - a refused `response_format` is asked again with the next weaker form (`json_schema`,
//!   `json_object`, then the schema in the prompt), a refused `temperature` without it;
//!   what worked is remembered per endpoint and model (`openai::Learned`);
//! - the script is found in the answer however it is wrapped (`script_answer`), and its
//!   fields are read tolerantly; one repair is asked for when it is still not a script;
//! - when it fails anyway, the creator reads the server's own reason.
//!
//! The creator is waiting on this call, so a rate limit is waited out only when the
//! provider's `Retry-After` is short (at most 5 s, twice); otherwise the 429 is reported at
//! once, with the wait, for the creator to act on.

use std::time::Duration;

use async_openai::error::OpenAIError;
use serde_json::{json, Value};

use super::openai::{ChatFormat, Seen};
use super::script_answer as answer;
use super::state::AppState;
use crate::error::{AppError, ErrorCode};
use crate::model::{limits, Presets, SceneDraft, SettingsValues};

/// A script as the model wrote it, cleaned up; mirrors `script_schema`.
#[derive(Debug, Clone, PartialEq)]
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

fn system_prompt(format: ChatFormat) -> String {
    let mut prompt =
        "You write scripts for short narrated videos. Answer with one JSON object that matches \
     the given schema and nothing else. Each scene has the narrator's words, a visual prompt \
     an image model can draw (no text in the image), and its planned duration in seconds. \
     Write the narration, title, hook, description and hashtags in the requested language."
            .to_owned();
    // Without structured output the schema must be in the words; JSON mode also requires
    // the word "JSON" in the prompt (OpenAI's docs), which this keeps.
    if format != ChatFormat::JsonSchema {
        prompt.push_str("\n\nThe JSON schema:\n");
        prompt.push_str(&script_schema().to_string());
    }
    prompt
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

/// The most requests one generation makes: three formats, with and without temperature,
/// and one repair (plus the ones after a rate limit's wait, [`MAX_WAITS`]).
const MAX_REQUESTS: usize = 6;

/// How many rate limits one generation waits out, each at most [`SHORT_WAIT`].
const MAX_WAITS: usize = 2;

/// The longest `Retry-After` waited out while the creator waits: 5 s. Longer ones are
/// reported with their figure.
const SHORT_WAIT: Duration = Duration::from_secs(5);

/// The wait a 429 asks for, when it is short enough to wait out (not a spent quota).
fn short_rate_limit(err: &OpenAIError, seen: Seen) -> Option<Duration> {
    let status = super::openai::failed_status(err, seen);
    let quota = matches!(err, OpenAIError::ApiError(api) if api.api_error.r#type.as_deref() == Some("insufficient_quota"));
    (status == Some(429) && !quota)
        .then_some(seen.retry_after)
        .flatten()
        .filter(|wait| *wait <= SHORT_WAIT)
}

pub async fn generate(state: &AppState, req: LlmRequest<'_>) -> Result<ScriptOut, AppError> {
    let s = req.settings;
    let timeout = Duration::from_secs(u64::from(s.llm_timeout_secs));
    let limit = super::openai::AnswerLimit {
        what: "chat answer",
        max_bytes: super::openai::JSON_ANSWER_MAX_BYTES,
    };
    let (client, seen) =
        super::openai::client(&state.http, &s.llm_base_url, req.api_key, timeout, limit);
    let learned = state.learned.get(&s.llm_base_url, &s.llm_model);
    let preferred = if s.llm_json_schema {
        ChatFormat::JsonSchema
    } else {
        ChatFormat::JsonObject
    };
    // The admin's choice, or the weaker form this server was found to need.
    let mut format = learned.chat_format.map_or(preferred, |f| f.max(preferred));
    let mut temperature = s.llm_temperature.filter(|_| !learned.no_temperature);
    let mut repair: Option<(String, String)> = None;
    let mut waits = 0;

    for _ in 0..MAX_REQUESTS + MAX_WAITS {
        let mut messages = vec![
            json!({ "role": "system", "content": system_prompt(format) }),
            json!({ "role": "user", "content": user_prompt(req.topic, req.presets) }),
        ];
        if let Some((answer, problem)) = &repair {
            messages.push(json!({ "role": "assistant", "content": answer }));
            messages.push(json!({ "role": "user", "content": format!(
                "That answer was not valid: {problem}. Reply again with only the JSON object, \
                 matching the schema exactly."
            ) }));
        }
        let body = request_body(&s.llm_model, messages, format, temperature);
        let response = client.chat().create_byot::<Value, Value>(body).await;
        let seen_now = seen.get();
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                // A short wait the creator would not notice is waited out, twice at most;
                // a longer one is theirs to decide on.
                if let Some(wait) = short_rate_limit(&err, seen_now).filter(|_| waits < MAX_WAITS) {
                    waits += 1;
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "rate limited; waiting as the provider asks"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let refuses =
                    |parameters: &[&str]| super::openai::refused(&err, seen_now, parameters);
                if temperature.is_some() && refuses(&["temperature"]) {
                    tracing::info!(model = %s.llm_model, "the model refuses temperature; asking without it");
                    temperature = None;
                    state
                        .learned
                        .update(&s.llm_base_url, &s.llm_model, |q| q.no_temperature = true);
                } else if let Some(weaker) = format.weaker().filter(|_| {
                    refuses(&[
                        "response_format",
                        "json_schema",
                        "json_object",
                        "structured output",
                        "json mode",
                    ])
                }) {
                    tracing::info!(model = %s.llm_model, from = format.as_str(), to = weaker.as_str(),
                        "the server refuses this response_format; asking with a weaker one");
                    format = weaker;
                } else {
                    return Err(map_error(err, seen_now, s, req.api_key));
                }
                continue;
            }
        };
        state.learned.update(&s.llm_base_url, &s.llm_model, |q| {
            // Only a fallback is worth remembering: the admin's own choice is tried
            // first anyway, and a changed choice is honoured at once.
            q.chat_format = (format != preferred).then_some(format);
        });
        let content = answer_text(&response, req.api_key)?;
        match parse_script(&content, req.presets, req.topic) {
            Ok(script) => return Ok(script),
            Err(problem) if repair.is_none() => {
                tracing::warn!(%problem, "model output did not hold a script; asking for a repair");
                repair = Some((content, problem));
            }
            Err(problem) => {
                return Err(AppError::new(
                    ErrorCode::ProviderMalformed,
                    format!(
                        "The model's answer was not a usable script, even after asking it to fix it ({problem}). \
                         Try again, or choose a model that follows instructions more closely."
                    ),
                ))
            }
        }
    }
    Err(AppError::new(
        ErrorCode::ProviderBadRequest,
        format!(
            "The server at {} refused every form of the request CREVID knows (with and without \
             response_format and temperature). Check the model name in Settings.",
            s.llm_base_url
        ),
    ))
}

fn request_body(
    model: &str,
    messages: Vec<Value>,
    format: ChatFormat,
    temperature: Option<f64>,
) -> Value {
    let mut body = json!({ "model": model, "messages": messages, "stream": false });
    if let Some(t) = temperature {
        body["temperature"] = json!(t);
    }
    match format {
        ChatFormat::JsonSchema => {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "video_script",
                    "description": "A short narrated video script split into scenes",
                    "schema": script_schema(),
                    "strict": true,
                }
            });
        }
        ChatFormat::JsonObject => body["response_format"] = json!({ "type": "json_object" }),
        ChatFormat::Prompt => {}
    }
    body
}

/// The text of the model's answer: the message's content (a string, or an array of text
/// parts), else its reasoning when a server put everything there. An `error` object in a
/// 200 answer (OpenRouter does this when the upstream fails), a refusal or a content
/// filter stop are errors with the server's words.
fn answer_text(response: &Value, key: &str) -> Result<String, AppError> {
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        let reason = super::openai::reason_in(error).unwrap_or_else(|| error.to_string());
        return Err(AppError::new(
            ErrorCode::ProviderUnavailable,
            format!(
                "The provider reported an error: {}",
                scrub(&clip(&reason, 500), key)
            ),
        ));
    }
    let Some(choice) = response.get("choices").and_then(|c| c.get(0)) else {
        return Err(AppError::new(
            ErrorCode::ProviderMalformed,
            "The model returned no answer at all (no choices).",
        ));
    };
    let message = choice.get("message").unwrap_or(&Value::Null);
    if let Some(refusal) = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
    {
        return Err(AppError::new(
            ErrorCode::ProviderRefused,
            format!("The model declined to write this script: {refusal}"),
        ));
    }
    if choice.get("finish_reason").and_then(Value::as_str) == Some("content_filter") {
        return Err(AppError::new(
            ErrorCode::ProviderRefused,
            "The provider's content filter stopped the answer. Rephrase the topic and try again.",
        ));
    }
    let text_of = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let content = text_of(message.get("content"));
    if !content.trim().is_empty() {
        return Ok(content);
    }
    Ok(["reasoning_content", "reasoning"]
        .iter()
        .map(|field| text_of(message.get(*field)))
        .find(|text| !text.trim().is_empty())
        .unwrap_or_default())
}

/// Finds and checks the script in the model's answer. The error says what was wrong, in
/// words the model (for the repair) and the creator can both read.
pub fn parse_script(content: &str, presets: &Presets, topic: &str) -> Result<ScriptOut, String> {
    let found = answer::find_object(content)?;
    let object = answer::script_object(&found);
    let scenes = answer::scenes(object);
    if scenes.is_empty() {
        return Err("there are no scenes".into());
    }
    if scenes.len() > limits::SCENE_COUNT_MAX as usize {
        return Err(format!(
            "there are {} scenes, more than {}",
            scenes.len(),
            limits::SCENE_COUNT_MAX
        ));
    }
    let fallback = f64::from(presets.target_seconds) / scenes.len() as f64;
    let mut drafts = Vec::with_capacity(scenes.len());
    for (i, scene) in scenes.iter().enumerate() {
        let narration = answer::text(scene, &answer::NARRATION);
        if narration.trim().is_empty() {
            return Err(format!("scene {} has no narration", i + 1));
        }
        let seconds = answer::seconds(scene, &answer::SECONDS)
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(fallback);
        drafts.push(SceneDraft {
            narration: clip(narration.trim(), limits::NARRATION_MAX_CHARS),
            visual_prompt: clip(
                answer::text(scene, &answer::VISUAL_PROMPT).trim(),
                limits::VISUAL_PROMPT_MAX_CHARS,
            ),
            seconds: (seconds.clamp(1.0, limits::SCENE_SECONDS_MAX) * 10.0).round() / 10.0,
        });
    }
    // A script without a title is still a script: the topic names it.
    let title = Some(answer::text(object, &["title"]))
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| topic.to_owned());
    Ok(ScriptOut {
        title: clip(title.trim(), limits::TITLE_MAX_CHARS),
        hook: clip(
            answer::text(object, &["hook"]).trim(),
            limits::NARRATION_MAX_CHARS,
        ),
        scenes: drafts,
        description: clip(
            answer::text(object, &["description"]).trim(),
            limits::DESCRIPTION_MAX_CHARS,
        ),
        hashtags: answer::tags(object, &["hashtags", "tags"])
            .iter()
            .map(|h| h.trim().trim_start_matches('#').replace(' ', ""))
            .filter(|h| !h.is_empty())
            .take(limits::HASHTAGS_MAX)
            .map(|h| format!("#{}", clip(&h, limits::SHORT_TEXT_MAX_CHARS - 1)))
            .collect(),
    })
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
    let status = super::openai::failed_status(&err, seen);
    // Providers echo parts of a bad key in their messages; keep every trace of it out.
    let reason = scrub(&clip(&super::openai::error_reason(&err), 500), key);
    let with_reason = |text: String| {
        if reason.is_empty() {
            format!("{text}.")
        } else {
            format!("{text}: {reason}")
        }
    };
    let quota = matches!(&err, OpenAIError::ApiError(api) if api.api_error.r#type.as_deref() == Some("insufficient_quota"));
    match (status, &err) {
        (Some(code @ (401 | 403)), _) => AppError::new(
            ErrorCode::ProviderAuth,
            with_reason(format!(
                "The provider at {} rejected the API key for scripts, or its access to the model ({code}; check the key and model in Settings)",
                s.llm_base_url
            )),
        ),
        (Some(429), _) if quota => AppError::new(
            ErrorCode::ProviderAuth,
            "The provider account has no quota left. Check its billing, or use another key in Settings.",
        ),
        (Some(429), _) => {
            // Whole seconds for people; a fraction rounds up, never down to "0 s".
            let secs = seen.retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
            let mut e = AppError::new(
                ErrorCode::ProviderRateLimited,
                match secs {
                    Some(secs) => format!("The provider is rate limiting requests. Try again in {secs} s."),
                    None => "The provider is rate limiting requests. Try again in a minute.".to_owned(),
                },
            );
            e.retry_after_secs = Some(secs.unwrap_or(60));
            e
        }
        (Some(code), _) if code >= 500 => AppError::new(
            ErrorCode::ProviderUnavailable,
            with_reason(format!("The provider failed on its side ({code}). Try again shortly")),
        ),
        (Some(code), _) => AppError::new(
            ErrorCode::ProviderBadRequest,
            with_reason(format!(
                "The provider rejected the request ({code}; check the model name and endpoint in Settings)"
            )),
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
            with_reason("The server's answer is not JSON, so it holds no chat completion. It said".into()),
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
            speed: Some(1.0),
            transition: crate::model::Transition::Fade,
        }
    }

    #[test]
    fn parses_fenced_json_and_normalises() {
        let text = "```json\n{\"title\":\" T \",\"hook\":\"h\",\"scenes\":[{\"narration\":\"a\",\"visual_prompt\":\"b\",\"seconds\":-1}],\"description\":\"d\",\"hashtags\":[\"x y\",\"#z\"]}\n```";
        let out = parse_script(text, &presets(), "topic").unwrap();
        assert_eq!(out.title, "T");
        assert_eq!(out.scenes[0].seconds, 30.0);
        assert_eq!(out.hashtags, vec!["#xy", "#z"]);
    }

    #[test]
    fn rejects_scripts_without_scenes() {
        let err = parse_script(
            r#"{"title":"t","hook":"h","scenes":[],"description":"","hashtags":[]}"#,
            &presets(),
            "topic",
        )
        .unwrap_err();
        assert!(err.contains("no scenes"));
        assert_eq!(
            parse_script("not json", &presets(), "topic").unwrap_err(),
            "the answer held no JSON object"
        );
    }

    #[test]
    fn keeps_a_script_whatever_else_the_answer_holds() {
        // Extra fields, a missing title and description, hashtags as one string, seconds
        // as text, after a reasoning block and with trailing commas.
        let text = "<think>Plan: {scenes}</think>\nHere you go:\n```JSON\n{\"hook\": \"h\", \"language\": \"en\", \
                    \"scenes\": [{\"narration\": \"One.\", \"visual_prompt\": \"p\", \"seconds\": \"4s\", \"mood\": 3},], \
                    \"hashtags\": \"#a #b\",}\n```";
        let out = parse_script(text, &presets(), "Volcanoes").unwrap();
        assert_eq!(out.title, "Volcanoes");
        assert_eq!(out.description, "");
        assert_eq!(out.scenes.len(), 1);
        assert_eq!(out.scenes[0].seconds, 4.0);
        assert_eq!(out.hashtags, vec!["#a", "#b"]);
    }

    #[test]
    fn reads_the_answer_text_in_every_shape() {
        let answer = |message: Value| {
            answer_text(
                &json!({ "choices": [{ "message": message, "finish_reason": "stop" }] }),
                "",
            )
        };
        assert_eq!(answer(json!({ "content": "x" })).unwrap(), "x");
        assert_eq!(
            answer(json!({ "content": [{ "type": "text", "text": "a" }, { "type": "text", "text": "b" }] })).unwrap(),
            "ab"
        );
        assert_eq!(
            answer(json!({ "content": "", "reasoning_content": "r" })).unwrap(),
            "r"
        );
        assert_eq!(
            answer(json!({ "content": null, "refusal": null })).unwrap(),
            ""
        );
        let refused = answer(json!({ "content": null, "refusal": "No." })).unwrap_err();
        assert!(refused.message.contains("No."), "{}", refused.message);
        let in_band = answer_text(
            &json!({ "error": { "message": "Upstream overloaded", "code": 502 } }),
            "",
        )
        .unwrap_err();
        assert!(
            in_band.message.contains("Upstream overloaded"),
            "{}",
            in_band.message
        );
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
