use clap::{Parser, Subcommand};
use crevid_server::config::Config;
use crevid_server::startup::{open_database, Application};
use crevid_server::telemetry;

/// CREVID: turn an idea into a short narrated video.
#[derive(Parser)]
#[command(name = "crevid", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app and API (the default).
    Serve,
    /// Apply database migrations, then exit.
    Migrate,
    /// Print the effective configuration (secrets hidden).
    Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crevid: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => open_database(&config).await.map(|db| {
            println!("migrations applied ({})", db.backend.name());
        }),
        Command::Config => {
            println!("{config:#?}");
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crevid: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(
        "CREVID listening on http://{}:{} (site root {})",
        app.state().leptos_options.site_addr.ip(),
        app.port(),
        app.state().leptos_options.site_root
    );
    app.run_until_stopped().await?;
    Ok(())
}
