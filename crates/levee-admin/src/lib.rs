//! The admin API, for operators and their scripts: status, pause/resume, dead letters,
//! running a job now.
//! Every route needs `Authorization: Bearer $LEVEE_ADMIN_TOKEN` (compared in constant time).
//! The public face of the same status is `status.json` ([`status_file`]).

pub mod status_file;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use levee_intake::{ApiError, Intake};
use levee_jobs::Jobs;
use levee_queue::{DeadMessage, Queue};
use levee_worker::Drain;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// Samples kept for the rates in the status: one a second.
const RATE_WINDOW: usize = 11;

pub struct Admin {
    token: String,
    queue: Arc<dyn Queue>,
    intake: Arc<Intake>,
    drain: Arc<Drain>,
    /// (stream, max_depth), in config order.
    streams: Vec<(String, u64)>,
    samples: Mutex<VecDeque<Sample>>,
    jobs: Option<Arc<Jobs>>,
}

/// Totals at one instant, to turn counters into rates.
struct Sample {
    at: Instant,
    accepted: Vec<u64>,
    stored: Vec<u64>,
}

impl Admin {
    pub fn new(
        token: String,
        queue: Arc<dyn Queue>,
        intake: Arc<Intake>,
        drain: Arc<Drain>,
        streams: Vec<(String, u64)>,
    ) -> Admin {
        Admin {
            token,
            queue,
            intake,
            drain,
            streams,
            samples: Mutex::new(VecDeque::with_capacity(RATE_WINDOW)),
            jobs: None,
        }
    }

    /// Show these jobs' runs in the status and let `POST /v1/admin/jobs/{name}/run` run them.
    pub fn with_jobs(mut self, jobs: Arc<Jobs>) -> Admin {
        self.jobs = Some(jobs);
        self
    }

    fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            accepted: self
                .streams
                .iter()
                .map(|(s, _)| self.intake.accepted(s))
                .collect(),
            stored: self
                .streams
                .iter()
                .map(|(s, _)| self.drain.stored(s))
                .collect(),
        }
    }

    /// Record totals every second until shutdown, for the per-second rates.
    pub async fn sample_rates(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sample = self.sample();
            let mut samples = self.samples.lock().unwrap();
            if samples.len() == RATE_WINDOW {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// (intake, drain) per second of stream `i` over the window.
    fn rates(&self, i: usize) -> (f64, f64) {
        let samples = self.samples.lock().unwrap();
        let now = self.sample();
        let Some(first) = samples.front() else {
            return (0.0, 0.0);
        };
        let seconds = now.at.duration_since(first.at).as_secs_f64();
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds;
        (
            rate(now.accepted[i], first.accepted[i]),
            rate(now.stored[i], first.stored[i]),
        )
    }

    fn known(&self, stream: &str) -> Result<(), ApiError> {
        if self.streams.iter().any(|(s, _)| s == stream) {
            Ok(())
        } else {
            Err(ApiError::unknown_stream(stream))
        }
    }
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/v1/admin/status", get(status))
        .route("/v1/admin/pause", post(pause_all))
        .route("/v1/admin/resume", post(resume_all))
        .route("/v1/admin/streams/{stream}/pause", post(pause))
        .route("/v1/admin/streams/{stream}/resume", post(resume))
        .route(
            "/v1/admin/streams/{stream}/dead",
            get(dead_list).delete(dead_purge),
        )
        .route(
            "/v1/admin/streams/{stream}/dead/redrive",
            post(dead_redrive),
        )
        .route("/v1/admin/streams/{stream}/dead/{id}", get(dead_show))
        .route("/v1/admin/jobs/{name}/run", post(job_run))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin)
}

async fn require_token(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let ok = !admin.token.is_empty() && bool::from(given.as_bytes().ct_eq(admin.token.as_bytes()));
    if !ok {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin routes need Authorization: Bearer <LEVEE_ADMIN_TOKEN>",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        return response;
    }
    next.run(request).await
}

async fn status(State(admin): State<Arc<Admin>>) -> Result<Json<Value>, ApiError> {
    let health = admin.drain.health();
    let mut streams = BTreeMap::new();
    for (i, (name, max_depth)) in admin.streams.iter().enumerate() {
        let stats = admin.queue.stats(name).await?;
        let pause = admin.drain.control().paused(name);
        let (intake_rate, drain_rate) = admin.rates(i);
        streams.insert(
            name.clone(),
            json!({
                "accepting": stats.depth + stats.in_flight < *max_depth,
                "paused": pause.is_some(),
                "pause_message": pause.as_ref().and_then(|p| p.message.clone()),
                "paused_since": pause.as_ref().map(|p| p.since),
                "depth": stats.depth,
                "in_flight": stats.in_flight,
                "dead": stats.dead,
                "oldest_age_seconds": stats.oldest_age.map(|a| a.as_secs_f64()),
                "intake_per_second": intake_rate,
                "drain_per_second": drain_rate,
                "sink": health,
            }),
        );
    }
    let mut body = json!({ "streams": streams });
    if let Some(jobs) = &admin.jobs {
        body["jobs"] = json!(jobs.status());
    }
    Ok(Json(body))
}

/// Run a job now, on this node; answers with the run (`ok` false if it failed).
async fn job_run(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("no job named {name:?}"),
        )
    };
    let jobs = admin.jobs.as_ref().ok_or_else(unknown)?;
    match jobs.run_now(&name).await {
        Ok(run) => Ok(Json(json!({ "job": name, "run": run }))),
        Err(levee_jobs::RunError::UnknownJob(_)) => Err(unknown()),
    }
}

#[derive(Deserialize, Default)]
struct PauseBody {
    message: Option<String>,
}

fn pause_message(body: Result<Json<PauseBody>, JsonRejection>) -> Result<Option<String>, ApiError> {
    match body {
        Ok(Json(body)) => Ok(body.message.filter(|m| !m.is_empty())),
        // No body at all is fine: a pause without a message.
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(None),
        Err(e) => Err(ApiError::invalid_json(e.body_text())),
    }
}

fn stream_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(s)| s).map_err(|_| ApiError::not_found())
}

fn control_result(
    result: Result<Vec<String>, levee_worker::ControlError>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    match result {
        Ok(streams) => Ok(Json(json!({ "streams": streams, "paused": paused }))),
        Err(levee_worker::ControlError::UnknownStream(s)) => Err(ApiError::unknown_stream(&s)),
        Err(e) => {
            tracing::error!(error = %e, "pause state not saved");
            Err(ApiError::unavailable(
                "the pause state could not be saved",
                5,
            ))
        }
    }
}

async fn pause(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PauseBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_name(path)?;
    let message = pause_message(body)?;
    tracing::info!(stream, ?message, "paused by an operator");
    control_result(admin.drain.control().pause(Some(&stream), message), true)
}

async fn resume(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_name(path)?;
    tracing::info!(stream, "resumed by an operator");
    control_result(admin.drain.control().resume(Some(&stream)), false)
}

async fn pause_all(
    State(admin): State<Arc<Admin>>,
    body: Result<Json<PauseBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let message = pause_message(body)?;
    tracing::info!(?message, "all streams paused by an operator");
    control_result(admin.drain.control().pause(None, message), true)
}

async fn resume_all(State(admin): State<Arc<Admin>>) -> Result<Json<Value>, ApiError> {
    tracing::info!("all streams resumed by an operator");
    control_result(admin.drain.control().resume(None), false)
}

#[derive(Deserialize)]
struct DeadQuery {
    limit: Option<usize>,
    after: Option<String>,
}

fn dead_json(d: &DeadMessage) -> Value {
    let payload: Value = serde_json::from_slice(&d.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.payload).into_owned()));
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    json!({
        "id": d.id,
        "payload": payload,
        "error": d.error,
        "attempts": d.attempts,
        "enqueued_at": secs(d.enqueued_at),
        "died_at": secs(d.died_at),
    })
}

async fn dead_list(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    Query(q): Query<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_name(path)?;
    admin.known(&stream)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let dead = admin.queue.dead(&stream, limit, q.after.as_deref()).await?;
    Ok(Json(json!({
        "stream": stream,
        "dead": dead.iter().map(dead_json).collect::<Vec<_>>(),
        "next_after": (dead.len() == limit).then(|| dead.last().map(|d| d.id.clone())).flatten(),
    })))
}

async fn dead_show(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((stream, id)) = path.map_err(|_| ApiError::not_found())?;
    admin.known(&stream)?;
    // Dead letters are few; page through them.
    let mut after: Option<String> = None;
    loop {
        let page = admin.queue.dead(&stream, 500, after.as_deref()).await?;
        if let Some(d) = page.iter().find(|d| d.id == id) {
            return Ok(Json(dead_json(d)));
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id.clone()),
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_message",
                    "no dead letter with this id",
                ));
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct IdsBody {
    ids: Option<Vec<String>>,
}

/// The stream and the optional `{"ids": [...]}` of a redrive or purge.
fn dead_target(
    admin: &Admin,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<IdsBody>, JsonRejection>,
) -> Result<(String, Option<Vec<String>>), ApiError> {
    let stream = stream_name(path)?;
    admin.known(&stream)?;
    let ids = match body {
        Ok(Json(body)) => body.ids,
        Err(JsonRejection::MissingJsonContentType(_)) => None,
        Err(e) => return Err(ApiError::invalid_json(e.body_text())),
    };
    Ok((stream, ids))
}

async fn dead_redrive(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<IdsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (stream, ids) = dead_target(&admin, path, body)?;
    let moved = admin.queue.redrive(&stream, ids.as_deref()).await?;
    tracing::info!(stream, moved, "dead letters redriven");
    Ok(Json(json!({ "stream": stream, "redriven": moved })))
}

async fn dead_purge(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<IdsBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (stream, ids) = dead_target(&admin, path, body)?;
    let purged = admin.queue.purge_dead(&stream, ids.as_deref()).await?;
    tracing::warn!(stream, purged, "dead letters purged");
    Ok(Json(json!({ "stream": stream, "purged": purged })))
}
