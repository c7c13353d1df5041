//! The admin token: `LEVEE_ADMIN_TOKEN`, or one made at first start and kept in the data
//! directory (readable by its owner only), so the demo's admin API is never open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

pub const TOKEN_FILE: &str = "admin-token";

pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("LEVEE_ADMIN_TOKEN")
        && !token.is_empty()
    {
        return Ok(token);
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::create_dir_all(data_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    tracing::info!(path = %path.display(), "LEVEE_ADMIN_TOKEN is not set: made an admin token");
    Ok(token)
}

/// The token for CLI commands: the environment's, or the one kept in the data directory.
pub fn read_token(data_dir: &Path) -> Option<String> {
    std::env::var("LEVEE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::fs::read_to_string(data_dir.join(TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_owned())
        })
}
