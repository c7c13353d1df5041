//! From request bytes to queue messages: parse, validate against the stream's schema, and
//! give each payload its id.

use levee_queue::NewMessage;
use serde_json::Value;
use uuid::Uuid;

use crate::Stream;
use crate::error::{ApiError, Detail};

/// Namespace of ids derived from an `Idempotency-Key` (a UUIDv5 of stream and key).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6c65_7665_6500_4000_8000_6964_656d_706f);
/// Most problems reported for one request; the rest are summarised by the count.
const MAX_DETAILS: usize = 20;

/// Parse one JSON document. serde_json refuses invalid UTF-8 and nesting deeper than 128
/// levels, so hostile input ends here as a 400 and never reaches the stack's limit.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Check one payload against the stream: an object, within the size limit, valid by the
/// schema. Returns the bytes to enqueue: the payload re-serialized, so what is stored is
/// exactly what was validated (duplicate keys and the like are resolved here, once).
pub fn check(stream: &Stream, value: &Value, index: Option<usize>) -> Result<Vec<u8>, Vec<Detail>> {
    if !value.is_object() {
        return Err(vec![Detail {
            index,
            code: "schema_violation",
            pointer: String::new(),
            message: "the payload must be a JSON object".into(),
        }]);
    }
    if !stream.validator.is_valid(value) {
        return Err(stream
            .validator
            .iter_errors(value)
            .take(MAX_DETAILS)
            .map(|e| Detail {
                index,
                code: "schema_violation",
                pointer: e.instance_path().to_string(),
                // Masked: the message names the rule, not the (possibly huge) offending value.
                message: e.masked().to_string(),
            })
            .collect());
    }
    let bytes = serde_json::to_vec(value).expect("a Value always serializes");
    if bytes.len() > stream.config.max_bytes {
        return Err(vec![Detail {
            index,
            code: "too_large",
            pointer: String::new(),
            message: format!(
                "the payload is larger than this stream's limit of {} bytes",
                stream.config.max_bytes
            ),
        }]);
    }
    Ok(bytes)
}

/// A message id: random (time-ordered) without a key; derived from (stream, key, index in a
/// batch) with one, so a retried request gets the same id and is stored once.
pub fn message_id(stream: &str, key: Option<&str>, index: Option<usize>) -> String {
    match (key, index) {
        (None, _) => Uuid::now_v7(),
        (Some(key), None) => Uuid::new_v5(
            &IDEMPOTENCY_NAMESPACE,
            format!("{stream}\n{key}").as_bytes(),
        ),
        (Some(key), Some(i)) => Uuid::new_v5(
            &IDEMPOTENCY_NAMESPACE,
            format!("{stream}\n{key}\n{i}").as_bytes(),
        ),
    }
    .to_string()
}

/// Validate an `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn idempotency_key(raw: Option<&axum::http::HeaderValue>) -> Result<Option<&str>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(raw.to_str().ok())
}

/// Whether `s` looks like an id we hand out, before it is used in a lookup.
pub fn is_message_id(s: &str) -> bool {
    Uuid::try_parse(s).is_ok()
}

/// The payloads of a batch body: a JSON array, or one JSON document per line (NDJSON).
/// A line that is not JSON is reported with its index, like any other bad item.
pub fn split_batch(bytes: &[u8], ndjson: bool) -> Result<Vec<Result<Value, String>>, ApiError> {
    if ndjson {
        return Ok(bytes
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(parse)
            .collect());
    }
    match parse(bytes).map_err(ApiError::invalid_json)? {
        Value::Array(items) => Ok(items.into_iter().map(Ok).collect()),
        _ => Err(ApiError::invalid_json(
            "a batch is a JSON array of payloads (or application/x-ndjson)",
        )),
    }
}

/// Build the messages of a request, or every problem found.
pub fn messages(
    stream: &Stream,
    items: Vec<Result<Value, String>>,
    key: Option<&str>,
    batch: bool,
) -> Result<Vec<NewMessage>, ApiError> {
    let mut messages = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let index = batch.then_some(i);
        let checked = match item {
            Ok(value) => check(stream, &value, index),
            Err(message) => Err(vec![Detail {
                index,
                code: "invalid_json",
                pointer: String::new(),
                message,
            }]),
        };
        match checked {
            Ok(payload) => messages.push(NewMessage {
                id: message_id(&stream.config.name, key, index),
                payload,
            }),
            Err(details) => problems.extend(details),
        }
    }
    if problems.is_empty() {
        Ok(messages)
    } else {
        problems.truncate(MAX_DETAILS);
        Err(ApiError::schema_violation(problems))
    }
}
