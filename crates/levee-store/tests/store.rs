//! The same cases against the local store and an S3-compatible server (moto in CI).

use bytes::Bytes;
use levee_store::testing::s3_settings;
use levee_store::{CacheRules, Store, StoreSettings};

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(&StoreSettings {
        url: format!("file://{}", dir.path().join("public").display()),
        ..Default::default()
    })
    .unwrap();
    let mut stores = vec![(local, Some(dir))];
    if let Some(settings) = s3_settings().await {
        stores.push((Store::open(&settings).unwrap(), None));
    }
    stores
}

#[tokio::test]
async fn put_get_keeps_headers_and_hash() {
    for (store, _dir) in stores().await {
        let headers = CacheRules::default().headers("zip/37415.json");
        let body = Bytes::from_static(br#"{"city":"Chattanooga"}"#);
        let tag = store
            .put("zip/37415.json", body.clone(), &headers, "abc123")
            .await
            .unwrap();
        assert!(tag.is_some(), "{store:?}: a put returns a version tag");
        let got = store.get("zip/37415.json").await.unwrap().unwrap();
        assert_eq!(got.body, body, "{store:?}");
        assert_eq!(got.headers.as_ref(), Some(&headers), "{store:?}");
        assert_eq!(got.sha256.as_deref(), Some("abc123"), "{store:?}");
        assert!(store.get("zip/00000.json").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn list_skips_internal_files_and_honours_prefix() {
    for (store, _dir) in stores().await {
        let h = CacheRules::default().headers("a.json");
        for path in ["a.json", "zip/1.json", "zip/2.json", "zipper.json"] {
            store
                .put(path, Bytes::from_static(b"{}"), &h, "x")
                .await
                .unwrap();
        }
        store
            .put_internal("manifest.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let all: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(all, ["a.json", "zip/1.json", "zip/2.json", "zipper.json"]);
        let zip: Vec<_> = store
            .list("zip/")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(zip, ["zip/1.json", "zip/2.json"], "{store:?}");
        assert_eq!(
            store.get_internal("manifest.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{}")
        );
    }
}

#[tokio::test]
async fn rewrite_changes_the_version_tag_and_delete_removes() {
    for (store, _dir) in stores().await {
        let h = CacheRules::default().headers("a.json");
        let first = store
            .put("a.json", Bytes::from_static(b"[1]"), &h, "1")
            .await
            .unwrap();
        let second = store
            .put("a.json", Bytes::from_static(b"[1,2]"), &h, "2")
            .await
            .unwrap();
        assert_ne!(first, second, "{store:?}");
        let listed = store.list("").await.unwrap();
        assert_eq!(listed[0].e_tag, second, "{store:?}: listing shows the tag");
        assert_eq!(listed[0].size, 5);
        store.delete("a.json").await.unwrap();
        store.delete("a.json").await.unwrap();
        assert!(store.get("a.json").await.unwrap().is_none());
        assert!(store.list("").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn paths_that_could_escape_are_refused() {
    for (store, _dir) in stores().await {
        let h = CacheRules::default().headers("a.json");
        for path in [
            "../x.json",
            "a/../../x.json",
            "/etc/passwd",
            "a//b",
            "./a",
            ".levee/manifest.json",
            "a\\b",
            "a\0b",
            "",
        ] {
            let err = store
                .put(path, Bytes::from_static(b"{}"), &h, "x")
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("not a valid store path"),
                "{path:?}: {err}"
            );
        }
    }
}
