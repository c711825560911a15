//! Finding the script in a language model's answer, however the server wrapped it.
//!
//! Servers that do not enforce `response_format` (or were not sent one) answer in many
//! shapes: a Markdown fence with any label, a reasoning model's `<think>…</think>` first,
//! prose around the object, trailing commas. And models extend the object freely: extra
//! fields, hashtags as one string, seconds as `"5s"`. None of that should discard an
//! answer that holds a script, so this reads only the fields CREVID needs, each
//! tolerantly, and ignores the rest.

use serde_json::{Map, Value};

/// The blocks reasoning models put before their answer (DeepSeek-R1 and its distills,
/// QwQ, Qwen3 on Ollama, vLLM and llama.cpp without a reasoning parser).
const THINK_TAGS: [(&str, &str); 3] = [
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
];

/// The first JSON object in `text` that looks like a script (has `scenes`), else the first
/// JSON object at all. Looks, in order, at the text without reasoning blocks, inside each
/// Markdown fence, and at each balanced `{…}` span; each candidate is read as JSON, then
/// as JSON5 (trailing commas, comments, single quotes).
///
/// Errors: a sentence saying what the answer held instead, for the repair prompt and the
/// creator's message.
pub fn find_object(text: &str) -> Result<Map<String, Value>, String> {
    let text = strip_reasoning(text);
    let text = text.trim();
    if text.is_empty() {
        return Err("the answer was empty".into());
    }
    let mut first_object = None;
    for candidate in candidates(text) {
        if let Some(Value::Object(object)) = parse_lenient(candidate) {
            if looks_like_script(&object) {
                return Ok(object);
            }
            first_object.get_or_insert(object);
        }
    }
    first_object.ok_or_else(|| "the answer held no JSON object".to_owned())
}

fn strip_reasoning(text: &str) -> &str {
    let mut rest = text;
    for (open, close) in THINK_TAGS {
        // Everything up to the last closing tag is reasoning; an opening tag never closed
        // (the model ran out of tokens while thinking) leaves nothing to read.
        if let Some(end) = rest.rfind(close) {
            rest = &rest[end + close.len()..];
        } else if rest.trim_start().starts_with(open) {
            return "";
        }
    }
    rest
}

fn candidates(text: &str) -> Vec<&str> {
    let mut out = vec![text];
    out.extend(fenced_blocks(text));
    out.extend(balanced_objects(text));
    out
}

/// The contents of every ```-fence, whatever its label (`json`, `JSON`, `jsonc`, none).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // The label runs to the end of the opening line.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(end) => {
                out.push(&body[..end]);
                rest = &body[end + 3..];
            }
            None => {
                // An unclosed fence (a cut-off answer): what follows is still worth a try.
                out.push(body);
                break;
            }
        }
    }
    out
}

/// Each `{…}` span whose braces balance, skipping braces inside strings, in order of its
/// opening brace; nested objects are not listed separately.
fn balanced_objects(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        match closing_brace(&bytes[i..]) {
            Some(len) => {
                out.push(&text[i..i + len]);
                i += len;
            }
            None => i += 1,
        }
    }
    out
}

/// The length of the object starting at `bytes[0] == b'{'`, through its closing brace.
fn closing_brace(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' => quote = Some(b),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (b == b'}').then_some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_lenient(candidate: &str) -> Option<Value> {
    let candidate = candidate.trim();
    if !candidate.starts_with('{') {
        return None;
    }
    serde_json::from_str(candidate)
        .ok()
        .or_else(|| json5::from_str(candidate).ok())
}

fn looks_like_script(object: &Map<String, Value>) -> bool {
    scenes_of(object).is_some()
}

/// The scenes array: `scenes` at the top, or one level down (`{"script": {"scenes": …}}`,
/// which some models produce when the schema is only in the prompt).
fn scenes_of(object: &Map<String, Value>) -> Option<&Vec<Value>> {
    if let Some(Value::Array(scenes)) = field(object, &["scenes"]) {
        return Some(scenes);
    }
    object.values().find_map(|v| match v {
        Value::Object(inner) => match field(inner, &["scenes"]) {
            Some(Value::Array(scenes)) => Some(scenes),
            _ => None,
        },
        _ => None,
    })
}

/// The script's object itself: the top level, or the one level down that holds `scenes`.
pub fn script_object(object: &Map<String, Value>) -> &Map<String, Value> {
    if matches!(field(object, &["scenes"]), Some(Value::Array(_))) {
        return object;
    }
    object
        .values()
        .find_map(|v| match v {
            Value::Object(inner) if matches!(field(inner, &["scenes"]), Some(Value::Array(_))) => {
                Some(inner)
            }
            _ => None,
        })
        .unwrap_or(object)
}

/// The first of `names` present, matched without regard to case.
fn field<'a>(object: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|name| {
        object.get(*name).or_else(|| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    })
}

/// A text field: a string as is, a number or boolean written out, an array of strings
/// joined with spaces; anything else (or nothing) is empty.
pub fn text(object: &Map<String, Value>, names: &[&str]) -> String {
    match field(object, names) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A duration in seconds: a number, or a string like `"5"`, `"5.5s"`, `"5 seconds"`.
/// `None` when absent or unreadable (the caller shares out the target length).
pub fn seconds(object: &Map<String, Value>, names: &[&str]) -> Option<f64> {
    match field(object, names)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let end = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            s[..end].parse().ok()
        }
        _ => None,
    }
}

/// Hashtags: an array of strings, or one string of them separated by spaces or commas.
pub fn tags(object: &Map<String, Value>, names: &[&str]) -> Vec<String> {
    match field(object, names) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The scenes as objects; a scene given as a bare string is its narration.
pub fn scenes(object: &Map<String, Value>) -> Vec<Map<String, Value>> {
    scenes_of(object)
        .map(|scenes| {
            scenes
                .iter()
                .filter_map(|scene| match scene {
                    Value::Object(o) => Some(o.clone()),
                    Value::String(s) => {
                        let mut o = Map::new();
                        o.insert("narration".into(), Value::String(s.clone()));
                        Some(o)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names a scene's fields go by in models' answers, schema's first.
pub const NARRATION: [&str; 5] = ["narration", "text", "voiceover", "voice_over", "script"];
pub const VISUAL_PROMPT: [&str; 4] = ["visual_prompt", "image_prompt", "visual", "image"];
pub const SECONDS: [&str; 3] = ["seconds", "duration", "duration_seconds"];

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"{"title":"T","hook":"h","scenes":[{"narration":"a","visual_prompt":"b","seconds":3}],"description":"d","hashtags":["x"]}"#;

    #[test]
    fn finds_the_script_however_it_is_wrapped() {
        for wrapped in [
            SCRIPT.to_owned(),
            format!("```json\n{SCRIPT}\n```"),
            format!("```JSON\n{SCRIPT}\n```"),
            format!("```\n{SCRIPT}\n```"),
            format!("<think>\nThe user wants {{a script}}. Let me plan.\n</think>\n\n{SCRIPT}"),
            format!("<think>plan</think>```json\n{SCRIPT}\n```"),
            format!("Here is your script:\n\n{SCRIPT}\n\nEnjoy!"),
            SCRIPT
                .replace("3}],", "3,},],")
                .replace("\"x\"]", "\"x\",]"),
            format!(r#"{{"script": {SCRIPT}}}"#),
            format!("Sure! {{\"note\": \"first\"}} and then {SCRIPT}"),
        ] {
            assert_eq!(
                find_object(&wrapped).map(|o| super::text(script_object(&o), &["title"])),
                Ok("T".to_owned()),
                "{wrapped}"
            );
        }
    }

    #[test]
    fn says_what_was_missing() {
        assert_eq!(find_object("").unwrap_err(), "the answer was empty");
        assert_eq!(
            find_object("<think>still thinking when the tokens ran out").unwrap_err(),
            "the answer was empty"
        );
        assert_eq!(
            find_object("I cannot write that.").unwrap_err(),
            "the answer held no JSON object"
        );
    }

    #[test]
    fn reads_fields_in_the_shapes_models_give() {
        let object: Map<String, Value> = serde_json::from_str(
            r##"{"Title": 42, "hashtags": "#a, #b c", "scenes": ["Just words.", {"text": "t", "image_prompt": "p", "duration": "4.5s"}], "extra": {"x": [1]}}"##,
        )
        .expect("JSON");
        assert_eq!(text(&object, &["title"]), "42");
        assert_eq!(tags(&object, &["hashtags"]), vec!["#a", "#b", "c"]);
        let scenes = scenes(&object);
        assert_eq!(text(&scenes[0], &NARRATION), "Just words.");
        assert_eq!(seconds(&scenes[0], &SECONDS), None);
        assert_eq!(text(&scenes[1], &NARRATION), "t");
        assert_eq!(text(&scenes[1], &VISUAL_PROMPT), "p");
        assert_eq!(seconds(&scenes[1], &SECONDS), Some(4.5));
    }
}
