//! Admin routes, behind bearer tokens (`lethe admin token create --role dpo|auditor`): an
//! auditor reads, a DPO also acts. Every action is audited under the token's id.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::requests::{parse, service};
use super::{ApiError, AppState};
use crate::audit::{Actor, Checkpoint};
use crate::store::Role;
use crate::vendors;

pub fn routes() -> super::Routes {
    super::Routes::new()
        .route("/audit/verify", get(verify))
        .route(
            "/audit/checkpoint",
            get(latest_checkpoint).post(create_checkpoint),
        )
        .route("/register", get(register))
        .route("/retention/plan", get(retention_plan))
        .route("/vendors/matrix", get(vendors_matrix))
        .route("/vendors/obligations", get(vendors_obligations))
        .route("/vendors/check", get(vendors_check))
        .route("/requests", get(list_requests))
        .route("/requests/{id}/extend", post(extend))
        .route("/requests/{id}/reject", post(reject))
        .route("/requests/{id}/deny", post(reject))
        .route("/requests/{id}", get(one_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/retry", post(retry))
        .route("/requests/{id}/complete", post(complete))
        .route("/requests/{id}/lift", post(lift))
        .route("/mail/dead", get(dead_mail))
        .route("/mail/dead/{id}/requeue", post(requeue_dead))
        .route("/webhooks/failed", get(failed_webhooks))
        .route("/suppression", get(suppression))
        .route("/webhooks/{id}/requeue", post(requeue_webhook))
}

/// The caller's token id, if its role may do what `need` asks.
pub(super) async fn admin(
    state: &AppState,
    headers: &HeaderMap,
    need: Role,
) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an admin token is needed",
            )
        })?;
    let (id, role) = state
        .store
        .admin_token(token)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| {
            ApiError::client(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin token is not valid",
            )
        })?;
    if need == Role::Dpo && role != Role::Dpo {
        return Err(ApiError::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs a DPO token",
        ));
    }
    Ok(id)
}

async fn vendors_matrix(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<vendors::Matrix>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(vendors::matrix(&state.policy)))
}

async fn vendors_obligations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<vendors::Obligation>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(vendors::obligations(&state.policy)))
}

async fn vendors_check(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<VendorCheck>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    let findings = vendors::check(&state.policy, chrono::Utc::now().date_naive());
    Ok(Json(VendorCheck {
        ok: findings.is_empty(),
        findings,
    }))
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(
        state.audit.verify().await.map_err(anyhow::Error::from)?,
    ))
}

async fn latest_checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Checkpoint>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    let all = state
        .audit
        .checkpoints()
        .await
        .map_err(anyhow::Error::from)?;
    all.into_iter().last().map(Json).ok_or(ApiError::NotFound)
}

async fn create_checkpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Checkpoint>, ApiError> {
    // Signing a tree head records what is there; an auditor may ask for it.
    admin(&state, &headers, Role::Auditor).await?;
    let audit = &state.audit;
    match audit.checkpoint(&state.signer).await {
        Ok(cp) => Ok(Json(cp)),
        Err(crate::audit::AuditError::DoesNotVerify(_)) => Err(ApiError::Conflict(
            "the audit log does not verify; run the verification",
        )),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    /// `7d`: only requests due within seven days (overdue ones included).
    due_within: Option<String>,
}

async fn list_requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<crate::requests::AdminView>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    let within = match q.due_within.as_deref() {
        None => None,
        Some(d) => {
            let days = d
                .strip_suffix('d')
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| (0..=3660).contains(n))
                .ok_or_else(|| {
                    ApiError::client(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_query",
                        "due_within is a number of days, e.g. 7d",
                    )
                })?;
            Some(chrono::Duration::days(days))
        }
    };
    Ok(Json(
        service(&state)
            .list_open(within, chrono::Utc::now())
            .await?,
    ))
}

/// An extension of the deadline (Art. 12(3)): by how long, and why, in words the person reads.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendBody {
    #[schemars(range(min = 1, max = 2))]
    months: u32,
    reason: String,
}

async fn extend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::requests::AdminView>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let body: ExtendBody = parse(body)?;
    if !(1..=2).contains(&body.months)
        || body.reason.trim().is_empty()
        || !super::printable(&body.reason, true)
    {
        return Err(ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_extension",
            "extend by 1 or 2 months, with a reason without control characters",
        ));
    }
    Ok(Json(
        service(&state)
            .extend(
                &id,
                body.months,
                body.reason.trim(),
                Actor::Admin(who),
                chrono::Utc::now(),
            )
            .await?,
    ))
}

/// Why a request is refused (Art. 12(4)); the person reads it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectBody {
    reason: String,
}

async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let body: RejectBody = parse(body)?;
    if body.reason.trim().is_empty() || !super::printable(&body.reason, true) {
        return Err(ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rejection",
            "a rejection needs a reason, without control characters",
        ));
    }
    let authority = state.authority();
    service(&state)
        .reject(
            &id,
            body.reason.trim(),
            authority.as_deref(),
            Actor::Admin(who),
            chrono::Utc::now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One request with the person's details, for the DPO or an auditor.
async fn one_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::requests::Full>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(service(&state).full(&id).await?))
}

/// Messages the mail transport refused for good, newest first, with their recipients,
/// for the DPO or an auditor to act on.
async fn dead_mail(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::notify::DeadLetter>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    let mailer = &state.mailer;
    Ok(Json(
        crate::notify::dead_letters(&state.store, mailer)
            .await
            .map_err(anyhow::Error::from)?,
    ))
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequeueBody {
    /// The corrected address, when the old one was at fault.
    #[serde(default)]
    #[schemars(email)]
    recipient: Option<String>,
}

/// A dead letter back in the queue.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Requeued {
    id: i64,
    #[schemars(extend("const" = "queued"))]
    status: &'static str,
}

/// The findings of `vendors check`; `ok` when there are none.
#[derive(Serialize, JsonSchema)]
pub(crate) struct VendorCheck {
    ok: bool,
    findings: Vec<vendors::Finding>,
}

/// Puts a dead letter back in the queue once the DPO fixed the transport or the address
/// (body `{"recipient": "..."}`, optional); audited, sent by the next delivery round.
async fn requeue_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Requeued>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound)?;
    let body: RequeueBody = match body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => RequeueBody::default(),
        other => parse(other)?,
    };
    let recipient = body.recipient.as_deref().map(str::trim);
    if recipient.is_some_and(|r| crate::notify::recipient(r).is_none()) {
        return Err(ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_recipient",
            "recipient is not an address the mail transport can send to",
        ));
    }
    let mailer = state.mailer.clone();
    let audit = &state.audit;
    let mut tx = state.store.begin().await.map_err(anyhow::Error::from)?;
    if !crate::notify::requeue_dead_in(&mut tx, &mailer, id, recipient)
        .await
        .map_err(anyhow::Error::from)?
    {
        return Err(ApiError::NotFound);
    }
    audit
        .append_in(
            &mut tx,
            &[
                crate::audit::NewEntry::new(Actor::Admin(who), "mail.requeued").summary(
                    serde_json::json!({ "outbox_id": id, "new_recipient": recipient.is_some() }),
                ),
            ],
        )
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::notify::deliver_pending(&store, &mailer).await {
            tracing::warn!(error = %e, "mail delivery deferred");
        }
    });
    Ok(Json(Requeued {
        id,
        status: "queued",
    }))
}

/// Webhooks given up as failed, newest first, for the DPO or an auditor to act on.
async fn failed_webhooks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::notify::webhook::Failed>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(
        crate::notify::webhook::failed(&state.store)
            .await
            .map_err(anyhow::Error::from)?,
    ))
}

/// Puts a failed webhook back in the queue, due now, with a new time window.
async fn requeue_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let not_found = || {
        ApiError::client(
            StatusCode::NOT_FOUND,
            "not_found",
            "no failed webhook with this id",
        )
    };
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let db = |e: sqlx::Error| ApiError::from(anyhow::Error::from(e));
    let mut tx = state.store.begin().await.map_err(db)?;
    if !crate::notify::webhook::requeue_in(&mut tx, id, chrono::Utc::now())
        .await
        .map_err(db)?
    {
        return Err(not_found());
    }
    state
        .audit
        .append_in(
            &mut tx,
            &[
                crate::audit::NewEntry::new(Actor::Admin(who), "webhook.requeued")
                    .summary(serde_json::json!({ "webhook_id": id })),
            ],
        )
        .await
        .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(db)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Approves a request that waits for the DPO; it is then executed.
async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::requests::Full>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let svc = service(&state);
    svc.approve(&id, Actor::Admin(who), chrono::Utc::now())
        .await?;
    state.work_queued();
    Ok(Json(svc.full(&id).await?))
}

/// The suppression list: people who objected to direct marketing, with their address
/// (DPO: the list exists to be given to the systems that send marketing).
async fn suppression(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::requests::Suppressed>>, ApiError> {
    admin(&state, &headers, Role::Dpo).await?;
    Ok(Json(
        crate::requests::suppression_list(&state.store, &state.audit).await?,
    ))
}

/// A failed request runs again.
async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::requests::Full>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let svc = service(&state);
    svc.retry(&id, Actor::Admin(who), chrono::Utc::now())
        .await?;
    state.work_queued();
    Ok(Json(svc.full(&id).await?))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteBody {
    /// What was done (complete) or why (lift); the subject reads it.
    #[schemars(length(min = 1, max = NOTE_MAX))]
    note: String,
}

/// The longest note, in characters.
const NOTE_MAX: usize = 4000;

fn note(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let b: NoteBody = parse(body)?;
    let n = b.note.trim();
    if n.is_empty() || n.chars().count() > NOTE_MAX || !super::printable(n, true) {
        return Err(ApiError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_note",
            "a note of 1 to 4000 characters, without control characters, is needed; the subject reads it",
        ));
    }
    Ok(n.to_owned())
}

/// Completes a task (rectification, restriction, objection), telling the subject.
async fn complete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::requests::Full>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let note = note(body)?;
    let svc = service(&state);
    svc.complete_task(&id, &note, Actor::Admin(who), chrono::Utc::now())
        .await?;
    Ok(Json(svc.full(&id).await?))
}

/// Lifts the restriction placed by request `id` (Art. 18(3)), telling the subject.
async fn lift(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::requests::Full>, ApiError> {
    let who = admin(&state, &headers, Role::Dpo).await?;
    let note = note(body)?;
    let svc = service(&state);
    svc.lift_restriction(&id, &note, Actor::Admin(who), chrono::Utc::now())
        .await?;
    state.work_queued();
    Ok(Json(svc.full(&id).await?))
}

/// The record of processing activities (Art. 30), one row per purpose.
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::register::RegisterRow>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    Ok(Json(crate::register::rows(&state.policy)))
}

/// What retention would delete or mask now, per collection, changing nothing; the rows
/// of people with a restriction in force are counted apart.
async fn retention_plan(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::retention::Due>>, ApiError> {
    admin(&state, &headers, Role::Auditor).await?;
    let sources = crate::sources::db::Sources::default();
    let planned = async {
        let requested =
            crate::retention::requested_in(&state.policy, &sources, &state.audit).await?;
        let due =
            crate::retention::plan(&state.policy, &sources, chrono::Utc::now(), &requested).await?;
        Ok::<_, anyhow::Error>(due)
    }
    .await;
    sources.close().await;
    Ok(Json(planned?))
}
