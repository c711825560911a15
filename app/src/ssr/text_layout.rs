//! Text on the frame and in the narrator's mouth, for any language: which espeak-ng voice
//! and which font a content's language gets, the language of a text when the creator did
//! not say, and lines that fit a width.
//!
//! Lines break where Unicode's line-breaking rules allow (UAX #14, through `textwrap` with
//! `unicode-linebreak`), so Chinese and Japanese break between characters and never
//! inside a word elsewhere; widths are East Asian display columns (`unicode-width`: a CJK
//! character is two), and a token longer than a line (a URL, a 300-letter word) is cut
//! where it must, so no line ever runs off the frame.

use textwrap::{Options, WordSeparator};

/// `text` in lines of at most `columns` display columns (at least 1). Existing line breaks
/// are kept; runs of spaces inside a line become one.
pub fn wrap(text: &str, columns: usize) -> Vec<String> {
    let options = Options::new(columns.max(1))
        .word_separator(WordSeparator::UnicodeBreakProperties)
        .break_words(true);
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .flat_map(|line| {
            textwrap::wrap(&line, &options)
                .into_iter()
                .map(|l| l.trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Display columns of `text` (a CJK character counts two).
pub fn columns(text: &str) -> usize {
    textwrap::core::display_width(text)
}

/// A font family cards and subtitles ask fontconfig for (other scripts in the text still
/// come from whichever installed font has them), with its height: ascent plus descent
/// (the `hhea` table's), in em. libass, like VSFilter, sizes a font so that this height
/// is the style's Fontsize, so a tall font (Noto Sans Arabic: 2.1 em) draws its letters
/// at half the size of DejaVu's; sizes are scaled by it to give every script the same em.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Font {
    pub family: &'static str,
    pub height_em: f32,
}

impl Font {
    /// The ASS Fontsize that draws this font's em at `em` units.
    pub fn ass_size(self, em: f32) -> f32 {
        em * self.height_em
    }
}

/// The heights are read from the fonts Debian's packages install (`fonts-dejavu-core`,
/// `fonts-noto-core`, `fonts-noto-cjk`), bold faces.
pub const DEJAVU: Font = Font {
    family: "DejaVu Sans",
    height_em: 1.164,
};
const NOTO_CJK_SC: Font = Font {
    family: "Noto Sans CJK SC",
    height_em: 1.448,
};
const NOTO_CJK_TC: Font = Font {
    family: "Noto Sans CJK TC",
    height_em: 1.448,
};
const NOTO_CJK_JP: Font = Font {
    family: "Noto Sans CJK JP",
    height_em: 1.448,
};
const NOTO_CJK_KR: Font = Font {
    family: "Noto Sans CJK KR",
    height_em: 1.448,
};
const NOTO_ARABIC: Font = Font {
    family: "Noto Sans Arabic",
    height_em: 2.112,
};
const NOTO_HEBREW: Font = Font {
    family: "Noto Sans Hebrew",
    height_em: 1.36,
};
const NOTO_DEVANAGARI: Font = Font {
    family: "Noto Sans Devanagari",
    height_em: 1.304,
};
const NOTO_BENGALI: Font = Font {
    family: "Noto Sans Bengali",
    height_em: 1.325,
};
const NOTO_TAMIL: Font = Font {
    family: "Noto Sans Tamil",
    height_em: 1.24,
};
const NOTO_THAI: Font = Font {
    family: "Noto Sans Thai",
    height_em: 1.511,
};

/// A language as creators name it: in English or in itself, or an ISO 639-1 or 639-3
/// code. The first entry is its canonical name; `espeak` its espeak-ng voice
/// (`espeak-ng --voices`).
struct Language {
    names: &'static [&'static str],
    espeak: &'static str,
    font: Font,
}

const DEFAULT_FONT: Font = DEJAVU;

/// Languages with a voice of their own. Han characters differ between Chinese, Japanese
/// and Korean, so each gets its Noto CJK family; Arabic-script and Indic text needs
/// shaping fonts, which Noto has and DejaVu lacks.
const LANGUAGES: &[Language] = &[
    Language {
        names: &["English", "en", "eng"],
        espeak: "en",
        font: DEFAULT_FONT,
    },
    Language {
        names: &[
            "Chinese",
            "Mandarin",
            "中文",
            "汉语",
            "普通话",
            "zh",
            "cmn",
            "zh-cn",
        ],
        espeak: "cmn",
        font: NOTO_CJK_SC,
    },
    Language {
        names: &["Cantonese", "粵語", "yue", "zh-hk"],
        espeak: "yue",
        font: NOTO_CJK_TC,
    },
    Language {
        names: &["Traditional Chinese", "繁體中文", "zh-tw", "zh-hant"],
        espeak: "cmn",
        font: NOTO_CJK_TC,
    },
    Language {
        names: &["Japanese", "日本語", "ja", "jpn"],
        espeak: "ja",
        font: NOTO_CJK_JP,
    },
    Language {
        names: &["Korean", "한국어", "ko", "kor"],
        espeak: "ko",
        font: NOTO_CJK_KR,
    },
    Language {
        names: &["Arabic", "العربية", "ar", "ara"],
        espeak: "ar",
        font: NOTO_ARABIC,
    },
    Language {
        names: &["Persian", "Farsi", "فارسی", "fa", "pes"],
        espeak: "fa",
        font: NOTO_ARABIC,
    },
    Language {
        names: &["Urdu", "اردو", "ur", "urd"],
        espeak: "ur",
        font: NOTO_ARABIC,
    },
    Language {
        names: &["Hebrew", "עברית", "he", "heb"],
        espeak: "he",
        font: NOTO_HEBREW,
    },
    Language {
        names: &["Hindi", "हिन्दी", "हिंदी", "hi", "hin"],
        espeak: "hi",
        font: NOTO_DEVANAGARI,
    },
    Language {
        names: &["Marathi", "मराठी", "mr", "mar"],
        espeak: "mr",
        font: NOTO_DEVANAGARI,
    },
    Language {
        names: &["Nepali", "नेपाली", "ne", "nep"],
        espeak: "ne",
        font: NOTO_DEVANAGARI,
    },
    Language {
        names: &["Bengali", "Bangla", "বাংলা", "bn", "ben"],
        espeak: "bn",
        font: NOTO_BENGALI,
    },
    Language {
        names: &["Tamil", "தமிழ்", "ta", "tam"],
        espeak: "ta",
        font: NOTO_TAMIL,
    },
    Language {
        names: &["Thai", "ไทย", "th", "tha"],
        espeak: "th",
        font: NOTO_THAI,
    },
    Language {
        names: &["Vietnamese", "Tiếng Việt", "vi", "vie"],
        espeak: "vi",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Indonesian", "Bahasa Indonesia", "id", "ind"],
        espeak: "id",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Malay", "Bahasa Melayu", "ms", "msa"],
        espeak: "ms",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["French", "Français", "fr", "fra"],
        espeak: "fr",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Spanish", "Español", "es", "spa"],
        espeak: "es",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["German", "Deutsch", "de", "deu"],
        espeak: "de",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Portuguese", "Português", "pt", "por"],
        espeak: "pt",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Italian", "Italiano", "it", "ita"],
        espeak: "it",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Dutch", "Nederlands", "nl", "nld"],
        espeak: "nl",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Swedish", "Svenska", "sv", "swe"],
        espeak: "sv",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Danish", "Dansk", "da", "dan"],
        espeak: "da",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Norwegian", "Norsk", "nb", "no", "nob"],
        espeak: "nb",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Finnish", "Suomi", "fi", "fin"],
        espeak: "fi",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Polish", "Polski", "pl", "pol"],
        espeak: "pl",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Czech", "Čeština", "cs", "ces"],
        espeak: "cs",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Turkish", "Türkçe", "tr", "tur"],
        espeak: "tr",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Greek", "Ελληνικά", "el", "ell"],
        espeak: "el",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Russian", "Русский", "ru", "rus"],
        espeak: "ru",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Ukrainian", "Українська", "uk", "ukr"],
        espeak: "uk",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Romanian", "Română", "ro", "ron"],
        espeak: "ro",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Hungarian", "Magyar", "hu", "hun"],
        espeak: "hu",
        font: DEFAULT_FONT,
    },
    Language {
        names: &["Swahili", "Kiswahili", "sw", "swa"],
        espeak: "sw",
        font: DEFAULT_FONT,
    },
];

fn find(language: &str) -> Option<&'static Language> {
    let wanted = language.trim();
    let named = |name: &str| {
        LANGUAGES
            .iter()
            .find(|l| l.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
    };
    // A full tag first ("zh-HK" is Cantonese), then its language part ("pt-BR", "en_US").
    let base = wanted.split(['-', '_']).next().unwrap_or(wanted);
    named(wanted).or_else(|| named(base))
}

/// The espeak-ng voice for a language name or code; English when unknown.
pub fn espeak_voice(language: &str) -> &'static str {
    find(language).map_or("en", |l| l.espeak)
}

/// Whether `code` is the espeak-ng voice of a language CREVID knows (`en`, `cmn`).
pub fn is_espeak_voice(code: &str) -> bool {
    LANGUAGES.iter().any(|l| l.espeak == code)
}

/// The font for a language's cards and subtitles.
pub fn font_for(language: &str) -> Font {
    find(language).map_or(DEFAULT_FONT, |l| l.font)
}

/// The canonical name of a language CREVID knows (`"zh"` → `"Chinese"`), else the
/// creator's own words.
pub fn canonical(language: &str) -> String {
    find(language).map_or_else(|| language.trim().to_owned(), |l| l.names[0].to_owned())
}

/// The language `text` is written in, when `whatlang` is confident of it and CREVID has a
/// voice for it; `None` otherwise (the default language applies).
pub fn detect(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(text)?;
    if info.is_reliable() {
        // whatlang names languages by ISO 639-3 codes, which the table lists.
        if let Some(language) = find(info.lang().code()) {
            return Some(language.names[0]);
        }
    }
    // Not sure of the language, but sure of the writing: its main language reads it far
    // better than an English voice spelling letters.
    use whatlang::Script;
    let by_script = match info.script() {
        Script::Devanagari => "Hindi",
        Script::Cyrillic => "Russian",
        Script::Arabic => "Arabic",
        Script::Hebrew => "Hebrew",
        Script::Hangul => "Korean",
        Script::Hiragana | Script::Katakana => "Japanese",
        Script::Mandarin => "Chinese",
        Script::Thai => "Thai",
        Script::Greek => "Greek",
        Script::Bengali => "Bengali",
        Script::Tamil => "Tamil",
        _ => return None,
    };
    Some(by_script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fit_in_any_script() {
        for (text, width) in [
            ("The quick brown fox jumps over the lazy dog again and again.", 20),
            ("章鱼有三颗心脏。两颗把血液泵过鳃，第三颗供应全身。它们的血是蓝色的。", 20),
            ("タコには心臓が三つあります。そのうち二つはえらに血液を送ります。", 20),
            ("للأخطبوط ثلاثة قلوب، اثنان منها يضخان الدم عبر الخياشيم.", 20),
            ("ऑक्टोपस के तीन दिल होते हैं। उनमें से दो गलफड़ों में खून पंप करते हैं।", 20),
            (&"x".repeat(300), 42),
            ("See https://example.com/a/very/long/path/that/never/ends/with/a/space/at/all/index.html now", 30),
        ] {
            let lines = wrap(text, width);
            assert!(!lines.is_empty());
            for line in &lines {
                assert!(columns(line) <= width, "{line:?} is {} columns", columns(line));
            }
            // Nothing is lost: the words come back, spaces aside.
            let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            assert_eq!(strip(&lines.concat()), strip(text), "{text}");
        }
        // CJK breaks between characters, Latin between words.
        assert_eq!(wrap("日本語の文", 4), vec!["日本", "語の", "文"]);
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
    }

    #[test]
    fn languages_by_any_name() {
        assert_eq!(espeak_voice("Chinese"), "cmn");
        assert_eq!(espeak_voice("日本語"), "ja");
        assert_eq!(espeak_voice("pt-BR"), "pt");
        assert_eq!(espeak_voice("zh-HK"), "yue");
        assert_eq!(font_for("zh-TW").family, "Noto Sans CJK TC");
        assert_eq!(espeak_voice("ar"), "ar");
        assert_eq!(espeak_voice("Klingon"), "en");
        assert_eq!(font_for("Japanese").family, "Noto Sans CJK JP");
        assert_eq!(font_for("हिन्दी").family, "Noto Sans Devanagari");
        assert_eq!(font_for("Spanish"), DEJAVU);
        assert_eq!(canonical("zh"), "Chinese");
        assert_eq!(canonical("Elvish"), "Elvish");
    }

    #[test]
    fn detects_the_language_of_a_script() {
        assert_eq!(
            detect(
                "章鱼有三颗心脏。两颗把血液泵过鳃，第三颗供应全身。它们的血是蓝色的，因为含铜。"
            ),
            Some("Chinese")
        );
        assert_eq!(detect("Los pulpos tienen tres corazones. Dos bombean sangre a las branquias y el tercero al resto del cuerpo."), Some("Spanish"));
        assert_eq!(detect("Kraken haben drei Herzen. Zwei pumpen das Blut durch die Kiemen, das dritte versorgt den Körper."), Some("German"));
        assert_eq!(detect("ok"), None);
        // Not reliable as a language, but plainly in its writing system.
        assert_eq!(
            detect("ऑक्टोपस के तीन दिल होते हैं। उनमें से दो गलफड़ों में खून पंप करते हैं।"),
            Some("Hindi")
        );
        assert_eq!(
            detect("У осьминога три сердца. Два из них качают кровь через жабры."),
            Some("Russian")
        );
    }
}
