//! Logging: `RUST_LOG` filters (default `info`), `CREVID_LOG_FORMAT=json` for log shippers.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    // async-openai logs raw provider answers, which can echo a key: keep them out.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,tower_http=info,leptos=warn,async_openai=off")
    });
    let builder = fmt().with_env_filter(filter).with_target(true);
    // A second init (tests start many apps in one process) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
