//! Identity verification (Art. 12(6)): the e-mail carries a link whose secret confirms the
//! request by itself, and a ten-digit code for people who read their mail on another
//! device. Every code check is counted before the code is compared, in single statements
//! that take one attempt or none, so concurrent guesses cannot outrun the limits.

use super::transition::Move;
use super::*;

/// A check of a code is allowed: one attempt of the request and one of the person's
/// daily budget were taken, in one transaction.
struct Check {
    code_hash: Option<String>,
    /// Attempts left on this code, and on the person's budget, after this one.
    remaining: i64,
}

impl Service<'_> {
    pub(super) fn code_hash(&self, id: &str, code: &str) -> String {
        self.audit
            .mask_hash(&format!("verification-code:{id}:{code}"))
    }

    /// The key the person's code checks are counted under: a keyed hash of the keyed
    /// hash their requests share, the same for all their requests.
    pub(super) fn checks_key(&self, identity_lookup: &str) -> String {
        self.audit
            .mask_hash(&format!("code-checks:{identity_lookup}"))
    }

    /// Takes one of the verification e-mails an identity (kind, folded value) may receive today
    /// ([`Settings::verification_mails`]), in the caller's transaction; false when none is
    /// left. Counted under a keyed hash of the folded identity, like code checks.
    pub(super) async fn take_verification_mail(
        &self,
        tx: &mut sqlx::AnyConnection,
        (kind, value): (&str, &str),
        now: DateTime<Utc>,
    ) -> Result<bool, RequestError> {
        let key = self
            .audit
            .mask_hash(&format!("verification-mails:{kind}={value}"));
        Ok(take_daily(tx, &key, self.settings.verification_mails, now)
            .await?
            .is_some())
    }

    /// A fresh code and link secret, and the columns that store them (hashes only).
    pub(super) fn new_secrets(&self, id: &str) -> Result<Secrets, RequestError> {
        let code = new_code()?;
        let link = crate::crypto::random_hex(LINK_SECRET_BYTES).map_err(AuditError::from)?;
        Ok(Secrets {
            code_hash: self.code_hash(id, &code),
            link_hash: sha256_hex(&link),
            code,
            link,
        })
    }

    pub(super) fn code_mail(&self, to: &str, id: &str, s: &Secrets, due: &str) -> Mail {
        let link = self
            .settings
            .link(&format!("/portal/requests/{id}/confirm?secret={}", s.link));
        let code = shown_code(&s.code);
        // Short lines: the code stays readable in the raw message.
        let text = format!(
            "We received your request ({id}) at {c}.\n\nTo confirm it, open this link (valid for {LINK_TTL_HOURS} hours):\n{link}\n\nOr enter the code where you made the request.\nYour verification code is {code} (valid for {CODE_TTL_MINUTES} minutes).\n\nWe answer by {due} at the latest (Art. 12(3) GDPR).\nIf you did not make this request, ignore this message.\n",
            c = self.settings.controller
        );
        let html = format!(
            "<p>We received your request (<code>{id}</code>) at {c}.</p><p><a href=\"{l}\">Confirm the request</a> (valid for {LINK_TTL_HOURS} hours).</p><p>Or enter the verification code <strong>{code}</strong> where you made the request. It is valid for {CODE_TTL_MINUTES} minutes.</p><p>We answer by {due} at the latest (Art. 12(3) GDPR). If you did not make this request, ignore this message.</p>",
            c = notify::html_escape(&self.settings.controller),
            l = notify::html_escape(&link),
        );
        Mail {
            kind: "verification_code".into(),
            to: to.to_owned(),
            subject: format!("Confirm your request {id}"),
            text,
            html,
        }
    }

    /// Checks a verification code. A verified request goes to the execution queue, to the
    /// DPO for approval (types in [`Settings::approval`]), or, for rectification,
    /// restriction and objection, to the DPO as a task; a restriction takes effect at once.
    pub async fn verify(
        &self,
        id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        let check = self.take_check(id, now).await?;
        let given = self.code_hash(id, &typed_code(code));
        if !check.code_hash.as_deref().is_some_and(|h| same(h, &given)) {
            return Err(if check.remaining <= 0 {
                RequestError::TooManyAttempts
            } else {
                RequestError::WrongCode {
                    remaining: check.remaining,
                }
            });
        }
        self.confirm(id, now).await
    }

    /// Confirms a request with the secret of the link in its e-mail. The secret is out of
    /// reach of guessing, so its checks are not counted; a wrong one opens nothing.
    pub async fn verify_link(
        &self,
        id: &str,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        let r = sqlx::query("SELECT link_hash, link_expires_at FROM dsr_requests WHERE id = $1 AND status = 'identity_pending'")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(r) = r else {
            return Err(RequestError::Unauthorized);
        };
        let (hash, expires): (Option<String>, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
        if !hash
            .as_deref()
            .is_some_and(|h| same(h, &sha256_hex(secret)))
        {
            return Err(RequestError::Unauthorized);
        }
        if expires
            .as_deref()
            .is_none_or(|e| e < timestamp(now).as_str())
        {
            return Err(RequestError::Expired);
        }
        self.confirm(id, now).await
    }

    /// Takes one attempt of the request's code and one of its person's budget, or says
    /// why none is left. Both counters move in single conditional statements inside one
    /// transaction: of any number of concurrent checks, at most the limit get through.
    async fn take_check(&self, id: &str, now: DateTime<Utc>) -> Result<Check, RequestError> {
        let now_s = timestamp(now);
        let mut tx = self.store.begin().await?;
        let taken = sqlx::query(
            "UPDATE dsr_requests SET code_attempts = code_attempts + 1, updated_at = $1 \
             WHERE id = $2 AND status = 'identity_pending' AND code_attempts < $3 AND code_expires_at >= $1 \
             RETURNING code_hash, code_attempts, identity_lookup",
        )
        .bind(&now_s)
        .bind(id)
        .bind(MAX_ATTEMPTS)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = taken else {
            drop(tx);
            return Err(self.why_no_check(id, &now_s).await?);
        };
        let (code_hash, attempts, lookup): (Option<String>, i64, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let key = self.checks_key(&lookup);
        let Some(checks) = take_daily(&mut tx, &key, MAX_CODE_CHECKS, now).await? else {
            // The request's attempt is given back with the rollback.
            drop(tx);
            return Err(RequestError::UseTheLink);
        };
        tx.commit().await?;
        Ok(Check {
            code_hash,
            remaining: (MAX_ATTEMPTS - attempts).min(MAX_CODE_CHECKS - checks),
        })
    }

    /// Why no code check was allowed on request `id`.
    async fn why_no_check(&self, id: &str, now: &str) -> Result<RequestError, RequestError> {
        let r = sqlx::query(
            "SELECT status, code_attempts, code_expires_at FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(r) = r else {
            return Ok(RequestError::NotFound);
        };
        let (status, attempts, expires): (String, i64, Option<String>) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        Ok(if status != "identity_pending" {
            RequestError::NotPending
        } else if attempts >= MAX_ATTEMPTS {
            RequestError::TooManyAttempts
        } else if expires.as_deref().is_none_or(|e| e < now) {
            RequestError::Expired
        } else {
            // Changed between the two statements: the caller may try again.
            RequestError::TooManyAttempts
        })
    }

    /// The identity is verified: the request moves on, once, however many confirmations
    /// arrive together.
    async fn confirm(&self, id: &str, now: DateTime<Utc>) -> Result<View, RequestError> {
        let r = sqlx::query("SELECT kind, due_at FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(RequestError::NotFound)?;
        let kind = Kind::parse(&r.try_get::<String, _>(0)?).unwrap_or(Kind::Rectification);
        let due: String = r.try_get(1)?;
        let mut tx = self.store.begin().await?;
        let person = self.personal(&mut tx, id).await?;
        let next = self
            .accept_in(&mut tx, id, kind, &person, &due, Actor::Subject, now)
            .await?;
        let mut m = Move::new(id, &[Status::IdentityPending], next, "verify");
        m.set.clear_codes = true;
        match self.move_in(&mut tx, m, now).await {
            Ok(_) => {}
            // Confirmed meanwhile by another check: nothing of this one is kept.
            Err(RequestError::WrongState { .. }) => return Err(RequestError::NotPending),
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        self.deliver().await;
        self.view(id).await
    }

    /// Sends a new code and link (the old ones stop working) to the holder of the
    /// request's token: at most [`MAX_CODES`] per request, one a minute.
    pub async fn resend_code(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<View, RequestError> {
        self.status(id, token).await?;
        let r = sqlx::query(
            "SELECT status, codes_sent, code_expires_at, due_at FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_one(self.store.pool())
        .await?;
        let (status, sent, expires, due): (String, i64, Option<String>, String) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
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
        let email = self.personal_of(id).await?.value().to_owned();
        let secrets = self.new_secrets(id)?;
        let mut tx = self.store.begin().await?;
        let changed = sqlx::query("UPDATE dsr_requests SET code_hash = $1, code_expires_at = $2, link_hash = $3, link_expires_at = $4, code_attempts = 0, codes_sent = codes_sent + 1, updated_at = $5 WHERE id = $6 AND codes_sent = $7")
            .bind(&secrets.code_hash)
            .bind(timestamp(now + chrono::Duration::minutes(CODE_TTL_MINUTES)))
            .bind(&secrets.link_hash)
            .bind(timestamp(now + chrono::Duration::hours(LINK_TTL_HOURS)))
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
        if !self
            .take_verification_mail(&mut tx, ("email", &email), now)
            .await?
        {
            // The address had its mails for the day: answered alike, nothing changes, and
            // the code and link already sent stay valid.
            drop(tx);
            tracing::info!(request = %id, "new code withheld: the address had its mails for the day");
            return self.view(id).await;
        }
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::Subject, "request.code_sent")
                    .request(id)
                    .summary(serde_json::json!({ "codes_sent": sent + 1 }))],
            )
            .await?;
        notify::enqueue_in(
            &mut tx,
            self.mailer,
            &self.code_mail(&email, id, &secrets, &due[..10]),
        )
        .await?;
        tx.commit().await?;
        self.deliver().await;
        self.view(id).await
    }
}

/// Takes one from the daily budget of `limit` counted under `key` (a keyed hash of a
/// person's folded identity, namespaced by what is counted), in the caller's transaction;
/// the count so far, or None when the budget is spent. A window older than
/// [`CODE_CHECK_WINDOW_HOURS`] starts again with this one. The row is created, then moved
/// by one conditional statement: of any number of concurrent takers, at most `limit` get
/// through. The purge forgets windows that are over.
async fn take_daily(
    tx: &mut sqlx::AnyConnection,
    key: &str,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let now_s = timestamp(now);
    let window_opened_before = timestamp(now - chrono::Duration::hours(CODE_CHECK_WINDOW_HOURS));
    sqlx::query("INSERT INTO code_checks (identity_key, window_start, checks) VALUES ($1, $2, 0) ON CONFLICT (identity_key) DO NOTHING")
        .bind(key)
        .bind(&now_s)
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar(
        "UPDATE code_checks SET \
           checks = CASE WHEN window_start <= $2 THEN 1 ELSE checks + 1 END, \
           window_start = CASE WHEN window_start <= $2 THEN $3 ELSE window_start END \
         WHERE identity_key = $1 AND (window_start <= $2 OR checks < $4) RETURNING checks",
    )
    .bind(key)
    .bind(&window_opened_before)
    .bind(&now_s)
    .bind(limit)
    .fetch_optional(&mut *tx)
    .await
}

/// A new request's secrets: in clear for its e-mail, hashed for the store.
pub(super) struct Secrets {
    pub code: String,
    pub link: String,
    pub code_hash: String,
    pub link_hash: String,
}
