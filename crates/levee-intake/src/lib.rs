//! Intake: the write API of the queued-writes pattern.
//!
//! `POST /v1/streams/{stream}` validates a JSON payload against the stream's schema, makes it
//! durable in the queue and answers `202 {"id", "stream", "status": "queued"}`. Nothing here
//! touches the SQL database, so a database outage or migration never stops intake.
//!
//! A request goes: [`handlers`] (limits, Content-Type, rate) → [`payload`] (parse, validate,
//! id) → the [`Queue`](levee_queue::Queue) → 202. Every refusal is an [`ApiError`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use levee_config::StreamConfig;
use levee_queue::{Queue, QueueError, QueueSpec};
use levee_sink::Sink;
use tower_http::cors::{AllowOrigin, CorsLayer};

mod error;
mod handlers;
mod payload;

pub use error::{ApiError, Detail};

/// What intake needs to serve its streams; shared by every request.
pub struct Intake {
    streams: HashMap<String, Stream>,
    queue: Arc<dyn Queue>,
    /// Where drained messages end up, to answer `stored` in the status lookup.
    sink: Option<Arc<dyn Sink>>,
    trust_forwarded_for: bool,
}

/// A stream ready to take writes: its config and its compiled schema.
struct Stream {
    config: StreamConfig,
    validator: jsonschema::Validator,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Messages accepted by this node since it started.
    accepted: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("streams[{0}].schema: {1}")]
    Schema(String, String),
    #[error("cannot declare the queue of stream {0}: {1}")]
    Declare(String, QueueError),
}

impl Intake {
    /// Compile every stream's schema and declare its queue.
    pub async fn new(
        streams: &[StreamConfig],
        queue: Arc<dyn Queue>,
        trust_forwarded_for: bool,
    ) -> Result<Intake, IntakeError> {
        let mut compiled = HashMap::new();
        for config in streams {
            let validator = levee_config::compile_schema(config.schema_json())
                .map_err(|e| IntakeError::Schema(config.name.clone(), e))?;
            queue
                .declare(&QueueSpec {
                    name: config.name.clone(),
                    max_attempts: config.max_attempts,
                    max_depth: config.max_depth,
                })
                .await
                .map_err(|e| IntakeError::Declare(config.name.clone(), e))?;
            let limiter = config.rate_limit.map(|limit| {
                let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
                let burst = limit.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
                RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
            });
            compiled.insert(
                config.name.clone(),
                Stream {
                    config: config.clone(),
                    validator,
                    limiter,
                    accepted: AtomicU64::new(0),
                },
            );
        }
        Ok(Intake {
            streams: compiled,
            queue,
            sink: None,
            trust_forwarded_for,
        })
    }

    /// Answer `stored` for messages found in this sink once the queue no longer has them.
    pub fn with_sink(mut self, sink: Arc<dyn Sink>) -> Intake {
        self.sink = Some(sink);
        self
    }

    /// Messages of `stream` accepted by this node since it started.
    pub fn accepted(&self, stream: &str) -> u64 {
        self.streams
            .get(stream)
            .map_or(0, |s| s.accepted.load(Ordering::Relaxed))
    }

    fn stream(&self, name: &str) -> Result<&Stream, ApiError> {
        self.streams
            .get(name)
            .ok_or_else(|| ApiError::unknown_stream(name))
    }

    /// Whether a browser at `origin` may call the stream route at `path`.
    fn cors_allows(&self, origin: &HeaderValue, path: &str) -> bool {
        let Some(name) = path
            .strip_prefix("/v1/streams/")
            .and_then(|rest| rest.split('/').next())
        else {
            return false;
        };
        self.streams.get(name).is_some_and(|s| {
            s.config
                .cors_origins
                .iter()
                .any(|allowed| allowed == "*" || origin.as_bytes() == allowed.as_bytes())
        })
    }
}

/// The intake routes: streams, message status, health. `noop_route` adds `POST /v1/noop`,
/// the baseline of `bench/intake`.
pub fn router(intake: Arc<Intake>, noop_route: bool) -> Router {
    let cors_intake = intake.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            cors_intake.cors_allows(origin, parts.uri.path())
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .max_age(Duration::from_secs(600));
    let mut router = Router::new()
        .route("/v1/streams/{stream}", post(handlers::post_one))
        .route("/v1/streams/{stream}/batch", post(handlers::post_batch))
        .route(
            "/v1/streams/{stream}/messages/{id}",
            get(handlers::get_message),
        )
        .layer(cors)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz));
    if noop_route {
        router = router.route("/v1/noop", post(handlers::noop));
    }
    router.with_state(intake)
}

#[cfg(test)]
mod tests;
