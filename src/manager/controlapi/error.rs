//! The control API's one error type, and the one place it becomes a gRPC status: handlers return [`ApiError`]
//! (directly or from the manager's typed rejections through `From`), the `Control` impl turns it into a
//! `tonic::Status` with `?`.
//!
//! Must not: decide anything (which request is refused is the handlers' and rules' business).

use tonic::Status;

use crate::manager::deploy::DeployError;
use crate::manager::proposer::ProposeError;
use crate::manager::rules::{NotScalable, ObjectRuleError};
use crate::manager::usage::InUse;
use crate::model::AvailabilityError;
use crate::store::Rejection;

/// Why a control API request was refused; each kind is one gRPC code, the text is what the CLI shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The named object does not exist (`NOT_FOUND`).
    NotFound(String),
    /// The request itself is wrong (`INVALID_ARGUMENT`).
    Invalid(String),
    /// The request is fine but the cluster's state does not allow it (`FAILED_PRECONDITION`).
    Precondition(String),
    /// The object to create exists already (`ALREADY_EXISTS`).
    Exists(String),
    /// Raft refused the batch: another change came first (`ABORTED`).
    Conflict(String),
    /// No leader or no quorum (`UNAVAILABLE`).
    Unavailable(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::Precondition(m) => Status::failed_precondition(m),
            ApiError::Exists(m) => Status::already_exists(m),
            ApiError::Conflict(m) => Status::aborted(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        match e {
            ProposeError::Rejected(r) if matches!(r.reason, Rejection::OverLimit { .. }) => {
                ApiError::Invalid(r.reason.to_string())
            }
            ProposeError::Rejected(r) => ApiError::Conflict(format!(
                "the change conflicted with another one, try again: {r}"
            )),
            ProposeError::NotLeader { .. } => ApiError::Unavailable(e.to_string()),
            ProposeError::Raft(m) => ApiError::Unavailable(m),
            ProposeError::NoQuorum(m) => ApiError::Unavailable(m),
            e @ ProposeError::OutcomeUnknown(_) => ApiError::Unavailable(e.to_string()),
            ProposeError::NoSpace(m) => ApiError::Precondition(m),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        match e {
            DeployError::OverLimit { .. } => ApiError::Invalid(e.to_string()),
            _ => ApiError::Precondition(e.to_string()),
        }
    }
}

impl From<NotScalable> for ApiError {
    fn from(e: NotScalable) -> ApiError {
        ApiError::Precondition(e.to_string())
    }
}

impl From<ObjectRuleError> for ApiError {
    fn from(e: ObjectRuleError) -> ApiError {
        ApiError::Invalid(e.to_string())
    }
}

impl From<InUse> for ApiError {
    fn from(e: InUse) -> ApiError {
        ApiError::Precondition(e.to_string())
    }
}

impl From<AvailabilityError> for ApiError {
    fn from(e: AvailabilityError) -> ApiError {
        ApiError::Invalid(e.to_string())
    }
}

/// Decodes JSON sent by the client or stored by the manager; `what` names it in the error.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, ApiError> {
    serde_json::from_str(json).map_err(|e| ApiError::Invalid(format!("malformed {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_kind_is_one_code_and_keeps_its_text() {
        for (e, code) in [
            (ApiError::NotFound("m".into()), Code::NotFound),
            (ApiError::Invalid("m".into()), Code::InvalidArgument),
            (ApiError::Precondition("m".into()), Code::FailedPrecondition),
            (ApiError::Exists("m".into()), Code::AlreadyExists),
            (ApiError::Conflict("m".into()), Code::Aborted),
            (ApiError::Unavailable("m".into()), Code::Unavailable),
        ] {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, "m"));
        }
        let s = Status::from(ApiError::from(ProposeError::Raft("no quorum".into())));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "no quorum"));
        let s = Status::from(ApiError::from(ProposeError::NoSpace(
            "no space left on /s".into(),
        )));
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "no space left on /s")
        );
        let e = decode::<u32>("stack spec", "x").unwrap_err();
        assert!(matches!(e, ApiError::Invalid(m) if m.starts_with("malformed stack spec: ")));
    }
}
