//! Executing queued requests: the worker claims one, runs it against the company's
//! databases, stores the package or the erasure report, tells the subject and, after an
//! erasure, the processors (Art. 19).

use super::transition::{Move, Set};
use super::*;

/// How long a stored access package can be downloaded, unless configured otherwise.
pub use crate::config::PACKAGE_DAYS;
/// A claim older than this is taken to belong to a crashed worker and is claimed again.
const STALE_CLAIM_MINUTES: i64 = 15;
/// How many times a failing request is executed before it is marked `failed`.
pub const MAX_EXECUTIONS: i64 = 5;

/// Random bytes in the secret of a completion link (192 bits).
const DOWNLOAD_SECRET_BYTES: usize = 24;

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
        // Restrictions whose lift reached the person end first, releasing what waited.
        self.complete_lifts(now).await?;
        let stale = timestamp(now - chrono::Duration::minutes(STALE_CLAIM_MINUTES));
        // A request in progress is taken over when its holder's lease has lapsed (see
        // `store::lease`), or after STALE_CLAIM_MINUTES for a holder that is no instance.
        let ready = format!(
            "(status = 'verified' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
             OR (status = 'in_progress' AND claimed_by IS NOT NULL AND {})",
            crate::store::lease::lapsed("claimed_by", "claimed_at", 4, 3)
        );
        // On PostgreSQL, instances skip a row another one is claiming and take the next.
        let skip = match self.store.backend() {
            crate::store::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::store::Backend::Sqlite => "",
        };
        // The claim is a statement of its own: it takes the store's write lock (on SQLite)
        // only for its own moment, also when there is nothing to claim.
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE dsr_requests SET status = 'in_progress', \
             taken_over_from = CASE WHEN status = 'in_progress' THEN claimed_by END, \
             claimed_by = $1, claimed_at = $2, updated_at = $2 \
             WHERE id = (SELECT id FROM dsr_requests WHERE {ready} ORDER BY received_at LIMIT 1{skip}) AND ({ready}) \
             RETURNING id, kind, attempts, taken_over_from"
        )))
        .bind(holder)
        .bind(timestamp(now))
        .bind(&stale)
        .bind(crate::store::lease::lease_cutoff(now))
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = claimed else { return Ok(None) };
        let (id, kind, attempts): (String, String, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // Taken over from a holder that stopped while running it: the steps it had done
        // are done again, and the log says so.
        let taken_over: Option<String> = row.try_get(3)?;
        let mut summary =
            serde_json::json!({ "type": kind, "attempt": attempts + 1, "by": holder });
        if let Some(from) = &taken_over {
            summary["resumed_after_stop_of"] = serde_json::json!(from);
            tracing::info!(request = %id, from = %from, "took over a request whose worker stopped");
        }
        let started = NewEntry::new(Actor::System, "request.in_progress")
            .request(&id)
            .summary(summary);
        let kind = Kind::parse(&kind).unwrap_or(Kind::Rectification);
        // An access changes nothing but the store: its start is recorded in the commit
        // of its outcome (one commit fewer). Any other request records its start first,
        // before the company's databases change.
        let reads_only = matches!(kind, Kind::Access | Kind::Portability);
        let mut started = Some(started);
        if !reads_only {
            let mut tx = self.store.begin().await?;
            self.audit
                .append_in(&mut tx, &started.take().into_iter().collect::<Vec<_>>())
                .await?;
            self.callbacks_in(&mut tx, &id, "in_progress", now).await?;
            tx.commit().await?;
        }
        let identity = match self.personal_of(&id).await.and_then(|p| p.identity()) {
            Ok(i) => i,
            Err(RequestError::Erased) => {
                if let Some(e) = started.take() {
                    self.audit.append(e).await?;
                }
                self.fail_erased(&id, now).await?;
                return Ok(Some(id));
            }
            Err(e) => return Err(e),
        };
        let restriction = if kind == Kind::Erasure {
            crate::dsr::restriction_for(self.audit, std::slice::from_ref(&identity))
                .await
                .map_err(|e| RequestError::Store(sqlx::Error::Protocol(e.to_string())))?
        } else {
            None
        };
        // Art. 18 is no exemption from Art. 17: the erasure waits for the DPO, and runs
        // once the restriction is lifted (the person told first).
        if let Some(by) = &restriction {
            self.hold_for_restriction(&id, by, now).await?;
            return Ok(Some(id));
        }
        let ctx = crate::dsr::Context {
            policy,
            audit: self.audit,
            sources,
            actor: Actor::Subject,
            request_id: Some(id.clone()),
            strict: false,
            restriction: None,
        };
        let mut notices = Vec::new();
        // The package's audit entry, appended with the outcome.
        let mut accessed = None;
        let outcome: Result<(Status, serde_json::Value, Option<Download>), String> = match kind {
            Kind::Access | Kind::Portability => {
                let ak = if kind == Kind::Access {
                    crate::dsr::AccessKind::Access
                } else {
                    crate::dsr::AccessKind::Portability
                };
                match phase(
                    &id,
                    "find and package",
                    crate::dsr::collect(&ctx, std::slice::from_ref(&identity), ak, now),
                )
                .await
                {
                    Ok(p) => {
                        accessed = Some((ak, p.row_counts()));
                        crate::fault::point("access");
                        let (ct, bytes) = if kind == Kind::Access {
                            ("application/zip", p.to_zip().map_err(|e| e.to_string()))
                        } else {
                            ("application/json", Ok(p.data_json()))
                        };
                        let rows = p.row_counts();
                        let nothing_found = rows.values().all(|n| *n == 0);
                        bytes.map(|b| {
                            (
                                Status::Completed,
                                serde_json::json!({ "rows": rows, "nothing_found": nothing_found }),
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
                match phase(
                    &id,
                    "erase",
                    crate::dsr::erase(&ctx, std::slice::from_ref(&identity), false, now),
                )
                .await
                {
                    Ok(r) => {
                        let kept = r.kept().count();
                        let status = if kept > 0 {
                            Status::PartiallyCompleted
                        } else {
                            Status::Completed
                        };
                        notices = erasure_notices(policy, &r);
                        let (told, by_hand): (Vec<&Notice>, Vec<&Notice>) =
                            notices.iter().partition(|n| n.has_channel());
                        Ok((
                            status,
                            serde_json::json!({
                                "systems": r.systems,
                                "processors_notified": told.iter().map(|n| n.processor.id.as_str()).collect::<Vec<_>>(),
                                "told": told.iter().map(|n| n.record()).collect::<Vec<_>>(),
                                "to_tell_by_hand": by_hand.iter().map(|n| n.record()).collect::<Vec<_>>(),
                            }),
                            None,
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            // Art. 21(3): no balancing; every direct-marketing purpose stops for them.
            Kind::MarketingObjection => {
                let stopped: Vec<serde_json::Value> = policy
                    .purposes
                    .iter()
                    .filter(|p| p.direct_marketing)
                    .map(|p| serde_json::json!({ "purpose": p.id.as_str(), "name": p.name }))
                    .collect();
                Ok((
                    Status::Completed,
                    serde_json::json!({ "stopped": stopped, "suppressed": true }),
                    None,
                ))
            }
            // Tasks are not claimed (see `accept_in`); one claimed all the same goes back.
            _ => Ok((
                Status::InProgress,
                serde_json::json!({ "manual": true }),
                None,
            )),
        };
        let mut tx = self.store.begin().await?;
        let (status, result, retry_at) = match &outcome {
            Ok((s, r, _)) => (*s, r.clone(), None),
            Err(e) => {
                tracing::error!(request = %id, attempt = attempts + 1, error = %e, "request execution failed");
                let retry = attempts + 1 < MAX_EXECUTIONS;
                (
                    if retry {
                        Status::Verified
                    } else {
                        Status::Failed
                    },
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
        // The completion e-mail's link opens the package with a secret of its own; only
        // its hash is stored, and it ends with the package.
        let mut download_secret = None;
        if let Ok((_, _, Some(d))) = &outcome {
            let secret =
                crate::crypto::random_base64url(DOWNLOAD_SECRET_BYTES).map_err(AuditError::from)?;
            let sealed = self.audit.seal_package(&id, &d.bytes)?;
            sqlx::query("DELETE FROM request_packages WHERE request_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO request_packages (request_id, content_type, sealed, created_at, expires_at, secret_hash) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&id)
                .bind(&d.content_type)
                .bind(sealed)
                .bind(timestamp(now))
                .bind(timestamp(now + chrono::Duration::days(self.settings.package_days)))
                .bind(sha256_hex(&secret))
                .execute(&mut *tx)
                .await?;
            download_secret = Some(secret);
        }
        // An access's start, its package and its end, in the order they happened.
        let mut entries: Vec<NewEntry> = started.into_iter().collect();
        if !entries.is_empty() {
            self.callbacks_in(&mut tx, &id, "in_progress", now).await?;
        }
        if let (Some((ak, rows)), Ok(_)) = (&accessed, &outcome) {
            let subject = self.audit.subject_in(&mut tx, &identity).await?;
            entries.push(crate::dsr::access_entry(
                &ctx,
                std::slice::from_ref(&identity),
                &subject,
                *ak,
                rows,
            ));
        }
        entries.push(
            NewEntry::new(Actor::System, &action)
                .request(&id)
                .summary(serde_json::json!({ "type": kind.key(), "attempt": attempts + 1 })),
        );
        // A task goes back to the DPO unclaimed; a retry waits for its time.
        let mut m = Move::new(&id, &[Status::InProgress], status, "execute");
        m.entries = entries;
        m.set = Set {
            result: Some(Some(result.to_string())),
            attempts: Some(if outcome.is_err() {
                attempts + 1
            } else {
                attempts
            }),
            next_attempt_at: Some(retry_at.map(timestamp)),
            release_claim: matches!(status, Status::InProgress | Status::Verified),
            clear_codes: false,
        };
        // The person and the controller systems hear of the end, not of a retry.
        m.callbacks = retry_at.is_none();
        if retry_at.is_none() && status != Status::InProgress {
            m.mail = Some(self.outcome_mail(
                &identity,
                &id,
                kind,
                status,
                &result,
                download_secret.as_deref(),
            ));
        }
        // Nothing else is queued for the person with an access: its mail goes out at once.
        m.send_mail_now = reads_only;
        let mail = m.mail.clone();
        let claimed = self.move_in(&mut tx, m, now).await?;
        if kind == Kind::Erasure && outcome.is_ok() {
            self.forget_in(&mut tx, &identity).await?;
        }
        if kind == Kind::MarketingObjection && outcome.is_ok() {
            self.suppress_in(&mut tx, &id, &identity, &result, now)
                .await?;
        }
        if outcome.is_ok() {
            for n in &notices {
                self.erasure_notice_in(&mut tx, n, &id, &identity, now)
                    .await?;
            }
            self.notices_by_hand_in(&mut tx, &notices, &id).await?;
        }
        phase(&id, "commit", tx.commit()).await?;
        match (claimed, &mail) {
            (Some(outbox), Some(mail)) => {
                let sent = notify::deliver_claimed(self.store, self.mailer, outbox, mail);
                if let Err(e) = phase(&id, "mail", sent).await {
                    tracing::warn!(error = %e, "mail delivery deferred");
                }
            }
            _ => phase(&id, "mail", self.deliver()).await,
        }
        Ok(Some(id))
    }

    /// An erasure for a person whose processing is restricted (Art. 18) by request `by`
    /// waits for the DPO: the person and the DPO are told why.
    async fn hold_for_restriction(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let held = serde_json::json!({ "waiting_for": "restriction", "restriction": by });
        let mut tx = self.store.begin().await?;
        let mut m = Move::new(id, &[Status::InProgress], Status::AwaitingApproval, "hold");
        m.entries = vec![
            NewEntry::new(Actor::System, "request.held")
                .request(id)
                .summary(held.clone()),
        ];
        m.set.result = Some(Some(held.to_string()));
        m.set.release_claim = true;
        self.move_in(&mut tx, m, now).await?;
        let email = self.personal(&mut tx, id).await?.value().to_owned();
        let text = format!(
            "Your erasure request {id} waits: {HELD}\n\nThe restriction was placed by your request {by}.\n"
        );
        let html = format!(
            "<p>Your erasure request <code>{id}</code> waits: {}</p><p>The restriction was placed by your request <code>{by}</code>.</p>",
            notify::html_escape(HELD)
        );
        notify::enqueue_in(
            &mut tx,
            self.mailer,
            &Mail {
                kind: "request_held".into(),
                to: email,
                subject: format!("Your request {id}: waiting for the restriction you asked for"),
                text,
                html,
            },
        )
        .await?;
        if let Some(dpo) = &self.settings.dpo_email {
            let task = format!(
                "The erasure request {id} waits: the person's processing is restricted by request {by} (Art. 18). Lift the restriction (the person is told first, Art. 18(3)) and the erasure runs; or reject the erasure with reasons."
            );
            notify::enqueue_in(
                &mut tx,
                self.mailer,
                &Mail {
                    kind: "dpo_task".into(),
                    to: dpo.clone(),
                    subject: format!("Request {id} (erasure) needs you"),
                    html: format!("<p>{}</p>", notify::html_escape(&task)),
                    text: task,
                },
            )
            .await?;
        }
        self.callbacks_in(&mut tx, id, Status::AwaitingApproval.key(), now)
            .await?;
        tx.commit().await?;
        self.deliver().await;
        Ok(())
    }

    /// Recipients the policy gives no channel to: a task for the DPO, naming them and what
    /// each is to be told (never the person: the DPO reads that in the request).
    async fn notices_by_hand_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        notices: &[Notice<'_>],
        id: &str,
    ) -> Result<(), RequestError> {
        let by_hand: Vec<String> = notices
            .iter()
            .filter(|n| !n.has_channel())
            .map(|n| {
                format!(
                    "- {} ({}), {}",
                    n.processor.name,
                    n.processor.id.as_str(),
                    n.what()
                )
            })
            .collect();
        let Some(dpo) = self
            .settings
            .dpo_email
            .as_ref()
            .filter(|_| !by_hand.is_empty())
        else {
            return Ok(());
        };
        let link = self.settings.link(&format!("/v1/admin/requests/{id}"));
        let text = format!(
            "The erasure request {id} erased data that these recipients received, and the policy gives no `erasure_notice` to tell them (Art. 19 GDPR). Tell each of them what was erased, by hand:\n\n{}\n\nThe person's identity is in the request: {link}\n",
            by_hand.join("\n")
        );
        notify::enqueue_in(
            &mut *tx,
            self.mailer,
            &Mail {
                kind: "dpo_task".into(),
                to: dpo.clone(),
                subject: format!("Request {id} (erasure): recipients to tell by hand"),
                html: format!("<pre>{}</pre>", notify::html_escape(&text)),
                text,
            },
        )
        .await?;
        Ok(())
    }

    /// Puts the person on the suppression list (once, whatever the number of objections)
    /// and tells the DPO, inside the caller's transaction.
    async fn suppress_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        identity: &Identity,
        result: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        suppress_in(tx, self.audit, identity, id, now).await?;
        self.audit
            .append_in(
                &mut *tx,
                &[NewEntry::new(Actor::System, "suppression.added")
                    .request(id)
                    .summary(result.clone())],
            )
            .await?;
        if let Some(dpo) = &self.settings.dpo_email {
            let names: Vec<&str> = result["stopped"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            let text = format!(
                "For your information: request {id} objected to direct marketing (Art. 21(2) GDPR). The objection took effect at once, with no balancing (Art. 21(3)): the person is on the suppression list (GET /v1/admin/suppression, `lethe suppression export`), and these purposes stopped for them: {}. Make sure every system that sends marketing reads the list.\n",
                if names.is_empty() {
                    "none is marked `direct_marketing` in the policy".to_owned()
                } else {
                    names.join(", ")
                }
            );
            notify::enqueue_in(
                &mut *tx,
                self.mailer,
                &Mail {
                    kind: "dpo_marketing_objection".into(),
                    to: dpo.clone(),
                    subject: format!("Request {id}: objection to direct marketing carried out"),
                    html: format!("<p>{}</p>", notify::html_escape(&text)),
                    text,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// After the person's erasure: what still names them in lethe's own store goes too
    /// (requests kept in clear before sealing, their count of code checks). Sealed
    /// requests became unreadable when the erasure shredded the person's key.
    async fn forget_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        identity: &Identity,
    ) -> Result<(), RequestError> {
        let lookup = personal::lookup(self.audit, identity);
        sqlx::query("UPDATE dsr_requests SET identity_value = '', details = NULL WHERE identity_lookup = $1 AND identity_value <> ''")
            .bind(&lookup)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM code_checks WHERE identity_key = $1")
            .bind(self.checks_key(&lookup))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// A request whose person's data was erased meanwhile cannot run: it fails, once.
    async fn fail_erased(&self, id: &str, now: DateTime<Utc>) -> Result<(), RequestError> {
        let mut tx = self.store.begin().await?;
        let mut m = Move::new(id, &[Status::InProgress], Status::Failed, "execute");
        m.entries = vec![
            NewEntry::new(Actor::System, "request.failed")
                .request(id)
                .summary(serde_json::json!({ "error": "erased" })),
        ];
        m.set.result = Some(Some(
            serde_json::json!({ "error": "the person's data was erased by another request" })
                .to_string(),
        ));
        m.set.release_claim = true;
        self.move_in(&mut tx, m, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The e-mail telling the subject how their request ended; for a package, with the
    /// link that downloads it (`secret`, the link's own).
    fn outcome_mail(
        &self,
        identity: &Identity,
        id: &str,
        kind: Kind,
        status: Status,
        result: &serde_json::Value,
        secret: Option<&str>,
    ) -> Mail {
        let nothing_found = result.get("nothing_found") == Some(&serde_json::Value::Bool(true));
        let kept = kept_of(result);
        let link = secret.map(|secret| {
            self.settings
                .link(&format!("/portal/requests/{id}/download?secret={secret}"))
        });
        let what = match (kind, status) {
            (_, Status::Failed) => "We could not complete your request yet; we are looking into it and will write again.".to_owned(),
            (Kind::Access | Kind::Portability, _) if nothing_found => format!(
                "We searched every system in our record of processing and hold no personal data about you. The package at the link below confirms it (available for {} days).",
                self.settings.package_days
            ),
            (Kind::Access | Kind::Portability, _) => format!(
                "Your data is ready. Download it within {} days from the link below; keep it to yourself, as it opens your data without any other proof.",
                self.settings.package_days
            ),
            (Kind::Erasure, Status::PartiallyCompleted) => format!(
                "We erased your data, except what we must keep, listed here (and on the status page of your request):\n{}",
                kept_lines(&kept)
            ),
            (Kind::Erasure, _) => "We erased your data.".to_owned(),
            (Kind::MarketingObjection, _) => "We no longer use your data for direct marketing, from now on and with no exception (Art. 21(3) GDPR). We keep your address on our suppression list, only so that no marketing reaches you again; it stays there even if you have your other data erased.".to_owned(),
            _ => "A person on our team will handle your request and write to you.".to_owned(),
        };
        let text = format!(
            "Your {} request {id} at {}: {}.\n\n{what}\n{}",
            kind.key(),
            self.settings.controller,
            status.words(),
            link.as_deref()
                .map_or(String::new(), |l| format!("\n{l}\n"))
        );
        let html = format!(
            "<p>Your {} request <code>{id}</code> at {}: {}.</p><p style=\"white-space: pre-line\">{}</p>{}",
            kind.key(),
            notify::html_escape(&self.settings.controller),
            status.words(),
            notify::html_escape(&what),
            link.as_deref().map_or(String::new(), |l| format!(
                "<p><a href=\"{}\">Download your data</a></p>",
                notify::html_escape(l)
            ))
        );
        Mail {
            kind: format!("request_{status}"),
            to: identity.value().to_owned(),
            subject: format!("Your request {id}: {}", status.words()),
            text,
            html,
        }
    }

    /// Whether request `id` has a package that can still be downloaded (nothing is
    /// read or decrypted).
    pub async fn package_ready(&self, id: &str, now: DateTime<Utc>) -> Result<bool, RequestError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM request_packages WHERE request_id = $1 AND expires_at >= $2",
        )
        .bind(id)
        .bind(timestamp(now))
        .fetch_one(self.store.pool())
        .await?;
        Ok(n > 0)
    }

    /// The stored package, for the holder of its download secret (the link in the
    /// completion e-mail). The request's status token does not open it. Unknown requests,
    /// missing packages and wrong secrets answer alike.
    pub async fn package(
        &self,
        id: &str,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Download, RequestError> {
        let row = sqlx::query(
            "SELECT content_type, sealed, expires_at, secret_hash FROM request_packages WHERE request_id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::Unauthorized)?;
        let hash: Option<String> = row.try_get(3)?;
        if !hash.is_some_and(|h| same(&h, &sha256_hex(secret))) {
            return Err(RequestError::Unauthorized);
        }
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

    /// Tells processor `p` of the erasure (Art. 19), by its `erasure_notice` channel.
    async fn erasure_notice_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        notice: &Notice<'_>,
        id: &str,
        identity: &Identity,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let p = notice.processor;
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
                "erased": { "purposes": notice.purposes, "categories": notice.categories.iter().map(|(k, _)| k).collect::<Vec<_>>() },
                "article": "Art. 19 GDPR",
            });
            notify::webhook::enqueue_in(
                &mut *tx,
                &self.audit.outbox_key(),
                &notify::webhook::Webhook {
                    kind: notify::webhook::Kind::ErasureNotice,
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
                "{controller} erased, on {}, at their request (Art. 17 GDPR), this personal data of the data subject identified below, which you received from us as {}: {}.\n\nPlease erase that data as well, including at your sub-processors, and confirm to us (Art. 19, Art. 28(3) GDPR). Data of this person we did not erase (kept under a legal obligation, say) is not part of this notice.\n\nIdentity: {who}\nOur reference: {id}\n",
                &timestamp(now)[..10],
                p.name,
                notice.what()
            );
            let html = format!(
                "<p>{} erased, on {}, at their request (Art. 17 GDPR), this personal data of the data subject identified below, which you received from us as {}: {}.</p><p>Please erase that data as well, including at your sub-processors, and confirm to us (Art. 19, Art. 28(3) GDPR). Data of this person we did not erase (kept under a legal obligation, say) is not part of this notice.</p><p>Identity: <code>{}</code><br>Our reference: <code>{id}</code></p>",
                notify::html_escape(controller),
                &timestamp(now)[..10],
                notify::html_escape(&p.name),
                notify::html_escape(&notice.what()),
                notify::html_escape(&who)
            );
            notify::enqueue_in(
                &mut *tx,
                self.mailer,
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
}

/// What one recipient is told of an erasure (Art. 19): of the data it received from us,
/// what was erased, by purpose and category. Data kept (a legal obligation, a hold) is not
/// named, and the recipient is not asked to erase it.
#[derive(Debug, Clone)]
pub struct Notice<'p> {
    pub processor: &'p crate::policy::Processor,
    /// Names of the purposes for which it received the erased data.
    pub purposes: Vec<String>,
    /// Keys and names of the categories erased.
    pub categories: Vec<(String, String)>,
}

impl Notice<'_> {
    /// Whether the policy gives a way to tell it (`erasure_notice`).
    pub fn has_channel(&self) -> bool {
        self.processor.erasure_notice.is_some()
    }

    fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "processor": self.processor.id.as_str(),
            "name": self.processor.name,
            "purposes": self.purposes,
            "categories": self.categories.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        })
    }

    /// "Name (purpose, purpose): category, category".
    fn what(&self) -> String {
        format!(
            "for {}: {}",
            self.purposes.join(", "),
            self.categories
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The recipients of an erasure (Art. 19): every processor that receives data of a
/// purpose served by a field the erasure deleted or masked, with what of it was erased,
/// whether or not the policy gives a channel to tell it.
pub fn erasure_notices<'p>(
    policy: &'p crate::policy::Policy,
    report: &crate::dsr::ErasureReport,
) -> Vec<Notice<'p>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
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
            // A deleted row loses every field; a masked one only the fields masked.
            let erased = coll
                .fields
                .iter()
                .filter(|f| !f.categories.is_empty())
                .filter(|f| c.rows_deleted > 0 || c.fields_masked.contains_key(f.name.as_str()));
            for f in erased {
                for purpose in policy.field_purposes(system, coll, f) {
                    let Some(p) = policy.purpose(purpose.as_str()) else {
                        continue;
                    };
                    for r in &p.recipients {
                        let e = by.entry(r.as_str().to_owned()).or_default();
                        e.0.insert(p.name.clone());
                        e.1.extend(f.categories.iter().map(|k| k.to_string()));
                    }
                }
            }
        }
    }
    by.into_iter()
        .filter_map(|(id, (purposes, categories))| {
            Some(Notice {
                processor: policy.processor(&id)?,
                purposes: purposes.into_iter().collect(),
                categories: categories
                    .into_iter()
                    .map(|k| {
                        let name = policy.taxonomy.name(&k).to_owned();
                        (k, name)
                    })
                    .collect(),
            })
        })
        .collect()
}

/// What a person whose erasure waits for their own restriction reads (mail and portal).
pub const HELD: &str = "you asked us to restrict the processing of your data (Art. 18 GDPR), and while the restriction holds we keep your data as it is, erasing nothing. Our data protection officer decides; before the restriction is lifted we tell you, and then your erasure runs.";

/// The keyed hash a person is found by on the suppression list.
fn suppression_lookup(audit: &AuditLog, identity: &Identity) -> String {
    audit.mask_hash(&format!(
        "suppression:{}={}",
        identity.kind(),
        crate::sources::matching::fold(identity.value())
    ))
}

/// Puts `identity` on the suppression list for request `id`, inside the caller's
/// transaction; whether it was not on it yet.
pub async fn suppress_in(
    tx: &mut sqlx::AnyConnection,
    audit: &AuditLog,
    identity: &Identity,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, RequestError> {
    let lookup = suppression_lookup(audit, identity);
    let sealed = audit
        .outbox_key()
        .seal(
            identity.value().as_bytes(),
            format!("suppression:{lookup}").as_bytes(),
        )
        .map_err(AuditError::from)?;
    let added = sqlx::query(
        "INSERT INTO suppression (lookup, identity_kind, sealed, request_id, added_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (lookup) DO NOTHING",
    )
    .bind(&lookup)
    .bind(identity.kind())
    .bind(sealed)
    .bind(id)
    .bind(timestamp(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(added == 1)
}

/// One entry of the suppression list, opened.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Suppressed {
    pub identity_kind: String,
    pub value: String,
    pub request_id: String,
    pub added_at: String,
}

/// The suppression list (objections to direct marketing), oldest first, opened with the
/// store's key. An entry that does not open is left out and logged (never its content).
pub async fn suppression_list(
    store: &crate::store::Store,
    audit: &AuditLog,
) -> Result<Vec<Suppressed>, RequestError> {
    let rows: Vec<(String, String, Vec<u8>, String, String)> = sqlx::query_as(
        "SELECT lookup, identity_kind, sealed, request_id, added_at FROM suppression ORDER BY added_at, lookup",
    )
    .fetch_all(store.pool())
    .await?;
    let key = audit.outbox_key();
    Ok(rows
        .into_iter()
        .filter_map(|(lookup, kind, sealed, request_id, added_at)| {
            match key.open(&sealed, format!("suppression:{lookup}").as_bytes()) {
                Ok(v) => Some(Suppressed {
                    identity_kind: kind,
                    value: String::from_utf8_lossy(&v).into_owned(),
                    request_id,
                    added_at,
                }),
                Err(_) => {
                    tracing::error!(request = %request_id, "a suppression entry does not open with this store's key");
                    None
                }
            }
        })
        .collect())
}

/// What an erasure kept, a line each, in the words the status page uses: the field, the
/// records, why, under which article, until when.
pub fn kept_lines(kept: &[KeptView]) -> String {
    kept.iter()
        .map(|k| {
            format!(
                "- {} ({}, {} record(s)): {} ({} GDPR), {}",
                k.field,
                k.collection,
                k.rows,
                k.reason,
                k.article,
                k.until
                    .as_ref()
                    .map_or("while the reason lasts".to_owned(), |u| format!(
                        "until {u}"
                    ))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one phase of a request, and with `RUST_LOG=lethe=debug` says how long it took.
async fn phase<T>(id: &str, name: &'static str, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = work.await;
    tracing::debug!(
        request = %id,
        phase = name,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request phase"
    );
    out
}
