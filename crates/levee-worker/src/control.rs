//! Pause and resume, per stream, persisted so a restart keeps a paused stream paused.
//!
//! The state lives in one small JSON file in the data directory, apart from the SQL
//! database: pausing is what an operator does when that database is down or moving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Why and since when a stream is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// For users, e.g. "New sign-ups are delayed a few minutes".
    pub message: Option<String>,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    #[error("cannot save the pause state to {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the pause state from {path}: {message}")]
    Load { path: PathBuf, message: String },
}

pub struct Control {
    path: PathBuf,
    streams: Vec<String>,
    state: Mutex<BTreeMap<String, Pause>>,
    changed: watch::Sender<u64>,
}

impl Control {
    /// Load the pause state of `streams` from `path` (none paused if it does not exist).
    pub fn open(path: &Path, streams: Vec<String>) -> Result<Control, ControlError> {
        let state: BTreeMap<String, Pause> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ControlError::Load {
                path: path.to_owned(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(ControlError::Load {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        Ok(Control {
            path: path.to_owned(),
            streams,
            state: Mutex::new(state),
            changed: watch::channel(0).0,
        })
    }

    /// The streams it controls, in config order.
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    pub fn paused(&self, stream: &str) -> Option<Pause> {
        self.state.lock().unwrap().get(stream).cloned()
    }

    /// Pause one stream, or all when `stream` is None. Returns the streams paused.
    pub fn pause(
        &self,
        stream: Option<&str>,
        message: Option<String>,
    ) -> Result<Vec<String>, ControlError> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let targets = self.targets(stream)?;
        self.update(|state| {
            for name in &targets {
                state.insert(
                    name.clone(),
                    Pause {
                        message: message.clone(),
                        since,
                    },
                );
            }
        })?;
        Ok(targets)
    }

    /// Resume one stream, or all when `stream` is None. Returns the streams resumed.
    pub fn resume(&self, stream: Option<&str>) -> Result<Vec<String>, ControlError> {
        let targets = self.targets(stream)?;
        self.update(|state| {
            for name in &targets {
                state.remove(name);
            }
        })?;
        Ok(targets)
    }

    /// A receiver that changes whenever a pause or resume happens.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn targets(&self, stream: Option<&str>) -> Result<Vec<String>, ControlError> {
        match stream {
            None => Ok(self.streams.clone()),
            Some(s) if self.streams.iter().any(|n| n == s) => Ok(vec![s.to_owned()]),
            Some(s) => Err(ControlError::UnknownStream(s.to_owned())),
        }
    }

    /// Apply a change and make it durable before anyone sees it.
    fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Pause>),
    ) -> Result<(), ControlError> {
        let mut state = self.state.lock().unwrap();
        let mut next = state.clone();
        change(&mut next);
        let save = || -> std::io::Result<()> {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = self.path.with_extension("tmp");
            let json = serde_json::to_vec_pretty(&next).expect("pause state serializes");
            let file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut &file, &json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        save().map_err(|source| ControlError::Save {
            path: self.path.clone(),
            source,
        })?;
        *state = next;
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }
}
