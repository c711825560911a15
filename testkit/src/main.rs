//! `fake-openai`: the test fake as a process, for browser tests and benchmarks.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: std::net::SocketAddr,
    /// Delay before each chat answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = testkit::FakeOpenAi::start_on(args.addr).await;
    fake.set_latency(std::time::Duration::from_millis(args.latency_ms));
    println!("{}", fake.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
