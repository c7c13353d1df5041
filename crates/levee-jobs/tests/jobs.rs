//! Jobs against real parts: a vendor (an HTTP server in the test) that works, fails, sends
//! garbage or nothing, or hangs; SQL sources on SQLite, PostgreSQL and MariaDB; the cron
//! schedule on paused time; and one scheduler among two nodes on each database's lock.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use levee_config::JobConfig;
use levee_jobs::{Job, Jobs, Lock};
use levee_publish::{Clock, Publisher};
use levee_sink::testing::{database_url, unique_table};
use levee_sink::{SinkOptions, SqlSink};
use levee_store::{CacheRules, Store, StoreSettings};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Fixture {
    dir: tempfile::TempDir,
    publisher: Publisher,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSettings {
            url: format!("file://{}", dir.path().join("public").display()),
            ..Default::default()
        })
        .unwrap();
        Fixture {
            publisher: Publisher::new(store, CacheRules::default()),
            dir,
        }
    }

    fn jobs(&self, configs: &[Value], database_url: &str, lock: Lock, clock: Clock) -> Arc<Jobs> {
        let configs: Vec<JobConfig> = configs
            .iter()
            .map(|c| serde_json::from_value(c.clone()).unwrap())
            .collect();
        let jobs: Vec<Job> = Jobs::compile(&configs).unwrap();
        Arc::new(Jobs::new(
            jobs,
            database_url.to_owned(),
            self.publisher.clone(),
            lock,
            clock,
        ))
    }

    fn file_lock(&self) -> Lock {
        Lock::File(self.dir.path().join("scheduler.lock"))
    }

    /// A published file as JSON, None if absent.
    async fn published(&self, path: &str) -> Option<Value> {
        let stored = self.publisher.store().get(path).await.unwrap()?;
        Some(serde_json::from_slice(&stored.body).unwrap())
    }
}

/// What the test vendor answers next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Vendor {
    Good(usize),
    ServerError,
    Garbage,
    Empty,
    Hang,
}

/// A vendor on a local port whose next answer the test sets.
async fn vendor() -> (String, Arc<std::sync::Mutex<Vendor>>) {
    let mode = Arc::new(std::sync::Mutex::new(Vendor::Good(2)));
    let state = mode.clone();
    let app = Router::new().route(
        "/places.json",
        get(move || {
            let mode = *state.lock().unwrap();
            async move {
                match mode {
                    Vendor::Good(n) => {
                        let places: Vec<Value> = (0..n)
                            .map(|i| json!({"id": i, "name": format!("Place {i}"), "zip": "37415", "secret": "x"}))
                            .collect();
                        axum::Json(json!({ "places": places })).into_response()
                    }
                    Vendor::ServerError => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    Vendor::Garbage => (
                        [(header::CONTENT_TYPE, "application/json")],
                        "<html>Bad gateway</html>",
                    )
                        .into_response(),
                    Vendor::Empty => StatusCode::OK.into_response(),
                    Vendor::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        StatusCode::OK.into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/places.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, mode)
}

fn places_job(url: &str) -> Value {
    json!({
        "name": "places",
        "schedule": "0 */5 * * * *",
        "source": { "http": url, "timeout_seconds": 1 },
        "transform": ".places | map({id, name, zip})",
        "schema": {
            "type": "array",
            "items": { "type": "object", "required": ["id", "name", "zip"] }
        },
        "min_items": 1,
        "path": "data/places.json"
    })
}

#[tokio::test]
async fn a_job_fetches_transforms_validates_and_publishes() {
    let fixture = Fixture::new();
    let (url, _) = vendor().await;
    let jobs = fixture.jobs(
        &[places_job(&url)],
        "sqlite::memory:",
        fixture.file_lock(),
        Clock::system(),
    );

    let run = jobs.run_now("places").await.unwrap();
    assert!(run.ok, "{run:?}");
    assert!(run.changed);
    assert_eq!(run.items, Some(2));
    assert_eq!(
        fixture.published("data/places.json").await.unwrap(),
        json!([
            {"id": 0, "name": "Place 0", "zip": "37415"},
            {"id": 1, "name": "Place 1", "zip": "37415"}
        ])
    );
    let stored = fixture
        .publisher
        .store()
        .get("data/places.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.headers.unwrap().content_type,
        "application/json; charset=utf-8"
    );

    // The same data again: a successful run that rewrites nothing.
    let again = jobs.run_now("places").await.unwrap();
    assert!(again.ok && !again.changed, "{again:?}");
    let status = jobs.status();
    assert_eq!(status.jobs[0].runs.len(), 2);
    assert!(status.jobs[0].last_success.is_some());
    assert!(matches!(
        jobs.run_now("nope").await,
        Err(levee_jobs::RunError::UnknownJob(_))
    ));
}

#[tokio::test]
async fn a_failing_vendor_keeps_the_last_good_file() {
    let fixture = Fixture::new();
    let (url, mode) = vendor().await;
    let jobs = fixture.jobs(
        &[places_job(&url)],
        "sqlite::memory:",
        fixture.file_lock(),
        Clock::system(),
    );
    assert!(jobs.run_now("places").await.unwrap().ok);
    let good = fixture.published("data/places.json").await.unwrap();

    let cases = [
        (Vendor::ServerError, "HTTP 500"),
        (Vendor::Garbage, "not JSON"),
        (Vendor::Empty, "returned nothing"),
        (Vendor::Hang, "timed out"),
        // Valid JSON the checks refuse: no items (min_items), then one missing a field.
        (Vendor::Good(0), "min_items"),
    ];
    for (answer, expected) in cases {
        *mode.lock().unwrap() = answer;
        let run = jobs.run_now("places").await.unwrap();
        assert!(!run.ok, "{answer:?}: {run:?}");
        let error = run.error.unwrap();
        assert!(error.contains(expected), "{answer:?}: {error}");
        assert_eq!(
            fixture.published("data/places.json").await.unwrap(),
            good,
            "{answer:?} replaced the last good file"
        );
    }
    let status = jobs.status();
    let runs = &status.jobs[0].runs;
    assert_eq!(runs.len(), 6);
    assert!(
        runs[..5].iter().all(|r| !r.ok),
        "failures are recorded, newest first"
    );
    assert!(runs[5].ok);

    // And the vendor recovers.
    *mode.lock().unwrap() = Vendor::Good(3);
    let run = jobs.run_now("places").await.unwrap();
    assert!(run.ok && run.changed);
    assert_eq!(
        fixture
            .published("data/places.json")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn the_schema_rejects_data_that_does_not_fit() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path();
    std::fs::write(dir.join("in.json"), r#"{"count": 3}"#).unwrap();
    let job = json!({
        "name": "count",
        "schedule": "* * * * *",
        "source": { "file": dir.join("in.json") },
        "schema": { "type": "object", "required": ["count"], "properties": { "count": { "type": "integer", "minimum": 0 } } },
        "path": "count.json"
    });
    let jobs = fixture.jobs(
        &[job],
        "sqlite::memory:",
        fixture.file_lock(),
        Clock::system(),
    );
    assert!(jobs.run_now("count").await.unwrap().ok);
    std::fs::write(dir.join("in.json"), r#"{"count": "three"}"#).unwrap();
    let run = jobs.run_now("count").await.unwrap();
    assert!(!run.ok);
    assert!(run.error.unwrap().contains("schema"));
    assert_eq!(
        fixture.published("count.json").await.unwrap(),
        json!({"count": 3})
    );
}

#[test]
fn bad_job_configs_name_their_key() {
    let configs: Vec<JobConfig> = [
        json!({"name": "a", "schedule": "* * * * *", "source": {"file": "x.json"}, "transform": ".a | map(", "path": "a.json"}),
        json!({"name": "b", "schedule": "* * * * *", "source": {"file": "x.json"}, "transform": "nosuch(1)", "path": "b.json"}),
    ]
    .into_iter()
    .map(|c| serde_json::from_value(c).unwrap())
    .collect();
    let errors = Jobs::compile(&configs).err().unwrap();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["jobs[0].transform", "jobs[1].transform"]);
    assert!(
        errors[1].message.contains("nosuch"),
        "{}",
        errors[1].message
    );
}

/// A table with three rows in the database at `url`.
async fn signups_table(url: &str) -> String {
    let sink = SqlSink::connect(url, &SinkOptions::default()).unwrap();
    let table = unique_table();
    sink.execute(&format!(
        "CREATE TABLE {table} (name VARCHAR(100), zip VARCHAR(5), score INTEGER, ratio REAL)"
    ))
    .await
    .unwrap();
    sink.execute(&format!(
        "INSERT INTO {table} VALUES ('Ann', '37415', 1, 0.5), ('Bob', '10001', 2, 1.5), (NULL, '99501', 3, NULL)"
    ))
    .await
    .unwrap();
    table
}

#[tokio::test]
async fn sql_sources_on_every_database() {
    for dialect in ["sqlite", "postgres", "mysql"] {
        let Some(url) = database_url(dialect) else {
            continue;
        };
        let fixture = Fixture::new();
        let table = signups_table(&url).await;
        let jobs = fixture.jobs(
            &[
                json!({
                    "name": "count",
                    "schedule": "* * * * * *",
                    "source": { "sql": format!("SELECT COUNT(*) AS count FROM {table}") },
                    "transform": ".[0]",
                    "path": "count.json"
                }),
                json!({
                    "name": "rows",
                    "schedule": "* * * * * *",
                    "source": { "sql": format!("SELECT name, zip, score, ratio FROM {table} ORDER BY score") },
                    "min_items": 1,
                    "path": "rows.json"
                }),
            ],
            &url,
            fixture.file_lock(),
            Clock::system(),
        );
        for name in ["count", "rows"] {
            let run = jobs.run_now(name).await.unwrap();
            assert!(run.ok, "{dialect} {name}: {run:?}");
        }
        assert_eq!(
            fixture.published("count.json").await.unwrap(),
            json!({"count": 3}),
            "{dialect}"
        );
        assert_eq!(
            fixture.published("rows.json").await.unwrap(),
            json!([
                {"name": "Ann", "zip": "37415", "score": 1, "ratio": 0.5},
                {"name": "Bob", "zip": "10001", "score": 2, "ratio": 1.5},
                {"name": null, "zip": "99501", "score": 3, "ratio": null}
            ]),
            "{dialect}"
        );
    }
}

/// A job whose source file counts its runs: each run publishes the run number.
fn counting_job(fixture: &Fixture, schedule: &str) -> Value {
    let source = fixture.dir.path().join("tick.json");
    std::fs::write(&source, "0").unwrap();
    json!({
        "name": "tick",
        "schedule": schedule,
        "source": { "file": source },
        "path": "tick.json"
    })
}

#[tokio::test(start_paused = true)]
async fn runs_on_its_cron_schedule_in_paused_time() {
    let fixture = Fixture::new();
    // 2026-12-04T12:00:00.500Z: slots at :10, :20, :30 … of every minute.
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-04T12:00:00.500Z")
        .unwrap()
        .timestamp_millis();
    let jobs = fixture.jobs(
        &[counting_job(&fixture, "*/10 * * * * *")],
        "sqlite::memory:",
        fixture.file_lock(),
        Clock::starting_at(start),
    );
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(jobs.clone().run(shutdown.clone()));

    tokio::time::sleep(Duration::from_secs(9)).await;
    let status = jobs.status();
    assert!(status.scheduler);
    assert!(
        status.jobs[0].runs.is_empty(),
        "nothing before the first slot"
    );
    assert_eq!(
        status.jobs[0].next_run.as_deref(),
        Some("2026-12-04T12:00:10Z")
    );

    tokio::time::sleep(Duration::from_secs(26)).await; // now 12:00:35.5
    let runs = jobs.status().jobs[0].runs.clone();
    let times: Vec<&str> = runs.iter().rev().map(|r| r.started_at.as_str()).collect();
    assert_eq!(
        times,
        [
            "2026-12-04T12:00:10Z",
            "2026-12-04T12:00:20Z",
            "2026-12-04T12:00:30Z"
        ]
    );
    assert!(runs.iter().all(|r| r.ok && r.trigger == "schedule"));
    assert_eq!(
        jobs.status().jobs[0].next_run.as_deref(),
        Some("2026-12-04T12:00:40Z")
    );

    shutdown.cancel();
    scheduler.await.unwrap();
    assert!(!jobs.status().scheduler);
}

/// Two nodes on one database: only the lock holder runs the schedule; when it stops, the
/// other takes over. Every slot runs on exactly one node.
async fn one_scheduler_among_two_nodes(lock: Lock, url: &str) {
    let fixture = Fixture::new();
    let job = counting_job(&fixture, "* * * * * *");
    let a = fixture.jobs(
        std::slice::from_ref(&job),
        url,
        lock.clone(),
        Clock::system(),
    );
    let b = fixture.jobs(&[job], url, lock, Clock::system());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let run_a = tokio::spawn(a.clone().run(stop_a.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run_b = tokio::spawn(b.clone().run(stop_b.clone()));

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(a.status().scheduler, "the first node took the lock");
    assert!(!b.status().scheduler, "the second stands by");
    assert!(a.status().jobs[0].runs.len() >= 2);
    assert!(
        b.status().jobs[0].runs.is_empty(),
        "the standby ran nothing"
    );

    // The first node stops (its lock goes with it); the second takes over.
    stop_a.cancel();
    run_a.await.unwrap();
    let taken_over = async {
        while b.status().jobs[0].runs.len() < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), taken_over)
        .await
        .expect("the standby took over within 30 s");
    assert!(b.status().scheduler);

    let slots = |jobs: &Jobs| -> Vec<String> {
        jobs.status().jobs[0]
            .runs
            .iter()
            .map(|r| r.started_at.clone())
            .collect()
    };
    let (slots_a, slots_b) = (slots(&a), slots(&b));
    assert!(
        slots_a.iter().all(|s| !slots_b.contains(s)),
        "a slot ran on both nodes: {slots_a:?} {slots_b:?}"
    );
    stop_b.cancel();
    run_b.await.unwrap();
}

#[tokio::test]
async fn one_scheduler_on_sqlite_through_a_file_lock() {
    let dir = tempfile::tempdir().unwrap();
    one_scheduler_among_two_nodes(
        Lock::File(dir.path().join("scheduler.lock")),
        "sqlite::memory:",
    )
    .await;
}

#[tokio::test]
async fn one_scheduler_on_postgres_through_an_advisory_lock() {
    let Some(url) = database_url("postgres") else {
        return;
    };
    one_scheduler_among_two_nodes(Lock::for_database(&url, "unused".into()), &url).await;
}

#[tokio::test]
async fn one_scheduler_on_mysql_through_get_lock() {
    let Some(url) = database_url("mysql") else {
        return;
    };
    one_scheduler_among_two_nodes(Lock::for_database(&url, "unused".into()), &url).await;
}

#[tokio::test]
async fn a_null_result_is_a_failure_even_without_checks() {
    let fixture = Fixture::new();
    let dir = fixture.dir.path();
    std::fs::write(dir.join("in.json"), r#"{"places": [1]}"#).unwrap();
    let job = json!({
        "name": "places",
        "schedule": "* * * * *",
        "source": { "file": dir.join("in.json") },
        "transform": ".places",
        "path": "places.json"
    });
    let jobs = fixture.jobs(
        &[job],
        "sqlite::memory:",
        fixture.file_lock(),
        Clock::system(),
    );
    assert!(jobs.run_now("places").await.unwrap().ok);
    // The vendor's error body has no "places": the filter gives null.
    std::fs::write(dir.join("in.json"), r#"{"error": "maintenance"}"#).unwrap();
    let run = jobs.run_now("places").await.unwrap();
    assert_eq!(run.error.as_deref(), Some("the result is null"));
    assert_eq!(fixture.published("places.json").await.unwrap(), json!([1]));
}
