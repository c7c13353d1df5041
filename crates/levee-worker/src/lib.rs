//! Workers drain each stream's queue into its sink.
//!
//! A worker leases a batch, writes it in one statement (idempotent by message id) and acks
//! only after the database has committed it. Failures are sorted:
//! - transient (the database is down, busy, read-only): the leases are released without
//!   spending an attempt and the [`Breaker`] makes every worker of the sink back off;
//! - rejected (the data): the batch is split in halves until the bad messages stand alone;
//!   the good halves commit, each bad message is nacked with its error and dead-lettered
//!   by the queue once it has used up `max_attempts`.
//!
//! Paused streams are not received from ([`Control`]); intake keeps accepting meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use levee_config::StreamConfig;
use levee_queue::{Delivery, Queue, Receipt};
use levee_sink::{Mapping, Row, Sink, SinkError};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod acks;
mod breaker;
mod control;

use acks::Acks;

pub use breaker::{Breaker, Health};
pub use control::{Control, ControlError, Pause};

/// How long a worker waits before looking again at an empty queue.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long an idle worker woken by new messages waits for more before receiving.
/// Measured with bench/drain at 2,000 POST/s: 10–30 ms gave p99 lags of 0.5–0.9 s (tiny
/// batches, a queue commit and a statement for each few messages), 50–60 ms gave ~55 ms.
const LINGER: Duration = Duration::from_millis(50);
/// Longest wait before a rejected message is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// What one stream's workers need to know.
#[derive(Debug, Clone)]
pub struct StreamDrain {
    pub name: String,
    pub mapping: Mapping,
    pub workers: usize,
    pub batch_size: usize,
    pub lease: Duration,
    /// First retry delay of a rejected message; doubles with each attempt.
    pub retry_delay: Duration,
}

impl StreamDrain {
    pub fn from_config(config: &StreamConfig) -> StreamDrain {
        StreamDrain {
            name: config.name.clone(),
            mapping: mapping(config),
            workers: config.workers,
            batch_size: config.batch_size,
            lease: Duration::from_secs(config.lease_seconds),
            retry_delay: Duration::from_secs(config.retry_seconds),
        }
    }
}

/// The table mapping of a stream.
pub fn mapping(config: &StreamConfig) -> Mapping {
    Mapping {
        table: config.table().to_owned(),
        columns: config
            .columns
            .iter()
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect(),
    }
}

/// All the workers of a node, over one queue and one sink.
pub struct Drain {
    queue: Arc<dyn Queue>,
    sink: Arc<dyn Sink>,
    control: Arc<Control>,
    breaker: Arc<Breaker>,
    streams: Vec<StreamDrain>,
    stored: HashMap<String, AtomicU64>,
}

impl Drain {
    pub fn new(
        queue: Arc<dyn Queue>,
        sink: Arc<dyn Sink>,
        control: Arc<Control>,
        streams: Vec<StreamDrain>,
    ) -> Drain {
        let stored = streams
            .iter()
            .map(|s| (s.name.clone(), AtomicU64::new(0)))
            .collect();
        Drain {
            queue,
            sink,
            control,
            breaker: Arc::new(Breaker::default()),
            streams,
            stored,
        }
    }

    /// Start every worker, and each stream's acker. Workers return once `shutdown` is
    /// cancelled, after finishing the batch in hand; the ackers after the last ack of their
    /// workers has committed.
    pub fn spawn(self: &Arc<Self>, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        for (index, stream) in self.streams.iter().enumerate() {
            let (acks, acker) = Acks::spawn(self.queue.clone(), &stream.name);
            for _ in 0..stream.workers {
                let (drain, shutdown, acks) = (self.clone(), shutdown.clone(), acks.clone());
                handles.push(tokio::spawn(async move {
                    drain.work(index, &acks, shutdown).await;
                    // Nothing more in hand: what is gathered is acked now.
                    acks.send(Vec::new(), true).await;
                }));
            }
            handles.push(acker);
        }
        handles
    }

    /// Messages of `stream` written to the database by this node since it started.
    pub fn stored(&self, stream: &str) -> u64 {
        self.stored
            .get(stream)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    pub fn health(&self) -> Health {
        self.breaker.health()
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    async fn work(&self, index: usize, acks: &Acks, shutdown: CancellationToken) {
        let stream = &self.streams[index];
        let mut changes = self.control.subscribe();
        let mut arrivals = self.queue.arrivals();
        // The next batch, received and parsed while the last one was being written.
        let mut next: Option<Vec<Parsed>> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if self.control.paused(&stream.name).is_some() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = changes.changed() => continue,
                }
            }
            if !self.breaker.ready(&shutdown).await {
                return;
            }
            // Seen before receiving: a send committed after this wakes the idle wait below.
            if let Some(arrivals) = &mut arrivals {
                arrivals.borrow_and_update();
            }
            let batch = match next.take() {
                Some(batch) => batch,
                None => match self
                    .queue
                    .receive(&stream.name, stream.batch_size, stream.lease)
                    .await
                {
                    Ok(batch) => parse(batch),
                    Err(e) => {
                        tracing::error!(stream = stream.name, error = %e, "cannot receive from the queue");
                        sleep_or_stop(&shutdown, Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            if batch.is_empty() {
                // Wake on new messages, a pause or resume, or the poll interval (retry delays
                // run out without a signal).
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = changes.changed() => {}
                    () = arrival(&mut arrivals) => {
                        // Linger so a batch can gather: waking for every single message
                        // would turn each into its own queue commit and database statement.
                        sleep_or_stop(&shutdown, LINGER).await;
                    }
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            // The batch in hand is finished even during shutdown. The next one is received
            // meanwhile, so the database never waits on the queue between two batches.
            let prefetch = async {
                let batch = self
                    .queue
                    .receive(&stream.name, stream.batch_size, stream.lease)
                    .await?;
                Ok::<_, levee_queue::QueueError>(parse(batch))
            };
            let (delivered, prefetched) = tokio::join!(self.deliver(stream, batch), prefetch);
            let all_well = delivered.is_ok() && self.breaker.health().healthy;
            let written = delivered.unwrap_or_else(|e| {
                tracing::error!(stream = stream.name, error = %e, "queue failure after a write");
                Vec::new()
            });
            match prefetched {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch)
                    if all_well
                        && !shutdown.is_cancelled()
                        && self.control.paused(&stream.name).is_none() =>
                {
                    next = Some(batch);
                }
                // Paused, stopping or failing: hand it back now rather than sit on its leases.
                Ok(batch) => {
                    let receipts: Vec<Receipt> =
                        batch.into_iter().map(|(d, _)| d.receipt).collect();
                    if let Err(e) = self.queue.release(&stream.name, &receipts).await {
                        tracing::error!(stream = stream.name, error = %e, "cannot release a batch");
                    }
                }
                Err(e) => {
                    tracing::error!(stream = stream.name, error = %e, "cannot receive from the queue")
                }
            }
            // With nothing more in hand (idle, pausing, failing, stopping) the acks go now.
            acks.send(written, next.is_none()).await;
        }
    }

    /// Write a batch; release it all on a transient failure, and isolate rejected messages
    /// by splitting. Returns the receipts of what the database committed, to be acked.
    async fn deliver(
        &self,
        stream: &StreamDrain,
        batch: Vec<Parsed>,
    ) -> levee_queue::Result<Vec<Receipt>> {
        let q = &stream.name;
        let mut readable = Vec::with_capacity(batch.len());
        for (d, parsed) in batch {
            match parsed {
                Ok(payload) => readable.push((d, payload)),
                // Intake only enqueues JSON: this can never be written, whatever the retries.
                Err(e) => {
                    self.reject(stream, &d, &format!("payload is not JSON: {e}"))
                        .await?
                }
            }
        }
        // Slices [start, end) of the batch still to write.
        let mut pending = vec![(0, readable.len())];
        let mut committed = Vec::with_capacity(readable.len());
        while let Some((start, end)) = pending.pop() {
            let slice = &readable[start..end];
            let rows: Vec<Row<'_>> = slice
                .iter()
                .map(|(d, payload)| Row {
                    id: &d.id,
                    received_at: d.enqueued_at,
                    payload,
                    json: std::str::from_utf8(&d.payload).expect("checked when parsed"),
                })
                .collect();
            // A write still stuck when the lease is nearly over (a lock held by a migration)
            // is abandoned as transient: past the lease the batch would be delivered to
            // another worker and spend attempts while this one still waits.
            let write = tokio::time::timeout(
                stream.lease.mul_f64(0.8),
                self.sink.write(&stream.mapping, &rows),
            );
            let written = write.await.unwrap_or_else(|_| {
                Err(SinkError::Transient("the write outlasted the lease".into()))
            });
            match written {
                Ok(()) => {
                    self.breaker.success();
                    committed.extend(receipts(slice));
                    self.stored[q].fetch_add(slice.len() as u64, Ordering::Relaxed);
                }
                Err(SinkError::Transient(e) | SinkError::Schema(e)) => {
                    self.breaker.failure(&e);
                    let mut unsent = receipts(slice);
                    for (s, e) in pending.drain(..) {
                        unsent.extend(receipts(&readable[s..e]));
                    }
                    self.queue.release(q, &unsent).await?;
                    return Ok(committed);
                }
                Err(SinkError::Rejected(e)) if slice.len() == 1 => {
                    self.breaker.success();
                    self.reject(stream, &slice[0].0, &e).await?;
                }
                Err(SinkError::Rejected(_)) => {
                    let mid = start + slice.len() / 2;
                    pending.push((mid, end));
                    pending.push((start, mid));
                }
            }
        }
        Ok(committed)
    }

    /// Give a message back to be retried later; the queue dead-letters it once it has used
    /// up its attempts.
    async fn reject(
        &self,
        stream: &StreamDrain,
        d: &Delivery,
        error: &str,
    ) -> levee_queue::Result<()> {
        tracing::warn!(
            stream = stream.name,
            id = d.id,
            attempts = d.attempts,
            error,
            "message rejected"
        );
        let delay = stream
            .retry_delay
            .saturating_mul(1 << d.attempts.saturating_sub(1).min(16))
            .min(MAX_RETRY_DELAY);
        self.queue
            .nack(&stream.name, &d.receipt, delay, error)
            .await
    }
}

/// A received message with its payload parsed, or why it cannot be.
type Parsed = (Delivery, Result<Value, String>);

/// Parse a batch's payloads. It runs as soon as the batch is received, while the worker's
/// previous batch is being written, so that the database never waits for it.
fn parse(batch: Vec<Delivery>) -> Vec<Parsed> {
    batch
        .into_iter()
        .map(|d| {
            // JSON is UTF-8 (RFC 8259): what parses is text, and kept as received.
            let parsed = std::str::from_utf8(&d.payload)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Value>(text).map_err(|e| e.to_string()));
            (d, parsed)
        })
        .collect()
}

fn receipts(batch: &[(Delivery, Value)]) -> Vec<Receipt> {
    batch.iter().map(|(d, _)| d.receipt.clone()).collect()
}

/// Resolves when the queue signals new messages; never, for queues without the signal.
async fn arrival(arrivals: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match arrivals {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The queue is closing: fall back to polling.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn sleep_or_stop(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
