//! The one place where errors become HTTP responses: every failure leaves the daemon as JSON
//! [`ErrorBody`] `{code, message}` with a stable snake_case `code`.
//!
//! Invariant: the `code` ↔ status pairs below never change meaning; scripts and `kunlunctl`
//! branch on them. Internal details (SQL, paths) go to the log, not the body, for 500s.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use kunlun_meta::api::ErrorBody;

/// An API error: a status, a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`: the request as a whole is unusable (content type, missing body).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 400 `malformed_json`: the body is not JSON.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 400 `invalid_field`: a field has the wrong type, is unknown, or fails validation.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 415 `unsupported_media_type`: a body that is not `application/json`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 503 `overloaded`: too many requests in flight on this worker; retry after a second.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.code == "overloaded" {
            res.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        res.json(self.body())
    }
}

impl From<kunlun_meta::Error> for ApiError {
    fn from(e: kunlun_meta::Error) -> Self {
        kunlun_core::Error::from(e).into()
    }
}

impl From<kunlun_core::Error> for ApiError {
    fn from(e: kunlun_core::Error) -> Self {
        use kunlun_core::Error as E;
        match e {
            E::Invalid(m) => ApiError::invalid_field(m),
            e @ E::NotFound { .. } => ApiError::not_found(e.to_string()),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", m)
            }
            E::MachineRefused { kind, message } => {
                let status = if kind == kunlun_core::error::ProbeFailure::NotConfigured {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                ApiError::new(status, kind.code(), message)
            }
            e @ E::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the cluster-mgr log",
                )
            }
        }
    }
}

/// Classifies a serde_json error: syntax/EOF is `malformed_json`, anything about the data
/// (wrong type, unknown or missing field) is `invalid_field`.
pub(crate) fn from_serde_json(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::invalid_field(e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => ApiError::malformed_json(e.to_string()),
    }
}

/// `JsonConfig` error handler.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Deserialize(e) => from_serde_json(e),
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::payload_too_large(
            format!("body of {length} bytes exceeds the limit of {limit} bytes"),
        ),
        JsonPayloadError::Overflow { limit } => {
            ApiError::payload_too_large(format!("body exceeds the limit of {limit} bytes"))
        }
        JsonPayloadError::ContentType => {
            ApiError::unsupported_media_type("Content-Type must be application/json")
        }
        other => ApiError::invalid_request(other.to_string()),
    };
    api.into()
}

/// `PathConfig` error handler: a path segment of the wrong type (e.g. a non-numeric id).
pub fn path_error(err: PathError, req: &HttpRequest) -> actix_web::Error {
    let msg = match &err {
        PathError::Deserialize(e) => format!("path {}: {e}", req.path()),
        other => other.to_string(),
    };
    ApiError::invalid_field(msg).into()
}

/// `QueryConfig` error handler: unknown query keys or values of the wrong type.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = match &err {
        QueryPayloadError::Deserialize(e) => format!("query: {e}"),
        other => other.to_string(),
    };
    ApiError::invalid_field(msg).into()
}

/// Default service: any route not in the table.
pub async fn route_not_found(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route {} {}", req.method(), req.path())).error_response()
}

/// Default service of a resource: a known path with an unsupported method; `Allow` lists the
/// methods the path has.
pub async fn method_not_allowed(req: HttpRequest, allow: &'static str) -> HttpResponse {
    let mut res = ApiError::method_not_allowed(format!(
        "{} is not supported on {}; allowed: {allow}",
        req.method(),
        req.path()
    ))
    .error_response();
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    res
}
