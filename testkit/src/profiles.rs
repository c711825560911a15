//! Profiles of real OpenAI-compatible servers: what each one does differently from
//! OpenAI, so that CREVID can be tested against their quirks without running them.
//!
//! A [`Profile`] names a server; [`Profile::knobs`] is the data the fake's handlers
//! consult ([`Knobs`]); [`Profile::quirks`] says the same in one line a quirk.
//! [`FakeOpenAi::set_profile`](crate::FakeOpenAi::set_profile) applies a profile and
//! [`FakeOpenAi::set_knobs`](crate::FakeOpenAi::set_knobs) any other combination (a proxy
//! with a fractional `Retry-After`, say).
//!
//! Each profile reproduces one server as its documentation, code or bug reports show it;
//! the sources are in the doc comments next to each knob. Behaviour the sources do not
//! show is OpenAI's, so an endpoint a server lacks (and the profile does not mark
//! missing) answers as [`Profile::OpenAi`] does. Model habits (a `<think>` block, a
//! Markdown fence) are the ones reported for models commonly served by that server; they
//! appear only when the server does not constrain the output to the requested format.

use std::io::Write as _;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::{invalid_request, Endpoint};

/// A server the fake can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// OpenAI itself: the fake's behaviour without a profile.
    OpenAi,
    Ollama,
    LmStudio,
    Vllm,
    /// llama.cpp's `llama-server`.
    LlamaCpp,
    LocalAi,
    DeepSeek,
    Groq,
    OpenRouter,
    AzureOpenAi,
    KokoroFastApi,
    OpenedaiSpeech,
}

impl Profile {
    pub const ALL: [Profile; 12] = [
        Profile::OpenAi,
        Profile::Ollama,
        Profile::LmStudio,
        Profile::Vllm,
        Profile::LlamaCpp,
        Profile::LocalAi,
        Profile::DeepSeek,
        Profile::Groq,
        Profile::OpenRouter,
        Profile::AzureOpenAi,
        Profile::KokoroFastApi,
        Profile::OpenedaiSpeech,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::OpenAi => "OpenAI",
            Profile::Ollama => "Ollama",
            Profile::LmStudio => "LM Studio",
            Profile::Vllm => "vLLM",
            Profile::LlamaCpp => "llama.cpp server",
            Profile::LocalAi => "LocalAI",
            Profile::DeepSeek => "DeepSeek",
            Profile::Groq => "Groq",
            Profile::OpenRouter => "OpenRouter",
            Profile::AzureOpenAi => "Azure OpenAI",
            Profile::KokoroFastApi => "Kokoro-FastAPI",
            Profile::OpenedaiSpeech => "openedai-speech",
        }
    }

    /// One line a quirk, for people; [`Profile::knobs`] holds the same for the fake, with
    /// the sources.
    pub fn quirks(self) -> &'static [&'static str] {
        match self {
            Profile::OpenAi => &[],
            Profile::Ollama => &[
                "constrains output to json_schema and json_object (grammar), so those answers are bare JSON",
                "without response_format, a DeepSeek-R1 distill answers <think>…</think> then a ```json fence",
                "adds system_fingerprint \"fp_ollama\", ids like chatcmpl-369, and sends no refusal field",
                "has no /v1/audio/speech: 404 with Go's plain-text \"404 page not found\"",
            ],
            Profile::LmStudio => &[
                "refuses json_object: 400 {\"error\":\"'response_format.type' must be 'json_schema' or 'text'\"}",
                "constrains output to json_schema, so those answers are bare JSON",
                "without response_format, answers in a ```json fence",
                "adds stats {} and system_fingerprint (the model's name), logprobs null, no refusal field",
                "has no images or speech endpoints yet answers them 200 OK with {\"error\":\"Unexpected endpoint or method. (POST …)\"}",
            ],
            Profile::Vllm => &[
                "constrains output to json_schema and json_object (guided decoding), so those answers are bare JSON",
                "without response_format, a DeepSeek-R1 distill answers reasoning, then only the closing </think>, then a ```json fence",
                "adds stop_reason null, prompt_logprobs null, reasoning_content null, tool_calls [] and usage.prompt_tokens_details null; no refusal field",
                "has no images or speech endpoints: FastAPI's 404 {\"detail\":\"Not Found\"}",
            ],
            Profile::LlamaCpp => &[
                "constrains output to json_schema and json_object (grammar), so those answers are bare JSON",
                "without response_format, a DeepSeek-R1 distill answers reasoning, only the closing </think>, then a fence with no language label",
                "adds timings {prompt_n, predicted_per_second, …} and a build system_fingerprint; no refusal field",
                "has no images or speech endpoints: 404 {\"error\":{\"code\":404,\"message\":\"File Not Found\",\"type\":\"not_found_error\"}}",
            ],
            Profile::LocalAi => &[
                "constrains output to json_schema and json_object (grammar), so those answers are bare JSON",
                "without response_format, answers prose around a ```JSON fence (upper case)",
                "images: a URL unless b64_json is asked for; adds id, usage of zeros and index 0 to each image, no revised_prompt",
                "speech: mp3, aac and flac as asked; opus gets Ogg Vorbis; wav, pcm, a missing or an unknown format all get a WAV (audio/x-wav)",
            ],
            Profile::DeepSeek => &[
                "refuses json_schema: 400 \"This response_format type is unavailable now\"",
                "refuses json_object unless a message contains the word json",
                "json_object gives valid JSON but not the schema: extra fields (language, notes), seconds as strings (\"5\")",
                "without response_format, answers in a ```json fence",
                "accepts temperature and ignores it (deepseek-reasoner)",
                "adds reasoning_content, logprobs null, prompt cache counts and token details in usage; no refusal field",
            ],
            Profile::Groq => &[
                "the first request to each endpoint gets 429 with Retry-After: 1 (whole seconds) and Groq's error body",
                "adds x_groq {id}, service_tier, queue and timing figures in usage, logprobs null; no refusal field",
                "without response_format, answers in a ```json fence",
                "speech (Orpheus) answers only wav: any other format, the default mp3 included, gets 400 \"response_format must be one of [wav]\"",
            ],
            Profile::OpenRouter => &[
                "providers without structured outputs ignore response_format, json_schema included",
                "so the script comes as prose around a ```json fence, with trailing commas",
                "and loosely: extra fields (language, notes), hashtags as one string",
                "adds provider, native_finish_reason, reasoning, and cost and token details in usage",
            ],
            Profile::AzureOpenAi => &[
                "a reasoning deployment (o-series, GPT-5) refuses temperature other than 1: 400 \"Unsupported value: 'temperature' …\", param temperature",
                "adds prompt_filter_results and content_filter_results",
                "the first request to each endpoint gets 429 with retry-after-ms: 300 and Retry-After: 1",
                "images (gpt-image-1): refuses response_format (400 \"Unknown parameter: 'response_format'.\"), answers b64_json with usage, background and output_format",
            ],
            Profile::KokoroFastApi => &[
                "speech formats mp3, opus, aac, flac, wav, pcm; anything else gets FastAPI's 422 {\"detail\":[{\"type\":\"literal_error\", …}]}",
                "a missing response_format means mp3 (without a Xing header)",
                "answers are streamed (chunked, no Content-Length); wav says 0xFFFFFFFF for its sizes; pcm is raw 24 kHz",
                "Content-Types audio/opus and audio/pcm",
                "has no chat or images endpoints: 404 {\"detail\":\"Not Found\"}",
            ],
            Profile::OpenedaiSpeech => &[
                "speech formats mp3, opus, aac, flac, wav, pcm in any case; anything else gets 400 with a flat body {\"message\", \"code\", \"type\", \"param\"}",
                "a missing response_format means mp3",
                "pcm from tts-1 (Piper) is 22050 Hz, not OpenAI's 24000 (Content-Type audio/pcm;rate=22050)",
                "answers are streamed from ffmpeg: wav says 0xFFFFFFFF for its sizes and has a LIST chunk before the data",
                "Content-Types audio/ogg;codec=opus and audio/x-flac",
                "has no chat or images endpoints: 404 {\"detail\":\"Not Found\"}",
            ],
        }
    }

    /// The knobs the fake's handlers consult for this server.
    pub fn knobs(self) -> &'static Knobs {
        match self {
            Profile::OpenAi => &Knobs::OPENAI,
            Profile::Ollama => &OLLAMA,
            Profile::LmStudio => &LM_STUDIO,
            Profile::Vllm => &VLLM,
            Profile::LlamaCpp => &LLAMA_CPP,
            Profile::LocalAi => &LOCAL_AI,
            Profile::DeepSeek => &DEEPSEEK,
            Profile::Groq => &GROQ,
            Profile::OpenRouter => &OPENROUTER,
            Profile::AzureOpenAi => &AZURE_OPENAI,
            Profile::KokoroFastApi => &KOKORO_FASTAPI,
            Profile::OpenedaiSpeech => &OPENEDAI_SPEECH,
        }
    }
}

/// Everything a server does differently from OpenAI, as the fake's handlers consult it.
/// [`Knobs::OPENAI`] changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    pub chat: ChatKnobs,
    pub images: ImageKnobs,
    /// `None`: the fake's own speech, a WAV whatever `response_format` asks.
    pub speech: Option<SpeechKnobs>,
    /// 429s before the first success of each endpoint (chat, images, speech).
    pub rate_limit: Option<RateLimit>,
    /// Endpoints the server does not have.
    pub missing: Option<Missing>,
    /// What `GET /v1/audio/voices` lists; None: the route does not exist (404).
    pub voices: Option<&'static [&'static str]>,
}

impl Knobs {
    pub const OPENAI: Knobs = Knobs {
        chat: ChatKnobs::OPENAI,
        images: ImageKnobs::OPENAI,
        speech: None,
        rate_limit: None,
        missing: None,
        voices: None,
    };

    /// The first patch whose `set` is not a JSON object, if any.
    pub fn bad_patch(&self) -> Option<&'static str> {
        let patches = [
            self.chat.response,
            self.chat.choice,
            self.chat.message,
            self.images.response,
            self.images.item,
        ];
        patches
            .into_iter()
            .map(|patch| patch.set)
            .find(|set| !serde_json::from_str::<Value>(set).is_ok_and(|v| v.is_object()))
    }

    /// The answer of an endpoint the server does not have, if `endpoint` is one.
    pub(crate) fn missing(&self, endpoint: Endpoint) -> Option<Response> {
        let missing = self.missing.filter(|m| m.endpoints.contains(&endpoint))?;
        let route = match endpoint {
            Endpoint::Chat => "POST /v1/chat/completions",
            Endpoint::Images => "POST /v1/images/generations",
            Endpoint::Speech => "POST /v1/audio/speech",
        };
        Some(missing.reply.render(&[("route", route)]))
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs::OPENAI
    }
}

/// An answer in a server's own shape. In `body`, `{name}` stands for a value the fake
/// fills in (`{format}`, `{route}`), escaped for a JSON string. An empty body is sent
/// empty; a body that is not JSON is sent as `text/plain`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: &'static str,
}

impl Reply {
    pub(crate) fn render(&self, values: &[(&str, &str)]) -> Response {
        let mut body = self.body.to_owned();
        for (name, value) in values {
            let quoted = Value::from(*value).to_string();
            let escaped = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or_default();
            body = body.replace(&format!("{{{name}}}"), escaped);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if body.is_empty() {
            return status.into_response();
        }
        let content_type = if body.starts_with('{') || body.starts_with('[') {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
    }
}

/// Endpoints a server does not have, and what it answers there (`{route}` is the
/// method and path, as in `POST /v1/audio/speech`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Missing {
    pub endpoints: &'static [Endpoint],
    pub reply: Reply,
}

/// Changes to one JSON object of an answer: top-level keys set to the values of the
/// object `set` (JSON text), then the keys in `remove` taken out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patch {
    pub set: &'static str,
    pub remove: &'static [&'static str],
}

impl Patch {
    pub const NONE: Patch = Patch {
        set: "{}",
        remove: &[],
    };

    /// [`FakeOpenAi::set_knobs`](crate::FakeOpenAi::set_knobs) refuses knobs whose `set`
    /// is not a JSON object, so it always is here.
    pub(crate) fn apply(&self, target: &mut Value) {
        let Some(object) = target.as_object_mut() else {
            return;
        };
        if let Ok(Value::Object(set)) = serde_json::from_str::<Value>(self.set) {
            object.extend(set);
        }
        for key in self.remove {
            object.remove(*key);
        }
    }
}

/// How a server treats chat completions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChatKnobs {
    /// The answer to a `response_format` of type `json_schema`, if refused.
    pub refuse_json_schema: Option<Reply>,
    /// The answer to a `response_format` of type `json_object`, if refused.
    pub refuse_json_object: Option<Reply>,
    /// The answer to a `json_object` request whose messages never say "json".
    pub json_object_needs_word_json: Option<Reply>,
    /// Refuses a `temperature` other than 1, as OpenAI's reasoning models do.
    pub refuse_temperature: bool,
    /// The output follows a requested `json_schema` (bare JSON of that schema).
    pub enforces_json_schema: bool,
    /// The output of a `json_object` request is bare JSON (not necessarily the schema).
    pub enforces_json_object: bool,
    /// How the script is written when no requested format is enforced.
    pub wrap: Wrap,
    /// How the script drifts from the schema when no schema is enforced.
    pub loose: Loose,
    /// Changes to the whole answer, to `choices[0]`, to `choices[0].message`.
    pub response: Patch,
    pub choice: Patch,
    pub message: Patch,
}

impl ChatKnobs {
    pub const OPENAI: ChatKnobs = ChatKnobs {
        refuse_json_schema: None,
        refuse_json_object: None,
        json_object_needs_word_json: None,
        refuse_temperature: false,
        enforces_json_schema: true,
        enforces_json_object: true,
        wrap: Wrap::NONE,
        loose: Loose::NONE,
        response: Patch::NONE,
        choice: Patch::NONE,
        message: Patch::NONE,
    };

    /// The refusal of a request this server does not take, if it is one.
    pub(crate) fn refusal(&self, request: &Value) -> Option<Response> {
        if self.refuse_temperature {
            let temperature = request
                .get("temperature")
                .filter(|t| !t.is_null() && t.as_f64() != Some(1.0));
            if let Some(t) = temperature {
                return Some(
                    invalid_request(
                        "unsupported_value",
                        format!(
                            "Unsupported value: 'temperature' does not support {t} with this model. Only the default (1) value is supported."
                        ),
                    )
                    .on("temperature")
                    .into_response(),
                );
            }
        }
        let refusal = match response_format_type(request) {
            Some("json_schema") => self.refuse_json_schema,
            Some("json_object") => self.refuse_json_object.or_else(|| {
                self.json_object_needs_word_json
                    .filter(|_| !mentions_json(request))
            }),
            _ => None,
        };
        refusal.map(|reply| reply.render(&[]))
    }

    /// The message content carrying `script`, as this server writes it for `request`.
    pub(crate) fn content(&self, script: Value, request: &Value) -> String {
        let kind = response_format_type(request);
        let schema_enforced = kind == Some("json_schema") && self.enforces_json_schema;
        let enforced =
            schema_enforced || (kind == Some("json_object") && self.enforces_json_object);
        let script = if schema_enforced {
            script
        } else {
            self.loose.apply(script)
        };
        if enforced {
            script.to_string()
        } else {
            self.wrap.dress(&script)
        }
    }

    /// `completion` (OpenAI's shape) with this server's changes.
    pub(crate) fn patch(&self, completion: &mut Value) {
        if let Some(choice) = completion.pointer_mut("/choices/0") {
            if let Some(message) = choice.get_mut("message") {
                self.message.apply(message);
            }
            self.choice.apply(choice);
        }
        self.response.apply(completion);
    }
}

fn response_format_type(request: &Value) -> Option<&str> {
    request
        .pointer("/response_format/type")
        .and_then(Value::as_str)
}

fn mentions_json(request: &Value) -> bool {
    request
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| {
            messages.iter().any(|m| {
                m.get("content")
                    .is_some_and(|c| c.to_string().to_lowercase().contains("json"))
            })
        })
}

/// What surrounds the JSON in the message content.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrap {
    pub think: Think,
    /// A Markdown fence with this label (`json`, `JSON`, or empty for none).
    pub fence: Option<&'static str>,
    /// "Here is your script:" before, "Enjoy!" after.
    pub prose: bool,
    /// A comma after the last member of every object and array.
    pub trailing_commas: bool,
}

impl Wrap {
    /// Compact JSON and nothing else, as OpenAI answers.
    pub const NONE: Wrap = Wrap {
        think: Think::None,
        fence: None,
        prose: false,
        trailing_commas: false,
    };

    fn dress(&self, script: &Value) -> String {
        if *self == Wrap::NONE {
            return script.to_string();
        }
        // Models write pretty JSON when they write it for people.
        let pretty = serde_json::to_string_pretty(script).unwrap_or_else(|_| script.to_string());
        let json = if self.trailing_commas {
            with_trailing_commas(&pretty)
        } else {
            pretty
        };
        let mut text = String::from(match self.think {
            Think::None => "",
            Think::Block => "<think>\nThe user wants a short video script as JSON. I'll plan the scenes, then write the title and hook.\n</think>\n\n",
            Think::ClosingOnly => "The user wants a short video script as JSON. I'll plan the scenes, then write the title and hook.\n</think>\n\n",
        });
        if self.prose {
            text.push_str("Here is your script:\n\n");
        }
        match self.fence {
            Some(label) => text.push_str(&format!("```{label}\n{json}\n```")),
            None => text.push_str(&json),
        }
        if self.prose {
            text.push_str("\n\nEnjoy!");
        }
        text
    }
}

/// A reasoning model's thinking, left in the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    None,
    /// `<think>…</think>` before the answer.
    Block,
    /// The thinking and `</think>` without the opening tag, which the chat template put
    /// in the prompt.
    ClosingOnly,
}

/// Pretty-printed JSON with a comma after the last member of each object and array.
/// serde_json escapes newlines inside strings, so every line break is structural.
fn with_trailing_commas(pretty: &str) -> String {
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len() + lines.len());
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        let next_closes = lines
            .get(i + 1)
            .is_some_and(|next| next.trim_start().starts_with(['}', ']']));
        if next_closes && !line.ends_with(['{', '[', ',']) {
            out.push(',');
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
    out
}

/// How a script drifts from the schema when nothing enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loose {
    /// Fields nobody asked for: `language`, `notes`.
    pub extra_fields: bool,
    /// `"hashtags": "#crevid #shorts"` instead of an array.
    pub hashtags_as_string: bool,
    /// Each scene's `seconds` as a string, `"5"`.
    pub seconds_as_string: bool,
}

impl Loose {
    pub const NONE: Loose = Loose {
        extra_fields: false,
        hashtags_as_string: false,
        seconds_as_string: false,
    };

    fn apply(&self, mut script: Value) -> Value {
        let Some(object) = script.as_object_mut() else {
            return script;
        };
        if self.extra_fields {
            object.insert("language".into(), json!("en"));
            object.insert("notes".into(), json!("Keep each scene under ten seconds."));
        }
        if self.hashtags_as_string {
            if let Some(Value::Array(tags)) = object.get("hashtags") {
                let joined: Vec<String> = tags
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|t| format!("#{t}"))
                    .collect();
                object.insert("hashtags".into(), json!(joined.join(" ")));
            }
        }
        if self.seconds_as_string {
            let scenes = object.get_mut("scenes").and_then(Value::as_array_mut);
            for scene in scenes.into_iter().flatten() {
                if let Some(seconds) = scene.get("seconds").and_then(Value::as_f64) {
                    scene["seconds"] = json!(seconds.to_string());
                }
            }
        }
        script
    }
}

/// How a server treats image generations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageKnobs {
    /// The answer to any request carrying `response_format`, if refused.
    pub refuse_response_format: Option<Reply>,
    /// Without `response_format`, answer by URL (under the fake's `/files/`) rather than
    /// in base64.
    pub url_by_default: bool,
    /// Changes to the whole answer and to each item of `data`.
    pub response: Patch,
    pub item: Patch,
}

impl ImageKnobs {
    pub const OPENAI: ImageKnobs = ImageKnobs {
        refuse_response_format: None,
        url_by_default: false,
        response: Patch::NONE,
        item: Patch::NONE,
    };
}

/// How a server treats speech.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechKnobs {
    /// Each format it takes: the name asked for, what it answers, the Content-Type.
    pub formats: &'static [(&'static str, Audio, &'static str)],
    /// The format when `response_format` is missing.
    pub default_format: &'static str,
    /// What a format it does not take gets.
    pub otherwise: Otherwise,
    /// Takes `MP3` as `mp3`.
    pub any_case: bool,
    /// Streams the answer: chunked, without a Content-Length.
    pub chunked: bool,
}

/// What a server does with a speech format it does not take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Otherwise {
    /// Refuses it; `{format}` in the body is the format asked for.
    Refuse(Reply),
    /// Ignores it and answers this, with this Content-Type.
    Answer(Audio, &'static str),
}

impl SpeechKnobs {
    /// What to answer for the `requested` format: the audio and its Content-Type, or the
    /// refusal.
    pub(crate) fn pick(
        &self,
        requested: Option<&str>,
    ) -> Result<(Audio, &'static str), Box<Response>> {
        let asked = requested.unwrap_or(self.default_format);
        let asked = if self.any_case {
            asked.to_lowercase()
        } else {
            asked.to_owned()
        };
        if let Some((_, audio, content_type)) = self.formats.iter().find(|(f, ..)| *f == asked) {
            return Ok((*audio, content_type));
        }
        match self.otherwise {
            Otherwise::Answer(audio, content_type) => Ok((audio, content_type)),
            Otherwise::Refuse(reply) => Err(Box::new(reply.render(&[("format", &asked)]))),
        }
    }

    /// `audio` as this server sends it.
    pub(crate) fn respond(&self, audio: Vec<u8>, content_type: &'static str) -> Response {
        let content_type = [(header::CONTENT_TYPE, content_type)];
        if self.chunked {
            (
                content_type,
                axum::body::Body::new(OneChunk(Some(Bytes::from(audio)))),
            )
                .into_response()
        } else {
            (content_type, audio).into_response()
        }
    }
}

/// One chunk with no size hint, so it goes out chunked, as a streaming server sends it.
struct OneChunk(Option<Bytes>);

impl http_body::Body for OneChunk {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.get_mut()
                .0
                .take()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }
}

/// An audio encoding, made from the fake's WAV with ffmpeg where it is not a WAV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audio {
    /// MP3 with an ID3v2 tag; `xing`: with the Xing/Info frame ffmpeg writes by default.
    Mp3 {
        xing: bool,
    },
    /// Opus in an Ogg container, as OpenAI's `opus`.
    OggOpus,
    /// Vorbis in an Ogg container: what ffmpeg makes of a `.ogg` file name.
    OggVorbis,
    /// AAC in ADTS frames.
    Aac,
    Flac,
    /// The fake's WAV, sizes exact.
    Wav,
    /// The fake's WAV with both sizes 0xFFFFFFFF, as a streaming encoder writes them
    /// before it knows the length (OpenAI's own streamed WAVs look so too).
    WavStreamed,
    /// A WAV written by ffmpeg to a pipe: sizes 0xFFFFFFFF and a LIST/INFO chunk between
    /// `fmt ` and `data`.
    WavFfmpeg,
    /// Raw 16-bit little-endian mono at this rate, no header.
    Pcm {
        rate: u32,
    },
}

impl Audio {
    /// The format's name as [`SpeechFormat::answered`](crate::SpeechFormat) reports it.
    pub fn name(self) -> &'static str {
        match self {
            Audio::Mp3 { .. } => "mp3",
            Audio::OggOpus => "opus",
            Audio::OggVorbis => "vorbis",
            Audio::Aac => "aac",
            Audio::Flac => "flac",
            Audio::Wav | Audio::WavStreamed | Audio::WavFfmpeg => "wav",
            Audio::Pcm { .. } => "pcm",
        }
    }

    /// `wav` (the fake's WAV) in this encoding. ffmpeg runs on a blocking thread: it is a
    /// child process fed through a pipe.
    pub(crate) async fn encode(self, mut wav: Vec<u8>) -> Result<Vec<u8>, String> {
        let args: Vec<String> = match self {
            Audio::Wav => return Ok(wav),
            Audio::WavStreamed => {
                if wav.len() >= 44 {
                    wav[4..8].copy_from_slice(&[0xff; 4]);
                    wav[40..44].copy_from_slice(&[0xff; 4]);
                }
                return Ok(wav);
            }
            Audio::Mp3 { xing } => {
                let mut args = vec!["-c:a", "libmp3lame", "-f", "mp3"];
                if !xing {
                    args.extend(["-write_xing", "0"]);
                }
                args.into_iter().map(String::from).collect()
            }
            Audio::OggOpus => strings(&["-c:a", "libopus", "-f", "ogg"]),
            Audio::OggVorbis => strings(&["-c:a", "libvorbis", "-f", "ogg"]),
            Audio::Aac => strings(&["-c:a", "aac", "-f", "adts"]),
            Audio::Flac => strings(&["-c:a", "flac", "-f", "flac"]),
            Audio::WavFfmpeg => strings(&["-c:a", "pcm_s16le", "-f", "wav"]),
            Audio::Pcm { rate } => {
                let mut args = strings(&["-ac", "1", "-c:a", "pcm_s16le", "-f", "s16le", "-ar"]);
                args.push(rate.to_string());
                args
            }
        };
        tokio::task::spawn_blocking(move || ffmpeg(&args, &wav))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// ffmpeg reading a WAV on stdin and writing `output_args`' format to stdout. The input
/// is written from a second thread, so neither pipe can fill up and stall the other.
fn ffmpeg(output_args: &[String], wav: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "wav",
            "-i",
            "pipe:0",
        ])
        .args(output_args)
        .arg("pipe:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("ffmpeg has no stdin")?;
    let output = std::thread::scope(|scope| {
        // A write error means ffmpeg quit early; its status and stderr say why.
        scope.spawn(move || stdin.write_all(wav));
        child.wait_with_output()
    })
    .map_err(|e| format!("ffmpeg failed: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

/// 429s before success, on each endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// How many requests to each endpoint get a 429 before the next succeeds.
    pub times: usize,
    pub retry_after: RetryAfter,
    /// The 429's body; empty for none, as some proxies send it.
    pub body: &'static str,
}

/// How a 429 says when to come back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfter {
    /// `Retry-After` with this text: `1`, or `0.4` as some servers send although RFC 9110
    /// allows whole seconds only.
    Seconds(&'static str),
    /// `Retry-After` as an HTTP date this far ahead (second precision, so a client waits
    /// up to this long).
    HttpDate(Duration),
    /// `retry-after-ms` with this many milliseconds, and `Retry-After` in whole seconds
    /// rounded up, as Azure OpenAI sends them together.
    Millis(u64),
}

impl RateLimit {
    pub(crate) fn response(&self) -> Response {
        let mut response = Reply {
            status: 429,
            body: self.body,
        }
        .render(&[]);
        let headers = response.headers_mut();
        let mut set = |name: HeaderName, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        match self.retry_after {
            RetryAfter::Seconds(secs) => set(header::RETRY_AFTER, secs.to_owned()),
            RetryAfter::HttpDate(ahead) => set(
                header::RETRY_AFTER,
                httpdate::fmt_http_date(SystemTime::now() + ahead),
            ),
            RetryAfter::Millis(ms) => {
                set(HeaderName::from_static("retry-after-ms"), ms.to_string());
                set(header::RETRY_AFTER, ms.div_ceil(1000).to_string());
            }
        }
        response
    }
}

/// The answer a FastAPI app gives for a route it does not have.
const FASTAPI_NOT_FOUND: Reply = Reply {
    status: 404,
    body: r#"{"detail":"Not Found"}"#,
};

static OLLAMA: Knobs = Knobs {
    chat: ChatKnobs {
        // `response_format` becomes Ollama's `format`, which constrains sampling with a
        // grammar (https://github.com/ollama/ollama/blob/main/docs/openai.md).
        enforces_json_schema: true,
        enforces_json_object: true,
        // deepseek-r1 on Ollama leaves its thinking in the content between <think> tags
        // (LLPhant/LLPhant#296, fishjar/kiss-translator#219), then fences its JSON.
        wrap: Wrap {
            think: Think::Block,
            fence: Some("json"),
            ..Wrap::NONE
        },
        // Ids and fingerprint as a real answer shows them (nonocast/me#330).
        response: Patch {
            set: r#"{"id":"chatcmpl-369","system_fingerprint":"fp_ollama"}"#,
            remove: &[],
        },
        // Ollama's OpenAI message type has no refusal (ollama/ollama openai/openai.go).
        message: Patch {
            set: "{}",
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // Ollama's OpenAI layer lists no speech endpoint (docs/openai.md); Go's router
    // answers unknown paths with plain text.
    missing: Some(Missing {
        endpoints: &[Endpoint::Speech],
        reply: Reply {
            status: 404,
            body: "404 page not found",
        },
    }),
    ..Knobs::OPENAI
};

static LM_STUDIO: Knobs = Knobs {
    chat: ChatKnobs {
        // LM Studio takes only json_schema (and text): LoadShine/tada#16,
        // lmstudio-ai/lmstudio-bug-tracker#189 and #307, lfnovo/esperanto#46.
        refuse_json_object: Some(Reply {
            status: 400,
            body: r#"{"error":"'response_format.type' must be 'json_schema' or 'text'"}"#,
        }),
        // Structured output is grammar-constrained
        // (https://lmstudio.ai/docs/app/api/structured-output).
        enforces_json_schema: true,
        // Local models fence JSON unless constrained (microsoft/essex-toolkit#438 names
        // LM Studio and Ollama models).
        wrap: Wrap {
            fence: Some("json"),
            ..Wrap::NONE
        },
        // LM Studio's answers carry `stats` and the model as `system_fingerprint`
        // (https://lmstudio.ai/docs/app/api/endpoints/openai).
        response: Patch {
            set: r#"{"stats":{},"system_fingerprint":"qwen2.5-7b-instruct"}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"logprobs":null}"#,
            remove: &[],
        },
        message: Patch {
            set: "{}",
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // Unknown routes get 200 OK with an error body: lmstudio-ai/lmstudio-bug-tracker#618
    // ("Returning 200 anyway", #1323, #2085); no image API yet (#408).
    missing: Some(Missing {
        endpoints: &[Endpoint::Images, Endpoint::Speech],
        reply: Reply {
            status: 200,
            body: r#"{"error":"Unexpected endpoint or method. ({route})"}"#,
        },
    }),
    ..Knobs::OPENAI
};

static VLLM: Knobs = Knobs {
    chat: ChatKnobs {
        // Guided decoding (https://docs.vllm.ai/en/latest/features/structured_outputs.html).
        enforces_json_schema: true,
        enforces_json_object: true,
        // R1 distills whose chat template opens <think> in the prompt answer without it:
        // vllm-project/vllm#13125 and #14028, deepseek-ai/DeepSeek-R1#456.
        wrap: Wrap {
            think: Think::ClosingOnly,
            fence: Some("json"),
            ..Wrap::NONE
        },
        // A vLLM answer as recorded in foundation-model-stack/fms-guardrails-orchestrator#452.
        response: Patch {
            set: r#"{"prompt_logprobs":null,"usage":{"prompt_tokens":50,"total_tokens":250,"completion_tokens":200,"prompt_tokens_details":null}}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"logprobs":null,"stop_reason":null}"#,
            remove: &[],
        },
        message: Patch {
            set: r#"{"reasoning_content":null,"tool_calls":[]}"#,
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // vLLM's OpenAI server (FastAPI) has no image or speech route
    // (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html).
    missing: Some(Missing {
        endpoints: &[Endpoint::Images, Endpoint::Speech],
        reply: FASTAPI_NOT_FOUND,
    }),
    ..Knobs::OPENAI
};

static LLAMA_CPP: Knobs = Knobs {
    chat: ChatKnobs {
        // response_format json_object and json_schema become a grammar
        // (https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md).
        enforces_json_schema: true,
        enforces_json_object: true,
        // ggml-org/llama.cpp#11861: R1 answers without the opening <think>; local
        // models' bare ``` fences: microsoft/essex-toolkit#438.
        wrap: Wrap {
            think: Think::ClosingOnly,
            fence: Some(""),
            ..Wrap::NONE
        },
        // `timings` and a build fingerprint, as the server README's examples show.
        response: Patch {
            set: r#"{"system_fingerprint":"b6097-fb4b3d0a","timings":{"prompt_n":50,"prompt_ms":121.4,"prompt_per_token_ms":2.43,"prompt_per_second":411.9,"predicted_n":200,"predicted_ms":3504.2,"predicted_per_token_ms":17.52,"predicted_per_second":57.07}}"#,
            remove: &[],
        },
        message: Patch {
            set: "{}",
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // The server's 404 handler (tools/server/server.cpp, ERROR_TYPE_NOT_FOUND).
    missing: Some(Missing {
        endpoints: &[Endpoint::Images, Endpoint::Speech],
        reply: Reply {
            status: 404,
            body: r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
        },
    }),
    ..Knobs::OPENAI
};

static LOCAL_AI: Knobs = Knobs {
    chat: ChatKnobs {
        // Grammars for json_object and json_schema (https://localai.io/features/constrained_grammars/;
        // JsonSchemaRequest in core/schema/openai.go).
        enforces_json_schema: true,
        enforces_json_object: true,
        // Upper-case fence labels break naive parsers: langchain-ai/langchain#40297.
        wrap: Wrap {
            fence: Some("JSON"),
            prose: true,
            ..Wrap::NONE
        },
        // mudler/LocalAI core/schema/openai.go: uuid ids, no refusal in Message.
        response: Patch {
            set: r#"{"id":"0b5c3b8e-3d3c-4c55-9a0e-5f5a0d1c2b7e"}"#,
            remove: &[],
        },
        message: Patch {
            set: "{}",
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // core/http/endpoints/openai/image.go: base64 only when response_format is
    // "b64_json", else a URL under /generated-images/; core/schema/openai.go's
    // OpenAIResponse always has `usage`, and each Item an `index`.
    images: ImageKnobs {
        url_by_default: true,
        response: Patch {
            set: r#"{"id":"6f1d2c9e-8a4b-4e0f-b1a2-3c4d5e6f7a8b","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#,
            remove: &[],
        },
        item: Patch {
            set: r#"{"index":0}"#,
            remove: &["revised_prompt"],
        },
        ..ImageKnobs::OPENAI
    },
    // pkg/utils/ffmpeg.go AudioConvert: "opus" becomes a .ogg file (ffmpeg picks Vorbis
    // for it), mp3/aac/flac are converted, anything else stays the backend's WAV ("TODO:
    // handle pcm"); no format means WAV (adrianlyjak/obsidian-aloud-tts#113). The
    // endpoint's swagger says @Produce audio/x-wav.
    speech: Some(SpeechKnobs {
        formats: &[
            ("mp3", Audio::Mp3 { xing: true }, "audio/mpeg"),
            ("opus", Audio::OggVorbis, "audio/ogg"),
            ("aac", Audio::Aac, "audio/aac"),
            ("flac", Audio::Flac, "audio/flac"),
        ],
        default_format: "wav",
        otherwise: Otherwise::Answer(Audio::Wav, "audio/x-wav"),
        any_case: false,
        chunked: false,
    }),
    ..Knobs::OPENAI
};

static DEEPSEEK: Knobs = Knobs {
    chat: ChatKnobs {
        // llm-exe/llm-exe#662, khoj-ai/khoj#1336, ItzCrazyKns/Vane#969.
        refuse_json_schema: Some(Reply {
            status: 400,
            body: r#"{"error":{"message":"This response_format type is unavailable now","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        }),
        // browserbase/stagehand#1204; https://api-docs.deepseek.com/guides/json_mode.
        json_object_needs_word_json: Some(Reply {
            status: 400,
            body: r#"{"error":{"message":"Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        }),
        // JSON Output promises valid JSON, not the schema (guides/json_mode): the model
        // follows the prompt's example loosely, as browserbase/stagehand#1204 reports.
        enforces_json_object: true,
        loose: Loose {
            extra_fields: true,
            seconds_as_string: true,
            ..Loose::NONE
        },
        // Without JSON Output the model answers Markdown, its JSON in a fence (the JSON
        // Output guide exists to avoid it).
        wrap: Wrap {
            fence: Some("json"),
            ..Wrap::NONE
        },
        // deepseek-reasoner: reasoning_content beside content, temperature accepted and
        // ignored (https://api-docs.deepseek.com/guides/reasoning_model). The rest as a
        // recorded answer shows it (tidyllm tests/testthat/deepseek fixtures).
        response: Patch {
            set: r#"{"id":"b55e6172-d379-4806-b4e0-d21dd4b243b7","model":"deepseek-reasoner","system_fingerprint":"fp_feb633d1f5_prod0820_fp8_kvcache","usage":{"prompt_tokens":50,"completion_tokens":200,"total_tokens":250,"prompt_tokens_details":{"cached_tokens":0},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":50,"completion_tokens_details":{"reasoning_tokens":120}}}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"logprobs":null}"#,
            remove: &[],
        },
        message: Patch {
            set: r#"{"reasoning_content":"The user wants a short video script in JSON. I'll plan the scenes, then write the title and hook."}"#,
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    ..Knobs::OPENAI
};

static GROQ: Knobs = Knobs {
    chat: ChatKnobs {
        // JSON mode and structured outputs are enforced (a failed validation is a 400
        // json_validate_failed, https://console.groq.com/docs/structured-outputs); without
        // them the models fence their JSON, which is why JSON mode exists.
        wrap: Wrap {
            fence: Some("json"),
            ..Wrap::NONE
        },
        // The answer's shape in https://console.groq.com/docs/api-reference#chat-create.
        response: Patch {
            set: r#"{"id":"chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22","system_fingerprint":"fp_0f5c9bc037","service_tier":"on_demand","x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"},"usage":{"queue_time":0.017,"prompt_tokens":50,"prompt_time":0.004,"completion_tokens":200,"completion_time":0.32,"total_tokens":250,"total_time":0.324}}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"logprobs":null}"#,
            remove: &[],
        },
        message: Patch {
            set: "{}",
            remove: &["refusal"],
        },
        ..ChatKnobs::OPENAI
    },
    // "retry-after (seconds)" is set only on 429s (https://console.groq.com/docs/rate-limits).
    rate_limit: Some(RateLimit {
        times: 1,
        retry_after: RetryAfter::Seconds("1"),
        body: r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01hq7z3k` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 1s.","type":"requests","code":"rate_limit_exceeded"}}"#,
    }),
    // Orpheus speaks WAV only: roryeckel/wyoming_openai#43, openclaw/openclaw#62233; the
    // API's default format is mp3 (https://console.groq.com/docs/text-to-speech).
    speech: Some(SpeechKnobs {
        formats: &[("wav", Audio::Wav, "audio/wav")],
        default_format: "mp3",
        otherwise: Otherwise::Refuse(Reply {
            status: 400,
            body: r#"{"error":{"message":"response_format must be one of [wav]","type":"invalid_request_error"}}"#,
        }),
        any_case: false,
        chunked: false,
    }),
    ..Knobs::OPENAI
};

static OPENROUTER: Knobs = Knobs {
    chat: ChatKnobs {
        // Unsupported parameters are dropped unless provider.require_parameters is set
        // (https://openrouter.ai/docs/guides/routing/provider-selection), so models
        // without structured outputs answer free text: glibsonoran/Plush-for-ComfyUI#227,
        // activeagents/activeagent#171.
        enforces_json_schema: false,
        enforces_json_object: false,
        // Trailing commas in free-form JSON: bytedance/deer-flow#2368.
        wrap: Wrap {
            fence: Some("json"),
            prose: true,
            trailing_commas: true,
            ..Wrap::NONE
        },
        loose: Loose {
            extra_fields: true,
            hashtags_as_string: true,
            ..Loose::NONE
        },
        // https://openrouter.ai/docs/api-reference/overview (provider,
        // native_finish_reason, usage with cost), openrouter.ai/announcements/
        // standardized-finish-reasons, https://openrouter.ai/docs/use-cases/reasoning-tokens.
        response: Patch {
            set: r#"{"id":"gen-1700000000-Xy3kQ9pLmN2vR8sT","provider":"DeepInfra","usage":{"prompt_tokens":50,"completion_tokens":200,"total_tokens":250,"cost":0.000124,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":80}}}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"logprobs":null,"native_finish_reason":"stop"}"#,
            remove: &[],
        },
        message: Patch {
            set: r#"{"reasoning":"The user wants a short video script. I'll plan the scenes, then write the title and hook."}"#,
            remove: &[],
        },
        ..ChatKnobs::OPENAI
    },
    ..Knobs::OPENAI
};

static AZURE_OPENAI: Knobs = Knobs {
    chat: ChatKnobs {
        // o-series and GPT-5 deployments: holoviz/lumen#1087,
        // gabrii/Cursor-Azure-GPT-5#33, owndev/Open-WebUI-Functions#98.
        refuse_temperature: true,
        // https://learn.microsoft.com/en-us/azure/ai-foundry/openai/concepts/content-filter
        response: Patch {
            set: r#"{"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#,
            remove: &[],
        },
        choice: Patch {
            set: r#"{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}"#,
            remove: &[],
        },
        ..ChatKnobs::OPENAI
    },
    // Provisioned deployments send retry-after-ms with retry-after
    // (https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/provisioned-get-started,
    // simonkurtz-MSFT/python-openai-loadbalancer#14); the message as in
    // icereed/paperless-gpt#814.
    rate_limit: Some(RateLimit {
        times: 1,
        retry_after: RetryAfter::Millis(300),
        body: r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#,
    }),
    // A gpt-image-1 deployment: "This parameter isn't supported for gpt-image-1 which
    // will always return base64-encoded images" (Azure OpenAI REST reference); the
    // refusal as OpenAI words it (vercel/ai#6102); the answer's fields as in OpenAI's
    // image generation reference.
    images: ImageKnobs {
        refuse_response_format: Some(Reply {
            status: 400,
            body: r#"{"error":{"message":"Unknown parameter: 'response_format'.","type":"invalid_request_error","param":"response_format","code":"unknown_parameter"}}"#,
        }),
        url_by_default: false,
        response: Patch {
            set: r#"{"background":"opaque","output_format":"png","usage":{"input_tokens":50,"input_tokens_details":{"image_tokens":0,"text_tokens":50},"output_tokens":1056,"total_tokens":1106}}"#,
            remove: &[],
        },
        item: Patch {
            set: "{}",
            remove: &["revised_prompt"],
        },
    },
    ..Knobs::OPENAI
};

static KOKORO_FASTAPI: Knobs = Knobs {
    // remsky/Kokoro-FastAPI api/src/structures/schemas.py: response_format is a Literal
    // of six formats, default mp3, so pydantic refuses others with a 422;
    // api/src/routers/openai_compatible.py: the Content-Types, streaming by default
    // (Transfer-Encoding: chunked); api/src/services/streaming_audio_writer.py: MP3
    // without the Xing header, raw PCM at 24 kHz; WAV with 0xFFFFFFFF sizes (PR #94).
    speech: Some(SpeechKnobs {
        formats: &[
            ("mp3", Audio::Mp3 { xing: false }, "audio/mpeg"),
            ("opus", Audio::OggOpus, "audio/opus"),
            ("aac", Audio::Aac, "audio/aac"),
            ("flac", Audio::Flac, "audio/flac"),
            ("wav", Audio::WavStreamed, "audio/wav"),
            ("pcm", Audio::Pcm { rate: 24_000 }, "audio/pcm"),
        ],
        default_format: "mp3",
        otherwise: Otherwise::Refuse(Reply {
            status: 422,
            body: r#"{"detail":[{"type":"literal_error","loc":["body","response_format"],"msg":"Input should be 'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'","input":"{format}","ctx":{"expected":"'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'"}}]}"#,
        }),
        any_case: false,
        chunked: true,
    }),
    // Its routers serve speech, voices and models only.
    missing: Some(Missing {
        endpoints: &[Endpoint::Chat, Endpoint::Images],
        reply: FASTAPI_NOT_FOUND,
    }),
    // api/src/routers/openai_compatible.py: `GET /audio/voices` lists the voice packs
    // (a few of the v1.0 set here).
    voices: Some(&["af_heart", "af_bella", "am_michael", "bf_emma", "bm_george"]),
    ..Knobs::OPENAI
};

static OPENEDAI_SPEECH: Knobs = Knobs {
    // matatonic/openedai-speech speech.py: the format is lowercased, default mp3, each
    // format made by ffmpeg into a StreamingResponse, Piper's (tts-1) pcm at 22050 Hz;
    // openedai.py: BadRequestError answers a flat {message, code, type, param}.
    speech: Some(SpeechKnobs {
        formats: &[
            ("mp3", Audio::Mp3 { xing: true }, "audio/mpeg"),
            ("opus", Audio::OggOpus, "audio/ogg;codec=opus"),
            ("aac", Audio::Aac, "audio/aac"),
            ("flac", Audio::Flac, "audio/x-flac"),
            ("wav", Audio::WavFfmpeg, "audio/wav"),
            ("pcm", Audio::Pcm { rate: 22_050 }, "audio/pcm;rate=22050"),
        ],
        default_format: "mp3",
        otherwise: Otherwise::Refuse(Reply {
            status: 400,
            body: r#"{"message":"Invalid response_format: '{format}'","code":400,"type":"BadRequestError","param":"response_format"}"#,
        }),
        any_case: true,
        chunked: true,
    }),
    // openedai.py: a FastAPI app with speech, models and health routes only.
    missing: Some(Missing {
        endpoints: &[Endpoint::Chat, Endpoint::Images],
        reply: FASTAPI_NOT_FOUND,
    }),
    ..Knobs::OPENAI
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{script_for, FakeOpenAi, SpeechFormat};

    struct Fake {
        fake: FakeOpenAi,
        http: reqwest::Client,
    }

    async fn fake(profile: Profile) -> Fake {
        let fake = FakeOpenAi::start().await;
        fake.set_profile(profile);
        Fake {
            fake,
            http: reqwest::Client::new(),
        }
    }

    impl Fake {
        async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
            self.http
                .post(format!("{}{path}", self.fake.base_url()))
                .json(body)
                .send()
                .await
                .expect("request reaches the fake")
        }

        /// A successful chat answer's JSON.
        async fn chat(&self, body: &Value) -> Value {
            let response = self.post("/chat/completions", body).await;
            assert_eq!(response.status(), StatusCode::OK);
            response.json().await.expect("completion JSON")
        }

        /// A speech answer: status, Content-Type, Content-Length, bytes.
        async fn speech(&self, format: Option<&str>) -> (StatusCode, String, Option<u64>, Bytes) {
            let mut body = json!({"model": "tts-1", "voice": "alloy", "input": SPEECH});
            if let Some(format) = format {
                body["response_format"] = json!(format);
            }
            let response = self.post("/audio/speech", &body).await;
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let length = response.content_length();
            let status = response.status();
            (
                status,
                content_type,
                length,
                response.bytes().await.expect("speech body"),
            )
        }
    }

    /// Five words: two seconds of speech.
    const SPEECH: &str = "one two three four five";

    /// A chat request asking for `format` (a `response_format` type), mentioning JSON.
    fn chat_request(format: Option<&str>) -> Value {
        let mut body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "You write video scripts as JSON."},
                {"role": "user", "content": "Topic: owls\nScenes: 2"}
            ]
        });
        match format {
            Some("json_schema") => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "script", "schema": {"type": "object"}}})
            }
            Some(kind) => body["response_format"] = json!({ "type": kind }),
            None => {}
        }
        body
    }

    fn content(answer: &Value) -> &str {
        answer["choices"][0]["message"]["content"]
            .as_str()
            .expect("string content")
    }

    /// The script in a message content as a lenient client digs it out: after any
    /// `</think>`, inside any fence, trailing commas dropped.
    fn script_in(content: &str) -> Value {
        let answer = content.rsplit("</think>").next().unwrap_or(content);
        let json = match answer.split_once("```") {
            Some((_, fenced)) => {
                let body = fenced.split_once('\n').map_or(fenced, |(_, body)| body);
                body.split_once("```").map_or(body, |(json, _)| json)
            }
            None => answer,
        };
        let mut cleaned = String::new();
        let mut in_string = false;
        let mut escaped = false;
        let chars: Vec<char> = json.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if in_string {
                escaped = !escaped && c == '\\';
                in_string = escaped || c != '"';
            } else if c == '"' {
                in_string = true;
            } else if c == ','
                && chars[i + 1..]
                    .iter()
                    .find(|c| !c.is_whitespace())
                    .is_some_and(|c| matches!(c, '}' | ']'))
            {
                continue;
            }
            cleaned.push(c);
        }
        serde_json::from_str(cleaned.trim())
            .unwrap_or_else(|e| panic!("no script in {content:?}: {e}"))
    }

    fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[test]
    fn profiles_are_complete_and_their_data_is_valid_json() {
        let names: std::collections::HashSet<_> = Profile::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Profile::ALL.len());
        assert_eq!(*Profile::OpenAi.knobs(), Knobs::OPENAI);
        assert!(Profile::OpenAi.quirks().is_empty());
        for profile in Profile::ALL.into_iter().skip(1) {
            assert!(!profile.quirks().is_empty(), "{profile:?} has no quirks");
            assert_ne!(
                *profile.knobs(),
                Knobs::OPENAI,
                "{profile:?} changes nothing"
            );
            let knobs = profile.knobs();
            assert_eq!(knobs.bad_patch(), None, "{profile:?}");
            let mut replies: Vec<Reply> = [
                knobs.chat.refuse_json_schema,
                knobs.chat.refuse_json_object,
                knobs.chat.json_object_needs_word_json,
                knobs.images.refuse_response_format,
                knobs.missing.map(|m| m.reply),
            ]
            .into_iter()
            .flatten()
            .collect();
            if let Some(SpeechKnobs {
                otherwise: Otherwise::Refuse(reply),
                ..
            }) = knobs.speech
            {
                replies.push(reply);
            }
            if let Some(limit) = knobs.rate_limit {
                replies.push(Reply {
                    status: 429,
                    body: limit.body,
                });
            }
            for reply in replies {
                let body = reply
                    .body
                    .replace("{format}", "x")
                    .replace("{route}", "POST /x");
                if body.starts_with('{') {
                    serde_json::from_str::<Value>(&body)
                        .unwrap_or_else(|e| panic!("{profile:?}: {body}: {e}"));
                }
            }
        }
    }

    #[test]
    fn trailing_commas_follow_every_last_member() {
        let pretty =
            serde_json::to_string_pretty(&json!({"a": [1, {"b": "x,}"}], "c": {}})).unwrap();
        let with = with_trailing_commas(&pretty);
        assert!(with.contains("\"x,}\","), "{with}");
        assert!(with.contains("},\n  ],\n  \"c\": {},\n}"), "{with}");
        assert_eq!(script_in(&with), json!({"a": [1, {"b": "x,}"}], "c": {}}));
    }

    #[tokio::test]
    async fn openai_profile_answers_as_without_one() {
        let fake = fake(Profile::OpenAi).await;
        let request = chat_request(None);
        let answer = fake.chat(&request).await;
        assert_eq!(content(&answer), script_for(&request).to_string());
        assert_eq!(answer["choices"][0]["message"]["refusal"], Value::Null);
        assert!(answer["choices"][0]["message"]
            .as_object()
            .is_some_and(|m| m.contains_key("refusal")));
        let (status, content_type, _, wav) = fake.speech(Some("mp3")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "audio/wav")
        );
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(
            fake.fake.speech_formats(),
            [SpeechFormat {
                requested: Some("mp3".into()),
                answered: Some("wav")
            }]
        );
    }

    #[tokio::test]
    async fn ollama_thinks_and_fences_unless_a_format_constrains_it() {
        let fake = fake(Profile::Ollama).await;
        let request = chat_request(None);
        let answer = fake.chat(&request).await;
        let text = content(&answer);
        assert!(text.starts_with("<think>\n"), "{text}");
        assert!(text.contains("</think>\n\n```json\n"), "{text}");
        assert_eq!(script_in(text), script_for(&request));
        assert_eq!(answer["system_fingerprint"], "fp_ollama");
        assert!(!answer["choices"][0]["message"]
            .as_object()
            .is_some_and(|m| m.contains_key("refusal")));
        for kind in ["json_schema", "json_object"] {
            let request = chat_request(Some(kind));
            let answer = fake.chat(&request).await;
            let bare: Value = serde_json::from_str(content(&answer)).expect("bare JSON");
            assert_eq!(bare, script_for(&request));
        }
        let response = fake.post("/audio/speech", &json!({"input": SPEECH})).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.text().await.unwrap(), "404 page not found");
    }

    #[tokio::test]
    async fn lm_studio_refuses_json_object_and_fakes_success_for_missing_endpoints() {
        let fake = fake(Profile::LmStudio).await;
        let response = fake
            .post("/chat/completions", &chat_request(Some("json_object")))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "'response_format.type' must be 'json_schema' or 'text'"})
        );
        let request = chat_request(Some("json_schema"));
        let answer = fake.chat(&request).await;
        assert_eq!(
            serde_json::from_str::<Value>(content(&answer)).unwrap(),
            script_for(&request)
        );
        assert_eq!(answer["stats"], json!({}));
        let answer = fake.chat(&chat_request(None)).await;
        assert!(content(&answer).starts_with("```json\n"));
        let kinds: Vec<Value> = fake
            .fake
            .chat_requests()
            .iter()
            .map(|r| r["response_format"]["type"].clone())
            .collect();
        assert_eq!(
            kinds,
            [json!("json_object"), json!("json_schema"), Value::Null]
        );

        let response = fake
            .post("/images/generations", &json!({"prompt": "an owl"}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "Unexpected endpoint or method. (POST /v1/images/generations)"})
        );
    }

    #[tokio::test]
    async fn vllm_and_llama_cpp_answer_without_the_opening_think_tag() {
        let vllm = fake(Profile::Vllm).await;
        let request = chat_request(None);
        let answer = vllm.chat(&request).await;
        let text = content(&answer);
        assert!(
            !text.contains("<think>") && text.contains("</think>\n\n```json\n"),
            "{text}"
        );
        assert_eq!(script_in(text), script_for(&request));
        assert!(answer["choices"][0]
            .as_object()
            .is_some_and(|c| c["stop_reason"].is_null() && c.contains_key("stop_reason")));
        let response = vllm
            .post("/images/generations", &json!({"prompt": "an owl"}))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"detail": "Not Found"})
        );

        let llama = fake(Profile::LlamaCpp).await;
        let answer = llama.chat(&request).await;
        let text = content(&answer);
        assert!(text.contains("</think>\n\n```\n{"), "{text}");
        assert_eq!(script_in(text), script_for(&request));
        assert!(answer["timings"]["predicted_per_second"].is_f64());
        let response = llama.post("/audio/speech", &json!({"input": SPEECH})).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["type"],
            "not_found_error"
        );
    }

    #[tokio::test]
    async fn deepseek_refuses_json_schema_and_answers_json_object_loosely() {
        let fake = fake(Profile::DeepSeek).await;
        let response = fake
            .post("/chat/completions", &chat_request(Some("json_schema")))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["message"],
            "This response_format type is unavailable now"
        );
        let unworded = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "Topic: owls"}],
            "response_format": {"type": "json_object"}
        });
        let response = fake.post("/chat/completions", &unworded).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Prompt must contain the word 'json'"));

        let mut request = chat_request(Some("json_object"));
        request["temperature"] = json!(0.7);
        let answer = fake.chat(&request).await;
        let script: Value = serde_json::from_str(content(&answer)).expect("bare JSON");
        assert_eq!(script["language"], "en");
        assert_eq!(script["scenes"][0]["seconds"], "15");
        assert_eq!(script["title"], script_for(&request)["title"]);
        assert!(answer["choices"][0]["message"]["reasoning_content"].is_string());
        assert_eq!(answer["usage"]["prompt_cache_miss_tokens"], 50);
        let sent = fake.fake.chat_requests();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2]["temperature"], 0.7);
    }

    #[tokio::test]
    async fn groq_limits_each_endpoint_once_in_whole_seconds() {
        let fake = fake(Profile::Groq).await;
        let request = chat_request(Some("json_object"));
        let response = fake.post("/chat/completions", &request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header_of(&response, "retry-after").as_deref(), Some("1"));
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "rate_limit_exceeded"
        );
        let answer = fake.chat(&request).await;
        assert!(answer["x_groq"]["id"].is_string());
        assert!(answer["usage"]["queue_time"].is_f64());

        let image = json!({"prompt": "an owl", "size": "16x16"});
        let first = fake.post("/images/generations", &image).await;
        assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            fake.post("/images/generations", &image).await.status(),
            StatusCode::OK
        );

        let (status, ..) = fake.speech(Some("mp3")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, ..) = fake.speech(Some("wav")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let (status, content_type, _, wav) = fake.speech(Some("wav")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "audio/wav")
        );
        assert_eq!(&wav[..4], b"RIFF");

        // Like the fault draws, the rate limit starts again after a reset; the profile stays.
        fake.fake.reset_counts();
        let response = fake.post("/chat/completions", &request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn openrouter_ignores_the_schema_and_answers_loosely_in_prose() {
        let fake = fake(Profile::OpenRouter).await;
        let request = chat_request(Some("json_schema"));
        let answer = fake.chat(&request).await;
        let text = content(&answer);
        assert!(
            text.starts_with("Here is your script:\n\n```json\n"),
            "{text}"
        );
        assert!(text.ends_with("```\n\nEnjoy!"), "{text}");
        let fenced = text
            .split("```json\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        assert!(
            serde_json::from_str::<Value>(fenced).is_err(),
            "trailing commas"
        );
        let script = script_in(text);
        assert_eq!(script["hashtags"], "#crevid #shorts");
        assert_eq!(script["notes"], "Keep each scene under ten seconds.");
        assert_eq!(script["scenes"], script_for(&request)["scenes"]);
        assert_eq!(answer["provider"], "DeepInfra");
        assert_eq!(answer["choices"][0]["native_finish_reason"], "stop");
        assert!(answer["choices"][0]["message"]["reasoning"].is_string());
    }

    #[tokio::test]
    async fn azure_refuses_temperature_and_limits_with_retry_after_ms() {
        let fake = fake(Profile::AzureOpenAi).await;
        let request = chat_request(Some("json_schema"));
        let response = fake.post("/chat/completions", &request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            header_of(&response, "retry-after-ms").as_deref(),
            Some("300")
        );
        assert_eq!(header_of(&response, "retry-after").as_deref(), Some("1"));
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            "429"
        );

        let mut hot = request.clone();
        hot["temperature"] = json!(0.7);
        let response = fake.post("/chat/completions", &hot).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = response.json::<Value>().await.unwrap()["error"].clone();
        assert_eq!(error["param"], "temperature");
        assert_eq!(
            error["message"],
            "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported."
        );
        hot["temperature"] = json!(1);
        let answer = fake.chat(&hot).await;
        assert_eq!(
            serde_json::from_str::<Value>(content(&answer)).unwrap(),
            script_for(&request)
        );
        assert!(answer["prompt_filter_results"][0]["content_filter_results"].is_object());
        assert!(answer["choices"][0]["content_filter_results"]["hate"].is_object());

        let asked = json!({"prompt": "an owl", "size": "16x16", "response_format": "b64_json"});
        let response = fake.post("/images/generations", &asked).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["message"],
            "Unknown parameter: 'response_format'."
        );
        let plain = json!({"prompt": "an owl", "size": "16x16"});
        let limited = fake.post("/images/generations", &plain).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        let answer: Value = fake
            .post("/images/generations", &plain)
            .await
            .json()
            .await
            .unwrap();
        assert!(answer["data"][0]["b64_json"].is_string());
        assert!(!answer["data"][0]
            .as_object()
            .is_some_and(|i| i.contains_key("revised_prompt")));
        assert_eq!(answer["output_format"], "png");
        assert!(answer["usage"]["total_tokens"].is_u64());
    }

    #[tokio::test]
    async fn kokoro_refuses_unknown_formats_and_streams_real_encodings() {
        let fake = fake(Profile::KokoroFastApi).await;
        let (status, _, _, body) = fake.speech(Some("ogg")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let detail = serde_json::from_slice::<Value>(&body).unwrap()["detail"][0].clone();
        assert_eq!(detail["loc"], json!(["body", "response_format"]));
        assert_eq!(detail["input"], "ogg");

        let (status, content_type, length, mp3) = fake.speech(Some("mp3")).await;
        assert_eq!(
            (status, content_type.as_str(), length),
            (StatusCode::OK, "audio/mpeg", None)
        );
        assert!(mp3.starts_with(b"ID3") || (mp3[0] == 0xff && mp3[1] & 0xe0 == 0xe0));
        assert!(
            !mp3.windows(4).any(|w| w == b"Xing" || w == b"Info"),
            "no Xing frame"
        );

        let (_, content_type, _, pcm) = fake.speech(Some("pcm")).await;
        assert_eq!(content_type, "audio/pcm");
        assert!(!pcm.starts_with(b"RIFF"));
        assert_eq!(pcm.len(), 2 * 24_000 * 2, "two seconds, 16-bit, 24 kHz");

        let (_, content_type, _, wav) = fake.speech(Some("wav")).await;
        assert_eq!(content_type, "audio/wav");
        assert_eq!(
            (&wav[..4], &wav[4..8], &wav[40..44]),
            (&b"RIFF"[..], &[0xff; 4][..], &[0xff; 4][..])
        );

        let (_, content_type, _, opus) = fake.speech(Some("opus")).await;
        assert_eq!(content_type, "audio/opus");
        assert!(opus.starts_with(b"OggS") && opus.windows(8).any(|w| w == b"OpusHead"));

        let (status, content_type, ..) = fake.speech(None).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "audio/mpeg")
        );
        let answered: Vec<_> = fake
            .fake
            .speech_formats()
            .into_iter()
            .map(|f| (f.requested, f.answered))
            .collect();
        assert_eq!(
            answered,
            [
                (Some("ogg".to_owned()), None),
                (Some("mp3".to_owned()), Some("mp3")),
                (Some("pcm".to_owned()), Some("pcm")),
                (Some("wav".to_owned()), Some("wav")),
                (Some("opus".to_owned()), Some("opus")),
                (None, Some("mp3")),
            ]
        );

        let response = fake.post("/chat/completions", &chat_request(None)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"detail": "Not Found"})
        );
    }

    #[tokio::test]
    async fn openedai_speech_takes_any_case_and_sends_piper_pcm_at_22050() {
        let fake = fake(Profile::OpenedaiSpeech).await;
        let (status, content_type, ..) = fake.speech(Some("MP3")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "audio/mpeg")
        );
        let (status, _, _, body) = fake.speech(Some("ogg")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"message": "Invalid response_format: 'ogg'", "code": 400, "type": "BadRequestError", "param": "response_format"})
        );

        let (_, content_type, _, pcm) = fake.speech(Some("pcm")).await;
        assert_eq!(content_type, "audio/pcm;rate=22050");
        assert_eq!(pcm.len() % 2, 0);
        assert!(
            pcm.len().abs_diff(2 * 22_050 * 2) < 200,
            "{} bytes",
            pcm.len()
        );

        let (_, _, _, wav) = fake.speech(Some("wav")).await;
        assert_eq!((&wav[..4], &wav[4..8]), (&b"RIFF"[..], &[0xff; 4][..]));
        assert_eq!(&wav[36..40], b"LIST");
        let (_, content_type, _, flac) = fake.speech(Some("flac")).await;
        assert_eq!(content_type, "audio/x-flac");
        assert!(flac.starts_with(b"fLaC"));
        let (_, _, _, aac) = fake.speech(Some("aac")).await;
        assert!(aac[0] == 0xff && aac[1] & 0xf0 == 0xf0, "ADTS sync word");
    }

    #[tokio::test]
    async fn local_ai_answers_wav_for_pcm_vorbis_for_opus_and_image_urls() {
        let fake = fake(Profile::LocalAi).await;
        let (_, content_type, _, pcm) = fake.speech(Some("pcm")).await;
        assert_eq!(content_type, "audio/x-wav");
        assert!(pcm.starts_with(b"RIFF"), "pcm is ignored");
        let (_, content_type, _, ogg) = fake.speech(Some("opus")).await;
        assert_eq!(content_type, "audio/ogg");
        assert!(ogg.starts_with(b"OggS") && ogg.windows(6).any(|w| w == b"vorbis"));
        assert!(!ogg.windows(8).any(|w| w == b"OpusHead"));
        let answered: Vec<_> = fake
            .fake
            .speech_formats()
            .into_iter()
            .map(|f| f.answered)
            .collect();
        assert_eq!(answered, [Some("wav"), Some("vorbis")]);

        let answer: Value = fake
            .post(
                "/images/generations",
                &json!({"prompt": "an owl", "size": "16x16"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let url = answer["data"][0]["url"].as_str().expect("a URL by default");
        assert!(url.starts_with(&fake.fake.files_url()));
        assert_eq!(answer["data"][0]["index"], 0);
        assert_eq!(answer["usage"]["total_tokens"], 0);
        let png = fake
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
    }

    #[tokio::test]
    async fn knobs_express_retry_after_forms_no_profile_uses() {
        let fake = fake(Profile::OpenAi).await;
        let request = chat_request(None);
        fake.fake.set_knobs(Knobs {
            rate_limit: Some(RateLimit {
                times: 2,
                retry_after: RetryAfter::Seconds("0.4"),
                body: "",
            }),
            ..Knobs::OPENAI
        });
        for _ in 0..2 {
            let response = fake.post("/chat/completions", &request).await;
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header_of(&response, "retry-after").as_deref(), Some("0.4"));
            assert!(header_of(&response, "content-type").is_none());
            assert!(response.bytes().await.unwrap().is_empty());
        }
        fake.chat(&request).await;

        fake.fake.set_knobs(Knobs {
            rate_limit: Some(RateLimit {
                times: 1,
                retry_after: RetryAfter::HttpDate(Duration::from_secs(1)),
                body: r#"{"error":{"message":"slow down"}}"#,
            }),
            ..Knobs::OPENAI
        });
        let before = SystemTime::now();
        let response = fake.post("/chat/completions", &request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let date = header_of(&response, "retry-after").expect("Retry-After");
        let when = httpdate::parse_http_date(&date).expect("an HTTP date");
        // Second precision: up to a second early, never more than a second late.
        assert!(when + Duration::from_secs(1) >= before);
        assert!(when <= SystemTime::now() + Duration::from_secs(1));
        fake.chat(&request).await;
    }

    #[tokio::test]
    async fn patches_express_missing_and_odd_fields() {
        let fake = fake(Profile::OpenAi).await;
        fake.fake.set_knobs(Knobs {
            chat: ChatKnobs {
                response: Patch {
                    set: r#"{"created":1700000000.25}"#,
                    remove: &["id", "object"],
                },
                ..ChatKnobs::OPENAI
            },
            images: ImageKnobs {
                response: Patch {
                    set: "{}",
                    remove: &["created"],
                },
                ..ImageKnobs::OPENAI
            },
            ..Knobs::OPENAI
        });
        let answer = fake.chat(&chat_request(None)).await;
        assert!(answer["created"].is_f64());
        assert!(answer.get("id").is_none() && answer.get("object").is_none());
        let answer: Value = fake
            .post(
                "/images/generations",
                &json!({"prompt": "an owl", "size": "16x16"}),
            )
            .await
            .json()
            .await
            .unwrap();
        assert!(answer.get("created").is_none() && answer["data"][0]["b64_json"].is_string());
    }
}
