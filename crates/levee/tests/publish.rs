//! Static reads against real processes: status.json on pause, resume and lag; `levee
//! deploy` to the local store and to S3 (moto in CI), killed mid-publish; `levee shard`
//! on the real ZIP code data.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use support::{Levee, write_config_with};

const TOKEN: &str = "test-admin-token";

fn levee() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_levee"));
    // S3 credentials for moto, which checks none but wants them present.
    command
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    command
}

/// Run the CLI; returns (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = levee().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn status_json(levee: &Levee) -> Value {
    let response = Client::new()
        .get(format!("{}/status.json", levee.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Poll status.json until `check` holds for the signups stream (at most 10 s).
async fn wait_for_status(levee: &Levee, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = status_json(levee).await;
        if check(&status["streams"]["signups"]) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status.json never showed {what}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin_post(levee: &Levee, path: &str, body: Value) {
    let response = Client::new()
        .post(format!("{}{path}", levee.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
}

#[tokio::test]
async fn status_json_shows_pause_with_its_message_and_clears_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| t);
    let levee = Levee::start_with_env(dir.path(), &[("LEVEE_ADMIN_TOKEN", TOKEN)]);
    let status = wait_for_status(&levee, "not delayed", |s| s["delayed"] == false).await;
    assert_eq!(status["streams"]["signups"]["accepting"], true);

    let message = "New sign-ups are delayed a few minutes";
    admin_post(
        &levee,
        "/v1/admin/streams/signups/pause",
        json!({ "message": message }),
    )
    .await;
    let status = wait_for_status(&levee, "the pause", |s| s["paused"] == true).await;
    let signups = &status["streams"]["signups"];
    assert_eq!(signups["delayed"], true);
    assert_eq!(signups["message"], message);

    admin_post(&levee, "/v1/admin/streams/signups/resume", json!({})).await;
    let status = wait_for_status(&levee, "the resume", |s| s["paused"] == false).await;
    assert_eq!(status["streams"]["signups"]["delayed"], false);
    assert_eq!(status["streams"]["signups"]["message"], Value::Null);
}

#[tokio::test]
async fn status_json_says_delayed_once_the_lag_crosses_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| {
        t.replace(
            "max_attempts = 5",
            "max_attempts = 5\ndelayed_after_seconds = 1",
        )
    });
    // No workers: what is posted waits.
    let levee = Levee::start_with_env(
        dir.path(),
        &[
            ("LEVEE_ADMIN_TOKEN", TOKEN),
            ("LEVEE_ROLES", "intake,admin,static"),
        ],
    );
    wait_for_status(&levee, "not delayed", |s| s["delayed"] == false).await;
    let response = Client::new()
        .post(format!("{}/v1/streams/signups", levee.url))
        .json(&json!({"email": "a@example.org", "name": "A", "zip": "37415"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let status = wait_for_status(&levee, "the lag", |s| s["delayed"] == true).await;
    let signups = &status["streams"]["signups"];
    assert_eq!(signups["paused"], false);
    assert!(signups["lag_seconds"].as_u64().unwrap() >= 1, "{status}");
}

/// A site whose `index.html` names `n` assets of this version.
fn write_site(dir: &Path, version: u32, n: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    let mut index = String::from("<!doctype html>\n");
    for i in 0..n {
        let name = format!("assets/v{version}-{i}.js");
        std::fs::write(dir.join(&name), format!("// {name}\n{}", "x".repeat(4000))).unwrap();
        index.push_str(&format!("<script src=\"/{name}\"></script>\n"));
    }
    std::fs::write(dir.join("index.html"), index).unwrap();
}

/// Every asset `index.html` names, fetched through `get`: all must be there.
async fn check_consistent<F, Fut>(get: F) -> u32
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let index = get("index.html".into())
        .await
        .expect("index.html is always there");
    let names: Vec<&str> = index
        .lines()
        .filter_map(|l| {
            l.strip_prefix("<script src=\"/")?
                .strip_suffix("\"></script>")
        })
        .collect();
    assert!(!names.is_empty());
    let version: u32 = names[0][8..].split('-').next().unwrap().parse().unwrap();
    for name in names {
        let body = get(name.to_owned()).await;
        assert!(
            body.is_some_and(|b| b.starts_with(&format!("// {name}"))),
            "index.html names {name}, which is missing: a mixed set"
        );
    }
    version
}

/// Deploy version after version, killing `levee deploy` at a random moment each time:
/// the pointer (index.html) must always name a complete set.
async fn deploy_killed_midway<F, Fut>(to: &str, endpoint: Option<&str>, get: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("site");
    let mut args = vec![
        "deploy".to_owned(),
        site.display().to_string(),
        "--to".into(),
        to.into(),
        "--delete".into(),
        "--max-deletes".into(),
        "1000".into(),
    ];
    if let Some(endpoint) = endpoint {
        args.extend(["--endpoint".into(), endpoint.into()]);
    }
    write_site(&site, 1, 120);
    let started = Instant::now();
    let out = levee().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = started.elapsed();
    assert_eq!(check_consistent(&get).await, 1);

    let mut rng = rand::rng();
    let mut last_seen = 1;
    for version in 2..=5 {
        write_site(&site, version, 120);
        let mut child = levee()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let at = full.mul_f64(rng.random_range(0.1..1.2));
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        let seen = check_consistent(&get).await;
        // The old set or the new one; never older than what readers saw before.
        assert!(
            (last_seen..=version).contains(&seen),
            "version {seen} after {last_seen}, deploying {version}"
        );
        last_seen = seen;
    }
    // A final, complete deploy repairs whatever a kill left half done.
    let out = levee().args(&args).output().unwrap();
    assert!(out.status.success());
    assert_eq!(check_consistent(&get).await, 5);
}

#[tokio::test]
async fn deploy_killed_midway_leaves_readers_a_whole_set_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |t| t);
    let levee = Levee::start_with_env(dir.path(), &[("LEVEE_ROLES", "static")]);
    let to = format!("file://{}", dir.path().join("levee-data/public").display());
    let url = levee.url.clone();
    deploy_killed_midway(&to, None, |path| {
        let url = format!("{url}/{path}");
        async move {
            let response = Client::new().get(url).send().await.unwrap();
            if response.status() == StatusCode::OK {
                Some(response.text().await.unwrap())
            } else {
                None
            }
        }
    })
    .await;
}

#[tokio::test]
async fn deploy_killed_midway_leaves_readers_a_whole_set_on_s3() {
    let Some(settings) = levee_store::testing::s3_settings().await else {
        return;
    };
    let endpoint = settings.endpoint.clone().unwrap();
    let store = levee_store::Store::open(&settings).unwrap();
    deploy_killed_midway(&settings.url, Some(&endpoint), |path| {
        let store = store.clone();
        async move {
            let stored = store.get(&path).await.unwrap()?;
            Some(String::from_utf8(stored.body.to_vec()).unwrap())
        }
    })
    .await;
}

#[tokio::test]
async fn deploy_uploads_changes_only_guards_deletes_and_dry_runs() {
    let mut targets: Vec<(String, Option<String>)> = vec![];
    let local = tempfile::tempdir().unwrap();
    targets.push((
        format!("file://{}", local.path().join("out").display()),
        None,
    ));
    if let Some(settings) = levee_store::testing::s3_settings().await {
        targets.push((settings.url.clone(), settings.endpoint.clone()));
    }
    for (to, endpoint) in targets {
        let site = tempfile::tempdir().unwrap();
        let s = site.path();
        std::fs::create_dir_all(s.join("fonts")).unwrap();
        std::fs::write(s.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(s.join("app.mjs"), "export {}").unwrap();
        std::fs::write(s.join("fonts/a.woff2"), [0u8, 1, 2]).unwrap();
        std::fs::write(s.join("old.css"), "a{}").unwrap();
        std::fs::write(s.join(".DS_Store"), "junk").unwrap();
        let site_arg = s.display().to_string();
        let mut base = vec!["deploy", &site_arg, "--to", &to];
        if let Some(endpoint) = &endpoint {
            base.extend(["--endpoint", endpoint.as_str()]);
        }
        let with = |extra: &[&str]| {
            let mut args = base.clone();
            args.extend_from_slice(extra);
            run(&args)
        };
        let (ok, out) = with(&[
            "--cache-control",
            "fonts/**=public, max-age=31536000, immutable",
        ]);
        assert!(ok, "{out}");
        assert!(out.contains("uploaded 4 "), "{to}: {out}");

        let (ok, out) = with(&[
            "--cache-control",
            "fonts/**=public, max-age=31536000, immutable",
        ]);
        assert!(ok, "{out}");
        assert!(
            out.contains("uploaded 0 ") && out.contains("4 unchanged"),
            "{to}: {out}"
        );
        assert!(
            out.contains("1 list, 1 get, 0 put, 0 delete"),
            "{to}: {out}"
        );

        std::fs::remove_file(s.join("old.css")).unwrap();
        std::fs::write(s.join("index.html"), "<h1>hi again</h1>").unwrap();
        let (ok, out) = with(&[
            "--cache-control",
            "fonts/**=public, max-age=31536000, immutable",
            "--delete",
            "--dry-run",
        ]);
        assert!(ok, "{out}");
        assert!(
            out.contains("upload index.html") && out.contains("delete old.css"),
            "{out}"
        );
        let (ok, out) = with(&[
            "--cache-control",
            "fonts/**=public, max-age=31536000, immutable",
            "--delete",
            "--max-deletes",
            "0",
        ]);
        assert!(!ok && out.contains("would delete 1 files"), "{out}");
        let (ok, out) = with(&[
            "--cache-control",
            "fonts/**=public, max-age=31536000, immutable",
            "--delete",
        ]);
        assert!(ok, "{out}");
        assert!(
            out.contains("uploaded 1 ") && out.contains("deleted 1 "),
            "{to}: {out}"
        );

        let store = levee_store::Store::open(&levee_store::StoreSettings {
            url: to.clone(),
            endpoint: endpoint.clone(),
            region: None,
            access_key: Some(("test".into(), "test".into())),
        })
        .unwrap();
        let paths: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(paths, ["app.mjs", "fonts/a.woff2", "index.html"], "{to}");
        let font = store
            .get("fonts/a.woff2")
            .await
            .unwrap()
            .unwrap()
            .headers
            .unwrap();
        assert_eq!(font.content_type, "font/woff2");
        assert_eq!(font.cache_control, levee_store::IMMUTABLE);
        let js = store
            .get("app.mjs")
            .await
            .unwrap()
            .unwrap()
            .headers
            .unwrap();
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        assert_eq!(js.cache_control, levee_store::CHANGING);
    }
}

fn zip_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/us-zipcodes.csv")
}

#[tokio::test]
async fn shard_writes_one_file_per_zip_code_and_rewrites_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let to = format!("file://{}", dir.path().join("public").display());
    let csv = zip_data().display().to_string();
    let args = [
        "shard",
        &csv,
        "--key",
        "zip",
        "--out",
        "zip/{key}.json",
        "--fields",
        "zip,city,state,county,lat,lng",
        "--to",
        &to,
    ];
    let (ok, out) = run(&args);
    assert!(ok, "{out}");
    assert!(out.contains("41749 rows → 41749 files"), "{out}");
    assert!(out.contains("uploaded 41749 "), "{out}");
    let read = |zip: &str| -> Value {
        let text =
            std::fs::read_to_string(dir.path().join(format!("public/zip/{zip}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(
        read("37415"),
        json!({"zip": "37415", "city": "Chattanooga", "state": "TN", "county": "Hamilton County", "lat": 35.1273, "lng": -85.2802})
    );
    assert_eq!(read("10001")["city"], "New York");
    assert_eq!(read("10001")["state"], "NY");
    assert_eq!(read("99501")["city"], "Anchorage");
    assert_eq!(read("99501")["state"], "AK");
    assert_eq!(read("00501")["zip"], "00501", "leading zeros kept");

    let (ok, out) = run(&args);
    assert!(
        ok && out.contains("uploaded 0 ") && out.contains("41749 unchanged"),
        "{out}"
    );

    let changed = dir.path().join("changed.csv");
    let text = std::fs::read_to_string(zip_data()).unwrap();
    std::fs::write(
        &changed,
        text.replace("37415,STANDARD,Chattanooga", "37415,STANDARD,Red Bank"),
    )
    .unwrap();
    let changed = changed.display().to_string();
    let mut args = args;
    args[1] = &changed;
    let (ok, out) = run(&args);
    assert!(ok && out.contains("uploaded 1 "), "{out}");
    assert_eq!(read("37415")["city"], "Red Bank");
}

#[tokio::test]
async fn deploy_purges_exactly_the_changed_paths_and_can_compress() {
    use std::sync::{Arc, Mutex};
    let purged: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = purged.clone();
    let cdn = axum::Router::new().route(
        "/purge/{*path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>| {
                let record = record.clone();
                async move { record.lock().unwrap().push(path) }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let template = format!("http://{}/purge/{{path}}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, cdn).await });

    let site = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>one</h1>").unwrap();
    std::fs::write(site.path().join("app.js"), "x".repeat(2000)).unwrap();
    let args: Vec<String> = [
        "deploy",
        &site.path().display().to_string(),
        "--to",
        &format!("file://{}", out.path().display()),
        "--purge-url",
        &template,
        "--compress",
        "gzip",
    ]
    .map(str::to_owned)
    .to_vec();
    // The CLI blocks; the CDN above needs this runtime free to answer it.
    let deploy = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
        .await
        .unwrap()
    };
    let (ok, out_text) = deploy(args.clone()).await;
    assert!(ok, "{out_text}");
    let mut paths = std::mem::take(&mut *purged.lock().unwrap());
    paths.sort();
    assert_eq!(paths, ["app.js", "index.html"]);

    std::fs::write(site.path().join("index.html"), "<h1>two</h1>").unwrap();
    let (ok, out_text) = deploy(args).await;
    assert!(ok, "{out_text}");
    assert_eq!(*purged.lock().unwrap(), ["index.html"], "only what changed");

    let store = levee_store::Store::open(&levee_store::StoreSettings {
        url: format!("file://{}", out.path().display()),
        ..Default::default()
    })
    .unwrap();
    let js = store.get("app.js").await.unwrap().unwrap();
    assert_eq!(
        js.headers.unwrap().content_encoding.as_deref(),
        Some("gzip")
    );
    assert!(js.body.len() < 2000, "stored compressed");
}
