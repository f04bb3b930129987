//! `lethe serve`: the HTTP service. [`Application::build`] binds the listener first, so
//! tests start the real server on port 0 and read the port back.

mod admin;
mod error;
mod requests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::audit::{AuditLog, KeySource};
use crate::notice;
use crate::notify::Mailer;
use crate::policy::Policy;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub policy: Arc<Policy>,
    /// The notice is rendered once per policy load, not per request.
    pub notice_html: Arc<String>,
    pub audit: Option<AuditLog>,
    pub keys: Option<KeySource>,
    pub mailer: Option<Arc<Mailer>>,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Renders what the routes serve and binds `bind` (`127.0.0.1:0` for a free port).
    pub async fn build(bind: &str, store: Store, policy: Arc<Policy>) -> anyhow::Result<Self> {
        let notice_html = Arc::new(notice::render(&policy, notice::Format::Html)?);
        let state = AppState {
            store,
            policy,
            notice_html,
            audit: None,
            keys: None,
            mailer: None,
        };
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
        Ok(Self { listener, state })
    }

    /// Serves the request API, e-mailing through `mailer` (needs the audit log too).
    pub fn with_mailer(mut self, mailer: Arc<Mailer>) -> Self {
        self.state.mailer = Some(mailer);
        self
    }

    /// Serves the audit admin routes from `audit`, signing checkpoints with `keys`.
    pub fn with_audit(mut self, audit: AuditLog, keys: KeySource) -> Self {
        self.state.audit = Some(audit);
        self.state.keys = Some(keys);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/privacy", get(privacy))
        .nest("/v1/admin", admin::routes())
        .merge(requests::routes())
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(TraceLayer::new_for_http())
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The store answers and a valid policy is loaded.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: store unreachable");
        return Err(ApiError::Unavailable("the store is unreachable"));
    }
    Ok(Json(json!({
        "status": "ready",
        "policy_hash": state.policy.hash,
        "backend": format!("{:?}", state.store.backend()).to_lowercase(),
    })))
}

async fn privacy(State(state): State<AppState>) -> Html<String> {
    Html(state.notice_html.as_str().to_owned())
}
