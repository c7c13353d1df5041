//! The publisher and the sync engine, on the local store and on S3 (moto in CI).

use bytes::Bytes;
use levee_publish::sync::{SyncError, SyncFile, SyncOptions, sync};
use levee_publish::{PublishFile, Publisher};
use levee_store::testing::s3_settings;
use levee_store::{CacheRules, IMMUTABLE, Store, StoreSettings};

async fn stores() -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(&StoreSettings {
        url: format!("file://{}", dir.path().join("public").display()),
        ..Default::default()
    })
    .unwrap();
    let mut stores = vec![(local, dir)];
    if let Some(settings) = s3_settings().await {
        stores.push((
            Store::open(&settings).unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    stores
}

async fn text(store: &Store, path: &str) -> Option<String> {
    let stored = store.get(path).await.unwrap()?;
    Some(String::from_utf8(stored.body.to_vec()).unwrap())
}

#[tokio::test]
async fn publish_sets_headers_and_skips_unchanged_files() {
    for (store, _dir) in stores().await {
        let rules = CacheRules::new([("blogs/**", "public, max-age=5")]).unwrap();
        let publisher = Publisher::new(store.clone(), rules);
        let files = || {
            vec![
                PublishFile::json("blogs/live/latest.json", &serde_json::json!({"posts": [1]}))
                    .pointer(),
                PublishFile::json("blogs/live/archive/1.json", &serde_json::json!([1])).immutable(),
            ]
        };
        let report = publisher.publish(files()).await.unwrap();
        assert_eq!((report.written, report.unchanged), (2, 0));
        let latest = store.get("blogs/live/latest.json").await.unwrap().unwrap();
        let headers = latest.headers.unwrap();
        assert_eq!(headers.content_type, "application/json; charset=utf-8");
        assert_eq!(headers.cache_control, "public, max-age=5");
        let archive = store
            .get("blogs/live/archive/1.json")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(archive.headers.unwrap().cache_control, IMMUTABLE);

        let report = publisher.publish(files()).await.unwrap();
        assert_eq!((report.written, report.unchanged), (0, 2), "{store:?}");
        assert_eq!(publisher.uploads(), 2);
    }
}

#[tokio::test]
async fn ten_saves_at_once_make_at_most_two_uploads_and_the_last_wins() {
    for (store, _dir) in stores().await {
        let publisher = Publisher::new(store.clone(), CacheRules::default());
        let saves = (0..10).map(|i| {
            let publisher = publisher.clone();
            async move {
                publisher
                    .publish(vec![PublishFile::json(
                        "alerts.json",
                        &serde_json::json!({"v": i}),
                    )])
                    .await
            }
        });
        for result in futures::future::join_all(saves).await {
            result.unwrap();
        }
        assert!(publisher.uploads() <= 2, "{} uploads", publisher.uploads());
        assert_eq!(text(&store, "alerts.json").await.unwrap(), r#"{"v":9}"#);
    }
}

#[tokio::test]
async fn a_failed_publish_keeps_the_last_good_set() {
    let (store, dir) = stores().await.remove(0);
    let publisher = Publisher::new(store.clone(), CacheRules::default());
    let set = |version: &str| {
        vec![
            PublishFile::new(format!("data/{version}.json"), format!("\"{version}\"")),
            PublishFile::json(
                "index.json",
                &serde_json::json!({"data": format!("data/{version}.json")}),
            )
            .pointer(),
        ]
    };
    publisher.publish(set("v1")).await.unwrap();
    // A directory where the next data file should go: its write fails.
    std::fs::create_dir_all(dir.path().join("public/data/v2.json/x")).unwrap();
    let err = publisher.publish(set("v2")).await.unwrap_err();
    assert_eq!(err.path, "data/v2.json");
    assert_eq!(
        text(&store, "index.json").await.unwrap(),
        r#"{"data":"data/v1.json"}"#,
        "the pointer still names the last good file"
    );
    assert_eq!(text(&store, "data/v1.json").await.unwrap(), "\"v1\"");
}

fn site(files: &[(&str, &str)]) -> Vec<SyncFile> {
    let rules = CacheRules::default();
    files
        .iter()
        .map(|(path, body)| SyncFile {
            path: path.to_string(),
            body: Bytes::from(body.to_string()),
            headers: rules.headers(path),
            pointer: path.ends_with(".html"),
        })
        .collect()
}

#[tokio::test]
async fn sync_uploads_only_changes_and_deletes_with_a_guard() {
    for (store, _dir) in stores().await {
        let options = SyncOptions {
            delete: true,
            ..SyncOptions::default()
        };
        let v1 = site(&[
            ("index.html", "<a href=a.css>"),
            ("a.css", "a{}"),
            ("b.js", "1"),
        ]);
        let first = sync(&store, v1.clone(), &options).await.unwrap();
        assert_eq!(first.uploaded, ["a.css", "b.js", "index.html"]);

        let again = sync(&store, v1.clone(), &options).await.unwrap();
        assert!(
            again.uploaded.is_empty() && again.deleted.is_empty(),
            "{store:?}: {again}"
        );
        assert_eq!(again.unchanged, 3);
        assert_eq!(
            (again.requests.list, again.requests.put),
            (1, 0),
            "one listing, no PUT"
        );

        // A file changed behind levee's back is noticed by its version tag.
        let rules = CacheRules::default();
        store
            .put(
                "b.js",
                Bytes::from_static(b"tampered"),
                &rules.headers("b.js"),
                "x",
            )
            .await
            .unwrap();
        let v2 = site(&[("index.html", "<a href=a.css>v2"), ("a.css", "a{}")]);
        let dry = sync(
            &store,
            v2.clone(),
            &SyncOptions {
                dry_run: true,
                ..options.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(dry.uploaded, ["index.html"]);
        assert_eq!(dry.deleted, ["b.js"]);
        assert_eq!(
            text(&store, "b.js").await.unwrap(),
            "tampered",
            "dry run changes nothing"
        );

        let guard = SyncOptions {
            max_deletes: 0,
            ..options.clone()
        };
        let err = sync(&store, v2.clone(), &guard).await.unwrap_err();
        assert!(
            matches!(err, SyncError::TooManyDeletes { count: 1, limit: 0 }),
            "{err}"
        );
        assert_eq!(text(&store, "index.html").await.unwrap(), "<a href=a.css>");

        let second = sync(&store, v2.clone(), &options).await.unwrap();
        assert_eq!(second.uploaded, ["index.html"]);
        assert_eq!(second.deleted, ["b.js"]);
        assert!(store.get("b.js").await.unwrap().is_none());
        assert_eq!(second.changed().count(), 2);

        let v3 = site(&[
            ("index.html", "<a href=a.css>v2"),
            ("a.css", "a{}"),
            ("b.js", "1"),
        ]);
        let third = sync(&store, v3, &options).await.unwrap();
        assert_eq!(
            third.uploaded,
            ["b.js"],
            "{store:?}: a file deleted earlier comes back"
        );
    }
}
