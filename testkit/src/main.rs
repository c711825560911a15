//! `fake-openai`: the test fake as a process, for browser tests and benchmarks. It prints
//! its base URL on stdout; `<addr>/_fake/config`, `/_fake/stats` and `/_fake/reset`
//! configure it and read its counters while it runs (see the library's docs). It also
//! stands in for Pexels at `<addr>/pexels` and Pixabay at `<addr>/pixabay/api` (Settings'
//! `pexels_base_url` and `pixabay_base_url`; any non-empty key is accepted).

use std::time::Duration;

use clap::Parser;

/// A local OpenAI-compatible server, with stand-ins for Pexels (`<addr>/pexels`) and
/// Pixabay (`<addr>/pixabay/api`) that accept any non-empty key.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
    /// Delay before each chat answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay before each image generation answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    image_latency_ms: u64,
    /// Delay before each speech answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    speech_latency_ms: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = testkit::FakeOpenAi::start_on(args.addr).await;
    fake.set_latency(Duration::from_millis(args.latency_ms));
    fake.set_image_latency(Duration::from_millis(args.image_latency_ms));
    fake.set_speech_latency(Duration::from_millis(args.speech_latency_ms));
    println!("{}", fake.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
