//! The image and speech endpoints, fault injection, counters and the control API, through
//! real HTTP.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{Endpoint, FakeOpenAi, Faults};

const KEY: &str = "sk-test-fake-key-0123456789";

/// The fake with one HTTP client per test: a client per request would set up TLS and a
/// connection every time, which makes a thousand requests slow.
#[derive(Clone)]
struct Fake {
    fake: FakeOpenAi,
    http: reqwest::Client,
}

impl std::ops::Deref for Fake {
    type Target = FakeOpenAi;

    fn deref(&self) -> &FakeOpenAi {
        &self.fake
    }
}

async fn fake() -> Fake {
    let fake = FakeOpenAi::start().await;
    fake.require_key(KEY);
    Fake {
        fake,
        http: reqwest::Client::new(),
    }
}

async fn post(fake: &Fake, path: &str, body: Value) -> reqwest::Response {
    fake.http
        .post(format!("{}{path}", fake.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request reaches the fake")
}

async fn error_of(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.expect("error JSON");
    body["error"].clone()
}

struct Png {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Checks the signature, every chunk's CRC and the header, and inflates the pixels.
fn decode_png(bytes: &[u8]) -> Png {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let mut rest = &bytes[8..];
    let (mut ihdr, mut idat, mut ended) = (None, Vec::new(), false);
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let (kind, data) = (&rest[4..8], &rest[8..8 + len]);
        let crc = u32::from_be_bytes(rest[8 + len..12 + len].try_into().unwrap());
        let mut expected = flate2::Crc::new();
        expected.update(kind);
        expected.update(data);
        assert_eq!(
            crc,
            expected.sum(),
            "CRC of {}",
            String::from_utf8_lossy(kind)
        );
        match kind {
            b"IHDR" => ihdr = Some(data.to_vec()),
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => ended = true,
            other => panic!("unexpected chunk {other:?}"),
        }
        rest = &rest[12 + len..];
    }
    assert!(ended, "IEND");
    let ihdr = ihdr.expect("IHDR");
    assert_eq!(&ihdr[8..], &[8, 2, 0, 0, 0], "8-bit RGB, no interlace");
    let width = u32::from_be_bytes(ihdr[..4].try_into().unwrap());
    let height = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    let mut pixels = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut pixels)
        .expect("IDAT inflates");
    Png {
        width,
        height,
        pixels,
    }
}

#[tokio::test]
async fn images_are_pngs_of_the_requested_size_and_prompt_colour() {
    let fake = fake().await;
    let response = post(
        &fake,
        "/images/generations",
        json!({ "model": "gpt-image-1", "prompt": "a red fox", "n": 2, "size": "64x32", "quality": "low" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data[0]["revised_prompt"].is_null());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data[0]["b64_json"].as_str().unwrap())
        .unwrap();
    let png = decode_png(&bytes);
    assert_eq!((png.width, png.height), (64, 32));
    assert_eq!(png.pixels.len(), 32 * (1 + 64 * 3));
    let [r, g, b] = testkit::prompt_colour("a red fox");
    assert_eq!(&png.pixels[..4], &[0, r, g, b]);
    assert!(png
        .pixels
        .chunks(1 + 64 * 3)
        .all(|row| row == &png.pixels[..1 + 64 * 3]));
    assert!(
        bytes.len() < 200,
        "a solid image compresses well: {} bytes",
        bytes.len()
    );
    assert_eq!(fake.successes_to(Endpoint::Images), 1);
}

#[tokio::test]
async fn images_by_url_are_served_and_auto_is_1024_square() {
    let fake = fake().await;
    let response = post(
        &fake,
        "/images/generations",
        json!({ "prompt": "a lighthouse", "size": "auto", "response_format": "url" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let url = body["data"][0]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://{}/files/", fake.addr)),
        "{url}"
    );
    let file = reqwest::get(&url).await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "image/png");
    let png = decode_png(&file.bytes().await.unwrap());
    assert_eq!((png.width, png.height), (1024, 1024));
    assert_eq!(png.pixels.len(), 1024 * (1 + 1024 * 3));

    let missing = reqwest::get(format!("http://{}/files/nope.png", fake.addr))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn images_open_in_ffprobe() {
    if Command::new("ffprobe").arg("-version").output().is_err() {
        eprintln!("ffprobe is not installed; skipping");
        return;
    }
    let fake = fake().await;
    let response = post(
        &fake,
        "/images/generations",
        json!({ "prompt": "a tall tower", "size": "720x1280" }),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    let path = std::env::temp_dir().join(format!("testkit-{}.png", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let size = testkit::probe_size(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(size.as_deref(), Ok("720,1280"));
}

#[tokio::test]
async fn bad_image_requests_get_openai_errors() {
    let fake = fake().await;
    for (body, param, needle) in [
        (json!({ "prompt": "x", "size": "12by4" }), "size", "12by4"),
        (
            json!({ "prompt": "x", "size": "4097x10" }),
            "size",
            "4097x10",
        ),
        (json!({ "prompt": "x", "size": "0x10" }), "size", "0x10"),
        (json!({ "prompt": "  " }), "prompt", "prompt"),
        (json!({ "size": "10x10" }), "prompt", "prompt"),
        (json!({ "prompt": "x", "n": 0 }), "n", "'n'"),
        (
            json!({ "prompt": "x", "response_format": "gif" }),
            "response_format",
            "gif",
        ),
    ] {
        let response = post(&fake, "/images/generations", body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = error_of(response).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }

    for path in ["/images/generations", "/audio/speech", "/chat/completions"] {
        let response = fake
            .http
            .post(format!("{}{path}", fake.base_url()))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body("{\"prompt\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_of(response).await["type"], "invalid_request_error");
    }

    let unauthorised = fake
        .http
        .post(format!("{}/images/generations", fake.base_url()))
        .bearer_auth("sk-wrong-key-1234")
        .json(&json!({ "prompt": "x", "size": "8x8" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(unauthorised).await["code"], "invalid_api_key");
    assert_eq!(fake.successes_to(Endpoint::Images), 0);
    assert_eq!(fake.requests_to(Endpoint::Images), 9);
}

struct Wav {
    channels: u16,
    rate: u32,
    bits: u16,
    samples: usize,
}

fn decode_wav(bytes: &[u8]) -> Wav {
    let u16_at = |i: usize| u16::from_le_bytes(bytes[i..i + 2].try_into().unwrap());
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(&bytes[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(16), 16);
    assert_eq!(u16_at(20), 1, "PCM");
    let (channels, rate, bits) = (u16_at(22), u32_at(24), u16_at(34));
    assert_eq!(
        u32_at(28),
        rate * u32::from(channels) * u32::from(bits) / 8,
        "byte rate"
    );
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(u32_at(40) as usize, bytes.len() - 44, "data size");
    Wav {
        channels,
        rate,
        bits,
        samples: (bytes.len() - 44) / 2,
    }
}

#[tokio::test]
async fn speech_is_a_wav_as_long_as_the_words() {
    let fake = fake().await;
    for (input, speed, seconds) in [
        ("one two three four five", None, 2.0),
        ("one two three four five", Some(2.0), 1.0),
        ("hello", None, 0.5),
        ("a b c d e f g h i j", Some(0.5), 8.0),
    ] {
        let mut body = json!({ "model": "tts-1", "input": input, "voice": "no-such-voice", "response_format": "mp3" });
        if let Some(speed) = speed {
            body["speed"] = json!(speed);
        }
        let response = post(&fake, "/audio/speech", body).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "audio/wav");
        let wav = decode_wav(&response.bytes().await.unwrap());
        assert_eq!((wav.channels, wav.rate, wav.bits), (1, 24_000, 16));
        assert_eq!(
            wav.samples,
            (seconds * 24_000.0) as usize,
            "{input} at {speed:?}"
        );
    }

    let empty = post(
        &fake,
        "/audio/speech",
        json!({ "input": "", "voice": "alloy" }),
    )
    .await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(empty).await["param"], "input");
    let too_fast = post(&fake, "/audio/speech", json!({ "input": "hi", "speed": 9 })).await;
    assert_eq!(too_fast.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_of(too_fast).await["param"], "speed");
    assert_eq!(fake.successes_to(Endpoint::Speech), 4);
    assert_eq!(fake.requests_to(Endpoint::Speech), 6);
}

async fn statuses(fake: &Fake, count: usize) -> Vec<(StatusCode, Option<String>)> {
    let mut statuses = Vec::with_capacity(count);
    for i in 0..count {
        let response = post(
            fake,
            "/images/generations",
            json!({ "prompt": format!("picture {i}"), "size": "1x1" }),
        )
        .await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        statuses.push((response.status(), retry_after));
    }
    statuses
}

#[tokio::test]
async fn faults_come_in_their_shares_and_repeat_with_the_seed() {
    let fake = fake().await;
    let faults = Faults {
        rate_limited: 0.3,
        retry_after_secs: 7,
        server_error: 0.1,
        timeout: 0.05,
        hang: Duration::ZERO,
        seed: 2024,
        ..Faults::default()
    };
    fake.set_faults(faults.clone());
    let first = statuses(&fake, 1000).await;
    let share = |code| first.iter().filter(|(s, _)| *s == code).count() as f64 / 1000.0;
    let (limited, failed, timed_out, ok) = (
        share(StatusCode::TOO_MANY_REQUESTS),
        share(StatusCode::INTERNAL_SERVER_ERROR),
        share(StatusCode::GATEWAY_TIMEOUT),
        share(StatusCode::OK),
    );
    assert!((0.25..=0.35).contains(&limited), "429: {limited}");
    assert!((0.07..=0.13).contains(&failed), "500: {failed}");
    assert!((0.03..=0.07).contains(&timed_out), "504: {timed_out}");
    assert!((ok + limited + failed + timed_out - 1.0).abs() < 1e-9);
    assert!(first
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .all(|(_, retry)| retry.as_deref() == Some("7")));
    assert_eq!(fake.requests_to(Endpoint::Images), 1000);
    assert_eq!(
        fake.successes_to(Endpoint::Images),
        (ok * 1000.0).round() as usize
    );

    // Setting the same faults again replays the same sequence.
    fake.set_faults(faults.clone());
    assert_eq!(statuses(&fake, 100).await, first[..100]);
    fake.set_faults(Faults {
        seed: 2025,
        ..faults
    });
    assert_ne!(statuses(&fake, 100).await, first[..100]);
}

#[tokio::test]
async fn the_permanent_marker_is_always_refused() {
    let fake = fake().await;
    fake.set_faults(Faults {
        rate_limited: 1.0,
        permanent_marker: Some("FORBIDDEN".into()),
        ..Faults::default()
    });
    for (path, body) in [
        (
            "/images/generations",
            json!({ "prompt": "a FORBIDDEN scene", "size": "8x8" }),
        ),
        (
            "/audio/speech",
            json!({ "input": "say FORBIDDEN things", "voice": "alloy" }),
        ),
    ] {
        for _ in 0..3 {
            let response = post(&fake, path, body.clone()).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["error"]["message"],
                "Your request was rejected as a result of our safety system."
            );
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["code"], "content_policy_violation");
        }
    }
    let other = post(&fake, "/audio/speech", json!({ "input": "fine words" })).await;
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_timeout_fault_hangs_until_the_client_gives_up() {
    let fake = fake().await;
    fake.set_faults(Faults {
        timeout: 1.0,
        hang: Duration::from_secs(5),
        ..Faults::default()
    });
    let started = Instant::now();
    let error = fake
        .http
        .post(format!("{}/audio/speech", fake.base_url()))
        .bearer_auth(KEY)
        .json(&json!({ "input": "hello there" }))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("the client times out");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The abandoned request leaves the in-flight count once the connection closes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.in_flight_to(Endpoint::Speech) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.in_flight_to(Endpoint::Speech), 0);
    assert_eq!(fake.max_in_flight_to(Endpoint::Speech), 1);

    fake.set_faults(Faults {
        timeout: 1.0,
        hang: Duration::from_millis(100),
        ..Faults::default()
    });
    let response = post(&fake, "/audio/speech", json!({ "input": "hello" })).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn counters_are_per_endpoint_and_windows_count_arrivals() {
    let fake = fake().await;
    fake.set_speech_latency(Duration::from_millis(300));
    let burst = (0..4).map(|i| {
        let fake = fake.clone();
        async move {
            post(
                &fake,
                "/audio/speech",
                json!({ "input": format!("burst {i}") }),
            )
            .await
        }
    });
    for response in join_all(burst).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(fake.max_in_flight_to(Endpoint::Speech), 4);
    assert_eq!(fake.in_flight_to(Endpoint::Speech), 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Two arrivals a while later, one of them faulted: faults count as arrivals.
    fake.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    post(&fake, "/audio/speech", json!({ "input": "late" })).await;
    fake.set_faults(Faults::default());
    post(&fake, "/audio/speech", json!({ "input": "later" })).await;

    assert_eq!(fake.requests_to(Endpoint::Speech), 6);
    assert_eq!(fake.successes_to(Endpoint::Speech), 5);
    assert_eq!(
        fake.max_in_window(Endpoint::Speech, Duration::from_millis(250)),
        4
    );
    assert_eq!(
        fake.max_in_window(Endpoint::Speech, Duration::from_secs(60)),
        6
    );
    assert_eq!(fake.requests_to(Endpoint::Chat), 0);
    assert_eq!(
        fake.max_in_window(Endpoint::Images, Duration::from_secs(60)),
        0
    );
    assert_eq!(fake.requests(), 6);
    assert_eq!(fake.max_in_flight(), 4);

    fake.reset_counts();
    for endpoint in Endpoint::ALL {
        assert_eq!(fake.requests_to(endpoint), 0);
        assert_eq!(fake.successes_to(endpoint), 0);
        assert_eq!(fake.max_in_flight_to(endpoint), 0);
        assert_eq!(fake.max_in_window(endpoint, Duration::from_secs(60)), 0);
    }
    assert_eq!(fake.requests(), 0);
}

/// Runs the futures concurrently, without pulling in the futures crate.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("request task"));
    }
    outputs
}

async fn control(
    fake: &Fake,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = fake
        .http
        .request(method, format!("{}{path}", fake.control_url()));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_control_api_configures_and_reports() {
    use reqwest::Method;
    let fake = fake().await;
    let (status, config) = control(
        &fake,
        Method::POST,
        "/config",
        Some(r#"{"image_latency_ms": 250, "faults": {"rate_limited": 1.0, "retry_after_secs": 9, "permanent_marker": "NOPE"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["image_latency_ms"], 250);
    assert_eq!(config["faults"]["hang_ms"], 30_000);

    let started = Instant::now();
    let limited = post(
        &fake,
        "/images/generations",
        json!({ "prompt": "x", "size": "2x2" }),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "9");
    assert_eq!(error_of(limited).await["code"], "rate_limit_exceeded");

    // Missing fields stay; null clears the marker.
    let (status, config) = control(
        &fake,
        Method::POST,
        "/config",
        Some(r#"{"image_latency_ms": 0, "faults": {"seed": 5, "permanent_marker": null}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["faults"]["rate_limited"], 1.0);
    assert_eq!(config["faults"]["retry_after_secs"], 9);
    assert!(config["faults"]["permanent_marker"].is_null());
    assert_eq!(fake.faults().seed, 5);
    assert_eq!(fake.faults().permanent_marker, None);

    control(
        &fake,
        Method::POST,
        "/config",
        Some(r#"{"faults": {"rate_limited": 0}, "chat_latency_ms": 150}"#),
    )
    .await;
    let ok = post(
        &fake,
        "/images/generations",
        json!({ "prompt": "x", "size": "2x2" }),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let started = Instant::now();
    let chat = post(
        &fake,
        "/chat/completions",
        json!({ "model": "fake-script-model", "messages": [{ "role": "user", "content": "Topic: owls" }] }),
    )
    .await;
    assert_eq!(chat.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let (_, config) = control(&fake, Method::GET, "/config", None).await;
    assert_eq!(config["chat_latency_ms"], 150);

    for bad in [
        "{not json",
        r#"{"image_latency": 5}"#,
        r#"{"faults": {"rate_limited": 1.5}}"#,
        r#"{"faults": {"rate_limited": 0.6, "server_error": 0.6}}"#,
        r#"{"faults": {"seed": -1}}"#,
    ] {
        let (status, body) = control(&fake, Method::POST, "/config", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
    assert_eq!(
        fake.faults().rate_limited,
        0.0,
        "rejected changes leave the config alone"
    );

    let (status, stats) = control(&fake, Method::GET, "/stats?window_ms=60000", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["images"]["requests"], 2);
    assert_eq!(stats["images"]["successes"], 1);
    assert_eq!(stats["images"]["in_flight"], 0);
    assert_eq!(stats["images"]["max_in_flight"], 1);
    assert_eq!(stats["images"]["max_in_window"], 2);
    assert_eq!(stats["chat"]["requests"], 1);
    assert_eq!(stats["speech"]["requests"], 0);
    assert_eq!(stats["total"]["requests"], 3);

    let (status, stats) = control(&fake, Method::POST, "/reset", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["images"]["requests"], 0);
    assert_eq!(fake.requests_to(Endpoint::Images), 0);
    let (_, config) = control(&fake, Method::GET, "/config", None).await;
    assert_eq!(
        config["chat_latency_ms"], 150,
        "reset keeps the configuration"
    );
}

#[tokio::test]
async fn chat_and_models_still_work() {
    let fake = fake().await;
    let models = fake
        .http
        .get(format!("{}/models", fake.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), StatusCode::OK);
    let chat = post(
        &fake,
        "/chat/completions",
        json!({ "model": "m", "messages": [{ "role": "user", "content": "Topic: owls\nScenes: 2" }] }),
    )
    .await;
    assert_eq!(chat.status(), StatusCode::OK);
    let body: Value = chat.json().await.unwrap();
    let script: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(script["scenes"].as_array().unwrap().len(), 2);
    assert_eq!(fake.last_request().unwrap()["model"], "m");
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.requests_to(Endpoint::Chat), 1);
    assert_eq!(fake.successes_to(Endpoint::Chat), 1);
}
