//! "Use my script": cuts a pasted script into scenes with no network. Markdown is read as
//! the words a narrator says; sentences follow Unicode's rules (UAX #29: `。！？` need no
//! space after them, a decimal point ends nothing) and never end at a common abbreviation
//! ("Dr.", "e.g.", "U.S.", "z.B.", initials). Sentences are never split; they are grouped
//! so that each scene carries about the same amount of speech, aiming at the requested
//! scene count. Lengths count words, or characters in scripts written without spaces
//! (Chinese, Japanese, Thai); durations follow them (150 words a minute).

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

use super::llm::{clip, ScriptOut};
use crate::model::{limits, Presets, SceneDraft};

const WORDS_PER_SECOND: f64 = 2.5;
/// Speech units of one Chinese or Japanese character: about five are read a second.
const CJK_CHAR_UNITS: f64 = 0.5;
/// Speech units of one Thai letter: about twelve are read a second.
const THAI_CHAR_UNITS: f64 = 0.2;

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

/// Abbreviations after which a full stop does not end a sentence (English, German,
/// Spanish, French), lower-cased. Words that often end sentences ("etc.", "usw.", "no.")
/// are left out on purpose.
const ABBREVIATIONS: &[&str] = &[
    "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "mt.", "vs.", "e.g.", "i.e.",
    "u.s.", "u.k.", "u.n.", "a.m.", "p.m.", "fig.", "approx.", "ca.", "cf.", "jan.", "feb.",
    "mar.", "apr.", "aug.", "sep.", "sept.", "oct.", "nov.", "dec.", "z.b.", "d.h.", "u.a.",
    "bzw.", "nr.", "vgl.", "evtl.", "str.", "sra.", "srta.", "dra.", "ud.", "uds.", "pág.",
    "p.ej.", "mme.", "mlle.",
];

/// The plain words of a script that may be written in Markdown: markup dropped, the text
/// of links, images and code kept, every block and line on its own line. A heading or a
/// list item without closing punctuation is closed, so it is a sentence of its own
/// instead of running into the next one.
pub fn plain_text(script: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::new();
    let mut block = String::new();
    let mut closing = Vec::new();
    for event in Parser::new(script) {
        match event {
            Event::Text(text) | Event::Code(text) => block.push_str(&text),
            Event::SoftBreak | Event::HardBreak => block.push('\n'),
            Event::Start(Tag::Heading { .. } | Tag::Item) => {
                end_block(&mut out, &mut block, false);
                closing.push(true);
            }
            Event::End(TagEnd::Heading(_) | TagEnd::Item) => {
                end_block(&mut out, &mut block, closing.pop().unwrap_or(false));
            }
            Event::End(TagEnd::Paragraph | TagEnd::CodeBlock | TagEnd::BlockQuote(_)) => {
                end_block(&mut out, &mut block, false);
            }
            // Raw HTML is markup, not words.
            _ => {}
        }
    }
    end_block(&mut out, &mut block, false);
    out
}

fn end_block(out: &mut String, block: &mut String, close: bool) {
    let text = block.trim();
    if !text.is_empty() {
        out.push_str(text);
        let last = text.chars().last().unwrap_or(' ');
        if close && !is_terminal(last) && !is_closer(last) {
            out.push(if is_cjk(last) { '。' } else { '.' });
        }
        out.push('\n');
    }
    block.clear();
}

fn is_terminal(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '。' | '！' | '？' | '؟' | '۔' | '।' | '॥' | ':' | ';'
    )
}

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}' // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' // Han
        | '\u{FF66}'..='\u{FF9D}' // half-width Katakana
        | '\u{20000}'..='\u{2FA1F}')
}

fn is_thai(c: char) -> bool {
    ('\u{0E00}'..='\u{0E7F}').contains(&c)
}

/// Whether a sentence ends at an abbreviation or an initial ("J."), not at its end.
fn ends_with_abbreviation(sentence: &str) -> bool {
    let last = sentence.split_whitespace().last().unwrap_or_default();
    let last = last.trim_start_matches(['(', '"', '“', '\'', '‘']);
    let lower = last.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    // A capital initial: "J. R. R. Tolkien".
    let mut chars = last.chars();
    matches!((chars.next(), chars.next(), chars.next()), (Some(c), Some('.'), None) if c.is_uppercase())
}

/// The script's sentences, in order, with their closing quotes and brackets; Markdown is
/// read first (`plain_text`). Thai, written without sentence punctuation, ends a
/// sentence where a space stands between Thai letters.
pub fn sentences(text: &str) -> Vec<String> {
    let plain = plain_text(text);
    let mut out = Vec::new();
    for line in plain.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut pending = String::new();
        for bound in line.split_sentence_bounds() {
            pending.push_str(bound);
            if ends_with_abbreviation(pending.trim_end()) {
                continue;
            }
            for part in split_thai(&pending) {
                push_sentence(&mut out, &part);
            }
            pending.clear();
        }
        for part in split_thai(&pending) {
            push_sentence(&mut out, &part);
        }
    }
    out
}

fn split_thai(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            let before = current.chars().last();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let after = chars.get(j).copied();
            if before.is_some_and(is_thai) && after.is_some_and(is_thai) {
                parts.push(std::mem::take(&mut current));
            } else {
                current.push(' ');
            }
            i = j;
            continue;
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']')
}

fn push_sentence(out: &mut Vec<String>, sentence: &str) {
    let s = sentence.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
}

/// How much there is to say, in words: a word per space-separated word, and for scripts
/// written without spaces a share of a word per character (`CJK_CHAR_UNITS`,
/// `THAI_CHAR_UNITS`).
pub fn speech_units(s: &str) -> f64 {
    s.split_whitespace()
        .map(|token| {
            let (mut cjk, mut thai, mut other) = (0usize, 0usize, false);
            for c in token.chars() {
                if is_cjk(c) {
                    cjk += 1;
                } else if is_thai(c) {
                    thai += 1;
                } else if c.is_alphanumeric() {
                    other = true;
                }
            }
            f64::from(u8::from(other)) + cjk as f64 * CJK_CHAR_UNITS + thai as f64 * THAI_CHAR_UNITS
        })
        .sum()
}

/// Groups sentences into about `scene_count` scenes of similar word counts; a scene never
/// grows past `max_chars` (another scene starts instead).
pub fn group(sentences: &[String], scene_count: usize, max_chars: usize) -> Vec<String> {
    let scene_count = scene_count.clamp(1, sentences.len().max(1));
    let total: f64 = sentences.iter().map(|s| speech_units(s)).sum();
    let mut scenes: Vec<String> = Vec::with_capacity(scene_count);
    let mut current = String::new();
    let mut words_done = 0.0;
    for (i, sentence) in sentences.iter().enumerate() {
        if !current.is_empty() && current.chars().count() + 1 + sentence.chars().count() > max_chars
        {
            scenes.push(std::mem::take(&mut current));
        }
        if !current.is_empty() && !joins_without_space(&current, sentence) {
            current.push(' ');
        }
        current.push_str(sentence);
        words_done += speech_units(sentence);
        let remaining_sentences = sentences.len() - i - 1;
        let remaining_scenes = scene_count.saturating_sub(scenes.len() + 1);
        // Close the scene once it reaches its share of the words, but always leave at
        // least one sentence for each scene still to come.
        let share = total * (scenes.len() + 1) as f64 / scene_count as f64;
        let must_close = remaining_sentences == remaining_scenes && remaining_scenes > 0;
        if remaining_scenes > 0 && (words_done >= share - 0.5 || must_close) {
            scenes.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        scenes.push(current);
    }
    scenes
}

/// Chinese and Japanese sentences follow each other without a space.
fn joins_without_space(before: &str, next: &str) -> bool {
    let last = before.chars().last().unwrap_or(' ');
    let first = next.chars().next().unwrap_or(' ');
    (is_cjk(last) || matches!(last, '。' | '！' | '？' | '」' | '』')) && is_cjk(first)
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
            seconds: ((speech_units(narration) / WORDS_PER_SECOND)
                .clamp(2.0, limits::SCENE_SECONDS_MAX)
                * 10.0)
                .round()
                / 10.0,
        })
        .collect();
    let first = sentences.first().cloned().unwrap_or_default();
    let title = {
        let words: Vec<&str> = first
            .trim_end_matches(is_terminal)
            .split_whitespace()
            .take(10)
            .collect();
        // Ten words, or 80 characters of a script written without spaces.
        let title = clip(&words.join(" "), 80);
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
            speed: Some(1.0),
            transition: crate::model::Transition::Fade,
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

    /// Scripts in the languages creators write in, with abbreviations, decimals, Markdown
    /// and a 300-character unbroken token: the sentences, exactly, and the scenes they make.
    #[test]
    fn scripts_in_many_languages() {
        let token = "x".repeat(300);
        let unbroken = format!("Look at this: {token} and more. Then stop.");
        let first_of_unbroken = format!("Look at this: {token} and more.");
        let cases: Vec<(&str, &str, Vec<&str>)> = vec![
            (
                "English",
                "Dr. Smith met Mrs. Jones at 3.5 p.m. near the U.S. Capitol. They talked, e.g. about J. R. R. Tolkien. It was fun!",
                vec![
                    "Dr. Smith met Mrs. Jones at 3.5 p.m. near the U.S. Capitol.",
                    "They talked, e.g. about J. R. R. Tolkien.",
                    "It was fun!",
                ],
            ),
            (
                "Chinese",
                "今天天气很好。我们去公园散步吧！你觉得怎么样？",
                vec!["今天天气很好。", "我们去公园散步吧！", "你觉得怎么样？"],
            ),
            (
                "Japanese",
                "東京は大きな都市です。人口は一千万人を超えます。とても賑やかです！",
                vec!["東京は大きな都市です。", "人口は一千万人を超えます。", "とても賑やかです！"],
            ),
            (
                "Arabic",
                "مرحبا بكم في القناة. اليوم نتحدث عن البحر؟ شكرا لكم.",
                vec!["مرحبا بكم في القناة.", "اليوم نتحدث عن البحر؟", "شكرا لكم."],
            ),
            (
                "Thai",
                "วันนี้อากาศดีมาก เราไปเที่ยวทะเลกัน สนุกมาก",
                vec!["วันนี้อากาศดีมาก", "เราไปเที่ยวทะเลกัน", "สนุกมาก"],
            ),
            (
                "Hindi",
                "आज मौसम अच्छा है। हम बाज़ार जाएंगे। बहुत मज़ा आएगा।",
                vec!["आज मौसम अच्छा है।", "हम बाज़ार जाएंगे।", "बहुत मज़ा आएगा।"],
            ),
            (
                "German",
                "Das ist z.B. ein Test. Die Wohnung liegt in der Hauptstr. 5 in Berlin. Das kostet ca. 2,50 Euro!",
                vec![
                    "Das ist z.B. ein Test.",
                    "Die Wohnung liegt in der Hauptstr. 5 in Berlin.",
                    "Das kostet ca. 2,50 Euro!",
                ],
            ),
            (
                "Spanish",
                "¡Hola a todos! La Sra. García vive en la calle Mayor. ¿Vamos a verla?",
                vec!["¡Hola a todos!", "La Sra. García vive en la calle Mayor.", "¿Vamos a verla?"],
            ),
            (
                "Markdown",
                "# Our trip\n\nWe went to **the sea** and saw [dolphins](https://example.com).\n\n- Sun\n- Sand\n\n> Bring `water`.",
                vec!["Our trip.", "We went to the sea and saw dolphins.", "Sun.", "Sand.", "Bring water."],
            ),
            (
                "unbroken",
                &unbroken,
                vec![&first_of_unbroken, "Then stop."],
            ),
        ];
        for (name, script, expected) in &cases {
            assert_eq!(&sentences(script), expected, "{name}");
            let out = split(script, &presets(expected.len() as u32));
            let narrations: Vec<&str> = out.scenes.iter().map(|s| s.narration.as_str()).collect();
            assert_eq!(&narrations, expected, "{name}: one scene a sentence");
            assert!(
                !out.title.is_empty() && out.title.chars().count() <= 80,
                "{name}: {}",
                out.title
            );
        }
        // Lengths follow the script: 55 Chinese characters are read in about 11 s, and
        // two scenes of Chinese split it in halves.
        let long = "我们今天一起去看大海吧".repeat(5);
        assert_eq!(
            split(&format!("{long}。"), &presets(1)).scenes[0].seconds,
            11.0
        );
        let two = format!("{long}。{long}。{long}。{long}。");
        let out = split(&two, &presets(2));
        assert_eq!(out.scenes.len(), 2);
        assert_eq!(
            out.scenes[0].narration,
            format!("{long}。{long}。"),
            "no space between"
        );
        assert_eq!(
            split("Dr. Who arrives.", &presets(1)).title,
            "Dr. Who arrives"
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
