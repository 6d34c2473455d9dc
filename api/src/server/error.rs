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
    /// `Retry-After` seconds, on a refusal the client should retry.
    pub retry_after: Option<u64>,
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
        ApiError { status, code, message: message.into(), field: None, extra: Map::new(), retry_after: None }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// Tells the client when to try again (`Retry-After`, seconds).
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
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

    pub fn unavailable_code(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    }

    /// A failure of the server itself (500), with its own code: never the client's fault.
    pub fn internal(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }

    /// A blocking task that did not finish (it panicked, or the runtime is shutting down).
    pub fn task(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal("internal", format!("the request's task failed: {e}"))
    }
}

/// Storage that cannot be read is unavailable (503, retry later); stored data that fails
/// its checks is the server's damage (500), never the client's.
impl From<ledger::ReadError> for ApiError {
    fn from(e: ledger::ReadError) -> ApiError {
        match e {
            ledger::ReadError::Storage(e) => ApiError::unavailable_code("storage_unavailable", format!("the store could not be read: {e}")),
            ledger::ReadError::Corrupt(f) => ApiError::internal("store_corrupt", format!("stored data is damaged: {f}")),
        }
    }
}

impl From<ledger::ProofError> for ApiError {
    fn from(e: ledger::ProofError) -> ApiError {
        match e {
            ledger::ProofError::OutOfRange(m) => ApiError::new(StatusCode::BAD_REQUEST, "out_of_range", m),
            ledger::ProofError::Storage(e) => e.into(),
        }
    }
}

impl From<ledger::checkpoints::CheckpointError> for ApiError {
    fn from(e: ledger::checkpoints::CheckpointError) -> ApiError {
        use ledger::checkpoints::CheckpointError;
        match e {
            CheckpointError::Proof(e) => e.into(),
            CheckpointError::Storage(e) => e.into(),
            CheckpointError::Contended(_) => ApiError::unavailable_code("checkpoint_contended", e.to_string()),
            CheckpointError::Sync(_) => ApiError::unavailable_code("storage_unavailable", e.to_string()),
        }
    }
}

/// The ledger's refusals and failures: the caller's (4xx, from the rules) or the server's.
impl From<ledger::AppendError> for ApiError {
    fn from(e: ledger::AppendError) -> ApiError {
        use ledger::AppendError;
        match e {
            AppendError::Rejected { rejection, .. } | AppendError::RequestRefused(rejection) => rejection.into(),
            AppendError::Stopped(None) => ApiError::unavailable_code("ledger_closed", "the ledger is closed"),
            AppendError::Stopped(Some(failure)) => ApiError::unavailable_code("writer_stopped", failure.reason),
            AppendError::Storage(m) => ApiError::unavailable_code("storage_unavailable", m),
            AppendError::Corrupt(f) => ApiError::internal("store_corrupt", format!("stored data is damaged: {f}")),
            AppendError::Internal(m) => ApiError::internal("internal", m),
            // The server's handler names the leader when it knows it (replicated mode).
            AppendError::NotLeader => ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", "this node is not the leader; send writes to the leader"),
            AppendError::NotReplicated(m) => ApiError::unavailable_code("not_replicated", format!("the events were not replicated and nothing was written; retry: {m}")),
            AppendError::ReplicationOutcomeUnknown(m) => ApiError::unavailable_code(
                "replication_outcome_unknown",
                format!("the events may have been written (the replicated log's answer was lost); retry only with the same Idempotency-Key: {m}"),
            ),
        }
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
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_replication_outcome_is_not_told_as_nothing_written() {
        let unknown = ApiError::from(ledger::AppendError::ReplicationOutcomeUnknown("no acknowledgement within 5s".into()));
        assert_eq!((unknown.status, unknown.code), (StatusCode::SERVICE_UNAVAILABLE, "replication_outcome_unknown"));
        assert!(unknown.message.contains("may have been written") && unknown.message.contains("only with the same Idempotency-Key"), "{}", unknown.message);
        assert!(!unknown.message.contains("nothing was written"), "{}", unknown.message);
        let refused = ApiError::from(ledger::AppendError::NotReplicated("no quorum".into()));
        assert_eq!((refused.status, refused.code), (StatusCode::SERVICE_UNAVAILABLE, "not_replicated"));
        assert!(refused.message.contains("nothing was written"), "{}", refused.message);
    }
}
