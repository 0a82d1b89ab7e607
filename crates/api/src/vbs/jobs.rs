//! VBS jobs (spec 03).

use axum::Router;

use crate::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r
}
