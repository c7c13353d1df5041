//! `levee deploy` and `levee shard`: publish a built site or a CSV's lookup files to a
//! store, uploading only what changed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use levee_config::Config;
use levee_publish::deploy;
use levee_publish::shard::{self, ShardOptions};
use levee_publish::sync::{self, SyncError, SyncFile, SyncOptions, SyncSummary};
use levee_store::{CacheRules, Encoding, Store, StoreSettings};

/// Where to write, and how.
#[derive(clap::Args)]
pub struct Target {
    /// Delete files at the destination that are not in the source.
    #[arg(long)]
    pub delete: bool,
    /// Refuse to run if it would delete more files than this.
    #[arg(long, default_value_t = 100)]
    pub max_deletes: usize,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Uploads at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Cache-Control by glob, first match wins, before the config's rules
    /// (e.g. 'assets/**=public, max-age=31536000, immutable'). Repeatable.
    #[arg(long, value_name = "GLOB=VALUE")]
    pub cache_control: Vec<String>,
    /// S3-compatible endpoint (default: the config's, or AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// S3 region (default: the config's, AWS_REGION, or us-east-1).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Compress {
    Gzip,
    Br,
}

pub struct DeployArgs {
    pub dir: PathBuf,
    pub to: String,
    pub compress: Option<Compress>,
    pub purge_url: Option<String>,
    pub target: Target,
}

pub async fn deploy(config: Option<&Path>, args: DeployArgs) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let rules = rules(&config, &args.target.cache_control)?;
    let compress = args.compress.map(|c| match c {
        Compress::Gzip => Encoding::Gzip,
        Compress::Br => Encoding::Brotli,
    });
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let files = deploy::collect(&args.dir, &rules, compress).map_err(anyhow::Error::msg)?;
    eprintln!("{} files in {}", files.len(), args.dir.display());
    let store = open(&config, &args.to, &args.target)?;
    let summary = run_sync(&store, files, String::new(), &args.target).await?;
    if let Some(template) = &args.purge_url
        && !args.target.dry_run
    {
        let changed: Vec<String> = summary.changed().map(str::to_owned).collect();
        let failed = deploy::purge_urls(template, &changed).await;
        println!("purged {} paths", changed.len() - failed.len());
        if let Some((path, why)) = failed.first() {
            bail!("{} purges failed; first: {path}: {why}", failed.len());
        }
    }
    Ok(())
}

pub struct ShardArgs {
    pub file: PathBuf,
    pub key: String,
    pub out: String,
    pub fields: Option<Vec<String>>,
    pub to: Option<String>,
    pub target: Target,
}

pub async fn shard(config: Option<&Path>, args: ShardArgs) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let rules = rules(&config, &args.target.cache_control)?;
    let input = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let options = ShardOptions {
        key: args.key,
        out: args.out,
        fields: args.fields,
    };
    let (files, stats) = shard::shard(std::io::BufReader::new(input), &options, &rules)
        .map_err(anyhow::Error::msg)?;
    eprintln!(
        "{} rows → {} files ({} rows skipped: empty or unusable key)",
        stats.rows, stats.files, stats.skipped
    );
    let to = args.to.unwrap_or_else(|| config.store_url());
    let store = open(&config, &to, &args.target)?;
    run_sync(&store, files, options.scope(), &args.target).await?;
    Ok(())
}

async fn run_sync(
    store: &Store,
    files: Vec<SyncFile>,
    scope: String,
    target: &Target,
) -> anyhow::Result<SyncSummary> {
    let options = SyncOptions {
        scope,
        delete: target.delete,
        max_deletes: target.max_deletes,
        dry_run: target.dry_run,
        concurrency: target.concurrency,
        progress: std::io::stderr().is_terminal(),
    };
    match sync::sync(store, files, &options).await {
        Ok(summary) => {
            if summary.dry_run {
                for path in &summary.uploaded {
                    println!("upload {path}");
                }
                for path in &summary.deleted {
                    println!("delete {path}");
                }
            }
            println!("{} → {summary}", store.url());
            Ok(summary)
        }
        Err(SyncError::Uploads {
            failed,
            attempted,
            first,
            summary,
        }) => {
            println!("{} → {summary}", store.url());
            bail!(
                "{failed} of {attempted} uploads failed (first: {first}); HTML pages were not updated, so readers keep the last good version"
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn open(config: &Config, url: &str, target: &Target) -> anyhow::Result<Store> {
    let settings = StoreSettings {
        url: url.to_owned(),
        endpoint: target.endpoint.clone().or(config.store.endpoint.clone()),
        region: target.region.clone().or(config.store.region.clone()),
        access_key: None,
    };
    Ok(Store::open(&settings)?)
}

/// `--cache-control` rules first, then the config's.
fn rules(config: &Config, flags: &[String]) -> anyhow::Result<CacheRules> {
    let mut pairs = Vec::new();
    for flag in flags {
        let Some((glob, value)) = flag.split_once('=') else {
            bail!("--cache-control {flag:?} must be GLOB=VALUE");
        };
        pairs.push((glob.trim(), value.trim()));
    }
    pairs.extend(
        config
            .store
            .cache_rules
            .iter()
            .map(|r| (r.glob.as_str(), r.cache_control.as_str())),
    );
    CacheRules::new(pairs).map_err(|e| anyhow::anyhow!("--cache-control {e}"))
}

/// The store and its rules for `levee serve`.
pub fn configured_store(config: &Config) -> anyhow::Result<(Store, CacheRules)> {
    let store = Store::open(&StoreSettings {
        url: config.store_url(),
        endpoint: config.store.endpoint.clone(),
        region: config.store.region.clone(),
        access_key: None,
    })?;
    Ok((store, rules(config, &[])?))
}
