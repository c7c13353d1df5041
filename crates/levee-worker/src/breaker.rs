//! A circuit breaker in front of the database: after a transient failure every worker of
//! the sink waits out a backoff (exponential, with jitter, up to a ceiling); then a single
//! worker probes, and only its success lets the others write again. A suffering database
//! sees a trickle of probes, never a hot loop.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Longer than a probe's write can take (the sink's acquire timeout is 3 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest a database that is back waits for levee to notice: short enough for a quick
/// catch-up after maintenance, long enough that one probe every few seconds is no burden.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// Since when one worker holds the probe. A probe that never reports (its batch was
    /// empty, or its stream paused) expires, so the breaker cannot stay shut for good.
    probing: Option<Instant>,
    last_error: Option<String>,
}

/// What the admin status shows of a sink.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

impl Breaker {
    /// Wait until this worker may use the database. Returns false on shutdown.
    pub async fn ready(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                match s.open_until {
                    _ if s.failures == 0 => return true,
                    Some(until) if until > now => until - now,
                    // Half open: one worker probes, the others wait for its verdict.
                    _ if s
                        .probing
                        .is_some_and(|since| since.elapsed() < PROBE_TIMEOUT) =>
                    {
                        Duration::from_millis(100)
                    }
                    _ => {
                        s.probing = Some(now);
                        return true;
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub fn success(&self) {
        let mut s = self.state.lock().unwrap();
        if s.failures > 0 {
            tracing::info!(after_failures = s.failures, "database is back");
        }
        *s = State::default();
    }

    pub fn failure(&self, error: &str) {
        let mut s = self.state.lock().unwrap();
        s.failures += 1;
        let ceiling = FIRST_BACKOFF
            .saturating_mul(1 << s.failures.min(16))
            .min(MAX_BACKOFF);
        // Jitter: anywhere in the upper half, so nodes that failed together retry apart.
        let backoff = rand::rng().random_range(ceiling / 2..=ceiling);
        s.open_until = Some(Instant::now() + backoff);
        s.probing = None;
        s.last_error = Some(error.to_owned());
        tracing::warn!(
            failures = s.failures,
            ?backoff,
            error,
            "database unavailable; backing off"
        );
    }

    pub fn health(&self) -> Health {
        let s = self.state.lock().unwrap();
        Health {
            healthy: s.failures == 0,
            consecutive_failures: s.failures,
            last_error: s.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_and_a_silent_probe_expires() {
        let breaker = Breaker::default();
        let shutdown = CancellationToken::new();
        assert!(breaker.ready(&shutdown).await);
        breaker.failure("connection refused");
        assert!(!breaker.health().healthy);

        // After the backoff one worker gets the probe…
        let started = tokio::time::Instant::now();
        assert!(breaker.ready(&shutdown).await);
        assert!(started.elapsed() >= FIRST_BACKOFF);
        // …and another waits: for the verdict, or until the probe is given up on.
        let waited = tokio::time::Instant::now();
        assert!(breaker.ready(&shutdown).await);
        assert!(
            waited.elapsed() >= PROBE_TIMEOUT,
            "a second probe came too soon"
        );

        breaker.success();
        assert!(breaker.health().healthy);
        let at_once = tokio::time::Instant::now();
        assert!(breaker.ready(&shutdown).await);
        assert_eq!(at_once.elapsed(), Duration::ZERO);
    }
}
