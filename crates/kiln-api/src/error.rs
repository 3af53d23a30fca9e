//! The API's one error type and its one rendering: Cloud Controller's v3
//! envelope `{"errors":[{"code","title","detail"}]}`, or UAA's
//! `{"error","error_description"}` for the token endpoint.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A Cloud Controller error the client is meant to see.
    #[error("{title}: {detail}")]
    Cf {
        status: StatusCode,
        code: u32,
        title: &'static str,
        detail: String,
    },
    /// A UAA token endpoint error.
    #[error("{error}: {description}")]
    Uaa {
        status: StatusCode,
        error: &'static str,
        description: String,
    },
    #[error("ccdb: {0}")]
    Database(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error("bbs: {0}")]
    Bbs(#[from] kiln_bbs::BbsError),
    #[error("illegal state change: {0}")]
    Transition(#[from] kiln_model::TransitionError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A byte limit and the error to answer when it is passed.
pub type Limit = (u64, fn(u64) -> ApiError);

impl ApiError {
    pub fn cf(
        status: StatusCode,
        code: u32,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError::Cf {
            status,
            code,
            title,
            detail: detail.into(),
        }
    }

    /// `<Resource> not found` (CF-ResourceNotFound, 10010).
    pub fn not_found(resource: &str) -> Self {
        Self::cf(
            StatusCode::NOT_FOUND,
            10010,
            "CF-ResourceNotFound",
            format!("{resource} not found"),
        )
    }

    pub fn unknown_request() -> Self {
        Self::cf(
            StatusCode::NOT_FOUND,
            10000,
            "CF-NotFound",
            "Unknown request",
        )
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::cf(
            StatusCode::UNPROCESSABLE_ENTITY,
            10008,
            "CF-UnprocessableEntity",
            detail,
        )
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::cf(
            StatusCode::BAD_REQUEST,
            1004,
            "CF-BadRequest",
            format!("Bad request: {}", detail.into()),
        )
    }

    pub fn bad_query(detail: impl Into<String>) -> Self {
        Self::cf(
            StatusCode::BAD_REQUEST,
            10005,
            "CF-BadQueryParameter",
            format!("The query parameter is invalid: {}", detail.into()),
        )
    }

    pub fn parse_error() -> Self {
        Self::cf(
            StatusCode::BAD_REQUEST,
            1001,
            "CF-MessageParseError",
            "Request invalid due to parse error: invalid request body",
        )
    }

    pub fn not_authenticated() -> Self {
        Self::cf(
            StatusCode::UNAUTHORIZED,
            10002,
            "CF-NotAuthenticated",
            "Authentication error",
        )
    }

    pub fn invalid_token() -> Self {
        Self::cf(
            StatusCode::UNAUTHORIZED,
            1000,
            "CF-InvalidAuthToken",
            "Invalid Auth Token",
        )
    }

    /// 403 CF-NotAuthorized (10003): e.g. a signed URL that is tampered or expired.
    pub fn not_authorized() -> Self {
        Self::cf(
            StatusCode::FORBIDDEN,
            10003,
            "CF-NotAuthorized",
            "You are not authorized to perform the requested action",
        )
    }

    /// Cloud Controller's packer error for a package whose files exceed
    /// `max_package_bytes` (CF-AppPackageInvalid). `status` is 413 when the
    /// upload itself was cut off, 422 when the unpacked files are too big.
    pub fn package_too_large(status: StatusCode, limit: u64) -> Self {
        Self::cf(
            status,
            150001,
            "CF-AppPackageInvalid",
            format!("The app package is invalid: Package may not be larger than {limit} bytes"),
        )
    }

    pub fn package_invalid(detail: impl Into<String>) -> Self {
        Self::cf(
            StatusCode::UNPROCESSABLE_ENTITY,
            150001,
            "CF-AppPackageInvalid",
            format!("The app package is invalid: {}", detail.into()),
        )
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ApiError::Io {
            context: context.into(),
            source,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Cf {
                status,
                code,
                title,
                detail,
            } => (
                *status,
                serde_json::json!({"errors": [{"code": code, "title": title, "detail": detail}]}),
            ),
            ApiError::Uaa {
                status,
                error,
                description,
            } => (
                *status,
                serde_json::json!({"error": error, "error_description": description}),
            ),
            // CC's answer when its blobstore does not answer; the cause is
            // logged, not shown.
            ApiError::Store(kiln_store::StoreError::ObjectStore { .. }) => {
                tracing::error!(error = %self, "blobstore unavailable");
                (
                    StatusCode::BAD_GATEWAY,
                    serde_json::json!({"errors": [{"code": 150007, "title": "CF-BlobstoreUnavailable", "detail": "Failed to perform blobstore operation after three retries."}]}),
                )
            }
            // The CCDB is away (restarting, unreachable, its pool
            // exhausted): CC's 503; the same request succeeds once it is back.
            ApiError::Database(e) if kiln_store::is_unavailable(e) => {
                tracing::warn!(error = %self, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"errors": [{"code": 10015, "title": "CF-ServiceUnavailable", "detail": "The database is unavailable; retry the request."}]}),
                )
            }
            other => {
                tracing::error!(error = %other, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"errors": [{"code": 10001, "title": "UnknownError", "detail": "An unknown error occurred."}]}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}
