//! levee's configuration: one typed struct per component, documented defaults, and a
//! `validate` step that runs before anything starts.
//!
//! A config is `levee.toml` (or the built-in demo when there is none) with every key
//! overridable from the environment as `LEVEE_SECTION__KEY`. Problems are reported with the
//! key they concern, e.g. `streams[0].schema: cannot read schemas/signup.json: …`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The starter configuration written by `levee init`; also the demo's, with its schema inline.
pub const STARTER_TOML: &str = include_str!("../assets/levee.toml");
/// The demo `signups` schema: a valid email and a 5-digit ZIP code.
pub const SIGNUP_SCHEMA: &str = include_str!("../assets/signup.schema.json");
/// Where the starter config expects the signup schema, relative to the config file.
pub const SIGNUP_SCHEMA_PATH: &str = "schemas/signup.json";

/// The whole configuration of a levee node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default, rename = "static")]
    pub static_files: StaticConfig,
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    #[serde(default)]
    pub collections: Vec<CollectionConfig>,
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
}

impl CollectionConfig {
    /// The schema document. Only valid after [`Config::load`], which inlines file schemas.
    pub fn schema_json(&self) -> &Value {
        match &self.schema {
            SchemaSource::Inline(value) => value,
            SchemaSource::File(path) => panic!("schema {path} was not loaded"),
        }
    }
}

/// `[[collections]]`: a CMS document (homepage modules, say), edited as JSON in the admin
/// and published at `collections/{name}.json` once its schema accepts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// Lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// A JSON Schema file, or the schema inline.
    pub schema: SchemaSource,
}

/// `[server]`: the HTTP listener and where local state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Embedded queue, SQLite file and local store. Default `levee-data`.
    pub data_dir: PathBuf,
    /// Requests handled at once; past it levee answers 503 at once instead of queueing
    /// without bound. Default 4096.
    pub max_concurrent_requests: usize,
    /// Time allowed to receive a request body (slow clients get 408). Default 30 s.
    pub request_timeout_seconds: u64,
    /// Take the client address for rate limits from `X-Forwarded-For` (behind a trusted
    /// load balancer only). Default false.
    pub trust_forwarded_for: bool,
    /// Mount `POST /v1/noop`, which answers 202 without doing anything: the baseline for
    /// `bench/intake`. Default false.
    pub noop_route: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("levee-data"),
            max_concurrent_requests: 4096,
            request_timeout_seconds: 30,
            trust_forwarded_for: false,
            noop_route: false,
        }
    }
}

/// `[queue]`: which queue backend holds accepted writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub backend: QueueBackend,
    pub embedded: EmbeddedQueueConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    #[default]
    Embedded,
    Sqs,
    Jetstream,
}

/// `[queue.embedded]`: the on-disk queue of a single node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedQueueConfig {
    /// Directory of the queue's files. Default `data_dir/queue`.
    pub path: Option<PathBuf>,
    /// Refuse new messages (503) when the disk holding the queue has less free space than
    /// this, so a full disk never corrupts or stalls anything. Default 256 MiB.
    pub min_free_disk_bytes: u64,
    /// Cap on the queue file's size; writes past it are refused as if the disk were full.
    /// Default: no cap.
    pub max_size_bytes: Option<u64>,
}

impl Default for EmbeddedQueueConfig {
    fn default() -> Self {
        EmbeddedQueueConfig {
            path: None,
            min_free_disk_bytes: 256 * 1024 * 1024,
            max_size_bytes: None,
        }
    }
}

/// `[database]`: the SQL database the workers drain into.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…`, `postgres://…` or `mysql://…`. Default `sqlite://data_dir/levee.db`.
    pub url: Option<String>,
}

/// `[store]`: where public files are published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file://…` or `s3://bucket/prefix`. Default `file://data_dir/public`.
    pub url: Option<String>,
    /// An S3-compatible endpoint such as `http://127.0.0.1:5000`. Default: AWS, or the
    /// `AWS_ENDPOINT_URL` environment variable.
    pub endpoint: Option<String>,
    /// The S3 region. Default `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Cache-Control by path: the first rule whose glob matches a published path wins;
    /// paths no rule matches get the `changing` default.
    pub cache_rules: Vec<CacheRule>,
}

/// One `[[store.cache_rules]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// A glob over the published path, e.g. `zip/*.json` or `assets/**`.
    pub glob: String,
    /// The `Cache-Control` header for matching files.
    pub cache_control: String,
}

/// `[static]`: the static file server (the `static` role).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// A built site (Jekyll or Hugo output) served at `/` after the local store's files.
    pub site_dir: Option<PathBuf>,
    /// The page served with a 404, as a path inside the site or the store. Default
    /// `404.html` when it exists.
    pub not_found: Option<String>,
}

/// `[[streams]]`: a named write endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The name in `POST /v1/streams/{name}`: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The table the stream drains into. Default: the stream's name.
    #[serde(default)]
    pub table: Option<String>,
    /// The payload's JSON Schema: a path to a file, or the schema inline. After loading it
    /// is always inline.
    pub schema: SchemaSource,
    /// Largest accepted payload in bytes. Default 65536.
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: usize,
    /// Deliveries before a message is moved to the dead-letter queue. Default 5.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Most payloads in one `POST …/batch`. Default 100.
    #[serde(default = "defaults::batch_max")]
    pub batch_max: usize,
    /// Largest `POST …/batch` body in bytes. Default 1 MiB.
    #[serde(default = "defaults::batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Messages waiting before intake answers 503 instead of accepting more. Default 10,000,000.
    #[serde(default = "defaults::max_depth")]
    pub max_depth: u64,
    /// Origins allowed to POST from a browser (`*` for any). Default none.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Per-client request rate; past it levee answers 429. Default: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Column name → JSON pointer into the payload.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Workers draining this stream on each node. Default 2.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// Messages written per database statement. Default 100.
    #[serde(default = "defaults::batch_max")]
    pub batch_size: usize,
    /// How long a worker holds a batch before it is delivered again. Default 60 s.
    #[serde(default = "defaults::lease_seconds")]
    pub lease_seconds: u64,
    /// First retry delay of a message the database rejects; it doubles with each attempt.
    /// Default 1 s.
    #[serde(default = "defaults::retry_seconds")]
    pub retry_seconds: u64,
    /// Age of the oldest waiting message past which `status.json` calls the stream
    /// delayed. Default 30 s.
    #[serde(default = "defaults::delayed_after_seconds")]
    pub delayed_after_seconds: u64,
}

impl StreamConfig {
    /// The table this stream drains into.
    pub fn table(&self) -> &str {
        self.table.as_deref().unwrap_or(&self.name)
    }

    /// The schema document. Only valid after [`Config::load`], which inlines file schemas.
    pub fn schema_json(&self) -> &Value {
        match &self.schema {
            SchemaSource::Inline(value) => value,
            SchemaSource::File(path) => panic!("schema {path} was not loaded"),
        }
    }
}

/// `[[jobs]]`: fetch data on a cron schedule, optionally transform and validate it, and
/// publish it as one JSON file. A run that fails keeps the last good file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Cron, with an optional leading seconds field: `0 */5 * * * *`. In UTC.
    pub schedule: String,
    pub source: JobSource,
    /// A jq filter applied to the source's data (jaq). Several outputs make an array.
    #[serde(default)]
    pub transform: Option<String>,
    /// A JSON Schema (file or inline) the published document must satisfy.
    #[serde(default)]
    pub schema: Option<SchemaSource>,
    /// The document must be an array of at least this many items.
    #[serde(default)]
    pub min_items: Option<usize>,
    /// Where it is published in the store, e.g. `data/places.json`.
    pub path: String,
    /// Overrides the store's cache rules for this file.
    #[serde(default)]
    pub cache_control: Option<String>,
}

impl JobConfig {
    fn schema_json_if_loaded(&self) -> Option<&Value> {
        match &self.schema {
            Some(SchemaSource::Inline(value)) => Some(value),
            _ => None,
        }
    }

    /// The schema document, if any. Only valid after [`Config::load`].
    pub fn schema_json(&self) -> Option<&Value> {
        match &self.schema {
            None => None,
            Some(SchemaSource::Inline(value)) => Some(value),
            Some(SchemaSource::File(path)) => panic!("schema {path} was not loaded"),
        }
    }
}

/// Where a job's data comes from: exactly one of `http`, `sql` and `file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSource {
    /// GET this URL.
    #[serde(default)]
    pub http: Option<String>,
    /// Run this query on the database; the rows become an array of objects.
    #[serde(default)]
    pub sql: Option<String>,
    /// Read this file (relative to the config file).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `json` or `csv`; default: from the Content-Type or the file's extension, else JSON.
    #[serde(default)]
    pub format: Option<DataFormat>,
    /// Request headers for `http`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The whole fetch or query must finish within this.
    #[serde(default = "default_job_timeout")]
    pub timeout_seconds: u64,
}

fn default_job_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemaSource {
    File(String),
    Inline(Value),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once above the sustained rate. Default: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

mod defaults {
    pub fn max_bytes() -> usize {
        64 * 1024
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn batch_max() -> usize {
        100
    }
    pub fn batch_max_bytes() -> usize {
        1024 * 1024
    }
    pub fn max_depth() -> u64 {
        10_000_000
    }
    pub fn workers() -> usize {
        2
    }
    pub fn lease_seconds() -> u64 {
        60
    }
    pub fn retry_seconds() -> u64 {
        1
    }
    pub fn delayed_after_seconds() -> u64 {
        30
    }
}

/// Hard ceilings that no config may exceed: they keep one request from holding the
/// process's memory.
const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
const MAX_BATCH: usize = 10_000;

/// What went wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("{0}")]
    Invalid(Problems),
}

/// Every problem found by validation, each naming its key.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl Config {
    /// Load `path` (or the built-in demo when `None`), apply `LEVEE_…` overrides from the
    /// environment, inline the schemas and validate. Relative paths in a config file are
    /// resolved against the file's directory; the demo's against the working directory.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, Env::prefixed("LEVEE_"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        // Only `SECTION__KEY` variables are overrides; others such as LEVEE_ADMIN_TOKEN
        // belong to other parts of levee and must not be read as unknown config keys.
        let env = env.filter(|key| key.as_str().contains("__")).split("__");
        let (text, base) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().map(Path::to_owned).unwrap_or_default();
                (text, Some(base))
            }
            None => (STARTER_TOML.to_owned(), None),
        };
        let mut config: Config = Figment::from(Toml::string(&text))
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        match &base {
            Some(base) => config.resolve_paths(base),
            // The demo carries its schema inside the binary.
            None => {
                for stream in &mut config.streams {
                    if matches!(&stream.schema, SchemaSource::File(p) if p == SIGNUP_SCHEMA_PATH) {
                        stream.schema = SchemaSource::Inline(
                            serde_json::from_str(SIGNUP_SCHEMA).expect("built-in schema is JSON"),
                        );
                    }
                }
            }
        }
        let mut problems = config.load_schemas(base.as_deref());
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(Problems(problems)))
        }
    }

    /// The built-in demo configuration (no file), with environment overrides.
    pub fn demo() -> Result<Config, ConfigError> {
        Self::load(None)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.server.data_dir);
        if let Some(p) = &mut self.static_files.site_dir {
            resolve(p);
        }
        if let Some(url) = &mut self.store.url
            && let Some(rest) = url.strip_prefix("file://")
            && !rest.starts_with('/')
        {
            *url = format!("file://{}", base.join(rest).display());
        }
        if let Some(p) = &mut self.queue.embedded.path {
            resolve(p);
        }
        for job in &mut self.jobs {
            if let Some(p) = &mut job.source.file {
                resolve(p);
            }
        }
        if let Some(url) = &mut self.database.url
            && let Some(rest) = url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            *url = format!("sqlite://{}", base.join(rest).display());
        }
    }

    /// The database the workers write to: `database.url`, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("levee.db").display()
            )
        })
    }

    /// Where public files are published: `store.url`, or `public` in the data directory.
    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.server.data_dir.join("public").display()))
    }

    /// Replace file schemas by their parsed contents.
    fn load_schemas(&mut self, base: Option<&Path>) -> Vec<Problem> {
        let mut problems = Vec::new();
        let streams = self
            .streams
            .iter_mut()
            .enumerate()
            .map(|(i, s)| (format!("streams[{i}].schema"), &mut s.schema));
        let collections = self
            .collections
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (format!("collections[{i}].schema"), &mut c.schema));
        let jobs = self.jobs.iter_mut().enumerate().filter_map(|(i, j)| {
            let schema = j.schema.as_mut()?;
            Some((format!("jobs[{i}].schema"), schema))
        });
        for (key, schema) in streams.chain(collections).chain(jobs) {
            let SchemaSource::File(file) = &*schema else {
                continue;
            };
            let path = match base {
                Some(base) => base.join(file),
                None => PathBuf::from(file),
            };
            match std::fs::read_to_string(&path) {
                Err(e) => {
                    problems.push(problem(key, format!("cannot read {}: {e}", path.display())))
                }
                Ok(text) => match serde_json::from_str(&text) {
                    Ok(value) => *schema = SchemaSource::Inline(value),
                    Err(e) => problems.push(problem(
                        key,
                        format!("{} is not valid JSON: {e}", path.display()),
                    )),
                },
            }
        }
        problems
    }

    /// Check everything that can be checked before starting. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut p = |key: String, message: String| problems.push(problem(key, message));

        if self.server.max_concurrent_requests == 0 {
            p(
                "server.max_concurrent_requests".into(),
                "must be at least 1".into(),
            );
        }
        if self.server.request_timeout_seconds == 0 {
            p(
                "server.request_timeout_seconds".into(),
                "must be at least 1".into(),
            );
        }
        if self.queue.backend != QueueBackend::Embedded {
            p(
                "queue.backend".into(),
                format!(
                    "{:?} is not available in this version of levee; use \"embedded\"",
                    self.queue.backend
                )
                .to_lowercase(),
            );
        }
        if self.queue.embedded.max_size_bytes == Some(0) {
            p(
                "queue.embedded.max_size_bytes".into(),
                "must be more than 0".into(),
            );
        }
        if let Some(url) = &self.database.url
            && !["sqlite:", "postgres:", "postgresql:", "mysql:", "mariadb:"]
                .iter()
                .any(|s| url.starts_with(s))
        {
            p(
                "database.url".into(),
                "must start with sqlite:, postgres: or mysql:".into(),
            );
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("file://") || url.starts_with("s3://"))
        {
            p(
                "store.url".into(),
                "must start with file:// or s3://".into(),
            );
        }
        for (i, rule) in self.store.cache_rules.iter().enumerate() {
            if let Err(e) = globset::Glob::new(&rule.glob) {
                p(format!("store.cache_rules[{i}].glob"), e.to_string());
            }
            if rule.cache_control.is_empty()
                || http::HeaderValue::from_str(&rule.cache_control).is_err()
            {
                p(
                    format!("store.cache_rules[{i}].cache_control"),
                    "must be a non-empty header value".into(),
                );
            }
        }
        if let Some(dir) = &self.static_files.site_dir
            && !dir.is_dir()
        {
            p(
                "static.site_dir".into(),
                format!("{} is not a directory", dir.display()),
            );
        }

        let mut collection_names = HashSet::new();
        for (i, c) in self.collections.iter().enumerate() {
            if let Some(message) = name_problem(&c.name, &mut collection_names) {
                p(format!("collections[{i}].name"), message);
            }
            if let SchemaSource::Inline(schema) = &c.schema
                && let Err(e) = compile_schema(schema)
            {
                p(
                    format!("collections[{i}].schema"),
                    format!("is not a valid JSON Schema: {e}"),
                );
            }
        }

        let mut job_names = HashSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let key = |field: &str| format!("jobs[{i}].{field}");
            if let Some(message) = name_problem(&job.name, &mut job_names) {
                p(key("name"), message);
            }
            if let Err(e) = job.schedule.parse::<croner::Cron>() {
                p(
                    key("schedule"),
                    format!("{:?} is not a cron schedule: {e}", job.schedule),
                );
            }
            let source = &job.source;
            let kinds = [
                source.http.is_some(),
                source.sql.is_some(),
                source.file.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                p(
                    key("source"),
                    "must have exactly one of http, sql and file".into(),
                );
            }
            if let Some(url) = &source.http
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                p(
                    key("source.http"),
                    format!("{url:?} must be an http:// or https:// URL"),
                );
            }
            if source.timeout_seconds == 0 {
                p(key("source.timeout_seconds"), "must be at least 1".into());
            }
            for (name, value) in &source.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    p(
                        format!("jobs[{i}].source.headers.{name}"),
                        "is not a valid HTTP header".into(),
                    );
                }
            }
            if let Some(Err(e)) = job.schema_json_if_loaded().map(compile_schema) {
                p(key("schema"), format!("is not a valid JSON Schema: {e}"));
            }
            if job.path.is_empty()
                || job.path.starts_with('/')
                || job
                    .path
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
            {
                p(
                    key("path"),
                    format!(
                        "{:?} must be a relative path in the store, like \"data/places.json\"",
                        job.path
                    ),
                );
            }
            if let Some(value) = &job.cache_control
                && (value.is_empty() || http::HeaderValue::from_str(value).is_err())
            {
                p(
                    key("cache_control"),
                    "must be a non-empty header value".into(),
                );
            }
        }

        let mut names = HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let key = |field: &str| format!("streams[{i}].{field}");
            if let Some(message) = name_problem(&s.name, &mut names) {
                p(key("name"), message);
            }
            if !is_identifier(s.table()) {
                p(
                    key("table"),
                    format!(
                        "{:?} must be 1-63 characters of a-z, 0-9 and '_', starting with a letter",
                        s.table()
                    ),
                );
            }
            if let SchemaSource::Inline(schema) = &s.schema
                && let Err(e) = compile_schema(schema)
            {
                p(key("schema"), format!("is not a valid JSON Schema: {e}"));
            }
            if s.max_bytes == 0 || s.max_bytes > MAX_PAYLOAD_BYTES {
                p(
                    key("max_bytes"),
                    format!("must be between 1 and {MAX_PAYLOAD_BYTES}"),
                );
            }
            if s.max_attempts == 0 {
                p(key("max_attempts"), "must be at least 1".into());
            }
            if s.batch_max == 0 || s.batch_max > MAX_BATCH {
                p(
                    key("batch_max"),
                    format!("must be between 1 and {MAX_BATCH}"),
                );
            }
            if s.batch_max_bytes == 0 || s.batch_max_bytes > MAX_PAYLOAD_BYTES {
                p(
                    key("batch_max_bytes"),
                    format!("must be between 1 and {MAX_PAYLOAD_BYTES}"),
                );
            }
            if s.workers > 64 {
                p(key("workers"), "must be at most 64".into());
            }
            if s.batch_size == 0 || s.batch_size > 1000 {
                p(key("batch_size"), "must be between 1 and 1000".into());
            }
            if s.lease_seconds == 0 {
                p(key("lease_seconds"), "must be at least 1".into());
            }
            if s.max_depth == 0 {
                p(key("max_depth"), "must be at least 1".into());
            }
            for (j, origin) in s.cors_origins.iter().enumerate() {
                if origin != "*"
                    && !(origin.starts_with("https://") || origin.starts_with("http://"))
                    || origin.ends_with('/')
                {
                    p(
                        format!("streams[{i}].cors_origins[{j}]"),
                        format!(
                            "{origin:?} must be \"*\" or an origin like \"https://example.org\""
                        ),
                    );
                }
            }
            if let Some(limit) = s.rate_limit
                && (limit.per_second == 0 || limit.burst == Some(0))
            {
                p(
                    key("rate_limit"),
                    "per_second and burst must be at least 1".into(),
                );
            }
            for (column, pointer) in &s.columns {
                let key = format!("streams[{i}].columns.{column}");
                if !is_identifier(column) {
                    p(
                        key.clone(),
                        "column names must be 1-63 characters of a-z, 0-9 and '_', starting with a letter".into(),
                    );
                }
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    p(
                        key,
                        format!("{pointer:?} is not a JSON pointer (they start with '/')"),
                    );
                }
            }
        }
        problems
    }
}

fn problem(key: String, message: String) -> Problem {
    Problem { key, message }
}

/// Compile a stream schema the way intake does: formats such as `email` are checked.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// What is wrong with a stream, collection or job name, given the names seen before it.
fn name_problem<'a>(name: &'a str, seen: &mut HashSet<&'a str>) -> Option<String> {
    if !is_stream_name(name) {
        Some(format!(
            "{name:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
        ))
    } else if !seen.insert(name) {
        Some(format!("{name:?} is declared twice"))
    } else {
        None
    }
}

fn is_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Table and column names are interpolated into SQL, so they are held to a strict form.
fn is_identifier(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests;
