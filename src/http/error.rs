//! Every HTTP error is JSON `{"error": {"code", "message"}}`. A 500 tells the client
//! nothing about the cause; the cause chain goes to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The body of every error but OpenDSR's.
#[derive(serde::Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// Stable, for programs (`no_route`, `rate_limited`, `wrong_state`, ...).
    pub code: &'static str,
    /// For people; never personal data.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// Any other client error, with its status, a stable code and a message.
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
            ),
            Self::Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", (*why).into()),
            Self::Conflict(why) => (StatusCode::CONFLICT, "conflict", (*why).into()),
            Self::Client {
                status,
                code,
                message,
            } => (*status, code, message.clone()),
            Self::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                (*why).into(),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the operator can find the cause in the log".into(),
            ),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// What the client may read; an internal error's cause goes to the log here.
    pub fn public_message(&self) -> String {
        if let Self::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        self.parts().2
    }

    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let (status, code, message) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail { code, message },
        };
        (status, Json(body)).into_response()
    }
}
