//! The demo page and levee.js in a real browser (Node, playwright-core, Debian's Chromium).
//!
//! - `tests/browser/demo.mjs` against a real `levee serve` on the starter config, with the
//!   ZIP files made by `levee shard` and the tables by `levee migrate`: the form, ZIP
//!   pre-fill, the count and latest signers from the SQL jobs, the live blog, an alert,
//!   pause and resume, and sign-ups made while levee is killed. The script asks for levee
//!   to be stopped and started (`@levee stop|start` on its stdout, the answer on its stdin);
//!   levee comes back on the same port, as it would for a real page. Afterwards the table
//!   must hold each sign-up the script reports (`@signed EMAIL`) exactly once.
//! - `tests/browser/kit.mjs`: levee.js alone against a scripted Node server (If-None-Match
//!   and 304s, retries with one Idempotency-Key, alerts shown and hidden by their times).
//!
//! Needs what `tests/browser.rs` needs (node, Chromium, `npm ci` once); skipped without
//! them, unless `LEVEE_TEST_REQUIRE_SERVICES=1`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use support::browser::{browser_tools, tail, workspace};
use support::{Levee, write_config};

const TOKEN: &str = "test-admin-token";
/// Longer than demo.mjs's own limit for the whole run (420 s): only a hung `node` meets it.
const DEMO_LIMIT: Duration = Duration::from_secs(540);
/// Longer than kit.mjs's own limit (120 s).
const KIT_LIMIT: Duration = Duration::from_secs(200);

/// Run a levee command on `dir/levee.toml`; panics with its output if it fails.
fn levee(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .arg("--config")
        .arg(dir.join("levee.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "levee {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a node script ended: its exit status (None if it hung and was killed) and output.
struct Run {
    status: Option<std::process::ExitStatus>,
    output: String,
}

impl Run {
    fn passed(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn verdict(&self, limit: Duration) -> String {
        match self.status {
            Some(s) => format!("failed ({s})"),
            None => format!("hung for {} s and was killed", limit.as_secs()),
        }
    }
}

/// Run `node script` with `env`, answering each line it prints with `answer` (whose reply,
/// if any, goes to the script's stdin), until it exits or `limit` passes.
fn run_node(
    script: &Path,
    env: &[(&str, &str)],
    stderr: &Path,
    limit: Duration,
    mut answer: impl FnMut(&str) -> Option<String>,
) -> Run {
    let mut node = Command::new("node")
        .arg(script)
        .current_dir(workspace())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().unwrap();
    let (lines, script_lines) = channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut output = String::new();
    let hung = loop {
        match script_lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if let Some(reply) = answer(&line) {
                    // The script may have died meanwhile; its exit status tells.
                    let _ = writeln!(stdin, "{reply}");
                }
            }
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => break true,
        }
    };
    if hung {
        let _ = node.kill();
    }
    let status = node.wait().unwrap();
    output.push_str(&std::fs::read_to_string(stderr).unwrap_or_default());
    Run {
        status: (!hung).then_some(status),
        output,
    }
}

#[test]
fn the_demo_page_in_chromium() {
    let root = workspace();
    let Some(chromium) = browser_tools(&root) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    // A configured node leaves its tables to `levee migrate`, and the ZIP files to shard.
    std::fs::create_dir_all(dir.path().join("levee-data")).unwrap();
    levee(dir.path(), &["migrate"]);
    let csv = root.join("data/us-zipcodes.csv");
    levee(
        dir.path(),
        &[
            "shard",
            csv.to_str().unwrap(),
            "--key",
            "zip",
            "--out",
            "zip/{key}.json",
            "--fields",
            "zip,city,state",
        ],
    );
    // A fixed port: pages that outlived levee send their outbox to the same address.
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("LEVEE_ADMIN_TOKEN", TOKEN),
        ("LEVEE_SERVER__LISTEN", listen.as_str()),
    ];
    let mut node = Some(Levee::start_with_env(dir.path(), &env));
    let url = node.as_ref().unwrap().url.clone();

    let mut signed = Vec::new();
    let run = run_node(
        &root.join("tests/browser/demo.mjs"),
        &[
            ("LEVEE_URL", url.as_str()),
            ("LEVEE_ADMIN_TOKEN", TOKEN),
            ("CHROMIUM", chromium.to_str().unwrap()),
            ("LEVEE_BROWSER_ARTIFACTS", dir.path().to_str().unwrap()),
        ],
        &dir.path().join("node.err"),
        DEMO_LIMIT,
        |line| match line {
            "@levee stop" => Some(match node.take() {
                Some(mut levee) => {
                    levee.kill9();
                    "stopped".to_owned()
                }
                None => "error: levee is not running".to_owned(),
            }),
            "@levee start" => Some(if node.is_some() {
                "error: levee is running".to_owned()
            } else {
                let levee = Levee::start_with_env(dir.path(), &env);
                let reply = format!("started {}", levee.url);
                node = Some(levee);
                reply
            }),
            _ => {
                if let Some(email) = line.strip_prefix("@signed ") {
                    signed.push(email.to_owned());
                }
                None
            }
        },
    );
    println!("{}", run.output);
    drop(node);
    if !run.passed() {
        let kept = dir.keep();
        panic!(
            "node tests/browser/demo.mjs {}:\n{}\n\
             levee.log (last lines):\n{}\n\
             kept {} (levee.log, screenshots)",
            run.verdict(DEMO_LIMIT),
            run.output,
            tail(&kept.join("levee.log"), 30),
            kept.display()
        );
    }

    // Each sign-up the pages made is in the table once: a resend, from the same tab or
    // from another after a reload, never made a second row.
    assert_eq!(signed.len(), 3, "demo.mjs reported {signed:?}");
    let rows: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = levee_sink::SqlSink::connect(
            &format!("sqlite://{}/levee-data/levee.db", dir.path().display()),
            &levee_sink::SinkOptions::default(),
        )
        .unwrap();
        db.strings("SELECT email FROM signups")
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .collect()
    });
    for email in &signed {
        let n = rows.iter().filter(|r| *r == email).count();
        assert_eq!(n, 1, "{email} is in the signups table {n} times");
    }
}

#[test]
fn levee_js_against_a_scripted_server() {
    let root = workspace();
    let Some(chromium) = browser_tools(&root) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = run_node(
        &root.join("tests/browser/kit.mjs"),
        &[
            ("CHROMIUM", chromium.to_str().unwrap()),
            ("LEVEE_BROWSER_ARTIFACTS", dir.path().to_str().unwrap()),
        ],
        &dir.path().join("node.err"),
        KIT_LIMIT,
        |_| None,
    );
    println!("{}", run.output);
    if !run.passed() {
        let kept = dir.keep();
        panic!(
            "node tests/browser/kit.mjs {}:\n{}\nkept {} (screenshots)",
            run.verdict(KIT_LIMIT),
            run.output,
            kept.display()
        );
    }
}
