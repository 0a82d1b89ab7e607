//! Errors in the domain's own words; the API maps each to a status and fault.

use vbs_catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource the caller named does not exist in its scope (message is the API's).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed or breaks a rule (message is the API's).
    #[error("{0}")]
    Invalid(String),
    /// The policy rule named refuses the caller.
    #[error("Policy doesn't allow {0} to be performed.")]
    Forbidden(&'static str),
    /// A quota would be exceeded (native APIs: Cinder's `overLimit`; the message is
    /// Cinder's).
    #[error("{message}")]
    OverQuota {
        /// The quota resource: `backups`, `backup_gigabytes`, `volumes`, `gigabytes`,
        /// `snapshots`.
        resource: &'static str,
        message: String,
    },
    /// A refusal of the VBS extension APIs, with its code from the VBS catalogue
    /// (spec 03 §6, e.g. `VolumeBackup.0012`); the API picks the status from the code.
    #[error("{code}: {message}")]
    Vbs { code: &'static str, message: String },
    /// A dependency is down; a retry may help.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A VBS-coded refusal.
    pub fn vbs(code: &'static str, message: impl Into<String>) -> Self {
        Error::Vbs {
            code,
            message: message.into(),
        }
    }
}

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound => Error::NotFound("The resource could not be found.".into()),
            CatalogError::Unavailable(src) => Error::Unavailable(src.to_string()),
            CatalogError::OverQuota {
                resource,
                limit,
                in_use,
                requested,
            } => Error::OverQuota {
                resource,
                message: crate::quotas::over_quota_message(resource, limit, in_use, requested),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}
