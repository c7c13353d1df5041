//! The publisher: writes sets of files to the store for the parts of levee that run all
//! the time (CMS saves, jobs, `status.json`).
//!
//! Writes to one path are serialized and coalesced: while a path is being written, newer
//! versions wait in a single slot, each replacing the one before, so ten saves in a second
//! make one or two uploads, and the last save always wins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use levee_store::{CacheRules, Headers, IMMUTABLE, Store, content_type};
use serde::Serialize;
use tokio::sync::watch;

use crate::content_hash;

/// One file of a publish.
#[derive(Debug, Clone)]
pub struct PublishFile {
    pub path: String,
    pub body: Bytes,
    /// Overrides the config's path rules.
    pub cache_control: Option<String>,
    /// Written only after every other file of its publish (an index, `latest.json`).
    pub pointer: bool,
}

impl PublishFile {
    pub fn new(path: impl Into<String>, body: impl Into<Bytes>) -> PublishFile {
        PublishFile {
            path: path.into(),
            body: body.into(),
            cache_control: None,
            pointer: false,
        }
    }

    /// A JSON file.
    pub fn json(path: impl Into<String>, value: &impl Serialize) -> PublishFile {
        let body = serde_json::to_vec(value).expect("JSON values serialize");
        PublishFile::new(path, body)
    }

    /// Mark the file as never changing again: it is cached for a year.
    pub fn immutable(mut self) -> PublishFile {
        self.cache_control = Some(IMMUTABLE.to_owned());
        self
    }

    /// Mark the file as one that points to others: it is written last.
    pub fn pointer(mut self) -> PublishFile {
        self.pointer = true;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publishing {path} failed: {message}")]
pub struct PublishError {
    pub path: String,
    pub message: String,
}

/// What a publish did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    pub written: usize,
    /// Files whose bytes and headers were already in the store.
    pub unchanged: usize,
}

/// Writes files to the store; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    rules: CacheRules,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    uploads: AtomicU64,
}

/// The write queue of one path.
struct Slot {
    state: Mutex<SlotState>,
    settled: watch::Sender<Settled>,
}

#[derive(Default)]
struct SlotState {
    next: u64,
    pending: Option<Pending>,
    writing: bool,
    /// Hash of what the store holds, as far as this process knows.
    stored_hash: Option<String>,
}

struct Pending {
    generation: u64,
    body: Bytes,
    headers: Headers,
    hash: String,
}

/// Every version up to `through` is settled: written, or replaced by a newer one that was.
#[derive(Clone)]
struct Settled {
    through: u64,
    /// Whether the write that settled them wrote anything, or why it failed.
    outcome: Result<bool, String>,
}

impl Publisher {
    pub fn new(store: Store, rules: CacheRules) -> Publisher {
        Publisher {
            inner: Arc::new(Inner {
                store,
                rules,
                slots: Mutex::default(),
                uploads: AtomicU64::new(0),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Files written to the store since start (coalesced and unchanged ones not counted).
    pub fn uploads(&self) -> u64 {
        self.inner.uploads.load(Ordering::Relaxed)
    }

    /// Publish a set of files: all but the pointers at once, then the pointers. Returns once
    /// every file (or a newer version of it) is in the store; on a failure the pointers are
    /// not written, so readers keep the last good set.
    pub async fn publish(&self, files: Vec<PublishFile>) -> Result<PublishReport, PublishError> {
        let (pointers, others): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.pointer);
        let mut report = PublishReport::default();
        for group in [others, pointers] {
            let results = futures::future::join_all(group.into_iter().map(|f| self.write(f))).await;
            for result in results {
                match result? {
                    true => report.written += 1,
                    false => report.unchanged += 1,
                }
            }
        }
        Ok(report)
    }

    /// Queue one file for its path and wait until it, or a newer version, is settled.
    async fn write(&self, file: PublishFile) -> Result<bool, PublishError> {
        let headers = Headers {
            content_type: content_type(&file.path),
            cache_control: file
                .cache_control
                .unwrap_or_else(|| self.inner.rules.cache_control(&file.path).to_owned()),
            content_encoding: None,
        };
        let hash = content_hash(&file.body, &headers);
        let slot = self.slot(&file.path);
        let mut settled = slot.settled.subscribe();
        let generation = {
            let mut state = slot.state.lock().expect("slot lock");
            state.next += 1;
            let generation = state.next;
            state.pending = Some(Pending {
                generation,
                body: file.body,
                headers,
                hash,
            });
            if !state.writing {
                state.writing = true;
                let this = self.clone();
                let path = file.path.clone();
                let slot = slot.clone();
                tokio::spawn(async move { this.drive(&path, &slot).await });
            }
            generation
        };
        let settled = settled
            .wait_for(|s| s.through >= generation)
            .await
            .expect("the slot outlives its writers")
            .clone();
        settled.outcome.map_err(|message| PublishError {
            path: file.path,
            message,
        })
    }

    fn slot(&self, path: &str) -> Arc<Slot> {
        let mut slots = self.inner.slots.lock().expect("slots lock");
        slots
            .entry(path.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: Mutex::default(),
                    settled: watch::channel(Settled {
                        through: 0,
                        outcome: Ok(false),
                    })
                    .0,
                })
            })
            .clone()
    }

    /// Write the newest pending version of `path` until none is left.
    async fn drive(&self, path: &str, slot: &Slot) {
        loop {
            let (pending, stored) = {
                let mut state = slot.state.lock().expect("slot lock");
                match state.pending.take() {
                    Some(p) => (p, state.stored_hash.clone()),
                    None => {
                        state.writing = false;
                        return;
                    }
                }
            };
            let outcome = if stored.as_deref() == Some(pending.hash.as_str()) {
                Ok(false)
            } else {
                match self
                    .inner
                    .store
                    .put(path, pending.body, &pending.headers, &pending.hash)
                    .await
                {
                    Ok(_) => {
                        self.inner.uploads.fetch_add(1, Ordering::Relaxed);
                        slot.state.lock().expect("slot lock").stored_hash = Some(pending.hash);
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::warn!(path, error = %e, "publish failed");
                        Err(e.to_string())
                    }
                }
            };
            slot.settled.send_replace(Settled {
                through: pending.generation,
                outcome,
            });
        }
    }
}
