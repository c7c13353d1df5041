//! Running a real `levee serve` process for black-box tests.

#![allow(dead_code)] // each test file uses a different part

pub mod browser;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `levee serve` child process listening on a free port.
pub struct Levee {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
    /// What it printed on stdout before it listened (e.g. the admin setup link).
    pub startup: Vec<String>,
    /// The extra environment it was started with; CLI commands get it too.
    env: Vec<(String, String)>,
}

/// Write the starter config and schema into `dir`.
pub fn write_config(dir: &Path) {
    write_config_with(dir, |toml| toml);
}

/// Write the starter config, changed by `edit`, and its schema into `dir`.
pub fn write_config_with(dir: &Path, edit: impl FnOnce(String) -> String) {
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(
        dir.join("levee.toml"),
        edit(levee_config::STARTER_TOML.to_owned()),
    )
    .unwrap();
    std::fs::write(
        dir.join(levee_config::SIGNUP_SCHEMA_PATH),
        levee_config::SIGNUP_SCHEMA,
    )
    .unwrap();
}

impl Levee {
    /// Start levee on `dir/levee.toml` and wait until it listens.
    pub fn start(dir: &Path) -> Levee {
        Self::start_with_env(dir, &[])
    }

    /// Start levee with extra environment (config overrides such as `LEVEE_SERVER__…`).
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Levee {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("levee.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_levee"))
            .args(["serve", "--config"])
            .arg(dir.join("levee.toml"))
            .env("LEVEE_SERVER__LISTEN", "127.0.0.1:0")
            .env("LEVEE_QUEUE__EMBEDDED__MIN_FREE_DISK_BYTES", "0")
            .env("LEVEE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start levee");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut startup = Vec::new();
        let url = loop {
            assert!(
                Instant::now() < deadline,
                "levee did not start; see {}/levee.log",
                dir.display()
            );
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("levee listening on ") {
                        break url.to_owned();
                    }
                    startup.push(line);
                }
                _ => panic!(
                    "levee exited before listening; see {}/levee.log",
                    dir.display()
                ),
            }
        };
        Levee {
            child,
            url,
            dir: dir.to_owned(),
            startup,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Run a levee CLI command against this node's config; returns (success, stdout).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_levee"))
            .args(args)
            .args(["--config"])
            .arg(self.dir.join("levee.toml"))
            .env("LEVEE_URL", &self.url)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Levee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open the queue that levee left in `dir`, with no disk reserve.
pub fn open_queue(dir: &Path) -> levee_queue::EmbeddedQueue {
    levee_queue::EmbeddedQueue::open(
        &dir.join("levee-data/queue"),
        levee_queue::EmbeddedOptions {
            min_free_disk_bytes: 0,
            max_size_bytes: None,
        },
    )
    .unwrap()
}

/// Declare the signups queue as levee does, so it can be read.
pub async fn declare_signups(queue: &dyn levee_queue::Queue) {
    queue
        .declare(&levee_queue::QueueSpec {
            name: "signups".into(),
            max_attempts: 5,
            max_depth: 10_000_000,
        })
        .await
        .unwrap();
}

/// Every message id in the signups queue (receiving them all under a long lease).
pub async fn all_ids(queue: &dyn levee_queue::Queue) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = queue
            .receive("signups", 1000, Duration::from_secs(3600))
            .await
            .unwrap();
        if got.is_empty() {
            return ids;
        }
        ids.extend(got.into_iter().map(|d| d.id));
    }
}

/// Sign-ups POSTed by concurrent clients until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
}

impl Load {
    /// `clients` clients, each pausing `pause` between requests. A client stops at its
    /// first connection error: the process is gone, and that request was not acknowledged.
    pub fn start(url: &str, clients: usize, pause: Duration) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|c| {
                let url = format!("{url}/v1/streams/signups");
                let (stop, count) = (stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let (mut acked, mut refused) = (Vec::new(), 0);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = format!(
                            r#"{{"email":"client{c}-{n}@example.org","zip":"37415","message":"steady load"}}"#
                        );
                        let sent = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 202 => {
                                let json: serde_json::Value = r.json().await.unwrap_or_default();
                                if let Some(id) = json["id"].as_str() {
                                    acked.push(id.to_owned());
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(_) => refused += 1,
                            Err(_) => break,
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        Load {
            stop,
            acked,
            clients,
        }
    }

    /// Wait until at least `n` writes have been acknowledged.
    pub async fn until_acked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.load(std::sync::atomic::Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} writes acknowledged in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop and collect: (acknowledged ids, answers other than 202).
    pub async fn stop(self) -> (Vec<String>, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut acked, mut refused) = (Vec::new(), 0);
        for c in self.clients {
            let (a, r) = c.await.unwrap();
            acked.extend(a);
            refused += r;
        }
        (acked, refused)
    }
}

/// The ids in a table, once it holds every id of `acked` (or 60 s have passed). Rows of
/// writes whose 202 was lost with a killed process may be there too.
pub async fn table_ids(db: &levee_sink::SqlSink, table: &str, acked: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<String> = db
            .strings(&format!("SELECT id FROM {table}"))
            .await
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        let present: std::collections::HashSet<&String> = ids.iter().collect();
        if acked.iter().all(|id| present.contains(id)) || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every acked id is in `ids`, and no id is there twice.
pub fn assert_exactly_once(acked: &[String], ids: &[String]) {
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a row was written twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes are missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}
