//! The request lifecycle (Art. 12): intake, identity verification by an e-mailed code,
//! and deadlines. Each state change, its audit entry and its e-mail are written in one
//! transaction, so a crash neither loses nor duplicates a message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{Actor, AuditError, AuditLog, Identity, NewEntry};
use crate::notify::{self, Mail, Mailer};
use crate::policy::RetentionPeriod;
use crate::store::{Store, timestamp};

/// How long a verification code is valid.
pub const CODE_TTL_MINUTES: i64 = 15;
/// Wrong codes allowed before a new code is needed.
pub const MAX_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Access,
    Portability,
    Erasure,
    Rectification,
    Restriction,
    Objection,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
            Self::Erasure => "erasure",
            Self::Rectification => "rectification",
            Self::Restriction => "restriction",
            Self::Objection => "objection",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Access,
            Self::Portability,
            Self::Erasure,
            Self::Rectification,
            Self::Restriction,
            Self::Objection,
        ]
        .into_iter()
        .find(|k| k.key() == s)
    }
}

/// The deadline of Art. 12(3): one month after receipt, on the same day of the month, or
/// on the month's last day when that day does not exist (31 January → 28/29 February).
pub fn due_date(received: DateTime<Utc>) -> DateTime<Utc> {
    RetentionPeriod::new(0, 1, 0)
        .after(received)
        .unwrap_or(received)
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no such request")]
    NotFound,
    #[error("the token does not open this request")]
    Unauthorized,
    #[error("the code is wrong; {remaining} attempt(s) left")]
    WrongCode { remaining: i64 },
    #[error("the code has expired; ask for a new one")]
    Expired,
    #[error("too many wrong codes; ask for a new one")]
    TooManyAttempts,
    #[error("the request is not waiting for a code")]
    NotPending,
    #[error("the deadline was already extended once")]
    AlreadyExtended,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Mail(#[from] notify::MailError),
}

/// What the submitter gets back.
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    pub id: String,
    pub status: String,
    pub due_at: String,
    /// Only for a new request: the secret that opens it. Not returned for an existing one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// True when an open request of this type for this person already existed.
    pub existing: bool,
}

/// A request as its subject may see it.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub received_at: String,
    pub due_at: String,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(crate::crypto::sha256(&[s.as_bytes()]))
}

/// Equal in constant time (for hex digests of equal length).
fn same(a: &str, b: &str) -> bool {
    crate::crypto::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// A six-digit code from the system random generator.
fn new_code() -> Result<String, RequestError> {
    let mut b = [0u8; 4];
    crate::crypto::fill_random(&mut b).map_err(AuditError::from)?;
    Ok(format!("{:06}", u32::from_be_bytes(b) % 1_000_000))
}

pub struct Service<'a> {
    pub store: &'a Store,
    pub audit: &'a AuditLog,
    pub mailer: &'a Mailer,
    pub controller: String,
}

impl Service<'_> {
    fn code_hash(&self, id: &str, code: &str) -> String {
        self.audit
            .mask_hash(&format!("verification-code:{id}:{code}"))
    }

    fn code_mail(&self, to: &str, id: &str, code: &str, due: &str) -> Mail {
        let text = format!(
            "We received your request ({id}) at {c}.\n\nYour verification code is {code}. It is valid for {CODE_TTL_MINUTES} minutes.\n\nWe answer by {due} at the latest (Art. 12(3) GDPR).\nIf you did not make this request, ignore this message.\n",
            c = self.controller
        );
        let html = format!(
            "<p>We received your request (<code>{id}</code>) at {c}.</p><p>Your verification code is <strong>{code}</strong>. It is valid for {CODE_TTL_MINUTES} minutes.</p><p>We answer by {due} at the latest (Art. 12(3) GDPR). If you did not make this request, ignore this message.</p>",
            c = notify::html_escape(&self.controller)
        );
        Mail {
            kind: "verification_code".into(),
            to: to.to_owned(),
            subject: format!("Your verification code for request {id}"),
            text,
            html,
        }
    }

    /// Records a request and e-mails its verification code. A second open request of the
    /// same type for the same person returns the first.
    pub async fn submit(
        &self,
        kind: Kind,
        identity: &Identity,
        details: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, RequestError> {
        let lookup = self.audit.mask_hash(&format!(
            "request-identity:{}={}",
            identity.kind(),
            identity.value()
        ));
        let open = sqlx::query(
            "SELECT id, status, due_at FROM dsr_requests WHERE identity_lookup = $1 AND kind = $2 \
             AND status NOT IN ('completed', 'partially_completed', 'rejected', 'failed', 'cancelled')",
        )
        .bind(&lookup)
        .bind(kind.key())
        .fetch_optional(self.store.pool())
        .await?;
        if let Some(r) = open {
            return Ok(Submitted {
                id: r.try_get(0)?,
                status: r.try_get(1)?,
                due_at: r.try_get(2)?,
                token: None,
                existing: true,
            });
        }
        let id = format!(
            "r_{}",
            crate::crypto::random_hex(12).map_err(AuditError::from)?
        );
        let token = crate::crypto::random_hex(32).map_err(AuditError::from)?;
        let code = new_code()?;
        let due = timestamp(due_date(now));
        let subject = self.audit.subject_for(identity).await?;
        let mut tx = self.store.pool().begin().await?;
        let entry = NewEntry::new(Actor::Subject, "request.submitted")
            .request(&id)
            .subject(&subject)
            .summary(serde_json::json!({ "type": kind.key(), "due_at": due }))
            .payload(serde_json::json!({ "identity": format!("{}={}", identity.kind(), identity.value()), "details": details }));
        self.audit.append_in(&mut tx, &[entry]).await?;
        sqlx::query(
            "INSERT INTO dsr_requests (id, kind, status, identity_kind, identity_value, identity_lookup, details, token_hash, code_hash, code_expires_at, codes_sent, received_at, due_at, updated_at) \
             VALUES ($1, $2, 'identity_pending', $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $10)",
        )
        .bind(&id)
        .bind(kind.key())
        .bind(identity.kind())
        .bind(identity.value())
        .bind(&lookup)
        .bind(details)
        .bind(sha256_hex(&token))
        .bind(self.code_hash(&id, &code))
        .bind(timestamp(now + chrono::Duration::minutes(CODE_TTL_MINUTES)))
        .bind(timestamp(now))
        .bind(&due)
        .execute(&mut *tx)
        .await?;
        notify::enqueue_in(
            &mut tx,
            &self.code_mail(identity.value(), &id, &code, &due[..10]),
        )
        .await?;
        tx.commit().await?;
        // Delivery failures are retried by the next delivery; the request stands.
        if let Err(e) = notify::deliver_pending(self.store, self.mailer).await {
            tracing::warn!(error = %e, "mail delivery deferred");
        }
        Ok(Submitted {
            id,
            status: "identity_pending".into(),
            due_at: due,
            token: Some(token),
            existing: false,
        })
    }

    /// Checks a verification code (Art. 12(6)).
    pub async fn verify(
        &self,
        id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        let r = sqlx::query("SELECT status, code_hash, code_expires_at, code_attempts FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(RequestError::NotFound)?;
        let status: String = r.try_get(0)?;
        if status != "identity_pending" {
            return Err(RequestError::NotPending);
        }
        let (hash, expires, attempts): (Option<String>, Option<String>, i64) =
            (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        if attempts >= MAX_ATTEMPTS {
            return Err(RequestError::TooManyAttempts);
        }
        if expires
            .as_deref()
            .is_none_or(|e| e < timestamp(now).as_str())
        {
            return Err(RequestError::Expired);
        }
        let given = self.code_hash(id, code.trim());
        if !hash.as_deref().is_some_and(|h| same(h, &given)) {
            sqlx::query("UPDATE dsr_requests SET code_attempts = code_attempts + 1, updated_at = $1 WHERE id = $2")
                .bind(timestamp(now))
                .bind(id)
                .execute(self.store.pool())
                .await?;
            let remaining = MAX_ATTEMPTS - attempts - 1;
            return Err(if remaining <= 0 {
                RequestError::TooManyAttempts
            } else {
                RequestError::WrongCode { remaining }
            });
        }
        let mut tx = self.store.pool().begin().await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::Subject, "request.verified").request(id)],
            )
            .await?;
        sqlx::query("UPDATE dsr_requests SET status = 'verified', code_hash = NULL, code_expires_at = NULL, updated_at = $1 WHERE id = $2")
            .bind(timestamp(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.view(id).await
    }

    async fn view(&self, id: &str) -> Result<View, RequestError> {
        let r = sqlx::query(
            "SELECT id, kind, status, received_at, due_at FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::NotFound)?;
        Ok(View {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            status: r.try_get(2)?,
            received_at: r.try_get(3)?,
            due_at: r.try_get(4)?,
        })
    }

    /// The request, for the holder of its token.
    pub async fn status(&self, id: &str, token: &str) -> Result<View, RequestError> {
        let hash: Option<String> =
            sqlx::query_scalar("SELECT token_hash FROM dsr_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(self.store.pool())
                .await?;
        // Unknown ids and wrong tokens answer alike: nobody learns which requests exist.
        match hash {
            Some(h) if same(&h, &sha256_hex(token)) => self.view(id).await,
            _ => Err(RequestError::Unauthorized),
        }
    }
}

/// How long a stored access package can be downloaded.
pub const PACKAGE_DAYS: i64 = 7;
/// A claim older than this is taken to belong to a crashed worker and is claimed again.
const STALE_CLAIM_MINUTES: i64 = 15;

/// A package as the subject downloads it.
pub struct Download {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Service<'_> {
    /// Claims the oldest verified request (or one whose worker died) and executes it.
    /// Several instances may call this at once: each request is claimed by one.
    pub async fn execute_next(
        &self,
        policy: &crate::policy::Policy,
        sources: &crate::sources::db::Sources,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, RequestError> {
        let stale = timestamp(now - chrono::Duration::minutes(STALE_CLAIM_MINUTES));
        let claimed = sqlx::query(
            "UPDATE dsr_requests SET status = 'in_progress', claimed_by = $1, claimed_at = $2, updated_at = $2 \
             WHERE id = (SELECT id FROM dsr_requests WHERE status = 'verified' OR (status = 'in_progress' AND claimed_at < $3) ORDER BY received_at LIMIT 1) \
               AND (status = 'verified' OR (status = 'in_progress' AND claimed_at < $3)) \
             RETURNING id, kind, identity_kind, identity_value",
        )
        .bind(holder)
        .bind(timestamp(now))
        .bind(&stale)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        let (id, kind, ikind, ivalue): (String, String, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let identity =
            Identity::parse(&format!("{ikind}={ivalue}")).map_err(|_| RequestError::NotFound)?;
        let ctx = crate::dsr::Context {
            policy,
            audit: self.audit,
            sources,
            actor: Actor::Subject,
            request_id: Some(id.clone()),
            strict: false,
        };
        let kind = Kind::parse(&kind).unwrap_or(Kind::Rectification);
        let outcome: Result<(String, serde_json::Value, Option<Download>), String> = match kind {
            Kind::Access | Kind::Portability => {
                let ak = if kind == Kind::Access {
                    crate::dsr::AccessKind::Access
                } else {
                    crate::dsr::AccessKind::Portability
                };
                match crate::dsr::access(&ctx, std::slice::from_ref(&identity), ak, now).await {
                    Ok(p) => {
                        let (ct, bytes) = if kind == Kind::Access {
                            ("application/zip", p.to_zip().map_err(|e| e.to_string()))
                        } else {
                            ("application/json", Ok(p.data_json()))
                        };
                        bytes.map(|b| {
                            (
                                "completed".to_owned(),
                                serde_json::json!({ "rows": p.row_counts() }),
                                Some(Download {
                                    content_type: ct.into(),
                                    bytes: b,
                                }),
                            )
                        })
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::Erasure => {
                match crate::dsr::erase(&ctx, std::slice::from_ref(&identity), false, now).await {
                    Ok(r) => {
                        let kept = r.kept().count();
                        let status = if kept > 0 {
                            "partially_completed"
                        } else {
                            "completed"
                        };
                        Ok((
                            status.to_owned(),
                            serde_json::to_value(&r.systems).unwrap_or_default(),
                            None,
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            // Rectification, restriction and objection need a person: the DPO is told.
            _ => Ok((
                "in_progress".to_owned(),
                serde_json::json!({ "manual": true }),
                None,
            )),
        };
        let mut tx = self.store.pool().begin().await?;
        let (status, result) = match &outcome {
            Ok((s, r, _)) => (s.clone(), r.clone()),
            Err(e) => {
                tracing::error!(request = %id, error = %e, "request execution failed");
                (
                    "failed".to_owned(),
                    serde_json::json!({ "error": "execution failed; the operator has the details in the log" }),
                )
            }
        };
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::System, &format!("request.{status}"))
                    .request(&id)
                    .summary(serde_json::json!({ "type": kind.key() }))],
            )
            .await?;
        if let Ok((_, _, Some(d))) = &outcome {
            let sealed = self.audit.seal_package(&id, &d.bytes)?;
            sqlx::query("DELETE FROM request_packages WHERE request_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO request_packages (request_id, content_type, sealed, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(&d.content_type)
                .bind(sealed)
                .bind(timestamp(now))
                .bind(timestamp(now + chrono::Duration::days(PACKAGE_DAYS)))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE dsr_requests SET status = $1, result = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&status)
        .bind(result.to_string())
        .bind(timestamp(now))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        notify::enqueue_in(&mut tx, &self.outcome_mail(&identity, &id, kind, &status)).await?;
        tx.commit().await?;
        if let Err(e) = notify::deliver_pending(self.store, self.mailer).await {
            tracing::warn!(error = %e, "mail delivery deferred");
        }
        Ok(Some(id))
    }

    fn outcome_mail(&self, identity: &Identity, id: &str, kind: Kind, status: &str) -> Mail {
        let what = match (kind, status) {
            (_, "failed") => "We could not complete your request yet; we are looking into it and will write again.".to_owned(),
            (Kind::Access | Kind::Portability, _) => format!(
                "Your data is ready. Download it within {PACKAGE_DAYS} days from /v1/requests/{id}/package with the token you received when you made the request."
            ),
            (Kind::Erasure, "partially_completed") => "We erased your data, except what the law requires us to keep; the status of your request lists what we keep, why and until when.".to_owned(),
            (Kind::Erasure, _) => "We erased your data.".to_owned(),
            _ => "A person on our team will handle your request and write to you.".to_owned(),
        };
        let text = format!(
            "Your {} request {id} at {}: {status}.\n\n{what}\n",
            kind.key(),
            self.controller
        );
        let html = format!(
            "<p>Your {} request <code>{id}</code> at {}: {status}.</p><p>{}</p>",
            kind.key(),
            notify::html_escape(&self.controller),
            notify::html_escape(&what)
        );
        Mail {
            kind: format!("request_{status}"),
            to: identity.value().to_owned(),
            subject: format!("Your request {id}: {status}"),
            text,
            html,
        }
    }

    /// The stored package, for the holder of the request's token.
    pub async fn package(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Download, RequestError> {
        self.status(id, token).await?;
        let row = sqlx::query(
            "SELECT content_type, sealed, expires_at FROM request_packages WHERE request_id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::NotFound)?;
        let expires: String = row.try_get(2)?;
        if expires < timestamp(now) {
            return Err(RequestError::Expired);
        }
        let sealed: Vec<u8> = row.try_get(1)?;
        Ok(Download {
            content_type: row.try_get(0)?,
            bytes: self.audit.open_package(id, &sealed)?,
        })
    }
}

/// A request as the DPO lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AdminView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub received_at: String,
    pub due_at: String,
    pub overdue: bool,
    pub extended: bool,
}

const OPEN: &str =
    "status NOT IN ('completed', 'partially_completed', 'rejected', 'failed', 'cancelled')";

impl Service<'_> {
    /// Open requests, soonest due first; with `due_within`, only those due by then.
    pub async fn list_open(
        &self,
        due_within: Option<chrono::Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AdminView>, RequestError> {
        let until = due_within.map(|d| timestamp(now + d));
        let sql = format!(
            "SELECT id, kind, status, received_at, due_at, extended_at FROM dsr_requests WHERE {OPEN} AND (CAST($1 AS TEXT) IS NULL OR due_at <= $1) ORDER BY due_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(until)
            .fetch_all(self.store.pool())
            .await?;
        let now_s = timestamp(now);
        rows.iter()
            .map(|r| {
                let due: String = r.try_get(4)?;
                let extended: Option<String> = r.try_get(5)?;
                Ok(AdminView {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    status: r.try_get(2)?,
                    received_at: r.try_get(3)?,
                    overdue: due < now_s,
                    due_at: due,
                    extended: extended.is_some(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RequestError::from)
    }

    async fn open_request(
        &self,
        id: &str,
    ) -> Result<(String, String, String, Option<String>), RequestError> {
        let sql = format!(
            "SELECT kind, identity_value, due_at, extended_at FROM dsr_requests WHERE id = $1 AND {OPEN}"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(RequestError::NotFound)?;
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
    }

    /// Extends the deadline once, by one or two months, telling the subject why.
    pub async fn extend(
        &self,
        id: &str,
        months: u32,
        reason: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<AdminView, RequestError> {
        let (kind, email, due, extended) = self.open_request(id).await?;
        if extended.is_some() {
            return Err(RequestError::AlreadyExtended);
        }
        let due_t = crate::policy::parse_timestamp(&due).unwrap_or(now);
        let new_due = timestamp(
            RetentionPeriod::new(0, months, 0)
                .after(due_t)
                .unwrap_or(due_t),
        );
        let mut tx = self.store.pool().begin().await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(actor, "admin.extended")
                    .request(id)
                    .summary(serde_json::json!({ "months": months, "due_at": new_due }))],
            )
            .await?;
        sqlx::query("UPDATE dsr_requests SET due_at = $1, extended_at = $2, reason = $3, updated_at = $2 WHERE id = $4")
            .bind(&new_due)
            .bind(timestamp(now))
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let text = format!(
            "We need more time to answer your {kind} request {id}: {reason}\n\nWe will answer by {} at the latest (Art. 12(3) GDPR).\n",
            &new_due[..10]
        );
        let html = format!(
            "<p>We need more time to answer your {kind} request <code>{id}</code>: {}</p><p>We will answer by {} at the latest (Art. 12(3) GDPR).</p>",
            notify::html_escape(reason),
            &new_due[..10]
        );
        notify::enqueue_in(
            &mut tx,
            &Mail {
                kind: "extension".into(),
                to: email,
                subject: format!("Your request {id}: more time needed"),
                text,
                html,
            },
        )
        .await?;
        tx.commit().await?;
        let _ = notify::deliver_pending(self.store, self.mailer).await;
        self.list_open(None, now)
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(RequestError::NotFound)
    }

    /// Rejects a request (Art. 12(5)) with a reason, telling the subject of the right to
    /// complain to the supervisory authority.
    pub async fn reject(
        &self,
        id: &str,
        reason: &str,
        authority: Option<&str>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let (kind, email, _, _) = self.open_request(id).await?;
        let mut tx = self.store.pool().begin().await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(actor, "admin.rejected").request(id)],
            )
            .await?;
        sqlx::query("UPDATE dsr_requests SET status = 'rejected', reason = $1, updated_at = $2 WHERE id = $3")
            .bind(reason)
            .bind(timestamp(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let complain = match authority {
            Some(a) => format!("You may lodge a complaint with the supervisory authority, {a}, and seek a judicial remedy (Art. 77-79 GDPR)."),
            None => "You may lodge a complaint with a supervisory authority and seek a judicial remedy (Art. 77-79 GDPR).".to_owned(),
        };
        let text = format!("We cannot act on your {kind} request {id}: {reason}\n\n{complain}\n");
        let html = format!(
            "<p>We cannot act on your {kind} request <code>{id}</code>: {}</p><p>{}</p>",
            notify::html_escape(reason),
            notify::html_escape(&complain)
        );
        notify::enqueue_in(
            &mut tx,
            &Mail {
                kind: "rejection".into(),
                to: email,
                subject: format!("Your request {id}: rejected"),
                text,
                html,
            },
        )
        .await?;
        tx.commit().await?;
        let _ = notify::deliver_pending(self.store, self.mailer).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_deadline_is_the_same_day_next_month_or_its_last_day() {
        let at = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 9, 30, 0).unwrap();
        assert_eq!(due_date(at(2027, 1, 31)), at(2027, 2, 28));
        assert_eq!(due_date(at(2028, 1, 31)), at(2028, 2, 29));
        assert_eq!(due_date(at(2026, 3, 15)), at(2026, 4, 15));
        assert_eq!(due_date(at(2026, 12, 31)), at(2027, 1, 31));
        assert_eq!(due_date(at(2026, 5, 31)), at(2026, 6, 30));
    }

    #[test]
    fn codes_are_six_digits_and_compared_in_full() {
        for _ in 0..100 {
            let c = new_code().unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.chars().all(|ch| ch.is_ascii_digit()));
        }
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abc", "abcd"));
    }
}
