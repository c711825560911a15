//! Captions: a narration's words as timed cues, in the admin's caption style.
//!
//! Cues follow the narration as spoken when its word timings are known (espeak-ng's word
//! events, `espeak::WordTime`, or a transcript's word timestamps matched to the narration
//! by [`align`]); otherwise each cue's start is its share of the characters before it
//! over the narration's duration. Lines wrap by Unicode's
//! line-breaking rules (`text_layout::wrap`). Styles, as `caption_style` names them:
//! - `lines`: up to two lines at a time;
//! - `word`: one word at a time, as it is spoken;
//! - `highlight`: the lines, with the word being spoken in the highlight colour (the
//!   `.srt` then holds the plain lines).

use unicode_segmentation::UnicodeSegmentation;

use super::espeak::WordTime;

/// One caption: shown from `start_ms` to `end_ms` (ms from the start of its scene).
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The words, lines separated by `\n`.
    pub text: String,
    /// Characters of `text` (from, to) drawn in the highlight colour.
    pub highlight: Option<(usize, usize)>,
}

/// The caption styles `caption_style` may name.
pub const STYLES: [&str; 3] = ["lines", "word", "highlight"];

/// A scene's cues: for the `.srt` and for burning in (the same, except for `highlight`).
pub struct Captions {
    pub srt: Vec<Cue>,
    pub burned: Vec<Cue>,
}

/// Where each non-space character of the narration is, and when it is spoken.
struct Timeline<'a> {
    /// The narration's characters.
    chars: Vec<char>,
    /// The char index of the n-th non-whitespace character.
    visible: Vec<usize>,
    words: Option<&'a [WordTime]>,
    speech_ms: i64,
}

impl<'a> Timeline<'a> {
    fn new(narration: &str, speech_ms: i64, words: Option<&'a [WordTime]>) -> Self {
        let chars: Vec<char> = narration.chars().collect();
        let visible = chars
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_whitespace())
            .map(|(i, _)| i)
            .collect();
        Self {
            chars,
            visible,
            words: words.filter(|w| !w.is_empty()),
            speech_ms,
        }
    }

    /// When the character at `index` is spoken: the start of the word holding it (or
    /// the last word before it), else its share of the characters.
    fn time_at(&self, index: usize) -> i64 {
        match self.words {
            // Inside a word, between its start and the next word's by its letters: a
            // line that begins mid-word (a 300-letter word cut into lines) gets its own
            // time, not its word's.
            Some(words) => {
                let at = words.partition_point(|w| w.char_start <= index);
                match at.checked_sub(1).map(|i| (&words[i], words.get(i + 1))) {
                    None => 0,
                    Some((word, next)) => {
                        let next_ms = next.map_or(self.speech_ms, |n| n.start_ms);
                        let into = index - word.char_start;
                        if into == 0 || into >= word.char_len {
                            word.start_ms
                        } else {
                            word.start_ms
                                + ((next_ms - word.start_ms) as f64 * into as f64
                                    / word.char_len as f64)
                                    .round() as i64
                        }
                    }
                }
            }
            None => {
                let before = self.visible.partition_point(|&i| i < index);
                (self.speech_ms as f64 * before as f64 / self.visible.len().max(1) as f64).round()
                    as i64
            }
        }
        .clamp(0, self.speech_ms)
    }

    /// The spoken words as (first char, length), in order: the engine's, or the
    /// narration's words by Unicode's word bounds.
    fn word_spans(&self) -> Vec<(usize, usize)> {
        if let Some(words) = self.words {
            return words
                .iter()
                .filter(|w| w.char_start + w.char_len <= self.chars.len())
                .map(|w| (w.char_start, w.char_len))
                .collect();
        }
        let text: String = self.chars.iter().collect();
        let mut spans = Vec::new();
        let mut char_index = 0;
        for piece in text.split_word_bounds() {
            let len = piece.chars().count();
            if piece.chars().any(char::is_alphanumeric) {
                spans.push((char_index, len));
            }
            char_index += len;
        }
        spans
    }
}

/// The cues of one scene's narration lasting `speech_ms`, lines of at most `columns`
/// display columns, in `style` (an unknown style reads as `lines`).
pub fn captions(
    narration: &str,
    speech_ms: i64,
    columns: usize,
    words: Option<&[WordTime]>,
    style: &str,
) -> Captions {
    let timeline = Timeline::new(narration, speech_ms, words);
    let lines = line_cues(narration, &timeline, columns);
    match style {
        "word" => {
            let words = word_cues(&timeline);
            Captions {
                srt: words.clone(),
                burned: words,
            }
        }
        "highlight" => Captions {
            burned: highlighted(&lines, &timeline),
            srt: lines.into_iter().map(|(cue, _)| cue).collect(),
        },
        _ => {
            let lines: Vec<Cue> = lines.into_iter().map(|(cue, _)| cue).collect();
            Captions {
                srt: lines.clone(),
                burned: lines,
            }
        }
    }
}

/// Cues of up to two lines, each with the index (in `timeline.visible`) of its first
/// non-space character. A sentence end (Unicode's sentence bounds, so `。` and `।` too)
/// closes a cue once it holds half a line, so cues follow the narration's rhythm.
fn line_cues(narration: &str, timeline: &Timeline, columns: usize) -> Vec<(Cue, usize)> {
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut pending = String::new();
    let flush = |pending: &mut String, chunks: &mut Vec<Vec<String>>| {
        let lines = super::text_layout::wrap(pending, columns);
        chunks.extend(lines.chunks(2).map(<[String]>::to_vec));
        pending.clear();
    };
    for sentence in narration.split_sentence_bounds() {
        pending.push_str(sentence);
        if super::text_layout::columns(pending.trim()) > columns / 2 {
            flush(&mut pending, &mut chunks);
        }
    }
    if !pending.trim().is_empty() {
        flush(&mut pending, &mut chunks);
    }
    // Wrapping drops only whitespace, so the n-th visible character of the chunks is the
    // n-th of the narration.
    let mut first_visible = 0usize;
    let starts: Vec<(i64, usize)> = chunks
        .iter()
        .map(|chunk| {
            let at = first_visible;
            first_visible += chunk
                .iter()
                .map(|l| l.chars().filter(|c| !c.is_whitespace()).count())
                .sum::<usize>();
            let start = match timeline.visible.get(at) {
                Some(&index) if at > 0 => timeline.time_at(index),
                _ => 0,
            };
            (start, at)
        })
        .collect();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let (start, at) = starts[i];
            let end = starts
                .get(i + 1)
                .map_or(timeline.speech_ms, |next| next.0)
                .max(start + 1);
            (
                Cue {
                    start_ms: start,
                    end_ms: end,
                    text: chunk.join("\n"),
                    highlight: None,
                },
                at,
            )
        })
        .collect()
}

/// One cue per spoken word, from its start to the next word's.
fn word_cues(timeline: &Timeline) -> Vec<Cue> {
    /// Words spoken closer together than this share a cue: a cue too short to read
    /// (engines report pieces of a Thai or Japanese word, or of a number, as words).
    const SHORTEST_MS: i64 = 50;
    // Whole grapheme clusters only: a Thai tone mark or a Hindi vowel sign belongs to
    // the letter before it, and a cue must never start or end between them.
    let text: String = timeline.chars.iter().collect();
    let mut bounds = vec![false; timeline.chars.len() + 1];
    let mut index = 0;
    for grapheme in text.graphemes(true) {
        bounds[index] = true;
        index += grapheme.chars().count();
    }
    bounds[index] = true;
    let snap_down = |mut i: usize| {
        while i > 0 && !bounds[i] {
            i -= 1;
        }
        i
    };
    let snap_up = |mut i: usize| {
        while i < timeline.chars.len() && !bounds[i] {
            i += 1;
        }
        i
    };
    // (first char, end char, start ms), in order, overlaps and near neighbours merged.
    let mut spans: Vec<(usize, usize, i64)> = Vec::new();
    for (at, len) in timeline.word_spans() {
        let (from, to) = (snap_down(at), snap_up(at + len));
        let start = if spans.is_empty() {
            0
        } else {
            timeline.time_at(at)
        };
        match spans.last_mut() {
            Some(last) if from < last.1 || start - last.2 < SHORTEST_MS => {
                last.1 = last.1.max(to);
            }
            _ => spans.push((from, to, start)),
        }
    }
    let mut cues: Vec<Cue> = Vec::new();
    for (from, to, start) in spans {
        let words: String = timeline.chars[from..to].iter().collect();
        if words.trim().is_empty() {
            continue;
        }
        if let Some(previous) = cues.last_mut() {
            previous.end_ms = start;
        }
        cues.push(Cue {
            start_ms: start,
            end_ms: timeline.speech_ms.max(start + 1),
            text: words.trim().to_owned(),
            highlight: None,
        });
    }
    cues
}

/// Each line cue once per word spoken during it, that word highlighted. Right-to-left
/// text keeps its plain lines: libass lays out each side of an override tag as its own
/// run, which reorders Arabic and Hebrew words around the highlighted one.
fn highlighted(lines: &[(Cue, usize)], timeline: &Timeline) -> Vec<Cue> {
    let right_to_left = timeline
        .chars
        .iter()
        .any(|c| matches!(*c as u32, 0x0590..=0x08FF | 0xFB1D..=0xFDFF | 0xFE70..=0xFEFF));
    if right_to_left {
        return lines.iter().map(|(cue, _)| cue.clone()).collect();
    }
    let spans = timeline.word_spans();
    let mut out = Vec::new();
    for (cue, first_visible) in lines {
        // The cue's text with, for each visible character, its char index in the text.
        let text_chars: Vec<char> = cue.text.chars().collect();
        let text_visible: Vec<usize> = text_chars
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_whitespace())
            .map(|(i, _)| i)
            .collect();
        let mut events: Vec<Cue> = Vec::new();
        for &(at, len) in &spans {
            // The word's visible characters, as indices into the cue's visible ones.
            let from = timeline.visible.partition_point(|&i| i < at);
            let to = timeline.visible.partition_point(|&i| i < at + len);
            if from < *first_visible || from >= first_visible + text_visible.len() || to <= from {
                continue;
            }
            let (a, b) = (
                from - first_visible,
                (to - first_visible).min(text_visible.len()),
            );
            let mut start = timeline.time_at(at).clamp(cue.start_ms, cue.end_ms - 1);
            if let Some(previous) = events.last_mut() {
                start = start.max(previous.start_ms + 1);
                previous.end_ms = start;
            }
            events.push(Cue {
                start_ms: if events.is_empty() {
                    cue.start_ms
                } else {
                    start
                },
                end_ms: cue.end_ms,
                text: cue.text.clone(),
                highlight: Some((text_visible[a], text_visible[b - 1] + 1)),
            });
        }
        if events.is_empty() {
            out.push(cue.clone());
        } else {
            out.extend(events);
        }
    }
    out
}

/// The narration's words timed by a transcript of its sound (`providers::transcribe`):
/// narration and transcript words are matched in order by their letters (case and
/// punctuation aside, looking a few words ahead, as a transcript may split, merge or
/// miss words); a narration word without a match gets a time between its matched
/// neighbours, by its letters. `None` when fewer than half match: a transcript that far
/// off (another language, numbers written out) would mistime more than the estimate.
pub fn align(narration: &str, heard: &[(String, i64)], speech_ms: i64) -> Option<Vec<WordTime>> {
    let timeline = Timeline::new(narration, speech_ms, None);
    let spans = timeline.word_spans();
    if spans.is_empty() {
        return None;
    }
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let heard: Vec<(String, i64)> = heard
        .iter()
        .map(|(w, ms)| (key(w), *ms))
        .filter(|(w, _)| !w.is_empty())
        .collect();
    const LOOK_AHEAD: usize = 4;
    let mut next = 0;
    let mut times: Vec<Option<i64>> = Vec::with_capacity(spans.len());
    for &(at, len) in &spans {
        let word: String = key(&timeline.chars[at..at + len].iter().collect::<String>());
        let found = (next..heard.len().min(next + LOOK_AHEAD)).find(|&k| heard[k].0 == word);
        match found {
            Some(k) => {
                times.push(Some(heard[k].1.clamp(0, speech_ms)));
                next = k + 1;
            }
            None => times.push(None),
        }
    }
    let matched = times.iter().filter(|t| t.is_some()).count();
    if matched * 2 < spans.len() {
        return None;
    }
    // Unmatched words: between the matched neighbours, by their position in the letters.
    let mut out = Vec::with_capacity(spans.len());
    for (i, &(at, len)) in spans.iter().enumerate() {
        let start_ms = match times[i] {
            Some(ms) => ms,
            None => {
                let before = (0..i).rev().find_map(|j| times[j].map(|t| (spans[j].0, t)));
                let after = (i + 1..spans.len()).find_map(|j| times[j].map(|t| (spans[j].0, t)));
                let (a_at, a_ms) = before.unwrap_or((0, 0));
                let (b_at, b_ms) = after.unwrap_or((timeline.chars.len(), speech_ms));
                let share = (at - a_at) as f64 / (b_at - a_at).max(1) as f64;
                a_ms + ((b_ms - a_ms) as f64 * share).round() as i64
            }
        };
        out.push(WordTime {
            char_start: at,
            char_len: len,
            start_ms,
        });
    }
    // Never backwards: a transcript's times are monotonic, and so must the result be.
    for i in 1..out.len() {
        if out[i].start_ms < out[i - 1].start_ms {
            out[i].start_ms = out[i - 1].start_ms;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The first sentence is short. The second sentence is a good deal longer than the first one was, and it keeps going.";

    fn lines(text: &str, ms: i64, columns: usize) -> Vec<Cue> {
        captions(text, ms, columns, None, "lines").burned
    }

    #[test]
    fn cues_cover_the_narration_in_order() {
        let cues = lines(TEXT, 6_000, 42);
        assert!(cues.len() >= 2);
        assert_eq!(cues[0].start_ms, 0);
        assert_eq!(cues.last().unwrap().end_ms, 6_000);
        for pair in cues.windows(2) {
            assert_eq!(pair[0].end_ms, pair[1].start_ms);
        }
        for cue in &cues {
            let lines: Vec<&str> = cue.text.lines().collect();
            assert!(
                lines.len() <= 2 && lines.iter().all(|l| l.chars().count() <= 42),
                "{cue:?}"
            );
        }
        let joined: Vec<&str> = cues
            .iter()
            .flat_map(|c| c.text.split_whitespace())
            .collect();
        assert_eq!(joined, TEXT.split_whitespace().collect::<Vec<_>>());
    }

    /// Word timings as an engine would report them: word `i` at `i * 300` ms.
    fn timed(text: &str) -> Vec<WordTime> {
        let chars: Vec<char> = text.chars().collect();
        let mut words = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_alphanumeric() {
                let start = i;
                while i < chars.len() && chars[i].is_alphanumeric() {
                    i += 1;
                }
                words.push(WordTime {
                    char_start: start,
                    char_len: i - start,
                    start_ms: words.len() as i64 * 300,
                });
            } else {
                i += 1;
            }
        }
        words
    }

    #[test]
    fn word_cues_start_where_the_engine_placed_each_word() {
        let words = timed(TEXT);
        let cues = captions(TEXT, 7_000, 42, Some(&words), "word").srt;
        assert_eq!(cues.len(), words.len());
        for (cue, word) in cues.iter().zip(&words) {
            assert_eq!(cue.start_ms, word.start_ms, "{cue:?}");
            let said: String = TEXT
                .chars()
                .skip(word.char_start)
                .take(word.char_len)
                .collect();
            assert_eq!(cue.text, said);
        }
        assert_eq!(cues.last().unwrap().end_ms, 7_000);
        // Lines start with their first word, not with their share of the letters.
        let lines = captions(TEXT, 7_000, 42, Some(&words), "lines").srt;
        let words_before = lines[0].text.split_whitespace().count();
        assert_eq!(lines[1].start_ms, words_before as i64 * 300, "{lines:?}");
    }

    #[test]
    fn highlight_walks_each_line_word_by_word() {
        let words = timed(TEXT);
        let captions = captions(TEXT, 7_000, 42, Some(&words), "highlight");
        assert_eq!(captions.burned.len(), words.len());
        for (cue, word) in captions.burned.iter().zip(&words) {
            let (a, b) = cue.highlight.expect("a highlighted word");
            let lit: String = cue.text.chars().skip(a).take(b - a).collect();
            let said: String = TEXT
                .chars()
                .skip(word.char_start)
                .take(word.char_len)
                .collect();
            assert_eq!(lit, said);
        }
        for pair in captions.burned.windows(2) {
            assert_eq!(pair[0].end_ms, pair[1].start_ms, "{pair:?}");
        }
        // The .srt keeps the plain lines.
        assert!(captions.srt.iter().all(|c| c.highlight.is_none()));
        assert!(captions.srt.len() < captions.burned.len());
    }

    #[test]
    fn transcripts_time_the_narration_s_words() {
        let narration = "Octopuses have three hearts; two pump blood.";
        // Heard: one word merged, one missing, punctuation and case of its own.
        let heard: Vec<(String, i64)> = [
            ("octopuses", 0),
            ("Have", 600),
            ("three", 900),
            ("hearts,", 1300),
            ("pump", 2200),
            ("blood.", 2600),
        ]
        .iter()
        .map(|(w, ms)| (w.to_string(), *ms))
        .collect();
        let words = align(narration, &heard, 3_200).expect("aligned");
        let times: Vec<i64> = words.iter().map(|w| w.start_ms).collect();
        // "two" was not heard: it falls between "hearts" and "pump".
        assert_eq!(times[..4], [0, 600, 900, 1300]);
        assert!(times[4] > 1300 && times[4] < 2200, "{times:?}");
        assert_eq!(times[5..], [2200, 2600]);
        // A transcript of something else is refused.
        let other: Vec<(String, i64)> = vec![("completely".into(), 0), ("different".into(), 500)];
        assert_eq!(align(narration, &other, 3_200), None);
    }

    #[test]
    fn a_long_word_cut_into_lines_gets_times_within_it() {
        let long = "x".repeat(120);
        let text = format!("Short {long} end.");
        let words = timed(&text);
        let cues = captions(&text, 3_000, 42, Some(&words), "lines").srt;
        for pair in cues.windows(2) {
            assert!(pair[1].start_ms - pair[0].start_ms >= 50, "{cues:?}");
        }
    }

    #[test]
    fn right_to_left_lines_are_not_split_by_highlights() {
        let text = "للأخطبوط ثلاثة قلوب.";
        let words = timed(text);
        let captions = captions(text, 2_000, 42, Some(&words), "highlight");
        assert!(captions.burned.iter().all(|c| c.highlight.is_none()));
    }

    #[test]
    fn word_cues_keep_whole_clusters_and_readable_lengths() {
        // An engine reporting a Thai word in pieces, the second starting inside a
        // cluster (before its tone mark), 20 ms after the first.
        let text = "ปลาหมึกยักษ์ มีหัวใจ";
        let chars: Vec<char> = text.chars().collect();
        let mark = chars.iter().position(|c| *c == '์').unwrap();
        let words = vec![
            WordTime {
                char_start: 0,
                char_len: mark - 1,
                start_ms: 0,
            },
            WordTime {
                char_start: mark - 1,
                char_len: 1,
                start_ms: 20,
            },
            WordTime {
                char_start: mark + 2,
                char_len: chars.len() - mark - 2,
                start_ms: 900,
            },
        ];
        let cues = captions(text, 1_500, 42, Some(&words), "word").srt;
        let texts: Vec<&str> = cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["ปลาหมึกยักษ์", "มีหัวใจ"]);
        assert_eq!((cues[1].start_ms, cues[1].end_ms), (900, 1_500));
        // The same sentence reported again and again is one cue, not many 1 ms ones.
        let repeated: Vec<WordTime> = (0..5)
            .map(|i| WordTime {
                char_start: 0,
                char_len: chars.len(),
                start_ms: i,
            })
            .collect();
        assert_eq!(
            captions(text, 1_500, 42, Some(&repeated), "word").srt.len(),
            1
        );
    }

    #[test]
    fn estimated_words_without_an_engine() {
        let cues = captions("章鱼有三颗心脏。Two more words.", 3_000, 42, None, "word").srt;
        let texts: Vec<&str> = cues.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts.last(), Some(&"words"));
        assert_eq!(cues[0].start_ms, 0);
        for pair in cues.windows(2) {
            assert!(pair[0].start_ms < pair[1].start_ms);
        }
    }
}
