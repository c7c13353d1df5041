//! queue-store: which embedded store should back levee's durable queue?
//!
//! levee answers a request only after its message is fsynced, and concurrent
//! requests share one commit (group commit). So the numbers that matter are:
//! the cost of one *durable* commit at several group sizes, how fast a backlog
//! drains (read the oldest 100, delete them, durably), and how long a restart
//! with a backlog takes. Everything runs on one thread: the group size stands
//! in for the concurrent requests that would share a commit, so each number is
//! what a single committer thread can sustain.
//!
//! Usage: [QS_ONLY=sqlite|redb|fjall] queue-store [DATA_DIR]
//! DATA_DIR defaults to tmp-data/ next to Cargo.toml (the same disk as the
//! service); it is wiped before and after the run.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Key = [u8; 16];
type Msg = (Key, Vec<u8>);

const GROUPS: [usize; 3] = [1, 16, 64];
const CASE_TIME: Duration = Duration::from_secs(3);
const CASE_MSGS: usize = 20_000;
const BACKLOG: usize = 100_000;
const FILL_GROUP: usize = 64;
const DRAIN_BATCH: usize = 100;

/// What a queue needs from its store. Writes return only once they are durable.
trait Store: Sized {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Insert all messages in one transaction and make it durable before returning.
    fn insert_durable(&mut self, msgs: &[Msg]);
    /// Read, from a consistent snapshot, the `n` oldest messages (lowest keys =
    /// insertion order) whose key is >= `from`. `from` = all zeros means "from the start".
    fn read_from(&mut self, from: &Key, n: usize) -> Vec<Msg>;
    /// Delete these keys in one transaction and make it durable before returning.
    fn delete_durable(&mut self, keys: &[Key]);
}

// ---------------------------------------------------------------- SQLite
struct Sqlite(rusqlite::Connection);

impl Store for Sqlite {
    const NAME: &'static str = "sqlite";
    fn open(dir: &Path) -> Self {
        let c = rusqlite::Connection::open(dir.join("queue.sqlite")).unwrap();
        // WAL + synchronous=FULL: every COMMIT fsyncs the WAL before returning
        // (with NORMAL a WAL commit is not durable until the next checkpoint).
        let mode: String = c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        // WITHOUT ROWID keyed by the 16-byte id: the same shape as the two KV
        // stores (one ordered tree, key -> value), with no second index.
        c.execute_batch("CREATE TABLE IF NOT EXISTS q (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID")
            .unwrap();
        Sqlite(c)
    }
    fn insert_durable(&mut self, msgs: &[Msg]) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx.prepare_cached("INSERT INTO q (id, body) VALUES (?1, ?2)").unwrap();
            for (k, v) in msgs {
                st.execute((&k[..], &v[..])).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn read_from(&mut self, from: &Key, n: usize) -> Vec<Msg> {
        let mut st = self.0.prepare_cached("SELECT id, body FROM q WHERE id >= ?1 ORDER BY id LIMIT ?2").unwrap();
        let rows = st.query_map((&from[..], n as i64), |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)));
        rows.unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.try_into().unwrap(), v)).collect()
    }
    fn delete_durable(&mut self, keys: &[Key]) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx.prepare_cached("DELETE FROM q WHERE id = ?1").unwrap();
            for k in keys {
                st.execute([&k[..]]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------- redb
const TABLE: redb::TableDefinition<&Key, &[u8]> = redb::TableDefinition::new("q");
struct Redb(redb::Database);

impl Store for Redb {
    const NAME: &'static str = "redb";
    fn open(dir: &Path) -> Self {
        // create() opens the file if it exists. No table is created here so that
        // the reopen measurement does not include a write commit.
        Redb(redb::Database::create(dir.join("queue.redb")).unwrap())
    }
    fn insert_durable(&mut self, msgs: &[Msg]) {
        let mut tx = self.0.begin_write().unwrap();
        // Immediate is redb's default; set it anyway because it is the point of the test.
        tx.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (k, v) in msgs {
                t.insert(k, v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn read_from(&mut self, from: &Key, n: usize) -> Vec<Msg> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.0.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        let it = t.range(from..).unwrap().take(n).map(|r| r.unwrap());
        it.map(|(k, v)| (*k.value(), v.value().to_vec())).collect()
    }
    fn delete_durable(&mut self, keys: &[Key]) {
        let mut tx = self.0.begin_write().unwrap();
        tx.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for k in keys {
                t.remove(k).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------- fjall
struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Fjall {
    /// An atomic batch whose commit fsyncs the journal (SyncAll) before returning.
    fn durable_batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(fjall::PersistMode::SyncAll))
    }
}

impl Store for Fjall {
    const NAME: &'static str = "fjall";
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("queue.fjall")).open().unwrap();
        let ks = db.keyspace("q", fjall::KeyspaceCreateOptions::default).unwrap();
        Fjall { db, ks }
    }
    fn insert_durable(&mut self, msgs: &[Msg]) {
        let mut b = self.durable_batch();
        for (k, v) in msgs {
            b.insert(&self.ks, &k[..], &v[..]);
        }
        b.commit().unwrap();
    }
    fn read_from(&mut self, from: &Key, n: usize) -> Vec<Msg> {
        let it = self.ks.range(&from[..]..).take(n).map(|g| g.into_inner().unwrap());
        it.map(|(k, v)| ((*k).try_into().unwrap(), v.to_vec())).collect()
    }
    fn delete_durable(&mut self, keys: &[Key]) {
        let mut b = self.durable_batch();
        for k in keys {
            b.remove(&self.ks, &k[..]);
        }
        b.commit().unwrap();
    }
}

// ---------------------------------------------------------------- workload
/// Message number `seq`. The id is a big-endian sequence number followed by 8
/// mixed bytes (like a UUIDv7/ULID), so key order is insertion order in every
/// store and "oldest first" is a plain ordered scan.
fn message(seq: u64) -> Msg {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29).to_le_bytes());
    let body = format!(
        r#"{{"email":"a{seq}@example.org","name":"Ada Lovelace","zip":"37415","message":"hello world, this is message number {seq:08} of the queue benchmark"}}"#
    );
    (k, body.into_bytes())
}

struct Row {
    store: &'static str,
    case: String,
    commits: usize,
    msgs: usize,
    time: Duration,
    note: String,
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Space really allocated under `p` (st_blocks, not length: fjall's journal is a sparse 64 MiB file).
fn dir_mib(p: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let entries = fs::read_dir(p).unwrap().map(|e| e.unwrap());
    entries.map(|e| if e.path().is_dir() { dir_mib(&e.path()) } else { e.metadata().unwrap().blocks() as f64 / 2048.0 }).sum()
}

/// Durable commits of `g` messages each, for CASE_TIME or CASE_MSGS, whichever comes first.
fn group_commit<S: Store>(root: &Path, all: &[Msg], g: usize) -> Row {
    let dir = fresh_dir(root, &format!("{}-g{g}", S::NAME));
    let mut s = S::open(&dir);
    let (t, mut commits) = (Instant::now(), 0);
    while t.elapsed() < CASE_TIME && commits * g < CASE_MSGS {
        s.insert_durable(&all[commits * g..(commits + 1) * g]);
        commits += 1;
    }
    let row = Row { store: S::NAME, case: format!("insert, group {g}"), commits, msgs: commits * g, time: t.elapsed(), note: String::new() };
    drop(s);
    fs::remove_dir_all(&dir).unwrap();
    row
}

/// Fill a fresh store with the backlog in durable groups of FILL_GROUP.
fn fill<S: Store>(dir: &Path, all: &[Msg]) -> (S, Row) {
    let mut s = S::open(dir);
    let t = Instant::now();
    for chunk in all[..BACKLOG].chunks(FILL_GROUP) {
        s.insert_durable(chunk);
    }
    let note = format!("{:.1} MiB on disk", dir_mib(dir));
    let case = format!("fill {BACKLOG}, group {FILL_GROUP}");
    (s, Row { store: S::NAME, case, commits: BACKLOG.div_ceil(FILL_GROUP), msgs: BACKLOG, time: t.elapsed(), note })
}

/// Drain like consumers would: receive the oldest DRAIN_BATCH, ack (delete)
/// them in one durable commit, repeat until empty. Without `cursor` every
/// receive scans from the start of the keyspace; with it, the scan starts at
/// the last acked id (an in-memory hint a real queue would keep), which
/// matters for an LSM tree, where deleted keys linger as tombstones.
fn drain<S: Store>(s: &mut S, all: &[Msg], cursor: bool) -> Row {
    let (t, mut done, mut commits, mut from) = (Instant::now(), 0, 0, [0u8; 16]);
    loop {
        let got = s.read_from(&from, DRAIN_BATCH);
        if got.is_empty() {
            break;
        }
        // Check FIFO order and content, so a fast-but-wrong store cannot win.
        for (i, m) in got.iter().enumerate() {
            assert!(m == &all[done + i], "{}: wrong message at {}", S::NAME, done + i);
        }
        let keys: Vec<Key> = got.iter().map(|m| m.0).collect();
        s.delete_durable(&keys);
        if cursor {
            from = *keys.last().unwrap();
        }
        done += got.len();
        commits += 1;
    }
    assert_eq!(done, BACKLOG);
    let case = format!("drain, read+delete {DRAIN_BATCH}{}", if cursor { ", cursor" } else { "" });
    Row { store: S::NAME, case, commits, msgs: done, time: t.elapsed(), note: String::new() }
}

fn queue_cycle<S: Store>(root: &Path, all: &[Msg], rows: &mut Vec<Row>) {
    // Pass 1: fill, restart, drain scanning from the start each time.
    let dir = fresh_dir(root, &format!("{}-queue", S::NAME));
    let (s, row) = fill::<S>(&dir, all);
    rows.push(row);
    // Reopen = open + read of the oldest message, because SQLite (and partly
    // the others) defer work such as schema load or recovery to first use.
    drop(s);
    let t = Instant::now();
    let mut s = S::open(&dir);
    assert_eq!(s.read_from(&[0; 16], 1)[0].0, all[0].0);
    let case = format!("reopen with {BACKLOG} msgs");
    rows.push(Row { store: S::NAME, case, commits: 0, msgs: 0, time: t.elapsed(), note: "open + first read".into() });
    let mut row = drain(&mut s, all, false);
    drop(s);
    row.note = format!("{:.1} MiB on disk after", dir_mib(&dir));
    rows.push(row);
    fs::remove_dir_all(&dir).unwrap();

    // Pass 2: same backlog in a fresh store, drained with a cursor.
    let dir = fresh_dir(root, &format!("{}-queue2", S::NAME));
    let (mut s, _) = fill::<S>(&dir, all);
    rows.push(drain(&mut s, all, true));
    drop(s);
    fs::remove_dir_all(&dir).unwrap();
}

/// One case for one store. main() runs each case for all three stores back to
/// back, so that drift in this (virtual) disk's fsync speed over the run hits
/// every store of a case alike instead of whichever store happened to run last.
fn run_case<S: Store>(root: &Path, all: &[Msg], group: Option<usize>, rows: &mut Vec<Row>) {
    // QS_ONLY=redb (for example) runs a single store, e.g. under strace.
    if std::env::var("QS_ONLY").is_ok_and(|only| only != S::NAME) {
        return;
    }
    eprintln!("{}: {}", S::NAME, group.map_or("queue cycle".into(), |g| format!("group {g}")));
    match group {
        Some(g) => rows.push(group_commit::<S>(root, all, g)),
        None => queue_cycle::<S>(root, all, rows),
    }
}

/// Small write + fdatasync in a loop for ~2 s: the floor every store pays per commit.
/// Append grows the file (ext4 must also journal the size); overwrite does not.
fn raw_fsync(root: &Path, append: bool) -> Row {
    let path = root.join("fsync-probe");
    let mut f = File::create(&path).unwrap();
    let (buf, t, mut n) = ([b'x'; 256], Instant::now(), 0);
    while t.elapsed() < Duration::from_secs(2) {
        if append { f.write_all(&buf).unwrap() } else { f.write_all_at(&buf, 0).unwrap() }
        f.sync_data().unwrap();
        n += 1;
    }
    fs::remove_file(&path).unwrap();
    let case = if append { "256 B append + sync_data" } else { "256 B overwrite + sync_data" };
    Row { store: "raw disk", case: case.into(), commits: n, msgs: 0, time: t.elapsed(), note: String::new() }
}

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tmp-data"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    // Messages are built up front so formatting is not timed.
    let all: Vec<Msg> = (0..BACKLOG as u64).map(message).collect();
    let avg = all.iter().map(|m| m.1.len()).sum::<usize>() / all.len();

    let mut rows = vec![raw_fsync(&root, true), raw_fsync(&root, false)];
    for group in GROUPS.map(Some).into_iter().chain([None]) {
        run_case::<Sqlite>(&root, &all, group, &mut rows);
        run_case::<Redb>(&root, &all, group, &mut rows);
        run_case::<Fjall>(&root, &all, group, &mut rows);
    }
    // Measured again at the end: if it moved, so did everything in between.
    rows.push(Row { note: "again, after all stores".into(), ..raw_fsync(&root, true) });
    fs::remove_dir_all(&root).unwrap();

    println!("queue-store: key 16 B, value ~{avg} B JSON, data dir {}", root.display());
    println!("rusqlite 0.43.0 (SQLite {}, WAL, synchronous=FULL) | redb 5.0.0 (Durability::Immediate) | fjall 3.1.13 (PersistMode::SyncAll)\n", rusqlite::version());
    let per_s = |n: usize, t: Duration| if n == 0 { "-".to_string() } else { format!("{:.0}", n as f64 / t.as_secs_f64()) };
    let table: Vec<[String; 8]> = std::iter::once(["store", "case", "commits/s", "msgs/s", "commits", "msgs", "time", "note"].map(String::from))
        .chain(rows.iter().map(|r| [
            r.store.to_string(), r.case.clone(), per_s(r.commits, r.time), per_s(r.msgs, r.time),
            r.commits.to_string(), r.msgs.to_string(), format!("{:.2} ms", r.time.as_secs_f64() * 1e3), r.note.clone(),
        ]))
        .collect();
    let w: Vec<usize> = (0..8).map(|c| table.iter().map(|r| r[c].len()).max().unwrap()).collect();
    for r in &table {
        // Text columns left-aligned, numbers right-aligned.
        let cells: Vec<String> = (0..8).map(|c| match c {
            0 | 1 | 7 => format!("{:<1$}", r[c], w[c]),
            _ => format!("{:>1$}", r[c], w[c]),
        }).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
