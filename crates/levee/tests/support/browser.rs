//! What the browser tests need: node, Chromium and `tests/browser/node_modules`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace's root (where `tests/browser/` is).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Skip (None) or, with LEVEE_TEST_REQUIRE_SERVICES=1, fail.
pub fn unavailable(why: &str) -> Option<()> {
    assert!(
        std::env::var("LEVEE_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{why}, and LEVEE_TEST_REQUIRE_SERVICES=1"
    );
    eprintln!("skipped: {why}");
    None
}

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Node, Chromium and the scripts' node_modules (installed with `npm ci` if missing).
/// Returns Chromium's path.
pub fn browser_tools(root: &Path) -> Option<PathBuf> {
    if !runs("node") {
        unavailable("node is not installed")?;
    }
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        unavailable(&format!(
            "Chromium is not at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ))?;
    }
    // Tests of one binary run in parallel: one `npm ci` at a time.
    static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = NPM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .is_file()
    {
        if !runs("npm") {
            unavailable("npm is not installed (needed once, for tests/browser/node_modules)")?;
        }
        eprintln!("npm ci --prefix tests/browser");
        let out = Command::new("npm")
            .args(["ci", "--prefix", "tests/browser", "--no-audit", "--no-fund"])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "npm ci --prefix tests/browser failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(chromium)
}

/// The last `n` lines of a file, for a failure message.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
