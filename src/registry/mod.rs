//! A blocking client for the OCI distribution API (docker registries), for `push`.
//!
//! - module [`reference`]: `docker://HOST[:PORT]/NAME[:TAG][@DIGEST]`;
//! - module [`auth`]: `WWW-Authenticate` challenges, credentials (flags, auth files,
//!   helpers), bearer tokens;
//! - module [`client`], [`Client`]: `HEAD` blobs, cross-repository mounts, streamed uploads
//!   (`POST`, one chunked `PATCH`, `PUT ?digest=`), manifests; retries with backoff.
//!
//! Every error names the registry, and the repository and blob or manifest at stake.

pub mod auth;
pub mod client;
pub mod reference;

pub use client::{Client, ClientOptions, Retry};
pub use reference::{Reference, ReferenceError};

use std::fmt;

/// A registry operation that failed. The message names the registry, repository and object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an unexpected status.
    #[error("registry {registry}: {what}: {status} {}{}", status_hint(*status), errors_suffix(.errors))]
    Status {
        /// `HOST[:PORT]`.
        registry: String,
        /// The repository and object, e.g. `repository t/x, blob sha256:…`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's JSON errors: `(code, message)`.
        errors: Vec<(String, String)>,
    },
    /// The request did not get an answer (connection refused or reset, timeout, TLS).
    #[error("registry {registry}: {what}: {source}")]
    Transport {
        /// `HOST[:PORT]`.
        registry: String,
        /// The repository and object.
        what: String,
        /// What went wrong underneath.
        source: ureq::Error,
    },
    /// Anything else: an unreadable body, a bad answer, credentials, options.
    #[error("registry {registry}: {what}: {message}")]
    Other {
        /// `HOST[:PORT]`.
        registry: String,
        /// The repository and object (or `credentials`, `TLS options`).
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// The HTTP status, when the registry answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: 5xx and 429 answers, connection failures,
    /// resets and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            Error::Transport { source, .. } => transport_is_retryable(source),
            Error::Other { .. } => false,
        }
    }
}

fn transport_is_retryable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::TimedOut
                | K::Interrupted
                | K::NotConnected
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed => true,
        // A connection closed under a request can surface as a protocol error.
        ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized (credentials missing or refused: give USER:PASS or an auth file with an entry for the registry)",
        403 => "Forbidden (the credentials do not allow this)",
        404 => "Not Found",
        405 => "Method Not Allowed (the registry does not allow this operation)",
        429 => "Too Many Requests",
        500..=599 => "Server Error",
        _ => "",
    }
}

fn errors_suffix(errors: &[(String, String)]) -> String {
    let mut s = String::new();
    for (i, (code, message)) in errors.iter().enumerate() {
        s.push_str(if i == 0 { ": " } else { "; " });
        s.push_str(code);
        if !message.is_empty() {
            s.push_str(": ");
            s.push_str(message);
        }
    }
    s
}

/// What an operation is about, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct What(pub(crate) String);

impl What {
    pub(crate) fn blob(repo: &str, digest: &str) -> What {
        What(format!("repository {repo}, blob {digest}"))
    }
    pub(crate) fn manifest(repo: &str, reference: &str) -> What {
        What(format!("repository {repo}, manifest {reference}"))
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
