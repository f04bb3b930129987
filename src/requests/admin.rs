//! What the DPO does with requests: list, read, approve, extend, reject, complete a
//! task, lift a restriction; and what a subject may do after submitting: withdraw.

use super::transition::Move;
use super::*;

/// A request as the DPO lists it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AdminView {
    pub id: String,
    #[serde(rename = "type")]
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    pub received_at: String,
    pub due_at: String,
    pub overdue: bool,
    pub extended: bool,
}

/// "Due soon": within this many days.
pub const DUE_SOON_DAYS: i64 = 7;

/// The open requests, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub overdue: i64,
    /// Not overdue, due within [`DUE_SOON_DAYS`].
    pub due_soon: i64,
    pub failed: i64,
    pub approval: i64,
    /// Tasks (rectification, restriction, objection) for the DPO to carry out.
    pub tasks: i64,
}

/// Requests a page of the workspace's queue shows.
pub const PAGE_SIZE: i64 = 50;

/// Which requests the queue shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listing {
    pub status: StatusFilter,
    pub kind: Option<Kind>,
    /// Due on or before this day.
    pub due_by: Option<chrono::NaiveDate>,
    /// From 1.
    pub page: u32,
}

/// The states the queue shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    /// Not ended for good (a failed request is open).
    #[default]
    Open,
    All,
    Is(Status),
}

/// A row of `id, kind, status, received_at, due_at, extended_at` as the DPO lists it;
/// overdue when still open past its due date at `now_s`.
fn admin_view(r: &sqlx::any::AnyRow, now_s: &str) -> Result<AdminView, sqlx::Error> {
    let due: String = r.try_get(4)?;
    let status: String = r.try_get(2)?;
    let extended: Option<String> = r.try_get(5)?;
    Ok(AdminView {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        overdue: due.as_str() < now_s && !status::stored(&status).is_final(),
        status,
        received_at: r.try_get(3)?,
        due_at: due,
        extended: extended.is_some(),
    })
}

/// Requests not ended for good; a failed one stays until the DPO retries, rejects or
/// completes it.
fn open() -> String {
    format!(
        "NOT ({})",
        Status::sql_in("status", Status::ALL.into_iter().filter(|s| s.is_final()))
    )
}

impl Service<'_> {
    /// Open requests, soonest due first; with `due_within`, only those due by then.
    pub async fn list_open(
        &self,
        due_within: Option<chrono::Duration>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AdminView>, RequestError> {
        let until = due_within.map(|d| timestamp(now + d));
        let sql = format!(
            "SELECT id, kind, status, received_at, due_at, extended_at FROM dsr_requests WHERE {} AND (CAST($1 AS TEXT) IS NULL OR due_at <= $1) ORDER BY due_at",
            open()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(until)
            .fetch_all(self.store.pool())
            .await?;
        let now_s = timestamp(now);
        rows.iter()
            .map(|r| admin_view(r, &now_s))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RequestError::from)
    }

    /// Requests in every state, as the workspace's queue lists them: filtered by `which`,
    /// soonest due first, a page of [`PAGE_SIZE`] at a time; with how many match in all.
    /// `overdue` is set on requests still open only.
    pub async fn list(
        &self,
        which: &Listing,
        now: DateTime<Utc>,
    ) -> Result<(Vec<AdminView>, i64), RequestError> {
        let state = match which.status {
            StatusFilter::Open => format!("AND {}", open()),
            StatusFilter::All => String::new(),
            StatusFilter::Is(s) => format!("AND {}", Status::sql_in("status", [s])),
        };
        let filter = format!(
            "FROM dsr_requests WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR due_at <= $2) {state}"
        );
        let kind = which.kind.map(Kind::key);
        let due_by = which.due_by.map(|d| format!("{d}T23:59:59.999999Z"));
        let total: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {filter}")))
                .bind(kind)
                .bind(due_by.clone())
                .fetch_one(self.store.pool())
                .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, kind, status, received_at, due_at, extended_at {filter} ORDER BY due_at, id LIMIT {PAGE_SIZE} OFFSET $3"
        )))
        .bind(kind)
        .bind(due_by)
        .bind(i64::from(which.page.saturating_sub(1)) * PAGE_SIZE)
        .fetch_all(self.store.pool())
        .await?;
        let now_s = timestamp(now);
        let views = rows
            .iter()
            .map(|r| admin_view(r, &now_s))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((views, total))
    }

    /// The open requests counted as the workspace's overview shows them, by the store.
    pub async fn counts(&self, now: DateTime<Utc>) -> Result<QueueCounts, RequestError> {
        let tasks: Vec<String> = Kind::ALL
            .into_iter()
            .filter(|k| is_manual(*k))
            .map(|k| format!("'{}'", k.key()))
            .collect();
        let sql = format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN due_at < $1 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN due_at >= $1 AND due_at <= $2 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN status = 'awaiting_approval' THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN status = 'in_progress' AND kind IN ({}) THEN 1 ELSE 0 END), 0) \
             FROM dsr_requests WHERE {}",
            tasks.join(", "),
            open()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(timestamp(now))
            .bind(timestamp(now + chrono::Duration::days(DUE_SOON_DAYS)))
            .fetch_one(self.store.pool())
            .await?;
        // SUM is an integer on SQLite and a numeric on PostgreSQL: read as text.
        let n = |i: usize| -> Result<i64, RequestError> {
            let v: i64 = match row.try_get::<i64, _>(i) {
                Ok(v) => v,
                Err(_) => row
                    .try_get::<String, _>(i)?
                    .parse()
                    .map_err(|_| RequestError::Store(sqlx::Error::Protocol("a count".into())))?,
            };
            Ok(v)
        };
        Ok(QueueCounts {
            overdue: n(0)?,
            due_soon: n(1)?,
            failed: n(2)?,
            approval: n(3)?,
            tasks: n(4)?,
        })
    }

    /// The open requests that are overdue, failed or due within [`DUE_SOON_DAYS`],
    /// soonest due first, at most `limit`.
    pub async fn urgent(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AdminView>, RequestError> {
        let sql = format!(
            "SELECT id, kind, status, received_at, due_at, extended_at FROM dsr_requests \
             WHERE {} AND (due_at <= $1 OR status = 'failed') ORDER BY due_at, id LIMIT $2",
            open()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(timestamp(now + chrono::Duration::days(DUE_SOON_DAYS)))
            .bind(limit)
            .fetch_all(self.store.pool())
            .await?;
        let now_s = timestamp(now);
        rows.iter()
            .map(|r| admin_view(r, &now_s))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RequestError::from)
    }

    /// Request `id` while it is open; one that ended is `WrongState` for `action`.
    async fn open_request(&self, id: &str, action: &str) -> Result<OpenRequest, RequestError> {
        let r = sqlx::query(
            "SELECT kind, due_at, extended_at, received_at, status FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(RequestError::NotFound)?;
        let status: String = r.try_get(4)?;
        if status::stored(&status).is_final() {
            return Err(RequestError::WrongState {
                status,
                action: action.to_owned(),
            });
        }
        let email = self.personal_of(id).await?.value().to_owned();
        Ok(OpenRequest {
            kind: r.try_get(0)?,
            email,
            due_at: r.try_get(1)?,
            extended_at: r.try_get(2)?,
            received_at: r.try_get(3)?,
        })
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
        let OpenRequest {
            kind,
            email,
            due_at: due,
            extended_at: extended,
            received_at,
        } = self.open_request(id, "extend").await?;
        if extended.is_some() {
            return Err(RequestError::AlreadyExtended);
        }
        let received = crate::policy::parse_timestamp(&received_at).unwrap_or(now);
        // The same month as the first deadline's (Art. 12(3)).
        let last_day = super::due_date(received);
        if now > last_day {
            return Err(RequestError::ExtensionTooLate {
                received: received.format("%Y-%m-%d").to_string(),
                last_day: last_day.format("%Y-%m-%d").to_string(),
            });
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
        // Once: of two extensions at the same moment, the second changes nothing.
        let changed = sqlx::query(
            "UPDATE dsr_requests SET due_at = $1, extended_at = $2, updated_at = $2 WHERE id = $3 AND extended_at IS NULL",
        )
        .bind(&new_due)
        .bind(timestamp(now))
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(RequestError::AlreadyExtended);
        }
        self.seal_reason_in(&mut tx, id, reason).await?;
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
            self.mailer,
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
        let OpenRequest { kind, email, .. } = self.open_request(id, "reject").await?;
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
        let open: Vec<Status> = Status::ALL.into_iter().filter(|s| !s.is_final()).collect();
        let mut m = Move::new(id, &open, Status::Rejected, "reject");
        m.entries = vec![NewEntry::new(actor, "admin.rejected").request(id)];
        m.set.release_claim = true;
        m.mail = Some(Mail {
            kind: "rejection".into(),
            to: email,
            subject: format!("Your request {id}: rejected"),
            text,
            html,
        });
        let mut tx = self.store.begin().await?;
        self.move_in(&mut tx, m, now).await?;
        self.seal_reason_in(&mut tx, id, reason).await?;
        tx.commit().await?;
        let _ = notify::deliver_pending(self.store, self.mailer).await;
        Ok(())
    }

    /// Keeps the DPO's `reason` with the request's identity and details, sealed under the
    /// same key (the person reads it; it may name them), inside the caller's transaction.
    async fn seal_reason_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        reason: &str,
    ) -> Result<(), RequestError> {
        let mut p = self.personal(&mut *tx, id).await?;
        p.reason = Some(reason.to_owned());
        self.reseal(tx, id, &p).await
    }

    /// Changes the status of request `id` from one of `from` to `to`, with its audit entry
    /// and, when `mail` is given, a message to the subject, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        action: &str,
        actor: Actor,
        mail: Option<(&str, String, String)>,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let mut tx = self.store.begin().await?;
        let row = sqlx::query("SELECT status, kind FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RequestError::NotFound)?;
        let (status, kind): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let verb = action.rsplit('.').next().unwrap_or(action);
        let mut m = Move::new(id, from, to, verb);
        m.entries = vec![
            NewEntry::new(actor, action)
                .request(id)
                .summary(serde_json::json!({ "type": kind, "from": status, "to": to.key() })),
        ];
        // A retry starts afresh: its attempts and backoff are counted again, and no
        // worker holds it.
        if status::stored(&status) == Status::Failed {
            m.set.release_claim = true;
            if to == Status::Verified {
                m.set.attempts = Some(0);
            }
        }
        if to == Status::Verified {
            m.set.next_attempt_at = Some(None);
        }
        if let Some((mkind, text, html)) = mail {
            let email = self.personal(&mut tx, id).await?.value().to_owned();
            m.mail = Some(Mail {
                kind: mkind.to_owned(),
                to: email,
                subject: format!("Your request {id}: {}", to.words()),
                text,
                html,
            });
        }
        self.move_in(&mut tx, m, now).await?;
        if let Some(note) = note {
            // The person reads it on the status page too.
            self.seal_reason_in(&mut tx, id, note).await?;
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
            &[Status::AwaitingApproval],
            Status::Verified,
            "admin.approved",
            actor,
            None,
            None,
            now,
        )
        .await
    }

    /// The DPO completes a task (rectification, restriction, objection), or a failed
    /// request they have carried out by hand, telling the subject what was done.
    pub async fn complete_task(
        &self,
        id: &str,
        note: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT kind, status FROM dsr_requests WHERE id = $1 AND claimed_by IS NULL",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let Some((kind, status)) = row else {
            return Err(RequestError::NotATask);
        };
        let failed = status::stored(&status) == Status::Failed;
        if !failed && !Kind::parse(&kind).is_some_and(is_manual) {
            return Err(RequestError::NotATask);
        }
        let text = format!("We have handled your request {id}: {note}\n");
        let html = format!(
            "<p>We have handled your request <code>{id}</code>: {}</p>",
            notify::html_escape(note)
        );
        self.transition(
            id,
            &[Status::InProgress, Status::Failed],
            Status::Completed,
            "admin.completed",
            actor,
            Some(("request_completed", text, html)),
            Some(note),
            now,
        )
        .await
    }

    /// Lifts a restriction (Art. 18(3)): the person is told first. The lift is announced
    /// with a message and takes effect once that message has been sent (at once when the
    /// mail server takes it; else when a later delivery does, see [`Self::complete_lifts`]);
    /// then the erasures that waited for it run.
    pub async fn lift_restriction(
        &self,
        id: &str,
        reason: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        let mut tx = self.store.begin().await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT request_id FROM subject_restrictions WHERE request_id = $1 AND lifted_at IS NULL AND lift_announced_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if open.is_none() {
            return Err(RequestError::NotFound);
        }
        let email = self.personal(&mut tx, id).await?.value().to_owned();
        let text = format!(
            "We are lifting the restriction of processing you asked for in request {id}: {reason}\n\nWe tell you before it ends (Art. 18(3) GDPR). From now on your data is processed again under our privacy notice, and any erasure you asked for meanwhile runs.\n"
        );
        let html = format!(
            "<p>We are lifting the restriction of processing you asked for in request <code>{id}</code>: {}</p><p>We tell you before it ends (Art. 18(3) GDPR). From now on your data is processed again under our privacy notice, and any erasure you asked for meanwhile runs.</p>",
            notify::html_escape(reason)
        );
        let mail = notify::enqueue_in(
            &mut tx,
            self.mailer,
            &Mail {
                kind: "restriction_lifted".into(),
                to: email,
                subject: format!("Your request {id}: restriction lifted"),
                text,
                html,
            },
        )
        .await?;
        let changed = sqlx::query(
            "UPDATE subject_restrictions SET lift_announced_at = $1, lift_mail_id = $2 \
             WHERE request_id = $3 AND lifted_at IS NULL AND lift_announced_at IS NULL",
        )
        .bind(timestamp(now))
        .bind(mail)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            return Err(RequestError::NotFound);
        }
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(actor, "restriction.lift_announced").request(id)],
            )
            .await?;
        tx.commit().await?;
        self.deliver().await;
        self.complete_lifts(now).await?;
        Ok(())
    }

    /// Ends every restriction whose announced lift has reached the person (its message
    /// sent), and sends the erasures that waited for it back to the queue. Returns how
    /// many restrictions ended.
    pub async fn complete_lifts(&self, now: DateTime<Utc>) -> Result<u64, RequestError> {
        let told: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.request_id, m.sent_at FROM subject_restrictions r JOIN mail_outbox m ON m.id = r.lift_mail_id \
             WHERE r.lifted_at IS NULL AND r.lift_announced_at IS NOT NULL AND m.sent_at IS NOT NULL",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut ended = 0;
        for (rid, sent) in told {
            // Never before the person was told.
            let lifted = timestamp(now).max(sent);
            let mut tx = self.store.begin().await?;
            let changed = sqlx::query(
                "UPDATE subject_restrictions SET lifted_at = $1 WHERE request_id = $2 AND lifted_at IS NULL",
            )
            .bind(&lifted)
            .bind(&rid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed != 1 {
                continue;
            }
            // The person's erasures held for a restriction: checked again when they run.
            let waiting: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM dsr_requests WHERE status = 'awaiting_approval' AND kind = 'erasure' \
                 AND result LIKE '%\"waiting_for\":\"restriction\"%' \
                 AND identity_lookup = (SELECT identity_lookup FROM dsr_requests WHERE id = $1)",
            )
            .bind(&rid)
            .fetch_all(&mut *tx)
            .await?;
            self.audit
                .append_in(
                    &mut tx,
                    &[NewEntry::new(Actor::System, "restriction.lifted").request(&rid)],
                )
                .await?;
            for w in &waiting {
                let mut m = Move::new(w, &[Status::AwaitingApproval], Status::Verified, "resume");
                m.entries = vec![
                    NewEntry::new(Actor::System, "request.resumed")
                        .request(w)
                        .summary(serde_json::json!({ "after_lift_of": rid })),
                ];
                m.set.result = Some(None);
                m.set.next_attempt_at = Some(None);
                self.move_in(&mut tx, m, now).await?;
            }
            tx.commit().await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// The DPO runs a failed request again, with its attempts counted afresh.
    pub async fn retry(
        &self,
        id: &str,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        self.transition(
            id,
            &[Status::Failed],
            Status::Verified,
            "admin.retried",
            actor,
            None,
            None,
            now,
        )
        .await
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
                Status::Received,
                Status::IdentityPending,
                Status::Verified,
                Status::AwaitingApproval,
            ],
            Status::Cancelled,
            "request.cancelled",
            actor,
            None,
            None,
            now,
        )
        .await
    }

    /// The subject withdraws their request: the token proves it is theirs.
    pub async fn withdraw(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RequestError> {
        self.status(id, token).await?;
        self.cancel(id, Actor::Subject, now).await
    }

    /// Everything about a request, for the DPO: the person, the details, the outcome.
    pub async fn full(&self, id: &str) -> Result<Full, RequestError> {
        let r = sqlx::query(
            "SELECT id, kind, status, received_at, due_at, result, extended_at, reason, attempts, channel, external_id FROM dsr_requests WHERE id = $1",
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
        let result: Option<String> = r.try_get(5)?;
        // After an erasure the person's key is gone: the request says so instead.
        let (identity, details, reason) = match self.personal_of(id).await {
            Ok(p) => (p.identity, p.details, p.reason),
            Err(RequestError::Erased) => ("(erased)".to_owned(), None, None),
            Err(e) => return Err(e),
        };
        // A reason an earlier version kept in clear, until `serve` seals it.
        let reason = reason.or(r.try_get(7)?);
        Ok(Full {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            status: r.try_get(2)?,
            received_at: r.try_get(3)?,
            due_at: r.try_get(4)?,
            identity,
            details,
            result: result.and_then(|s| serde_json::from_str(&s).ok()),
            extended_at: r.try_get(6)?,
            reason,
            attempts: r.try_get(8)?,
            channel: r.try_get(9)?,
            external_id: r.try_get(10)?,
            restriction_in_force: restricted.is_some(),
        })
    }
}

/// A request with everything the DPO needs to act on it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Full {
    pub id: String,
    #[serde(rename = "type")]
    #[schemars(schema_with = "kind_schema")]
    pub kind: String,
    #[schemars(schema_with = "status_schema")]
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

/// An open request as the DPO's actions need it.
struct OpenRequest {
    kind: String,
    /// The person's address, unsealed.
    email: String,
    due_at: String,
    extended_at: Option<String>,
    received_at: String,
}
