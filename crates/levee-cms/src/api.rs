//! The content API under `/v1/admin/`: the admin UI's actions for scripts and chat bots,
//! with the admin bearer token or a session (plus its CSRF token in `X-CSRF-Token`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post, put};
use axum::{Extension, Json, Router};
use levee_intake::ApiError;
use serde_json::{Value, json};

use crate::auth::{Actor, Auth, csrf_ok};
use crate::cms::{AlertInput, Cms, CmsError, NewBlog, PostInput};
use crate::output;

#[derive(Clone)]
pub struct ContentState {
    pub cms: Arc<Cms>,
    pub auth: Arc<Auth>,
}

pub fn router(state: ContentState) -> Router {
    Router::new()
        .route("/v1/admin/blogs", post(create_blog).get(list_blogs))
        .route(
            "/v1/admin/blogs/{slug}/posts",
            post(create_post).get(list_posts),
        )
        .route(
            "/v1/admin/blogs/{slug}/posts/{id}",
            patch(update_post).delete(delete_post).get(show_post),
        )
        .route("/v1/admin/alerts", post(create_alert).get(list_alerts))
        .route(
            "/v1/admin/alerts/{id}",
            patch(update_alert).delete(delete_alert),
        )
        .route(
            "/v1/admin/collections/{name}",
            put(put_collection).get(show_collection),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Bearer token or session; a session's unsafe requests must carry its CSRF token.
async fn authenticate(
    State(state): State<ContentState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(actor) = state.auth.actor(request.headers()) else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "content routes need Authorization: Bearer <LEVEE_ADMIN_TOKEN> or an admin session",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("header value"),
        );
        return response;
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let given = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok());
    if !safe && !csrf_ok(&actor, given) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong X-CSRF-Token",
        )
        .into_response();
    }
    request.extensions_mut().insert(actor);
    next.run(request).await
}

impl From<CmsError> for ApiError {
    fn from(e: CmsError) -> Self {
        match e {
            CmsError::NotFound(what) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            CmsError::Invalid(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why)
            }
            CmsError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "conflict", why),
            CmsError::Db(e) => {
                tracing::error!(error = %e, "CMS database error");
                ApiError::unavailable("the database is not answering; try again", 5)
            }
        }
    }
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text()))
}

fn id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}

async fn create_blog(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<NewBlog>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (blog, publish) = s.cms.create_blog(body(input)?, &actor.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "slug": blog.slug, "title": blog.title, "publish": publish })),
    ))
}

async fn list_blogs(State(s): State<ContentState>) -> Result<Json<Value>, ApiError> {
    let blogs = s.cms.db().blogs().await.map_err(CmsError::from)?;
    Ok(Json(json!({ "blogs": blogs })))
}

async fn create_post(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path(slug): Path<String>,
    input: Result<Json<PostInput>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (post, publish) = s.cms.create_post(&slug, body(input)?, &actor.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": post.id, "publish": publish })),
    ))
}

async fn list_posts(
    State(s): State<ContentState>,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.cms.blog(&slug).await?;
    let posts = s
        .cms
        .db()
        .all_posts(&slug, 1000)
        .await
        .map_err(CmsError::from)?;
    Ok(Json(json!({ "posts": posts })))
}

async fn show_post(
    State(s): State<ContentState>,
    Path((slug, post)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.cms.post(&slug, id(&post)?).await?)))
}

async fn update_post(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path((slug, post)): Path<(String, String)>,
    input: Result<Json<PostInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (post, publish) = s
        .cms
        .update_post(&slug, id(&post)?, body(input)?, &actor.name)
        .await?;
    Ok(Json(json!({ "id": post.id, "publish": publish })))
}

async fn delete_post(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path((slug, post)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let publish = s.cms.delete_post(&slug, id(&post)?, &actor.name).await?;
    Ok(Json(json!({ "deleted": true, "publish": publish })))
}

async fn create_alert(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    input: Result<Json<AlertInput>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let (alert, publish) = s.cms.create_alert(body(input)?, &actor.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": alert.id, "publish": publish })),
    ))
}

async fn list_alerts(State(s): State<ContentState>) -> Result<Json<Value>, ApiError> {
    let alerts = s.cms.db().alerts().await.map_err(CmsError::from)?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn update_alert(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path(alert): Path<String>,
    input: Result<Json<AlertInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (alert, publish) = s
        .cms
        .update_alert(id(&alert)?, body(input)?, &actor.name)
        .await?;
    Ok(Json(json!({ "id": alert.id, "publish": publish })))
}

async fn delete_alert(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path(alert): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let publish = s.cms.delete_alert(id(&alert)?, &actor.name).await?;
    Ok(Json(json!({ "deleted": true, "publish": publish })))
}

async fn put_collection(
    State(s): State<ContentState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    input: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let publish = s
        .cms
        .put_collection(&name, body(input)?, &actor.name)
        .await?;
    Ok(Json(
        json!({ "name": name, "path": output::collection_path(&name), "publish": publish }),
    ))
}

async fn show_collection(
    State(s): State<ContentState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let text = s.cms.db().collection(&name).await.map_err(CmsError::from)?;
    let document = text
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| ApiError::from(CmsError::NotFound(format!("collection {name}"))))?;
    Ok(Json(document))
}
