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
    /// A dependency is down; a retry may help.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound => Error::NotFound("The resource could not be found.".into()),
            CatalogError::Unavailable(src) => Error::Unavailable(src.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}
