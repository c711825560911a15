//! Offline narration with word timings, from espeak-ng's own library.
//!
//! The `espeak-ng` command writes sound only; its library also reports where each word
//! falls in the sound (`espeakEVENT_WORD`: the word's character position and length in
//! the text, and its first sample), which is what captions timed to the words need. The
//! library (`libespeak-ng.so.1`, in Debian's `espeak-ng` package) is loaded at run time
//! with `libloading`, so neither building nor running needs its development headers; when
//! it cannot be loaded, narration falls back to the command and captions to the estimate.
//!
//! The declarations follow espeak-ng's public header `speak_lib.h` (API revision 12),
//! whose ABI has not changed since eSpeak. The library keeps global state and is not
//! reentrant, so every synthesis holds one lock; in `AUDIO_OUTPUT_SYNCHRONOUS` mode it
//! calls back on the calling thread before `espeak_Synth` returns.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// Where a word of the narration falls in its sound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordTime {
    /// The word's first character, counted in characters (not bytes) from the start of the
    /// narration, from 0.
    pub char_start: usize,
    /// Its length in characters.
    pub char_len: usize,
    /// When it starts, in ms from the start of the narration's sound.
    pub start_ms: i64,
}

/// A narration: 16-bit mono PCM WAV bytes, and where each word falls in it.
pub struct Spoken {
    pub wav: Vec<u8>,
    pub words: Vec<WordTime>,
}

/// `espeak_EVENT` (speak_lib.h).
#[repr(C)]
struct Event {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: EventId,
}

/// The event's `id` union (speak_lib.h): a number, a name, or 8 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
union EventId {
    number: c_int,
    name: *const c_char,
    string: [c_char; 8],
}

const EVENT_LIST_TERMINATED: c_int = 0;
const EVENT_WORD: c_int = 1;
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const POS_CHARACTER: c_int = 1;
const CHARS_UTF8: c_uint = 1;
const EE_OK: c_int = 0;
/// `espeakRATE` in `espeak_PARAMETER`: speaking speed in words per minute.
const PARAM_RATE: c_int = 1;
/// `espeakINITIALIZE_DONT_EXIT`: report a failed initialisation instead of exiting.
const INITIALIZE_DONT_EXIT: c_int = 0x8000;

type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut Event) -> c_int;

struct Api {
    set_voice_by_name: unsafe extern "C" fn(*const c_char) -> c_int,
    /// `espeak_SetParameter(parameter, value, relative)`.
    set_parameter: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
    synth: unsafe extern "C" fn(
        *const c_void,
        usize,
        c_uint,
        c_int,
        c_uint,
        c_uint,
        *mut c_uint,
        *mut c_void,
    ) -> c_int,
    synchronize: unsafe extern "C" fn() -> c_int,
    sample_rate: u32,
    // Kept loaded for as long as the functions above are called.
    _library: libloading::Library,
}

/// What one synthesis collects from the callback.
#[derive(Default)]
struct Collected {
    samples: Vec<i16>,
    /// (1-based character position, length in characters, first sample).
    words: Vec<(usize, usize, usize)>,
}

thread_local! {
    // The callback has no context argument worth trusting (user_data is set per event,
    // not on the sound-only calls), and runs on the thread that called espeak_Synth, which
    // holds the lock: a per-thread slot is exactly one synthesis wide.
    static COLLECTED: RefCell<Option<Collected>> = const { RefCell::new(None) };
}

unsafe extern "C" fn collect(wav: *mut c_short, count: c_int, events: *mut Event) -> c_int {
    COLLECTED.with(|slot| {
        let mut slot = slot.borrow_mut();
        let Some(collected) = slot.as_mut() else {
            return;
        };
        if !wav.is_null() && count > 0 {
            // SAFETY: espeak-ng passes `count` samples at `wav`, valid during the call.
            let samples = unsafe { std::slice::from_raw_parts(wav, count as usize) };
            collected.samples.extend_from_slice(samples);
        }
        let mut event = events;
        // SAFETY: the list ends with an espeakEVENT_LIST_TERMINATED entry.
        while !event.is_null() && unsafe { (*event).kind } != EVENT_LIST_TERMINATED {
            let e = unsafe { &*event };
            if e.kind == EVENT_WORD && e.text_position > 0 && e.length > 0 && e.sample >= 0 {
                collected.words.push((
                    e.text_position as usize,
                    e.length as usize,
                    e.sample as usize,
                ));
            }
            event = unsafe { event.add(1) };
        }
    });
    0
}

/// The library, opened and initialised once per process. espeak-ng's state is global to
/// the process, so there is one lock for all of it wherever an [`Espeak`] handle is
/// (tests run several apps in one process): a static, as the library itself is.
static ENGINE: OnceLock<Result<Mutex<Api>, String>> = OnceLock::new();

fn engine() -> &'static Result<Mutex<Api>, String> {
    ENGINE.get_or_init(|| unsafe { open() }.map(Mutex::new))
}

unsafe fn open() -> Result<Api, String> {
    let library =
        unsafe { libloading::Library::new("libespeak-ng.so.1") }.map_err(|e| e.to_string())?;
    let initialize: libloading::Symbol<
        unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int,
    > = unsafe { library.get(b"espeak_Initialize\0") }.map_err(|e| e.to_string())?;
    let set_callback: libloading::Symbol<unsafe extern "C" fn(SynthCallback)> =
        unsafe { library.get(b"espeak_SetSynthCallback\0") }.map_err(|e| e.to_string())?;
    let set_voice_by_name: unsafe extern "C" fn(*const c_char) -> c_int =
        *unsafe { library.get(b"espeak_SetVoiceByName\0") }
            .map_err(|e: libloading::Error| e.to_string())?;
    let set_parameter = *unsafe { library.get(b"espeak_SetParameter\0") }
        .map_err(|e: libloading::Error| e.to_string())?;
    let synth =
        *unsafe { library.get(b"espeak_Synth\0") }.map_err(|e: libloading::Error| e.to_string())?;
    let synchronize = *unsafe { library.get(b"espeak_Synchronize\0") }
        .map_err(|e: libloading::Error| e.to_string())?;
    // Returns the sample rate, or a negative error. Without DONT_EXIT the library calls
    // exit(1) when its data is missing or of another version: the server would die.
    let rate = unsafe {
        initialize(
            AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            std::ptr::null(),
            INITIALIZE_DONT_EXIT,
        )
    };
    if rate <= 0 {
        return Err(format!("espeak_Initialize failed ({rate})"));
    }
    unsafe { set_callback(collect) };
    // With DONT_EXIT a missing data directory still returns a rate; only a voice tells.
    let english = CString::new("en").map_err(|e| e.to_string())?;
    let found = unsafe { set_voice_by_name(english.as_ptr()) };
    if found != EE_OK {
        return Err(format!("espeak-ng's data has no English voice ({found})"));
    }
    Ok(Api {
        set_voice_by_name,
        set_parameter,
        synth,
        synchronize,
        sample_rate: rate as u32,
        _library: library,
    })
}

/// A handle on espeak-ng's library, telling whether it could be loaded.
#[derive(Debug)]
pub struct Espeak {
    loaded: bool,
    /// `espeak-ng --voices=variant`'s listing, read once (`voices::espeak_voices`): the
    /// installed voices do not change while the server runs.
    pub(crate) variant_listing: tokio::sync::OnceCell<String>,
}

impl Default for Espeak {
    fn default() -> Self {
        Self::load()
    }
}

impl Espeak {
    /// Loads and initialises the library (once per process); without it,
    /// [`Espeak::speak`] says so and the caller uses the `espeak-ng` command.
    pub fn load() -> Self {
        let loaded = match engine() {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(error = %e, "espeak-ng's library is not available; narration uses the command, captions the estimate");
                false
            }
        };
        Self {
            loaded,
            variant_listing: tokio::sync::OnceCell::new(),
        }
    }

    pub fn available(&self) -> bool {
        self.loaded
    }

    /// Speaks `text` with `voice` (an espeak-ng voice name, `voices::espeak_voice_for`) at
    /// `words_per_minute` (`voices::espeak_rate`). Blocking: run it off the async runtime.
    /// Errors say what failed, for the log; the caller falls back to the command.
    pub fn speak(&self, voice: &str, text: &str, words_per_minute: u32) -> Result<Spoken, String> {
        let engine = engine()
            .as_ref()
            .map_err(|e| format!("espeak-ng's library is not loaded: {e}"))?;
        let api = engine
            .lock()
            .map_err(|_| "espeak-ng's lock is poisoned".to_owned())?;
        let voice = CString::new(voice).map_err(|_| "a voice name with a NUL".to_owned())?;
        // NULs would end the text early; the words after one would never be spoken.
        let text = text.replace('\0', " ");
        let c_text = CString::new(text.as_str()).map_err(|_| "text with a NUL".to_owned())?;
        COLLECTED.with(|slot| *slot.borrow_mut() = Some(Collected::default()));
        let result = unsafe {
            if (api.set_voice_by_name)(voice.as_ptr()) != EE_OK {
                Err(format!("espeak-ng has no voice {voice:?}"))
            } else if (api.set_parameter)(PARAM_RATE, words_per_minute as c_int, 0) != EE_OK {
                Err(format!("espeak-ng refused the rate {words_per_minute}"))
            } else {
                let bytes = c_text.as_bytes_with_nul();
                let status = (api.synth)(
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    POS_CHARACTER,
                    0,
                    CHARS_UTF8,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
                (api.synchronize)();
                if status == EE_OK {
                    Ok(())
                } else {
                    Err(format!("espeak_Synth failed ({status})"))
                }
            }
        };
        let collected = COLLECTED
            .with(|slot| slot.borrow_mut().take())
            .unwrap_or_default();
        result?;
        if collected.samples.is_empty() {
            return Err("espeak-ng made no sound".into());
        }
        let rate = api.sample_rate;
        let words = collected
            .words
            .iter()
            .map(|&(position, length, sample)| WordTime {
                char_start: position - 1,
                char_len: length,
                start_ms: (sample as u64 * 1000 / u64::from(rate)) as i64,
            })
            .collect();
        Ok(Spoken {
            wav: wav_bytes(&collected.samples, rate),
            words,
        })
    }
}

/// A canonical 44-byte-header PCM WAV of 16-bit mono `samples` at `rate` Hz.
fn wav_bytes(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for sample in samples {
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fall_in_order_inside_the_sound() {
        let espeak = Espeak::load();
        assert!(
            espeak.available(),
            "libespeak-ng.so.1 (Debian's espeak-ng) is installed"
        );
        for (voice, text) in [
            ("en", "Hello world, this is café time."),
            ("cmn", "章鱼有三颗心脏。"),
        ] {
            let spoken = espeak.speak(voice, text, 175).expect("speech");
            let ms = super::super::media::wav_duration_ms(&spoken.wav).expect("a WAV");
            assert!(ms > 500, "{voice}: {ms} ms");
            let chars: Vec<char> = text.chars().collect();
            assert!(!spoken.words.is_empty());
            for pair in spoken.words.windows(2) {
                assert!(pair[0].start_ms < pair[1].start_ms, "{voice}: {pair:?}");
                assert!(pair[0].char_start < pair[1].char_start);
            }
            for word in &spoken.words {
                assert!(word.start_ms < ms && word.char_start + word.char_len <= chars.len());
            }
            if voice == "en" {
                let said: Vec<String> = spoken
                    .words
                    .iter()
                    .map(|w| {
                        chars[w.char_start..w.char_start + w.char_len]
                            .iter()
                            .collect()
                    })
                    .collect();
                assert_eq!(said, ["Hello", "world", "this", "is", "café", "time"]);
            }
        }
    }
}
