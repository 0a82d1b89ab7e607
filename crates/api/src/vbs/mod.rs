//! The VBS extension APIs (spec 03 §2–§5): `/v2/{project_id}/cloudbackups…`,
//! `/v1/{project_id}/jobs/…`, backup sharing, and later policies. They answer in VBS's
//! own envelope, `{"error": {"code": "VolumeBackup.0011", "message": …}}` (spec 02
//! §3.3), with the HTTP status this module picks from the code (spec 03 §6).

mod cloudbackups;
pub(crate) mod jobs;
mod policies;
mod quota;
mod sharing;

use crate::openapi::Routes;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::AppState;
use crate::call::Call;
use crate::error::ApiError;

/// [`Call`] for the VBS routes: the same checks, refusals in VBS's envelope (a URL
/// project other than the token's is `VolumeBackup.0042`, 403).
pub struct VbsCall(pub Call);

impl std::ops::Deref for VbsCall {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.0
    }
}

impl FromRequestParts<AppState> for VbsCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Call::from_request_parts(parts, state).await {
            Ok(call) => Ok(VbsCall(call)),
            Err(ApiError::Fault(s, message)) if s == StatusCode::BAD_REQUEST => Err(ApiError::Vbs(
                "VolumeBackup.0042",
                format!("{message}: the project in the URL is not the token's."),
            )),
            Err(ApiError::Fault(s, _)) if s == StatusCode::NOT_FOUND => Err(ApiError::Vbs(
                "common.0011",
                "The resource could not be found.".into(),
            )),
            Err(e) => Err(e),
        }
    }
}

/// The VBS routes. Fixed segments (`cloudbackups/quota`, `…-sharing/detail`,
/// `…-sharing/count`) are matched before ids by the router itself.
pub fn routes(r: Routes) -> Routes {
    let r = jobs::routes(r);
    let r = cloudbackups::routes(r);
    let r = quota::routes(r);
    let r = policies::routes(r);
    sharing::routes(r)
}

/// The HTTP status of a VBS error code (spec 03 §6's recommendation): malformed input
/// and invalid states 400, missing objects 404, rights 401/403, quotas 413, our own
/// failures 500/503.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        // Missing objects.
        "common.0011" | "VolumeBackup.0021" | "VolumeBackup.0111" | "VolumeBackup.0207"
        | "AutoBackup.0205" | "AutoBackup.1100" | "AutoBackup.0216" => StatusCode::NOT_FOUND,
        // Rights.
        "VolumeBackup.0042" | "VolumeBackup.0044" | "AutoBackup.0213" => StatusCode::FORBIDDEN,
        "AutoBackup.0002" | "AutoBackup.0003" | "AutoBackup.0005" => StatusCode::UNAUTHORIZED,
        // Quotas.
        "VolumeBackup.0071" | "VolumeBackup.0072" | "VolumeBackup.0073" | "VolumeBackup.0074"
        | "VolumeBackup.0075" | "VolumeBackup.0076" | "VolumeBackup.0077" | "VolumeBackup.0078"
        | "VolumeBackup.0079" | "VolumeBackup.0080" | "VolumeBackup.0081" | "VolumeBackup.0082"
        | "VolumeBackup.0083" | "VolumeBackup.0084" | "AutoBackup.0217" | "AutoBackup.0218" => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        "VolumeBackup.0900" => StatusCode::SERVICE_UNAVAILABLE,
        // Our own failures.
        "VolumeBackup.0008" | "VolumeBackup.0009" | "VolumeBackup.0014" | "VolumeBackup.0041"
        | "VolumeBackup.0043" | "VolumeBackup.0070" | "VolumeBackup.0100" | "VolumeBackup.0103"
        | "VolumeBackup.0104" | "VolumeBackup.0109" | "VolumeBackup.0110" | "VolumeBackup.0123"
        | "VolumeBackup.0125" | "AutoBackup.0009" | "AutoBackup.0208" | "AutoBackup.1300"
        | "AutoBackup.1700" | "AutoBackup.9002" => StatusCode::INTERNAL_SERVER_ERROR,
        c if (c.starts_with("VolumeBackup.00") && c.len() == 17 && {
            // .0017–.0030 and .0035–.0039: lookups and sub-steps that failed on our side.
            let n: u32 = c[13..].parse().unwrap_or(0);
            (17..=20).contains(&n)
                || (22..=25).contains(&n)
                || (27..=30).contains(&n)
                || (35..=39).contains(&n)
        }) =>
        {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_recommended_statuses() {
        assert_eq!(status_of("VolumeBackup.0011"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("VolumeBackup.0021"), StatusCode::NOT_FOUND);
        assert_eq!(status_of("common.0011"), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of("VolumeBackup.0080"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of("VolumeBackup.0081"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of("VolumeBackup.0027"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status_of("VolumeBackup.0026"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("VolumeBackup.0040"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of("VolumeBackup.0900"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of("AutoBackup.0205"), StatusCode::NOT_FOUND);
        assert_eq!(status_of("AutoBackup.0002"), StatusCode::UNAUTHORIZED);
    }
}
