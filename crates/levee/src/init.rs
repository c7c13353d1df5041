//! `levee init` and `levee config check`.

use std::path::Path;

use anyhow::{Context, bail};
use levee_config::{Config, SIGNUP_SCHEMA, SIGNUP_SCHEMA_PATH, STARTER_TOML};

/// Write the starter config and its schema, refusing to overwrite unless forced.
pub fn run(dir: &Path, force: bool) -> anyhow::Result<()> {
    let files = [
        (dir.join("levee.toml"), STARTER_TOML),
        (dir.join(SIGNUP_SCHEMA_PATH), SIGNUP_SCHEMA),
    ];
    if !force {
        for (path, _) in &files {
            if path.exists() {
                bail!("{} exists; use --force to overwrite it", path.display());
            }
        }
    }
    for (path, contents) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: levee config check --config {0} && levee serve --config {0}",
        dir.join("levee.toml").display()
    );
    Ok(())
}

/// Load and validate, then say what would run.
pub fn check(config: Option<&Path>) -> anyhow::Result<()> {
    let loaded = Config::load(config)?;
    crate::jobs::compile(&loaded)?;
    match config {
        Some(path) => println!("{}: OK", path.display()),
        None => println!("built-in demo configuration: OK"),
    }
    println!("  listen     http://{}", loaded.server.listen);
    println!("  data_dir   {}", loaded.server.data_dir.display());
    println!("  queue      {:?}", loaded.queue.backend);
    for stream in &loaded.streams {
        println!(
            "  stream     {} → table {} (max {} bytes, {} attempts)",
            stream.name,
            stream.table(),
            stream.max_bytes,
            stream.max_attempts
        );
    }
    for job in &loaded.jobs {
        println!(
            "  job        {} ({}) → {}",
            job.name, job.schedule, job.path
        );
    }
    Ok(())
}
