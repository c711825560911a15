//! The one error type. It crosses the wire (server functions and REST alike), so it
//! carries only what a client may see: a stable code, a readable message, the field at
//! fault and, for rate limits, when to retry. Internal causes are logged on the server
//! and never put into `message`.

use serde::{Deserialize, Serialize};
use server_fn::codec::JsonEncoding;
use server_fn::error::{FromServerFnError, ServerFnErrorErr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field failed validation; `field` names it.
    Validation,
    /// The request body is not the JSON we expect.
    InvalidJson,
    PayloadTooLarge,
    /// The body is not sent as `application/json`.
    UnsupportedMediaType,
    NotFound,
    /// Not signed in, or the token is unknown or revoked.
    Unauthorized,
    /// Signed in, but the action needs an admin.
    Forbidden,
    /// A state-changing request from another site (its Origin is not ours).
    Csrf,
    /// The request's Host is a name this server was not told it has (DNS rebinding).
    MisdirectedRequest,
    /// The user's media already fill the storage quota an admin set.
    QuotaExceeded,
    /// The value must be unique and is taken (an e-mail address).
    Conflict,
    /// Too many requests from this user or address; `retry_after_secs` says when to retry.
    RateLimited,
    /// No API key is configured for the language-model provider.
    ProviderNotConfigured,
    /// The provider rejected the configured key.
    ProviderAuth,
    /// The provider answered 429; `retry_after_secs` says when to try again.
    ProviderRateLimited,
    ProviderTimeout,
    /// The model declined the request (content policy, refusal).
    ProviderRefused,
    /// The model's answer did not match the script schema, even after a repair attempt.
    ProviderMalformed,
    /// The provider is unreachable or failed on its side.
    ProviderUnavailable,
    /// The provider rejected the request itself (unknown model, bad parameter).
    ProviderBadRequest,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Validation | ErrorCode::InvalidJson => 422,
            ErrorCode::PayloadTooLarge | ErrorCode::QuotaExceeded => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::NotFound => 404,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::Csrf => 403,
            ErrorCode::MisdirectedRequest => 421,
            ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::ProviderNotConfigured => 409,
            ErrorCode::ProviderAuth
            | ErrorCode::ProviderRefused
            | ErrorCode::ProviderMalformed
            | ErrorCode::ProviderUnavailable
            | ErrorCode::ProviderBadRequest => 502,
            ErrorCode::ProviderRateLimited => 429,
            ErrorCode::ProviderTimeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[error("{message}")]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(ErrorCode::Validation, message)
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "Sign in to continue.")
    }

    pub fn forbidden() -> Self {
        Self::new(ErrorCode::Forbidden, "Only an admin can do this.")
    }

    pub fn rate_limited(what: &str, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("Too many {what}. Try again in {retry_after_secs} s."),
            )
        }
    }

    /// The opaque message for anything the client cannot act on; the cause is logged
    /// where the error is created (see `ssr::error`).
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "Something went wrong on the server. It has been logged; please try again.",
        )
    }

    /// Where the UI should send the user to fix this error, if anywhere.
    pub fn fix_link(&self) -> Option<&'static str> {
        match self.code {
            ErrorCode::ProviderNotConfigured
            | ErrorCode::ProviderAuth
            | ErrorCode::ProviderBadRequest => Some("/settings"),
            _ => None,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg) | ServerFnErrorErr::Deserialization(msg) => Self::new(
                ErrorCode::InvalidJson,
                format!("The request could not be read: {msg}"),
            ),
            ServerFnErrorErr::Request(msg) | ServerFnErrorErr::Response(msg) => Self::new(
                ErrorCode::Internal,
                format!("Could not reach the CREVID server: {msg}"),
            ),
            other => Self::new(ErrorCode::Internal, other.to_string()),
        }
    }
}
