//! The CMS from save to published file: exact output (golden files), sanitization, flat
//! save cost, scheduling on tokio's paused clock, a store that is down and comes back, and
//! the same tables on PostgreSQL and MySQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use levee_cms::cms::{AlertInput, NewBlog, PostInput};
use levee_cms::{Clock, Cms, CmsDb, Publish};
use levee_publish::Publisher;
use levee_store::{CacheRules, Store, StoreSettings};
use serde_json::{Value, json};

/// 2026-11-03T20:00:00Z, election night.
const T0: i64 = 1_793_736_000_000;

struct Fixture {
    cms: Arc<Cms>,
    publisher: Publisher,
    public: PathBuf,
    _dir: tempfile::TempDir,
}

async fn fixture_on(clock: Clock, url: Option<String>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    let store = Store::open(&StoreSettings {
        url: public.display().to_string(),
        ..Default::default()
    })
    .unwrap();
    let publisher = Publisher::new(store, CacheRules::default());
    let url = url.unwrap_or_else(|| format!("sqlite://{}/cms.db", dir.path().display()));
    let db = CmsDb::connect(&url).await.unwrap();
    let schema = json!({"type": "object", "required": ["modules"], "properties": {"modules": {"type": "array"}}});
    let collections = BTreeMap::from([(
        "homepage".to_owned(),
        jsonschema::validator_for(&schema).unwrap(),
    )]);
    let cms = Cms::new(db, publisher.clone(), clock, collections);
    Fixture {
        cms,
        publisher,
        public,
        _dir: dir,
    }
}

async fn fixture(clock: Clock) -> Fixture {
    fixture_on(clock, None).await
}

fn read(public: &Path, path: &str) -> Option<Value> {
    let text = std::fs::read_to_string(public.join(path)).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn post(title: &str, body: &str) -> PostInput {
    PostInput {
        title: Some(title.into()),
        body_markdown: Some(body.into()),
        ..Default::default()
    }
}

/// Compare with `tests/golden/NAME.json`; `LEVEE_BLESS=1` rewrites the file.
fn golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("LEVEE_BLESS").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with LEVEE_BLESS=1", path.display()));
    assert_eq!(pretty, expected, "{name} differs from {}", path.display());
}

#[tokio::test]
async fn content_publishes_exactly_this_json() {
    let f = fixture(Clock::fixed(T0)).await;
    let cms = &f.cms;
    let (_, publish) = cms
        .create_blog(
            NewBlog {
                slug: "election".into(),
                title: "Election night".into(),
            },
            "ana",
        )
        .await
        .unwrap();
    assert_eq!(publish, Publish::Done);
    cms.create_post(
        "election",
        post("Polls open", "Polls open at **7am**."),
        "ana",
    )
    .await
    .unwrap();
    let (pinned, _) = cms
        .create_post(
            "election",
            PostInput {
                pinned: Some(true),
                ..post(
                    "How to vote",
                    "[Find your polling place](https://example.org/polls)",
                )
            },
            "ben",
        )
        .await
        .unwrap();
    cms.create_post(
        "election",
        PostInput {
            status: Some("draft".into()),
            ..post("Draft", "not yet")
        },
        "ana",
    )
    .await
    .unwrap();
    cms.create_alert(
        AlertInput {
            message: Some("Polls close at 8pm".into()),
            link: Some(Some("https://example.org/polls".into())),
            severity: Some("warning".into()),
            starts_at: Some(Some("2026-11-03T12:00:00Z".into())),
            ends_at: Some(Some("2026-11-04T02:00:00Z".into())),
            states: Some(vec!["tn".into(), "GA".into()]),
        },
        "ana",
    )
    .await
    .unwrap();
    cms.put_collection(
        "homepage",
        json!({"modules": [{"type": "results", "race": "president"}]}),
        "ana",
    )
    .await
    .unwrap();

    golden(
        "latest",
        &read(&f.public, "blogs/election/latest.json").unwrap(),
    );
    golden(
        "archive-1",
        &read(&f.public, "blogs/election/archive/1.json").unwrap(),
    );
    golden(
        "post",
        &read(
            &f.public,
            &format!("blogs/election/posts/{}.json", pinned.id),
        )
        .unwrap(),
    );
    golden("alerts", &read(&f.public, "alerts.json").unwrap());
    golden(
        "collection",
        &read(&f.public, "collections/homepage.json").unwrap(),
    );
    assert!(
        std::fs::read_dir(f.public.join("blogs/election/posts"))
            .unwrap()
            .count()
            == 2,
        "the draft is not published"
    );

    let err = cms
        .put_collection("homepage", json!({"modules": "nope"}), "ana")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/modules"), "{err}");
}

#[tokio::test]
async fn scripts_never_reach_the_published_json() {
    let f = fixture(Clock::fixed(T0)).await;
    f.cms
        .create_blog(
            NewBlog {
                slug: "b".into(),
                title: "B".into(),
            },
            "x",
        )
        .await
        .unwrap();
    let body = "<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[a](javascript:alert(1)) <a href=\"javascript:alert(2)\" onclick=\"x()\">b</a>";
    let (p, _) = f.cms.create_post("b", post("t", body), "x").await.unwrap();
    for path in [
        "blogs/b/latest.json".to_owned(),
        format!("blogs/b/posts/{}.json", p.id),
    ] {
        let text = std::fs::read_to_string(f.public.join(&path))
            .unwrap()
            .to_ascii_lowercase();
        for bad in ["<script", "onerror", "onclick", "javascript:"] {
            assert!(!text.contains(bad), "{path} holds {bad}: {text}");
        }
    }
}

#[tokio::test]
async fn a_save_touches_only_the_last_archive_page_however_long_the_blog() {
    let f = fixture(Clock::starting_at(T0)).await;
    f.cms
        .create_blog(
            NewBlog {
                slug: "long".into(),
                title: "Long".into(),
            },
            "x",
        )
        .await
        .unwrap();
    for i in 0..120 {
        f.cms
            .create_post("long", post(&format!("post {i}"), "text"), "x")
            .await
            .unwrap();
    }
    let latest = read(&f.public, "blogs/long/latest.json").unwrap();
    assert_eq!(latest["archive_pages"], 3);
    assert_eq!(latest["posts"].as_array().unwrap().len(), 20);
    assert_eq!(
        read(&f.public, "blogs/long/archive/1.json").unwrap()["posts"][0]["title"],
        "post 0"
    );
    let page1 = std::fs::metadata(f.public.join("blogs/long/archive/1.json"))
        .unwrap()
        .modified()
        .unwrap();

    let before = f.publisher.uploads();
    f.cms
        .create_post("long", post("post 120", "text"), "x")
        .await
        .unwrap();
    assert_eq!(
        f.publisher.uploads() - before,
        3,
        "the post, the last archive page, latest.json"
    );
    let after = std::fs::metadata(f.public.join("blogs/long/archive/1.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(page1, after, "a full page is not rewritten");
    assert_eq!(
        read(&f.public, "blogs/long/archive/3.json").unwrap()["posts"]
            .as_array()
            .unwrap()
            .len(),
        21
    );
}

#[tokio::test]
async fn scheduled_posts_and_alerts_publish_at_their_time() {
    let f = fixture(Clock::starting_at(T0)).await;
    let cms = f.cms.clone();
    cms.create_blog(
        NewBlog {
            slug: "s".into(),
            title: "S".into(),
        },
        "x",
    )
    .await
    .unwrap();
    let (later, _) = cms
        .create_post(
            "s",
            PostInput {
                publish_at: Some(Some("2026-11-03T21:00:00Z".into())),
                ..post("At nine", "results")
            },
            "x",
        )
        .await
        .unwrap();
    cms.create_alert(
        AlertInput {
            message: Some("Polls closing".into()),
            starts_at: Some(Some("2026-11-03T20:30:00Z".into())),
            ends_at: Some(Some("2026-11-03T22:00:00Z".into())),
            ..Default::default()
        },
        "x",
    )
    .await
    .unwrap();
    assert!(read(&f.public, &format!("blogs/s/posts/{}.json", later.id)).is_none());
    assert_eq!(
        read(&f.public, "blogs/s/latest.json").unwrap()["posts"],
        json!([])
    );
    assert_eq!(
        read(&f.public, "alerts.json").unwrap()["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "upcoming alerts are listed"
    );

    let shutdown = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(cms.clone().run(shutdown.clone()));
    // Let it find what is next and go to sleep; then jump the clock past it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3600 + 1)).await;
    wait_for(
        || read(&f.public, &format!("blogs/s/posts/{}.json", later.id)).is_some(),
        "the scheduled post",
    )
    .await;
    wait_for(
        || {
            read(&f.public, "blogs/s/latest.json").unwrap()["posts"]
                .as_array()
                .unwrap()
                .len()
                == 1
        },
        "latest.json with it",
    )
    .await;

    tokio::time::advance(Duration::from_secs(3600)).await;
    wait_for(
        || read(&f.public, "alerts.json").unwrap()["alerts"] == json!([]),
        "the ended alert removed",
    )
    .await;
    shutdown.cancel();
    scheduler.await.unwrap();
}

async fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw {what}");
}

#[tokio::test]
async fn saves_succeed_while_the_store_is_down_and_publish_when_it_returns() {
    let f = fixture(Clock::starting_at(T0)).await;
    // The store cannot write under blogs/: a file sits where the folder must go.
    std::fs::create_dir_all(&f.public).unwrap();
    std::fs::write(f.public.join("blogs"), "in the way").unwrap();
    let (_, publish) = f
        .cms
        .create_blog(
            NewBlog {
                slug: "live".into(),
                title: "Live".into(),
            },
            "x",
        )
        .await
        .unwrap();
    assert_eq!(publish, Publish::Pending);
    let (_, publish) = f
        .cms
        .create_post("live", post("Still saved", "yes"), "x")
        .await
        .unwrap();
    assert_eq!(publish, Publish::Pending);
    assert!(f.cms.publish_pending());
    assert_eq!(
        f.cms.db().all_posts("live", 10).await.unwrap().len(),
        1,
        "the save is in the database"
    );

    let shutdown = tokio_util::sync::CancellationToken::new();
    let retry = tokio::spawn(f.cms.clone().run(shutdown.clone()));
    std::fs::remove_file(f.public.join("blogs")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while f.cms.publish_pending() {
        assert!(
            std::time::Instant::now() < deadline,
            "the publish was never retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let latest = read(&f.public, "blogs/live/latest.json").unwrap();
    assert_eq!(latest["posts"][0]["title"], "Still saved");
    shutdown.cancel();
    retry.await.unwrap();
}

async fn same_tables_on(dialect: &str) {
    let Some(url) = levee_sink::testing::database_url(dialect) else {
        return;
    };
    let f = fixture_on(Clock::fixed(T0), Some(url)).await;
    let slug = format!("b{}", &levee_sink::testing::unique_table()[1..12]);
    f.cms
        .create_blog(
            NewBlog {
                slug: slug.clone(),
                title: "On a server".into(),
            },
            "x",
        )
        .await
        .unwrap();
    let (p, _) = f
        .cms
        .create_post(
            &slug,
            PostInput {
                pinned: Some(true),
                ..post("One", "*hi*")
            },
            "x",
        )
        .await
        .unwrap();
    f.cms
        .update_post(
            &slug,
            p.id,
            PostInput {
                title: Some("One, edited".into()),
                ..Default::default()
            },
            "x",
        )
        .await
        .unwrap();
    let latest = read(&f.public, &format!("blogs/{slug}/latest.json")).unwrap();
    assert_eq!(latest["posts"][0]["title"], "One, edited", "{dialect}");
    assert_eq!(latest["posts"][0]["pinned"], true);
    assert_eq!(latest["posts"][0]["body_html"], "<p><em>hi</em></p>\n");
    f.cms.delete_post(&slug, p.id, "x").await.unwrap();
    assert!(read(&f.public, &format!("blogs/{slug}/posts/{}.json", p.id)).is_none());
    let audit = f.cms.db().audit_log(3).await.unwrap();
    assert_eq!(audit[0].action, "post.delete");
}

#[tokio::test]
async fn the_same_tables_work_on_postgres() {
    same_tables_on("postgres").await;
}

#[tokio::test]
async fn the_same_tables_work_on_mysql() {
    same_tables_on("mysql").await;
}
