//! bench/drain: how fast levee's workers empty a backlog into PostgreSQL, against the same
//! rows inserted straight through sqlx, and the lag from POST to visible row at a steady rate.
//!
//!   cargo build --release -p levee -p levee-bench-drain
//!   target/release/levee-bench-drain --messages 1000000 --batch 100 --workers 4 \
//!       --database postgres://postgres@127.0.0.1:5432/test
//!
//! The lag test starts the levee binary (`target/release/levee` by default).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use levee_queue::{EmbeddedOptions, EmbeddedQueue, NewMessage, Queue, QueueSpec};
use levee_sink::{Mapping, Sink, SinkOptions, SqlSink};
use levee_worker::{Control, Drain, StreamDrain};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

// The allocator `levee serve` runs with, so the workers here cost what they cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STREAM: &str = "signups";
/// The starter config's mapping (crates/levee-config/assets/levee.toml).
const COLUMNS: [&str; 4] = ["email", "name", "zip", "message"];

#[derive(Parser)]
struct Args {
    /// Messages to preload and drain.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent workers (levee) and tasks (plain sqlx).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[arg(long, env = "LEVEE_TEST_POSTGRES_URL")]
    database: String,
    /// POSTs per second for the lag test; 0 skips it.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 15)]
    lag_seconds: u64,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/levee"))]
    levee: PathBuf,
}

/// One sign-up, with its fields at hand for the plain-sqlx inserts.
struct Signup {
    id: String,
    fields: [String; 4],
    json: String,
}

fn signups(n: usize) -> Vec<Signup> {
    const NAMES: [&str; 3] = ["Ada Lovelace", "Grace Hopper", "Katherine Johnson"];
    let message = "Count me in, and keep me posted on the hearing next Tuesday.";
    (0..n)
        .map(|i| {
            let fields = [
                format!("signer{i}@example.org"),
                NAMES[i % NAMES.len()].to_owned(),
                format!("{:05}", i % 100_000),
                message.to_owned(),
            ];
            let json = serde_json::json!({
                "email": fields[0], "name": fields[1], "zip": fields[2], "message": fields[3],
            });
            let id = uuid::Uuid::now_v7().to_string();
            Signup {
                id,
                fields,
                json: json.to_string(),
            }
        })
        .collect()
}

/// A new table shaped like levee's for the starter mapping, remembered for the clean-up.
async fn fresh_table(
    sink: &SqlSink,
    prefix: &str,
    tables: &mut Vec<String>,
) -> anyhow::Result<Mapping> {
    let table = format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    tables.push(table.clone());
    let columns = COLUMNS.iter().map(|c| (c.to_string(), format!("/{c}")));
    let mapping = Mapping {
        table,
        columns: columns.collect(),
    };
    sink.migrate(&mapping).await?;
    Ok(mapping)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pg = PgPoolOptions::new()
        .max_connections(4)
        .connect(&args.database)
        .await?;
    let mut tables = Vec::new();
    let result = run(&args, &pg, &mut tables).await;
    // Leave the shared database as we found it, whatever happened.
    for t in &tables {
        drop_table(&pg, t).await;
    }
    result
}

async fn run(args: &Args, pg: &PgPool, tables: &mut Vec<String>) -> anyhow::Result<()> {
    let n = args.messages;
    let rows = Arc::new(signups(n));
    let bytes = rows.iter().map(|s| s.json.len()).sum::<usize>() / n.max(1);
    let sink = Arc::new(SqlSink::connect(&args.database, &SinkOptions::default())?);

    // a) Preload a fresh embedded queue, 1,000 messages per durable send.
    let dir = tempfile::tempdir()?;
    let options = EmbeddedOptions {
        min_free_disk_bytes: 0,
        max_size_bytes: None,
    };
    let queue = Arc::new(EmbeddedQueue::open(&dir.path().join("queue"), options)?);
    let spec = QueueSpec {
        name: STREAM.into(),
        max_attempts: 5,
        max_depth: n as u64,
    };
    queue.declare(&spec).await?;
    let started = Instant::now();
    for chunk in rows.chunks(1000) {
        let messages = chunk.iter().map(|s| NewMessage {
            id: s.id.clone(),
            payload: s.json.clone().into(),
        });
        queue.send(STREAM, messages.collect()).await?;
    }
    let preload = started.elapsed();
    eprintln!("preloaded {n} in {:.1} s", preload.as_secs_f64());

    // b) levee's workers drain it until nothing is queued or in flight.
    let mapping = fresh_table(&sink, "bench_levee", tables).await?;
    let control = Control::open(&dir.path().join("control.json"), vec![STREAM.into()])?;
    let stream = StreamDrain {
        name: STREAM.into(),
        mapping: mapping.clone(),
        workers: args.workers,
        batch_size: args.batch,
        lease: Duration::from_secs(60),
        retry_delay: Duration::from_secs(1),
    };
    let drain = Arc::new(Drain::new(
        queue.clone(),
        sink.clone(),
        Arc::new(control),
        vec![stream],
    ));
    checkpoint(pg).await;
    let (shutdown, started, cpu) = (CancellationToken::new(), Instant::now(), Cpu::now());
    let workers = drain.spawn(&shutdown);
    loop {
        let stats = queue.stats(STREAM).await?;
        if stats.depth == 0 && stats.in_flight == 0 {
            break;
        }
        // Coarse enough that watching costs the queue nothing worth measuring.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (levee, levee_cpu) = (started.elapsed(), Cpu::now().since(cpu));
    shutdown.cancel();
    for w in workers {
        w.await?;
    }
    queue.close().await;
    expect_rows(pg, &mapping.table, n).await?;
    drop_table(pg, &mapping.table).await;
    eprintln!("levee drained {n} in {:.1} s", levee.as_secs_f64());

    // c) The same rows through plain sqlx, into a table of the same shape.
    let table = fresh_table(&sink, "bench_raw", tables).await?.table;
    checkpoint(pg).await;
    let cpu = Cpu::now();
    let raw = raw_insert(
        &args.database,
        &table,
        rows.clone(),
        args.batch,
        args.workers,
    )
    .await?;
    let raw_cpu = Cpu::now().since(cpu);
    expect_rows(pg, &table, n).await?;
    drop_table(pg, &table).await;
    eprintln!("plain sqlx inserted {n} in {:.1} s", raw.as_secs_f64());

    // d) Lag from POST to visible row on a real node.
    let lag = match args.rate {
        0 => None,
        _ => {
            let table = fresh_table(&sink, "bench_lag", tables).await?.table;
            checkpoint(pg).await;
            Some(lag(args, &table, pg).await?)
        }
    };

    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pg)
        .await?;
    let (batch, workers) = (args.batch, args.workers);
    println!(
        "\nbench/drain: {n} messages of ~{bytes} bytes, batch {batch}, {workers} workers, PostgreSQL {version}"
    );
    println!(
        "{:<44} {:>8} {:>10} {:>14} {:>14}",
        "phase", "seconds", "msgs/s", "CPU s: bench", "postgres"
    );
    println!(
        "{:<44} {:>8.2} {:>10.0}",
        "preload the embedded queue (1,000 per send)",
        preload.as_secs_f64(),
        n as f64 / preload.as_secs_f64()
    );
    for (phase, time, cpu) in [
        ("levee workers: queue -> PostgreSQL", levee, levee_cpu),
        ("plain sqlx: memory -> PostgreSQL", raw, raw_cpu),
    ] {
        println!(
            "{phase:<44} {:>8.2} {:>10.0} {:>14.1} {:>14.1}",
            time.as_secs_f64(),
            n as f64 / time.as_secs_f64(),
            cpu.own,
            cpu.postgres
        );
    }
    println!(
        "ratio levee / plain sqlx: {:.2} (goal >= 0.7)",
        raw.as_secs_f64() / levee.as_secs_f64()
    );
    if let Some(line) = lag {
        println!("{line}");
    }
    Ok(())
}

/// CPU seconds used so far by this process (levee's workers and queue run in it) and by
/// all PostgreSQL processes, from /proc; zero where /proc cannot tell.
#[derive(Clone, Copy)]
struct Cpu {
    own: f64,
    postgres: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let ticks = |stat: &str| -> Option<(String, f64)> {
            // comm is in parentheses and may hold spaces; utime and stime follow it as the
            // 12th and 13th fields.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let used =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            // USER_HZ is 100 on Linux.
            Some((comm, used / 100.0))
        };
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| ticks(&s))
            .map_or(0.0, |(_, t)| t);
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|s| ticks(&s))
            .filter(|(comm, _)| comm == "postgres")
            .map(|(_, t)| t)
            .sum();
        Cpu { own, postgres }
    }

    /// What was used since `before`. PostgreSQL backends that exited meanwhile are not
    /// counted; the pools here keep theirs open for the whole phase.
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            own: self.own - before.own,
            postgres: (self.postgres - before.postgres).max(0.0),
        }
    }
}

/// Start each timed phase with no dirty pages left over from the one before.
async fn checkpoint(pg: &PgPool) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pg).await {
        eprintln!("CHECKPOINT failed (not a superuser?): {e}");
    }
}

async fn drop_table(pg: &PgPool, table: &str) {
    let sql = format!("DROP TABLE IF EXISTS \"{table}\"");
    if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(pg).await {
        eprintln!("cannot drop {table}: {e}");
    }
}

async fn expect_rows(pg: &PgPool, table: &str, n: usize) -> anyhow::Result<()> {
    let sql = format!("SELECT COUNT(*) FROM \"{table}\"");
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pg).await?;
    if count != n as i64 {
        bail!("{table} has {count} rows, expected {n}");
    }
    Ok(())
}

/// What a hand-written loader would do: `tasks` tasks each take the next `batch` rows and
/// send one multi-row INSERT … ON CONFLICT DO NOTHING, on a pool sized like levee's.
async fn raw_insert(
    url: &str,
    table: &str,
    rows: Arc<Vec<Signup>>,
    batch: usize,
    tasks: usize,
) -> anyhow::Result<Duration> {
    let pool = PgPoolOptions::new()
        .max_connections(SinkOptions::default().max_connections)
        .connect(url)
        .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (pool, rows, next, table) =
            (pool.clone(), rows.clone(), next.clone(), table.to_owned());
        handles.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= rows.len() {
                    return Ok::<_, sqlx::Error>(());
                }
                let chunk = &rows[start..(start + batch).min(rows.len())];
                let now = chrono::Utc::now()
                    .format("%Y-%m-%d %H:%M:%S%.6f+00")
                    .to_string();
                let mut query = sqlx::query(AssertSqlSafe(raw_sql(&table, chunk.len())));
                for s in chunk {
                    query = query.bind(&s.id).bind(&now).bind(&s.json);
                    for f in &s.fields {
                        query = query.bind(f);
                    }
                }
                query.execute(&pool).await?;
            }
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(started.elapsed())
}

fn raw_sql(table: &str, rows: usize) -> String {
    let width = 3 + COLUMNS.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = r * width;
            let mapped: String = (4..=width).map(|i| format!(", ${}", p + i)).collect();
            format!(
                "(${}, CAST(${} AS timestamptz), CAST(${} AS jsonb){mapped})",
                p + 1,
                p + 2,
                p + 3
            )
        })
        .collect();
    let columns = COLUMNS.join(", ");
    let values = values.join(", ");
    format!(
        "INSERT INTO \"{table}\" (id, received_at, payload, {columns}) VALUES {values} ON CONFLICT (id) DO NOTHING"
    )
}

/// The `p` quantile of `sorted`, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// d) Start a node on a fresh table, POST at a steady rate, watch for each id's row, and
/// sum it up in one line.
async fn lag(args: &Args, table: &str, pg: &PgPool) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let (mut node, addr) = start_node(args, table, dir.path()).await?;
    let url = format!("{addr}/v1/streams/{STREAM}");
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(pg.clone(), table.to_owned(), sent_rx));

    // Open loop: request i leaves at start + i/rate, whether or not earlier ones answered.
    let client = reqwest::Client::new();
    let body = r#"{"email":"ada.lovelace@example.org","name":"Ada Lovelace","zip":"37415","message":"Count me in, and keep me posted on the hearing."}"#;
    let total = args.rate * args.lag_seconds;
    let mut requests = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (started, mut next) = (Instant::now(), 0);
    while next < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
        for _ in next..due {
            let (client, url, sent_tx) = (client.clone(), url.clone(), sent_tx.clone());
            requests.spawn(async move {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let id = match response {
                    Ok(r) if r.status() == 202 => r.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                let answered = sent.elapsed();
                match id.as_ref().and_then(|v| v["id"].as_str()) {
                    Some(id) => sent_tx
                        .send((id.to_owned(), sent))
                        .is_ok()
                        .then_some(answered),
                    None => None,
                }
            });
        }
        next = due;
    }
    let sent_rate = total as f64 / started.elapsed().as_secs_f64();
    let (mut answers, mut refused) = (Vec::new(), 0);
    while let Some(answer) = requests.join_next().await {
        match answer? {
            Some(answered) => answers.push(answered),
            None => refused += 1,
        }
    }
    let accepted = answers.len();
    answers.sort();
    drop(sent_tx);
    let mut lags = watcher.await??;
    node.kill().await?;
    lags.sort();
    let (rate, seconds, measured) = (args.rate, args.lag_seconds, lags.len());
    let (p50, p99, max) = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    let (answer_p50, answer_p99) = (percentile(&answers, 0.5), percentile(&answers, 0.99));
    Ok(format!(
        "lag POST -> visible row at {rate}/s for {seconds} s (sent {sent_rate:.0}/s): \
         p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {measured} measured of {accepted} accepted, \
         {refused} not accepted; of which the 202 itself: p50 {answer_p50:.1} ms, p99 {answer_p99:.1} ms"
    ))
}

/// Every 5 ms, ask which of the ids still pending have a row now; a row's lag is the time
/// from its POST to the query that first saw it. Gives up 30 s after the last POST.
async fn watch(
    pg: PgPool,
    table: String,
    mut sent: mpsc::UnboundedReceiver<(String, Instant)>,
) -> anyhow::Result<Vec<Duration>> {
    let select = format!("SELECT id FROM \"{table}\" WHERE id = ANY($1)");
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let (mut lags, mut give_up) = (Vec::new(), None);
    loop {
        while let Ok((id, at)) = sent.try_recv() {
            pending.insert(id, at);
        }
        if give_up.is_none() && sent.is_closed() && sent.is_empty() {
            give_up = Some(Instant::now() + Duration::from_secs(30));
        }
        if give_up.is_some_and(|g| pending.is_empty() || Instant::now() > g) {
            return Ok(lags);
        }
        let asked = Instant::now();
        let ids: Vec<&str> = pending.keys().map(String::as_str).collect();
        let found: Vec<String> = sqlx::query_scalar(AssertSqlSafe(select.clone()))
            .bind(ids)
            .fetch_all(&pg)
            .await?;
        for id in found {
            if let Some(sent) = pending.remove(&id) {
                lags.push(asked.saturating_duration_since(sent));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `levee init` a config in `dir`, point it at PostgreSQL and `table` with this run's
/// workers and batch size, migrate, serve, and return the node and its URL.
async fn start_node(
    args: &Args,
    table: &str,
    dir: &Path,
) -> anyhow::Result<(tokio::process::Child, String)> {
    cli(args, &["init", "--dir", &dir.to_string_lossy()]).await?;
    let config = dir.join("levee.toml");
    let starter = std::fs::read_to_string(&config)?;
    let Some(line) = starter.lines().find(|l| l.starts_with("table = ")) else {
        bail!("the starter config has no `table = ` line to replace");
    };
    let (workers, batch) = (args.workers, args.batch);
    let stream = format!("table = \"{table}\"\nworkers = {workers}\nbatch_size = {batch}");
    std::fs::write(&config, starter.replacen(line, &stream, 1))?;
    let config = config.to_string_lossy().into_owned();
    cli(args, &["--config", &config, "migrate"]).await?;

    let log = dir.join("levee.log");
    let mut node = tokio::process::Command::new(&args.levee)
        .args(["--config", &config, "serve"])
        .envs(node_env(&args.database))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", args.levee.display()))?;
    let mut stdout = BufReader::new(node.stdout.take().expect("piped")).lines();
    let listening = async {
        while let Some(line) = stdout.next_line().await? {
            if let Some(addr) = line.strip_prefix("levee listening on ") {
                return Ok(addr.to_owned());
            }
        }
        bail!("levee exited; see {}", log.display())
    };
    let addr = tokio::time::timeout(Duration::from_secs(30), listening)
        .await
        .context("levee did not start within 30 s")??;
    // The node prints nothing more, but its stdout must stay open: a write to a closed pipe
    // would fail it.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    Ok((node, addr))
}

fn node_env(database: &str) -> [(&'static str, String); 4] {
    [
        ("LEVEE_DATABASE__URL", database.to_owned()),
        ("LEVEE_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        // The default refuses writes below 256 MiB free; a bench box's disk is not the point.
        ("LEVEE_QUEUE__EMBEDDED__MIN_FREE_DISK_BYTES", "0".to_owned()),
        ("LEVEE_LOG", "warn".to_owned()),
    ]
}

/// Run a levee CLI command to completion, failing with its output.
async fn cli(args: &Args, command: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(&args.levee)
        .args(command)
        .envs(node_env(&args.database))
        .output()
        .await
        .with_context(|| format!("cannot run {}", args.levee.display()))?;
    if !out.status.success() {
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        bail!("levee {} failed: {stdout}{stderr}", command.join(" "));
    }
    Ok(())
}
