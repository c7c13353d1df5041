//! An acknowledged write survives kill -9 at any instant, and SIGTERM loses nothing.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use levee_queue::{MessageState, Queue};
use rand::Rng;
use support::{Levee, all_ids, declare_signups, open_queue, write_config};
use tokio::sync::Mutex;

/// Concurrent clients POSTing until `stop`; returns the ids that got a 202.
fn drive_load(
    url: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|c| {
            let url = format!("{url}/v1/streams/signups");
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = format!(
                        r#"{{"email":"client{c}-{n}@example.org","zip":"37415","message":"round trip"}}"#
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
                            }
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        // The process is gone: nothing was acknowledged for this request.
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let acked_total = Arc::new(Mutex::new(Vec::new()));

    for round in 0..4 {
        let mut levee = Levee::start(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = drive_load(&levee.url, 16, stop.clone());
        let wait = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        levee.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for c in clients {
            acked.extend(c.await.unwrap());
        }
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );

        // Read-only check after each kill: every acknowledged id is in the queue.
        let queue = open_queue(dir.path());
        declare_signups(&queue).await;
        for id in &acked {
            assert_eq!(
                queue.state("signups", id).await.unwrap(),
                Some(MessageState::Queued),
                "round {round}: acknowledged {id} is missing after kill -9 at {wait} ms"
            );
        }
        queue.close().await;
        drop(queue);
        acked_total.lock().await.extend(acked);
    }

    let queue = open_queue(dir.path());
    declare_signups(&queue).await;
    let ids = all_ids(&queue).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message is in the queue twice");
    let acked = acked_total.lock().await;
    for id in acked.iter() {
        assert!(unique.contains(id), "acknowledged {id} was lost");
    }
    // Writes whose 202 was lost with the process may be there too, never fewer.
    assert!(ids.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let mut levee = Levee::start(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = drive_load(&levee.url, 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = levee.terminate();
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "levee exited with {status}");
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert!(!acked.is_empty());

    let queue = open_queue(dir.path());
    declare_signups(&queue).await;
    let ids: HashSet<String> = all_ids(&queue).await.into_iter().collect();
    for id in &acked {
        assert!(ids.contains(id), "acknowledged {id} was lost at shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_workers_write_stores_every_acknowledged_write_once() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let db = levee_sink::SqlSink::connect(
        &format!("sqlite://{}/levee-data/levee.db", dir.path().display()),
        &levee_sink::SinkOptions::default(),
    )
    .unwrap();
    let mut all_acked = Vec::new();
    for round in 0..3 {
        let mut levee = Levee::start(dir.path());
        if round == 0 {
            let (ok, out) = levee.cli(&["migrate"]);
            assert!(ok, "{out}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = support::post_load(&levee.url, 8, Duration::ZERO, stop.clone());
        // Long enough for the workers to be mid-batch, at a random moment.
        let wait = rand::rng().random_range(500..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        levee.kill9();
        stop.store(true, Ordering::Relaxed);
        let (acked, _) = support::join_load(load).await;
        all_acked.extend(acked);
    }
    // A last start drains what the kills left behind.
    let _levee = Levee::start(dir.path());
    let ids = support::table_ids(&db, "signups", all_acked.len()).await;
    support::assert_exactly_once(&all_acked, &ids);
}
