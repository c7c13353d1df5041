//! The queue between intake and the workers.
//!
//! Intake sends accepted payloads; workers receive them under a lease (a visibility timeout,
//! as in SQS), write them to the database, then acknowledge them. A message whose lease runs
//! out without an ack is delivered again, so delivery is at-least-once and everything
//! downstream is idempotent by message id. A message delivered `max_attempts` times without
//! an ack moves to the queue's dead letters, with its last error.
//!
//! Every backend implements [`Queue`] and must pass the suite in [`conformance`].

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;

pub use embedded::{EmbeddedOptions, EmbeddedQueue};

/// A message to enqueue. The id is chosen by the sender; sending an id that is already
/// queued, in flight or dead is a no-op, which makes retried sends safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    pub payload: Vec<u8>,
}

/// A message handed to a consumer under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub payload: Vec<u8>,
    pub enqueued_at: SystemTime,
    /// How many times it has been delivered, this time included.
    pub attempts: u32,
    /// Proof of the lease, for ack, nack and extend. Stale once the lease has run out and
    /// the message was delivered again.
    pub receipt: Receipt,
}

/// An opaque lease handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// A message that used up its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadMessage {
    pub id: String,
    pub payload: Vec<u8>,
    pub enqueued_at: SystemTime,
    pub died_at: SystemTime,
    pub attempts: u32,
    pub error: String,
}

/// Where a message is, for the status lookup of intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Waiting for a consumer (or for a retry delay to pass).
    Queued,
    /// Leased to a consumer.
    InFlight,
    Dead,
}

/// A queue's settings, declared by the node before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
    /// Messages waiting (queued or in flight) beyond which sends are refused.
    pub max_depth: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueStats {
    /// Messages waiting for a consumer, including those waiting out a retry delay.
    pub depth: u64,
    /// Messages leased to a consumer.
    pub in_flight: u64,
    pub dead: u64,
    /// Age of the oldest message not yet acknowledged (queued or in flight).
    pub oldest_age: Option<Duration>,
}

/// What a backend can and cannot do, so callers degrade openly instead of being lied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Messages are received in the order they were sent (apart from retries).
    pub fifo: bool,
    /// [`Queue::state`] can find a message by id.
    pub message_state: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue refuses more messages for now: max depth reached or the disk is (nearly)
    /// full. Callers answer 503 with `Retry-After`.
    #[error("queue is full: {0}")]
    Full(String),
    /// The backend cannot be reached or has shut down.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    /// Anything else the backend reported.
    #[error("queue backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// One narrow interface for every queue backend (embedded, SQS, JetStream).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    fn capabilities(&self) -> Capabilities;

    /// Create the queue (and its dead letters) if missing and apply its settings.
    async fn declare(&self, spec: &QueueSpec) -> Result<()>;

    /// Durably enqueue all messages, or none: when this returns `Ok`, every message survives
    /// a crash of this process. Ids already present are skipped.
    async fn send(&self, queue: &str, messages: Vec<NewMessage>) -> Result<()>;

    /// Lease up to `max` messages for `lease`. Returns at once, possibly with none.
    async fn receive(&self, queue: &str, max: usize, lease: Duration) -> Result<Vec<Delivery>>;

    /// Remove messages for good. A stale receipt is ignored: the message was or will be
    /// delivered again, and consumers are idempotent.
    async fn ack(&self, queue: &str, receipts: &[Receipt]) -> Result<()>;

    /// Give a message back to be delivered again after `delay`, recording `error`. A message
    /// that has used up its attempts goes to the dead letters instead.
    async fn nack(
        &self,
        queue: &str,
        receipt: &Receipt,
        delay: Duration,
        error: &str,
    ) -> Result<()>;

    /// Give messages back at once without counting the delivery as a failed attempt (a
    /// consumer shutting down, or backing off from a database that is down).
    async fn release(&self, queue: &str, receipts: &[Receipt]) -> Result<()>;

    /// Extend a lease to `lease` from now. Returns false if the receipt is stale.
    async fn extend(&self, queue: &str, receipt: &Receipt, lease: Duration) -> Result<bool>;

    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// Where a message is, or `None` if the queue does not hold it (never sent, or acked).
    async fn state(&self, queue: &str, id: &str) -> Result<Option<MessageState>>;

    /// Dead letters, oldest first, after the id `after` when given.
    async fn dead(
        &self,
        queue: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeadMessage>>;

    /// Move dead letters back to the queue with fresh attempts: the given ids, or all.
    /// Returns how many moved.
    async fn redrive(&self, queue: &str, ids: Option<&[String]>) -> Result<u64>;

    /// Delete dead letters: the given ids, or all. Returns how many were deleted.
    async fn purge_dead(&self, queue: &str, ids: Option<&[String]>) -> Result<u64>;

    /// Finish what is in hand and flush. Later calls fail with `Unavailable`.
    async fn close(&self);

    /// A signal that changes whenever new messages may have arrived, so an idle consumer
    /// can wait for it instead of polling. `None` for backends that cannot tell; their
    /// consumers poll (SQS and JetStream long-poll inside `receive` instead).
    fn arrivals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
