//! One servable file, with its response headers computed once.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::TryStreamExt;
use levee_store::{Effort, Encoding, Headers, compressible};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// What tells a new version of a file on disk from the one in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
}

/// Smallest file worth compressing.
const COMPRESS_MIN: usize = 256;
/// Largest file a stored gzip or brotli body may expand to in memory.
const DECODED_MAX: u64 = 64 * 1024 * 1024;

pub struct Entry {
    pub fingerprint: Fingerprint,
    body: Source,
    len: u64,
    modified: SystemTime,
    content_type: HeaderValue,
    cache_control: HeaderValue,
    etag: HeaderValue,
    last_modified: HeaderValue,
    /// JSON is read by pages on other origins.
    cors: bool,
}

enum Source {
    Memory {
        identity: Bytes,
        gzip: Option<Bytes>,
        br: Option<Bytes>,
    },
    /// Too large to keep: streamed from disk as stored.
    Disk {
        path: PathBuf,
        encoding: Option<HeaderValue>,
    },
}

impl Entry {
    pub fn load(
        full: &Path,
        path: &str,
        headers: Headers,
        fingerprint: Fingerprint,
        meta: &std::fs::Metadata,
        in_memory: bool,
    ) -> std::io::Result<Entry> {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let (body, len, etag) = if in_memory {
            let raw = std::fs::read(full)?;
            let identity = decode(raw, headers.content_encoding.as_deref())?;
            let digest = Sha256::digest(&identity);
            let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            let worth = compressible(&headers.content_type) && identity.len() >= COMPRESS_MIN;
            let smaller = |c: Vec<u8>| (c.len() < identity.len()).then(|| Bytes::from(c));
            let gzip = worth
                .then(|| smaller(Encoding::Gzip.compress(&identity, Effort::Fast)))
                .flatten();
            let br = worth
                .then(|| smaller(Encoding::Brotli.compress(&identity, Effort::Fast)))
                .flatten();
            let len = identity.len() as u64;
            let source = Source::Memory {
                identity: Bytes::from(identity),
                gzip,
                br,
            };
            (source, len, etag)
        } else {
            let etag = format!(
                "{:x}-{:x}-{:x}{:x}",
                fingerprint.ino, fingerprint.len, fingerprint.mtime.0, fingerprint.mtime.1
            );
            let source = Source::Disk {
                path: full.to_owned(),
                encoding: headers
                    .content_encoding
                    .as_deref()
                    .and_then(|e| HeaderValue::from_str(e).ok()),
            };
            (source, fingerprint.len, etag)
        };
        let value = |s: &str, fallback: &'static str| {
            HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(fallback))
        };
        Ok(Entry {
            fingerprint,
            body,
            len,
            modified,
            content_type: value(&headers.content_type, "application/octet-stream"),
            cache_control: value(&headers.cache_control, levee_store::CHANGING),
            etag: HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex is a header value"),
            last_modified: value(&httpdate::fmt_http_date(modified), ""),
            cors: path.ends_with(".json") || path.ends_with(".geojson"),
        })
    }

    /// Bytes this entry holds in memory.
    pub fn memory(&self) -> usize {
        match &self.body {
            Source::Memory { identity, gzip, br } => {
                identity.len()
                    + gzip.as_ref().map_or(0, Bytes::len)
                    + br.as_ref().map_or(0, Bytes::len)
            }
            Source::Disk { .. } => 0,
        }
    }

    /// The response to a GET or HEAD for this file: 304 when the client's copy is
    /// current, 206/416 for a range, else the whole file in the best encoding the client
    /// takes. `error_page` skips conditionals and ranges.
    pub fn respond(&self, method: &Method, request: &HeaderMap, error_page: bool) -> Response {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::LAST_MODIFIED, self.last_modified.clone());
        headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
        if self.cors {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            // So a script on another origin can read the ETag.
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("ETag"),
            );
        }
        let compressed =
            matches!(&self.body, Source::Memory { gzip, br, .. } if gzip.is_some() || br.is_some());
        if compressed {
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if !error_page && self.not_modified(request) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let head = method == Method::HEAD;
        let range = if error_page {
            None
        } else {
            self.range(request)
        };
        match (&self.body, range) {
            (_, Some(Err(()))) => {
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{}", self.len)).expect("ascii"),
                );
                headers.remove(header::CONTENT_TYPE);
                response
            }
            (source, Some(Ok((start, end)))) => {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {start}-{end}/{}", self.len))
                        .expect("ascii"),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
                if !head {
                    *response.body_mut() = match source {
                        Source::Memory { identity, .. } => {
                            Body::from(identity.slice(start as usize..=end as usize))
                        }
                        Source::Disk { path, .. } => {
                            disk_body(path.clone(), start, end - start + 1)
                        }
                    };
                }
                response
            }
            (Source::Memory { identity, gzip, br }, None) => {
                let accepted = accepted(request);
                let (bytes, encoding) = match (br, gzip) {
                    (Some(br), _) if accepted.br => (br, Some("br")),
                    (_, Some(gz)) if accepted.gzip => (gz, Some("gzip")),
                    _ => (identity, None),
                };
                let headers = response.headers_mut();
                if let Some(encoding) = encoding {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                if !head {
                    *response.body_mut() = Body::from(bytes.clone());
                }
                response
            }
            (Source::Disk { path, encoding }, None) => {
                let headers = response.headers_mut();
                if let Some(encoding) = encoding {
                    headers.insert(header::CONTENT_ENCODING, encoding.clone());
                }
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.len));
                if !head {
                    *response.body_mut() = disk_body(path.clone(), 0, self.len);
                }
                response
            }
        }
    }

    /// If-None-Match decides when present; else If-Modified-Since.
    fn not_modified(&self, request: &HeaderMap) -> bool {
        if let Some(inm) = request.get(header::IF_NONE_MATCH) {
            let Ok(inm) = inm.to_str() else {
                return false;
            };
            let ours = self.etag.as_bytes();
            return inm.split(',').map(str::trim).any(|tag| {
                tag == "*"
                    || tag.as_bytes() == ours
                    || tag.strip_prefix("W/").map(str::as_bytes) == Some(ours)
            });
        }
        request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| {
                let modified = httpdate::parse_http_date(&httpdate::fmt_http_date(self.modified))
                    .unwrap_or(self.modified);
                modified <= since
            })
    }

    /// A single `bytes=` range: `Some(Ok((first, last)))`, `Some(Err(()))` when it cannot
    /// be satisfied, `None` to send the whole file (no range, several ranges, an If-Range
    /// for another version, or a stored encoding that ranges cannot cut).
    fn range(&self, request: &HeaderMap) -> Option<Result<(u64, u64), ()>> {
        let spec = request.get(header::RANGE)?.to_str().ok()?;
        if let Some(if_range) = request.get(header::IF_RANGE)
            && if_range != self.etag
        {
            return None;
        }
        if matches!(
            &self.body,
            Source::Disk {
                encoding: Some(_),
                ..
            }
        ) {
            return None;
        }
        let spec = spec.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        let len = self.len;
        let range = if first.is_empty() {
            let suffix: u64 = last.parse().ok()?;
            if suffix == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(suffix), len - 1)
        } else {
            let first: u64 = first.parse().ok()?;
            let last: u64 = if last.is_empty() {
                u64::MAX
            } else {
                last.parse().ok()?
            };
            if last < first {
                return None;
            }
            if first >= len {
                return Some(Err(()));
            }
            (first, last.min(len - 1))
        };
        Some(Ok(range))
    }
}

/// The compressions a client takes.
pub struct Accepted {
    pub gzip: bool,
    pub br: bool,
}

/// Which compressions the client takes, by `Accept-Encoding` (`q=0` means no).
pub fn accepted(request: &HeaderMap) -> Accepted {
    let mut accepted = Accepted {
        gzip: false,
        br: false,
    };
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            if refused {
                continue;
            }
            if coding.eq_ignore_ascii_case("gzip") {
                accepted.gzip = true;
            } else if coding.eq_ignore_ascii_case("br") {
                accepted.br = true;
            }
        }
    }
    accepted
}

/// The plain bytes of a file stored compressed.
fn decode(raw: Vec<u8>, encoding: Option<&str>) -> std::io::Result<Vec<u8>> {
    match encoding.and_then(Encoding::from_name) {
        Some(encoding) => encoding.decompress(&raw, DECODED_MAX),
        None => Ok(raw),
    }
}

/// `len` bytes of the file at `path` from `start`, read as the client takes them.
fn disk_body(path: PathBuf, start: u64, len: u64) -> Body {
    let stream = futures::stream::once(async move {
        let mut file = tokio::fs::File::open(&path).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::new(file.take(len)))
    })
    .try_flatten();
    Body::from_stream(stream)
}
