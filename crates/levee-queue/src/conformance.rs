//! The suite every [`Queue`] backend must pass.
//!
//! A backend's test file calls [`conformance_suite!`](crate::conformance_suite) with an
//! expression that yields a fresh `Arc<dyn Queue>`; each case becomes its own test. Cases
//! declare their own uniquely named queues, so they can share one server. Timings are in
//! whole seconds because SQS counts visibility in seconds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{MessageState, NewMessage, Queue, QueueError, QueueSpec};

const LEASE: Duration = Duration::from_secs(1);
/// Long enough for a one-second lease or delay to have surely passed.
const PAST_LEASE: Duration = Duration::from_millis(1600);
/// How long to keep polling for messages that should be there (SQS may sample).
const PATIENCE: Duration = Duration::from_secs(10);

/// Declare a queue with a unique name.
pub async fn fresh_queue(q: &dyn Queue, max_attempts: u32, max_depth: u64) -> String {
    let name = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    q.declare(&QueueSpec {
        name: name.clone(),
        max_attempts,
        max_depth,
    })
    .await
    .expect("declare");
    name
}

fn message(id: &str) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        payload: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
    }
}

/// Receive until `n` messages have come or PATIENCE has passed.
async fn receive_n(q: &dyn Queue, name: &str, n: usize, lease: Duration) -> Vec<crate::Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let batch = q
            .receive(name, n - got.len(), lease)
            .await
            .expect("receive");
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        got.extend(batch);
    }
    got
}

/// Assert nothing is receivable now (polling briefly, as SQS may sample).
async fn assert_empty(q: &dyn Queue, name: &str) {
    for _ in 0..3 {
        let got = q.receive(name, 10, LEASE).await.expect("receive");
        assert!(got.is_empty(), "expected nothing, received {got:?}");
    }
}

pub async fn sent_messages_are_received_with_payload_and_attempts(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("a"), message("b"), message("c")])
        .await
        .unwrap();
    let mut got = receive_n(&*q, &name, 3, LEASE).await;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    let ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    for d in &got {
        assert_eq!(d.payload, message(&d.id).payload);
        assert_eq!(d.attempts, 1);
        let age = d.enqueued_at.elapsed().unwrap_or_default();
        assert!(
            age < Duration::from_secs(60),
            "enqueued_at is off by {age:?}"
        );
    }
}

pub async fn an_id_sent_twice_is_kept_once(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("same")]).await.unwrap();
    q.send(&name, vec![message("same"), message("other")])
        .await
        .unwrap();
    // Ask for more than there is, with a lease that outlasts the polling.
    let got = receive_n(&*q, &name, 3, PATIENCE * 2).await;
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["other", "same"]);
}

pub async fn acked_messages_are_gone(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    let got = receive_n(&*q, &name, 1, LEASE).await;
    q.ack(&name, &[got[0].receipt.clone()]).await.unwrap();
    tokio::time::sleep(PAST_LEASE).await;
    assert_empty(&*q, &name).await;
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 0, 0));
    if q.capabilities().message_state {
        assert_eq!(q.state(&name, "a").await.unwrap(), None);
    }
}

pub async fn a_lease_hides_a_message_until_it_runs_out(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    let first = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(first.len(), 1);
    assert_empty(&*q, &name).await;
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (0, 1));

    tokio::time::sleep(PAST_LEASE).await;
    let again = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(again[0].id, "a");
    assert_eq!(again[0].attempts, 2);
    assert_ne!(again[0].receipt, first[0].receipt);
}

pub async fn nack_delays_the_next_delivery(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    let got = receive_n(&*q, &name, 1, LEASE * 10).await;
    q.nack(&name, &got[0].receipt, LEASE, "database said no")
        .await
        .unwrap();
    assert_empty(&*q, &name).await;
    tokio::time::sleep(PAST_LEASE).await;
    let again = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(again[0].id, "a");
    assert_eq!(again[0].attempts, 2);
}

pub async fn extend_keeps_a_lease(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    let got = receive_n(&*q, &name, 1, LEASE).await;
    assert!(q.extend(&name, &got[0].receipt, LEASE * 4).await.unwrap());
    tokio::time::sleep(PAST_LEASE).await;
    assert_empty(&*q, &name).await;
    q.ack(&name, &[got[0].receipt.clone()]).await.unwrap();
    assert_eq!(q.stats(&name).await.unwrap().in_flight, 0);
}

pub async fn release_gives_back_without_spending_an_attempt(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 1, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    let got = receive_n(&*q, &name, 1, LEASE * 10).await;
    q.release(&name, &[got[0].receipt.clone()]).await.unwrap();
    let again = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(again.len(), 1, "a released message is visible at once");
    assert_eq!(again[0].attempts, 1);
    assert_eq!(q.stats(&name).await.unwrap().dead, 0);
}

pub async fn used_up_attempts_go_to_the_dead_letters(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 2, 1000).await;
    q.send(&name, vec![message("poison"), message("fine")])
        .await
        .unwrap();
    for attempt in 1..=2 {
        let got = receive_n(&*q, &name, 2, LEASE).await;
        for d in got {
            if d.id == "poison" {
                assert_eq!(d.attempts, attempt);
                q.nack(
                    &name,
                    &d.receipt,
                    Duration::ZERO,
                    "violates check constraint",
                )
                .await
                .unwrap();
            } else {
                q.ack(&name, &[d.receipt]).await.unwrap();
            }
        }
    }
    assert_empty(&*q, &name).await;
    let dead = q.dead(&name, 10, None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "poison");
    assert_eq!(dead[0].payload, message("poison").payload);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].error, "violates check constraint");
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 0, 1));
    if q.capabilities().message_state {
        assert_eq!(
            q.state(&name, "poison").await.unwrap(),
            Some(MessageState::Dead)
        );
    }
    // A dead id is still known: sending it again does not revive it behind our back.
    q.send(&name, vec![message("poison")]).await.unwrap();
    assert_empty(&*q, &name).await;
}

pub async fn expired_leases_count_as_attempts(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 1, 1000).await;
    q.send(&name, vec![message("a")]).await.unwrap();
    assert_eq!(receive_n(&*q, &name, 1, LEASE).await.len(), 1);
    tokio::time::sleep(PAST_LEASE).await;
    assert_empty(&*q, &name).await;
    let dead = q.dead(&name, 10, None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "a");
}

pub async fn redrive_and_purge_the_dead_letters(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 1, 1000).await;
    q.send(&name, vec![message("a"), message("b"), message("c")])
        .await
        .unwrap();
    for d in receive_n(&*q, &name, 3, LEASE).await {
        q.nack(&name, &d.receipt, Duration::ZERO, "bad")
            .await
            .unwrap();
    }
    assert_eq!(q.stats(&name).await.unwrap().dead, 3);

    let first_page = q.dead(&name, 2, None).await.unwrap();
    assert_eq!(first_page.len(), 2);
    let second_page = q.dead(&name, 2, Some(&first_page[1].id)).await.unwrap();
    assert_eq!(second_page.len(), 1);
    let all: HashSet<String> = first_page
        .iter()
        .chain(&second_page)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(all.len(), 3);

    assert_eq!(q.redrive(&name, Some(&["b".to_owned()])).await.unwrap(), 1);
    let back = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(back[0].id, "b");
    assert_eq!(
        back[0].attempts, 1,
        "a redriven message starts its attempts afresh"
    );
    q.ack(&name, &[back[0].receipt.clone()]).await.unwrap();

    assert_eq!(
        q.purge_dead(&name, Some(&["a".to_owned()])).await.unwrap(),
        1
    );
    assert_eq!(q.redrive(&name, None).await.unwrap(), 1);
    let back = receive_n(&*q, &name, 1, LEASE).await;
    assert_eq!(back[0].id, "c");
    q.nack(&name, &back[0].receipt, Duration::ZERO, "still bad")
        .await
        .unwrap();
    assert_eq!(q.purge_dead(&name, None).await.unwrap(), 1);
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (0, 0, 0));
}

pub async fn stats_count_depth_in_flight_and_age(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    assert_eq!(q.stats(&name).await.unwrap().oldest_age, None);
    let batch: Vec<NewMessage> = (0..5).map(|i| message(&format!("m{i}"))).collect();
    q.send(&name, batch).await.unwrap();
    receive_n(&*q, &name, 2, LEASE * 10).await;
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.depth, stats.in_flight, stats.dead), (3, 2, 0));
    assert!(stats.oldest_age.is_some());
}

pub async fn state_follows_a_message(q: Arc<dyn Queue>) {
    if !q.capabilities().message_state {
        return;
    }
    let name = fresh_queue(&*q, 5, 1000).await;
    assert_eq!(q.state(&name, "a").await.unwrap(), None);
    q.send(&name, vec![message("a")]).await.unwrap();
    assert_eq!(
        q.state(&name, "a").await.unwrap(),
        Some(MessageState::Queued)
    );
    let got = receive_n(&*q, &name, 1, LEASE * 10).await;
    assert_eq!(
        q.state(&name, "a").await.unwrap(),
        Some(MessageState::InFlight)
    );
    q.ack(&name, &[got[0].receipt.clone()]).await.unwrap();
    assert_eq!(q.state(&name, "a").await.unwrap(), None);
}

pub async fn queues_are_isolated(q: Arc<dyn Queue>) {
    let one = fresh_queue(&*q, 5, 1000).await;
    let two = fresh_queue(&*q, 5, 1000).await;
    q.send(&one, vec![message("a")]).await.unwrap();
    assert_empty(&*q, &two).await;
    assert_eq!(q.stats(&two).await.unwrap().depth, 0);
    assert_eq!(receive_n(&*q, &one, 1, LEASE).await[0].id, "a");
}

pub async fn receive_honours_max_and_order(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 1000).await;
    let ids: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    for chunk in ids.chunks(5) {
        q.send(&name, chunk.iter().map(|id| message(id)).collect())
            .await
            .unwrap();
    }
    let batch = q.receive(&name, 7, LEASE * 10).await.unwrap();
    assert!(batch.len() <= 7);
    let mut got = batch;
    got.extend(receive_n(&*q, &name, 20 - got.len(), LEASE * 10).await);
    let got_ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    if q.capabilities().fifo {
        assert_eq!(got_ids, ids);
    } else {
        let got: HashSet<_> = got_ids.into_iter().collect();
        assert_eq!(got, ids.into_iter().collect());
    }
}

pub async fn max_depth_refuses_sends_whole(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 3).await;
    q.send(&name, vec![message("a"), message("b")])
        .await
        .unwrap();
    let refused = q.send(&name, vec![message("c"), message("d")]).await;
    assert!(matches!(refused, Err(QueueError::Full(_))), "{refused:?}");
    assert_eq!(
        q.stats(&name).await.unwrap().depth,
        2,
        "nothing of a refused batch is kept"
    );
    q.send(&name, vec![message("c")]).await.unwrap();
    assert!(matches!(
        q.send(&name, vec![message("d")]).await,
        Err(QueueError::Full(_))
    ));
    // Acking makes room again.
    let got = receive_n(&*q, &name, 1, LEASE).await;
    q.ack(&name, &[got[0].receipt.clone()]).await.unwrap();
    q.send(&name, vec![message("d")]).await.unwrap();
}

pub async fn concurrent_consumers_never_share_a_lease(q: Arc<dyn Queue>) {
    let name = fresh_queue(&*q, 5, 10_000).await;
    let ids: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    for chunk in ids.chunks(50) {
        q.send(&name, chunk.iter().map(|id| message(id)).collect())
            .await
            .unwrap();
    }
    let consumers = (0..4).map(|_| {
        let (q, name) = (q.clone(), name.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut idle = 0;
            while idle < 5 {
                let got = q.receive(&name, 10, LEASE * 30).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                idle = 0;
                let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
                mine.extend(got.into_iter().map(|d| d.id));
                q.ack(&name, &receipts).await.unwrap();
            }
            mine
        })
    });
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(consumer.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "a message was delivered to two consumers"
    );
    assert_eq!(unique.len(), 200);
}

pub async fn unknown_queues_are_errors(q: Arc<dyn Queue>) {
    let result = q.send("never-declared-queue", vec![message("a")]).await;
    assert!(
        matches!(result, Err(QueueError::UnknownQueue(_))),
        "{result:?}"
    );
}

/// One test per case, for a backend made by `$make` (an async expression yielding an
/// `Arc<dyn Queue>`).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@cases $make;
            sent_messages_are_received_with_payload_and_attempts,
            an_id_sent_twice_is_kept_once,
            acked_messages_are_gone,
            a_lease_hides_a_message_until_it_runs_out,
            nack_delays_the_next_delivery,
            extend_keeps_a_lease,
            release_gives_back_without_spending_an_attempt,
            used_up_attempts_go_to_the_dead_letters,
            expired_leases_count_as_attempts,
            redrive_and_purge_the_dead_letters,
            stats_count_depth_in_flight_and_age,
            state_follows_a_message,
            queues_are_isolated,
            receive_honours_max_and_order,
            max_depth_refuses_sends_whole,
            concurrent_consumers_never_share_a_lease,
            unknown_queues_are_errors,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let queue: ::std::sync::Arc<dyn $crate::Queue> = $make.await;
                $crate::conformance::$case(queue).await;
            }
        )*
    };
}
