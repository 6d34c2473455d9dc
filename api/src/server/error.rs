//! One error shape for every refusal: `{"error": {"code", "message", "field"?, ...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use events::{Kind, Rejection};
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Extra members of the error object (`current_version`, `index`, `leader`, ...).
    pub extra: Map<String, Value>,
}

/// The error body, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine code, e.g. `payment_exceeds_invoice`.
    pub code: String,
    pub message: String,
    /// JSON path of the offending field, e.g. `data.tranches[1].amount`.
    pub field: Option<String>,
    /// On `version_conflict`: the stream's current version.
    pub current_version: Option<u64>,
    /// In a batch: the index of the refused event.
    pub index: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, extra: Map::new() }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn bad_parameter(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", message).field(name)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        let status = match r.code.kind() {
            Kind::Malformed => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut e = ApiError::new(status, r.code.as_str(), r.message);
        e.field = r.field;
        if let Some(v) = r.current_version {
            e.extra.insert("current_version".into(), json!(v));
        }
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        if let Some(f) = self.field {
            error.insert("field".into(), json!(f));
        }
        error.extend(self.extra);
        metrics::counter!("http_errors_total", "code" => self.code).increment(1);
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}
