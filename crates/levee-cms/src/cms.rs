//! The CMS's actions: every change is saved to the database first, then published. A save
//! never fails because the store is down: what could not be published is remembered and
//! retried until it is ("publish pending" in the admin).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use levee_publish::{PublishFile, Publisher};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{Alert, Blog, CmsDb, DbError, Post};
use crate::output::{self, ARCHIVE_PAGE, LATEST_COUNT};
use crate::render::markdown_to_html;
use levee_publish::clock::{Clock, parse_rfc3339};

/// How long a save waits for its publish before answering "pending".
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// First retry of a failed publish; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub type Result<T> = std::result::Result<T, CmsError>;

/// What must be republished.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A blog's `latest.json` and its archive pages from this one (1-based) to the last.
    Blog {
        slug: String,
        from_page: i64,
    },
    /// One post's own file (written, or removed when it is no longer visible).
    Post {
        slug: String,
        id: i64,
    },
    Alerts,
    Collection(String),
}

/// Whether a save's files are out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    Done,
    Pending,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBlog {
    pub slug: String,
    pub title: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    pub title: Option<String>,
    pub body_markdown: Option<String>,
    pub pinned: Option<bool>,
    pub status: Option<String>,
    /// RFC 3339; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub publish_at: Option<Option<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertInput {
    pub message: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub link: Option<Option<String>>,
    pub severity: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub ends_at: Option<Option<String>>,
    pub states: Option<Vec<String>>,
}

/// Tells a field set to `null` (Some(None)) from a field left out (None).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub struct Cms {
    db: CmsDb,
    publisher: Publisher,
    clock: Clock,
    collections: BTreeMap<String, jsonschema::Validator>,
    pending: Mutex<BTreeSet<Target>>,
    /// Wakes the scheduler and the retry loop after a change.
    changed: Notify,
}

impl Cms {
    /// `collections`: name → JSON Schema, from config.
    pub fn new(
        db: CmsDb,
        publisher: Publisher,
        clock: Clock,
        collections: BTreeMap<String, jsonschema::Validator>,
    ) -> Arc<Cms> {
        Arc::new(Cms {
            db,
            publisher,
            clock,
            collections,
            pending: Mutex::default(),
            changed: Notify::new(),
        })
    }

    pub fn db(&self) -> &CmsDb {
        &self.db
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn collection_names(&self) -> impl Iterator<Item = &str> {
        self.collections.keys().map(String::as_str)
    }

    /// Whether some publish is still waiting for the store.
    pub fn publish_pending(&self) -> bool {
        !self.pending.lock().expect("pending lock").is_empty()
    }

    // Blogs and posts

    pub async fn create_blog(&self, input: NewBlog, user: &str) -> Result<(Blog, Publish)> {
        if !valid_slug(&input.slug) {
            return Err(CmsError::Invalid(
                "slug must be 1-100 characters of a-z, 0-9 and '-'".into(),
            ));
        }
        let title = required(Some(input.title), "title")?;
        let blog = Blog {
            slug: input.slug,
            title,
            created_at: self.now(),
        };
        if !self.db.create_blog(&blog).await? {
            return Err(CmsError::Conflict(format!("blog {} exists", blog.slug)));
        }
        self.audit(user, "blog.create", &blog.slug).await?;
        let publish = self
            .publish([Target::Blog {
                slug: blog.slug.clone(),
                from_page: 1,
            }])
            .await;
        Ok((blog, publish))
    }

    pub async fn blog(&self, slug: &str) -> Result<Blog> {
        self.db
            .blog(slug)
            .await?
            .ok_or_else(|| CmsError::NotFound(format!("blog {slug}")))
    }

    pub async fn create_post(
        &self,
        slug: &str,
        input: PostInput,
        author: &str,
    ) -> Result<(Post, Publish)> {
        self.blog(slug).await?;
        let now = self.now();
        let markdown = required(input.body_markdown, "body_markdown")?;
        let mut post = Post {
            id: 0,
            blog: slug.to_owned(),
            title: required(input.title, "title")?,
            body_html: markdown_to_html(&markdown),
            body_markdown: markdown,
            author: author.to_owned(),
            created_at: now,
            updated_at: now,
            pinned: input.pinned.unwrap_or(false),
            status: status(input.status.as_deref().unwrap_or("published"))?,
            publish_at: time(input.publish_at.flatten().as_deref(), "publish_at")?,
        };
        post.id = self.db.insert_post(&post).await?;
        self.audit(author, "post.create", &format!("{slug}/{}", post.id))
            .await?;
        let publish = self.publish(self.post_targets(&post, None).await?).await;
        self.changed.notify_waiters();
        Ok((post, publish))
    }

    pub async fn update_post(
        &self,
        slug: &str,
        id: i64,
        input: PostInput,
        user: &str,
    ) -> Result<(Post, Publish)> {
        let before = self.post(slug, id).await?;
        let mut post = before.clone();
        if let Some(title) = input.title {
            post.title = required(Some(title), "title")?;
        }
        if let Some(markdown) = input.body_markdown {
            post.body_html = markdown_to_html(&markdown);
            post.body_markdown = markdown;
        }
        if let Some(pinned) = input.pinned {
            post.pinned = pinned;
        }
        if let Some(s) = input.status {
            post.status = status(&s)?;
        }
        if let Some(at) = input.publish_at {
            post.publish_at = time(at.as_deref(), "publish_at")?;
        }
        post.updated_at = self.now();
        self.db.update_post(&post).await?;
        self.audit(user, "post.update", &format!("{slug}/{id}"))
            .await?;
        let publish = self
            .publish(self.post_targets(&post, Some(&before)).await?)
            .await;
        self.changed.notify_waiters();
        Ok((post, publish))
    }

    pub async fn delete_post(&self, slug: &str, id: i64, user: &str) -> Result<Publish> {
        let before = self.post(slug, id).await?;
        let targets = self.post_targets(&before, Some(&before)).await?;
        self.db.delete_post(id).await?;
        self.audit(user, "post.delete", &format!("{slug}/{id}"))
            .await?;
        Ok(self.publish(targets).await)
    }

    pub async fn post(&self, slug: &str, id: i64) -> Result<Post> {
        match self.db.post(id).await? {
            Some(post) if post.blog == slug => Ok(post),
            _ => Err(CmsError::NotFound(format!("post {slug}/{id}"))),
        }
    }

    /// What a change to `post` (which was `before`) makes stale: its file, and the blog's
    /// archive from the first page either version sits on.
    async fn post_targets(&self, post: &Post, before: Option<&Post>) -> Result<Vec<Target>> {
        let now = self.now();
        let mut first = i64::MAX;
        for p in [Some(post), before].into_iter().flatten() {
            let position = self.db.position(&p.blog, now, p).await?;
            first = first.min(position / ARCHIVE_PAGE + 1);
        }
        Ok(vec![
            Target::Post {
                slug: post.blog.clone(),
                id: post.id,
            },
            Target::Blog {
                slug: post.blog.clone(),
                from_page: first,
            },
        ])
    }

    // Alerts

    pub async fn create_alert(&self, input: AlertInput, user: &str) -> Result<(Alert, Publish)> {
        let mut alert = Alert {
            id: 0,
            message: String::new(),
            link: None,
            severity: "info".into(),
            starts_at: None,
            ends_at: None,
            states: Vec::new(),
        };
        apply_alert(&mut alert, input, true)?;
        alert.id = self.db.insert_alert(&alert).await?;
        self.audit(user, "alert.create", &alert.id.to_string())
            .await?;
        let publish = self.publish([Target::Alerts]).await;
        self.changed.notify_waiters();
        Ok((alert, publish))
    }

    pub async fn update_alert(
        &self,
        id: i64,
        input: AlertInput,
        user: &str,
    ) -> Result<(Alert, Publish)> {
        let mut alert = self
            .db
            .alert(id)
            .await?
            .ok_or_else(|| CmsError::NotFound(format!("alert {id}")))?;
        apply_alert(&mut alert, input, false)?;
        self.db.update_alert(&alert).await?;
        self.audit(user, "alert.update", &id.to_string()).await?;
        let publish = self.publish([Target::Alerts]).await;
        self.changed.notify_waiters();
        Ok((alert, publish))
    }

    pub async fn delete_alert(&self, id: i64, user: &str) -> Result<Publish> {
        self.db
            .alert(id)
            .await?
            .ok_or_else(|| CmsError::NotFound(format!("alert {id}")))?;
        self.db.delete_alert(id).await?;
        self.audit(user, "alert.delete", &id.to_string()).await?;
        Ok(self.publish([Target::Alerts]).await)
    }

    // Collections

    pub async fn put_collection(&self, name: &str, document: Value, user: &str) -> Result<Publish> {
        let validator = self
            .collections
            .get(name)
            .ok_or_else(|| CmsError::NotFound(format!("collection {name}")))?;
        let problems: Vec<String> = validator
            .iter_errors(&document)
            .take(10)
            .map(|e| format!("{}: {}", e.instance_path(), e.masked()))
            .collect();
        if !problems.is_empty() {
            return Err(CmsError::Invalid(problems.join("; ")));
        }
        let text = serde_json::to_string(&document).expect("JSON serializes");
        self.db.put_collection(name, &text, self.now()).await?;
        self.audit(user, "collection.put", name).await?;
        Ok(self.publish([Target::Collection(name.to_owned())]).await)
    }

    async fn audit(&self, user: &str, action: &str, target: &str) -> Result<()> {
        self.db.audit(self.now(), user, action, target).await?;
        Ok(())
    }

    // Publishing

    /// Publish `targets`, waiting at most [`PUBLISH_WAIT`]; what fails is retried later.
    async fn publish(&self, targets: impl IntoIterator<Item = Target>) -> Publish {
        let targets: Vec<Target> = targets.into_iter().collect();
        let result = tokio::time::timeout(PUBLISH_WAIT, self.publish_now(&targets)).await;
        match result {
            Ok(Ok(())) => Publish::Done,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "publish failed; will retry");
                self.defer(targets);
                Publish::Pending
            }
            Err(_) => {
                tracing::warn!("publish timed out; will retry");
                self.defer(targets);
                Publish::Pending
            }
        }
    }

    fn defer(&self, targets: Vec<Target>) {
        self.pending.lock().expect("pending lock").extend(targets);
        self.changed.notify_waiters();
    }

    /// Render `targets` from the database as it is now and publish them.
    async fn publish_now(&self, targets: &[Target]) -> std::result::Result<(), String> {
        let now = self.now();
        let mut files = Vec::new();
        let mut removed = Vec::new();
        for target in targets {
            match target {
                Target::Post { slug, id } => {
                    let Some(blog) = self.db.blog(slug).await.map_err(|e| e.to_string())? else {
                        continue;
                    };
                    match self.db.post(*id).await.map_err(|e| e.to_string())? {
                        Some(post) if post.visible(now) => files.push(PublishFile::json(
                            output::post_path(slug, *id),
                            &output::post_file(&blog, &post),
                        )),
                        _ => removed.push(output::post_path(slug, *id)),
                    }
                }
                Target::Blog { slug, from_page } => {
                    files.extend(
                        self.blog_files(slug, *from_page, now)
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
                Target::Alerts => {
                    let alerts = self.db.alerts().await.map_err(|e| e.to_string())?;
                    files.push(
                        PublishFile::json(output::ALERTS_PATH, &output::alerts(&alerts, now))
                            .pointer(),
                    );
                }
                Target::Collection(name) => {
                    if let Some(text) = self.db.collection(name).await.map_err(|e| e.to_string())? {
                        files.push(PublishFile::new(output::collection_path(name), text).pointer());
                    }
                }
            }
        }
        self.publisher
            .publish(files)
            .await
            .map_err(|e| e.to_string())?;
        for path in removed {
            self.publisher
                .store()
                .delete(&path)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `latest.json` (a pointer, written last) and archive pages `from_page..=last`.
    async fn blog_files(&self, slug: &str, from_page: i64, now: i64) -> Result<Vec<PublishFile>> {
        let blog = self.blog(slug).await?;
        let total = self.db.visible_count(slug, now).await?;
        let pages = output::pages(total);
        let mut files = Vec::new();
        for page in from_page.max(1)..=pages {
            let posts = self
                .db
                .archive(slug, now, (page - 1) * ARCHIVE_PAGE, ARCHIVE_PAGE)
                .await?;
            files.push(PublishFile::json(
                output::archive_path(slug, page),
                &output::archive(&blog, page, total, &posts),
            ));
        }
        let latest = self.db.latest(slug, now, LATEST_COUNT).await?;
        files.push(
            PublishFile::json(
                output::latest_path(slug),
                &output::latest(&blog, &latest, total),
            )
            .pointer(),
        );
        Ok(files)
    }

    /// Re-render and publish everything (`levee publish`).
    pub async fn publish_all(&self) -> std::result::Result<usize, String> {
        let now = self.now();
        let mut targets = vec![Target::Alerts];
        for blog in self.db.blogs().await.map_err(|e| e.to_string())? {
            for post in self
                .db
                .all_posts(&blog.slug, i64::MAX)
                .await
                .map_err(|e| e.to_string())?
            {
                if post.visible(now) {
                    targets.push(Target::Post {
                        slug: blog.slug.clone(),
                        id: post.id,
                    });
                }
            }
            targets.push(Target::Blog {
                slug: blog.slug,
                from_page: 1,
            });
        }
        for name in self.collections.keys() {
            targets.push(Target::Collection(name.clone()));
        }
        self.publish_now(&targets).await?;
        Ok(targets.len())
    }

    /// Until shutdown: publish scheduled posts and alert starts and ends at their time, and
    /// retry publishes that failed.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut checked = self.now();
        let mut retry = RETRY_FIRST;
        loop {
            let changed = self.changed.notified();
            let next = self.next_due(checked).await;
            let has_pending = self.publish_pending();
            let sleep_until = match next {
                Some(at) => self.clock.instant_at(at),
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            let retry_at = tokio::time::Instant::now() + retry;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changed, if !has_pending => {}
                () = tokio::time::sleep_until(sleep_until) => {}
                () = tokio::time::sleep_until(retry_at), if has_pending => {}
            }
            let now = self.now();
            let mut due = self.due(checked, now).await;
            checked = now;
            due.extend(std::mem::take(
                &mut *self.pending.lock().expect("pending lock"),
            ));
            if due.is_empty() {
                continue;
            }
            let targets: Vec<Target> = due.into_iter().collect();
            match self.publish_now(&targets).await {
                Ok(()) => retry = RETRY_FIRST,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduled or pending publish failed; will retry");
                    self.pending.lock().expect("pending lock").extend(targets);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// The next time after `after` at which something scheduled happens.
    async fn next_due(&self, after: i64) -> Option<i64> {
        let post = self
            .db
            .next_scheduled_post(after)
            .await
            .ok()
            .flatten()
            .map(|(at, _)| at);
        let alert = self.db.alerts().await.ok().and_then(|alerts| {
            alerts
                .iter()
                .flat_map(|a| [a.starts_at, a.ends_at])
                .flatten()
                .filter(|t| *t > after)
                .min()
        });
        [post, alert].into_iter().flatten().min()
    }

    /// What became due in `(after, now]`.
    async fn due(&self, after: i64, now: i64) -> BTreeSet<Target> {
        let mut due = BTreeSet::new();
        if let Ok(blogs) = self.db.blogs_due(after, now).await {
            for slug in blogs {
                // A scheduled post lands where its creation time puts it.
                due.insert(Target::Blog {
                    slug: slug.clone(),
                    from_page: 1,
                });
                if let Ok(posts) = self.db.all_posts(&slug, i64::MAX).await {
                    for p in posts
                        .iter()
                        .filter(|p| p.publish_at.is_some_and(|t| t > after && t <= now))
                    {
                        due.insert(Target::Post {
                            slug: slug.clone(),
                            id: p.id,
                        });
                    }
                }
            }
        }
        if let Ok(alerts) = self.db.alerts().await
            && alerts
                .iter()
                .flat_map(|a| [a.starts_at, a.ends_at])
                .flatten()
                .any(|t| t > after && t <= now)
        {
            due.insert(Target::Alerts);
        }
        due
    }
}

fn valid_slug(slug: &str) -> bool {
    (1..=100).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn required(value: Option<String>, field: &str) -> Result<String> {
    match value.map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(CmsError::Invalid(format!("{field} is required"))),
    }
}

fn status(s: &str) -> Result<String> {
    match s {
        "draft" | "published" => Ok(s.to_owned()),
        _ => Err(CmsError::Invalid(
            "status must be \"draft\" or \"published\"".into(),
        )),
    }
}

fn time(value: Option<&str>, field: &str) -> Result<Option<i64>> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => parse_rfc3339(text).map(Some).ok_or_else(|| {
            CmsError::Invalid(format!(
                "{field} must be an RFC 3339 time like 2026-11-03T20:00:00Z"
            ))
        }),
    }
}

fn apply_alert(alert: &mut Alert, input: AlertInput, creating: bool) -> Result<()> {
    if creating || input.message.is_some() {
        alert.message = required(input.message, "message")?;
    }
    if let Some(link) = input.link {
        alert.link = match link {
            Some(l) if !l.trim().is_empty() => {
                let l = l.trim().to_owned();
                if !(l.starts_with("https://") || l.starts_with("http://") || l.starts_with('/')) {
                    return Err(CmsError::Invalid(
                        "link must be an http(s) URL or a path".into(),
                    ));
                }
                Some(l)
            }
            _ => None,
        };
    }
    if let Some(severity) = input.severity {
        if !["info", "warning", "critical"].contains(&severity.as_str()) {
            return Err(CmsError::Invalid(
                "severity must be info, warning or critical".into(),
            ));
        }
        alert.severity = severity;
    }
    if let Some(at) = input.starts_at {
        alert.starts_at = time(at.as_deref(), "starts_at")?;
    }
    if let Some(at) = input.ends_at {
        alert.ends_at = time(at.as_deref(), "ends_at")?;
    }
    if let Some(states) = input.states {
        let states: Vec<String> = states
            .iter()
            .map(|s| s.trim().to_ascii_uppercase())
            .collect();
        if states
            .iter()
            .any(|s| s.len() != 2 || !s.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(CmsError::Invalid(
                "states must be two-letter codes like \"TN\"".into(),
            ));
        }
        alert.states = states;
    }
    if let (Some(start), Some(end)) = (alert.starts_at, alert.ends_at)
        && end <= start
    {
        return Err(CmsError::Invalid("ends_at must be after starts_at".into()));
    }
    Ok(())
}
