//! Signed webhooks: processor erasure notices (Art. 19) and OpenDSR status callbacks.
//! Like mail, each is written to the store's outbox in the transaction of the change it
//! announces, then POSTed until the receiver answers 2xx, with exponential back-off.
//!
//! Erasure notices carry `X-Lethe-Timestamp` and `X-Lethe-Signature: sha256=<hex>`, the
//! HMAC-SHA-256 of `<timestamp>.<body>` under the webhook secret (`lethe admin
//! webhook-secret` prints it for the receiver). OpenDSR callbacks carry
//! `X-OpenDSR-Processor-Domain` and `X-OpenDSR-Signature`, the base64 Ed25519 signature of
//! the body, checkable with the key served at `/opendsr/v1/public-key`.
//! Once delivered, the body (which names the person) is dropped from the outbox.

use base64::Engine;
use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use crate::crypto::Signer;
use crate::store::{Store, timestamp};

/// How a webhook is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Hmac,
    Ed25519,
}

impl Signing {
    fn key(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// A webhook to deliver.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `erasure_notice` or `opendsr_callback`.
    pub kind: String,
    pub request_id: Option<String>,
    /// Who receives it: a processor id, or `controller` for OpenDSR callbacks.
    pub target: String,
    pub url: String,
    pub body: serde_json::Value,
    pub signing: Signing,
}

/// The keys webhooks are signed with.
pub struct Signers {
    pub hmac: ring::hmac::Key,
    pub ed25519: Option<Signer>,
    /// The domain named in `X-OpenDSR-Processor-Domain`.
    pub domain: String,
}

/// The host named as the OpenDSR processor domain: the public URL's, else the bind address.
pub fn domain(public_url: Option<&str>, bind: &str) -> String {
    public_url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| bind.rsplit_once(':').map_or(bind, |(h, _)| h).to_owned())
}

/// The longest wait between two attempts.
const MAX_BACKOFF_SECONDS: i64 = 6 * 3600;
/// A claim left by a crashed sender lapses after this long.
const CLAIM_MINUTES: i64 = 5;

/// The wait before attempt `attempts + 1`: 30 s, 1 min, 2 min, ... up to six hours.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let secs = 30i64.saturating_mul(1i64 << attempts.clamp(0, 20));
    chrono::Duration::seconds(secs.min(MAX_BACKOFF_SECONDS))
}

/// Queues a webhook inside the caller's transaction.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    w: &Webhook,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_outbox (kind, request_id, target, url, body, signing, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&w.kind)
    .bind(&w.request_id)
    .bind(&w.target)
    .bind(&w.url)
    .bind(w.body.to_string())
    .bind(w.signing.key())
    .bind(timestamp(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The HMAC signature header value of `body` sent at `ts` (unix seconds).
pub fn hmac_signature(key: &ring::hmac::Key, ts: i64, body: &[u8]) -> String {
    let mut msg = format!("{ts}.").into_bytes();
    msg.extend_from_slice(body);
    format!(
        "sha256={}",
        hex::encode(crate::crypto::hmac_sha256(key, &msg))
    )
}

/// Checks an `X-Lethe-Signature` header as a receiver would.
pub fn verify_hmac(secret_hex: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let (Ok(secret), Ok(ts)) = (hex::decode(secret_hex), ts.parse::<i64>()) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let expected = hmac_signature(&key, ts, body);
    crate::crypto::constant_time_eq(expected.as_bytes(), header.as_bytes())
}

/// POSTs every webhook that is due, once each; returns how many were acknowledged.
/// A failure (no answer, or not 2xx) is recorded with its status and retried after
/// [`backoff`]; several senders never deliver the same webhook at once.
pub async fn deliver_due(
    store: &Store,
    client: &reqwest::Client,
    signers: &Signers,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, kind, url, body, signing, attempts FROM webhook_outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT 100",
    )
    .bind(timestamp(now))
    .fetch_all(store.pool())
    .await?;
    let mut delivered = 0;
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let claimed = sqlx::query(
            "UPDATE webhook_outbox SET claimed_at = $1 WHERE id = $2 AND delivered_at IS NULL AND (claimed_at IS NULL OR claimed_at < $3)",
        )
        .bind(timestamp(now))
        .bind(id)
        .bind(timestamp(now - chrono::Duration::minutes(CLAIM_MINUTES)))
        .execute(store.pool())
        .await?
        .rows_affected();
        if claimed != 1 {
            continue;
        }
        let (kind, url, body, signing, attempts): (String, String, Option<String>, String, i64) = (
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
        );
        let body = body.unwrap_or_default();
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(std::time::Duration::from_secs(10));
        if signing == Signing::Ed25519.key() {
            if let Some(s) = &signers.ed25519 {
                let sig = base64::engine::general_purpose::STANDARD.encode(s.sign(body.as_bytes()));
                req = req
                    .header("X-OpenDSR-Processor-Domain", &signers.domain)
                    .header("X-OpenDSR-Signature", sig);
            }
        } else {
            let ts = Utc::now().timestamp();
            req = req.header("X-Lethe-Timestamp", ts.to_string()).header(
                "X-Lethe-Signature",
                hmac_signature(&signers.hmac, ts, body.as_bytes()),
            );
        }
        let outcome = req.body(body).send().await;
        let status = match &outcome {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "unreachable".to_owned(),
        };
        if outcome.is_ok_and(|resp| resp.status().is_success()) {
            sqlx::query("UPDATE webhook_outbox SET delivered_at = $1, attempts = attempts + 1, last_status = $2, body = NULL, claimed_at = NULL WHERE id = $3")
                .bind(timestamp(Utc::now()))
                .bind(&status)
                .bind(id)
                .execute(store.pool())
                .await?;
            tracing::info!(webhook_id = id, kind = %kind, "webhook acknowledged");
            delivered += 1;
        } else {
            let next = now + backoff(attempts);
            sqlx::query("UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $1, next_attempt_at = $2, claimed_at = NULL WHERE id = $3")
                .bind(&status)
                .bind(timestamp(next))
                .bind(id)
                .execute(store.pool())
                .await?;
            tracing::warn!(webhook_id = id, kind = %kind, status = %status, retry_at = %timestamp(next), "webhook not acknowledged; retried later");
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_six_hours() {
        assert_eq!(backoff(0).num_seconds(), 30);
        assert_eq!(backoff(1).num_seconds(), 60);
        assert_eq!(backoff(5).num_seconds(), 960);
        assert_eq!(backoff(40).num_seconds(), MAX_BACKOFF_SECONDS);
    }

    #[test]
    fn a_receiver_checks_the_signature_with_the_secret() {
        let secret = [7u8; 32];
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let sig = hmac_signature(&key, 1_700_000_000, b"{\"a\":1}");
        assert!(verify_hmac(
            &hex::encode(secret),
            "1700000000",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_hmac(
            &hex::encode(secret),
            "1700000001",
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_hmac(
            &hex::encode(secret),
            "1700000000",
            b"{\"a\":2}",
            &sig
        ));
    }
}
