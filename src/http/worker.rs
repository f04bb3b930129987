//! The request worker of `lethe serve`: executes verified requests in the background and
//! sends the mail they queue. Webhooks have a task of their own
//! ([`crate::notify::webhook::spawn`]): no receiver ever holds up a request.

use std::sync::Arc;

use super::AppState;

/// How often the worker looks for work nobody announced: a retry coming due, a lapsed
/// lease, a restriction's lift whose message a later delivery sent. Work that is
/// announced ([`AppState::work_queued`]) starts at once.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Workers running requests side by side: one per core, at least two.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Starts `workers` workers. Each claims its own request (on PostgreSQL skipping rows
/// another is claiming).
pub(super) fn spawn_all(
    state: &AppState,
    sources: &Arc<crate::sources::db::Sources>,
    poll: std::time::Duration,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers.max(1))
        .map(|_| spawn(state, sources.clone(), poll))
        .collect()
}

/// Starts one worker.
fn spawn(
    state: &AppState,
    sources: Arc<crate::sources::db::Sources>,
    poll: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let wake = state.wake.clone();
    let webhooks = state.webhook_wake.clone();
    let store = state.store.clone();
    let audit = state.audit.clone();
    let mailer = state.mailer.clone();
    let policy = state.policy.clone();
    let settings = (*state.settings).clone();
    let holder = crate::store::lease::this().id.clone();
    tokio::spawn(async move {
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
                    Ok(Some(id)) => {
                        // Its callbacks and erasure notices leave now.
                        webhooks.notify_one();
                        said(&store, &id).await;
                    }
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
    })
}

/// Logs how a request the worker ran ended: executed only when it was.
async fn said(store: &crate::store::Store, id: &str) {
    use crate::requests::Status;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(store.pool())
            .await
            .ok()
            .flatten();
    match status.as_deref().and_then(Status::parse) {
        Some(Status::Completed | Status::PartiallyCompleted) => {
            tracing::info!(request = %id, "request executed")
        }
        Some(Status::Verified) => {
            tracing::warn!(request = %id, "request failed; it is tried again later")
        }
        Some(Status::Failed) => {
            tracing::error!(request = %id, "request failed for good; it waits for the DPO")
        }
        Some(s) => tracing::info!(request = %id, status = %s, "request waits"),
        None => {}
    }
}
