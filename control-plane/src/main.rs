//! `aqueduct`: the control plane binary. Only wiring lives here.

use aqueduct::app::{self, Settings};
use clap::{Parser, Subcommand};

/// Aqueduct AI gateway control plane.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane (the default).
    Serve,
    /// Print the Envoy bootstrap that points Envoy at this control plane.
    Bootstrap,
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
    /// Runs Envoy as its parent for the supervisor (internal: see docs/operations.md).
    #[command(hide = true)]
    EnvoyKeeper {
        /// Envoy's admin address, to drain it when no control plane comes back.
        #[arg(long)]
        admin: std::net::SocketAddr,
        /// Seconds Envoy outlives a control plane killed outright.
        #[arg(long)]
        grace_secs: u64,
        /// Envoy's command line.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create a new key for the bootstrap admin and print it (shown once).
    CreateKey,
    /// On an empty database: create an org, an admin user in it and a key (printed once).
    Bootstrap {
        /// Name of the org to create (reused if it exists).
        #[arg(long)]
        org: String,
        /// Email of the admin user to create.
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AQUEDUCT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => app::serve(cli.settings).await,
        Cmd::Bootstrap => {
            print!("{}", app::bootstrap(&cli.settings));
            Ok(())
        }
        Cmd::Admin { command: AdminCmd::CreateKey } => {
            println!("{}", app::create_admin_key(&cli.settings).await?);
            Ok(())
        }
        Cmd::EnvoyKeeper { admin, grace_secs, command } => {
            std::process::exit(aqueduct::envoy::keep(admin, std::time::Duration::from_secs(grace_secs), command).await)
        }
        Cmd::Admin { command: AdminCmd::Bootstrap { org, email } } => {
            println!("{}", app::bootstrap_org_admin(&cli.settings, &org, &email).await?);
            Ok(())
        }
    }
}
