//! The embedded backend: the conformance suite, plus what only a local disk can show.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use levee_queue::{EmbeddedOptions, EmbeddedQueue, NewMessage, Queue, QueueError, QueueSpec};

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("queue-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        min_free_disk_bytes: 0,
        max_size_bytes: None,
    }
}

async fn fresh() -> Arc<dyn Queue> {
    // Each case gets its own directory; it stays until `cargo clean`.
    let dir = temp_dir().keep();
    Arc::new(EmbeddedQueue::open(&dir, options()).unwrap())
}

mod conformance {
    use super::*;
    levee_queue::conformance_suite!(fresh());
}

fn spec(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        max_attempts: 5,
        max_depth: 1_000_000,
    }
}

fn message(i: usize) -> NewMessage {
    NewMessage {
        id: format!("m{i}"),
        payload: br#"{"email":"ada@example.org","zip":"37415"}"#.to_vec(),
    }
}

async fn open(dir: &Path, options: EmbeddedOptions) -> EmbeddedQueue {
    let q = EmbeddedQueue::open(dir, options).unwrap();
    q.declare(&spec("s")).await.unwrap();
    q
}

#[tokio::test]
async fn messages_survive_a_reopen() {
    let dir = temp_dir();
    let q = open(dir.path(), options()).await;
    q.send("s", (0..10).map(message).collect()).await.unwrap();
    q.close().await;
    drop(q);

    let q = open(dir.path(), options()).await;
    assert_eq!(q.stats("s").await.unwrap().depth, 10);
    let got = q.receive("s", 100, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 10);
}

#[tokio::test]
async fn one_process_at_a_time() {
    let dir = temp_dir();
    let _q = open(dir.path(), options()).await;
    let second = EmbeddedQueue::open(dir.path(), options());
    assert!(matches!(second, Err(QueueError::Unavailable(m)) if m.contains("in use")));
}

#[tokio::test]
async fn leases_of_a_dead_process_come_back_at_once() {
    let dir = temp_dir();
    let q = open(dir.path(), options()).await;
    q.send("s", vec![message(1), message(2)]).await.unwrap();
    let got = q.receive("s", 2, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(got.len(), 2);
    // A failed attempt is on disk at once; a lease is not.
    q.nack("s", &got[1].receipt, Duration::ZERO, "rejected")
        .await
        .unwrap();
    // No close: as if the process had been killed while holding the lease.
    drop(q);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let q = open(dir.path(), options()).await;
    assert_eq!(q.stats("s").await.unwrap().in_flight, 0);
    let again = q.receive("s", 2, Duration::from_secs(30)).await.unwrap();
    let attempts: Vec<(&str, u32)> = again.iter().map(|d| (d.id.as_str(), d.attempts)).collect();
    // The delivery cut short by the crash is not counted (the queue's module comment).
    assert_eq!(attempts, [("m1", 1), ("m2", 2)]);
}

#[tokio::test]
async fn a_full_file_refuses_sends_and_keeps_what_it_has() {
    let dir = temp_dir();
    let q = open(
        dir.path(),
        EmbeddedOptions {
            max_size_bytes: Some(256 * 1024),
            ..options()
        },
    )
    .await;
    let mut accepted = 0;
    let refusal = loop {
        match q.send("s", vec![message(accepted)]).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100_000, "the size cap never took effect");
    };
    assert!(matches!(refusal, QueueError::Full(_)), "{refusal:?}");
    assert_eq!(q.stats("s").await.unwrap().depth, accepted as u64);
    // Draining makes room again.
    let got = q
        .receive("s", accepted, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), accepted, "every accepted message is still there");
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    q.ack("s", &receipts).await.unwrap();
    q.send("s", vec![message(1_000_000)]).await.unwrap();
}

#[tokio::test]
async fn low_free_disk_refuses_sends() {
    let dir = temp_dir();
    let q = open(
        dir.path(),
        EmbeddedOptions {
            min_free_disk_bytes: u64::MAX,
            ..options()
        },
    )
    .await;
    let refused = q.send("s", vec![message(1)]).await;
    assert!(matches!(refused, Err(QueueError::Full(m)) if m.contains("free")));
    assert_eq!(q.stats("s").await.unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_commits_and_all_land() {
    let dir = temp_dir();
    let q = Arc::new(open(dir.path(), options()).await);
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.send("s", vec![message(i)]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(q.stats("s").await.unwrap().depth, 2000);
}

#[tokio::test]
async fn closed_queue_answers_unavailable() {
    let dir = temp_dir();
    let q = open(dir.path(), options()).await;
    q.close().await;
    let result = q.send("s", vec![message(1)]).await;
    assert!(
        matches!(result, Err(QueueError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_receive_that_buries_never_hands_out_a_message_twice() {
    let dir = temp_dir();
    let q = EmbeddedQueue::open(dir.path(), options()).unwrap();
    q.declare(&QueueSpec {
        name: "s".into(),
        max_attempts: 1,
        max_depth: 100,
    })
    .await
    .unwrap();
    q.send("s", vec![message(1), message(2)]).await.unwrap();
    // Leases that run out at once: both messages have used their one attempt.
    assert_eq!(q.receive("s", 2, Duration::ZERO).await.unwrap().len(), 2);
    q.send("s", vec![message(3)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    // One pass buries m1 and m2 and leases m3; a second pass must not lease m3 again.
    let got = q.receive("s", 3, Duration::from_secs(30)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["m3"]);
    let stats = q.stats("s").await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 1, 2));
}

#[tokio::test]
async fn a_queue_file_of_the_first_format_is_migrated() {
    let dir = temp_dir();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The layout before leases moved to memory, with a queued message, one leased by a
    // process that died, and a dead letter.
    let old = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    old.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE messages (
             seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, id TEXT NOT NULL,
             payload BLOB NOT NULL, enqueued_at INTEGER NOT NULL, visible_at INTEGER NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0, lease INTEGER, last_error TEXT,
             UNIQUE (queue, id));
         CREATE INDEX messages_ready ON messages (queue, visible_at, seq);
         CREATE TABLE dead_letters (
             seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, id TEXT NOT NULL,
             payload BLOB NOT NULL, enqueued_at INTEGER NOT NULL, died_at INTEGER NOT NULL,
             attempts INTEGER NOT NULL, error TEXT NOT NULL, UNIQUE (queue, id));",
    )
    .unwrap();
    old.execute(
        "INSERT INTO messages (queue, id, payload, enqueued_at, visible_at, attempts, lease)
         VALUES ('s', 'leased', x'7b7d', ?1, ?1 + 3600000, 1, 42),
                ('s', 'queued', x'7b7d', ?1, ?1, 0, NULL)",
        [now],
    )
    .unwrap();
    old.execute(
        "INSERT INTO dead_letters (queue, id, payload, enqueued_at, died_at, attempts, error)
         VALUES ('s', 'dead', x'7b7d', ?1, ?1, 5, 'bad')",
        [now],
    )
    .unwrap();
    drop(old);

    let q = open(dir.path(), options()).await;
    let stats = q.stats("s").await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (2, 0, 1));
    let got = q.receive("s", 10, Duration::from_secs(30)).await.unwrap();
    let mut got: Vec<(&str, u32)> = got.iter().map(|d| (d.id.as_str(), d.attempts)).collect();
    got.sort();
    assert_eq!(got, [("leased", 2), ("queued", 1)]);
    assert_eq!(q.dead("s", 10, None).await.unwrap()[0].id, "dead");
    q.close().await;
    drop(q);
    // Opened again, it is already in the current format.
    let q = open(dir.path(), options()).await;
    assert_eq!(q.stats("s").await.unwrap().depth, 2);
}

#[tokio::test]
async fn a_queue_file_of_a_newer_format_is_refused() {
    let dir = temp_dir();
    let newer = rusqlite::Connection::open(dir.path().join("queue.db")).unwrap();
    newer.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(newer);
    let refused = EmbeddedQueue::open(dir.path(), options());
    assert!(matches!(refused, Err(QueueError::Unavailable(m)) if m.contains("newer")));
}

/// Receives read the last commit while the writer commits sends, acks and nacks: under all
/// of that at once, no message is leased twice at the same time, none comes back once its
/// ack was sent (even before that ack committed), and every one is acked in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_racing_the_writer_never_hand_out_a_message_twice() {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    const MESSAGES: usize = 6000;
    let dir = temp_dir();
    let q = Arc::new(EmbeddedQueue::open(dir.path(), options()).unwrap());
    q.declare(&QueueSpec {
        name: "s".into(),
        max_attempts: 1000,
        max_depth: 1_000_000,
    })
    .await
    .unwrap();

    // Who holds each message now, and which were acked (from the moment the ack is sent).
    let held: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();

    let senders: Vec<_> = (0..4)
        .map(|s| {
            let q = q.clone();
            tokio::spawn(async move {
                for i in (s * 10..MESSAGES).step_by(4 * 10) {
                    let batch = (i..(i + 10).min(MESSAGES)).map(message).collect();
                    q.send("s", batch).await.unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let (q, held, acked) = (q.clone(), held.clone(), acked.clone());
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut round = 0usize;
                while acked.lock().unwrap().len() < MESSAGES {
                    round += 1;
                    let got = q.receive("s", 25, Duration::from_secs(60)).await.unwrap();
                    if got.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    {
                        let (mut held, acked) = (held.lock().unwrap(), acked.lock().unwrap());
                        for d in &got {
                            assert!(!acked.contains(&d.id), "{} came back after its ack", d.id);
                            if let Some(other) = held.insert(d.id.clone(), c) {
                                panic!("{} leased to consumers {other} and {c} at once", d.id);
                            }
                        }
                    }
                    let (back, keep) = got.split_at(match round % 7 {
                        0 => got.len() / 2,
                        _ => 0,
                    });
                    // Some go back: released, or nacked to be retried at once.
                    for (i, d) in back.iter().enumerate() {
                        held.lock().unwrap().remove(&d.id);
                        if i % 2 == 0 {
                            q.release("s", std::slice::from_ref(&d.receipt))
                                .await
                                .unwrap();
                        } else {
                            q.nack("s", &d.receipt, Duration::ZERO, "again")
                                .await
                                .unwrap();
                        }
                    }
                    // The rest is acked without waiting, as workers do.
                    {
                        let (mut held, mut acked) = (held.lock().unwrap(), acked.lock().unwrap());
                        for d in keep {
                            held.remove(&d.id);
                            acked.insert(d.id.clone());
                        }
                    }
                    let receipts: Vec<_> = keep.iter().map(|d| d.receipt.clone()).collect();
                    let q = q.clone();
                    acks.push(tokio::spawn(async move { q.ack("s", &receipts).await }));
                }
                for ack in acks {
                    ack.await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for task in senders.into_iter().chain(consumers) {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the queue drained")
            .unwrap();
    }
    let stats = q.stats("s").await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 0, 0));
    assert_eq!(acked.lock().unwrap().len(), MESSAGES);
}

#[tokio::test]
async fn one_ack_can_name_more_messages_than_sqlite_takes_parameters() {
    // SQLite takes at most 32,766 parameters in one statement; an acker may gather more.
    let dir = temp_dir();
    let q = open(dir.path(), options()).await;
    let n = 40_000;
    for start in (0..n).step_by(5_000) {
        q.send("s", (start..start + 5_000).map(message).collect())
            .await
            .unwrap();
    }
    let batch = q.receive("s", n, Duration::from_secs(60)).await.unwrap();
    assert_eq!(batch.len(), n);
    let receipts: Vec<_> = batch.into_iter().map(|d| d.receipt).collect();
    q.ack("s", &receipts).await.unwrap();
    let stats = q.stats("s").await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (0, 0));
    q.close().await;
    drop(q);
    let q = open(dir.path(), options()).await;
    assert!(
        q.receive("s", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
}
