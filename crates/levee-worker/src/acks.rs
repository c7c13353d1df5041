//! Acks of written messages, gathered across a stream's workers into few queue commits.
//!
//! Each ack is a queue commit (an fsync), and what it deletes is written to the queue's
//! log. Acking every batch of every worker apart made ~1.6 acks per commit, and the batches
//! of 4 workers interleave, so each page of the queue was rewritten up to 4 times. One
//! acker per stream takes the receipts of all its workers and acks them together: up to
//! `ACK_GROUP` messages at once, held back at most `ACK_LINGER`, with one ack in flight
//! while the next group gathers. Until its ack commits, a written message stays leased to
//! this process; if the process dies first it is delivered again, and its row, already
//! there, is not written twice. The acker takes at most two batches per worker ahead of
//! the ack in flight: when the queue's commits fall behind, workers wait for them rather
//! than pile up written messages whose leases could run out.

use std::sync::Arc;
use std::time::Duration;

use levee_queue::{Queue, Receipt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most messages in one ack.
const ACK_GROUP: usize = 4000;
/// Longest a written message waits for its ack to be sent.
const ACK_LINGER: Duration = Duration::from_millis(50);

/// Receipts of written messages, and whether to ack without lingering (the worker has
/// nothing more in hand: idle, pausing, failing or stopping).
struct Written {
    receipts: Vec<Receipt>,
    now: bool,
}

/// A worker's handle on its stream's acker. The acker finishes, after acking everything
/// sent to it, once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Acks(mpsc::Sender<Written>);

impl Acks {
    /// Start the acker of `stream`, drained by `workers` workers.
    pub(crate) fn spawn(
        queue: Arc<dyn Queue>,
        stream: &str,
        workers: usize,
    ) -> (Acks, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(2 * workers.max(1));
        let acker = tokio::spawn(run(queue, stream.to_owned(), rx));
        (Acks(tx), acker)
    }

    /// Hand over written receipts; waits while the acker is two batches per worker behind.
    pub(crate) async fn send(&self, receipts: Vec<Receipt>, now: bool) {
        if receipts.is_empty() && !now {
            return;
        }
        // The acker outlives every handle, so this cannot fail; if it did, the messages
        // would only be delivered again.
        let _ = self.0.send(Written { receipts, now }).await;
    }
}

async fn run(queue: Arc<dyn Queue>, stream: String, mut rx: mpsc::Receiver<Written>) {
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            break;
        };
        let deadline = Instant::now() + ACK_LINGER;
        let mut now = first.now;
        let mut receipts = first.receipts;
        while !now && receipts.len() < ACK_GROUP {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => {
                    now |= more.now;
                    receipts.extend(more.receipts);
                }
                Ok(None) => open = false,
                Err(_) => break,
            }
            if !open {
                break;
            }
        }
        // Whatever is left over from a group of workers that all went idle together.
        while receipts.len() < ACK_GROUP
            && let Ok(more) = rx.try_recv()
        {
            receipts.extend(more.receipts);
        }
        if receipts.is_empty() {
            continue;
        }
        if let Err(e) = queue.ack(&stream, &receipts).await {
            tracing::error!(stream, error = %e, "cannot ack written messages; they will be delivered again");
        }
    }
}
