//! The admin web UI at `/admin`: server-rendered pages (minijinja) that work on a phone,
//! behind a login. Every form carries the session's CSRF token; editors manage content,
//! admins also users and pause/resume.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::{Environment, context};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{self, Actor, Auth, Role};
use crate::cms::{AlertInput, Cms, CmsError, NewBlog, PostInput};
use crate::db::{Post, User};
use crate::render::markdown_to_html;
use levee_jobs::Jobs;
use levee_publish::clock::{parse_rfc3339, rfc3339};

/// Pause and resume, for admins: the binary connects this to the workers' control.
pub trait Streams: Send + Sync {
    /// Each stream: name, paused, the operator's message.
    fn list(&self) -> Vec<(String, bool, Option<String>)>;
    fn pause(&self, stream: &str, message: Option<String>) -> Result<(), String>;
    fn resume(&self, stream: &str) -> Result<(), String>;
}

#[derive(Clone)]
pub struct UiState {
    pub cms: Arc<Cms>,
    pub auth: Arc<Auth>,
    pub streams: Option<Arc<dyn Streams>>,
    pub jobs: Option<Arc<Jobs>>,
    templates: Arc<Environment<'static>>,
}

impl UiState {
    pub fn new(cms: Arc<Cms>, auth: Arc<Auth>, streams: Option<Arc<dyn Streams>>) -> UiState {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("login.html", include_str!("../templates/login.html")),
            (
                "dashboard.html",
                include_str!("../templates/dashboard.html"),
            ),
            ("blog.html", include_str!("../templates/blog.html")),
            (
                "post_form.html",
                include_str!("../templates/post_form.html"),
            ),
            ("post.html", include_str!("../templates/post.html")),
            ("preview.html", include_str!("../templates/preview.html")),
            ("alerts.html", include_str!("../templates/alerts.html")),
            (
                "collection.html",
                include_str!("../templates/collection.html"),
            ),
            ("users.html", include_str!("../templates/users.html")),
            ("streams.html", include_str!("../templates/streams.html")),
            ("jobs.html", include_str!("../templates/jobs.html")),
            ("audit.html", include_str!("../templates/audit.html")),
        ] {
            env.add_template(name, source).expect("templates parse");
        }
        UiState {
            cms,
            auth,
            streams,
            jobs: None,
            templates: Arc::new(env),
        }
    }

    /// Show these scheduled jobs' recent runs, and let admins run one now.
    pub fn with_jobs(mut self, jobs: Arc<Jobs>) -> UiState {
        self.jobs = Some(jobs);
        self
    }

    fn page(&self, name: &str, actor: Option<&Actor>, ctx: minijinja::Value) -> Response {
        let user = actor.map(|a| context! { name => a.name.clone(), role => a.role.as_str() });
        let collections: Vec<String> = self.cms.collection_names().map(str::to_owned).collect();
        let base = context! {
            user,
            csrf => actor.and_then(|a| a.csrf.clone()),
            pending => self.cms.publish_pending(),
            collections,
        };
        let rendered = self
            .templates
            .get_template(name)
            .and_then(|t| t.render(context! { ..ctx, ..base }));
        match rendered {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template = name, "template failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
            }
        }
    }
}

pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/", get(|| async { Redirect::to("/admin") }))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/setup", get(setup_page).post(setup))
        .route("/admin/blogs", post(create_blog))
        .route("/admin/blogs/{slug}", get(blog_page))
        .route("/admin/blogs/{slug}/posts", post(create_post))
        .route(
            "/admin/blogs/{slug}/posts/{id}",
            get(post_page).post(update_post),
        )
        .route("/admin/blogs/{slug}/posts/{id}/delete", post(delete_post))
        .route("/admin/alerts", get(alerts_page).post(create_alert))
        .route("/admin/alerts/{id}/delete", post(delete_alert))
        .route(
            "/admin/collections/{name}",
            get(collection_page).post(save_collection),
        )
        .route("/admin/users", get(users_page).post(save_user))
        .route("/admin/streams", get(streams_page))
        .route("/admin/streams/{name}/{action}", post(stream_action))
        .route("/admin/jobs", get(jobs_page))
        .route("/admin/jobs/{name}/run", post(job_run))
        .route("/admin/audit", get(audit_page))
        .with_state(state)
}

/// A template value from anything serializable.
fn v<T: serde::Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// Why a request may not go on.
enum Denied {
    /// No session: to the login page.
    Login,
    /// A session, but not this: 403.
    Forbidden(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Login => Redirect::to("/admin/login").into_response(),
            Denied::Forbidden(why) => (StatusCode::FORBIDDEN, why).into_response(),
        }
    }
}

/// The session's actor, or a redirect to the login page.
fn signed_in(state: &UiState, headers: &HeaderMap) -> Result<Actor, Denied> {
    match state.auth.actor(headers) {
        Some(actor) if actor.csrf.is_some() => Ok(actor),
        _ => Err(Denied::Login),
    }
}

/// As [`signed_in`], for a form post: its CSRF token must match (403 if not).
fn form_actor(state: &UiState, headers: &HeaderMap, csrf: &str) -> Result<Actor, Denied> {
    let actor = signed_in(state, headers)?;
    if !auth::csrf_ok(&actor, Some(csrf)) {
        return Err(Denied::Forbidden(
            "the form is stale or forged (CSRF token); reload the page",
        ));
    }
    Ok(actor)
}

fn admin_only(actor: &Actor) -> Result<(), Denied> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(Denied::Forbidden("admins only"))
    }
}

fn cms_error(state: &UiState, actor: &Actor, e: CmsError) -> Response {
    let status = match e {
        CmsError::NotFound(_) => StatusCode::NOT_FOUND,
        CmsError::Invalid(_) | CmsError::Conflict(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CmsError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut page = state.page(
        "dashboard.html",
        Some(actor),
        context! { error => e.to_string(), blogs => v(&Vec::<Value>::new()) },
    );
    *page.status_mut() = status;
    page
}

// Login

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login_page(State(s): State<UiState>) -> Response {
    s.page("login.html", None, context! {})
}

async fn login(
    State(s): State<UiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !s.auth.may_try_login(peer.ip()) {
        let mut page = s.page(
            "login.html",
            None,
            context! { error => "Too many attempts; wait a minute." },
        );
        *page.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return page;
    }
    let user = s.cms.db().user(&form.name).await.ok().flatten();
    let role = user
        .filter(|u| auth::verify_password(&form.password, &u.password_hash))
        .and_then(|u| Role::parse(&u.role));
    let Some(role) = role else {
        let mut page = s.page(
            "login.html",
            None,
            context! { error => "Wrong name or password." },
        );
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    };
    let token = s.auth.start_session(&form.name, role);
    let _ = s.cms.db().audit(s.cms.now(), &form.name, "login", "").await;
    let cookie = auth::session_cookie(&token, auth::is_tls(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if form_actor(&s, &headers, &form.csrf).is_ok() {
        s.auth.end_session(&headers);
    }
    (
        [(header::SET_COOKIE, auth::clear_cookie())],
        Redirect::to("/admin/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SetupQuery {
    #[serde(default)]
    token: String,
}

async fn setup_page(State(s): State<UiState>, Query(q): Query<SetupQuery>) -> Response {
    if !s.auth.setup_open(&q.token) {
        return (StatusCode::NOT_FOUND, "this setup link is used or wrong").into_response();
    }
    s.page("login.html", None, context! { setup => q.token })
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    name: String,
    password: String,
}

async fn setup(
    State(s): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Response {
    if form.name.trim().is_empty() || form.password.len() < 8 {
        return s.page("login.html", None, context! { setup => form.token, error => "A name and a password of 8 characters or more, please." });
    }
    if !s.auth.take_setup_token(&form.token) {
        return (StatusCode::NOT_FOUND, "this setup link is used or wrong").into_response();
    }
    let user = User {
        name: form.name.trim().to_owned(),
        role: "admin".into(),
        password_hash: auth::hash_password(&form.password),
    };
    if let Err(e) = s.cms.db().upsert_user(&user, s.cms.now()).await {
        tracing::error!(error = %e, "cannot create the first user");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not answering",
        )
            .into_response();
    }
    let token = s.auth.start_session(&user.name, Role::Admin);
    let cookie = auth::session_cookie(&token, auth::is_tls(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
}

// Blogs and posts

async fn dashboard(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let blogs = s.cms.db().blogs().await.unwrap_or_default();
    s.page(
        "dashboard.html",
        Some(&actor),
        context! { blogs => v(&blogs) },
    )
}

#[derive(Deserialize)]
struct BlogForm {
    csrf: String,
    slug: String,
    title: String,
}

async fn create_blog(
    State(s): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<BlogForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match s
        .cms
        .create_blog(
            NewBlog {
                slug: form.slug,
                title: form.title,
            },
            &actor.name,
        )
        .await
    {
        Ok((blog, _)) => Redirect::to(&format!("/admin/blogs/{}", blog.slug)).into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

/// A post as the form shows it.
fn post_view(p: &Post) -> Value {
    let mut v = serde_json::to_value(p).expect("posts serialize");
    v["publish_at_text"] = p.publish_at.map(rfc3339).into();
    v["publish_at_input"] = p
        .publish_at
        .map(|t| {
            rfc3339(t)
                .trim_end_matches('Z')
                .chars()
                .take(16)
                .collect::<String>()
        })
        .into();
    v
}

async fn blog_page(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    let actor = match signed_in(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let blog = match s.cms.blog(&slug).await {
        Ok(b) => b,
        Err(e) => return cms_error(&s, &actor, e),
    };
    let posts: Vec<Value> = s
        .cms
        .db()
        .all_posts(&slug, 200)
        .await
        .unwrap_or_default()
        .iter()
        .map(post_view)
        .collect();
    let action = format!("/admin/blogs/{slug}/posts");
    s.page("blog.html", Some(&actor), context! { blog => v(&blog), posts => v(&posts), action, post => context! { status => "published" } })
}

#[derive(Deserialize)]
struct PostForm {
    csrf: String,
    title: String,
    body_markdown: String,
    #[serde(default)]
    pinned: Option<String>,
    status: String,
    #[serde(default)]
    publish_at: String,
    #[serde(default)]
    action: String,
}

impl PostForm {
    fn input(self) -> PostInput {
        PostInput {
            title: Some(self.title),
            body_markdown: Some(self.body_markdown),
            pinned: Some(self.pinned.is_some()),
            status: Some(self.status),
            publish_at: Some(form_time(&self.publish_at)),
        }
    }
}

/// A `datetime-local` value (taken as UTC) as RFC 3339; empty for none.
fn form_time(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let with_seconds = if value.len() == 16 {
        format!("{value}:00")
    } else {
        value.to_owned()
    };
    let text = format!("{with_seconds}Z");
    Some(if parse_rfc3339(&text).is_some() {
        text
    } else {
        value.to_owned()
    })
}

fn preview(s: &UiState, actor: &Actor, form: &PostForm) -> Response {
    s.page(
        "preview.html",
        Some(actor),
        context! { title => form.title.clone(), body_html => markdown_to_html(&form.body_markdown) },
    )
}

async fn create_post(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Form(form): Form<PostForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if form.action == "preview" {
        return preview(&s, &actor, &form);
    }
    match s.cms.create_post(&slug, form.input(), &actor.name).await {
        Ok(_) => Redirect::to(&format!("/admin/blogs/{slug}")).into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

async fn post_page(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path((slug, id)): Path<(String, i64)>,
) -> Response {
    let actor = match signed_in(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (blog, post) = match (s.cms.blog(&slug).await, s.cms.post(&slug, id).await) {
        (Ok(b), Ok(p)) => (b, p),
        (Err(e), _) | (_, Err(e)) => return cms_error(&s, &actor, e),
    };
    let action = format!("/admin/blogs/{slug}/posts/{id}");
    s.page(
        "post.html",
        Some(&actor),
        context! { blog => v(&blog), post => v(&post_view(&post)), action },
    )
}

async fn update_post(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path((slug, id)): Path<(String, i64)>,
    Form(form): Form<PostForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if form.action == "preview" {
        return preview(&s, &actor, &form);
    }
    match s
        .cms
        .update_post(&slug, id, form.input(), &actor.name)
        .await
    {
        Ok(_) => Redirect::to(&format!("/admin/blogs/{slug}")).into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

async fn delete_post(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path((slug, id)): Path<(String, i64)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match s.cms.delete_post(&slug, id, &actor.name).await {
        Ok(_) => Redirect::to(&format!("/admin/blogs/{slug}")).into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

// Alerts and collections

async fn alerts_page(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let alerts: Vec<Value> = s
        .cms
        .db()
        .alerts()
        .await
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).expect("alerts serialize");
            let from = a.starts_at.map(rfc3339).unwrap_or_else(|| "now".into());
            let to = a
                .ends_at
                .map(rfc3339)
                .unwrap_or_else(|| "until deleted".into());
            v["window"] = format!("{from} → {to}").into();
            v
        })
        .collect();
    s.page(
        "alerts.html",
        Some(&actor),
        context! { alerts => v(&alerts) },
    )
}

#[derive(Deserialize)]
struct AlertForm {
    csrf: String,
    message: String,
    #[serde(default)]
    link: String,
    severity: String,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default)]
    states: String,
}

async fn create_alert(
    State(s): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<AlertForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let input = AlertInput {
        message: Some(form.message),
        link: Some(Some(form.link)),
        severity: Some(form.severity),
        starts_at: Some(form_time(&form.starts_at)),
        ends_at: Some(form_time(&form.ends_at)),
        states: Some(
            form.states
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    };
    match s.cms.create_alert(input, &actor.name).await {
        Ok(_) => Redirect::to("/admin/alerts").into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

async fn delete_alert(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match s.cms.delete_alert(id, &actor.name).await {
        Ok(_) => Redirect::to("/admin/alerts").into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

async fn collection_page(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let actor = match signed_in(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if !s.cms.collection_names().any(|n| n == name) {
        return cms_error(&s, &actor, CmsError::NotFound(format!("collection {name}")));
    }
    let document = s
        .cms
        .db()
        .collection(&name)
        .await
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| serde_json::to_string_pretty(&v).expect("JSON serializes"))
        .unwrap_or_else(|| "{}".into());
    s.page("collection.html", Some(&actor), context! { name, document })
}

#[derive(Deserialize)]
struct CollectionForm {
    csrf: String,
    document: String,
}

async fn save_collection(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CollectionForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let document = match serde_json::from_str::<Value>(&form.document) {
        Ok(d) => d,
        Err(e) => return cms_error(&s, &actor, CmsError::Invalid(format!("not JSON: {e}"))),
    };
    match s.cms.put_collection(&name, document, &actor.name).await {
        Ok(_) => Redirect::to(&format!("/admin/collections/{name}")).into_response(),
        Err(e) => cms_error(&s, &actor, e),
    }
}

// Admins: users, streams, audit

async fn users_page(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers).and_then(|a| admin_only(&a).map(|()| a)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let users = s.cms.db().users().await.unwrap_or_default();
    s.page("users.html", Some(&actor), context! { users => v(&users) })
}

#[derive(Deserialize)]
struct UserForm {
    csrf: String,
    name: String,
    password: String,
    role: String,
}

async fn save_user(
    State(s): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<UserForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf).and_then(|a| admin_only(&a).map(|()| a))
    {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    if Role::parse(&form.role).is_none() || form.password.len() < 8 || form.name.trim().is_empty() {
        return cms_error(
            &s,
            &actor,
            CmsError::Invalid("a name, a role and a password of 8 characters or more".into()),
        );
    }
    let user = User {
        name: form.name.trim().to_owned(),
        role: form.role,
        password_hash: auth::hash_password(&form.password),
    };
    if let Err(e) = s.cms.db().upsert_user(&user, s.cms.now()).await {
        return cms_error(&s, &actor, e.into());
    }
    let _ = s
        .cms
        .db()
        .audit(s.cms.now(), &actor.name, "user.save", &user.name)
        .await;
    Redirect::to("/admin/users").into_response()
}

async fn streams_page(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers).and_then(|a| admin_only(&a).map(|()| a)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let streams: Vec<Value> = s
        .streams
        .as_ref()
        .map(|st| st.list())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, paused, message)| serde_json::json!({ "name": name, "paused": paused, "message": message }))
        .collect();
    s.page(
        "streams.html",
        Some(&actor),
        context! { streams => v(&streams) },
    )
}

#[derive(Deserialize)]
struct StreamForm {
    csrf: String,
    #[serde(default)]
    message: String,
}

async fn stream_action(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<StreamForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf).and_then(|a| admin_only(&a).map(|()| a))
    {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let Some(streams) = &s.streams else {
        return (StatusCode::NOT_FOUND, "no streams on this node").into_response();
    };
    let message = Some(form.message.trim().to_owned()).filter(|m| !m.is_empty());
    let result = match action.as_str() {
        "pause" => streams.pause(&name, message),
        "resume" => streams.resume(&name),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if let Err(e) = result {
        return cms_error(&s, &actor, CmsError::Invalid(e));
    }
    let _ = s
        .cms
        .db()
        .audit(s.cms.now(), &actor.name, &format!("stream.{action}"), &name)
        .await;
    Redirect::to("/admin/streams").into_response()
}

async fn jobs_page(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers).and_then(|a| admin_only(&a).map(|()| a)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let status = s.jobs.as_ref().map(|j| j.status());
    s.page("jobs.html", Some(&actor), context! { status => v(&status) })
}

async fn job_run(
    State(s): State<UiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let actor = match form_actor(&s, &headers, &form.csrf).and_then(|a| admin_only(&a).map(|()| a))
    {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let Some(jobs) = &s.jobs else {
        return (StatusCode::NOT_FOUND, "no jobs on this node").into_response();
    };
    if let Err(e) = jobs.run_now(&name).await {
        return cms_error(&s, &actor, CmsError::Invalid(e.to_string()));
    }
    let _ = s
        .cms
        .db()
        .audit(s.cms.now(), &actor.name, "job.run", &name)
        .await;
    Redirect::to("/admin/jobs").into_response()
}

async fn audit_page(State(s): State<UiState>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&s, &headers).and_then(|a| admin_only(&a).map(|()| a)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let entries: Vec<Value> = s
        .cms
        .db()
        .audit_log(200)
        .await
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).expect("audit serializes");
            v["at_text"] = rfc3339(e.at).into();
            v
        })
        .collect();
    s.page(
        "audit.html",
        Some(&actor),
        context! { entries => v(&entries) },
    )
}
