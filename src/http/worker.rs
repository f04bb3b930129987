//! The request worker of `lethe serve`: executes verified requests in the background and
//! sends the mail they queue. Webhooks have a task of their own
//! ([`crate::notify::webhook::spawn`]): no receiver ever holds up a request.

use std::sync::Arc;

use super::AppState;

/// How often the worker looks for work nobody announced: a retry coming due, a lapsed
/// lease, a restriction's lift whose message a later delivery sent. Work that is
/// announced ([`AppState::work_queued`]) starts at once.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the worker, or None without the audit log or the mailer.
pub(super) fn spawn(
    state: &AppState,
    sources: Arc<crate::sources::db::Sources>,
    poll: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let wake = state.wake.clone();
    let store = state.store.clone();
    let audit = state.audit.clone()?;
    let mailer = state.mailer.clone()?;
    let policy = state.policy.clone();
    let settings = (*state.settings).clone();
    let holder = crate::store::lease::this().id.clone();
    Some(tokio::spawn(async move {
        let svc = crate::requests::Service {
            store: &store,
            audit: &audit,
            mailer: &mailer,
            settings,
        };
        loop {
            loop {
                match svc
                    .execute_next(&policy, &sources, &holder, chrono::Utc::now())
                    .await
                {
                    Ok(Some(id)) => tracing::info!(request = %id, "request executed"),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "request worker");
                        break;
                    }
                }
            }
            if let Err(e) = crate::notify::deliver_pending(&store, &mailer).await {
                tracing::warn!(error = %e, "mail delivery deferred");
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }))
}
