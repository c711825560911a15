//! "Use my script": cuts a pasted script into scenes with no network. Sentences are never
//! split; they are grouped so that each scene carries about the same number of words,
//! aiming at the requested scene count. Durations follow the words (150 per minute).

use std::collections::HashMap;

use super::llm::{clip, ScriptOut};
use crate::model::{limits, Presets, SceneDraft};

const WORDS_PER_SECOND: f64 = 2.5;

const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "each",
    "even", "every", "for", "from", "get", "had", "has", "have", "he", "her", "here", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "just", "like", "make", "many", "may",
    "more", "most", "much", "must", "my", "never", "no", "not", "now", "of", "on", "once", "one",
    "only", "or", "other", "our", "out", "over", "own", "same", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "why", "will", "with", "would", "you", "your",
];

pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let mut current = String::new();
        let mut chars = paragraph.chars().peekable();
        while let Some(c) = chars.next() {
            current.push(c);
            let ends = matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？');
            let closes = chars
                .peek()
                .is_none_or(|n| n.is_whitespace() || is_closer(*n));
            if ends && closes {
                // Keep closing quotes and brackets with their sentence.
                while let Some(&n) = chars.peek() {
                    if is_closer(n) {
                        current.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                push_sentence(&mut out, &mut current);
            }
        }
        push_sentence(&mut out, &mut current);
    }
    out
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']')
}

fn push_sentence(out: &mut Vec<String>, current: &mut String) {
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
    current.clear();
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Groups sentences into about `scene_count` scenes of similar word counts; a scene never
/// grows past `max_chars` (another scene starts instead).
pub fn group(sentences: &[String], scene_count: usize, max_chars: usize) -> Vec<String> {
    let scene_count = scene_count.clamp(1, sentences.len().max(1));
    let total: usize = sentences.iter().map(|s| word_count(s)).sum();
    let mut scenes: Vec<String> = Vec::with_capacity(scene_count);
    let mut current = String::new();
    let mut words_done = 0usize;
    for (i, sentence) in sentences.iter().enumerate() {
        if !current.is_empty() && current.chars().count() + 1 + sentence.chars().count() > max_chars
        {
            scenes.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(sentence);
        words_done += word_count(sentence);
        let remaining_sentences = sentences.len() - i - 1;
        let remaining_scenes = scene_count.saturating_sub(scenes.len() + 1);
        // Close the scene once it reaches its share of the words, but always leave at
        // least one sentence for each scene still to come.
        let share = total as f64 * (scenes.len() + 1) as f64 / scene_count as f64;
        let must_close = remaining_sentences == remaining_scenes && remaining_scenes > 0;
        if remaining_scenes > 0 && (words_done as f64 >= share - 0.5 || must_close) {
            scenes.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        scenes.push(current);
    }
    scenes
}

fn keywords(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, word) in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .enumerate()
    {
        let w = word
            .trim_matches(|c: char| c == '\'' || c == '-')
            .to_lowercase();
        if w.chars().count() < 3
            || STOPWORDS.contains(&w.as_str())
            || w.chars().all(|c| c.is_numeric())
        {
            continue;
        }
        let entry = seen.entry(w).or_insert((0, i));
        entry.0 += 1;
    }
    let mut words: Vec<(String, (usize, usize))> = seen.into_iter().collect();
    // Most frequent first; ties keep the script's order.
    words.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
    words.into_iter().map(|(w, _)| w).collect()
}

fn visual_prompt(narration: &str, presets: &Presets) -> String {
    let mut words = keywords(narration);
    words.truncate(8);
    let subject = if words.is_empty() {
        narration.to_owned()
    } else {
        words.join(", ")
    };
    clip(
        &format!(
            "{} illustration of {subject}, {} frame, no text",
            presets.visual_style, presets.aspect_ratio
        ),
        limits::VISUAL_PROMPT_MAX_CHARS,
    )
}

/// Cuts a sentence longer than a scene may be at word boundaries, so no text is lost.
fn fit_sentence(sentence: &str, max_chars: usize) -> Vec<String> {
    if sentence.chars().count() <= max_chars {
        return vec![sentence.to_owned()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    for word in sentence.split_whitespace() {
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > max_chars {
            parts.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    // A single "word" longer than a scene (no spaces at all) is cut by characters.
    parts
        .into_iter()
        .flat_map(|p| {
            p.chars()
                .collect::<Vec<_>>()
                .chunks(max_chars)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn split(script: &str, presets: &Presets) -> ScriptOut {
    // Scenes hold at most NARRATION_MAX_CHARS: long scripts get more scenes than asked
    // rather than losing text (20 000 characters make at most a dozen or so).
    let max_scene = limits::NARRATION_MAX_CHARS * 9 / 10;
    let sentences: Vec<String> = sentences(script)
        .iter()
        .flat_map(|s| fit_sentence(s, max_scene))
        .collect();
    let groups = group(&sentences, presets.scene_count as usize, max_scene);
    let scenes: Vec<SceneDraft> = groups
        .iter()
        .map(|narration| SceneDraft {
            narration: clip(narration, limits::NARRATION_MAX_CHARS),
            visual_prompt: visual_prompt(narration, presets),
            seconds: ((word_count(narration) as f64 / WORDS_PER_SECOND)
                .clamp(2.0, limits::SCENE_SECONDS_MAX)
                * 10.0)
                .round()
                / 10.0,
        })
        .collect();
    let first = sentences.first().cloned().unwrap_or_default();
    let title = {
        let words: Vec<&str> = first
            .trim_end_matches(['.', '!', '?', '…'])
            .split_whitespace()
            .take(10)
            .collect();
        let title = clip(&words.join(" "), limits::TITLE_MAX_CHARS);
        if title.chars().any(char::is_alphanumeric) {
            title
        } else {
            "Untitled script".to_owned()
        }
    };
    let description = clip(
        &sentences
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        300,
    );
    let hashtags = keywords(script)
        .into_iter()
        .take(5)
        .map(|w| {
            format!(
                "#{}",
                clip(
                    &w.replace(['\'', '-'], ""),
                    limits::SHORT_TEXT_MAX_CHARS - 1
                )
            )
        })
        .collect();
    ScriptOut {
        title,
        hook: first,
        scenes,
        description,
        hashtags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presets(scene_count: u32) -> Presets {
        Presets {
            language: "English".into(),
            tone: "calm".into(),
            target_seconds: 60,
            scene_count,
            aspect_ratio: "16:9".into(),
            visual_style: "watercolor".into(),
            voice: "alloy".into(),
        }
    }

    #[test]
    fn splits_sentences_keeping_quotes() {
        let s = sentences("He said \"Go!\" Then he left. Really?\nNew paragraph without stop");
        assert_eq!(
            s,
            vec![
                "He said \"Go!\"",
                "Then he left.",
                "Really?",
                "New paragraph without stop"
            ]
        );
        assert_eq!(
            sentences("Version 2.5 is out. Yes."),
            vec!["Version 2.5 is out.", "Yes."]
        );
    }

    #[test]
    fn groups_to_the_scene_count_without_splitting_sentences() {
        let text =
            "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen.";
        let out = split(text, &presets(2));
        assert_eq!(out.scenes.len(), 2);
        let joined: Vec<String> = out.scenes.iter().map(|s| s.narration.clone()).collect();
        assert_eq!(joined.join(" "), text);
        // More scenes asked than sentences: one scene per sentence.
        assert_eq!(split("Only one. And two.", &presets(6)).scenes.len(), 2);
    }

    #[test]
    fn long_scripts_lose_no_text() {
        let sentence = "word ".repeat(60);
        let script: String = (0..80).map(|i| format!("{sentence}number {i}. ")).collect();
        let out = split(&script, &presets(6));
        assert!(
            out.scenes.len() > 6 && out.scenes.len() <= limits::SCENES_PER_CONTENT_MAX,
            "{}",
            out.scenes.len()
        );
        assert!(out
            .scenes
            .iter()
            .all(|s| s.narration.chars().count() <= limits::NARRATION_MAX_CHARS));
        let words = |t: &str| t.split_whitespace().count();
        assert_eq!(
            out.scenes
                .iter()
                .map(|s| words(&s.narration))
                .sum::<usize>(),
            words(&script)
        );
        // One huge unpunctuated sentence is cut at words too.
        let blob = "talk ".repeat(3000);
        let out = split(&blob, &presets(2));
        assert_eq!(
            out.scenes
                .iter()
                .map(|s| words(&s.narration))
                .sum::<usize>(),
            3000
        );
        assert!(out.hook.chars().count() <= limits::NARRATION_MAX_CHARS);
        assert_eq!(
            split("... !!! ???  Real words follow here.", &presets(1)).title,
            "Untitled script"
        );
    }

    #[test]
    fn prompts_and_durations_come_from_the_words() {
        let out = split(
            "The ocean hides giant squid in the deep dark water.",
            &presets(1),
        );
        let scene = &out.scenes[0];
        assert!(scene
            .visual_prompt
            .starts_with("watercolor illustration of ocean"));
        assert!(scene.visual_prompt.contains("squid"));
        assert_eq!(scene.seconds, 4.0);
        assert_eq!(
            out.title,
            "The ocean hides giant squid in the deep dark water"
        );
    }
}
