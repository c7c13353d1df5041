//! The intake contract, black-box through the router (`oneshot`), on a real embedded queue.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use levee_config::{Config, RateLimit, StreamConfig};
use levee_queue::{EmbeddedOptions, EmbeddedQueue, Queue};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{Intake, router};

struct App {
    router: Router,
    queue: Arc<EmbeddedQueue>,
    _dir: tempfile::TempDir,
}

fn signups() -> StreamConfig {
    let config = Config::demo().expect("demo config");
    config.streams.into_iter().next().expect("signups stream")
}

async fn app_with(configure: impl FnOnce(&mut StreamConfig)) -> App {
    let mut stream = signups();
    configure(&mut stream);
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(
        EmbeddedQueue::open(
            dir.path(),
            EmbeddedOptions {
                min_free_disk_bytes: 0,
                max_size_bytes: None,
            },
        )
        .unwrap(),
    );
    let intake = Intake::new(&[stream], queue.clone(), false).await.unwrap();
    App {
        router: router(Arc::new(intake), true),
        queue,
        _dir: dir,
    }
}

async fn app() -> App {
    app_with(|_| {}).await
}

const GOOD: &str = r#"{"email":"ada@example.org","name":"Ada","zip":"37415","message":"hi"}"#;

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::post(path);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(body.into()).unwrap()
}

fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    post(path, Some("application/json"), body)
}

async fn send(app: &App, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
    };
    (status, headers, body)
}

async fn depth(app: &App) -> u64 {
    app.queue.stats("signups").await.unwrap().depth
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn a_valid_post_is_queued_and_answered_202() {
    let app = app().await;
    let (status, _, body) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["stream"], "signups");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap();

    let got = app
        .queue
        .receive("signups", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    let stored: Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(GOOD).unwrap());
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_id_and_one_message() {
    let app = app().await;
    let keyed = |key: &str| {
        Request::post("/v1/streams/signups")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(Body::from(GOOD))
            .unwrap()
    };
    let (s1, _, first) = send(&app, keyed("form-42")).await;
    let (s2, _, second) = send(&app, keyed("form-42")).await;
    let (s3, _, other) = send(&app, keyed("form-43")).await;
    assert_eq!(
        (s1, s2, s3),
        (
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED
        )
    );
    assert_eq!(first["id"], second["id"]);
    assert_ne!(first["id"], other["id"]);
    assert_eq!(depth(&app).await, 2);

    let (status, _, body) = send(&app, keyed("bad key with spaces")).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    );
}

#[tokio::test]
async fn the_message_status_is_queued_then_dead_and_404_when_unknown() {
    let app = app_with(|s| s.max_attempts = 1).await;
    let (_, _, body) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
    let id = body["id"].as_str().unwrap();
    let path = format!("/v1/streams/signups/messages/{id}");

    let (status, _, body) = send(&app, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": id, "stream": "signups", "status": "queued"})
    );

    let got = app
        .queue
        .receive("signups", 1, Duration::from_secs(30))
        .await
        .unwrap();
    app.queue
        .nack("signups", &got[0].receipt, Duration::ZERO, "constraint")
        .await
        .unwrap();
    let (_, _, body) = send(&app, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(body["status"], "dead");

    for unknown in [
        "/v1/streams/signups/messages/0190a7c4-0000-7000-8000-000000000000",
        "/v1/streams/signups/messages/not-an-id",
    ] {
        let (status, _, body) =
            send(&app, Request::get(unknown).body(Body::empty()).unwrap()).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_message");
    }
    let (status, _, body) = send(
        &app,
        Request::get(format!("/v1/streams/nope/messages/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_stream");
}

#[tokio::test]
async fn a_batch_is_accepted_whole_with_ids_in_order() {
    let app = app().await;
    let batch = format!("[{GOOD},{GOOD},{GOOD}]");
    let (status, _, body) = send(&app, json_post("/v1/streams/signups/batch", batch)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = serde_json::from_value(body["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);

    let got = app
        .queue
        .receive("signups", 10, Duration::from_secs(30))
        .await
        .unwrap();
    let got_ids: Vec<String> = got.into_iter().map(|d| d.id).collect();
    assert_eq!(got_ids, ids, "queued in the order posted");

    let ndjson = format!("{GOOD}\n\n{GOOD}\r\n");
    let (status, _, body) = send(
        &app,
        post(
            "/v1/streams/signups/batch",
            Some("application/x-ndjson"),
            ndjson,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_batch_with_bad_items_is_refused_whole_naming_each_index() {
    let app = app().await;
    let batch = format!(r#"[{GOOD}, {{"email":"nope","zip":"1"}}, {GOOD}, 7]"#);
    let (status, _, body) = send(&app, json_post("/v1/streams/signups/batch", batch)).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_violation",
    );
    let details = body["error"]["details"].as_array().unwrap();
    let indexes: Vec<u64> = details
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert!(indexes.contains(&1) && indexes.contains(&3), "{body}");
    assert!(!indexes.contains(&0) && !indexes.contains(&2), "{body}");
    let pointers: Vec<&str> = details
        .iter()
        .map(|d| d["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/email") && pointers.contains(&"/zip"),
        "{body}"
    );

    let ndjson = format!("{GOOD}\n{{not json\n");
    let (status, _, body) = send(
        &app,
        post(
            "/v1/streams/signups/batch",
            Some("application/x-ndjson"),
            ndjson,
        ),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_violation",
    );
    assert_eq!(body["error"]["details"][0]["index"], 1);
    assert_eq!(body["error"]["details"][0]["code"], "invalid_json");
    assert_eq!(depth(&app).await, 0, "nothing of a refused batch is queued");
}

#[tokio::test]
async fn batch_limits_and_shapes() {
    let app = app_with(|s| s.batch_max = 2).await;
    let three = format!("[{GOOD},{GOOD},{GOOD}]");
    let (status, _, body) = send(&app, json_post("/v1/streams/signups/batch", three)).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (status, _, body) = send(&app, json_post("/v1/streams/signups/batch", "[]")).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_violation",
    );
    let (status, _, body) = send(&app, json_post("/v1/streams/signups/batch", GOOD)).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(depth(&app).await, 0);
}

#[tokio::test]
async fn schema_violations_name_the_failing_pointer() {
    let app = app().await;
    for (payload, pointer) in [
        (r#"{"email":"not-an-email","zip":"37415"}"#, "/email"),
        (r#"{"email":"ada@example.org","zip":"3741"}"#, "/zip"),
        (r#"{"email":"ada@example.org","zip":37415}"#, "/zip"),
        (
            r#"{"email":"ada@example.org","zip":"37415","admin":true}"#,
            "",
        ),
        (r#"{"zip":"37415"}"#, ""),
        (r#"["ada@example.org"]"#, ""),
        ("\"just a string\"", ""),
    ] {
        let (status, _, body) = send(&app, json_post("/v1/streams/signups", payload)).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_violation",
        );
        let details = body["error"]["details"].as_array().unwrap();
        assert!(
            details.iter().any(|d| d["pointer"] == pointer),
            "{payload}: expected a problem at {pointer:?}, got {body}"
        );
    }
    assert_eq!(depth(&app).await, 0);
}

#[tokio::test]
async fn hostile_input_gets_its_4xx_and_queues_nothing() {
    // Room for 100,000 levels of nesting, not for 10 MB.
    let app = app_with(|s| s.max_bytes = 1024 * 1024).await;
    let ten_mb = vec![b'a'; 10 * 1024 * 1024];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"email\":{}1{}}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            json_post("/v1/streams/signups", "{\"email\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post("/v1/streams/signups", ""),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post("/v1/streams/signups", "{} trailing"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post("/v1/streams/signups", deep),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post("/v1/streams/signups", deep_object),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post(
                "/v1/streams/signups",
                b"{\"email\":\"\xff\xfe@example.org\",\"zip\":\"37415\"}".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json_post("/v1/streams/signups", ten_mb.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            // No Content-Length: the limit holds while the body streams in.
            json_post(
                "/v1/streams/signups",
                Body::from_stream(futures_stream(ten_mb.clone())),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json_post("/v1/streams/signups/batch", ten_mb),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            post("/v1/streams/signups", None, GOOD),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post("/v1/streams/signups", Some("text/plain"), GOOD),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post(
                "/v1/streams/signups",
                Some("application/json; charset=latin1"),
                GOOD,
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post("/v1/streams/signups", Some("application/x-ndjson"), GOOD),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            json_post("/v1/streams/nope", GOOD),
            StatusCode::NOT_FOUND,
            "unknown_stream",
        ),
        (
            json_post("/v1/streams/..%2F..%2Fetc", GOOD),
            StatusCode::NOT_FOUND,
            "unknown_stream",
        ),
        (
            json_post("/v1/streams/%ff", GOOD),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (request, want_status, want_code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, _, body) = send(&app, request).await;
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
    }
    // Still serving, and nothing was queued.
    let (status, _, _) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(depth(&app).await, 1);
}

/// A body without Content-Length, sent in 64 KiB chunks.
fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let app = app_with(|s| s.max_depth = 2).await;
    for _ in 0..2 {
        let (status, _, _) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, headers, body) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(depth(&app).await, 2);
}

#[tokio::test]
async fn a_closed_queue_answers_503_never_202() {
    let app = app().await;
    app.queue.close().await;
    let (status, headers, body) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, _) = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn clients_over_their_rate_get_429() {
    let app = app_with(|s| {
        s.rate_limit = Some(RateLimit {
            per_second: 1,
            burst: Some(2),
        })
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = send(&app, json_post("/v1/streams/signups", GOOD)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "rate_limited");
            assert!(headers.contains_key(header::RETRY_AFTER));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(depth(&app).await, 2);
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let app = app_with(|s| s.cors_origins = vec!["https://example.org".into()]).await;
    let preflight = |origin: &str| {
        Request::options("/v1/streams/signups")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,idempotency-key",
            )
            .body(Body::empty())
            .unwrap()
    };
    let response = app
        .router
        .clone()
        .oneshot(preflight("https://example.org"))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let h = response.headers();
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://example.org"
    );
    assert!(
        h[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("idempotency-key")
    );

    let response = app
        .router
        .clone()
        .oneshot(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    let mut request = json_post("/v1/streams/signups", GOOD);
    request
        .headers_mut()
        .insert(header::ORIGIN, "https://example.org".parse().unwrap());
    let (status, headers, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://example.org"
    );

    // A stream without CORS origins allows none.
    let closed = app_with(|s| s.cors_origins.clear()).await;
    let response = closed
        .router
        .clone()
        .oneshot(preflight("https://example.org"))
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test]
async fn health_and_the_noop_route() {
    let app = app().await;
    let (status, _, body) = send(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _, body) = send(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let (status, _, _) = send(&app, json_post("/v1/noop", GOOD)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(depth(&app).await, 0);
}
