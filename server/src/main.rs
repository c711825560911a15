use clap::{Parser, Subcommand};
use crevid_server::config::Config;
use crevid_server::startup::{build_state, open_database, Application};
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
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The password is read from CREVID_PASSWORD or, when that is
    /// unset, from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Make the account an admin (the first admin is created this way or on the web
        /// page shown while no account exists).
        #[arg(long)]
        admin: bool,
    },
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
        Command::User {
            command: UserCommand::Create { email, admin },
        } => create_user(config, email, admin).await,
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

async fn create_user(config: Config, email: String, admin: bool) -> anyhow::Result<()> {
    let password = match std::env::var("CREVID_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprint!("Password for {email}: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let state = build_state(&config).await?;
    let role = if admin {
        app::model::Role::Admin
    } else {
        app::model::Role::Creator
    };
    let user = app::ssr::users::create(
        &state,
        app::model::CreateUserRequest {
            email,
            password,
            role,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!("created {} ({})", user.email, user.role.as_str());
    Ok(())
}
