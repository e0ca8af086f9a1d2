//! Retries for AWS calls: exponential backoff with full jitter, per-attempt and per-operation
//! timeouts, every retry logged with its cause and counted for the summary.
//!
//! The SDK's own retries are switched off (see [`super::connect`]) so that this is the one place
//! that decides, logs and counts. What is retried: throttling, 5xx, timeouts, dropped
//! connections, and — only while [`RetryPolicy::not_found_until`] lies in the future — the
//! "snapshot does not exist" race that follows StartSnapshot.

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a call failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Throttled(String),
    Server(u16),
    Timeout,
    Connection(String),
    /// The snapshot (or image) is not visible yet, right after it was created.
    NotFound(String),
    /// Anything else: a client error that will not change by retrying.
    Fatal,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Throttled(c) => write!(f, "throttled ({c})"),
            Cause::Server(s) => write!(f, "server error (HTTP {s})"),
            Cause::Timeout => f.write_str("timed out"),
            Cause::Connection(m) => write!(f, "connection failed ({m})"),
            Cause::NotFound(c) => write!(f, "not found yet ({c})"),
            Cause::Fatal => f.write_str("not retryable"),
        }
    }
}

/// Sorts an SDK error into a [`Cause`].
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Cause {
    match e {
        SdkError::TimeoutError(_) => Cause::Timeout,
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                Cause::Timeout
            } else {
                Cause::Connection(format!("{:?}", d))
            }
        }
        // A whole body that does not parse will not parse next time either; a cut-off one may.
        SdkError::ResponseError(r) if r.raw().body().bytes().is_some() => Cause::Fatal,
        SdkError::ResponseError(_) => Cause::Connection("cut-off response".into()),
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("").to_string();
            let message = ctx.err().message().unwrap_or("").to_ascii_lowercase();
            classify_service(status, &code, &message)
        }
        _ => Cause::Fatal,
    }
}

/// One line about an SDK error: the service's code and message, or the transport failure.
pub fn short_message<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = match e {
        SdkError::ServiceError(ctx) => format!(
            "HTTP {}: {}: {}",
            ctx.raw().status().as_u16(),
            ctx.err().code().unwrap_or("unknown error"),
            ctx.err().message().unwrap_or("")
        ),
        _ => format!("{}", DisplayErrorContext(e)),
    };
    // Transport errors embed whole responses; keep the first part.
    let mut t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

/// The part of [`classify`] that depends only on the answer (unit-tested).
pub fn classify_service(status: u16, code: &str, message: &str) -> Cause {
    const THROTTLE: [&str; 6] = [
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    ];
    if status == 429 || THROTTLE.contains(&code) {
        return Cause::Throttled(if code.is_empty() { "HTTP 429" } else { code }.into());
    }
    if status >= 500 || code == "InternalError" || code == "InternalServerException" {
        return Cause::Server(status);
    }
    let not_found = code == "ResourceNotFoundException"
        || code.ends_with(".NotFound")
        || message.contains("does not exist");
    if not_found {
        return Cause::NotFound(code.to_string());
    }
    Cause::Fatal
}

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
    /// "Does not exist" is retried until then (the race after StartSnapshot).
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

/// A failure after retrying (or a failure that is not retried).
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message} (after {attempts} attempt(s))")]
pub struct CallError {
    pub op: String,
    pub message: String,
    pub cause: Cause,
    pub attempts: u32,
}

/// Runs calls with a policy and counts every retry.
#[derive(Debug, Clone, Default)]
pub struct Retrier {
    pub policy: RetryPolicy,
    retries: Arc<AtomicU64>,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier {
            policy,
            retries: Arc::default(),
        }
    }

    /// How many retries all calls through this retrier (and its clones) made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// A clone with another policy that still counts into the same total.
    pub fn with_policy(&self, policy: RetryPolicy) -> Retrier {
        Retrier {
            policy,
            retries: self.retries.clone(),
        }
    }

    /// Calls `f` until it succeeds, fails for good, or the operation's time is up.
    pub async fn call<T, E, F, Fut>(&self, op: &str, mut f: F) -> Result<T, CallError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let p = &self.policy;
        let deadline = Instant::now() + p.operation_timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (cause, message) = match tokio::time::timeout(p.attempt_timeout, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => (classify(&e), short_message(&e)),
                Err(_) => (
                    Cause::Timeout,
                    format!("no answer within {}s", p.attempt_timeout.as_secs()),
                ),
            };
            let now = Instant::now();
            let retryable = match &cause {
                Cause::Fatal => false,
                Cause::NotFound(_) => p.not_found_until.is_some_and(|t| now < t),
                _ => true,
            };
            let delay = backoff(p.base, p.max_backoff, attempt);
            if !retryable || attempt >= p.max_attempts || now + delay >= deadline {
                return Err(CallError {
                    op: op.to_string(),
                    message,
                    cause,
                    attempts: attempt,
                });
            }
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

    #[test]
    fn classifies_answers() {
        let throttled = classify_service(400, "ThrottlingException", "");
        assert_eq!(throttled, Cause::Throttled("ThrottlingException".into()));
        assert!(matches!(classify_service(429, "", ""), Cause::Throttled(_)));
        assert_eq!(classify_service(503, "", ""), Cause::Server(503));
        assert!(matches!(
            classify_service(
                404,
                "ResourceNotFoundException",
                "the snapshot does not exist"
            ),
            Cause::NotFound(_)
        ));
        assert!(matches!(
            classify_service(400, "InvalidSnapshot.NotFound", ""),
            Cause::NotFound(_)
        ));
        assert_eq!(
            classify_service(400, "ValidationException", "bad"),
            Cause::Fatal
        );
    }
}
