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
/// Codes sent for one request, the first included.
pub const MAX_CODES: i64 = 5;
/// The shortest wait between two codes for one request.
pub const RESEND_SECONDS: i64 = 60;

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
    #[error("no more codes can be sent for this request; make a new request")]
    NoMoreCodes,
    #[error("a code was sent less than a minute ago; wait {0} s")]
    ResendTooSoon(i64),
    #[error("the deadline was already extended once")]
    AlreadyExtended,
    #[error("the request is {status}: it cannot be {action} now")]
    WrongState { status: String, action: String },
    #[error("the request is not a task for the DPO")]
    NotATask,
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

/// How the service treats requests, from the configuration and the policy.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The controller's name, as the subject reads it.
    pub controller: String,
    /// Types that wait for the DPO's approval once the identity is verified.
    pub approval: Vec<Kind>,
    /// Where the service is reached from outside (`https://privacy.example.com`), for the
    /// links in e-mails; without it, links are paths.
    pub public_url: Option<String>,
    /// Who is told of manual tasks and approvals: the DPO, else the controller's contact.
    pub dpo_email: Option<String>,
    /// The supervisory authority named in rejections.
    pub authority: Option<String>,
}

impl Settings {
    pub fn from_policy(policy: &crate::policy::Policy) -> Self {
        let c = policy.controller.as_ref();
        Self {
            controller: c.map(|c| c.name.clone()).unwrap_or_default(),
            dpo_email: c.map(|c| {
                c.dpo
                    .as_ref()
                    .map_or_else(|| c.contact_email.to_string(), |d| d.email.to_string())
            }),
            authority: c
                .and_then(|c| c.supervisory_authority.as_ref())
                .map(|a| a.name.clone()),
            ..Self::default()
        }
    }

    /// A link to `path` on this service.
    pub fn link(&self, path: &str) -> String {
        match &self.public_url {
            Some(u) => format!("{}{path}", u.trim_end_matches('/')),
            None => path.to_owned(),
        }
    }
}

/// Types a person on the DPO's team handles; the service routes them as tasks.
pub fn is_manual(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Rectification | Kind::Restriction | Kind::Objection
    )
}

pub struct Service<'a> {
    pub store: &'a Store,
    pub audit: &'a AuditLog,
    pub mailer: &'a Mailer,
    pub settings: Settings,
}

impl Service<'_> {
    fn code_hash(&self, id: &str, code: &str) -> String {
        self.audit
            .mask_hash(&format!("verification-code:{id}:{code}"))
    }

    fn code_mail(&self, to: &str, id: &str, code: &str, due: &str) -> Mail {
        let text = format!(
            "We received your request ({id}) at {c}.\n\nYour verification code is {code}. It is valid for {CODE_TTL_MINUTES} minutes.\n\nWe answer by {due} at the latest (Art. 12(3) GDPR).\nIf you did not make this request, ignore this message.\n",
            c = self.settings.controller
        );
        let html = format!(
            "<p>We received your request (<code>{id}</code>) at {c}.</p><p>Your verification code is <strong>{code}</strong>. It is valid for {CODE_TTL_MINUTES} minutes.</p><p>We answer by {due} at the latest (Art. 12(3) GDPR). If you did not make this request, ignore this message.</p>",
            c = notify::html_escape(&self.settings.controller)
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
        let mut tx = self.store.begin().await?;
        let subject = self.audit.subject_in(&mut tx, identity).await?;
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
        let mail = self.code_mail(identity.value(), &id, &code, &due[..10]);
        let mail_id = notify::enqueue_claimed_in(&mut tx, &mail).await?;
        tx.commit().await?;
        // Delivery failures are retried by the next delivery; the request stands.
        if let Err(e) = notify::deliver_claimed(self.store, self.mailer, mail_id, &mail).await {
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

    /// Checks a verification code (Art. 12(6)). A verified request goes to the execution
    /// queue, to the DPO for approval (types in [`Settings::approval`]), or, for
    /// rectification, restriction and objection, to the DPO as a task; a restriction
    /// takes effect at once.
    pub async fn verify(
        &self,
        id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        let r = sqlx::query("SELECT status, code_hash, code_expires_at, code_attempts, kind, identity_kind, identity_value, due_at FROM dsr_requests WHERE id = $1")
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
        let kind = Kind::parse(&r.try_get::<String, _>(4)?).unwrap_or(Kind::Rectification);
        let (ikind, ivalue, due): (String, String, String) =
            (r.try_get(5)?, r.try_get(6)?, r.try_get(7)?);
        let mut tx = self.store.begin().await?;
        let next = self
            .accept_in(
                &mut tx,
                id,
                kind,
                &ikind,
                &ivalue,
                &due,
                Actor::Subject,
                now,
            )
            .await?;
        sqlx::query("UPDATE dsr_requests SET status = $1, code_hash = NULL, code_expires_at = NULL, updated_at = $2 WHERE id = $3")
            .bind(next)
            .bind(timestamp(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.deliver().await;
        self.view(id).await
    }

    /// Sends a new code (the old one stops working) to the holder of the request's
    /// token: at most [`MAX_CODES`] per request, one a minute.
    pub async fn resend_code(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        self.status(id, token).await?;
        let r = sqlx::query("SELECT status, codes_sent, code_expires_at, identity_value, due_at FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_one(self.store.pool())
            .await?;
        let (status, sent, expires, email, due): (String, i64, Option<String>, String, String) = (
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
        );
        if status != "identity_pending" {
            return Err(RequestError::NotPending);
        }
        if sent >= MAX_CODES {
            return Err(RequestError::NoMoreCodes);
        }
        // The last code was sent CODE_TTL_MINUTES before it expires.
        if let Some(last) = expires
            .as_deref()
            .and_then(crate::policy::parse_timestamp)
            .map(|e| e - chrono::Duration::minutes(CODE_TTL_MINUTES))
        {
            let wait = RESEND_SECONDS - (now - last).num_seconds();
            if wait > 0 {
                return Err(RequestError::ResendTooSoon(wait));
            }
        }
        let code = new_code()?;
        let mut tx = self.store.begin().await?;
        let changed = sqlx::query("UPDATE dsr_requests SET code_hash = $1, code_expires_at = $2, code_attempts = 0, codes_sent = codes_sent + 1, updated_at = $3 WHERE id = $4 AND codes_sent = $5")
            .bind(self.code_hash(id, &code))
            .bind(timestamp(now + chrono::Duration::minutes(CODE_TTL_MINUTES)))
            .bind(timestamp(now))
            .bind(id)
            .bind(sent)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed != 1 {
            // Another resend won the race.
            return Err(RequestError::ResendTooSoon(RESEND_SECONDS));
        }
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::Subject, "request.code_sent")
                    .request(id)
                    .summary(serde_json::json!({ "codes_sent": sent + 1 }))],
            )
            .await?;
        notify::enqueue_in(&mut tx, &self.code_mail(&email, id, &code, &due[..10])).await?;
        tx.commit().await?;
        self.deliver().await;
        self.view(id).await
    }

    /// What follows a verified identity: records it, places a restriction, tells the
    /// DPO of a task or an approval; returns the next status.
    #[allow(clippy::too_many_arguments)]
    async fn accept_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        kind: Kind,
        ikind: &str,
        ivalue: &str,
        due: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<&'static str, RequestError> {
        let next = if is_manual(kind) {
            "in_progress"
        } else if self.settings.approval.contains(&kind) {
            "awaiting_approval"
        } else {
            "verified"
        };
        self.audit
            .append_in(
                &mut *tx,
                &[NewEntry::new(actor, "request.verified")
                    .request(id)
                    .summary(serde_json::json!({ "type": kind.key(), "next": next }))],
            )
            .await?;
        if kind == Kind::Restriction {
            sqlx::query("INSERT INTO subject_restrictions (request_id, identity_kind, identity_value, placed_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(ikind)
                .bind(ivalue)
                .bind(timestamp(now))
                .execute(&mut *tx)
                .await?;
            self.audit
                .append_in(
                    &mut *tx,
                    &[NewEntry::new(Actor::System, "restriction.placed").request(id)],
                )
                .await?;
        }
        let task = match (kind, next) {
            (Kind::Restriction, _) => Some(
                "restriction of processing (Art. 18): retention and erasure now skip this person; decide whether to keep the restriction, then complete the request, and lift the restriction when its ground ends (the person is told)",
            ),
            (Kind::Rectification, _) => Some(
                "rectification (Art. 16): correct the data as the person asks, then complete the request",
            ),
            (Kind::Objection, _) => Some(
                "objection (Art. 21): stop the processing objected to unless there are compelling legitimate grounds, then complete the request",
            ),
            (_, "awaiting_approval") => {
                Some("approval: approve the request to run it, or reject it with a reason")
            }
            _ => None,
        };
        if let (Some(task), Some(dpo)) = (task, &self.settings.dpo_email) {
            let link = self.settings.link(&format!("/v1/admin/requests/{id}"));
            let text = format!(
                "The {} request {id} (verified) needs you: {task}.\n\nDue by {} (Art. 12(3) GDPR). The request, with the person's details: {link}\n",
                kind.key(),
                &due[..due.len().min(10)]
            );
            let html = format!(
                "<p>The {} request <code>{id}</code> (verified) needs you: {}.</p><p>Due by {} (Art. 12(3) GDPR). The request, with the person's details: <code>{}</code></p>",
                kind.key(),
                notify::html_escape(task),
                &due[..due.len().min(10)],
                notify::html_escape(&link)
            );
            notify::enqueue_in(
                &mut *tx,
                &Mail {
                    kind: format!(
                        "dpo_{}",
                        if next == "awaiting_approval" {
                            "approval"
                        } else {
                            "task"
                        }
                    ),
                    to: dpo.clone(),
                    subject: format!("Request {id} ({}) needs you", kind.key()),
                    text,
                    html,
                },
            )
            .await?;
        }
        Ok(next)
    }

    /// Delivers queued mail now; a failure is retried by the next delivery.
    async fn deliver(&self) {
        if let Err(e) = notify::deliver_pending(self.store, self.mailer).await {
            tracing::warn!(error = %e, "mail delivery deferred");
        }
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
        let r = sqlx::query(
            "SELECT token_hash, id, kind, status, received_at, due_at FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        // Unknown ids and wrong tokens answer alike: nobody learns which requests exist.
        let Some(r) = r else {
            return Err(RequestError::Unauthorized);
        };
        let hash: String = r.try_get(0)?;
        if !same(&hash, &sha256_hex(token)) {
            return Err(RequestError::Unauthorized);
        }
        Ok(View {
            id: r.try_get(1)?,
            kind: r.try_get(2)?,
            status: r.try_get(3)?,
            received_at: r.try_get(4)?,
            due_at: r.try_get(5)?,
        })
    }
}

/// How long a stored access package can be downloaded.
pub const PACKAGE_DAYS: i64 = 7;
/// A claim older than this is taken to belong to a crashed worker and is claimed again.
const STALE_CLAIM_MINUTES: i64 = 15;
/// How many times a failing request is executed before it is marked `failed`.
pub const MAX_EXECUTIONS: i64 = 5;

/// A package as the subject downloads it.
pub struct Download {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Service<'_> {
    /// Claims the oldest verified request that is due (or one whose worker died) and
    /// executes it. Several instances may call this at once: each request is claimed by
    /// one. A failed execution is retried with back-off, [`MAX_EXECUTIONS`] times in all.
    pub async fn execute_next(
        &self,
        policy: &crate::policy::Policy,
        sources: &crate::sources::db::Sources,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, RequestError> {
        let stale = timestamp(now - chrono::Duration::minutes(STALE_CLAIM_MINUTES));
        let ready = "(status = 'verified' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
                     OR (status = 'in_progress' AND claimed_by IS NOT NULL AND claimed_at < $3)";
        // On PostgreSQL, instances skip a row another one is claiming and take the next.
        let skip = match self.store.backend() {
            crate::store::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::store::Backend::Sqlite => "",
        };
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE dsr_requests SET status = 'in_progress', claimed_by = $1, claimed_at = $2, updated_at = $2 \
             WHERE id = (SELECT id FROM dsr_requests WHERE {ready} ORDER BY received_at LIMIT 1{skip}) AND ({ready}) \
             RETURNING id, kind, identity_kind, identity_value, attempts"
        )))
        .bind(holder)
        .bind(timestamp(now))
        .bind(&stale)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        let (id, kind, ikind, ivalue, attempts): (String, String, String, String, i64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        let mut tx = self.store.begin().await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::System, "request.in_progress")
                    .request(&id)
                    .summary(
                        serde_json::json!({ "type": kind, "attempt": attempts + 1, "by": holder }),
                    )],
            )
            .await?;
        self.callbacks_in(&mut tx, &id, "in_progress", now).await?;
        tx.commit().await?;
        let identity =
            Identity::parse(&format!("{ikind}={ivalue}")).map_err(|_| RequestError::NotFound)?;
        let kind = Kind::parse(&kind).unwrap_or(Kind::Rectification);
        let restriction = if kind == Kind::Erasure {
            self.store
                .restriction_for(std::slice::from_ref(&identity))
                .await
                .map_err(|e| RequestError::Store(sqlx::Error::Protocol(e.to_string())))?
        } else {
            None
        };
        let ctx = crate::dsr::Context {
            policy,
            audit: self.audit,
            sources,
            actor: Actor::Subject,
            request_id: Some(id.clone()),
            strict: false,
            restriction,
        };
        let mut notices = Vec::new();
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
                        notices = erasure_notices(policy, &r);
                        let notified: Vec<&str> = notices.iter().map(|p| p.id.as_str()).collect();
                        Ok((
                            status.to_owned(),
                            serde_json::json!({ "systems": r.systems, "processors_notified": notified }),
                            None,
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            // Tasks are not claimed (see `accept_in`); one claimed all the same goes back.
            _ => Ok((
                "in_progress".to_owned(),
                serde_json::json!({ "manual": true }),
                None,
            )),
        };
        let mut tx = self.store.begin().await?;
        let (status, result, retry_at) = match &outcome {
            Ok((s, r, _)) => (s.clone(), r.clone(), None),
            Err(e) => {
                tracing::error!(request = %id, attempt = attempts + 1, error = %e, "request execution failed");
                let retry = attempts + 1 < MAX_EXECUTIONS;
                (
                    if retry { "verified" } else { "failed" }.to_owned(),
                    serde_json::json!({ "error": "execution failed; the operator has the details in the log", "attempts": attempts + 1 }),
                    retry.then(|| now + notify::webhook::backoff(attempts)),
                )
            }
        };
        let action = if retry_at.is_some() {
            "request.retry_scheduled".to_owned()
        } else {
            format!("request.{status}")
        };
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::System, &action)
                    .request(&id)
                    .summary(serde_json::json!({ "type": kind.key(), "attempt": attempts + 1 }))],
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
        // A task goes back to the DPO unclaimed; a retry waits for its time.
        sqlx::query(
            "UPDATE dsr_requests SET status = $1, result = $2, updated_at = $3, attempts = $4, next_attempt_at = $5, \
             claimed_by = CASE WHEN $1 = 'in_progress' OR $1 = 'verified' THEN NULL ELSE claimed_by END WHERE id = $6",
        )
        .bind(&status)
        .bind(result.to_string())
        .bind(timestamp(now))
        .bind(if outcome.is_err() { attempts + 1 } else { attempts })
        .bind(retry_at.map(timestamp))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        if retry_at.is_none() && status != "in_progress" {
            notify::enqueue_in(&mut tx, &self.outcome_mail(&identity, &id, kind, &status)).await?;
            self.callbacks_in(&mut tx, &id, &status, now).await?;
        }
        for p in &notices {
            self.erasure_notice_in(&mut tx, p, &id, &identity, now)
                .await?;
        }
        tx.commit().await?;
        self.deliver().await;
        Ok(Some(id))
    }

    fn outcome_mail(&self, identity: &Identity, id: &str, kind: Kind, status: &str) -> Mail {
        let what = match (kind, status) {
            (_, "failed") => "We could not complete your request yet; we are looking into it and will write again.".to_owned(),
            (Kind::Access | Kind::Portability, _) => format!(
                "Your data is ready. Download it within {PACKAGE_DAYS} days from the page of your request (the link you kept when you made it), or from {} with the token you received then.",
                self.settings.link(&format!("/v1/requests/{id}/package"))
            ),
            (Kind::Erasure, "partially_completed") => "We erased your data, except what the law requires us to keep; the status of your request lists what we keep, why and until when.".to_owned(),
            (Kind::Erasure, _) => "We erased your data.".to_owned(),
            _ => "A person on our team will handle your request and write to you.".to_owned(),
        };
        let text = format!(
            "Your {} request {id} at {}: {status}.\n\n{what}\n",
            kind.key(),
            self.settings.controller
        );
        let html = format!(
            "<p>Your {} request <code>{id}</code> at {}: {status}.</p><p>{}</p>",
            kind.key(),
            notify::html_escape(&self.settings.controller),
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
        let mut tx = self.store.begin().await?;
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
        let mut tx = self.store.begin().await?;
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
        self.callbacks_in(&mut tx, id, "rejected", now).await?;
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

/// The recipients told of an erasure (Art. 19): every processor with an `erasure_notice`
/// that receives data of a purpose served by a field the erasure touched.
pub fn erasure_notices<'p>(
    policy: &'p crate::policy::Policy,
    report: &crate::dsr::ErasureReport,
) -> Vec<&'p crate::policy::Processor> {
    let mut ids = std::collections::BTreeSet::new();
    for s in &report.systems {
        let Some(system) = policy.system(&s.system) else {
            continue;
        };
        for c in &s.collections {
            if c.rows_deleted == 0 && c.rows_masked == 0 {
                continue;
            }
            let Some(coll) = system
                .collections
                .iter()
                .find(|x| x.name.as_str() == c.collection)
            else {
                continue;
            };
            for f in &coll.fields {
                for purpose in crate::policy::Policy::field_purposes(system, coll, f) {
                    if let Some(p) = policy.purpose(purpose.as_str()) {
                        ids.extend(p.recipients.iter().map(|r| r.as_str().to_owned()));
                    }
                }
            }
        }
    }
    ids.iter()
        .filter_map(|id| policy.processor(id))
        .filter(|p| p.erasure_notice.is_some())
        .collect()
}

/// The OpenDSR status of a lethe status.
pub fn opendsr_status(status: &str) -> &'static str {
    match status {
        "in_progress" => "in_progress",
        "completed" | "partially_completed" | "rejected" | "failed" => "completed",
        "cancelled" => "cancelled",
        _ => "pending",
    }
}

impl Service<'_> {
    /// Queues the OpenDSR status callbacks of request `id`, if it came with any.
    async fn callbacks_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        status: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let row = sqlx::query(
            "SELECT callbacks, external_id, due_at, channel FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let (callbacks, external, due, channel): (Option<String>, Option<String>, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        let urls: Vec<String> = callbacks
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default();
        for url in urls {
            let body = serde_json::json!({
                "controller_id": channel.strip_prefix("opendsr:").unwrap_or(&channel),
                "expected_completion_time": due,
                "status_callback_url": url,
                "subject_request_id": external,
                "request_status": opendsr_status(status),
                "api_version": OPENDSR_API_VERSION,
            });
            notify::webhook::enqueue_in(
                &mut *tx,
                &notify::webhook::Webhook {
                    kind: "opendsr_callback".into(),
                    request_id: Some(id.to_owned()),
                    target: "controller".into(),
                    url,
                    body,
                    signing: notify::webhook::Signing::Ed25519,
                },
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Tells processor `p` of the erasure (Art. 19), by its `erasure_notice` channel.
    async fn erasure_notice_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        p: &crate::policy::Processor,
        id: &str,
        identity: &Identity,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let Some(n) = &p.erasure_notice else {
            return Ok(());
        };
        let controller = &self.settings.controller;
        if let Some(url) = &n.webhook {
            let body = serde_json::json!({
                "type": "erasure_notice",
                "request_id": id,
                "controller": controller,
                "processor": p.id.as_str(),
                "erased_at": timestamp(now),
                "identities": [{ "type": identity.kind(), "value": identity.value() }],
                "article": "Art. 19 GDPR",
            });
            notify::webhook::enqueue_in(
                &mut *tx,
                &notify::webhook::Webhook {
                    kind: "erasure_notice".into(),
                    request_id: Some(id.to_owned()),
                    target: p.id.to_string(),
                    url: url.clone(),
                    body,
                    signing: notify::webhook::Signing::Hmac,
                },
                now,
            )
            .await?;
        }
        if let Some(email) = &n.email {
            let who = format!("{}={}", identity.kind(), identity.value());
            let text = format!(
                "{controller} erased, on {}, the personal data of the data subject identified below, at their request (Art. 17 GDPR).\n\nYou received personal data of this person from us as {}. Please erase it as well, including at your sub-processors, and confirm to us (Art. 19, Art. 28(3) GDPR).\n\nIdentity: {who}\nOur reference: {id}\n",
                &timestamp(now)[..10],
                p.name
            );
            let html = format!(
                "<p>{} erased, on {}, the personal data of the data subject identified below, at their request (Art. 17 GDPR).</p><p>You received personal data of this person from us as {}. Please erase it as well, including at your sub-processors, and confirm to us (Art. 19, Art. 28(3) GDPR).</p><p>Identity: <code>{}</code><br>Our reference: <code>{id}</code></p>",
                notify::html_escape(controller),
                &timestamp(now)[..10],
                notify::html_escape(&p.name),
                notify::html_escape(&who)
            );
            notify::enqueue_in(
                &mut *tx,
                &Mail {
                    kind: "erasure_notice".into(),
                    to: email.to_string(),
                    subject: format!("Erasure notice (Art. 19 GDPR), our reference {id}"),
                    text,
                    html,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Changes the status of request `id` from one of `from` to `to`, with its audit entry
    /// and, when `mail` is given, a message to the subject, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        action: &str,
        actor: Actor,
        mail: Option<(&str, String, String)>,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let mut tx = self.store.begin().await?;
        let row =
            sqlx::query("SELECT status, identity_value, kind FROM dsr_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(RequestError::NotFound)?;
        let (status, email, kind): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if !from.contains(&status.as_str()) {
            return Err(RequestError::WrongState {
                status,
                action: action.rsplit('.').next().unwrap_or(action).to_owned(),
            });
        }
        let changed = sqlx::query(
            "UPDATE dsr_requests SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(to)
        .bind(timestamp(now))
        .bind(id)
        .bind(&status)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(RequestError::WrongState {
                status,
                action: action.rsplit('.').next().unwrap_or(action).to_owned(),
            });
        }
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(actor, action)
                    .request(id)
                    .summary(serde_json::json!({ "type": kind, "from": status, "to": to }))],
            )
            .await?;
        if let Some((mkind, text, html)) = mail {
            notify::enqueue_in(
                &mut tx,
                &Mail {
                    kind: mkind.to_owned(),
                    to: email,
                    subject: format!("Your request {id}: {}", to.replace('_', " ")),
                    text,
                    html,
                },
            )
            .await?;
        }
        if to != status {
            self.callbacks_in(&mut tx, id, to, now).await?;
        }
        tx.commit().await?;
        self.deliver().await;
        Ok(())
    }

    /// The DPO approves a request waiting for approval: it goes to the execution queue.
    pub async fn approve(
        &self,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        self.transition(
            id,
            &["awaiting_approval"],
            "verified",
            "admin.approved",
            actor,
            None,
            now,
        )
        .await
    }

    /// The DPO completes a task (rectification, restriction, objection), telling the
    /// subject what was done.
    pub async fn complete_task(
        &self,
        id: &str,
        note: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let manual: Option<String> = sqlx::query_scalar(
            "SELECT kind FROM dsr_requests WHERE id = $1 AND claimed_by IS NULL",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        if !manual
            .as_deref()
            .and_then(Kind::parse)
            .is_some_and(is_manual)
        {
            return Err(RequestError::NotATask);
        }
        let text = format!("We have handled your request {id}: {note}\n");
        let html = format!(
            "<p>We have handled your request <code>{id}</code>: {}</p>",
            notify::html_escape(note)
        );
        self.transition(
            id,
            &["in_progress"],
            "completed",
            "admin.completed",
            actor,
            Some(("request_completed", text, html)),
            now,
        )
        .await
    }

    /// Lifts a restriction (Art. 18(3)): the subject is told first, in the same
    /// transaction as the change.
    pub async fn lift_restriction(
        &self,
        id: &str,
        reason: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let mut tx = self.store.begin().await?;
        let changed = sqlx::query(
            "UPDATE subject_restrictions SET lifted_at = $1 WHERE request_id = $2 AND lifted_at IS NULL",
        )
        .bind(timestamp(now))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(RequestError::NotFound);
        }
        let email: String =
            sqlx::query_scalar("SELECT identity_value FROM dsr_requests WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(actor, "restriction.lifted").request(id)],
            )
            .await?;
        let text = format!(
            "The restriction of processing you asked for in request {id} is lifted: {reason}\n\nYour data is processed again under our privacy notice (Art. 18(3) GDPR).\n"
        );
        let html = format!(
            "<p>The restriction of processing you asked for in request <code>{id}</code> is lifted: {}</p><p>Your data is processed again under our privacy notice (Art. 18(3) GDPR).</p>",
            notify::html_escape(reason)
        );
        notify::enqueue_in(
            &mut tx,
            &Mail {
                kind: "restriction_lifted".into(),
                to: email,
                subject: format!("Your request {id}: restriction lifted"),
                text,
                html,
            },
        )
        .await?;
        tx.commit().await?;
        self.deliver().await;
        Ok(())
    }

    /// The subject (or the OpenDSR controller) withdraws a request not yet being executed.
    pub async fn cancel(
        &self,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        self.transition(
            id,
            &[
                "received",
                "identity_pending",
                "verified",
                "awaiting_approval",
            ],
            "cancelled",
            "request.cancelled",
            actor,
            None,
            now,
        )
        .await
    }

    /// A request from a controller system over OpenDSR: the caller vouches for the
    /// identity, so no code is sent. The same `subject_request_id` again returns the first.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_trusted(
        &self,
        kind: Kind,
        identity: &Identity,
        external_id: &str,
        callbacks: &[String],
        submitted: DateTime<Utc>,
        channel: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, bool), RequestError> {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM dsr_requests WHERE external_id = $1")
                .bind(external_id)
                .fetch_optional(self.store.pool())
                .await?;
        if let Some(id) = existing {
            return Ok((id, true));
        }
        let id = format!(
            "r_{}",
            crate::crypto::random_hex(12).map_err(AuditError::from)?
        );
        // The deadline runs from the person's request, not from its arrival here.
        let received = submitted.min(now);
        let due = timestamp(due_date(received));
        let lookup = self.audit.mask_hash(&format!(
            "request-identity:{}={}",
            identity.kind(),
            identity.value()
        ));
        let mut tx = self.store.begin().await?;
        let subject = self.audit.subject_in(&mut tx, identity).await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::Admin(channel.to_owned()), "request.submitted")
                    .request(&id)
                    .subject(&subject)
                    .summary(serde_json::json!({ "type": kind.key(), "due_at": due, "channel": "opendsr" }))
                    .payload(serde_json::json!({ "identity": format!("{}={}", identity.kind(), identity.value()) }))],
            )
            .await?;
        // Only a hash of a random token: the request is read with an admin token instead.
        let token = crate::crypto::random_hex(32).map_err(AuditError::from)?;
        sqlx::query(
            "INSERT INTO dsr_requests (id, kind, status, identity_kind, identity_value, identity_lookup, token_hash, received_at, due_at, updated_at, channel, external_id, callbacks) \
             VALUES ($1, $2, 'received', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(kind.key())
        .bind(identity.kind())
        .bind(identity.value())
        .bind(&lookup)
        .bind(sha256_hex(&token))
        .bind(timestamp(received))
        .bind(&due)
        .bind(timestamp(now))
        .bind(format!("opendsr:{channel}"))
        .bind(external_id)
        .bind(serde_json::to_string(callbacks).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *tx)
        .await?;
        let next = self
            .accept_in(
                &mut tx,
                &id,
                kind,
                identity.kind(),
                identity.value(),
                &due,
                Actor::Admin(channel.to_owned()),
                now,
            )
            .await?;
        sqlx::query("UPDATE dsr_requests SET status = $1 WHERE id = $2")
            .bind(next)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        self.callbacks_in(&mut tx, &id, next, now).await?;
        tx.commit().await?;
        self.deliver().await;
        Ok((id, false))
    }

    /// A request by the id a controller gave it over OpenDSR.
    pub async fn by_external_id(&self, external_id: &str) -> Result<Full, RequestError> {
        let id: String = sqlx::query_scalar("SELECT id FROM dsr_requests WHERE external_id = $1")
            .bind(external_id)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(RequestError::NotFound)?;
        self.full(&id).await
    }

    /// Everything about a request, for the DPO: the person, the details, the outcome.
    pub async fn full(&self, id: &str) -> Result<Full, RequestError> {
        let r = sqlx::query(
            "SELECT id, kind, status, received_at, due_at, identity_kind, identity_value, details, result, extended_at, reason, attempts, channel, external_id FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::NotFound)?;
        let restricted: Option<String> = sqlx::query_scalar(
            "SELECT placed_at FROM subject_restrictions WHERE request_id = $1 AND lifted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let result: Option<String> = r.try_get(8)?;
        Ok(Full {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            status: r.try_get(2)?,
            received_at: r.try_get(3)?,
            due_at: r.try_get(4)?,
            identity: format!(
                "{}={}",
                r.try_get::<String, _>(5)?,
                r.try_get::<String, _>(6)?
            ),
            details: r.try_get(7)?,
            result: result.and_then(|s| serde_json::from_str(&s).ok()),
            extended_at: r.try_get(9)?,
            reason: r.try_get(10)?,
            attempts: r.try_get(11)?,
            channel: r.try_get(12)?,
            external_id: r.try_get(13)?,
            restriction_in_force: restricted.is_some(),
        })
    }
}

/// What [`purge`] removed from lethe's own store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Purged {
    pub packages: u64,
    pub expired_codes: u64,
    pub requests: u64,
    pub abandoned_requests: u64,
    pub mails: u64,
    pub webhooks: u64,
}

/// Days an unconfirmed request, or a sent message, is kept.
pub const TRANSIENT_DAYS: i64 = 30;

/// Retention of lethe's own data: packages past their download period, verification
/// codes past expiry, finished requests `keep_requests` after they ended (3 years by
/// default: what a DPO needs to show how requests were answered), requests never
/// confirmed and sent messages after [`TRANSIENT_DAYS`], delivered webhooks likewise.
/// Restrictions still in force keep their request. One audit entry with the counts.
pub async fn purge(
    store: &Store,
    audit: &AuditLog,
    keep_requests: RetentionPeriod,
    now: DateTime<Utc>,
) -> Result<Purged, RequestError> {
    let now_s = timestamp(now);
    let old = timestamp(keep_requests.before(now).unwrap_or(now));
    let transient = timestamp(now - chrono::Duration::days(TRANSIENT_DAYS));
    let mut tx = store.begin().await?;
    let mut run = async |sql: &str, at: &str| -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(at.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected())
    };
    let finished = "status IN ('completed', 'partially_completed', 'rejected', 'failed', 'cancelled') \
                    AND updated_at < $1 AND id NOT IN (SELECT request_id FROM subject_restrictions WHERE lifted_at IS NULL)";
    let abandoned = "status = 'identity_pending' AND updated_at < $1";
    let mut p = Purged {
        packages: run("DELETE FROM request_packages WHERE expires_at < $1", &now_s).await?,
        expired_codes: run(
            "UPDATE dsr_requests SET code_hash = NULL WHERE code_hash IS NOT NULL AND code_expires_at < $1",
            &now_s,
        )
        .await?,
        ..Purged::default()
    };
    for (cond, at) in [(finished, &old), (abandoned, &transient)] {
        for child in [
            "DELETE FROM request_packages WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
            "DELETE FROM subject_restrictions WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
            "DELETE FROM webhook_outbox WHERE request_id IN (SELECT id FROM dsr_requests WHERE {c})",
        ] {
            run(&child.replace("{c}", cond), at).await?;
        }
        let n = run(&format!("DELETE FROM dsr_requests WHERE {cond}"), at).await?;
        if cond == finished {
            p.requests = n;
        } else {
            p.abandoned_requests = n;
        }
    }
    p.mails = run(
        "DELETE FROM mail_outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
        &transient,
    )
    .await?;
    p.webhooks = run(
        "DELETE FROM webhook_outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1",
        &transient,
    )
    .await?;
    audit
        .append_in(
            &mut tx,
            &[NewEntry::new(Actor::System, "store.purged")
                .summary(serde_json::to_value(&p).unwrap_or_default())],
        )
        .await?;
    tx.commit().await?;
    Ok(p)
}

/// The OpenDSR API version spoken.
pub const OPENDSR_API_VERSION: &str = "2.0";

/// A request with everything the DPO needs to act on it.
#[derive(Debug, Clone, Serialize)]
pub struct Full {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub received_at: String,
    pub due_at: String,
    pub identity: String,
    pub details: Option<String>,
    pub result: Option<serde_json::Value>,
    pub extended_at: Option<String>,
    pub reason: Option<String>,
    pub attempts: i64,
    pub channel: String,
    pub external_id: Option<String>,
    pub restriction_in_force: bool,
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
