//! The publishers' notion of now (the CMS's schedules, the jobs' cron), in Unix milliseconds. It runs on tokio's clock, so tests that
//! pause and advance time (`tokio::time::pause`) move it too, and schedules can be tested
//! without waiting.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
    frozen: bool,
}

impl Clock {
    /// The real time.
    pub fn system() -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock::starting_at(now)
    }

    /// A clock that reads `ms` now and advances with tokio's time.
    pub fn starting_at(ms: i64) -> Clock {
        Clock {
            base_ms: ms,
            base: Instant::now(),
            frozen: false,
        }
    }

    /// A clock that always reads `ms`: for output that must not depend on when a test runs.
    pub fn fixed(ms: i64) -> Clock {
        Clock {
            frozen: true,
            ..Clock::starting_at(ms)
        }
    }

    pub fn now(&self) -> i64 {
        if self.frozen {
            return self.base_ms;
        }
        self.base_ms + self.base.elapsed().as_millis() as i64
    }

    /// The tokio instant at which this clock reads `ms`.
    pub fn instant_at(&self, ms: i64) -> Instant {
        let ahead = (ms - self.now()).max(0) as u64;
        Instant::now() + std::time::Duration::from_millis(ahead)
    }
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Parse an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}
