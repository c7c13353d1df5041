//! The CMS behind its login, against a real node: nothing without a session, CSRF checked
//! on every form and on the content API with a cookie, roles enforced, logins rate-limited,
//! and a post saved through the API lands in the published files.

mod support;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode, redirect};
use serde_json::{Value, json};
use support::{Levee, write_config};

const TOKEN: &str = "test-admin-token";
const PASSWORD: &str = "correct horse battery";

fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn start(dir: &std::path::Path) -> Levee {
    write_config(dir);
    Levee::start_with_env(
        dir,
        &[
            ("LEVEE_ADMIN_TOKEN", TOKEN),
            ("LEVEE_ADMIN_PASSWORD", PASSWORD),
        ],
    )
}

/// Log in; returns the session cookie and the page's CSRF token.
async fn login(levee: &Levee, name: &str, password: &str) -> (String, String) {
    let response = client()
        .post(format!("{}/admin/login", levee.url))
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "login as {name}");
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = client()
        .get(format!("{}/admin", levee.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page has a CSRF token")
        .to_owned();
    (cookie, csrf)
}

#[tokio::test]
async fn nothing_without_a_session_and_no_form_without_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let levee = start(dir.path());
    let http = client();
    for path in ["/admin", "/admin/alerts", "/admin/users", "/admin/blogs/x"] {
        let response = http
            .get(format!("{}{path}", levee.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[LOCATION], "/admin/login");
    }
    let response = http
        .post(format!("{}/admin/blogs", levee.url))
        .form(&[("csrf", "x"), ("slug", "sneaky"), ("title", "No")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "a form post without a session goes to login"
    );
    let response = http
        .post(format!("{}/v1/admin/blogs", levee.url))
        .json(&json!({"slug": "sneaky", "title": "No"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (cookie, csrf) = login(&levee, "admin", PASSWORD).await;
    let response = http
        .post(format!("{}/admin/blogs", levee.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "forged"), ("slug", "forged"), ("title", "No")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a forged CSRF token"
    );
    let response = http
        .post(format!("{}/v1/admin/blogs", levee.url))
        .header(COOKIE, &cookie)
        .json(&json!({"slug": "forged", "title": "No"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the API with a cookie needs X-CSRF-Token"
    );

    let response = http
        .post(format!("{}/admin/blogs", levee.url))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("slug", "results"),
            ("title", "Results"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/admin/blogs/results");
    let response = http
        .post(format!("{}/v1/admin/blogs/results/posts", levee.url))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"title": "First returns", "body_markdown": "Counting has begun."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["publish"], "done");
    let latest: Value = http
        .get(format!("{}/blogs/results/latest.json", levee.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["posts"][0]["title"], "First returns");
    assert_eq!(latest["posts"][0]["author"], "admin");

    // Logging out ends the session.
    let response = http
        .post(format!("{}/admin/logout", levee.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = http
        .get(format!("{}/admin", levee.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn editors_edit_content_and_only_admins_manage_users_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let levee = start(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["user", "add", "eddie", "--role", "editor", "--config"])
        .arg(dir.path().join("levee.toml"))
        .env("LEVEE_USER_PASSWORD", "editor password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cookie, csrf) = login(&levee, "eddie", "editor password").await;
    let http = client();
    for path in ["/admin/users", "/admin/streams", "/admin/audit"] {
        let response = http
            .get(format!("{}{path}", levee.url))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let response = http
        .post(format!("{}/admin/streams/signups/pause", levee.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("message", "no")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .post(format!("{}/admin/alerts", levee.url))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("message", "Polls close at 8pm"),
            ("severity", "warning"),
            ("link", ""),
            ("starts_at", ""),
            ("ends_at", ""),
            ("states", "TN"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "editors manage alerts"
    );
    let alerts: Value = http
        .get(format!("{}/alerts.json", levee.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alerts["alerts"][0]["message"], "Polls close at 8pm");

    // The admin sees who did it.
    let (admin_cookie, _) = login(&levee, "admin", PASSWORD).await;
    let audit = http
        .get(format!("{}/admin/audit", levee.url))
        .header(COOKIE, &admin_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("eddie") && audit.contains("alert.create"),
        "{audit}"
    );
}

#[tokio::test]
async fn logins_are_rate_limited_and_cookies_are_secure_behind_tls() {
    let dir = tempfile::tempdir().unwrap();
    let levee = start(dir.path());
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = http
            .post(format!("{}/admin/login", levee.url))
            .form(&[("name", "admin"), ("password", "guess")])
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");

    let dir = tempfile::tempdir().unwrap();
    let levee = start(dir.path());
    let response = http
        .post(format!("{}/admin/login", levee.url))
        .header("x-forwarded-proto", "https")
        .form(&[("name", "admin"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn the_first_start_prints_a_one_time_setup_link() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let levee = Levee::start_with_env(dir.path(), &[("LEVEE_ADMIN_TOKEN", TOKEN)]);
    let link = levee
        .startup
        .iter()
        .find_map(|l| {
            l.split(" at ")
                .nth(1)
                .filter(|p| p.starts_with("/admin/setup?token="))
        })
        .unwrap_or_else(|| panic!("no setup link in {:?}", levee.startup))
        .to_owned();
    let token = link.split('=').nth(1).unwrap().to_owned();
    let http = client();
    let wrong = http
        .get(format!("{}/admin/setup?token=wrong", levee.url))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let page = http
        .get(format!("{}{link}", levee.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let created = http
        .post(format!("{}/admin/setup", levee.url))
        .form(&[
            ("token", token.as_str()),
            ("name", "chief"),
            ("password", "long enough pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    assert!(
        created.headers().contains_key(SET_COOKIE),
        "signed in at once"
    );
    let again = http
        .post(format!("{}/admin/setup", levee.url))
        .form(&[
            ("token", token.as_str()),
            ("name", "intruder"),
            ("password", "long enough pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "the link works once");
    login(&levee, "chief", "long enough pw").await;
}

#[tokio::test]
async fn levee_publish_renders_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    let levee = start(dir.path());
    let http = client();
    let api = |path: &str| http.post(format!("{}{path}", levee.url)).bearer_auth(TOKEN);
    let created = api("/v1/admin/blogs")
        .json(&json!({"slug": "night", "title": "Night"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let post = api("/v1/admin/blogs/night/posts")
        .json(&json!({"title": "Kept", "body_markdown": "in SQL"}))
        .send()
        .await
        .unwrap();
    let id = post.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    let public = dir.path().join("levee-data/public");
    std::fs::remove_dir_all(public.join("blogs")).unwrap();
    let (ok, out) = levee.cli(&["publish"]);
    assert!(ok, "{out}");
    let latest: Value = serde_json::from_str(
        &std::fs::read_to_string(public.join("blogs/night/latest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(latest["posts"][0]["title"], "Kept");
    assert!(public.join(format!("blogs/night/posts/{id}.json")).exists());
    assert!(public.join("blogs/night/archive/1.json").exists());
}
