//! The admin API and CLI against a real node: auth on every route, pause/resume with a
//! message that survives a restart, and dead letters from a message the database rejects.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use support::{Levee, write_config_with};

const TOKEN: &str = "test-admin-token";

fn start(dir: &std::path::Path) -> Levee {
    Levee::start_with_env(dir, &[("LEVEE_ADMIN_TOKEN", TOKEN)])
}

async fn admin(
    levee: &Levee,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method, format!("{}{path}", levee.url))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_signup(levee: &Levee, payload: Value) -> String {
    let response = Client::new()
        .post(format!("{}/v1/streams/signups", levee.url))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn message_status(levee: &Levee, id: &str) -> String {
    let url = format!("{}/v1/streams/signups/messages/{id}", levee.url);
    let body: Value = Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["status"].as_str().unwrap_or("?").to_owned()
}

async fn wait_for_status(levee: &Levee, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = message_status(levee, id).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} stayed {status}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_route_works_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| t);
    let levee = start(dir.path());
    let routes = [
        (Method::GET, "/v1/admin/status"),
        (Method::POST, "/v1/admin/pause"),
        (Method::POST, "/v1/admin/resume"),
        (Method::POST, "/v1/admin/streams/signups/pause"),
        (Method::POST, "/v1/admin/streams/signups/resume"),
        (Method::GET, "/v1/admin/streams/signups/dead"),
        (Method::GET, "/v1/admin/streams/signups/dead/some-id"),
        (Method::POST, "/v1/admin/streams/signups/dead/redrive"),
        (Method::DELETE, "/v1/admin/streams/signups/dead"),
    ];
    for (method, path) in routes {
        for auth in [None, Some("Bearer wrong"), Some("Bearer "), Some(TOKEN)] {
            let mut request = Client::new().request(method.clone(), format!("{}{path}", levee.url));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // Nothing was paused by all those attempts.
    let (_, status) = admin(&levee, Method::GET, "/v1/admin/status", None).await;
    assert_eq!(status["streams"]["signups"]["paused"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_with_its_message_across_a_restart_and_resume_drains() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| t);
    let mut levee = start(dir.path());
    let (ok, out) = levee.cli(&["migrate"]);
    assert!(ok && out.contains("created table signups"), "{out}");
    let (ok, out) = levee.cli(&[
        "pause",
        "signups",
        "--message",
        "New sign-ups are delayed a few minutes",
    ]);
    assert!(ok, "{out}");
    let id = post_signup(&levee, json!({"email": "ada@example.org", "zip": "37415"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        message_status(&levee, &id).await,
        "queued",
        "paused: not written"
    );

    assert!(levee.terminate().success());
    let levee = start(dir.path());
    let (_, status) = admin(&levee, Method::GET, "/v1/admin/status", None).await;
    let signups = &status["streams"]["signups"];
    assert_eq!(signups["paused"], true, "{status}");
    assert_eq!(
        signups["pause_message"],
        "New sign-ups are delayed a few minutes"
    );
    assert_eq!(signups["depth"], 1);
    assert_eq!(signups["accepting"], true);
    let (ok, out) = levee.cli(&["status"]);
    assert!(
        ok && out.contains("paused") && out.contains("delayed a few minutes"),
        "{out}"
    );

    let (ok, out) = levee.cli(&["resume"]);
    assert!(ok, "{out}");
    wait_for_status(&levee, &id, "stored").await;
    let (_, status) = admin(&levee, Method::GET, "/v1/admin/status", None).await;
    assert_eq!(status["streams"]["signups"]["paused"], false);
    assert_eq!(status["streams"]["signups"]["sink"]["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_listed_redriven_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| {
        t.replace("max_attempts = 5 ", "max_attempts = 2 ")
            .replace("[streams.columns]", "retry_seconds = 0\n[streams.columns]")
    });
    // The operator's table refuses one ZIP code.
    let db = levee_sink::SqlSink::connect(
        &format!("sqlite://{}/levee-data/levee.db", dir.path().display()),
        &levee_sink::SinkOptions::default(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("levee-data")).unwrap();
    db.execute(
        "CREATE TABLE signups (id TEXT PRIMARY KEY, received_at TEXT NOT NULL, payload TEXT NOT NULL,
         email TEXT, name TEXT, zip TEXT CHECK (zip <> '00000'), message TEXT)",
    )
    .await
    .unwrap();
    let levee = start(dir.path());
    let bad = post_signup(&levee, json!({"email": "eve@example.org", "zip": "00000"})).await;
    let good = post_signup(&levee, json!({"email": "ada@example.org", "zip": "37415"})).await;
    wait_for_status(&levee, &good, "stored").await;
    wait_for_status(&levee, &bad, "dead").await;

    let (status, list) = admin(&levee, Method::GET, "/v1/admin/streams/signups/dead", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["dead"][0]["id"], bad.as_str());
    assert_eq!(list["dead"][0]["attempts"], 2);
    assert!(
        list["dead"][0]["error"].as_str().unwrap().contains("CHECK"),
        "{list}"
    );
    assert_eq!(list["dead"][0]["payload"]["zip"], "00000");
    let (ok, out) = levee.cli(&["dead", "show", "signups", &bad]);
    assert!(ok && out.contains("00000"), "{out}");

    // Fix the table, redrive: stored.
    for sql in [
        "ALTER TABLE signups RENAME TO signups_old",
        "CREATE TABLE signups (id TEXT PRIMARY KEY, received_at TEXT NOT NULL, payload TEXT NOT NULL, email TEXT, name TEXT, zip TEXT, message TEXT)",
        "INSERT INTO signups SELECT * FROM signups_old",
        "DROP TABLE signups_old",
    ] {
        db.execute(sql).await.unwrap();
    }
    let (ok, out) = levee.cli(&["dead", "redrive", "signups"]);
    assert!(ok && out.contains("redriven: 1"), "{out}");
    wait_for_status(&levee, &bad, "stored").await;

    // Purge: make another dead letter by refusing everything, then purge it by id.
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON signups BEGIN SELECT RAISE(ABORT, 'closed'); END",
    )
    .await
    .unwrap();
    let doomed = post_signup(&levee, json!({"email": "x@example.org", "zip": "10001"})).await;
    wait_for_status(&levee, &doomed, "dead").await;
    let (status, purged) = admin(
        &levee,
        Method::DELETE,
        "/v1/admin/streams/signups/dead",
        Some(json!({"ids": [doomed]})),
    )
    .await;
    assert_eq!(
        (status, purged["purged"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (_, status) = admin(&levee, Method::GET, "/v1/admin/status", None).await;
    assert_eq!(status["streams"]["signups"]["dead"], 0);
    let (status, _) = admin(&levee, Method::GET, "/v1/admin/streams/nope/dead", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
