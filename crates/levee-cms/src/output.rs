//! What the CMS publishes, as JSON: the shapes pages read.

use serde_json::{Value, json};

use crate::db::{Alert, Blog, Post};
use levee_publish::clock::rfc3339;

/// Posts in `latest.json`.
pub const LATEST_COUNT: i64 = 20;
/// Posts per archive page. Pages fill oldest first, so a new post only ever touches the
/// last page: a full page is not rewritten as the blog grows.
pub const ARCHIVE_PAGE: i64 = 50;

pub fn latest_path(slug: &str) -> String {
    format!("blogs/{slug}/latest.json")
}

pub fn post_path(slug: &str, id: i64) -> String {
    format!("blogs/{slug}/posts/{id}.json")
}

/// Archive pages are numbered from 1.
pub fn archive_path(slug: &str, page: i64) -> String {
    format!("blogs/{slug}/archive/{page}.json")
}

pub const ALERTS_PATH: &str = "alerts.json";

pub fn collection_path(name: &str) -> String {
    format!("collections/{name}.json")
}

/// Archive pages needed for `count` posts.
pub fn pages(count: i64) -> i64 {
    (count + ARCHIVE_PAGE - 1) / ARCHIVE_PAGE
}

fn blog_ref(blog: &Blog) -> Value {
    json!({ "slug": blog.slug, "title": blog.title })
}

/// A post as readers get it: no Markdown source, no draft state.
pub fn post(post: &Post) -> Value {
    json!({
        "id": post.id,
        "title": post.title,
        "body_html": post.body_html,
        "author": post.author,
        "pinned": post.pinned,
        "created_at": rfc3339(post.created_at),
        "updated_at": rfc3339(post.updated_at),
    })
}

/// `blogs/{slug}/posts/{id}.json`.
pub fn post_file(blog: &Blog, p: &Post) -> Value {
    let mut value = post(p);
    value["blog"] = blog_ref(blog);
    value
}

/// `blogs/{slug}/latest.json`: the newest posts, pinned first, and how many archive pages
/// hold the rest.
pub fn latest(blog: &Blog, posts: &[Post], total: i64) -> Value {
    json!({
        "blog": blog_ref(blog),
        "posts": posts.iter().map(post).collect::<Vec<_>>(),
        "total": total,
        "archive_pages": pages(total),
    })
}

/// `blogs/{slug}/archive/{page}.json`, oldest first.
pub fn archive(blog: &Blog, page: i64, total: i64, posts: &[Post]) -> Value {
    json!({
        "blog": blog_ref(blog),
        "page": page,
        "pages": pages(total),
        "posts": posts.iter().map(post).collect::<Vec<_>>(),
    })
}

/// `alerts.json`: alerts that are active or still to come at `now`, with their times so
/// pages can show and hide them on time between publishes.
pub fn alerts(alerts: &[Alert], now: i64) -> Value {
    let mut current: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.ends_at.is_none_or(|end| end > now))
        .collect();
    current.sort_by_key(|a| (a.starts_at.unwrap_or(i64::MIN), a.id));
    json!({
        "alerts": current
            .iter()
            .map(|a| json!({
                "id": a.id,
                "message": a.message,
                "link": a.link,
                "severity": a.severity,
                "starts_at": a.starts_at.map(rfc3339),
                "ends_at": a.ends_at.map(rfc3339),
                "states": a.states,
            }))
            .collect::<Vec<_>>(),
    })
}
