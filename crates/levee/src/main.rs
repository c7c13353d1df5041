//! The `levee` binary: parses the command line and wires the rooms together. The work itself
//! lives in the crates (config → intake → queue → …).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod content;
mod demo;
mod files;
mod init;
mod jobs;
mod kit;
mod serve;
mod token;

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
            env = "LEVEE_ROLES",
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
    /// Create the configured streams' tables, or say what an existing table lacks.
    Migrate,
    /// Per-stream status of a running node.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: Node,
    },
    /// Stop draining a stream (or all) into the database; intake keeps accepting.
    Pause {
        stream: Option<String>,
        /// Shown to users while paused, e.g. "New sign-ups are delayed a few minutes".
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        node: Node,
    },
    /// Drain again.
    Resume {
        stream: Option<String>,
        #[command(flatten)]
        node: Node,
    },
    /// Publish a built site (Jekyll or Hugo output) to a store: only what changed, assets
    /// before pages, then optionally purge the changed paths from a CDN.
    Deploy {
        /// The built site.
        dir: PathBuf,
        /// file://DIR, a directory, or s3://bucket/prefix.
        #[arg(long)]
        to: String,
        /// Upload text files compressed, with Content-Encoding set.
        #[arg(long, value_enum)]
        compress: Option<files::Compress>,
        /// After uploading, POST to this URL for each changed path ({path} is replaced).
        #[arg(long, value_name = "TEMPLATE")]
        purge_url: Option<String>,
        #[command(flatten)]
        target: files::Target,
    },
    /// Split a CSV into one JSON file per key (e.g. one per ZIP code) and publish them.
    Shard {
        /// The CSV, with a header row.
        file: PathBuf,
        /// The column that names each file.
        #[arg(long)]
        key: String,
        /// The path of each file, with {key}, e.g. 'zip/{key}.json'.
        #[arg(long)]
        out: String,
        /// Columns to keep, comma-separated, in this order (default: all).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Where to publish (default: the config's store).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        target: files::Target,
    },
    /// Admin users: `levee user add NAME --role admin|editor` (password from
    /// LEVEE_USER_PASSWORD or stdin).
    User {
        #[arg(value_parser = ["add"])]
        action: String,
        name: String,
        #[arg(long, default_value = "editor")]
        role: String,
    },
    /// Render and publish every CMS file again.
    Publish,
    /// Scheduled jobs: `levee job run NAME` runs one now on the running node.
    Job {
        #[arg(value_parser = ["run"])]
        action: String,
        name: String,
        #[command(flatten)]
        node: Node,
    },
    /// Dead letters of a stream: list, show ID, redrive [IDS], purge [IDS].
    Dead {
        #[arg(value_parser = ["list", "show", "redrive", "purge"])]
        action: String,
        stream: String,
        ids: Vec<String>,
        #[command(flatten)]
        node: Node,
    },
}

/// Which running node a command talks to.
#[derive(clap::Args)]
struct Node {
    /// The node's URL; default: the config's listen address.
    #[arg(long, env = "LEVEE_URL")]
    url: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print a summary.
    Check,
}

/// Commands that talk to a database or a running node.
fn run_client(config: Option<&std::path::Path>, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = |n: &Node| client::Client::new(config, n.url.as_deref());
        match command {
            Command::Migrate => client::migrate(config).await,
            Command::Status { json, node: n } => client::status(&node(&n)?, json).await,
            Command::Pause {
                stream,
                message,
                node: n,
            } => client::pause(&node(&n)?, stream.as_deref(), message).await,
            Command::Resume { stream, node: n } => {
                client::resume(&node(&n)?, stream.as_deref()).await
            }
            Command::Job { name, node: n, .. } => client::job_run(&node(&n)?, &name).await,
            Command::Dead {
                action,
                stream,
                ids,
                node: n,
            } => client::dead(&node(&n)?, &action, &stream, &ids).await,
            Command::Deploy {
                dir,
                to,
                compress,
                purge_url,
                target,
            } => {
                let args = files::DeployArgs {
                    dir,
                    to,
                    compress,
                    purge_url,
                    target,
                };
                files::deploy(config, args).await
            }
            Command::Shard {
                file,
                key,
                out,
                fields,
                to,
                target,
            } => {
                let args = files::ShardArgs {
                    file,
                    key,
                    out,
                    fields,
                    to,
                    target,
                };
                files::shard(config, args).await
            }
            Command::User { name, role, .. } => content::user_add(config, &name, &role).await,
            Command::Publish => content::publish_all(config).await,
            Command::Serve { .. } | Command::Init { .. } | Command::Config { .. } => {
                unreachable!("handled in main")
            }
        }
    })
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
        command => run_client(cli.config.as_deref(), command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee: {e:#}");
            ExitCode::FAILURE
        }
    }
}
