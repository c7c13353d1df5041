//! The front-end kit through a real `levee serve`: `/levee.js` from every static node, the
//! demo page at `/` without a site, and the site's own `index.html` at `/` with one.

mod support;

use reqwest::{Client, StatusCode, header};
use support::{Levee, write_config, write_config_with};

async fn get(levee: &Levee, path: &str, accept_encoding: &str) -> reqwest::Response {
    Client::new()
        .get(format!("{}{path}", levee.url))
        .header(header::ACCEPT_ENCODING, accept_encoding)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn levee_js_and_the_demo_page_without_a_site() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let levee = Levee::start(dir.path());

    let js = get(&levee, "/levee.js", "identity").await;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let etag = js.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    let cache = js.headers()[header::CACHE_CONTROL].to_str().unwrap();
    assert!(cache.contains("stale-while-revalidate"), "{cache}");
    assert!(js.text().await.unwrap().contains("root.levee = levee"));

    let again = Client::new()
        .get(format!("{}/levee.js", levee.url))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let gzipped = get(&levee, "/levee.js", "gzip").await;
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");

    let page = get(&levee, "/", "identity").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/levee.js"></script>"#));
    assert!(html.contains("levee.submit('signups'"));
}

#[tokio::test]
async fn a_configured_site_keeps_the_root_and_still_gets_levee_js() {
    let dir = tempfile::tempdir().unwrap();
    write_config_with(dir.path(), |toml| {
        toml + "\n[static]\nsite_dir = \"site\"\n"
    });
    std::fs::create_dir_all(dir.path().join("site")).unwrap();
    std::fs::write(
        dir.path().join("site/index.html"),
        "<!doctype html><title>our site</title>",
    )
    .unwrap();
    let levee = Levee::start(dir.path());

    let page = get(&levee, "/", "identity").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.text().await.unwrap(),
        "<!doctype html><title>our site</title>"
    );
    let js = get(&levee, "/levee.js", "identity").await;
    assert_eq!(js.status(), StatusCode::OK);
}
