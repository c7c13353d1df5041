//! What the built-in demo (`levee serve` without `--config`) puts in place at start so its
//! page at `/` has something to show: a live blog `news` with a first post, and one JSON
//! file per US ZIP code for the form's pre-fill, sharded from `data/us-zipcodes.csv` (or
//! `LEVEE_DEMO_ZIPS`). Both are skipped when already there; nothing here is needed by a
//! configured node.

use std::path::PathBuf;
use std::sync::Arc;

use levee_cms::cms::{NewBlog, PostInput};
use levee_cms::{Cms, CmsError};
use levee_publish::shard::{self, ShardOptions};
use levee_publish::sync::{self, SyncOptions};
use levee_store::{CacheRules, Store};

pub const BLOG: &str = "news";
const ZIP_CSV: &str = "data/us-zipcodes.csv";

const WELCOME: &str = "This is levee's demo. Sign the petition on this page: your sign-up \
goes through the queue into the database, and the count and the list of signers are \
published by a scheduled job every few seconds.\n\n\
Try the admin at [/admin](/admin): post here, raise an alert banner, or pause the \
`signups` stream and watch this page say that new sign-ups are delayed.";

/// Put the demo's content in place, in the background.
pub fn spawn(cms: Option<Arc<Cms>>, store: Store, rules: CacheRules) {
    tokio::spawn(async move {
        if let Some(cms) = cms {
            blog(&cms).await;
        }
        zip_codes(&store, &rules).await;
    });
}

async fn blog(cms: &Cms) {
    let blog = NewBlog {
        slug: BLOG.into(),
        title: "Live updates".into(),
    };
    match cms.create_blog(blog, "levee").await {
        Ok(_) => {}
        Err(CmsError::Conflict(_)) => return,
        Err(e) => {
            tracing::warn!(error = %e, "demo: cannot create the news blog");
            return;
        }
    }
    let post = PostInput {
        title: Some("Welcome to the levee demo".into()),
        body_markdown: Some(WELCOME.into()),
        pinned: Some(true),
        ..Default::default()
    };
    if let Err(e) = cms.create_post(BLOG, post, "levee").await {
        tracing::warn!(error = %e, "demo: cannot post to the news blog");
    }
}

/// `zip/{zip}.json` with zip, city and state; a re-run finds them all in place.
async fn zip_codes(store: &Store, rules: &CacheRules) {
    let csv =
        std::env::var_os("LEVEE_DEMO_ZIPS").map_or_else(|| PathBuf::from(ZIP_CSV), PathBuf::from);
    let options = ShardOptions {
        key: "zip".into(),
        out: "zip/{key}.json".into(),
        fields: Some(vec!["zip".into(), "city".into(), "state".into()]),
    };
    // 41,749 rows: read and split off the async threads.
    let (read, rules_for_shard) = (options.clone(), rules.clone());
    let path = csv.clone();
    let sharded = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).ok()?;
        Some(shard::shard(
            std::io::BufReader::new(file),
            &read,
            &rules_for_shard,
        ))
    })
    .await
    .ok()
    .flatten();
    let files = match sharded {
        None => {
            tracing::info!(
                csv = %csv.display(),
                "demo: no ZIP code data, so no pre-fill (run levee from its repository, or set LEVEE_DEMO_ZIPS)"
            );
            return;
        }
        Some(Err(e)) => {
            tracing::warn!(csv = %csv.display(), error = %e, "demo: cannot read the ZIP codes");
            return;
        }
        Some(Ok((files, _))) => files,
    };
    let sync_options = SyncOptions {
        scope: options.scope(),
        ..Default::default()
    };
    match sync::sync(store, files, &sync_options).await {
        Ok(summary) => tracing::info!(%summary, "demo: ZIP code files in place"),
        Err(e) => tracing::warn!(error = %e, "demo: cannot publish the ZIP codes"),
    }
}
