//! Scheduled jobs in a real `levee serve`: the starter config's SQL jobs publish the sign-up
//! count and the latest signers on their schedule; `levee job run` runs one now; a failing
//! source keeps the last good file and shows in the status; bad job config is refused with
//! its key.

mod support;

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use support::{Levee, write_config_with};

const TOKEN: &str = "test-admin-token";

/// A published file, None while it is not there.
async fn published(levee: &Levee, path: &str) -> Option<Value> {
    let response = Client::new()
        .get(format!("{}/{path}", levee.url))
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert!(
        response.status().is_success(),
        "GET /{path}: {}",
        response.status()
    );
    Some(response.json().await.unwrap())
}

async fn wait_for(levee: &Levee, path: &str, test: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = published(levee, path).await;
        if let Some(value) = &last
            && test(value)
        {
            return value.clone();
        }
        assert!(
            Instant::now() < deadline,
            "/{path} never got there; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn job_status(levee: &Levee, name: &str) -> Value {
    let status: Value = Client::new()
        .get(format!("{}/v1/admin/status", levee.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["jobs"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no job {name} in {status}"))
}

#[tokio::test]
async fn jobs_publish_on_schedule_and_on_demand_and_keep_the_last_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = dir.path().join("vendor.json");
    std::fs::write(&vendor, r#"{"places": [{"id": 1, "name": "Library"}]}"#).unwrap();
    write_config_with(dir.path(), |toml| {
        toml + r#"
[[jobs]]
name = "places"
schedule = "0 0 1 1 *"               # yearly: only run by hand in this test
source = { file = "vendor.json" }
transform = ".places"
min_items = 1
path = "data/places.json"
"#
    });
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["migrate", "--config"])
        .arg(dir.path().join("levee.toml"))
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let levee = Levee::start_with_env(dir.path(), &[("LEVEE_ADMIN_TOKEN", TOKEN)]);
    let client = Client::new();
    for (email, name) in [("ann@example.org", "Ann"), ("bob@example.org", "Bob")] {
        let response = client
            .post(format!("{}/v1/streams/signups", levee.url))
            .json(&json!({"email": email, "name": name, "zip": "37415", "message": "count me in"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    // The starter config's jobs run every 5 s and pick the rows up once the workers wrote them.
    wait_for(&levee, "signups/count.json", |v| *v == json!({"count": 2})).await;
    let signers = wait_for(&levee, "signups/latest.json", |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let names: Vec<&str> = signers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"Ann") && names.contains(&"Bob"));
    assert!(
        !signers.to_string().contains("@example.org"),
        "no emails are published"
    );
    let count = job_status(&levee, "signup-count").await;
    assert_eq!(count["runs"][0]["trigger"], "schedule");
    assert!(count["next_run"].is_string());

    // By hand, with the CLI.
    let (ok, out) = levee.cli(&["job", "run", "places"]);
    assert!(ok, "{out}");
    assert!(out.contains("job places: ok, 1 items, published"), "{out}");
    assert_eq!(
        published(&levee, "data/places.json").await.unwrap(),
        json!([{"id": 1, "name": "Library"}])
    );

    // The vendor breaks: the run fails, says why, and the file stays.
    std::fs::write(&vendor, "<html>502 Bad Gateway</html>").unwrap();
    let (ok, out) = levee.cli(&["job", "run", "places"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("not JSON") && out.contains("last good file stays"),
        "{out}"
    );
    std::fs::write(&vendor, r#"{"places": []}"#).unwrap();
    let (ok, out) = levee.cli(&["job", "run", "places"]);
    assert!(!ok && out.contains("min_items"), "{out}");
    assert_eq!(
        published(&levee, "data/places.json").await.unwrap(),
        json!([{"id": 1, "name": "Library"}])
    );
    let places = job_status(&levee, "places").await;
    assert_eq!(places["runs"][0]["ok"], false);
    assert!(
        places["runs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("min_items")
    );
    assert_eq!(places["runs"][2]["ok"], true);
    assert!(places["last_success"].is_string());

    let (ok, out) = levee.cli(&["job", "run", "nope"]);
    assert!(!ok && out.contains("no job named \"nope\""), "{out}");
    let (ok, out) = levee.cli(&["status"]);
    assert!(
        ok && out.contains("places") && out.contains("failed: "),
        "{out}"
    );
}

/// `levee config check` on the starter config plus `jobs`; returns (success, stderr).
fn check_with_jobs(jobs: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |toml| toml + jobs);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["config", "check", "--config"])
        .arg(dir.path().join("levee.toml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_names_a_bad_job() {
    let (ok, text) = check_with_jobs(
        r#"
[[jobs]]
name = "broken"
schedule = "every minute"
source = { file = "x.json" }
path = "x.json"
"#,
    );
    assert!(!ok && text.contains("jobs[2].schedule"), "{text}");

    let (ok, text) = check_with_jobs(
        r#"
[[jobs]]
name = "filter"
schedule = "* * * * *"
source = { file = "x.json" }
transform = ".a | map("
path = "y.json"
"#,
    );
    assert!(!ok && text.contains("jobs[2].transform"), "{text}");
}
