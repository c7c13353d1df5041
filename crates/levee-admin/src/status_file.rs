//! `status.json`: what a page tells its users while their writes are delayed ("your post
//! was received and will appear shortly"), published through the store so pages read it
//! even when levee's API is busy or down.
//!
//! It is published at start, on every pause and resume, when a stream's lag crosses its
//! `delayed_after_seconds` either way, and every [`REFRESH_WHILE_DELAYED`] while a stream
//! is delayed, so the lag it shows stays roughly current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use levee_publish::{PublishFile, Publisher};
use levee_queue::Queue;
use levee_worker::Control;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// How often the queue's lag is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a delayed status is republished with its new lag.
const REFRESH_WHILE_DELAYED: Duration = Duration::from_secs(15);
/// Where it is published.
pub const STATUS_PATH: &str = "status.json";

/// One stream as `status.json` describes it.
#[derive(Debug, Clone)]
pub struct StatusStream {
    pub name: String,
    pub max_depth: u64,
    pub delayed_after: Duration,
}

pub struct StatusFile {
    queue: Arc<dyn Queue>,
    control: Arc<Control>,
    streams: Vec<StatusStream>,
    publisher: Publisher,
}

impl StatusFile {
    pub fn new(
        queue: Arc<dyn Queue>,
        control: Arc<Control>,
        streams: Vec<StatusStream>,
        publisher: Publisher,
    ) -> StatusFile {
        StatusFile {
            queue,
            control,
            streams,
            publisher,
        }
    }

    /// The current status: per stream `accepting`, `paused`, `delayed`, `lag_seconds`,
    /// `message` (the operator's, while paused).
    pub async fn snapshot(&self) -> Value {
        let mut streams = Map::new();
        for s in &self.streams {
            let stats = self.queue.stats(&s.name).await.ok();
            let pause = self.control.paused(&s.name);
            let lag = stats
                .as_ref()
                .and_then(|st| st.oldest_age)
                .unwrap_or_default();
            let accepting = stats.as_ref().is_none_or(|st| st.depth < s.max_depth);
            streams.insert(
                s.name.clone(),
                json!({
                    "accepting": accepting,
                    "paused": pause.is_some(),
                    "delayed": pause.is_some() || lag >= s.delayed_after,
                    "lag_seconds": lag.as_secs(),
                    "message": pause.and_then(|p| p.message),
                }),
            );
        }
        json!({
            "streams": streams,
            "updated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }

    /// Publish whenever the status changes, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.control.subscribe();
        let mut published: Option<(Value, Instant)> = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            let status = self.snapshot().await;
            let key = state_of(&status);
            let delayed = key
                .as_object()
                .is_some_and(|m| m.values().any(|s| s["delayed"] == true));
            let due = match &published {
                None => true,
                Some((last, at)) => {
                    *last != key || delayed && at.elapsed() >= REFRESH_WHILE_DELAYED
                }
            };
            if due {
                match self
                    .publisher
                    .publish(vec![PublishFile::json(STATUS_PATH, &status)])
                    .await
                {
                    Ok(_) => published = Some((key, Instant::now())),
                    // Tried again at the next tick.
                    Err(e) => tracing::warn!(error = %e, "cannot publish status.json"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = changes.changed() => {}
                _ = tick.tick() => {}
            }
        }
    }
}

/// The part of a status whose change must be published at once: everything but the lag
/// and the time.
fn state_of(status: &Value) -> Value {
    let mut streams = status["streams"].clone();
    if let Some(map) = streams.as_object_mut() {
        for s in map.values_mut() {
            if let Some(s) = s.as_object_mut() {
                s.remove("lag_seconds");
            }
        }
    }
    streams
}
