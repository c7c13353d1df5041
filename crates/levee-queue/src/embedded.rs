//! The embedded queue: one SQLite file in WAL mode with `synchronous = FULL`, owned by one
//! writer thread.
//!
//! Why SQLite: it is the most trusted embedded store there is, its WAL commit is a single
//! fsync, and queue operations (lease the oldest visible rows, count what is in flight) are
//! plain indexed SQL. `bench/queue-store` measures it against redb and fjall.
//!
//! Group commit: every mutation goes through a channel to the writer thread, which takes
//! everything waiting, runs it inside one transaction (each command in its own savepoint, so
//! one failure doesn't undo the others) and commits once. Requests that arrive while a commit
//! is being fsynced form the next group, so throughput is not capped by the disk's fsync
//! rate. A reply, and so a 202, leaves only after the commit that holds it.
//!
//! The queue lives in its own directory, apart from the SQL database, and is locked by one
//! process at a time. Because of that lock, leases found at open belonged to a process that
//! died; they are made visible at once and count as a failed attempt.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    Capabilities, DeadMessage, Delivery, MessageState, NewMessage, Queue, QueueError, QueueSpec,
    QueueStats, Receipt, Result,
};

/// Commands waiting for the writer. When full, callers wait: this bounds memory, and with
/// every request blocked on its own reply it is reached only under extreme load.
const CHANNEL_CAPACITY: usize = 8192;
/// Most commands in one commit; more wait for the next.
const MAX_GROUP: usize = 2048;
/// How often the writer re-reads the free disk space.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of the embedded queue.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Refuse sends while the disk has less free space than this.
    pub min_free_disk_bytes: u64,
    /// Cap on the queue file's size; sends past it are refused like on a full disk.
    pub max_size_bytes: Option<u64>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            min_free_disk_bytes: 256 * 1024 * 1024,
            max_size_bytes: None,
        }
    }
}

pub struct EmbeddedQueue {
    commands: mpsc::Sender<Command>,
    /// Reads (stats, state, dead letters) use their own connection: WAL readers never wait
    /// for the writer.
    reader: Arc<Mutex<Connection>>,
    shared: Arc<Mutex<HashMap<String, Counts>>>,
    arrivals: watch::Sender<u64>,
    _lock: File,
}

/// Per-queue counters kept by the writer, so depth checks need no COUNT(*).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Messages not yet acked: queued, delayed or in flight.
    live: u64,
    dead: u64,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Declare(QueueSpec, Reply<()>),
    Send(String, Vec<NewMessage>, Reply<()>),
    Receive(String, usize, Duration, Reply<Vec<Delivery>>),
    Ack(String, Vec<Receipt>, Reply<()>),
    Nack(String, Receipt, Duration, String, Reply<()>),
    Release(String, Vec<Receipt>, Reply<()>),
    Extend(String, Receipt, Duration, Reply<bool>),
    Redrive(String, Option<Vec<String>>, Reply<u64>),
    Purge(String, Option<Vec<String>>, Reply<u64>),
    Close(oneshot::Sender<()>),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease INTEGER,
    last_error TEXT,
    UNIQUE (queue, id)
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    died_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    UNIQUE (queue, id)
);
";

impl EmbeddedQueue {
    /// Open (or create) the queue in `dir`. Fails if another process has it open.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<EmbeddedQueue> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let lock = File::create(dir.join("LOCK"))
            .map_err(|e| unavailable(format!("cannot create lock file: {e}")))?;
        lock.try_lock().map_err(|_| {
            unavailable(format!(
                "{} is in use by another levee process",
                dir.display()
            ))
        })?;

        let path = dir.join("queue.db");
        let conn = Connection::open(&path).map_err(storage)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        // The query planner stability guarantee: without it SQLite re-plans a statement
        // whenever some bound values change (a text queue name, a LIMIT), which cost the
        // writer a parse for nearly every receive and ack.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(storage)?;
        // Leases still held were held by a process that died (we hold the lock): give the
        // messages back now rather than when the lease would have run out.
        conn.execute(
            "UPDATE messages SET visible_at = ?1 WHERE lease IS NOT NULL AND visible_at > ?1",
            [now_ms()],
        )
        .map_err(storage)?;

        let reader = Connection::open(&path).map_err(storage)?;
        reader
            .execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
            .map_err(storage)?;

        let shared = Arc::new(Mutex::new(HashMap::new()));
        let arrivals = watch::channel(0).0;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let writer = Writer {
            conn,
            dir: dir.to_owned(),
            options,
            specs: HashMap::new(),
            counts: HashMap::new(),
            shared: shared.clone(),
            arrivals: arrivals.clone(),
            free_disk: None,
        };
        std::thread::Builder::new()
            .name("levee-queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| unavailable(format!("cannot start the writer thread: {e}")))?;

        Ok(EmbeddedQueue {
            commands: tx,
            reader: Arc::new(Mutex::new(reader)),
            shared,
            arrivals,
            _lock: lock,
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| unavailable("the queue is closed"))?;
        rx.await.map_err(|_| unavailable("the queue is closed"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn).map_err(storage)
        })
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))?
    }

    fn counts(&self, queue: &str) -> Result<Counts> {
        if self.commands.is_closed() {
            return Err(unavailable("the queue is closed"));
        }
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .get(queue)
            .copied()
            .ok_or_else(|| QueueError::UnknownQueue(queue.to_owned()))
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: true,
            message_state: true,
        }
    }

    async fn declare(&self, spec: &QueueSpec) -> Result<()> {
        let spec = spec.clone();
        self.call(|r| Command::Declare(spec, r)).await
    }

    async fn send(&self, queue: &str, messages: Vec<NewMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.call(|r| Command::Send(queue.to_owned(), messages, r))
            .await
    }

    async fn receive(&self, queue: &str, max: usize, lease: Duration) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.call(|r| Command::Receive(queue.to_owned(), max, lease, r))
            .await
    }

    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.call(|r| Command::Ack(queue.to_owned(), receipts.to_vec(), r))
            .await
    }

    async fn nack(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        self.call(|r| {
            Command::Nack(
                queue.to_owned(),
                receipt.clone(),
                delay,
                error.to_owned(),
                r,
            )
        })
        .await
    }

    async fn release(&self, queue: &str, receipts: &[Receipt]) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.call(|r| Command::Release(queue.to_owned(), receipts.to_vec(), r))
            .await
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<bool> {
        self.call(|r| Command::Extend(queue.to_owned(), receipt.clone(), lease, r))
            .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let counts = self.counts(queue)?;
        let q = queue.to_owned();
        let now = now_ms();
        let (in_flight, oldest) = self
            .read(move |c| {
                let in_flight: u64 = c.query_row(
                    "SELECT COUNT(*) FROM messages
                     WHERE queue = ?1 AND visible_at > ?2 AND lease IS NOT NULL",
                    params![q, now],
                    |r| r.get(0),
                )?;
                // The next message in line, from the receive index: no index on age (it
                // would cost every insert a write) and no scan. A message in flight counts
                // again once its lease runs out.
                let oldest: Option<i64> = if counts.live == 0 {
                    None
                } else {
                    c.query_row(
                        "SELECT enqueued_at FROM messages WHERE queue = ?1
                         ORDER BY visible_at, seq LIMIT 1",
                        [&q],
                        |r| r.get(0),
                    )
                    .optional()?
                };
                Ok((in_flight, oldest))
            })
            .await?;
        // The counters and the read connection are not one snapshot; keep them consistent.
        let in_flight = in_flight.min(counts.live);
        Ok(QueueStats {
            depth: counts.live - in_flight,
            in_flight,
            dead: counts.dead,
            oldest_age: oldest.map(|t| Duration::from_millis((now - t).max(0) as u64)),
        })
    }

    async fn state(&self, queue: &str, id: &str) -> Result<Option<MessageState>> {
        self.counts(queue)?;
        let (q, id) = (queue.to_owned(), id.to_owned());
        let now = now_ms();
        self.read(move |c| {
            let live: Option<(i64, Option<i64>)> = c
                .query_row(
                    "SELECT visible_at, lease FROM messages WHERE queue = ?1 AND id = ?2",
                    params![q, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((visible_at, lease)) = live {
                let leased = lease.is_some() && visible_at > now;
                return Ok(Some(if leased {
                    MessageState::InFlight
                } else {
                    MessageState::Queued
                }));
            }
            let dead = c
                .query_row(
                    "SELECT 1 FROM dead_letters WHERE queue = ?1 AND id = ?2",
                    params![q, id],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(dead.map(|()| MessageState::Dead))
        })
        .await
    }

    async fn dead(
        &self,
        queue: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeadMessage>> {
        self.counts(queue)?;
        let (q, after) = (queue.to_owned(), after.map(str::to_owned));
        self.read(move |c| {
            let after_seq: i64 = match after {
                None => 0,
                Some(id) => c
                    .query_row(
                        "SELECT seq FROM dead_letters WHERE queue = ?1 AND id = ?2",
                        params![q, id],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(i64::MAX),
            };
            let mut stmt = c.prepare_cached(
                "SELECT id, payload, enqueued_at, died_at, attempts, error FROM dead_letters
                 WHERE queue = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![q, after_seq, limit as i64], |r| {
                Ok(DeadMessage {
                    id: r.get(0)?,
                    payload: r.get(1)?,
                    enqueued_at: from_ms(r.get(2)?),
                    died_at: from_ms(r.get(3)?),
                    attempts: r.get(4)?,
                    error: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn redrive(&self, queue: &str, ids: Option<&[String]>) -> Result<u64> {
        let ids = ids.map(<[String]>::to_vec);
        self.call(|r| Command::Redrive(queue.to_owned(), ids, r))
            .await
    }

    async fn purge_dead(&self, queue: &str, ids: Option<&[String]>) -> Result<u64> {
        let ids = ids.map(<[String]>::to_vec);
        self.call(|r| Command::Purge(queue.to_owned(), ids, r))
            .await
    }

    fn arrivals(&self) -> Option<watch::Receiver<u64>> {
        Some(self.arrivals.subscribe())
    }

    async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The thread that owns the write connection.
struct Writer {
    conn: Connection,
    dir: PathBuf,
    options: EmbeddedOptions,
    specs: HashMap<String, QueueSpec>,
    /// Committed counters; a group works on a copy that replaces them only if it commits.
    counts: HashMap<String, Counts>,
    shared: Arc<Mutex<HashMap<String, Counts>>>,
    /// Bumped after each commit that added messages.
    arrivals: watch::Sender<u64>,
    free_disk: Option<(Instant, u64)>,
}

/// A reply to send once the group's commit has succeeded or failed.
type Pending = Box<dyn FnOnce(Option<&QueueError>) + Send>;

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> (Pending, bool) {
    let failed = result.is_err();
    let reply: Pending = Box::new(move |commit_error| {
        let result = match (result, commit_error) {
            (Ok(_), Some(e)) => Err(QueueError::Unavailable(e.to_string())),
            (result, _) => result,
        };
        let _ = reply.send(result);
    });
    (reply, failed)
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            closing = self.commit_group(group);
        }
        // Whatever was queued behind a Close is refused by dropping its reply.
        rx.close();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "queue checkpoint at close failed");
        }
        drop(self.conn);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Run a group in one transaction and answer every command after its commit.
    fn commit_group(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let started = Instant::now();
        let commands = group.len();
        let now = now_ms();
        let mut counts = self.counts.clone();
        let mut specs = self.specs.clone();
        let mut replies: Vec<Pending> = Vec::with_capacity(group.len());
        let mut closing = None;
        let free_disk = self.free_disk();

        let outcome = (|| -> rusqlite::Result<()> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for command in group {
                let mut ctx = Ctx {
                    now,
                    counts: &mut counts,
                    specs: &mut specs,
                    free_disk,
                    options: &self.options,
                };
                // A failed command's savepoint undoes its rows; this undoes its counts.
                // (A single send changes its counts only once it has succeeded.)
                let single_send = matches!(&command, Command::Send(_, m, _) if m.len() == 1);
                let snapshot = (!single_send).then(|| ctx.counts.clone());
                let (reply, failed) = match command {
                    Command::Declare(spec, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.declare(tx, spec)))
                    }
                    // One INSERT is atomic by itself: no savepoint for the common case.
                    Command::Send(q, msgs, r) if msgs.len() == 1 => {
                        pending(r, ctx.send(&tx, &q, &msgs))
                    }
                    Command::Send(q, msgs, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.send(tx, &q, &msgs)))
                    }
                    Command::Receive(q, max, lease, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.receive(tx, &q, max, lease)))
                    }
                    Command::Ack(q, receipts, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.ack(tx, &q, &receipts)))
                    }
                    Command::Nack(q, receipt, delay, error, r) => pending(
                        r,
                        savepoint(&mut tx, |tx| ctx.nack(tx, &q, &receipt, delay, &error)),
                    ),
                    Command::Release(q, receipts, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.release(tx, &q, &receipts)))
                    }
                    Command::Extend(q, receipt, lease, r) => pending(
                        r,
                        savepoint(&mut tx, |tx| ctx.extend(tx, &q, &receipt, lease)),
                    ),
                    Command::Redrive(q, ids, r) => pending(
                        r,
                        savepoint(&mut tx, |tx| ctx.redrive(tx, &q, ids.as_deref())),
                    ),
                    Command::Purge(q, ids, r) => pending(
                        r,
                        savepoint(&mut tx, |tx| ctx.purge(tx, &q, ids.as_deref())),
                    ),
                    Command::Close(done) => {
                        closing = Some(done);
                        continue;
                    }
                };
                if failed && let Some(snapshot) = snapshot {
                    counts = snapshot;
                }
                replies.push(reply);
                // On a full disk or an I/O error SQLite may roll back the whole transaction;
                // what follows would then commit piecemeal. Stop, and fail the group.
                if tx.is_autocommit() {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("the queue's transaction was rolled back".into()),
                    ));
                }
            }
            tx.commit()
        })();

        let error = match outcome {
            Ok(()) => {
                let added = counts
                    .iter()
                    .any(|(q, c)| self.counts.get(q).is_none_or(|old| c.live > old.live));
                if added {
                    self.arrivals.send_modify(|n| *n += 1);
                }
                self.counts = counts;
                self.specs = specs;
                *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = self.counts.clone();
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "queue commit failed");
                Some(storage(e))
            }
        };
        for reply in replies {
            reply(error.as_ref());
        }
        let micros = started.elapsed().as_micros() as u64;
        tracing::trace!(commands, micros, "group committed");
        closing
    }

    /// Free space on the queue's disk, re-read at most every DISK_CHECK_INTERVAL.
    fn free_disk(&mut self) -> u64 {
        if let Some((at, free)) = self.free_disk
            && at.elapsed() < DISK_CHECK_INTERVAL
        {
            return free;
        }
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read free disk space");
                u64::MAX
            }
        };
        self.free_disk = Some((Instant::now(), free));
        free
    }
}

/// Run one command in a savepoint: if it fails, only its own changes are undone.
fn savepoint<T>(tx: &mut Transaction<'_>, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let sp = tx.savepoint().map_err(storage)?;
    let result = f(&sp);
    match result {
        Ok(value) => {
            sp.commit().map_err(storage)?;
            Ok(value)
        }
        // Dropping the savepoint rolls it back.
        Err(e) => Err(e),
    }
}

/// What one command may touch: the group's working copies of the writer's state.
struct Ctx<'a> {
    now: i64,
    counts: &'a mut HashMap<String, Counts>,
    specs: &'a mut HashMap<String, QueueSpec>,
    free_disk: u64,
    options: &'a EmbeddedOptions,
}

impl Ctx<'_> {
    fn spec(&self, queue: &str) -> Result<&QueueSpec> {
        self.specs
            .get(queue)
            .ok_or_else(|| QueueError::UnknownQueue(queue.to_owned()))
    }

    fn counts(&mut self, queue: &str) -> &mut Counts {
        self.counts.entry(queue.to_owned()).or_default()
    }

    fn declare(&mut self, tx: &Connection, spec: QueueSpec) -> Result<()> {
        let live: u64 = tx
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE queue = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .map_err(storage)?;
        let dead: u64 = tx
            .query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE queue = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .map_err(storage)?;
        self.counts.insert(spec.name.clone(), Counts { live, dead });
        self.specs.insert(spec.name.clone(), spec);
        Ok(())
    }

    fn send(&mut self, tx: &Connection, queue: &str, messages: &[NewMessage]) -> Result<()> {
        let max_depth = self.spec(queue)?.max_depth;
        // Both limits refuse sends well before a write could fail: receives and acks, which
        // also write, must still work so the queue can drain.
        if self.free_disk < self.options.min_free_disk_bytes {
            return Err(QueueError::Full(format!(
                "less than {} bytes free on the queue's disk",
                self.options.min_free_disk_bytes
            )));
        }
        if let Some(max) = self.options.max_size_bytes
            && used_bytes(tx).map_err(storage)? >= max
        {
            return Err(QueueError::Full(format!(
                "the queue file holds its maximum of {max} bytes"
            )));
        }
        if self.counts(queue).live + messages.len() as u64 > max_depth {
            return Err(QueueError::Full(format!(
                "{queue} holds its maximum of {max_depth} messages"
            )));
        }
        // A dead id must not come back through a retried send; when the queue has no dead
        // letters (the usual case) there is nothing to look up.
        let sql = if self.counts(queue).dead == 0 {
            "INSERT OR IGNORE INTO messages (queue, id, payload, enqueued_at, visible_at)
             VALUES (?1, ?2, ?3, ?4, ?4)"
        } else {
            "INSERT OR IGNORE INTO messages (queue, id, payload, enqueued_at, visible_at)
             SELECT ?1, ?2, ?3, ?4, ?4
             WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE queue = ?1 AND id = ?2)"
        };
        let mut insert = tx.prepare_cached(sql).map_err(storage)?;
        let mut added = 0;
        for m in messages {
            added += insert
                .execute(params![queue, m.id, m.payload, self.now])
                .map_err(write_error)? as u64;
        }
        self.counts(queue).live += added;
        Ok(())
    }

    fn receive(
        &mut self,
        tx: &Connection,
        queue: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        let max_attempts = self.spec(queue)?.max_attempts;
        let lease_until = self.now + lease.as_millis() as i64;
        let mut out = Vec::with_capacity(max.min(1024));
        let mut select = tx
            .prepare_cached(
                "SELECT seq, id, payload, enqueued_at, attempts, lease, last_error FROM messages
                 WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
            )
            .map_err(storage)?;
        // One lease token for the whole batch, set by one statement.
        let token: i64 = rand::random();
        // Rows whose lease ran out with no attempts left are moved to the dead letters,
        // which makes room for more rows; loop until `max` are leased or none are visible.
        loop {
            let want = max - out.len();
            let rows = select
                .query_map(params![queue, self.now, want as i64], |r| {
                    Ok(Row {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        payload: r.get(2)?,
                        enqueued_at: r.get(3)?,
                        attempts: r.get(4)?,
                        leased: r.get::<_, Option<i64>>(5)?.is_some(),
                        last_error: r.get(6)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Row>>>())
                .map_err(storage)?;
            let exhausted = rows.len() < want;
            let mut taken = Vec::with_capacity(rows.len());
            for row in rows {
                if row.leased && row.attempts >= max_attempts {
                    let error = row.last_error.clone().unwrap_or_else(|| {
                        format!("not acknowledged within its lease {} times", row.attempts)
                    });
                    self.bury(tx, queue, row.seq, &error)?;
                    continue;
                }
                taken.push(row.seq);
                out.push(Delivery {
                    id: row.id,
                    payload: row.payload,
                    enqueued_at: from_ms(row.enqueued_at),
                    attempts: row.attempts + 1,
                    receipt: Receipt(format!("{}:{token}", row.seq)),
                });
            }
            // Lease this pass's rows before the next pass looks, so it cannot see them again.
            if !taken.is_empty() {
                let sql = format!(
                    "UPDATE messages SET lease = ?, visible_at = ?, attempts = attempts + 1
                     WHERE seq IN ({})",
                    placeholders(taken.len())
                );
                let params = [token, lease_until].into_iter().chain(taken);
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
                    .map_err(write_error)?;
            }
            if exhausted || out.len() >= max {
                return Ok(out);
            }
        }
    }

    /// Move a message to the dead letters.
    fn bury(&mut self, tx: &Connection, queue: &str, seq: i64, error: &str) -> Result<()> {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO dead_letters
                 (queue, id, payload, enqueued_at, died_at, attempts, error)
             SELECT queue, id, payload, enqueued_at, ?2, attempts, ?3 FROM messages WHERE seq = ?1",
        )
        .and_then(|mut s| s.execute(params![seq, self.now, error]))
        .map_err(write_error)?;
        tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")
            .and_then(|mut s| s.execute([seq]))
            .map_err(write_error)?;
        let counts = self.counts(queue);
        counts.live = counts.live.saturating_sub(1);
        counts.dead += 1;
        tracing::warn!(queue, seq, error, "message dead-lettered");
        Ok(())
    }

    fn ack(&mut self, tx: &Connection, queue: &str, receipts: &[Receipt]) -> Result<()> {
        self.spec(queue)?;
        let mut removed = 0;
        // One statement per lease token: receipts of one receive share theirs.
        for (token, seqs) in by_token(receipts) {
            let sql = format!(
                // `+queue`: look rows up by seq, never by the queue's index (a scan).
                "DELETE FROM messages WHERE +queue = ? AND lease = ? AND seq IN ({})",
                placeholders(seqs.len())
            );
            let params = [Value::from(queue.to_owned()), Value::from(token)]
                .into_iter()
                .chain(seqs.into_iter().map(Value::from));
            removed += tx
                .prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
                .map_err(write_error)? as u64;
        }
        let counts = self.counts(queue);
        counts.live = counts.live.saturating_sub(removed);
        Ok(())
    }

    fn nack(
        &mut self,
        tx: &Connection,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        let max_attempts = self.spec(queue)?.max_attempts;
        let Some((seq, token)) = parse_receipt(receipt) else {
            return Ok(());
        };
        let attempts: Option<u32> = tx
            .query_row(
                "SELECT attempts FROM messages WHERE seq = ?1 AND lease = ?2 AND queue = ?3",
                params![seq, token, queue],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        match attempts {
            None => Ok(()),
            Some(n) if n >= max_attempts => self.bury(tx, queue, seq, error),
            Some(_) => {
                tx.execute(
                    "UPDATE messages SET lease = NULL, visible_at = ?2, last_error = ?3
                     WHERE seq = ?1",
                    params![seq, self.now + delay.as_millis() as i64, error],
                )
                .map_err(write_error)?;
                Ok(())
            }
        }
    }

    fn release(&mut self, tx: &Connection, queue: &str, receipts: &[Receipt]) -> Result<()> {
        self.spec(queue)?;
        let mut release = tx
            .prepare_cached(
                "UPDATE messages SET lease = NULL, visible_at = ?4, attempts = MAX(attempts - 1, 0)
                 WHERE seq = ?1 AND lease = ?2 AND queue = ?3",
            )
            .map_err(storage)?;
        for receipt in receipts {
            if let Some((seq, token)) = parse_receipt(receipt) {
                release
                    .execute(params![seq, token, queue, self.now])
                    .map_err(write_error)?;
            }
        }
        Ok(())
    }

    fn extend(
        &mut self,
        tx: &Connection,
        queue: &str,
        receipt: &Receipt,
        lease: Duration,
    ) -> Result<bool> {
        self.spec(queue)?;
        let Some((seq, token)) = parse_receipt(receipt) else {
            return Ok(false);
        };
        let changed = tx
            .execute(
                "UPDATE messages SET visible_at = ?4 WHERE seq = ?1 AND lease = ?2 AND queue = ?3",
                params![seq, token, queue, self.now + lease.as_millis() as i64],
            )
            .map_err(write_error)?;
        Ok(changed == 1)
    }

    fn redrive(&mut self, tx: &Connection, queue: &str, ids: Option<&[String]>) -> Result<u64> {
        self.spec(queue)?;
        let ids: Vec<Option<&str>> = match ids {
            None => vec![None],
            Some(ids) => ids.iter().map(|id| Some(id.as_str())).collect(),
        };
        // `?2 IS NULL` selects all dead letters of the queue at once.
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO messages (queue, id, payload, enqueued_at, visible_at)
                 SELECT queue, id, payload, enqueued_at, ?3 FROM dead_letters
                 WHERE queue = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY seq",
            )
            .map_err(storage)?;
        let mut delete = tx
            .prepare_cached("DELETE FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR id = ?2)")
            .map_err(storage)?;
        let (mut added, mut moved) = (0, 0);
        for id in ids {
            added += insert
                .execute(params![queue, id, self.now])
                .map_err(write_error)? as u64;
            moved += delete.execute(params![queue, id]).map_err(write_error)? as u64;
        }
        let counts = self.counts(queue);
        counts.live += added;
        counts.dead = counts.dead.saturating_sub(moved);
        Ok(moved)
    }

    fn purge(&mut self, tx: &Connection, queue: &str, ids: Option<&[String]>) -> Result<u64> {
        self.spec(queue)?;
        let mut delete = tx
            .prepare_cached("DELETE FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR id = ?2)")
            .map_err(storage)?;
        let removed = match ids {
            None => delete
                .execute(params![queue, None::<&str>])
                .map_err(write_error)? as u64,
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    n += delete.execute(params![queue, id]).map_err(write_error)? as u64;
                }
                n
            }
        };
        let counts = self.counts(queue);
        counts.dead = counts.dead.saturating_sub(removed);
        Ok(removed)
    }
}

struct Row {
    seq: i64,
    id: String,
    payload: Vec<u8>,
    enqueued_at: i64,
    attempts: u32,
    leased: bool,
    last_error: Option<String>,
}

/// Bytes of the queue file in use (pages on the free list are reusable).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, u64>(0));
    Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
}

/// Receipts grouped by lease token.
fn by_token(receipts: &[Receipt]) -> HashMap<i64, Vec<i64>> {
    let mut groups: HashMap<i64, Vec<i64>> = HashMap::new();
    for (seq, token) in receipts.iter().filter_map(parse_receipt) {
        groups.entry(token).or_default().push(seq);
    }
    groups
}

/// `?, ?, …` for an IN list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn parse_receipt(receipt: &Receipt) -> Option<(i64, i64)> {
    let (seq, token) = receipt.0.split_once(':')?;
    Some((seq.parse().ok()?, token.parse().ok()?))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn unavailable(message: impl Into<String>) -> QueueError {
    QueueError::Unavailable(message.into())
}

fn storage(e: rusqlite::Error) -> QueueError {
    QueueError::Backend(e.to_string())
}

/// A write that failed because the file may not grow is "full", not a malfunction.
fn write_error(e: rusqlite::Error) -> QueueError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => QueueError::Full("the queue's disk is full".into()),
        _ => storage(e),
    }
}
