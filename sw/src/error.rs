//! The crate's error type: one variant per kind of failure, keeping the JS error's name and
//! message, each with a stable `code` (see `rangersync_shared::messages::codes`).

use rangersync_shared::messages::codes;
use rangersync_shared::protocol::ErrorDetail;
use rangersync_shared::snapshot::SnapshotError;
use rangersync_shared::validate::ValidationError;
use wasm_bindgen::JsValue;

/// Everything that can go wrong in the worker shell.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SwError {
    /// IndexedDB said `QuotaExceededError`: the write did not happen.
    #[error("storage quota exceeded: {message}")]
    QuotaExceeded { message: String },
    /// Another JS exception (IndexedDB, fetch, a DOM call), with its `name` and `message`.
    #[error("{name}: {message}")]
    Js { name: String, message: String },
    /// A stored record that cannot be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Bad input from a page.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A snapshot that cannot be restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Anything else with a stable code.
    #[error("{message}")]
    Coded { code: &'static str, message: String },
    /// A failure the engine already judged and recorded (a backup's upload: `network`,
    /// `auth`, `server_error`, …), passed on as it is.
    #[error("{}", .0.message)]
    Reported(ErrorDetail),
}

impl SwError {
    /// A coded error.
    pub fn coded(code: &'static str, message: impl Into<String>) -> Self {
        Self::Coded {
            code,
            message: message.into(),
        }
    }

    /// Read a thrown JS value (a `DOMException`, an `Error`, or anything).
    pub fn from_js(value: &JsValue) -> Self {
        let get = |k: &str| {
            js_sys::Reflect::get(value, &JsValue::from_str(k))
                .ok()
                .and_then(|v| v.as_string())
        };
        let name = get("name").unwrap_or_else(|| "Error".to_owned());
        let message = get("message")
            .or_else(|| value.as_string())
            .unwrap_or_else(|| format!("{value:?}"));
        if name == "QuotaExceededError" {
            Self::QuotaExceeded { message }
        } else {
            Self::Js { name, message }
        }
    }

    /// The stable code a caller can switch on.
    pub fn code(&self) -> &str {
        match self {
            Self::QuotaExceeded { .. } => codes::QUOTA_EXCEEDED,
            Self::Js { .. } => codes::STORAGE_ERROR,
            Self::Corrupt(_) => codes::CORRUPT_RECORD,
            Self::Invalid(e) => e.code(),
            Self::Snapshot(e) => e.code(),
            Self::Coded { code, .. } => code,
            Self::Reported(d) => &d.code,
        }
    }

    /// The `{code, message}` sent to pages.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_owned(),
            message: self.to_string(),
        }
    }
}

impl From<JsValue> for SwError {
    fn from(value: JsValue) -> Self {
        Self::from_js(&value)
    }
}

impl From<SwError> for ErrorDetail {
    fn from(e: SwError) -> Self {
        e.detail()
    }
}

impl From<SwError> for JsValue {
    fn from(e: SwError) -> Self {
        let err = js_sys::Error::new(&e.to_string());
        let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
        err.into()
    }
}

/// Shorthand.
pub type Result<T, E = SwError> = std::result::Result<T, E>;
