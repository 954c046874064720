//! The one error type of the page module: a stable `code` (from
//! [`rangersync_shared::messages::codes`]) and a message for people.
//!
//! In JavaScript it becomes an `Error` named `SyncError` with a `code` property, so a caller can
//! `switch (e.code)`; a promise never rejects with a bare string.

use std::fmt;

use rangersync_shared::messages::{codes, MessageError};
use rangersync_shared::protocol::ErrorDetail;
use rangersync_shared::snapshot::SnapshotError;
use rangersync_shared::validate::ValidationError;

/// A typed failure of a [`crate`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// Stable machine code, one of [`codes`].
    pub code: String,
    /// What went wrong, for people (never contains the token).
    pub message: String,
}

impl ClientError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// `invalid_config`: an option the page gave is unknown or has the wrong type.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_CONFIG, message)
    }

    /// `worker_unavailable`: neither the worker nor the page fallback can take the request.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(codes::WORKER_UNAVAILABLE, message)
    }

    /// `timeout`: the worker did not answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(codes::TIMEOUT, message)
    }

    /// `internal`: a bug; the message says where.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, message)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}

impl From<ValidationError> for ClientError {
    fn from(e: ValidationError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<SnapshotError> for ClientError {
    fn from(e: SnapshotError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<MessageError> for ClientError {
    fn from(e: MessageError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<ErrorDetail> for ClientError {
    fn from(e: ErrorDetail) -> Self {
        Self {
            code: e.code,
            message: e.message,
        }
    }
}
