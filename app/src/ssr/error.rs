//! Server side of `AppError`: HTTP responses, and conversions from the errors services
//! meet. Internal causes are logged here, with their chain, and replaced by an opaque
//! message; database text never reaches a client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{AppError, ErrorCode};

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs;
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": self }))).into_response();
        if let Some(secs) = retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Logs an unexpected error with its cause chain and returns the opaque client error.
pub fn internal(context: &str, err: impl std::error::Error) -> AppError {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "{context}");
    AppError::internal()
}

pub trait DbResultExt<T> {
    /// Maps a database error to an opaque internal error, logged with `context`.
    fn db(self, context: &str) -> Result<T, AppError>;
}

impl<T> DbResultExt<T> for Result<T, sqlx::Error> {
    fn db(self, context: &str) -> Result<T, AppError> {
        self.map_err(|e| internal(context, e))
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return AppError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "The request body is larger than {} KiB",
                    crate::model::limits::BODY_MAX_BYTES / 1024
                ),
            );
        }
        if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return AppError::new(
                ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json",
            );
        }
        let text = rejection.body_text();
        let mut error = AppError::new(ErrorCode::InvalidJson, text.clone());
        // serde_path_to_error (inside axum) writes "...target type: field.path: reason".
        if let JsonRejection::JsonDataError(_) = rejection {
            let detail = text
                .split_once("target type: ")
                .map(|(_, d)| d)
                .unwrap_or(&text);
            if let Some((path, reason)) = detail.split_once(": ") {
                if !path.contains(' ') && path != "." {
                    error.field = Some(path.to_owned());
                    error.message = format!("{path}: {reason}");
                }
            }
            if error.field.is_none() {
                if let Some(field) = missing_field(detail) {
                    error.field = Some(field);
                }
            }
        }
        error
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::new(ErrorCode::Validation, rejection.body_text())
    }
}

fn missing_field(detail: &str) -> Option<String> {
    let start = detail.find("missing field `")? + "missing field `".len();
    let end = detail[start..].find('`')?;
    Some(detail[start..start + end].to_owned())
}
