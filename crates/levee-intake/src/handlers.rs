//! The HTTP handlers. Cheap refusals come first (unknown stream, wrong Content-Type, rate
//! limit, declared length) so a flood of bad requests costs little; the body is read only up
//! to the stream's limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use levee_queue::MessageState;
use serde_json::json;
use tower_http::timeout::TimeoutError;

use crate::error::ApiError;
use crate::{Intake, Stream, payload};

/// Rate-limiter entries kept before idle clients are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

pub async fn post_one(
    State(intake): State<Arc<Intake>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::not_found())?;
    let (parts, body) = request.into_parts();
    let (stream, _) = admit(&intake, &name, &parts, false)?;
    let key = payload::idempotency_key(parts.headers.get("idempotency-key"))?;
    let bytes = read_body(body, &parts.headers, stream.config.max_bytes).await?;
    let value = payload::parse(&bytes).map_err(ApiError::invalid_json)?;
    let messages = payload::messages(stream, vec![Ok(value)], key, false)?;
    let id = messages[0].id.clone();
    intake.queue.send(&name, messages).await?;
    stream.accepted.fetch_add(1, Ordering::Relaxed);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: &id,
            stream: &name,
            status: "queued",
        }),
    )
        .into_response())
}

/// The 202 of a single POST (a struct: this is the hot path).
#[derive(serde::Serialize)]
struct Accepted<'a> {
    id: &'a str,
    stream: &'a str,
    status: &'static str,
}

pub async fn post_batch(
    State(intake): State<Arc<Intake>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::not_found())?;
    let (parts, body) = request.into_parts();
    let (stream, ndjson) = admit(&intake, &name, &parts, true)?;
    let key = payload::idempotency_key(parts.headers.get("idempotency-key"))?;
    let bytes = read_body(body, &parts.headers, stream.config.batch_max_bytes).await?;
    let items = payload::split_batch(&bytes, ndjson)?;
    if items.len() > stream.config.batch_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} payloads is more than this stream's batch limit of {}",
                items.len(),
                stream.config.batch_max
            ),
        ));
    }
    if items.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_violation",
            "the batch is empty",
        ));
    }
    let messages = payload::messages(stream, items, key, true)?;
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    intake.queue.send(&name, messages).await?;
    stream
        .accepted
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"ids": ids, "stream": name, "status": "queued"})),
    )
        .into_response())
}

pub async fn get_message(
    State(intake): State<Arc<Intake>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, id)) = path.map_err(|_| ApiError::not_found())?;
    let stream = intake.stream(&name)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_message",
            "no message with this id is waiting in this stream",
        )
    };
    if !payload::is_message_id(&id) {
        return Err(unknown());
    }
    let status = match intake.queue.state(&name, &id).await? {
        Some(MessageState::Queued | MessageState::InFlight) => "queued",
        Some(MessageState::Dead) => "dead",
        None => match &intake.sink {
            Some(sink) => match sink.contains(stream.config.table(), &id).await {
                Ok(true) => "stored",
                Ok(false) => return Err(unknown()),
                Err(e) => {
                    tracing::warn!(error = %e, "status lookup in the database failed");
                    return Err(ApiError::unavailable("the database cannot be reached", 5));
                }
            },
            None => return Err(unknown()),
        },
    };
    Ok(Json(json!({"id": id, "stream": name, "status": status})).into_response())
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the queue answers for every stream.
pub async fn readyz(State(intake): State<Arc<Intake>>) -> Result<Response, ApiError> {
    for name in intake.streams.keys() {
        intake.queue.stats(name).await?;
    }
    Ok(Json(json!({"status": "ready"})).into_response())
}

/// Does nothing but read the body and answer 202: the baseline of `bench/intake`.
pub async fn noop(_body: Bytes) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(json!({"status": "ok"})))
}

/// The checks before a POST's body is read: the stream exists, the Content-Type fits, the
/// client is within its rate. Returns the stream and whether the body is NDJSON.
fn admit<'a>(
    intake: &'a Intake,
    name: &str,
    parts: &axum::http::request::Parts,
    batch: bool,
) -> Result<(&'a Stream, bool), ApiError> {
    let stream = intake.stream(name)?;
    let ndjson = require_media_type(&parts.headers, batch)?;
    check_rate(intake, stream, parts)?;
    Ok((stream, ndjson))
}

/// Accept `application/json` (and, for batches, `application/x-ndjson`), in UTF-8 only.
/// Returns whether the body is NDJSON.
fn require_media_type(headers: &HeaderMap, batch: bool) -> Result<bool, ApiError> {
    let refuse = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{what}; send Content-Type: application/json{}",
                if batch {
                    " or application/x-ndjson"
                } else {
                    ""
                }
            ),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(refuse("the request has no Content-Type"));
    };
    let value = value
        .to_str()
        .map_err(|_| refuse("the Content-Type is not readable"))?
        .to_ascii_lowercase();
    let mut params = value.split(';').map(str::trim);
    let essence = params.next().unwrap_or_default();
    for param in params {
        if let Some(charset) = param.strip_prefix("charset=")
            && !matches!(charset.trim_matches('"'), "utf-8" | "utf8")
        {
            return Err(refuse("only the UTF-8 charset is accepted"));
        }
    }
    match essence {
        "application/json" => Ok(false),
        "application/x-ndjson" if batch => Ok(true),
        other => Err(refuse(&format!("{other:?} is not accepted"))),
    }
}

/// Per-client rate limit of the stream, if it has one.
fn check_rate(
    intake: &Intake,
    stream: &Stream,
    parts: &axum::http::request::Parts,
) -> Result<(), ApiError> {
    let Some(limiter) = &stream.limiter else {
        return Ok(());
    };
    let client = client_ip(intake, parts);
    if let Err(not_until) = limiter.check_key(&client) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError {
            retry_after: Some(wait.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; retry later",
            )
        });
    }
    if limiter.len() > MAX_TRACKED_CLIENTS {
        limiter.retain_recent();
    }
    Ok(())
}

fn client_ip(intake: &Intake, parts: &axum::http::request::Parts) -> IpAddr {
    if intake.trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
    {
        return ip;
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// Read the body, refusing it as soon as it is known to exceed `limit`: from the declared
/// Content-Length, or while it streams in.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if caused_by::<LengthLimitError>(&*e) => Err(ApiError::too_large(limit)),
        Err(e) if caused_by::<TimeoutError>(&*e) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request body did not arrive in time",
        )),
        Err(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body could not be read",
            ))
        }
    }
}

/// Whether `T` is anywhere in the chain of `error`'s causes.
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<T>() {
            return true;
        }
        cause = e.source();
    }
    false
}
