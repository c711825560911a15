//! Real but tiny media files for the fake's image and speech answers: tools downstream
//! (ffmpeg, browsers) must be able to open them, yet they have to be cheap to make.

use std::f64::consts::TAU;
use std::io::Write;
use std::time::Duration;

use flate2::write::ZlibEncoder;
use flate2::Compression;

/// Sample rate of the speech answers, as OpenAI's PCM output uses.
pub const SPEECH_SAMPLE_RATE: u32 = 24_000;

/// Seconds of speech per word at speed 1.0.
const SECONDS_PER_WORD: f64 = 0.4;
const MIN_SPEECH: Duration = Duration::from_millis(500);
const TONE_HZ: f64 = 220.0;
/// Quiet enough not to startle anyone who plays a test video.
const TONE_AMPLITUDE: f64 = 0.1 * i16::MAX as f64;

/// The solid colour of the images generated for `prompt`. It is stable across runs and
/// Rust versions (FNV-1a rather than std's hasher), so tests can look for it in frames.
pub fn prompt_colour(prompt: &str) -> [u8; 3] {
    let hash = prompt.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let [r, g, b, ..] = hash.to_be_bytes();
    [r, g, b]
}

/// `W,H` of the first video stream (or picture) in the file at `path`, as ffprobe reads it;
/// Err with ffprobe's complaint when it cannot.
pub fn probe_size(path: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe could not run: {e}"))?;
    let complaint = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !complaint.trim().is_empty() {
        return Err(complaint.trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An 8-bit RGB PNG of one colour.
///
/// # Panics
/// If a side is 0, which PNG does not allow.
pub fn solid_png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    assert!(width > 0 && height > 0, "a PNG needs at least one pixel");
    // Every scanline is the same: filter type 0, then the pixels.
    let mut row = Vec::with_capacity(1 + width as usize * 3);
    row.push(0);
    for _ in 0..width {
        row.extend_from_slice(&rgb);
    }
    // Fast compression: solid rows shrink to almost nothing at any level, and big images
    // are slow to deflate in unoptimised test builds.
    let mut idat = ZlibEncoder::new(Vec::new(), Compression::fast());
    for _ in 0..height {
        idat.write_all(&row).expect("writing to a Vec cannot fail");
    }
    let idat = idat.finish().expect("writing to a Vec cannot fail");

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("a PNG chunk is under 4 GiB");
    png.extend_from_slice(&len.to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    png.extend_from_slice(&crc32(kind.iter().chain(data)).to_be_bytes());
}

/// The CRC-32 that PNG chunks end with (ISO 3309, the one zlib's `crc32` computes).
fn crc32<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    !bytes.into_iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// How long the fake's speech for `input` lasts: 0.4 s a word at speed 1.0, never under
/// half a second.
///
/// # Panics
/// If `speed` is outside OpenAI's range, 0.25 to 4.0.
pub fn speech_duration(input: &str, speed: f64) -> Duration {
    assert!(
        (0.25..=4.0).contains(&speed),
        "speed {speed} is outside 0.25..=4.0"
    );
    let words = input.split_whitespace().count() as f64;
    Duration::from_secs_f64(words * SECONDS_PER_WORD / speed).max(MIN_SPEECH)
}

/// A mono 16-bit PCM WAV at [`SPEECH_SAMPLE_RATE`] holding a quiet 220 Hz tone.
pub fn tone_wav(duration: Duration) -> Vec<u8> {
    let rate = f64::from(SPEECH_SAMPLE_RATE);
    let samples = (duration.as_secs_f64() * rate).round() as usize;
    let data_len = u32::try_from(samples * 2).expect("a WAV is under 4 GiB");

    let mut wav = Vec::with_capacity(44 + samples * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&SPEECH_SAMPLE_RATE.to_le_bytes());
    wav.extend_from_slice(&(SPEECH_SAMPLE_RATE * 2).to_le_bytes()); // bytes a second
    wav.extend_from_slice(&2u16.to_le_bytes()); // bytes a frame
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits a sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let sample = (TAU * TONE_HZ * i as f64 / rate).sin() * TONE_AMPLITUDE;
        wav.extend_from_slice(&(sample.round() as i16).to_le_bytes());
    }
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        let mut reference = flate2::Crc::new();
        reference.update(b"IHDRsome chunk data");
        assert_eq!(crc32(b"IHDRsome chunk data"), reference.sum());
        // The check value every CRC-32 (ISO 3309) implementation publishes.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn colours_are_stable_and_differ_between_prompts() {
        assert_eq!(prompt_colour("a red fox"), prompt_colour("a red fox"));
        assert_ne!(prompt_colour("a red fox"), prompt_colour("a blue fox"));
    }

    #[test]
    fn speech_lasts_by_words_and_speed() {
        assert_eq!(
            speech_duration("one two three four five", 1.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            speech_duration("one two three four five", 2.0),
            Duration::from_secs(1)
        );
        assert_eq!(speech_duration("hi", 1.0), MIN_SPEECH);
        assert_eq!(speech_duration("   ", 0.25), MIN_SPEECH);
    }
}
