//! Everything that writes public files goes through here: the CMS, the jobs and
//! `status.json` through the [`Publisher`]; `levee deploy` and `levee shard` through
//! [`sync`], which compares a whole set of files with what the store holds.
//!
//! Both follow one rule: files that others point to are written first, the files that
//! point to them last, so a reader never finds a pointer to a file that isn't there yet;
//! and a failed write stops before the pointers, leaving the last good version in place.

pub mod clock;
pub mod deploy;
mod publisher;
pub mod shard;
pub mod sync;

use sha2::{Digest, Sha256};

pub use clock::Clock;
pub use publisher::{PublishError, PublishFile, PublishReport, Publisher};

/// Hex SHA-256 of a file's bytes and headers: a change to either is a change to publish.
pub fn content_hash(body: &[u8], headers: &levee_store::Headers) -> String {
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update([0]);
    hasher.update(headers.content_type.as_bytes());
    hasher.update([0]);
    hasher.update(headers.cache_control.as_bytes());
    hasher.update([0]);
    hasher.update(headers.content_encoding.as_deref().unwrap_or("").as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
