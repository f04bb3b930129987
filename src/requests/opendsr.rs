//! Requests handed over by a controller system over OpenDSR, and the status callbacks
//! they ask for.

use super::transition::Move;
use super::*;

/// The OpenDSR API version spoken.
pub const OPENDSR_API_VERSION: &str = "2.0";

/// The OpenDSR status of a lethe status (see [`Status::opendsr`]).
pub fn opendsr_status(status: &str) -> &'static str {
    status::stored(status).opendsr()
}

impl Service<'_> {
    /// Queues the OpenDSR status callbacks of request `id`, if it came with any.
    pub(super) async fn callbacks_in(
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
                "lethe_status": status,
                "api_version": OPENDSR_API_VERSION,
            });
            notify::webhook::enqueue_in(
                &mut *tx,
                &self.audit.outbox_key(),
                &notify::webhook::Webhook {
                    kind: notify::webhook::Kind::OpendsrCallback,
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
        let lookup = personal::lookup(self.audit, identity);
        let mut tx = self.store.begin().await?;
        self.audit
            .append_in(
                &mut tx,
                &[NewEntry::new(Actor::Admin(channel.to_owned()), "request.submitted")
                    .request(&id)
                    .summary(serde_json::json!({ "type": kind.key(), "due_at": due, "channel": "opendsr" }))],
            )
            .await?;
        // Only a hash of a random token: the request is read with an admin token instead.
        let token = crate::crypto::random_hex(32).map_err(AuditError::from)?;
        sqlx::query(
            "INSERT INTO dsr_requests (id, kind, status, identity_kind, identity_value, identity_lookup, token_hash, received_at, due_at, updated_at, channel, external_id, callbacks) \
             VALUES ($1, $2, 'received', $3, '', $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(kind.key())
        .bind(identity.kind())
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
        // The controller vouches for the identity: sealed under the subject's key at once.
        let next = self
            .accept_in(
                &mut tx,
                &id,
                kind,
                &Personal::new(identity, None),
                &due,
                Actor::Admin(channel.to_owned()),
                now,
            )
            .await?;
        self.move_in(
            &mut tx,
            Move::new(&id, &[Status::Received], next, "accept"),
            now,
        )
        .await?;
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
}
