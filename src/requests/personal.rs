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
}

impl Personal {
    pub fn new(identity: &Identity, details: Option<&str>) -> Self {
        Self {
            identity: format!("{}={}", identity.kind(), identity.value()),
            details: details.map(str::to_owned),
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
                .open_for_subject(&subject, id, &sealed)
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
                });
            }
        };
        serde_json::from_slice(&plain).map_err(|_| RequestError::Erased)
    }

    /// [`Service::personal`] outside a transaction.
    pub(super) async fn personal_of(&self, id: &str) -> Result<Personal, RequestError> {
        let mut conn = self.store.pool().acquire().await?;
        self.personal(&mut conn, id).await
    }
}
