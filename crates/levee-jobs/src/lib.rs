//! Scheduled jobs (`[[jobs]]`): on a cron schedule, fetch data (HTTP, a SQL query, a file),
//! transform it with a jq filter, validate it (a JSON Schema, a minimum item count) and
//! publish it as one JSON file through the [`Publisher`] — "so the data would always be
//! there". A run that fails anywhere publishes nothing: the last good file stays, and the
//! failure is recorded in the job's recent runs (`GET /v1/admin/status`).
//!
//! With several nodes, only the one holding the scheduler [`lock`] runs the schedule; the
//! others wait on standby and take over when it goes away. A run asked for by hand
//! ([`Jobs::run_now`]) runs on the node that was asked.

pub mod lock;
pub mod source;
pub mod transform;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use croner::Cron;
use levee_config::JobConfig;
use levee_publish::clock::{Clock, rfc3339};
use levee_publish::{PublishFile, Publisher};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use lock::Lock;
use source::{Fetcher, Source};

/// How many runs each job remembers.
const RUNS_KEPT: usize = 10;
/// How often a standby node tries for the scheduler lock.
const STANDBY_RETRY: Duration = Duration::from_secs(5);
/// How often the node holding the lock checks that it still does. With the check's own
/// deadline (2 s) a holder that lost its lock stops before a standby can have taken it.
const LOCK_CHECK: Duration = Duration::from_secs(1);
/// How long a run may take beyond its source's timeout (transform, checks, publish).
const RUN_GRACE: Duration = Duration::from_secs(30);

/// A config problem in a job, with the key it concerns (`jobs[0].transform`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct JobConfigError {
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
}

/// A job, ready to run.
pub struct Job {
    pub name: String,
    schedule: Cron,
    schedule_text: String,
    source: Source,
    timeout: Duration,
    transform: Option<String>,
    schema: Option<jsonschema::Validator>,
    min_items: Option<usize>,
    path: String,
    cache_control: Option<String>,
}

impl Job {
    /// Compile a validated config entry (`index` is its place, for error keys).
    pub fn from_config(index: usize, config: &JobConfig) -> Result<Job, JobConfigError> {
        let error = |field: &str, message: String| JobConfigError {
            key: format!("jobs[{index}].{field}"),
            message,
        };
        let schedule = config
            .schedule
            .parse::<Cron>()
            .map_err(|e| error("schedule", e.to_string()))?;
        if let Some(code) = &config.transform {
            transform::check(code).map_err(|e| error("transform", e))?;
        }
        let schema = config
            .schema_json()
            .map(levee_config::compile_schema)
            .transpose()
            .map_err(|e| error("schema", e))?;
        Ok(Job {
            name: config.name.clone(),
            schedule,
            schedule_text: config.schedule.clone(),
            source: Source::from_config(&config.source).map_err(|e| error("source", e))?,
            timeout: Duration::from_secs(config.source.timeout_seconds),
            transform: config.transform.clone(),
            schema,
            min_items: config.min_items,
            path: config.path.clone(),
            cache_control: config.cache_control.clone(),
        })
    }

    /// The first scheduled time strictly after `after_ms` (Unix ms).
    fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
        self.schedule
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// Check a document before it may replace the published one.
    fn validate(&self, document: &Value) -> Result<usize, String> {
        if let Some(schema) = &self.schema {
            let errors: Vec<String> = schema
                .iter_errors(document)
                .take(3)
                .map(|e| format!("{} at {:?}", e, e.instance_path().to_string()))
                .collect();
            if !errors.is_empty() {
                return Err(format!("the schema rejects it: {}", errors.join("; ")));
            }
        }
        if document.is_null() {
            return Err("the result is null".into());
        }
        let items = match document {
            Value::Array(items) => items.len(),
            Value::Object(fields) => fields.len(),
            _ => 1,
        };
        if let Some(min) = self.min_items {
            match document {
                Value::Array(_) if items < min => {
                    return Err(format!("{items} items, fewer than min_items = {min}"));
                }
                Value::Array(_) => {}
                _ => return Err(format!("min_items = {min} needs an array")),
            }
        }
        Ok(items)
    }
}

/// One run of a job, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub started_at: String,
    pub duration_ms: u64,
    /// `schedule` or `manual`.
    pub trigger: &'static str,
    pub ok: bool,
    /// Whether the published file changed (an unchanged document is not rewritten).
    pub changed: bool,
    /// Items in the document: array elements or object fields.
    pub items: Option<usize>,
    pub error: Option<String>,
}

/// A job in `GET /v1/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    pub path: String,
    /// When this node will run it next; `None` on a standby node.
    pub next_run: Option<String>,
    pub last_success: Option<String>,
    /// Newest first.
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobsStatus {
    /// Whether this node holds the scheduler lock and runs the schedule.
    pub scheduler: bool,
    pub jobs: Vec<JobStatus>,
}

#[derive(Default)]
struct History {
    runs: VecDeque<Run>,
    last_success: Option<String>,
    next_run: Option<String>,
}

/// The configured jobs, their runner and their recent runs.
pub struct Jobs {
    jobs: Vec<Job>,
    history: Vec<Mutex<History>>,
    fetcher: Fetcher,
    publisher: Publisher,
    lock: Lock,
    clock: Clock,
    scheduler: AtomicBool,
}

impl Jobs {
    pub fn new(
        jobs: Vec<Job>,
        database_url: String,
        publisher: Publisher,
        lock: Lock,
        clock: Clock,
    ) -> Jobs {
        Jobs {
            history: jobs.iter().map(|_| Mutex::default()).collect(),
            jobs,
            fetcher: Fetcher::new(database_url),
            publisher,
            lock,
            clock,
            scheduler: AtomicBool::new(false),
        }
    }

    /// Compile every configured job; all problems at once.
    pub fn compile(configs: &[JobConfig]) -> Result<Vec<Job>, Vec<JobConfigError>> {
        let mut jobs = Vec::new();
        let mut errors = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            match Job::from_config(i, config) {
                Ok(job) => jobs.push(job),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(jobs)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn status(&self) -> JobsStatus {
        let jobs = self
            .jobs
            .iter()
            .zip(&self.history)
            .map(|(job, history)| {
                let history = history.lock().expect("history lock");
                JobStatus {
                    name: job.name.clone(),
                    schedule: job.schedule_text.clone(),
                    path: job.path.clone(),
                    next_run: history.next_run.clone(),
                    last_success: history.last_success.clone(),
                    runs: history.runs.iter().cloned().collect(),
                }
            })
            .collect();
        JobsStatus {
            scheduler: self.scheduler.load(Ordering::Relaxed),
            jobs,
        }
    }

    /// Run the job named `name` now, on this node.
    pub async fn run_now(&self, name: &str) -> Result<Run, RunError> {
        let index = self
            .jobs
            .iter()
            .position(|j| j.name == name)
            .ok_or_else(|| RunError::UnknownJob(name.to_owned()))?;
        Ok(self.run_job(index, "manual").await)
    }

    async fn run_job(&self, index: usize, trigger: &'static str) -> Run {
        let job = &self.jobs[index];
        let started_ms = self.clock.now();
        let started = Instant::now();
        let deadline = job.timeout + RUN_GRACE;
        let result = tokio::time::timeout(deadline, self.attempt(job))
            .await
            .unwrap_or_else(|_| Err(format!("the run took more than {} s", deadline.as_secs())));
        let (ok, changed, items, error) = match result {
            Ok((changed, items)) => (true, changed, Some(items), None),
            Err(e) => (false, false, None, Some(e)),
        };
        let run = Run {
            started_at: rfc3339(started_ms),
            duration_ms: started.elapsed().as_millis() as u64,
            trigger,
            ok,
            changed,
            items,
            error,
        };
        match &run.error {
            None => tracing::info!(job = job.name, changed, items, "job ran"),
            Some(e) => {
                tracing::warn!(job = job.name, error = %e, "job failed; the last good file stays")
            }
        }
        let mut history = self.history[index].lock().expect("history lock");
        if run.ok {
            history.last_success = Some(run.started_at.clone());
        }
        history.runs.push_front(run.clone());
        history.runs.truncate(RUNS_KEPT);
        run
    }

    /// Fetch, transform, validate, publish. Returns (file changed, items).
    async fn attempt(&self, job: &Job) -> Result<(bool, usize), String> {
        let data = self.fetcher.fetch(&job.source, job.timeout).await?;
        let document = match &job.transform {
            None => data,
            Some(code) => {
                let code = code.clone();
                tokio::task::spawn_blocking(move || transform::apply(&code, &data))
                    .await
                    .map_err(|e| format!("the transform panicked: {e}"))??
            }
        };
        let items = job.validate(&document)?;
        let mut file = PublishFile::json(job.path.clone(), &document);
        file.cache_control = job.cache_control.clone();
        let report = self
            .publisher
            .publish(vec![file])
            .await
            .map_err(|e| format!("publishing {}: {e}", job.path))?;
        Ok((report.written > 0, items))
    }

    /// The scheduler: wait on standby until this node holds the lock, then run every job on
    /// its schedule until the lock is lost or `shutdown`; a run in progress finishes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if self.jobs.is_empty() {
            return;
        }
        loop {
            let mut held = loop {
                match self.lock.try_acquire().await {
                    Ok(Some(held)) => break held,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot try the scheduler lock"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(STANDBY_RETRY) => {}
                }
            };
            tracing::info!(jobs = self.jobs.len(), "this node runs the scheduled jobs");
            self.scheduler.store(true, Ordering::Relaxed);
            let stop = shutdown.child_token();
            let tasks: Vec<_> = (0..self.jobs.len())
                .map(|i| tokio::spawn(self.clone().schedule(i, stop.clone())))
                .collect();
            let lost = loop {
                tokio::select! {
                    () = shutdown.cancelled() => break false,
                    () = tokio::time::sleep(LOCK_CHECK) => {
                        if !held.still_held().await {
                            tracing::warn!("lost the scheduler lock; standing by");
                            break true;
                        }
                    }
                }
            };
            stop.cancel();
            for task in tasks {
                // Another node may run the jobs now: a run in progress here must not
                // publish after it. On shutdown a run in progress finishes.
                if lost {
                    task.abort();
                }
                let _ = task.await;
            }
            self.scheduler.store(false, Ordering::Relaxed);
            for history in &self.history {
                history.lock().expect("history lock").next_run = None;
            }
            drop(held);
            if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// One job's schedule, until `stop`.
    async fn schedule(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let job = &self.jobs[index];
        let mut after = self.clock.now();
        loop {
            // Strictly after the last slot, so a wake-up a hair early never runs a slot twice.
            let Some(next) = job.next_after(after.max(self.clock.now())) else {
                tracing::warn!(job = job.name, "the schedule has no next time");
                return;
            };
            self.history[index].lock().expect("history lock").next_run = Some(rfc3339(next));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(self.clock.instant_at(next)) => {}
            }
            self.run_job(index, "schedule").await;
            after = next;
        }
    }
}
