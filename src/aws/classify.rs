//! Which failures of an AWS call are worth another attempt, and which may have taken effect.
//!
//! Error codes are sorted as the SDK's own classifier sorts them: aws-runtime's
//! `THROTTLING_ERRORS` and `TRANSIENT_ERRORS` lists (the same constants, not a copy of them),
//! HTTP 500/502/503/504 (aws-smithy-runtime's `TRANSIENT_ERROR_STATUS_CODES`), timeouts and
//! I/O failures. kiln adds what the EBS direct APIs document as retryable and the SDK's lists
//! do not name: `ConcurrentLimitExceededException`, `ValidationException` with reason
//! `WRITE_REQUEST_TIMEOUT` or the message "Failed to read block data" ("Error retries for EBS
//! direct APIs", EBS user guide). A TLS certificate that fails verification is not retried
//! (the SDK retries it as I/O): it will fail the same way every time.

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Why a call failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Throttled(String),
    Server(u16),
    /// A transient error the service named (`RequestTimeout`, `WRITE_REQUEST_TIMEOUT`, …).
    Transient(String),
    Timeout,
    Connection(String),
    /// The snapshot (or image) is not visible yet, right after it was created; or it is gone.
    NotFound(String),
    /// A write to the same block is still being applied (`CONFLICTING_BLOCK_UPDATE`).
    Conflict,
    /// The peer's TLS certificate failed verification: retrying cannot help.
    Certificate(String),
    /// Ctrl-C: no new attempt is made while the cleanup runs.
    Interrupted,
    /// Anything else: a client error that will not change by retrying.
    Fatal,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Throttled(c) => write!(f, "throttled ({c})"),
            Cause::Server(s) => write!(f, "server error (HTTP {s})"),
            Cause::Transient(c) => write!(f, "transient error ({c})"),
            Cause::Timeout => f.write_str("timed out"),
            Cause::Connection(m) => write!(f, "connection failed ({m})"),
            Cause::NotFound(c) => write!(f, "not found yet ({c})"),
            Cause::Conflict => f.write_str("conflicting write in progress"),
            Cause::Certificate(m) => write!(f, "TLS certificate refused ({m})"),
            Cause::Interrupted => f.write_str("interrupted"),
            Cause::Fatal => f.write_str("not retryable"),
        }
    }
}

impl Cause {
    /// Whether the request may have reached the service and taken effect although no answer
    /// said so: it timed out, its connection broke, or the server failed midway.
    pub fn may_have_happened(&self) -> bool {
        matches!(
            self,
            Cause::Timeout | Cause::Connection(_) | Cause::Server(_) | Cause::Transient(_)
        )
    }
}

/// Sorts an SDK error into a [`Cause`].
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Cause {
    match e {
        SdkError::TimeoutError(_) => Cause::Timeout,
        SdkError::DispatchFailure(d) => {
            let connector = d
                .as_connector_error()
                .map(|c| c as &(dyn std::error::Error + 'static));
            if let Some(why) = connector.and_then(certificate_failure) {
                Cause::Certificate(why)
            } else if d.is_timeout() {
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
            let message = ctx.err().message().unwrap_or("");
            let reason = ctx
                .raw()
                .body()
                .bytes()
                .map(json_reason)
                .unwrap_or_default();
            classify_service(status, &code, &reason, message)
        }
        _ => Cause::Fatal,
    }
}

/// The `Reason` member of an EBS JSON error body (`ValidationException`,
/// `RequestThrottledException`, …), if there is one.
fn json_reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// The part of [`classify`] that depends only on the answer (unit-tested).
pub fn classify_service(status: u16, code: &str, reason: &str, message: &str) -> Cause {
    if THROTTLING_ERRORS.contains(&code) || status == 429 {
        return Cause::Throttled(if code.is_empty() { "HTTP 429" } else { code }.into());
    }
    // EBS: "You have reached the limit for concurrent API requests"; a rate, like throttling.
    if code == "ConcurrentLimitExceededException" {
        return Cause::Throttled(code.into());
    }
    if TRANSIENT_ERRORS.contains(&code) {
        return Cause::Transient(code.into());
    }
    if code == "ValidationException" {
        return match reason {
            "WRITE_REQUEST_TIMEOUT" => Cause::Transient(format!("{code} {reason}")),
            "CONFLICTING_BLOCK_UPDATE" => Cause::Conflict,
            _ if message.contains("Failed to read block data") => {
                Cause::Transient(format!("{code}: {message}"))
            }
            _ => Cause::Fatal,
        };
    }
    if matches!(status, 500 | 502 | 503 | 504)
        || code == "InternalError"
        || code == "InternalServerException"
    {
        return Cause::Server(status);
    }
    let not_found = code == "ResourceNotFoundException"
        || code.ends_with(".NotFound")
        // EC2 answers this for an image that was deregistered.
        || code == "InvalidAMIID.Unavailable"
        || message.to_ascii_lowercase().contains("does not exist");
    if not_found {
        return Cause::NotFound(code.to_string());
    }
    Cause::Fatal
}

/// A TLS certificate failure somewhere in a connection failure's chain of causes, described.
fn certificate_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::Error as Tls;
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<Tls>() {
            return matches!(
                t,
                Tls::InvalidCertificate(_)
                    | Tls::NoCertificatesPresented
                    | Tls::UnsupportedNameType
                    | Tls::InvalidCertRevocationList(_)
                    | Tls::PeerIncompatible(_)
            )
            .then(|| t.to_string());
        }
        // io::Error::source() skips its payload (it returns the payload's own source), so the
        // rustls error a TLS stream wraps in an io::Error is reached through get_ref().
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|p| p as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// One line about an SDK error: the service's code and message, or the transport failure.
pub fn short_message<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = match e {
        SdkError::ServiceError(ctx) => {
            let reason = ctx
                .raw()
                .body()
                .bytes()
                .map(json_reason)
                .unwrap_or_default();
            format!(
                "HTTP {}: {}{}: {}",
                ctx.raw().status().as_u16(),
                ctx.err().code().unwrap_or("unknown error"),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                },
                ctx.err().message().unwrap_or("")
            )
        }
        _ => format!("{}", DisplayErrorContext(e)),
    };
    // Transport errors embed whole responses; keep the first part.
    let mut t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let c = |status, code, reason, msg| classify_service(status, code, reason, msg);
        assert_eq!(
            c(400, "ThrottlingException", "", ""),
            Cause::Throttled("ThrottlingException".into())
        );
        assert!(matches!(c(429, "", "", ""), Cause::Throttled(_)));
        assert_eq!(c(503, "", "", ""), Cause::Server(503));
        assert_eq!(c(501, "", "", ""), Cause::Fatal);
        assert!(matches!(
            c(
                404,
                "ResourceNotFoundException",
                "",
                "the snapshot does not exist"
            ),
            Cause::NotFound(_)
        ));
        assert!(matches!(
            c(400, "InvalidSnapshot.NotFound", "", ""),
            Cause::NotFound(_)
        ));
        assert!(matches!(
            c(400, "InvalidAMIID.Unavailable", "", ""),
            Cause::NotFound(_)
        ));
        assert_eq!(c(400, "ValidationException", "", "bad"), Cause::Fatal);
        assert_eq!(
            c(400, "ValidationException", "INVALID_BLOCK", "bad"),
            Cause::Fatal
        );
        assert_eq!(
            c(400, "ValidationException", "CONFLICTING_BLOCK_UPDATE", ""),
            Cause::Conflict
        );
    }

    /// Every code the hardening issue lists, as the SDK's classifier (or the EBS documentation)
    /// treats it: retried.
    #[test]
    fn the_listed_codes_are_retried() {
        for (code, reason) in [
            ("RequestThrottledException", "ACCOUNT_THROTTLED"),
            ("RequestThrottledException", "DEPENDENCY_REQUEST_THROTTLED"),
            ("RequestThrottledException", "RESOURCE_LEVEL_THROTTLE"),
            ("ConcurrentLimitExceededException", ""),
            ("RequestTimeout", ""),
            ("RequestTimeoutException", ""),
            ("EC2ThrottledException", ""),
            ("PriorRequestNotComplete", ""),
            ("BandwidthLimitExceeded", ""),
            ("LimitExceededException", ""),
            ("RequestLimitExceeded", ""),
            ("ValidationException", "WRITE_REQUEST_TIMEOUT"),
        ] {
            let cause = classify_service(400, code, reason, "");
            assert!(
                matches!(cause, Cause::Throttled(_) | Cause::Transient(_)),
                "{code} {reason}: {cause:?}"
            );
        }
        assert!(matches!(
            classify_service(400, "ValidationException", "", "Failed to read block data"),
            Cause::Transient(_)
        ));
    }
}
