//! Wiring of the scheduled jobs: compiled from config, publishing through the node's
//! publisher, elected through the database's lock.

use std::sync::Arc;

use anyhow::anyhow;
use levee_config::Config;
use levee_jobs::{Jobs, Lock};
use levee_publish::{Clock, Publisher};

/// The configured jobs (possibly none), ready to be scheduled or run by hand.
pub fn open(config: &Config, publisher: Publisher) -> anyhow::Result<Arc<Jobs>> {
    let jobs = compile(config)?;
    let url = config.database_url();
    let lock = Lock::for_database(&url, config.server.data_dir.join("scheduler.lock"));
    Ok(Arc::new(Jobs::new(
        jobs,
        url,
        publisher,
        lock,
        Clock::system(),
    )))
}

/// Compile the jobs (jq filters, schemas), with every problem named by its key.
pub fn compile(config: &Config) -> anyhow::Result<Vec<levee_jobs::Job>> {
    Jobs::compile(&config.jobs).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}
