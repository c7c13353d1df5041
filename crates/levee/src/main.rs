//! The `levee` binary: parses the command line and wires the rooms together. The work itself
//! lives in the crates (config → intake → queue → …).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod init;
mod serve;

// glibc's malloc showed up at ~9% of intake's CPU under load (bench/intake); mimalloc is
// made for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "levee",
    version,
    about = "Keeps websites up under traffic surges and database outages"
)]
struct Cli {
    /// levee.toml to use; without it levee runs the built-in demo.
    #[arg(long, global = true, env = "LEVEE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a levee node.
    Serve {
        /// What this node runs, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "intake,worker,admin,static,scheduler"
        )]
        roles: Vec<serve::Role>,
    },
    /// Write a starter levee.toml and schemas/signup.json.
    Init {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print a summary.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVEE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve { roles } => serve::run(cli.config.as_deref(), &roles),
        Command::Init { dir, force } => init::run(&dir, force),
        Command::Config {
            command: ConfigCommand::Check,
        } => init::check(cli.config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee: {e:#}");
            ExitCode::FAILURE
        }
    }
}
