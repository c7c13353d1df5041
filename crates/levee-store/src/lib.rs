//! The store: where public files live, a local folder (`file://…`, served by levee's
//! static server) or S3 (`s3://bucket/prefix`, behind a CDN), both through object_store.
//!
//! Every file is stored with its [`Headers`]. S3 keeps them as object attributes; the local
//! store keeps them in a sidecar under `.levee/headers/`, written before the file itself,
//! so a reader never finds a file whose headers are older than it. `.levee/` is levee's own
//! corner of every store: listings skip it and the static server never serves it.

pub mod encoding;
mod headers;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, GetOptions, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload, RetryConfig,
};

pub use encoding::{Effort, Encoding};
pub use headers::{CHANGING, CacheRules, Headers, IMMUTABLE, compressible, content_type};

/// Where levee keeps its own files inside a store.
pub const INTERNAL_PREFIX: &str = ".levee/";
const HEADERS_PREFIX: &str = ".levee/headers/";
const SHA256_KEY: &str = "levee-sha256";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: {1}")]
    Url(String, String),
    #[error("{0:?} is not a valid store path: {1}")]
    Path(String, &'static str),
    #[error("{0}")]
    Backend(#[from] object_store::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How to reach a store.
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    /// `file:///abs/dir`, `file://relative/dir`, a plain directory, or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible endpoint; default `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: Option<String>,
    /// Default `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Credentials; default the usual AWS environment variables and profiles.
    pub access_key: Option<(String, String)>,
}

/// A file in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    /// The store's version tag: S3's ETag, or the local file's inode, size and mtime. It
    /// changes whenever the file is rewritten.
    pub e_tag: Option<String>,
}

/// A stored file.
#[derive(Debug, Clone)]
pub struct Stored {
    pub body: Bytes,
    /// `None` for a file written by something other than levee.
    pub headers: Option<Headers>,
    /// The SHA-256 levee recorded when it wrote the file, if it did.
    pub sha256: Option<String>,
    pub e_tag: Option<String>,
}

/// A local folder or an S3 bucket, holding published files.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Key prefix inside the bucket (`""` or ending in `/`).
    prefix: String,
    local_root: Option<PathBuf>,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Store {
    /// Open the store at `settings.url`; a local folder is created if missing.
    pub fn open(settings: &StoreSettings) -> Result<Store> {
        let url = settings.url.as_str();
        let bad = |why: &str| StoreError::Url(url.to_owned(), why.to_owned());
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket"));
            }
            let prefix = prefix.trim_matches('/');
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(20),
                });
            let endpoint = settings
                .endpoint
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint);
            }
            let region = settings
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_owned());
            builder = builder.with_region(region);
            if let Some((key, secret)) = &settings.access_key {
                builder = builder
                    .with_access_key_id(key)
                    .with_secret_access_key(secret);
            }
            let objects = builder.build().map_err(|e| bad(&e.to_string()))?;
            return Ok(Store {
                objects: Arc::new(objects),
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                },
                local_root: None,
                url: url.to_owned(),
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        if dir.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(bad(
                "must be file://DIR, a directory, or s3://bucket/prefix",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.into(),
            source,
        })?;
        let root = std::fs::canonicalize(dir).map_err(|source| StoreError::Io {
            path: dir.into(),
            source,
        })?;
        let objects = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Store {
            objects: Arc::new(objects),
            prefix: String::new(),
            local_root: Some(root),
            url: url.to_owned(),
        })
    }

    /// The folder of a local store, for the static server.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, path: &str) -> Result<ObjectPath> {
        check_path(path)?;
        Ok(ObjectPath::from(format!("{}{path}", self.prefix)))
    }

    /// Write `body` at `path` with its headers; `sha256` (hex, of `body`) is kept with it
    /// so later publishes can tell an unchanged file. Replaces the file atomically: a reader
    /// sees the old bytes or the new, never part of either. Returns the new version tag.
    pub async fn put(
        &self,
        path: &str,
        body: Bytes,
        headers: &Headers,
        sha256: &str,
    ) -> Result<Option<String>> {
        let key = self.key(path)?;
        if self.local_root.is_some() {
            let sidecar = serde_json::to_vec(&Sidecar {
                headers: headers.clone(),
                sha256: sha256.to_owned(),
            })
            .expect("headers serialize");
            let sidecar_key = ObjectPath::from(format!("{HEADERS_PREFIX}{path}.json"));
            self.objects
                .put(&sidecar_key, PutPayload::from(sidecar))
                .await?;
            let put = self.objects.put(&key, PutPayload::from(body)).await?;
            return Ok(put.e_tag);
        }
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(headers.content_type.clone()),
        );
        attributes.insert(
            Attribute::CacheControl,
            AttributeValue::from(headers.cache_control.clone()),
        );
        if let Some(encoding) = &headers.content_encoding {
            attributes.insert(
                Attribute::ContentEncoding,
                AttributeValue::from(encoding.clone()),
            );
        }
        attributes.insert(
            Attribute::Metadata(SHA256_KEY.into()),
            AttributeValue::from(sha256.to_owned()),
        );
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let put = self
            .objects
            .put_opts(&key, PutPayload::from(body), options)
            .await?;
        Ok(put.e_tag)
    }

    /// Read the file at `path`, or `None` if there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Stored>> {
        let key = self.key(path)?;
        let result = match self.objects.get_opts(&key, GetOptions::default()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let e_tag = result.meta.e_tag.clone();
        let attributes = result.attributes.clone();
        let body = result.bytes().await?;
        let (headers, sha256) = if self.local_root.is_some() {
            match self.sidecar(path).await? {
                Some(s) => (Some(s.headers), Some(s.sha256)),
                None => (None, None),
            }
        } else {
            let text = |a: Attribute| attributes.get(&a).map(|v| v.as_ref().to_owned());
            let headers = text(Attribute::ContentType).map(|content_type| Headers {
                content_type,
                cache_control: text(Attribute::CacheControl).unwrap_or_default(),
                content_encoding: text(Attribute::ContentEncoding),
            });
            (headers, text(Attribute::Metadata(SHA256_KEY.into())))
        };
        Ok(Some(Stored {
            body,
            headers,
            sha256,
            e_tag,
        }))
    }

    async fn sidecar(&self, path: &str) -> Result<Option<Sidecar>> {
        let key = ObjectPath::from(format!("{HEADERS_PREFIX}{path}.json"));
        match self.objects.get(&key).await {
            Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?).ok()),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every file under `prefix` (`""` for all) in one listing pass, without levee's own.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let full = format!("{}{prefix}", self.prefix);
        let dir = full.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let root = (!dir.is_empty()).then(|| ObjectPath::from(dir));
        let objects: Vec<_> = self.objects.list(root.as_ref()).try_collect().await?;
        let mut listed: Vec<Listed> = objects
            .into_iter()
            .filter_map(|meta| {
                let path = meta
                    .location
                    .as_ref()
                    .strip_prefix(&self.prefix)?
                    .to_owned();
                (path.starts_with(prefix) && !path.starts_with(INTERNAL_PREFIX)).then_some(Listed {
                    path,
                    size: meta.size,
                    e_tag: meta.e_tag,
                })
            })
            .collect();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listed)
    }

    /// Remove the file at `path` (and its headers); removing a missing file is no error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        ignore_missing(self.objects.delete(&key).await)?;
        if self.local_root.is_some() {
            let sidecar = ObjectPath::from(format!("{HEADERS_PREFIX}{path}.json"));
            ignore_missing(self.objects.delete(&sidecar).await)?;
        }
        Ok(())
    }

    /// Read one of levee's own files (under `.levee/`).
    pub async fn get_internal(&self, name: &str) -> Result<Option<Bytes>> {
        let key = ObjectPath::from(format!("{}{INTERNAL_PREFIX}{name}", self.prefix));
        match self.objects.get(&key).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Write one of levee's own files (under `.levee/`).
    pub async fn put_internal(&self, name: &str, body: Bytes) -> Result<()> {
        let key = ObjectPath::from(format!("{}{INTERNAL_PREFIX}{name}", self.prefix));
        self.objects.put(&key, PutPayload::from(body)).await?;
        Ok(())
    }
}

/// The headers of a local file, as the static server finds them.
pub fn local_headers(root: &Path, path: &str) -> Option<Headers> {
    let sidecar = root.join(HEADERS_PREFIX).join(format!("{path}.json"));
    let bytes = std::fs::read(sidecar).ok()?;
    serde_json::from_slice::<Sidecar>(&bytes)
        .ok()
        .map(|s| s.headers)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sidecar {
    headers: Headers,
    sha256: String,
}

fn ignore_missing(result: object_store::Result<()>) -> Result<()> {
    match result {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A store path is relative, `/`-separated, with no empty, `.` or `..` segments, no
/// control characters, and outside levee's own `.levee/`.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why| Err(StoreError::Path(path.to_owned(), why));
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if path.starts_with(INTERNAL_PREFIX) {
        return bad(".levee/ is levee's own");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '#')
    {
        return bad("it holds a control character, '\\' or '#'");
    }
    for segment in path.split('/') {
        match segment {
            "" => return bad("it has an empty segment (a leading, trailing or double '/')"),
            "." | ".." => return bad("it has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}
