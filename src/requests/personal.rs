//! What a request says about its person (the identity, the free-text details) is sealed:
//! under a key of the request's own until the identity is verified, then under the data
//! subject's audit key, so that the crypto-shredding at the end of an erasure makes it
//! unreadable. An unverified request creates no subject and no lasting key: its own key
//! goes with it. Lookups by person use keyed hashes, never the identity in clear.

use super::*;

/// The personal part of a request, as sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Personal {
    /// `kind=value`, as [`Identity::parse`] reads it.
    pub identity: String,
    #[serde(default)]
    pub details: Option<String>,
    /// The DPO's reason for an extension or a rejection, which the person reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Personal {
    pub fn new(identity: &Identity, details: Option<&str>) -> Self {
        Self {
            identity: format!("{}={}", identity.kind(), identity.value()),
            details: details.map(str::to_owned),
            reason: None,
        }
    }

    pub fn identity(&self) -> Result<Identity, RequestError> {
        Identity::parse(&self.identity).map_err(|_| RequestError::Erased)
    }

    /// The address (or other identifier) the request was made with.
    pub fn value(&self) -> &str {
        self.identity.split_once('=').map_or("", |(_, v)| v)
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The keyed hash requests of one person share (never the identity in clear).
pub(super) fn lookup(audit: &AuditLog, identity: &Identity) -> String {
    audit.mask_hash(&format!(
        "request-identity:{}={}",
        identity.kind(),
        identity.value()
    ))
}

impl Service<'_> {
    /// Seals for a request not verified yet: `(sealed, own key wrapped)`.
    pub(super) fn seal_own(
        &self,
        id: &str,
        p: &Personal,
    ) -> Result<(Vec<u8>, Vec<u8>), RequestError> {
        Ok(self.audit.seal_with_own_key(id, &p.bytes())?)
    }

    /// Seals under the subject's key, inside the caller's transaction.
    pub(super) async fn seal_for(
        &self,
        conn: &mut sqlx::AnyConnection,
        label: &str,
        subject: &SubjectId,
        p: &Personal,
    ) -> Result<Vec<u8>, RequestError> {
        Ok(self
            .audit
            .seal_for_subject(conn, subject, label, &p.bytes())
            .await?)
    }

    /// The personal part of request `id`; [`RequestError::Erased`] once its subject was
    /// shredded. Rows written before sealing are read in clear.
    pub(super) async fn personal(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Personal, RequestError> {
        let r = sqlx::query(
            "SELECT sealed, sealed_by, own_key, identity_kind, identity_value, details FROM dsr_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(RequestError::NotFound)?;
        let (sealed, by, own): (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let plain = match (sealed, by, own) {
            (Some(sealed), Some(subject), _) => self
                .audit
                .open_for_subject_in(&mut *conn, &subject, id, &sealed)
                .await?
                .ok_or(RequestError::Erased)?,
            (Some(sealed), None, Some(own)) => self.audit.open_with_own_key(id, &own, &sealed)?,
            (Some(_), None, None) => return Err(RequestError::Erased),
            (None, _, _) => {
                let (kind, value): (String, String) = (r.try_get(3)?, r.try_get(4)?);
                if value.is_empty() {
                    return Err(RequestError::Erased);
                }
                return Ok(Personal {
                    identity: format!("{kind}={value}"),
                    details: r.try_get(5)?,
                    reason: None,
                });
            }
        };
        serde_json::from_slice(&plain).map_err(|_| RequestError::Erased)
    }

    /// Seals `p` again for request `id`, under the key its personal part is sealed with
    /// (the subject's, else a new key of the request's own), inside the caller's
    /// transaction; a request an earlier version kept in clear is sealed under its
    /// subject's key from now on. The clear `reason` column is emptied.
    pub(super) async fn reseal(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        p: &Personal,
    ) -> Result<(), RequestError> {
        let r = sqlx::query("SELECT sealed_by, own_key, sealed FROM dsr_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(RequestError::NotFound)?;
        let (by, own, sealed): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let (sealed, own_key, by) = match (by, own, sealed) {
            (Some(subject), _, _) => {
                let subject = SubjectId(subject);
                (self.seal_for(conn, id, &subject, p).await?, None, subject)
            }
            (None, Some(_), _) => {
                let (sealed, own) = self.seal_own(id, p)?;
                sqlx::query("UPDATE dsr_requests SET sealed = $1, own_key = $2, reason = NULL WHERE id = $3")
                    .bind(sealed)
                    .bind(own)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            (None, None, Some(_)) => return Err(RequestError::Erased),
            (None, None, None) => {
                let subject = self.audit.subject_in(&mut *conn, &p.identity()?).await?;
                (
                    self.seal_for(conn, id, &subject, p).await?,
                    None::<Vec<u8>>,
                    subject,
                )
            }
        };
        sqlx::query("UPDATE dsr_requests SET sealed = $1, sealed_by = $2, own_key = $3, identity_value = '', details = NULL, reason = NULL WHERE id = $4")
            .bind(sealed)
            .bind(by.as_str())
            .bind(own_key)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Moves the DPO's reasons an earlier version stored in clear (`dsr_requests.reason`)
    /// into the sealed part of their requests, once (`lethe serve` calls it when it
    /// starts; a second call finds nothing); how many were sealed. The reason of a
    /// request whose person was erased is dropped with the rest of them.
    pub async fn seal_clear_reasons(&self) -> Result<usize, RequestError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM dsr_requests WHERE reason IS NOT NULL ORDER BY id")
                .fetch_all(self.store.pool())
                .await?;
        let mut sealed = 0;
        for id in ids {
            let mut tx = self.store.begin().await?;
            let reason: Option<String> =
                sqlx::query_scalar("SELECT reason FROM dsr_requests WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            let Some(reason) = reason else { continue };
            match self.personal(&mut tx, &id).await {
                Ok(mut p) => {
                    p.reason = Some(reason);
                    self.reseal(&mut tx, &id, &p).await?;
                    sealed += 1;
                }
                Err(RequestError::Erased) => {
                    sqlx::query("UPDATE dsr_requests SET reason = NULL WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
                Err(e) => return Err(e),
            }
            tx.commit().await?;
        }
        Ok(sealed)
    }

    /// [`Service::personal`] outside a transaction.
    pub(super) async fn personal_of(&self, id: &str) -> Result<Personal, RequestError> {
        let mut conn = self.store.pool().acquire().await?;
        self.personal(&mut conn, id).await
    }
}
