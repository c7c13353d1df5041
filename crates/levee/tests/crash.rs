//! An acknowledged write survives kill -9 at any instant, and SIGTERM loses nothing.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use levee_queue::{MessageState, Queue};
use rand::Rng;
use support::{Levee, Load, all_ids, declare_signups, open_queue, write_config};

/// Let the load run until some writes were acknowledged, then a random moment more.
async fn random_moment(load: &Load) {
    load.until_acked(1).await;
    let wait = rand::rng().random_range(100..1200);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    // No workers: everything acknowledged must still be in the queue.
    let roles = [("LEVEE_ROLES", "intake")];
    let mut acked_total = Vec::new();

    for round in 0..4 {
        let mut levee = Levee::start_with_env(dir.path(), &roles);
        let load = Load::start(&levee.url, 16, Duration::ZERO);
        random_moment(&load).await;
        levee.kill9();
        let (acked, _) = load.stop().await;

        // Read-only check after each kill: every acknowledged id is in the queue.
        let queue = open_queue(dir.path());
        declare_signups(&queue).await;
        for id in &acked {
            assert_eq!(
                queue.state("signups", id).await.unwrap(),
                Some(MessageState::Queued),
                "round {round}: acknowledged {id} is missing after kill -9"
            );
        }
        queue.close().await;
        drop(queue);
        acked_total.extend(acked);
    }

    let queue = open_queue(dir.path());
    declare_signups(&queue).await;
    let ids = all_ids(&queue).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message is in the queue twice");
    for id in &acked_total {
        assert!(unique.contains(id), "acknowledged {id} was lost");
    }
    // Writes whose 202 was lost with the process may be there too, never fewer.
    assert!(ids.len() >= acked_total.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let mut levee = Levee::start_with_env(dir.path(), &[("LEVEE_ROLES", "intake")]);
    let load = Load::start(&levee.url, 8, Duration::ZERO);
    random_moment(&load).await;
    let status = levee.terminate();
    let (acked, _) = load.stop().await;
    assert!(status.success(), "levee exited with {status}");
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
        let load = Load::start(&levee.url, 8, Duration::ZERO);
        // Workers are mid-batch at a random moment of steady load.
        random_moment(&load).await;
        levee.kill9();
        let (acked, _) = load.stop().await;
        all_acked.extend(acked);
    }
    // A last start drains what the kills left behind.
    let _levee = Levee::start(dir.path());
    let ids = support::table_ids(&db, "signups", &all_acked).await;
    support::assert_exactly_once(&all_acked, &ids);
}
