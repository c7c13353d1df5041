//! The embedded queue: one SQLite file in WAL mode with `synchronous = FULL`, owned by one
//! writer thread.
//!
//! Why SQLite: it is the most trusted embedded store there is, its WAL commit is a single
//! fsync, and queue operations (read the oldest visible rows, delete acked ones) are plain
//! indexed SQL. `bench/queue-store` measures it against redb and fjall.
//!
//! Group commit: every mutation goes through a channel to the writer thread, which takes
//! everything waiting, runs it inside one transaction (each command of several statements
//! in its own savepoint, so one failure doesn't undo the others) and commits once. Requests
//! that arrive while a commit is being fsynced form the next group, so throughput is not
//! capped by the disk's fsync rate. A reply, and so a 202, leaves only after the commit that
//! holds it.
//!
//! The queue lives in its own directory, apart from the SQL database, and is locked by one
//! process at a time. Because of that lock a lease can never outlive the process holding it,
//! so leases are kept in memory, not on disk: receiving is a read, and a process that dies
//! takes its leases with it (its messages are visible again as soon as the queue reopens).
//!
//! Receives therefore do not go through the writer: they read the last commit on a
//! connection of their own and lease under the leases' lock, so they never wait for an
//! fsync. (Only when leases ran out does a receive go to the writer, which must record the
//! failed attempts first.) Two rules keep such reads right while the writer works ahead of
//! its commit: a lease the writer ends in a change not yet committed (an ack deletes the
//! row, a nack delays it) is marked *settling* until the commit, and receives skip it; and
//! a message the writer makes visible (a send, a nack, a redrive) moves the receive cursor
//! back only once committed, when receives can see it.
//! What must survive a crash is written when a delivery fails: a nack, or a lease that ran
//! out, writes the attempt, the retry delay and the error, so a message that keeps failing
//! is still dead-lettered after `max_attempts`. A delivery cut short by a crash is not
//! counted as an attempt: there is no write at receive to count it.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
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
/// Most messages one `DELETE` of an ack names (SQLite takes at most 32,766 parameters).
const ACK_CHUNK: usize = 1000;
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
    /// Receives read with another one, so a receive never waits for the writer's fsync:
    /// leases live in memory, and receiving writes nothing unless leases ran out.
    receiver: Arc<Mutex<Connection>>,
    shared: Arc<Mutex<HashMap<String, QueueState>>>,
    /// The writer's leases by queue id, which stats and state read to tell in flight from
    /// queued.
    leases: Arc<Mutex<HashMap<i64, Leases>>>,
    arrivals: watch::Sender<u64>,
    _lock: File,
}

/// What the writer keeps of a declared queue; counters, so depth checks need no COUNT(*).
#[derive(Debug, Clone, Copy)]
struct QueueState {
    /// The queue's number in the file: rows and index keys carry it instead of the name.
    id: i64,
    max_attempts: u32,
    max_depth: u64,
    /// Messages not yet acked: queued, delayed or in flight.
    live: u64,
    dead: u64,
}

/// What one queue has in flight, shared by the writer and the receivers under one lock.
#[derive(Debug)]
struct Leases {
    /// The leases, by message seq. (Seqs come from SQLite, not from users: a fast hash is
    /// safe, and measurably cheaper than SipHash at a few lookups per message.)
    held: foldhash::HashMap<i64, Lease>,
    /// `(until, seq)` of every lease, soonest first, to find the ones that ran out.
    expiry: BTreeSet<(i64, i64)>,
    /// Messages whose lease the writer ended in a change it has not committed yet (an ack,
    /// a nack, a lease that ran out). A receiver reads the last commit, where they are still
    /// as they were, so it skips them until the writer's commit settles them.
    settling: foldhash::HashSet<i64>,
    /// Where the next receive starts reading the `messages_ready` index, a
    /// `(visible_at, seq)`: every visible message that is not leased sorts after it, so a
    /// receive does not walk over the messages in flight. Lowered whenever a message
    /// becomes visible again or is added (`reveal`), once that is committed.
    cursor: (i64, i64),
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            held: Default::default(),
            expiry: BTreeSet::new(),
            settling: Default::default(),
            cursor: (i64::MIN, i64::MIN),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Shared by the messages of one receive, and part of their receipts.
    token: i64,
    until: i64,
    /// The message's `visible_at` on disk: where it waits in `messages_ready`.
    visible_at: i64,
    /// Its failed attempts on disk (the delivery in flight not included).
    attempts: u32,
}

impl Leases {
    /// The lease a receipt proves, unless the receipt is stale.
    fn get(&self, receipt: &Receipt) -> Option<(i64, Lease)> {
        let (seq, token) = parse_receipt(receipt)?;
        let lease = self.held.get(&seq)?;
        (lease.token == token).then_some((seq, *lease))
    }

    /// Set or end the lease of `seq`; returns what was there.
    fn set(&mut self, seq: i64, lease: Option<Lease>) -> Option<Lease> {
        let before = match lease {
            Some(lease) => self.held.insert(seq, lease),
            None => self.held.remove(&seq),
        };
        if let Some(old) = before {
            self.expiry.remove(&(old.until, seq));
        }
        if let Some(new) = lease {
            self.expiry.insert((new.until, seq));
        }
        before
    }

    /// The message `seq` is visible (now or once `visible_at` comes) and not leased: move
    /// the receive cursor back before it if needed.
    fn reveal(&mut self, visible_at: i64, seq: i64) {
        self.cursor = self.cursor.min((visible_at, seq.saturating_sub(1)));
    }

    /// Whether some leases ran out: they must be settled, by the writer, before a receive.
    fn expired(&self, now: i64) -> bool {
        self.expiry.first().is_some_and(|(until, _)| *until <= now)
    }

    /// Leases still running at `now` (one that ran out but was not reclaimed yet counts as
    /// queued).
    fn in_flight(&self, now: i64) -> u64 {
        self.expiry
            .range((now.saturating_add(1), i64::MIN)..)
            .count() as u64
    }

    fn holds(&self, seq: i64, now: i64) -> bool {
        self.held.get(&seq).is_some_and(|l| l.until > now)
    }

    /// Lease up to `max` visible messages from the cursor on, reading through `conn`: the
    /// writer's own connection, or a receiver's, which sees the last commit. Returns them
    /// with their seqs.
    fn take(
        &mut self,
        conn: &Connection,
        queue: i64,
        now: i64,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<(i64, Delivery)>> {
        let mut select = conn
            .prepare_cached(
                "SELECT seq, id, payload, enqueued_at, visible_at, attempts FROM messages
                 WHERE queue = ?1 AND visible_at <= ?2 AND (visible_at, seq) > (?3, ?4)
                 ORDER BY visible_at, seq",
            )
            .map_err(storage)?;
        let mut cursor = self.cursor;
        let mut rows = select
            .query(params![queue, now, cursor.0, cursor.1])
            .map_err(storage)?;
        // One lease token for the whole batch.
        let lease = Lease {
            token: rand::random(),
            until: now + lease.as_millis() as i64,
            visible_at: 0,
            attempts: 0,
        };
        let mut out = Vec::with_capacity(max.min(1024));
        // Leased only once every row is read: a read that fails half-way leases nothing.
        let mut leased = Vec::with_capacity(max.min(1024));
        while out.len() < max
            && let Some(row) = rows.next().map_err(storage)?
        {
            let (seq, visible_at): (i64, i64) = (col(row, 0)?, col(row, 4)?);
            cursor = (visible_at, seq);
            // Only after a message came back can leased ones lie past the cursor. A settling
            // one that stays visible (a nack, a lease that ran out) is revealed again by the
            // writer's commit.
            if self.held.contains_key(&seq) || self.settling.contains(&seq) {
                continue;
            }
            let attempts: u32 = col(row, 5)?;
            out.push((
                seq,
                Delivery {
                    id: col(row, 1)?,
                    payload: col(row, 2)?,
                    enqueued_at: from_ms(col(row, 3)?),
                    attempts: attempts + 1,
                    receipt: Receipt(format!("{seq}:{}", lease.token)),
                },
            ));
            leased.push((seq, visible_at, attempts));
        }
        for (seq, visible_at, attempts) in leased {
            self.set(
                seq,
                Some(Lease {
                    visible_at,
                    attempts,
                    ..lease
                }),
            );
        }
        self.cursor = cursor;
        Ok(out)
    }
}

/// A lease as it was before a change, put back if the change is rolled back.
struct Undo {
    queue: i64,
    seq: i64,
    before: Option<Lease>,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Declare(QueueSpec, Reply<()>),
    Send(String, Vec<NewMessage>, Reply<()>),
    Receive(String, usize, Duration, Reply<Vec<Delivery>>),
    Ack(String, Vec<Receipt>, Reply<()>),
    Nack(String, Receipt, Duration, String, Reply<()>),
    Redrive(String, Option<Vec<String>>, Reply<u64>),
    Purge(String, Option<Vec<String>>, Reply<u64>),
    Close(oneshot::Sender<()>),
}

/// The file's layout, kept in `PRAGMA user_version`. Version 0 is an empty file, or the
/// first layout (queue names in every row, leases on disk); [`migrate`] upgrades it.
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE queues (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    queue INTEGER NOT NULL,
    id TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    -- Failed deliveries: nacked, or not acked within their lease.
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (queue, id)
);
CREATE INDEX messages_ready ON messages (queue, visible_at, seq);
CREATE TABLE dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue INTEGER NOT NULL,
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
        let mut conn = Connection::open(&path).map_err(storage)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(storage)?;
        migrate(&mut conn, &path)?;
        // The query planner stability guarantee: without it SQLite re-plans a statement
        // whenever some bound values change (a text queue name, a LIMIT), which cost the
        // writer a parse for nearly every receive and ack.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(storage)?;

        let read_only = || -> Result<Connection> {
            let conn = Connection::open(&path).map_err(storage)?;
            conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
                .map_err(storage)?;
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
                .map_err(storage)?;
            Ok(conn)
        };
        let (reader, receiver) = (read_only()?, read_only()?);

        let shared = Arc::new(Mutex::new(HashMap::new()));
        let leases = Arc::new(Mutex::new(HashMap::new()));
        let arrivals = watch::channel(0).0;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let writer = Writer {
            conn,
            dir: dir.to_owned(),
            options,
            queues: HashMap::new(),
            shared: shared.clone(),
            leases: leases.clone(),
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
            receiver: Arc::new(Mutex::new(receiver)),
            shared,
            leases,
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
        blocking(move || f(&lock(&reader)).map_err(storage)).await
    }

    /// Run `f` on the leases of `queue`, off the async threads: the writer holds their lock
    /// while it runs a group's commands.
    async fn with_leases<T: Send + 'static>(
        &self,
        queue: &str,
        f: impl FnOnce(&mut Leases) -> T + Send + 'static,
    ) -> Result<T> {
        let (id, leases) = (self.queue(queue)?.id, self.leases.clone());
        blocking(move || Ok(f(lock(&leases).entry(id).or_default()))).await
    }

    fn queue(&self, queue: &str) -> Result<QueueState> {
        if self.commands.is_closed() {
            return Err(unavailable("the queue is closed"));
        }
        let shared = lock(&self.shared);
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
        // Read from the last commit, unless leases ran out: settling them writes, which is
        // the writer's job.
        let (id, leases) = (self.queue(queue)?.id, self.leases.clone());
        let receiver = self.receiver.clone();
        let read = blocking(move || {
            let conn = lock(&receiver);
            let mut leases = lock(&leases);
            let leases = leases.entry(id).or_default();
            let now = now_ms();
            if leases.expired(now) {
                return Ok(None);
            }
            let taken = leases.take(&conn, id, now, max, lease)?;
            Ok(Some(taken.into_iter().map(|(_, d)| d).collect()))
        });
        match read.await? {
            Some(batch) => Ok(batch),
            None => {
                self.call(|r| Command::Receive(queue.to_owned(), max, lease, r))
                    .await
            }
        }
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
        // Leases only, nothing to write: the messages are visible again at their old place,
        // and their attempts on disk never counted this delivery.
        let receipts = receipts.to_vec();
        self.with_leases(queue, move |leases| {
            for receipt in &receipts {
                if let Some((seq, lease)) = leases.get(receipt) {
                    leases.set(seq, None);
                    leases.reveal(lease.visible_at, seq);
                }
            }
        })
        .await
    }

    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<bool> {
        let receipt = receipt.clone();
        self.with_leases(queue, move |leases| {
            let Some((seq, held)) = leases.get(&receipt) else {
                return false;
            };
            let until = now_ms() + lease.as_millis() as i64;
            leases.set(seq, Some(Lease { until, ..held }));
            true
        })
        .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let counts = self.queue(queue)?;
        let leases = self.leases.clone();
        let now = now_ms();
        let (in_flight, oldest) = self
            .read(move |c| {
                let in_flight = lock(&leases)
                    .get(&counts.id)
                    .map_or(0, |l| l.in_flight(now));
                // The next message in line, from the receive index: no index on age (it
                // would cost every insert a write) and no scan. A message in flight keeps
                // its place there.
                let oldest: Option<i64> = if counts.live == 0 {
                    None
                } else {
                    c.query_row(
                        "SELECT enqueued_at FROM messages WHERE queue = ?1
                         ORDER BY visible_at, seq LIMIT 1",
                        [counts.id],
                        |r| r.get(0),
                    )
                    .optional()?
                };
                Ok((in_flight, oldest))
            })
            .await?;
        // The counters, the leases and the read connection are not one snapshot; keep them
        // consistent.
        let in_flight = in_flight.min(counts.live);
        Ok(QueueStats {
            depth: counts.live - in_flight,
            in_flight,
            dead: counts.dead,
            oldest_age: oldest.map(|t| Duration::from_millis((now - t).max(0) as u64)),
        })
    }

    async fn state(&self, queue: &str, id: &str) -> Result<Option<MessageState>> {
        let q = self.queue(queue)?.id;
        let (id, leases) = (id.to_owned(), self.leases.clone());
        let now = now_ms();
        self.read(move |c| {
            let live: Option<i64> = c
                .query_row(
                    "SELECT seq FROM messages WHERE queue = ?1 AND id = ?2",
                    params![q, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(seq) = live {
                let leased = lock(&leases).get(&q).is_some_and(|l| l.holds(seq, now));
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
        let q = self.queue(queue)?.id;
        let after = after.map(str::to_owned);
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

/// Bring the file to the current layout, or refuse a layout this build does not know.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if version == VERSION {
        return Ok(());
    }
    if version > VERSION {
        return Err(unavailable(format!(
            "{} has queue format {version}, newer than this levee reads ({VERSION}): \
             run the newer levee, or drain the queue with it first",
            path.display()
        )));
    }
    let tx = conn.transaction().map_err(storage)?;
    let old = tx
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(storage)?
        .is_some();
    let script = if old {
        // Format 0: queue names in every row, and leases on disk. Any lease still held
        // belonged to a process that died: its delivery was already counted in `attempts`,
        // and the message is visible at once.
        format!(
            "ALTER TABLE messages RENAME TO messages_0;
             ALTER TABLE dead_letters RENAME TO dead_letters_0;
             DROP INDEX messages_ready;
             {SCHEMA}
             INSERT INTO queues (name)
                 SELECT queue FROM messages_0 UNION SELECT queue FROM dead_letters_0;
             INSERT INTO messages
                 (seq, queue, id, payload, enqueued_at, visible_at, attempts, last_error)
             SELECT m.seq, q.id, m.id, m.payload, m.enqueued_at,
                 IIF(m.lease IS NULL, m.visible_at, MIN(m.visible_at, {now})),
                 m.attempts, m.last_error
             FROM messages_0 m JOIN queues q ON q.name = m.queue;
             INSERT INTO dead_letters
                 (seq, queue, id, payload, enqueued_at, died_at, attempts, error)
             SELECT d.seq, q.id, d.id, d.payload, d.enqueued_at, d.died_at, d.attempts, d.error
             FROM dead_letters_0 d JOIN queues q ON q.name = d.queue;
             DROP TABLE messages_0;
             DROP TABLE dead_letters_0;",
            now = now_ms()
        )
    } else {
        SCHEMA.to_owned()
    };
    tx.execute_batch(&script).map_err(storage)?;
    tx.pragma_update(None, "user_version", VERSION)
        .and_then(|()| tx.commit())
        .map_err(storage)
}

/// The thread that owns the write connection.
struct Writer {
    conn: Connection,
    dir: PathBuf,
    options: EmbeddedOptions,
    /// Committed state; a group works on a copy that replaces it only if it commits.
    queues: HashMap<String, QueueState>,
    shared: Arc<Mutex<HashMap<String, QueueState>>>,
    /// Changed in place by each command; a command or group that fails puts back what it
    /// changed.
    leases: Arc<Mutex<HashMap<i64, Leases>>>,
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
        let mut queues = self.queues.clone();
        let mut replies: Vec<Pending> = Vec::with_capacity(group.len());
        let mut closing = None;
        let free_disk = self.free_disk();
        let mut undo = Vec::new();
        let mut settle = Settle::default();

        let outcome = (|| -> rusqlite::Result<()> {
            let mut tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Whether this group may have added messages yet (see `answered_now` below).
            let mut adding = false;
            for command in group {
                let mark = undo.len();
                adding |= matches!(command, Command::Send(..) | Command::Redrive(..));
                let mut ctx = Ctx {
                    now,
                    queues: &mut queues,
                    leases: &self.leases,
                    undo: &mut undo,
                    settle: &mut settle,
                    free_disk,
                    options: &self.options,
                };
                // A failed command's savepoint undoes its rows; this undoes its queue state,
                // and the undo log its leases. (A single send changes its state only once it
                // has succeeded.)
                let single_send = matches!(&command, Command::Send(_, m, _) if m.len() == 1);
                let snapshot = (!single_send).then(|| ctx.queues.clone());
                // A receive that wrote nothing, before anything was added in this group, has
                // read committed messages only: it needs no fsync and is answered at once,
                // its leases kept whatever becomes of the group.
                let answered_now =
                    matches!(&command, Command::Receive(q, ..) if !adding && !ctx.expired(q));
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
                    // A receive only reads, unless leases that ran out must be settled first.
                    Command::Receive(q, max, lease, r) if !ctx.expired(&q) => {
                        pending(r, ctx.receive(&tx, &q, max, lease))
                    }
                    Command::Receive(q, max, lease, r) => {
                        pending(r, savepoint(&mut tx, |tx| ctx.receive(tx, &q, max, lease)))
                    }
                    // One DELETE, atomic by itself.
                    Command::Ack(q, receipts, r) => pending(r, ctx.ack(&tx, &q, &receipts)),
                    Command::Nack(q, receipt, delay, error, r) => pending(
                        r,
                        savepoint(&mut tx, |tx| ctx.nack(tx, &q, &receipt, delay, &error)),
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
                if failed {
                    if let Some(snapshot) = snapshot {
                        queues = snapshot;
                    }
                    undo_leases(&mut lock(&self.leases), undo.drain(mark..));
                }
                if answered_now {
                    undo.truncate(mark);
                    reply(None);
                } else {
                    replies.push(reply);
                }
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
                let added = queues
                    .iter()
                    .any(|(q, s)| self.queues.get(q).is_none_or(|old| s.live > old.live));
                self.queues = queues;
                *lock(&self.shared) = self.queues.clone();
                settle.committed(&mut lock(&self.leases));
                // After the reveals, so that a woken receive starts before the new messages.
                if added {
                    self.arrivals.send_modify(|n| *n += 1);
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "queue commit failed");
                settle.rolled_back(&mut lock(&self.leases), undo.drain(..));
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

/// Put leases back as they were, newest change first. A message leased by the undone change
/// is visible again.
fn undo_leases(leases: &mut HashMap<i64, Leases>, undo: impl DoubleEndedIterator<Item = Undo>) {
    for u in undo.rev() {
        let leases = leases.entry(u.queue).or_default();
        if let (Some(lease), None) = (leases.set(u.seq, u.before), u.before) {
            leases.reveal(lease.visible_at, u.seq);
        }
    }
}

/// What a group's commit settles in the leases, applied once the commit is done.
#[derive(Default)]
struct Settle {
    /// `(queue, seq)` of messages whose lease ended in the group (see `Leases::settling`).
    settled: Vec<(i64, i64)>,
    /// `(queue, visible_at, seq)` of messages the group made visible: a receiver sees them
    /// only once committed, and must not move its cursor past them before.
    reveals: Vec<(i64, i64, i64)>,
}

impl Settle {
    /// The group committed: receivers may now see what it revealed.
    fn committed(self, leases: &mut HashMap<i64, Leases>) {
        for &(queue, visible_at, seq) in &self.reveals {
            leases.entry(queue).or_default().reveal(visible_at, seq);
        }
        self.unmark(leases);
    }

    /// The group's commit failed: its lease changes are undone.
    fn rolled_back(self, leases: &mut HashMap<i64, Leases>, undo: std::vec::Drain<'_, Undo>) {
        undo_leases(leases, undo);
        self.unmark(leases);
    }

    /// The ended leases are settled either way: no longer skipped by receives.
    fn unmark(self, leases: &mut HashMap<i64, Leases>) {
        for (queue, seq) in self.settled {
            if let Some(leases) = leases.get_mut(&queue) {
                leases.settling.remove(&seq);
            }
        }
    }
}

/// What one command may touch: the group's working copy of the queues' state, and the
/// leases with their undo log. The leases are locked for each change, never across a
/// statement that writes: receivers wait for the lock, and must not wait for the disk.
struct Ctx<'a> {
    now: i64,
    queues: &'a mut HashMap<String, QueueState>,
    leases: &'a Mutex<HashMap<i64, Leases>>,
    undo: &'a mut Vec<Undo>,
    settle: &'a mut Settle,
    free_disk: u64,
    options: &'a EmbeddedOptions,
}

impl Ctx<'_> {
    fn queue(&mut self, name: &str) -> Result<&mut QueueState> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| QueueError::UnknownQueue(name.to_owned()))
    }

    fn with_leases<T>(&self, queue: i64, f: impl FnOnce(&mut Leases) -> T) -> T {
        f(lock(self.leases).entry(queue).or_default())
    }

    /// Whether some of the queue's leases ran out.
    fn expired(&self, name: &str) -> bool {
        self.queues
            .get(name)
            .is_some_and(|q| self.with_leases(q.id, |l| l.expired(self.now)))
    }

    /// End the leases `select` picks, in a change to their messages that receivers see
    /// only once committed. Returns them, by seq.
    fn end_leases(
        &mut self,
        queue: i64,
        select: impl FnOnce(&Leases) -> Vec<(i64, Lease)>,
    ) -> Vec<(i64, Lease)> {
        let ended = self.with_leases(queue, |leases| {
            let ended = select(leases);
            for &(seq, _) in &ended {
                leases.set(seq, None);
                leases.settling.insert(seq);
            }
            ended
        });
        for &(seq, lease) in &ended {
            self.settle.settled.push((queue, seq));
            self.undo.push(Undo {
                queue,
                seq,
                before: Some(lease),
            });
        }
        ended
    }

    /// The message is visible (now or at `visible_at`) once the group commits.
    fn reveal(&mut self, queue: i64, visible_at: i64, seq: i64) {
        self.settle.reveals.push((queue, visible_at, seq));
    }

    fn declare(&mut self, tx: &Connection, spec: QueueSpec) -> Result<()> {
        let count = |sql: &str, id: i64| tx.query_row(sql, [id], |r| r.get::<_, u64>(0));
        let state = tx
            .execute(
                "INSERT OR IGNORE INTO queues (name) VALUES (?1)",
                [&spec.name],
            )
            .and_then(|_| {
                tx.query_row("SELECT id FROM queues WHERE name = ?1", [&spec.name], |r| {
                    r.get(0)
                })
            })
            .and_then(|id| {
                Ok(QueueState {
                    id,
                    max_attempts: spec.max_attempts,
                    max_depth: spec.max_depth,
                    live: count("SELECT COUNT(*) FROM messages WHERE queue = ?1", id)?,
                    dead: count("SELECT COUNT(*) FROM dead_letters WHERE queue = ?1", id)?,
                })
            })
            .map_err(write_error)?;
        self.queues.insert(spec.name, state);
        // Receives start again from the first message.
        self.reveal(state.id, i64::MIN, i64::MIN);
        Ok(())
    }

    fn send(&mut self, tx: &Connection, name: &str, messages: &[NewMessage]) -> Result<()> {
        let (now, free_disk, options) = (self.now, self.free_disk, self.options);
        let queue = self.queue(name)?;
        // Both limits refuse sends well before a write could fail: receives and acks, which
        // also write, must still work so the queue can drain.
        if free_disk < options.min_free_disk_bytes {
            return Err(QueueError::Full(format!(
                "less than {} bytes free on the queue's disk",
                options.min_free_disk_bytes
            )));
        }
        if let Some(max) = options.max_size_bytes
            && used_bytes(tx).map_err(storage)? >= max
        {
            return Err(QueueError::Full(format!(
                "the queue file holds its maximum of {max} bytes"
            )));
        }
        if queue.live + messages.len() as u64 > queue.max_depth {
            return Err(QueueError::Full(format!(
                "{name} holds its maximum of {} messages",
                queue.max_depth
            )));
        }
        // A dead id must not come back through a retried send; when the queue has no dead
        // letters (the usual case) there is nothing to look up.
        let sql = if queue.dead == 0 {
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
                .execute(params![queue.id, m.id, m.payload, now])
                .map_err(write_error)? as u64;
        }
        if added > 0 {
            queue.live += added;
            let id = queue.id;
            // New messages are visible at `now`. They usually sort after the cursor already,
            // but not if the clock stepped back, or if they reuse the seqs of the newest
            // messages, acked in the same millisecond.
            self.reveal(id, now, i64::MIN);
        }
        Ok(())
    }

    fn receive(
        &mut self,
        tx: &Connection,
        name: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        self.reclaim(tx, name)?;
        let (queue, now) = (self.queue(name)?.id, self.now);
        let taken = self.with_leases(queue, |l| l.take(tx, queue, now, max, lease))?;
        let mut out = Vec::with_capacity(taken.len());
        for (seq, delivery) in taken {
            self.undo.push(Undo {
                queue,
                seq,
                before: None,
            });
            out.push(delivery);
        }
        Ok(out)
    }

    /// Leases that ran out: the delivery counts as a failed attempt, and the message is
    /// visible again in its old place, or dead if that was its last attempt.
    fn reclaim(&mut self, tx: &Connection, name: &str) -> Result<()> {
        let (now, queue) = (self.now, *self.queue(name)?);
        let expired = self.end_leases(queue.id, |leases| {
            leases
                .expiry
                .iter()
                .take_while(|(until, _)| *until <= now)
                .map(|(_, seq)| (*seq, leases.held[seq]))
                .collect()
        });
        for (seq, lease) in expired {
            let attempts = lease.attempts + 1;
            if attempts >= queue.max_attempts {
                self.bury(tx, name, seq, attempts, None)?;
                continue;
            }
            tx.prepare_cached("UPDATE messages SET attempts = ?2 WHERE seq = ?1")
                .and_then(|mut s| s.execute(params![seq, attempts]))
                .map_err(write_error)?;
            self.reveal(queue.id, lease.visible_at, seq);
        }
        Ok(())
    }

    /// Move a message to the dead letters after its last attempt, with `error` or else the
    /// last error it had.
    fn bury(
        &mut self,
        tx: &Connection,
        name: &str,
        seq: i64,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<()> {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO dead_letters
                 (queue, id, payload, enqueued_at, died_at, attempts, error)
             SELECT queue, id, payload, enqueued_at, ?2, ?3,
                 COALESCE(?4, last_error, 'not acknowledged within its lease ' || ?3 || ' times')
             FROM messages WHERE seq = ?1",
        )
        .and_then(|mut s| s.execute(params![seq, self.now, attempts, error]))
        .map_err(write_error)?;
        tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")
            .and_then(|mut s| s.execute([seq]))
            .map_err(write_error)?;
        let queue = self.queue(name)?;
        queue.live = queue.live.saturating_sub(1);
        queue.dead += 1;
        tracing::warn!(queue = name, seq, error, "message dead-lettered");
        Ok(())
    }

    fn ack(&mut self, tx: &Connection, name: &str, receipts: &[Receipt]) -> Result<()> {
        let id = self.queue(name)?.id;
        let ended = self.end_leases(id, |leases| {
            receipts.iter().filter_map(|r| leases.get(r)).collect()
        });
        let seqs: Vec<i64> = ended.into_iter().map(|(seq, _)| seq).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        let mut removed = 0;
        for chunk in seqs.chunks(ACK_CHUNK) {
            let sql = format!(
                "DELETE FROM messages WHERE seq IN ({})",
                placeholders(chunk.len())
            );
            removed += tx
                .prepare_cached(&sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(chunk)))
                .map_err(write_error)? as u64;
        }
        let queue = self.queue(name)?;
        queue.live = queue.live.saturating_sub(removed);
        Ok(())
    }

    fn nack(
        &mut self,
        tx: &Connection,
        name: &str,
        receipt: &Receipt,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        let queue = *self.queue(name)?;
        let ended = self.end_leases(queue.id, |leases| leases.get(receipt).into_iter().collect());
        let Some(&(seq, lease)) = ended.first() else {
            return Ok(());
        };
        let attempts = lease.attempts + 1;
        if attempts >= queue.max_attempts {
            return self.bury(tx, name, seq, attempts, Some(error));
        }
        let visible_at = self.now + delay.as_millis() as i64;
        tx.execute(
            "UPDATE messages SET visible_at = ?2, attempts = ?3, last_error = ?4 WHERE seq = ?1",
            params![seq, visible_at, attempts, error],
        )
        .map_err(write_error)?;
        self.reveal(queue.id, visible_at, seq);
        Ok(())
    }

    fn redrive(&mut self, tx: &Connection, name: &str, ids: Option<&[String]>) -> Result<u64> {
        let now = self.now;
        let queue = self.queue(name)?;
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
                .execute(params![queue.id, id, now])
                .map_err(write_error)? as u64;
            moved += delete.execute(params![queue.id, id]).map_err(write_error)? as u64;
        }
        queue.dead = queue.dead.saturating_sub(moved);
        if added > 0 {
            queue.live += added;
            let id = queue.id;
            // Like new messages (see `send`).
            self.reveal(id, now, i64::MIN);
        }
        Ok(moved)
    }

    fn purge(&mut self, tx: &Connection, name: &str, ids: Option<&[String]>) -> Result<u64> {
        let queue = self.queue(name)?;
        let mut delete = tx
            .prepare_cached("DELETE FROM dead_letters WHERE queue = ?1 AND (?2 IS NULL OR id = ?2)")
            .map_err(storage)?;
        let removed = match ids {
            None => delete
                .execute(params![queue.id, None::<&str>])
                .map_err(write_error)? as u64,
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    n += delete.execute(params![queue.id, id]).map_err(write_error)? as u64;
                }
                n
            }
        };
        queue.dead = queue.dead.saturating_sub(removed);
        Ok(removed)
    }
}

/// Bytes of the queue file in use (pages on the free list are reusable).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, u64>(0));
    Ok(pragma("page_count")?.saturating_sub(pragma("freelist_count")?) * pragma("page_size")?)
}

fn col<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, i: usize) -> Result<T> {
    row.get(i).map_err(storage)
}

/// Run blocking work (SQLite, or a lock the writer may hold) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
