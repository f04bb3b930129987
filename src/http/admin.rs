//! Admin routes. Until admin tokens exist, they answer only to clients on the loopback
//! interface: an operator on the machine, or a reverse proxy that adds authentication.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;

use super::{ApiError, AppState};
use crate::audit::{AuditLog, Checkpoint, keys};
use crate::vendors;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit/verify", get(verify))
        .route(
            "/audit/checkpoint",
            get(latest_checkpoint).post(create_checkpoint),
        )
        .route("/vendors/matrix", get(vendors_matrix))
        .route("/vendors/obligations", get(vendors_obligations))
        .route("/vendors/check", get(vendors_check))
}

fn local(peer: SocketAddr) -> Result<(), ApiError> {
    if peer.ip().is_loopback() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "admin routes answer only on the loopback interface",
        ))
    }
}

async fn vendors_matrix(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<vendors::Matrix>, ApiError> {
    local(peer)?;
    Ok(Json(vendors::matrix(&state.policy)))
}

async fn vendors_obligations(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Vec<vendors::Obligation>>, ApiError> {
    local(peer)?;
    Ok(Json(vendors::obligations(&state.policy)))
}

async fn vendors_check(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<serde_json::Value>, ApiError> {
    local(peer)?;
    let findings = vendors::check(&state.policy, chrono::Utc::now().date_naive());
    Ok(Json(
        serde_json::json!({ "ok": findings.is_empty(), "findings": findings }),
    ))
}

fn local_audit(state: &AppState, peer: SocketAddr) -> Result<&AuditLog, ApiError> {
    local(peer)?;
    state
        .audit
        .as_ref()
        .ok_or(ApiError::Unavailable("the audit log is not open"))
}

async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    let audit = local_audit(&state, peer)?;
    Ok(Json(audit.verify().await.map_err(anyhow::Error::from)?))
}

async fn latest_checkpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Checkpoint>, ApiError> {
    let audit = local_audit(&state, peer)?;
    let all = audit.checkpoints().await.map_err(anyhow::Error::from)?;
    all.into_iter().last().map(Json).ok_or(ApiError::NotFound)
}

async fn create_checkpoint(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Checkpoint>, ApiError> {
    let audit = local_audit(&state, peer)?;
    let source = state
        .keys
        .as_ref()
        .ok_or(ApiError::Unavailable("no signing key is configured"))?;
    let signer = keys::load_or_create_signer(source).map_err(anyhow::Error::from)?;
    match audit.checkpoint(&signer).await {
        Ok(cp) => Ok(Json(cp)),
        Err(crate::audit::AuditError::DoesNotVerify(_)) => Err(ApiError::Conflict(
            "the audit log does not verify; run the verification",
        )),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}
