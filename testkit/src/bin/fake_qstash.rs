//! `fake-qstash`: the QStash stand-in as a process, for running the app's QStash mode
//! offline and for benchmarks. It listens where Upstash's development server does and
//! takes the same credentials, so the app's configuration is the same for both. The first
//! line on stdout is the base URL, then the environment to use; `<base>/_fake/config`,
//! `/_fake/stats`, `/_fake/reset` drive it while it runs (see `testkit::qstash`).

use clap::Parser;
use testkit::qstash::{QStash, QStashOptions, DEV_ADDR};

#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = DEV_ADDR)]
    addr: std::net::SocketAddr,
    /// Multiplies every wait (retry backoff, Retry-After, delays, rate periods): 0.001
    /// turns QStash's 12 s first retry into 12 ms.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if !args.time_scale.is_finite() || args.time_scale < 0.0 {
        eprintln!(
            "fake-qstash: --time-scale must be a number of 0 or more, not {}",
            args.time_scale
        );
        std::process::exit(2);
    }
    let qstash = match QStash::start_on(args.addr, QStashOptions::scaled(args.time_scale)).await {
        Ok(qstash) => qstash,
        Err(e) => {
            eprintln!("fake-qstash: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    println!("{}", qstash.base_url());
    for (name, value) in qstash.env() {
        println!("{name}={value}");
    }
    let _ = tokio::signal::ctrl_c().await;
}
