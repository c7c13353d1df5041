//! The static server through its router: headers, revalidation, encodings, ranges, and
//! every way out of the root that a request might try.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use levee_publish::{PublishFile, Publisher};
use levee_static::{StaticFiles, StaticOptions};
use levee_store::{CacheRules, Store, StoreSettings};
use tower::ServiceExt;

struct Fixture {
    dir: tempfile::TempDir,
    app: axum::Router,
    publisher: Publisher,
}

impl Fixture {
    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("public")
    }
    fn site(&self) -> std::path::PathBuf {
        self.dir.path().join("site")
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("public");
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("blog")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(site.join("blog/index.html"), "<h1>blog</h1>").unwrap();
    std::fs::write(site.join("404.html"), "<h1>not here</h1>").unwrap();
    let store = Store::open(&StoreSettings {
        url: store_dir.display().to_string(),
        ..Default::default()
    })
    .unwrap();
    let files = StaticFiles::new(StaticOptions {
        store: Some(store_dir),
        site: Some(site),
        rules: CacheRules::new([("**/*.html", "public, max-age=60")]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    Fixture {
        app: levee_static::router(Arc::new(files)),
        publisher: Publisher::new(store, CacheRules::default()),
        dir,
    }
}

async fn get(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    request(app, "GET", uri, headers).await
}

async fn request(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn h<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn big_json() -> String {
    let items: Vec<String> = (0..200)
        .map(|i| format!("{{\"zip\":\"{i:05}\",\"city\":\"Chattanooga\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn published_headers_are_served_and_revalidated() {
    let f = fixture();
    f.publisher
        .publish(vec![
            PublishFile::new("status.json", "{\"ok\":true}").immutable(),
        ])
        .await
        .unwrap();
    let (status, headers, body) = get(&f.app, "/status.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"{\"ok\":true}");
    assert_eq!(
        h(&headers, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(h(&headers, "cache-control"), levee_store::IMMUTABLE);
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    assert_eq!(h(&headers, "access-control-expose-headers"), "ETag");
    let etag = h(&headers, "etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.len() > 10,
        "strong ETag {etag}"
    );
    let last_modified = h(&headers, "last-modified").to_owned();

    let (status, headers, body) = get(&f.app, "/status.json", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(h(&headers, "etag"), etag);
    let (status, _, _) = get(&f.app, "/status.json", &[("if-none-match", "\"other\", *")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = get(
        &f.app,
        "/status.json",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = get(&f.app, "/status.json", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);

    // A new version is served at once, with a new ETag.
    f.publisher
        .publish(vec![PublishFile::new("status.json", "{\"ok\":false}")])
        .await
        .unwrap();
    let (status, headers, body) = get(&f.app, "/status.json", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"{\"ok\":false}");
    assert_ne!(h(&headers, "etag"), etag);
    assert_eq!(h(&headers, "cache-control"), levee_store::CHANGING);
}

#[tokio::test]
async fn compression_follows_accept_encoding() {
    let f = fixture();
    let json = big_json();
    f.publisher
        .publish(vec![PublishFile::new("zips.json", json.clone())])
        .await
        .unwrap();
    let (_, headers, body) = get(
        &f.app,
        "/zips.json",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(h(&headers, "content-encoding"), "br");
    assert_eq!(h(&headers, "vary"), "Accept-Encoding");
    let mut plain = Vec::new();
    brotli::BrotliDecompress(&mut &body[..], &mut plain).unwrap();
    assert_eq!(plain, json.as_bytes());

    let (_, headers, body) =
        get(&f.app, "/zips.json", &[("accept-encoding", "gzip, br;q=0")]).await;
    assert_eq!(h(&headers, "content-encoding"), "gzip");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, json);

    let (_, headers, body) = get(&f.app, "/zips.json", &[]).await;
    assert_eq!(h(&headers, "content-encoding"), "");
    assert_eq!(h(&headers, "vary"), "Accept-Encoding");
    assert_eq!(body, json.as_bytes());
    assert_eq!(h(&headers, "content-length"), json.len().to_string());
}

#[tokio::test]
async fn a_file_stored_compressed_is_decoded_for_clients_without_it() {
    let f = fixture();
    let json = big_json();
    let store = f.publisher.store();
    let mut headers = CacheRules::default().headers("pre.json");
    headers.content_encoding = Some("gzip".into());
    let gz = levee_store::Encoding::Gzip.compress(json.as_bytes(), levee_store::Effort::Best);
    store
        .put("pre.json", gz.into(), &headers, "x")
        .await
        .unwrap();
    let (status, headers, body) = get(&f.app, "/pre.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "content-encoding"), "");
    assert_eq!(body, json.as_bytes());
}

#[tokio::test]
async fn ranges_and_head() {
    let f = fixture();
    f.publisher
        .publish(vec![PublishFile::new("r.txt", "0123456789")])
        .await
        .unwrap();
    let (status, headers, body) = get(&f.app, "/r.txt", &[("range", "bytes=2-5")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"2345");
    assert_eq!(h(&headers, "content-range"), "bytes 2-5/10");
    let (_, _, body) = get(&f.app, "/r.txt", &[("range", "bytes=-3")]).await;
    assert_eq!(body, b"789");
    let (_, _, body) = get(&f.app, "/r.txt", &[("range", "bytes=7-")]).await;
    assert_eq!(body, b"789");
    let (status, headers, _) = get(&f.app, "/r.txt", &[("range", "bytes=20-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&headers, "content-range"), "bytes */10");
    let (status, _, body) = get(&f.app, "/r.txt", &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(
        (status, body.len()),
        (StatusCode::OK, 10),
        "several ranges: the whole file"
    );
    let (status, _, body) = get(
        &f.app,
        "/r.txt",
        &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(
        (status, body.len()),
        (StatusCode::OK, 10),
        "If-Range for another version"
    );

    let (status, headers, body) = request(&f.app, "HEAD", "/r.txt", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h(&headers, "content-length"), "10");
    let (status, headers, _) = request(&f.app, "POST", "/r.txt", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h(&headers, "allow"), "GET, HEAD");
}

#[tokio::test]
async fn large_files_stream_from_disk_with_ranges() {
    let f = fixture();
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(f.site().join("big.bin"), &big).unwrap();
    let (status, headers, body) = get(&f.app, "/big.bin", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, big);
    assert_eq!(h(&headers, "content-type"), "application/octet-stream");
    let etag = h(&headers, "etag").to_owned();
    let (status, _, body) = get(&f.app, "/big.bin", &[("range", "bytes=2000000-2000009")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &big[2_000_000..2_000_010]);
    let (status, _, _) = get(&f.app, "/big.bin", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn index_pages_site_fallback_and_the_404_page() {
    let f = fixture();
    let (status, headers, body) = get(&f.app, "/", &[]).await;
    assert_eq!((status, body), (StatusCode::OK, b"<h1>home</h1>".to_vec()));
    assert_eq!(h(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        h(&headers, "cache-control"),
        "public, max-age=60",
        "site rules apply"
    );
    let (_, _, body) = get(&f.app, "/blog/", &[]).await;
    assert_eq!(body, b"<h1>blog</h1>");
    let (status, headers, _) = get(&f.app, "/blog?x=1", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h(&headers, "location"), "/blog/?x=1");
    let (status, _, body) = get(&f.app, "/nope.json", &[]).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, b"<h1>not here</h1>".to_vec())
    );

    // The store comes before the site.
    f.publisher
        .publish(vec![PublishFile::new("index.html", "<h1>published</h1>")])
        .await
        .unwrap();
    let (_, _, body) = get(&f.app, "/", &[]).await;
    assert_eq!(body, b"<h1>published</h1>");
}

#[tokio::test]
async fn nothing_outside_the_roots_is_served() {
    let f = fixture();
    let secret = f.dir.path().join("secret.txt");
    std::fs::write(&secret, "secret").unwrap();
    std::os::unix::fs::symlink(&secret, f.site().join("link.txt")).unwrap();
    std::os::unix::fs::symlink(f.dir.path(), f.site().join("up")).unwrap();
    std::fs::write(f.site().join("inside.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(f.site().join("inside.txt"), f.site().join("ok.txt")).unwrap();
    f.publisher
        .publish(vec![PublishFile::new("a.json", "{}")])
        .await
        .unwrap();
    for uri in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/..%5csecret.txt",
        "/link.txt",
        "/up/secret.txt",
        "/.levee/headers/a.json.json",
        "/.levee/manifest.json",
        "/a.json%00",
    ] {
        let (status, _, body) = get(&f.app, uri, &[]).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{uri}: {status}"
        );
        assert!(!String::from_utf8_lossy(&body).contains("secret"), "{uri}");
        assert!(
            !String::from_utf8_lossy(&body).contains("content_type"),
            "{uri}"
        );
    }
    let (status, _, body) = get(&f.app, "/ok.txt", &[]).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, b"inside".to_vec()),
        "a symlink inside is fine"
    );
    assert!(f.store().join(".levee").exists());
}
