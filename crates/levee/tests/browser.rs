//! The admin UI and a reader's page in a real browser: `tests/browser/cms.mjs` (Node,
//! playwright-core, Debian's Chromium) against a real `levee serve`. It logs in, creates a
//! blog, previews and saves a post, reads it back from `latest.json`, and watches
//! `poll.html` (copied into the store here) show a post saved from another tab.
//!
//! Needs `node` and Chromium (`$CHROMIUM` or `/usr/bin/chromium`), and `npm` with the npm
//! registry the first time (`npm ci` into `tests/browser/node_modules`). Skipped without
//! them, unless `LEVEE_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::browser::{browser_tools, tail, workspace};
use support::{Levee, write_config};

const PASSWORD: &str = "browser-test-password";
const TOKEN: &str = "test-admin-token";
/// The reader's page, served from the store at `/poll.html`.
const POLL_HTML: &str = include_str!("../../../tests/browser/poll.html");
/// Longer than the script's own limit for the whole run (240 s): only a hung `node` meets it.
const SCRIPT_LIMIT: Duration = Duration::from_secs(360);

#[test]
fn admin_ui_and_a_polling_page_in_chromium() {
    let root = workspace();
    let Some(chromium) = browser_tools(&root) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let public = dir.path().join("levee-data/public");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(public.join("poll.html"), POLL_HTML).unwrap();
    let levee = Levee::start_with_env(
        dir.path(),
        &[
            ("LEVEE_ADMIN_PASSWORD", PASSWORD),
            ("LEVEE_ADMIN_TOKEN", TOKEN),
        ],
    );

    let (stdout, stderr) = (dir.path().join("node.out"), dir.path().join("node.err"));
    let mut node = Command::new("node")
        .arg(root.join("tests/browser/cms.mjs"))
        .current_dir(&root)
        .env("LEVEE_URL", &levee.url)
        .env("LEVEE_ADMIN_PASSWORD", PASSWORD)
        .env("CHROMIUM", &chromium)
        .env("LEVEE_BROWSER_ARTIFACTS", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&stdout).unwrap_or_default(),
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    println!("{output}");
    if status.is_some_and(|s| s.success()) {
        return;
    }
    drop(levee);
    let kept = dir.keep();
    panic!(
        "node tests/browser/cms.mjs {}:\n{output}\n\
         levee.log (last lines):\n{}\n\
         kept {} (levee.log, screenshots)",
        match status {
            Some(s) => format!("failed ({s})"),
            None => format!("hung for {} s and was killed", SCRIPT_LIMIT.as_secs()),
        },
        tail(&kept.join("levee.log"), 30),
        kept.display()
    );
}
