//! Retries for AWS calls: exponential backoff with full jitter, per-attempt and per-operation
//! timeouts, every retry logged with its cause and counted for the summary.
//!
//! The SDK's own retries are switched off (see [`super::connect`]) so that this is the one place
//! that decides, logs and counts. What is retried is decided by [`super::classify`]: throttling,
//! transient errors, 5xx, timeouts, dropped connections; the "snapshot does not exist" race that
//! follows StartSnapshot while [`RetryPolicy::not_found_until`] lies in the future, whatever the
//! attempt count; and a conflicting block write only after an attempt that may have landed.
//!
//! After Ctrl-C no call makes a new attempt (it fails as [`Cause::Interrupted`]), except the
//! cleanup's own ([`Retrier::for_cleanup`]): nothing new is made while the cleanup removes what
//! was made.

pub use super::classify::{classify, classify_service, short_message, Cause};
use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_backoff: Duration,
    /// One attempt may take this long before it is abandoned and retried.
    pub attempt_timeout: Duration,
    /// The whole operation, retries included, gives up after this long.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    /// "Does not exist" is retried until then (the race after StartSnapshot), however many
    /// attempts that takes.
    pub not_found_until: Option<Instant>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(600),
            max_attempts: 12,
            not_found_until: None,
        }
    }
}

/// The race after StartSnapshot: "does not exist" is retried for about two minutes.
pub const NOT_FOUND_WINDOW: Duration = Duration::from_secs(120);

/// While waiting out the "does not exist" race, attempts are at most this far apart: the race
/// ends in seconds, and the window's two minutes then still hold many attempts.
const NOT_FOUND_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A failure after retrying (or a failure that is not retried).
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message} (after {attempts} attempt(s))")]
pub struct CallError {
    pub op: String,
    pub message: String,
    pub cause: Cause,
    pub attempts: u32,
    /// An attempt before the last one may have taken effect (it timed out, lost its
    /// connection, or failed on the server): the last answer may be about that.
    pub earlier_may_have_happened: bool,
}

impl CallError {
    /// Whether any attempt, the last included, may have taken effect.
    pub fn may_have_happened(&self) -> bool {
        self.earlier_may_have_happened || self.cause.may_have_happened()
    }

    /// "Does not exist" answering a retry whose earlier attempt may have done it: for a delete
    /// or a deregistration that means done.
    pub fn gone_after_retry(&self) -> bool {
        matches!(self.cause, Cause::NotFound(_)) && self.earlier_may_have_happened
    }
}

/// Runs calls with a policy and counts every retry.
#[derive(Debug, Clone, Default)]
pub struct Retrier {
    pub policy: RetryPolicy,
    retries: Arc<AtomicU64>,
    /// Runs while the Ctrl-C cleanup does: not stopped by the interruption.
    cleanup: bool,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier {
            policy,
            ..Default::default()
        }
    }

    /// Whether this is the Ctrl-C cleanup's retrier.
    pub fn is_cleanup(&self) -> bool {
        self.cleanup
    }

    /// How many retries all calls through this retrier (and its clones) made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// A clone with another policy that still counts into the same total.
    pub fn with_policy(&self, policy: RetryPolicy) -> Retrier {
        Retrier {
            policy,
            ..self.clone()
        }
    }

    /// The retrier the Ctrl-C cleanup uses: it keeps trying after the interruption, briefly
    /// (the signal thread waits for it).
    pub fn for_cleanup(&self) -> Retrier {
        Retrier {
            policy: RetryPolicy {
                attempt_timeout: Duration::from_secs(10),
                operation_timeout: Duration::from_secs(25),
                max_backoff: Duration::from_secs(2),
                ..self.policy.clone()
            },
            cleanup: true,
            ..self.clone()
        }
    }

    /// Calls `f` until it succeeds, fails for good, or the operation's time is up.
    pub async fn call<T, E, F, Fut>(&self, op: &str, f: F) -> Result<T, CallError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let t = self.policy.attempt_timeout;
        self.call_timed(op, |_| t, f).await
    }

    /// [`Retrier::call`] with the timeout of attempt `n` (1, 2, …) given by `timeout(n)`.
    pub async fn call_timed<T, E, F, Fut>(
        &self,
        op: &str,
        timeout: impl Fn(u32) -> Duration,
        mut f: F,
    ) -> Result<T, CallError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let p = &self.policy;
        let deadline = Instant::now() + p.operation_timeout;
        let mut attempt = 0u32;
        let mut earlier = false;
        loop {
            attempt += 1;
            let fail = |cause, message, earlier| CallError {
                op: op.to_string(),
                message,
                cause,
                attempts: attempt,
                earlier_may_have_happened: earlier,
            };
            if !self.cleanup && crate::cleanup::interrupted() {
                return Err(fail(Cause::Interrupted, "interrupted".into(), earlier));
            }
            let limit = timeout(attempt);
            let (cause, message) = match tokio::time::timeout(limit, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => (classify(&e), short_message(&e)),
                Err(_) => (
                    Cause::Timeout,
                    format!("no answer within {:.1}s", limit.as_secs_f64()),
                ),
            };
            let now = Instant::now();
            let in_race = p.not_found_until.is_some_and(|t| now < t);
            let (retryable, max) = match &cause {
                Cause::Fatal | Cause::Certificate(_) | Cause::Interrupted => (false, p.max_backoff),
                Cause::NotFound(_) => (in_race, NOT_FOUND_MAX_BACKOFF),
                // Another write to this block is under way: ours, if an earlier attempt may
                // have landed and is still being applied (an overwrite with the same bytes is
                // allowed while the snapshot is pending). Otherwise someone else's.
                Cause::Conflict => (earlier, p.max_backoff),
                _ => (true, p.max_backoff),
            };
            let delay = backoff(p.base, max, attempt);
            // The race is retried until its window closes, whatever the attempt count.
            let out_of_attempts = attempt >= p.max_attempts && !in_race;
            if !retryable || out_of_attempts || now + delay >= deadline {
                return Err(fail(cause, message, earlier));
            }
            earlier |= cause.may_have_happened();
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "{op}: {cause}; retry {attempt} in {:.2}s: {message}",
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Full jitter: a uniform delay in `[0, min(max, base * 2^attempt))`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .as_nanos() as u64;
    Duration::from_nanos(if cap == 0 { 0 } else { random() % cap })
}

/// A cheap random number for jitter (not for anything that must be unpredictable).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 1..30 {
            let cap = base.saturating_mul(1 << attempt.min(20)).min(max);
            for _ in 0..50 {
                assert!(backoff(base, max, attempt) < cap);
            }
        }
        // Jitter spreads the delays.
        let v: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(base, max, 5)).collect();
        assert!(v.len() > 10);
    }
}
