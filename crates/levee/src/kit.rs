//! The front-end kit, served by the static role: `/levee.js` (submit with an outbox, poll,
//! alerts, ZIP pre-fill, the delayed message; docs/levee-js.md) and, when no
//! `[static] site_dir` is configured, the demo page at `/`.
//!
//! Both files are inside the binary, so a node serves them with no store and no site. Each
//! is prepared once (ETag, gzip and brotli forms) on first use.

use std::sync::LazyLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use levee_store::{Effort, Encoding};

/// The kit's source, as pages load it.
pub const LEVEE_JS: &str = include_str!("../assets/levee.js");
/// The demo site's only page.
pub const DEMO_HTML: &str = include_str!("../assets/demo/index.html");

/// Short, so a new levee version reaches pages within minutes, and revalidated in the
/// background meanwhile.
const CACHE_CONTROL: &str = "public, max-age=300, stale-while-revalidate=86400";

/// One embedded file, ready to send.
struct Asset {
    identity: Bytes,
    gzip: Bytes,
    br: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(text: &'static str, content_type: &'static str) -> Asset {
        let identity = text.as_bytes();
        Asset {
            identity: Bytes::from_static(identity),
            gzip: Encoding::Gzip.compress(identity, Effort::Best).into(),
            br: Encoding::Brotli.compress(identity, Effort::Best).into(),
            content_type,
            etag: HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(identity)))
                .expect("hex is a header value"),
        }
    }

    /// 304 for a current copy, else the file in the best encoding the client takes.
    fn respond(&self, request: &HeaderMap) -> Response {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let current = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',').map(str::trim).any(|tag| {
                    tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
                })
            });
        if current {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        let accepted = levee_static::accepted(request);
        let (body, encoding) = if accepted.br {
            (&self.br, Some("br"))
        } else if accepted.gzip {
            (&self.gzip, Some("gzip"))
        } else {
            (&self.identity, None)
        };
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        // axum drops the body of a HEAD response and keeps this length.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = Body::from(body.clone());
        response
    }
}

/// A stable 64-bit hash for the ETag: the same bytes give the same tag on every node and
/// every build, so a rolling upgrade that leaves the file alone costs no re-download.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

static LEVEE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(LEVEE_JS, "text/javascript; charset=utf-8"));
static DEMO: LazyLock<Asset> = LazyLock::new(|| Asset::new(DEMO_HTML, "text/html; charset=utf-8"));

/// `/levee.js`, and the demo page at `/` unless a site is configured (its `index.html` is
/// then `/`, served by the static fallback).
pub fn router(demo: bool) -> Router {
    let router = Router::new().route(
        "/levee.js",
        get(|headers: HeaderMap| async move { LEVEE.respond(&headers) }),
    );
    if demo {
        router.route(
            "/",
            get(|headers: HeaderMap| async move { DEMO.respond(&headers) }),
        )
    } else {
        router
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    /// The issue's budget for the kit: at most 5 KB gzipped.
    const GZIP_BUDGET: usize = 5 * 1024;

    #[test]
    fn levee_js_is_at_most_5_kb_gzipped() {
        let gzipped = Encoding::Gzip.compress(LEVEE_JS.as_bytes(), Effort::Best);
        assert!(
            gzipped.len() <= GZIP_BUDGET,
            "levee.js is {} bytes gzipped, over the budget of {GZIP_BUDGET}",
            gzipped.len()
        );
    }

    async fn get_with(router: Router, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn serves_levee_js_with_etag_cache_control_and_gzip() {
        let plain = get_with(router(true), "/levee.js", &[]).await;
        assert_eq!(plain.status(), StatusCode::OK);
        let headers = plain.headers().clone();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("stale-while-revalidate")
        );
        assert!(headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body(plain).await, LEVEE_JS.as_bytes());

        let etag = headers[header::ETAG].to_str().unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "a strong ETag: {etag}"
        );
        let again = get_with(router(true), "/levee.js", &[("if-none-match", etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body(again).await.is_empty());

        let gzipped = get_with(router(true), "/levee.js", &[("accept-encoding", "gzip")]).await;
        assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
        let unzipped = Encoding::Gzip
            .decompress(&body(gzipped).await, 1 << 20)
            .unwrap();
        assert_eq!(unzipped, LEVEE_JS.as_bytes());

        let refused = get_with(
            router(true),
            "/levee.js",
            &[("accept-encoding", "gzip;q=0, br;q=0")],
        )
        .await;
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn the_demo_page_is_at_the_root_only_without_a_site() {
        let demo = get_with(router(true), "/", &[("accept-encoding", "br")]).await;
        assert_eq!(demo.status(), StatusCode::OK);
        assert_eq!(
            demo.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(demo.headers()[header::CONTENT_ENCODING], "br");
        let html = Encoding::Brotli
            .decompress(&body(demo).await, 1 << 20)
            .unwrap();
        assert_eq!(html, DEMO_HTML.as_bytes());

        let site = get_with(router(false), "/", &[]).await;
        assert_eq!(site.status(), StatusCode::NOT_FOUND);
        let kit = get_with(router(false), "/levee.js", &[]).await;
        assert_eq!(kit.status(), StatusCode::OK);
    }
}
