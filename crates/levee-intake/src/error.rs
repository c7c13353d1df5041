//! The one error type of the HTTP API: `{"error": {"code", "message", …}}` with the status
//! codes of the contract. Internal details are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use levee_queue::QueueError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Per-field or per-item problems (schema violations, bad batch items).
    pub details: Vec<Detail>,
    pub retry_after: Option<u64>,
}

/// One problem in a payload: where (a JSON pointer, and the index in a batch) and what.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub code: &'static str,
    pub pointer: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn unknown_stream(stream: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_stream",
            format!("there is no stream named {stream:?}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than this stream's limit of {limit} bytes"),
        )
    }

    pub fn schema_violation(details: Vec<Detail>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{} at {:?}", one.message, one.pointer),
            many => format!("{} problems in the payload", many.len()),
        };
        ApiError {
            details,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "schema_violation",
                message,
            )
        }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            // The message is safe to show: it says which limit was reached.
            QueueError::Full(message) => ApiError::unavailable(message, 30),
            QueueError::UnknownQueue(stream) => ApiError::unknown_stream(&stream),
            e @ (QueueError::Unavailable(_) | QueueError::Backend(_)) => {
                tracing::error!(error = %e, "queue failure");
                ApiError::unavailable("the queue cannot take writes right now", 5)
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
