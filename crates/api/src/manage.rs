//! `POST …/manageable_volumes` (and the older `…/os-volume-manage`): bring an existing
//! file or block device under management (admins only).

use axum::extract::State;
use axum::response::Response;
use vbs_service::ManageVolumeOptions;

use crate::AppState;
use crate::body::JsonBody;
use crate::call::Call;
use crate::error::ApiError;
use crate::volumes::{OneVolume, View, VolumeView, accepted};

/// `POST …/manageable_volumes` → 202 with the volume (Cinder's legacy detail view).
pub async fn manage_volume(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let opts = ManageVolumeOptions::from_body(&body, call.version.version)?;
    let v = state.volumes.manage(&call.ctx, opts).await?;
    Ok(accepted(&OneVolume {
        volume: VolumeView::new(&call, &v, View::Legacy),
    }))
}
