//! Make a store hold a given set of files, touching only what changed: the engine behind
//! `levee deploy` and `levee shard`.
//!
//! What the store holds is learned from one listing plus levee's manifest
//! (`.levee/manifest.json`: for every file levee wrote, the hash of its bytes and headers
//! and the version tag the store gave it). A file is unchanged when its hash matches the
//! manifest and the listing still shows the tag levee wrote, so a file changed or deleted
//! behind levee's back is uploaded again. No request per file, no trust in mtimes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use levee_store::{Headers, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::content_hash;

const MANIFEST: &str = "manifest.json";

/// One file the store should hold.
#[derive(Debug, Clone)]
pub struct SyncFile {
    pub path: String,
    pub body: Bytes,
    pub headers: Headers,
    /// Uploaded after every non-pointer file (HTML pages, which name the assets).
    pub pointer: bool,
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Only files under this prefix are compared, and deleted with `delete`.
    pub scope: String,
    /// Delete files under `scope` that are not in the set.
    pub delete: bool,
    /// Refuse the whole sync if it would delete more files than this.
    pub max_deletes: usize,
    /// Plan only: report what would change, change nothing.
    pub dry_run: bool,
    /// Uploads at once.
    pub concurrency: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            scope: String::new(),
            delete: false,
            max_deletes: 100,
            dry_run: false,
            concurrency: 32,
            progress: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "would delete {count} files, more than the limit of {limit}; nothing was changed (raise --max-deletes to allow it)"
    )]
    TooManyDeletes { count: usize, limit: usize },
    #[error("{failed} of {attempted} uploads failed (first: {first}); pages were not updated")]
    Uploads {
        failed: usize,
        attempted: usize,
        first: String,
        summary: Box<SyncSummary>,
    },
}

/// What a sync did (or, dry, would do).
#[derive(Debug, Default, Clone)]
pub struct SyncSummary {
    pub uploaded: Vec<String>,
    pub unchanged: usize,
    pub deleted: Vec<String>,
    pub bytes: u64,
    pub dry_run: bool,
    pub elapsed: Duration,
    /// Requests made to the store, by kind.
    pub requests: Requests,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Requests {
    pub list: usize,
    pub get: usize,
    pub put: usize,
    pub delete: usize,
}

impl SyncSummary {
    /// Every path whose content changed: what a CDN must purge.
    pub fn changed(&self) -> impl Iterator<Item = &str> {
        self.uploaded
            .iter()
            .chain(self.deleted.iter())
            .map(String::as_str)
    }
}

impl std::fmt::Display for SyncSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would upload"
        } else {
            "uploaded"
        };
        let del = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        write!(
            f,
            "{verb} {} ({} bytes), {} unchanged, {del} {} in {:.1}s; requests: {} list, {} get, {} put, {} delete",
            self.uploaded.len(),
            self.bytes,
            self.unchanged,
            self.deleted.len(),
            self.elapsed.as_secs_f64(),
            self.requests.list,
            self.requests.get,
            self.requests.put,
            self.requests.delete,
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestEntry {
    hash: String,
    e_tag: Option<String>,
}

/// Make `store` hold `files` (within `options.scope`).
pub async fn sync(
    store: &Store,
    files: Vec<SyncFile>,
    options: &SyncOptions,
) -> Result<SyncSummary, SyncError> {
    let started = Instant::now();
    let mut summary = SyncSummary {
        dry_run: options.dry_run,
        ..SyncSummary::default()
    };
    let mut manifest: Manifest = match store.get_internal(MANIFEST).await? {
        // An unreadable manifest only costs a full upload.
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Manifest::default(),
    };
    summary.requests.get += 1;
    let listed: HashMap<String, Option<String>> = store
        .list(&options.scope)
        .await?
        .into_iter()
        .map(|l| (l.path, l.e_tag))
        .collect();
    summary.requests.list += 1;

    let mut wanted = std::collections::HashSet::new();
    let mut uploads = Vec::new();
    for file in files {
        let hash = content_hash(&file.body, &file.headers);
        wanted.insert(file.path.clone());
        let unchanged = manifest.files.get(&file.path).is_some_and(|entry| {
            entry.hash == hash
                && entry.e_tag.is_some()
                && listed.get(&file.path) == Some(&entry.e_tag)
        });
        if unchanged {
            summary.unchanged += 1;
        } else {
            uploads.push((file, hash));
        }
    }
    let mut deletes: Vec<String> = if options.delete {
        listed
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    deletes.sort();
    if deletes.len() > options.max_deletes {
        return Err(SyncError::TooManyDeletes {
            count: deletes.len(),
            limit: options.max_deletes,
        });
    }
    // Assets first, then the pages that name them.
    uploads.sort_by_key(|(f, _)| f.pointer);

    if options.dry_run {
        summary.bytes = uploads.iter().map(|(f, _)| f.body.len() as u64).sum();
        summary.uploaded = uploads.into_iter().map(|(f, _)| f.path).collect();
        summary.deleted = deletes;
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }

    let bar = progress_bar(options.progress, uploads.len() + deletes.len());
    let split = uploads.partition_point(|(f, _)| !f.pointer);
    let pointers = uploads.split_off(split);
    let mut failures = Vec::new();
    for group in [uploads, pointers] {
        if !failures.is_empty() {
            // Keep the last good pages: they point to assets that are all still there.
            break;
        }
        let mut results = futures::stream::iter(group)
            .map(|(file, hash)| async move {
                let result = store
                    .put(&file.path, file.body.clone(), &file.headers, &hash)
                    .await;
                (file, hash, result)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((file, hash, result)) = results.next().await {
            summary.requests.put += 1;
            bar.inc(1);
            match result {
                Ok(e_tag) => {
                    summary.bytes += file.body.len() as u64;
                    manifest
                        .files
                        .insert(file.path.clone(), ManifestEntry { hash, e_tag });
                    summary.uploaded.push(file.path);
                }
                Err(e) => failures.push(format!("{}: {e}", file.path)),
            }
        }
    }
    if failures.is_empty() {
        // Stale files go last, once nothing new points to them.
        let mut results = futures::stream::iter(deletes)
            .map(|path| async move {
                let result = store.delete(&path).await;
                (path, result)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((path, result)) = results.next().await {
            summary.requests.delete += 1;
            bar.inc(1);
            match result {
                Ok(()) => {
                    manifest.files.remove(&path);
                    summary.deleted.push(path);
                }
                Err(e) => failures.push(format!("{path}: {e}")),
            }
        }
    }
    bar.finish_and_clear();
    // Forget files that are gone from the store, so the manifest doesn't grow forever.
    let scope = &options.scope;
    manifest.files.retain(|path, _| {
        !path.starts_with(scope.as_str()) || listed.contains_key(path) || wanted.contains(path)
    });
    if !summary.uploaded.is_empty() || !summary.deleted.is_empty() {
        let bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        store.put_internal(MANIFEST, Bytes::from(bytes)).await?;
        summary.requests.put += 1;
    }
    summary.uploaded.sort();
    summary.deleted.sort();
    summary.elapsed = started.elapsed();
    if let Some(first) = failures.first() {
        return Err(SyncError::Uploads {
            failed: failures.len(),
            attempted: summary.uploaded.len() + failures.len(),
            first: first.clone(),
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

fn progress_bar(show: bool, len: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
            .expect("progress template"),
    );
    bar
}
