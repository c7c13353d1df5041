//! Acks of written messages, gathered across a stream's workers into few queue commits.
//!
//! Each ack is a queue commit (an fsync), and what it deletes is written to the queue's
//! log. Acking every batch of every worker apart made ~1.6 acks per commit, and the batches
//! of 4 workers interleave, so each page of the queue was rewritten up to 4 times. One
//! acker per stream takes the receipts of all its workers and acks them together: up to
//! `ACK_GROUP` messages at once, held back at most `ACK_LINGER`, with one ack in flight
//! while the next group gathers. Until its ack commits, a written message stays leased to
//! this process; if the process dies first it is delivered again, and its row, already
//! there, is not written twice. At most `MAX_UNACKED` written messages of a stream wait for
//! their ack: when the queue's commits fall that far behind, workers wait for them rather
//! than pile up written messages whose leases could run out.

use std::sync::Arc;
use std::time::Duration;

use levee_queue::{Queue, Receipt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most messages in one ack.
const ACK_GROUP: usize = 4000;
/// Longest a written message waits for its ack to be sent.
const ACK_LINGER: Duration = Duration::from_millis(50);
/// Most written messages of a stream not yet acked: 8 s of acks at 2,000 messages/s, far
/// more than a healthy queue ever holds back, and above the largest batch.
const MAX_UNACKED: usize = 4 * ACK_GROUP;

/// Receipts of written messages, and whether to ack without lingering (the worker has
/// nothing more in hand: idle, pausing, failing or stopping).
struct Written {
    receipts: Vec<Receipt>,
    now: bool,
    /// Permits of `Acks::room` taken for these receipts, given back once they are acked.
    permits: usize,
}

/// A worker's handle on its stream's acker. The acker finishes, after acking everything
/// sent to it, once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Acks {
    tx: mpsc::UnboundedSender<Written>,
    /// One permit per message that may still be handed over.
    room: Arc<Semaphore>,
}

impl Acks {
    /// Start the acker of `stream`.
    pub(crate) fn spawn(queue: Arc<dyn Queue>, stream: &str) -> (Acks, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(MAX_UNACKED));
        let acker = tokio::spawn(run(queue, stream.to_owned(), rx, room.clone()));
        (Acks { tx, room }, acker)
    }

    /// Hand over written receipts; waits while `MAX_UNACKED` messages wait for their ack.
    pub(crate) async fn send(&self, receipts: Vec<Receipt>, now: bool) {
        if receipts.is_empty() && !now {
            return;
        }
        // The semaphore is never closed; a batch larger than the bound takes it all.
        let permits = receipts.len().min(MAX_UNACKED);
        if let Ok(taken) = self.room.acquire_many(permits as u32).await {
            taken.forget();
        }
        // The acker outlives every handle, so this cannot fail; if it did, the messages
        // would only be delivered again.
        let _ = self.tx.send(Written {
            receipts,
            now,
            permits,
        });
    }
}

async fn run(
    queue: Arc<dyn Queue>,
    stream: String,
    mut rx: mpsc::UnboundedReceiver<Written>,
    room: Arc<Semaphore>,
) {
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            break;
        };
        let deadline = Instant::now() + ACK_LINGER;
        let (mut now, mut receipts, mut permits) = (first.now, first.receipts, first.permits);
        while !now && receipts.len() < ACK_GROUP {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => {
                    now |= more.now;
                    receipts.extend(more.receipts);
                    permits += more.permits;
                }
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        // Whatever is left over from a group of workers that all went idle together.
        while receipts.len() < ACK_GROUP
            && let Ok(more) = rx.try_recv()
        {
            receipts.extend(more.receipts);
            permits += more.permits;
        }
        if receipts.is_empty() {
            continue;
        }
        if let Err(e) = queue.ack(&stream, &receipts).await {
            tracing::error!(stream, error = %e, "cannot ack written messages; they will be delivered again");
        }
        room.add_permits(permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_queue::{EmbeddedOptions, EmbeddedQueue, NewMessage, QueueSpec};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn everything_handed_over_is_acked_even_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions {
            min_free_disk_bytes: 0,
            max_size_bytes: None,
        };
        let queue: Arc<dyn Queue> = Arc::new(EmbeddedQueue::open(dir.path(), options).unwrap());
        let spec = QueueSpec {
            name: "s".into(),
            max_attempts: 5,
            max_depth: 1_000_000,
        };
        queue.declare(&spec).await.unwrap();
        // More than MAX_UNACKED, so that senders wait for acks to make room.
        let n = MAX_UNACKED * 2;
        let messages: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                id: format!("m{i}"),
                payload: b"{}".to_vec(),
            })
            .collect();
        queue.send("s", messages).await.unwrap();
        let (acks, acker) = Acks::spawn(queue.clone(), "s");
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (queue, acks) = (queue.clone(), acks.clone());
            senders.push(tokio::spawn(async move {
                loop {
                    let batch = queue.receive("s", 1000, Duration::from_secs(300)).await;
                    let receipts: Vec<Receipt> =
                        batch.unwrap().into_iter().map(|d| d.receipt).collect();
                    if receipts.is_empty() {
                        return;
                    }
                    acks.send(receipts, false).await;
                }
            }));
        }
        drop(acks);
        for sender in senders {
            sender.await.unwrap();
        }
        acker.await.unwrap();
        let stats = queue.stats("s").await.unwrap();
        assert_eq!((stats.depth, stats.in_flight), (0, 0));
    }
}
