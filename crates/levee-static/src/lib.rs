//! The static server (the `static` role): serves the local store, then a site folder, at
//! `/`, the way a CDN edge would.
//!
//! Files up to [`CACHE_FILE_MAX`] are kept in memory with every header computed and their
//! gzip and brotli forms made once, so a hit costs one `stat` (to notice a new version) and
//! a map lookup. Larger files are streamed from disk. Nothing outside the roots is ever
//! served: request paths are decoded once and checked segment by segment, hidden files
//! (`.levee/`, `.git`) are refused, and a file is only opened after its real path (symlinks
//! resolved) is found inside its root.

mod entry;
mod request;

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use levee_store::CacheRules;

pub use entry::{Accepted, accepted};
use entry::{Entry, Fingerprint};

/// Largest file kept in memory.
pub const CACHE_FILE_MAX: u64 = 1024 * 1024;

/// What to serve.
#[derive(Debug, Clone, Default)]
pub struct StaticOptions {
    /// The local store's folder: files carry the headers they were published with.
    pub store: Option<PathBuf>,
    /// A built site, served after the store.
    pub site: Option<PathBuf>,
    /// The page served with 404s (a path in the store or site); default `404.html`.
    pub not_found: Option<String>,
    /// Cache-Control for site files (store files carry their own).
    pub rules: CacheRules,
    /// Memory for cached files. Default 256 MiB.
    pub cache_bytes: Option<usize>,
}

/// The static server's state: its roots and the in-memory files.
pub struct StaticFiles {
    roots: Vec<Root>,
    not_found: String,
    rules: CacheRules,
    cache_budget: usize,
    cached: AtomicUsize,
}

struct Root {
    dir: PathBuf,
    /// A store keeps headers in `.levee/headers/`; a site folder has none.
    is_store: bool,
    files: DashMap<String, Arc<Entry>>,
}

impl StaticFiles {
    pub fn new(options: StaticOptions) -> std::io::Result<StaticFiles> {
        let mut roots = Vec::new();
        for (dir, is_store) in [(options.store, true), (options.site, false)] {
            if let Some(dir) = dir {
                std::fs::create_dir_all(&dir)?;
                roots.push(Root {
                    dir: std::fs::canonicalize(&dir)?,
                    is_store,
                    files: DashMap::new(),
                });
            }
        }
        Ok(StaticFiles {
            roots,
            not_found: options.not_found.unwrap_or_else(|| "404.html".to_owned()),
            rules: options.rules,
            cache_budget: options.cache_bytes.unwrap_or(256 * 1024 * 1024),
            cached: AtomicUsize::new(0),
        })
    }

    /// The file at a checked relative path, from memory when it is unchanged on disk.
    fn find(&self, path: &str) -> Found {
        for root in &self.roots {
            let full = root.dir.join(path);
            let meta = match std::fs::metadata(&full) {
                Ok(meta) => meta,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot stat a static file");
                    continue;
                }
            };
            if meta.is_dir() {
                return Found::Directory;
            }
            let fingerprint = Fingerprint {
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ino: meta.ino(),
            };
            if let Some(entry) = root.files.get(path)
                && entry.fingerprint == fingerprint
            {
                return Found::File(entry.clone());
            }
            // A symlink may lead out of the root: only its real path counts.
            match std::fs::canonicalize(&full) {
                Ok(real) if real.starts_with(&root.dir) => {}
                _ => {
                    tracing::warn!(path, "refused: the file resolves outside its root");
                    return Found::Missing;
                }
            }
            let headers = if root.is_store {
                levee_store::local_headers(&root.dir, path)
            } else {
                None
            }
            .unwrap_or_else(|| self.rules.headers(path));
            let cacheable = fingerprint.len <= CACHE_FILE_MAX;
            let entry = match Entry::load(&full, path, headers, fingerprint, &meta, cacheable) {
                Ok(entry) => Arc::new(entry),
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot read a static file");
                    return Found::Missing;
                }
            };
            if cacheable {
                let size = entry.memory();
                if self.cached.load(Ordering::Relaxed) + size <= self.cache_budget {
                    self.cached.fetch_add(size, Ordering::Relaxed);
                    if let Some(old) = root.files.insert(path.to_owned(), entry.clone()) {
                        self.cached.fetch_sub(old.memory(), Ordering::Relaxed);
                    }
                }
            }
            return Found::File(entry);
        }
        Found::Missing
    }

    fn not_found(&self, method: &Method, headers: &HeaderMap) -> Response {
        if let Found::File(entry) = self.find(&self.not_found) {
            let mut response = entry.respond(method, headers, true);
            *response.status_mut() = StatusCode::NOT_FOUND;
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            return response;
        }
        (StatusCode::NOT_FOUND, "404 Not Found\n").into_response()
    }
}

enum Found {
    File(Arc<Entry>),
    Directory,
    Missing,
}

/// A router that serves every GET and HEAD it gets from the roots: mount it as the
/// fallback, after the API routes.
pub fn router(files: Arc<StaticFiles>) -> Router {
    Router::new().fallback(serve).with_state(files)
}

/// Serve one request.
pub async fn serve(State(files): State<Arc<StaticFiles>>, request: Request<Body>) -> Response {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "405 Method Not Allowed\n",
        )
            .into_response();
    }
    let uri = request.uri();
    let path = match request::decode(uri.path()) {
        Ok(path) => path,
        Err(request::Refused::Malformed) => {
            return (StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response();
        }
        Err(request::Refused::Hidden) => return files.not_found(method, request.headers()),
    };
    match files.find(&path) {
        Found::File(entry) => entry.respond(method, request.headers(), false),
        Found::Directory => {
            let location = match uri.query() {
                Some(q) => format!("{}/?{q}", uri.path()),
                None => format!("{}/", uri.path()),
            };
            (
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response()
        }
        Found::Missing => files.not_found(method, request.headers()),
    }
}
