//! Signed webhooks: processor erasure notices (Art. 19) and OpenDSR status callbacks.
//! Like mail, each is written to the store's outbox in the transaction of the change it
//! announces; a task of its own ([`spawn`]) then POSTs it, a few at a time, each attempt
//! bounded by the connect and request timeouts, until the receiver answers 2xx. Failures
//! are retried with exponential back-off; a webhook still not acknowledged after
//! `give_up_hours` is marked failed for the DPO to see and re-queue. Request execution
//! never waits for a receiver.
//!
//! Targets are held to [`super::target::Rules`]: https only (http for listed hosts), no
//! internal addresses, checked after resolution, no redirects.
//!
//! Every delivery carries `Idempotency-Key`, the same on each attempt of one webhook: a
//! receiver sees one twice only if lethe stopped between its 2xx and lethe's record of it.
//! Erasure notices carry `X-Lethe-Timestamp` and `X-Lethe-Signature: sha256=<hex>`, the
//! HMAC-SHA-256 of `<timestamp>.<body>` under the receiving processor's own secret
//! (`lethe admin webhook-secret --processor ID` prints it). OpenDSR callbacks carry
//! `X-OpenDSR-Processor-Domain` and `X-OpenDSR-Signature`, the base64 Ed25519 signature of
//! the body, checkable with the key served at `/opendsr/v1/public-key`.
//! A queued body (an erasure notice names the person) rests sealed under the outbox key,
//! bound to its delivery id, and is opened only to send; once delivered it is dropped.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use super::target::{Lookup, Rules, SystemLookup, TargetError};
use crate::audit::AuditLog;
use crate::config::WebhookConfig;
use crate::crypto::{SealingKey, Signer};
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

/// What a webhook announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An erasure, to a processor (Art. 19).
    ErasureNotice,
    /// A status change, to the controller system that handed the request over.
    OpendsrCallback,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Self::ErasureNotice => "erasure_notice",
            Self::OpendsrCallback => "opendsr_callback",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::ErasureNotice, Self::OpendsrCallback]
            .into_iter()
            .find(|k| k.key() == s)
    }
}

/// A webhook to deliver.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub kind: Kind,
    pub request_id: Option<String>,
    /// Who receives it: a processor id, or `controller` for OpenDSR callbacks.
    pub target: String,
    pub url: String,
    pub body: serde_json::Value,
    pub signing: Signing,
}

/// The keys webhooks are signed with.
pub struct Signers {
    /// Holds each processor's HMAC secret.
    pub audit: AuditLog,
    pub ed25519: Option<Arc<Signer>>,
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

/// The wait before attempt `attempts + 1`: 30 s, 1 min, 2 min, ... up to six hours.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let secs = 30i64.saturating_mul(1i64 << attempts.clamp(0, 20));
    chrono::Duration::seconds(secs.min(MAX_BACKOFF_SECONDS))
}

/// How webhooks go out: the target rules, the client bound to them, the signing keys,
/// how many at once and for how long.
pub struct Delivery {
    rules: Arc<Rules>,
    client: reqwest::Client,
    signers: Signers,
    concurrency: usize,
    give_up: chrono::Duration,
}

impl Delivery {
    /// Delivery as configured by `[webhooks]`, resolving names with the system resolver.
    pub fn from_config(config: &WebhookConfig, signers: Signers) -> anyhow::Result<Self> {
        Self::with_lookup(config, signers, Arc::new(SystemLookup))
    }

    /// Delivery resolving names with `lookup` (a stub in tests).
    pub fn with_lookup(
        config: &WebhookConfig,
        signers: Signers,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Self> {
        if !(1..=64).contains(&config.concurrency) {
            anyhow::bail!("configuration error: webhooks.concurrency must be 1 to 64");
        }
        if !(1..=24 * 365).contains(&config.give_up_hours) {
            anyhow::bail!("configuration error: webhooks.give_up_hours must be 1 to 8760");
        }
        let rules = Arc::new(Rules::from_config(config)?);
        Ok(Self {
            client: rules.client(lookup)?,
            rules,
            signers,
            concurrency: config.concurrency,
            give_up: chrono::Duration::hours(config.give_up_hours as i64),
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// A claim outlives any attempt; a claim older than this was left by a crashed sender.
    fn claim_lapse(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.rules.timeout + self.rules.connect_timeout)
            .unwrap_or_else(|_| chrono::Duration::minutes(5))
            + chrono::Duration::seconds(60)
    }
}

/// Bound to every sealed body, with the webhook's delivery id.
const WEBHOOK_AAD: &str = "lethe webhook outbox v1:";

fn seal_body(key: &SealingKey, delivery_id: &str, body: &str) -> Result<Vec<u8>, sqlx::Error> {
    key.seal(
        body.as_bytes(),
        format!("{WEBHOOK_AAD}{delivery_id}").as_bytes(),
    )
    .map_err(|e| sqlx::Error::Protocol(format!("sealing a webhook: {e}")))
}

fn open_body(key: &SealingKey, delivery_id: &str, sealed: &[u8]) -> Result<String, sqlx::Error> {
    let plain = key
        .open(sealed, format!("{WEBHOOK_AAD}{delivery_id}").as_bytes())
        .map_err(|e| sqlx::Error::Protocol(format!("a queued webhook cannot be opened: {e}")))?;
    String::from_utf8(plain)
        .map_err(|_| sqlx::Error::Protocol("a queued webhook is not text".into()))
}

/// Queues a webhook inside the caller's transaction, its body sealed under `key` (the
/// audit log's outbox key).
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    key: &SealingKey,
    w: &Webhook,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let delivery_id = crate::crypto::random_hex(16)
        .map(|h| format!("wh_{h}"))
        .map_err(|e| sqlx::Error::Protocol(format!("delivery id: {e}")))?;
    sqlx::query(
        "INSERT INTO webhook_outbox (kind, request_id, target, url, body, sealed, signing, next_attempt_at, created_at, delivery_id) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $7, $8)",
    )
    .bind(w.kind.key())
    .bind(&w.request_id)
    .bind(&w.target)
    .bind(&w.url)
    .bind(seal_body(key, &delivery_id, &w.body.to_string())?)
    .bind(w.signing.key())
    .bind(timestamp(now))
    .bind(&delivery_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Seals the bodies an earlier version queued in clear, once (`lethe serve` calls it when
/// it starts; a second call finds nothing); how many were sealed. A row without a
/// delivery id gets the one it was sent with (`wh_<id>`).
pub async fn seal_clear_bodies(store: &Store, key: &SealingKey) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, body, delivery_id FROM webhook_outbox WHERE body IS NOT NULL AND sealed IS NULL",
    )
    .fetch_all(store.pool())
    .await?;
    let mut sealed = 0;
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let body: String = r.try_get(1)?;
        let delivery_id = r
            .try_get::<Option<String>, _>(2)?
            .unwrap_or_else(|| format!("wh_{id}"));
        let n = sqlx::query(
            "UPDATE webhook_outbox SET sealed = $1, body = NULL, delivery_id = $2 WHERE id = $3 AND body IS NOT NULL AND sealed IS NULL",
        )
        .bind(seal_body(key, &delivery_id, &body)?)
        .bind(&delivery_id)
        .bind(id)
        .execute(store.pool())
        .await?
        .rows_affected();
        sealed += n as usize;
    }
    Ok(sealed)
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

/// A claimed webhook.
struct Claimed {
    id: i64,
    kind: String,
    target: String,
    url: String,
    body: String,
    signing: String,
    attempts: i64,
    /// When its time window began: queued, or re-queued by the DPO.
    since: String,
    delivery_id: String,
}

/// How one attempt ended.
enum Attempt {
    Acknowledged(String),
    /// Worth another try later (no answer, not 2xx, a redirect, a refused address).
    Failed(String),
    /// Can never succeed: the URL itself is refused.
    Refused(String),
}

/// What a round of delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
}

/// POSTs every webhook that is due, at most `concurrency` at once; a slow receiver holds
/// one slot, the others go on. Each failure is recorded (its status, never the body) and
/// retried after [`backoff`], or marked failed when its time is up; several senders never
/// deliver the same webhook at once.
pub async fn deliver_due(store: &Store, delivery: &Arc<Delivery>) -> Result<Round, sqlx::Error> {
    deliver_with_clock(store, delivery, Utc::now).await
}

/// [`deliver_due`] as of `now`.
pub async fn deliver_due_at(
    store: &Store,
    delivery: &Arc<Delivery>,
    now: DateTime<Utc>,
) -> Result<Round, sqlx::Error> {
    deliver_with_clock(store, delivery, move || now).await
}

async fn deliver_with_clock(
    store: &Store,
    delivery: &Arc<Delivery>,
    clock: impl Fn() -> DateTime<Utc>,
) -> Result<Round, sqlx::Error> {
    let mut round = Round::default();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < delivery.concurrency {
            let now = clock();
            let Some(job) = claim_one(store, delivery, now).await? else {
                break;
            };
            let (store, delivery) = (store.clone(), delivery.clone());
            running.spawn(async move {
                let attempt = send(&delivery, &job).await;
                record(&store, &delivery, &job, attempt, now).await
            });
        }
        match running.join_next().await {
            None => return Ok(round),
            Some(Ok(Ok(Attempt::Acknowledged(_)))) => round.delivered += 1,
            Some(Ok(Ok(Attempt::Failed(_)))) => round.retried += 1,
            Some(Ok(Ok(Attempt::Refused(_)))) => round.failed += 1,
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(sqlx::Error::Protocol(format!("webhook sender: {e}"))),
        }
    }
}

/// Claims the oldest due webhook, if any, in one statement.
async fn claim_one(
    store: &Store,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, sqlx::Error> {
    // A claim lapses with its sender's lease; one of a sender that is not an instance,
    // once any attempt would have ended.
    let free = format!(
        "delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 AND {}",
        crate::store::lease::lapsed("claimed_by", "claimed_at", 3, 2)
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_outbox SET claimed_at = $1, claimed_by = $4 WHERE id = (SELECT id FROM webhook_outbox WHERE {free} ORDER BY next_attempt_at, id LIMIT 1) AND {free} \
         RETURNING id, kind, target, url, body, signing, attempts, COALESCE(requeued_at, created_at), delivery_id, sealed"
    )))
    .bind(timestamp(now))
    .bind(timestamp(now - delivery.claim_lapse()))
    .bind(crate::store::lease::lease_cutoff(now))
    .bind(&crate::store::lease::this().id)
    .fetch_optional(store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    let id: i64 = r.try_get(0)?;
    let delivery_id = r
        .try_get::<Option<String>, _>(8)?
        .unwrap_or_else(|| format!("wh_{id}"));
    // Opened only now, to send; a body an earlier version left in clear is read as is.
    let body = match r.try_get::<Option<Vec<u8>>, _>(9)? {
        Some(sealed) => open_body(&delivery.signers.audit.outbox_key(), &delivery_id, &sealed)?,
        None => r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
    };
    Ok(Some(Claimed {
        id,
        kind: r.try_get(1)?,
        target: r.try_get(2)?,
        url: r.try_get(3)?,
        body,
        signing: r.try_get(5)?,
        attempts: r.try_get(6)?,
        since: r.try_get(7)?,
        delivery_id,
    }))
}

/// One attempt: checks the URL, signs, POSTs; follows no redirect.
async fn send(delivery: &Delivery, job: &Claimed) -> Attempt {
    if let Err(e) = delivery.rules.check_url(&job.url) {
        return Attempt::Refused(refusal(&e));
    }
    let body = job.body.clone();
    let mut req = delivery
        .client
        .post(&job.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &job.delivery_id);
    let signers = &delivery.signers;
    if job.signing == Signing::Ed25519.key() {
        if let Some(s) = &signers.ed25519 {
            let sig = base64::engine::general_purpose::STANDARD.encode(s.sign(body.as_bytes()));
            req = req
                .header("X-OpenDSR-Processor-Domain", &signers.domain)
                .header("X-OpenDSR-Signature", sig);
        }
    } else {
        let secret = match signers.audit.webhook_secret(&job.target).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(webhook_id = job.id, error = %e, "no webhook secret");
                return Attempt::Failed("no signing secret".into());
            }
        };
        let ts = Utc::now().timestamp();
        req = req.header("X-Lethe-Timestamp", ts.to_string()).header(
            "X-Lethe-Signature",
            hmac_signature(&secret.hmac(), ts, body.as_bytes()),
        );
    }
    match req.body(body).send().await {
        Ok(resp) if resp.status().is_success() => {
            Attempt::Acknowledged(resp.status().as_u16().to_string())
        }
        Ok(resp) if resp.status().is_redirection() => Attempt::Failed(format!(
            "{} (redirects are not followed)",
            resp.status().as_u16()
        )),
        Ok(resp) => Attempt::Failed(resp.status().as_u16().to_string()),
        Err(e) if super::target::is_refused(&e) => {
            Attempt::Failed("refused: the host resolves to no address lethe may call".into())
        }
        Err(e) if e.is_timeout() => Attempt::Failed("timeout".into()),
        Err(_) => Attempt::Failed("unreachable".into()),
    }
}

fn refusal(e: &TargetError) -> String {
    format!("refused: {e}")
}

/// Records how an attempt ended and releases the claim.
async fn record(
    store: &Store,
    delivery: &Delivery,
    job: &Claimed,
    attempt: Attempt,
    now: DateTime<Utc>,
) -> Result<Attempt, sqlx::Error> {
    let kind = Kind::parse(&job.kind).map_or("webhook", Kind::key);
    match &attempt {
        Attempt::Acknowledged(status) => {
            sqlx::query("UPDATE webhook_outbox SET delivered_at = $1, attempts = attempts + 1, last_status = $2, body = NULL, sealed = NULL, claimed_at = NULL, claimed_by = NULL WHERE id = $3")
                .bind(timestamp(now))
                .bind(status)
                .bind(job.id)
                .execute(store.pool())
                .await?;
            tracing::info!(webhook_id = job.id, kind, target = %job.target, "webhook acknowledged");
        }
        Attempt::Failed(status) | Attempt::Refused(status) => {
            let deadline = DateTime::parse_from_rfc3339(&job.since)
                .map_or(now, |t| t.with_timezone(&Utc) + delivery.give_up);
            let give_up = matches!(attempt, Attempt::Refused(_)) || now >= deadline;
            if give_up {
                sqlx::query("UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $1, failed_at = $2, claimed_at = NULL, claimed_by = NULL WHERE id = $3")
                    .bind(status)
                    .bind(timestamp(now))
                    .bind(job.id)
                    .execute(store.pool())
                    .await?;
                tracing::error!(webhook_id = job.id, kind, target = %job.target, status = %status, attempts = job.attempts + 1, "webhook given up as failed; the DPO can re-queue it");
                return Ok(Attempt::Refused(status.clone()));
            }
            // The last try falls on the deadline itself.
            let next = (now + backoff(job.attempts)).min(deadline);
            sqlx::query("UPDATE webhook_outbox SET attempts = attempts + 1, last_status = $1, next_attempt_at = $2, claimed_at = NULL, claimed_by = NULL WHERE id = $3")
                .bind(status)
                .bind(timestamp(next))
                .bind(job.id)
                .execute(store.pool())
                .await?;
            tracing::warn!(webhook_id = job.id, kind, target = %job.target, status = %status, retry_at = %timestamp(next), "webhook not acknowledged; retried later");
        }
    }
    Ok(attempt)
}

/// Delivers webhooks in the background until aborted: whatever is due, then a pause.
/// How often the sender looks for webhooks nobody announced (a retry coming due, one
/// queued by another instance). Announced ones leave at once.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Delivers what is due, then again whenever `wake` is notified (a request ran, a DPO
/// acted), or after `poll` at the latest.
pub fn spawn(
    store: Store,
    delivery: Arc<Delivery>,
    wake: Arc<tokio::sync::Notify>,
    poll: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = deliver_due(&store, &delivery).await {
                tracing::warn!(error = %e, "webhook delivery deferred");
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    })
}

/// A webhook given up as failed, as the DPO lists it. The URL is shown without its query.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Failed {
    pub id: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub target: String,
    pub url: String,
    pub attempts: i64,
    pub last_status: Option<String>,
    pub created_at: String,
    pub failed_at: String,
}

/// The failed webhooks, newest first.
pub async fn failed(store: &Store) -> Result<Vec<Failed>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, kind, request_id, target, url, attempts, last_status, created_at, failed_at FROM webhook_outbox WHERE failed_at IS NOT NULL AND delivered_at IS NULL ORDER BY failed_at DESC, id DESC",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let url: String = r.try_get(4)?;
            Ok(Failed {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                request_id: r.try_get(2)?,
                target: r.try_get(3)?,
                url: without_query(&url),
                attempts: r.try_get(5)?,
                last_status: r.try_get(6)?,
                created_at: r.try_get(7)?,
                failed_at: r.try_get(8)?,
            })
        })
        .collect()
}

/// Puts failed webhook `id` back in the queue, due now, with a new time window, inside
/// the caller's transaction; whether there was such a failed webhook.
pub async fn requeue_in(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE webhook_outbox SET failed_at = NULL, requeued_at = $1, next_attempt_at = $1, attempts = 0, claimed_at = NULL, claimed_by = NULL WHERE id = $2 AND failed_at IS NOT NULL AND delivered_at IS NULL",
    )
    .bind(timestamp(now))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Scheme, host, port and path: what a listing may show of a URL.
fn without_query(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
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
    fn kinds_round_trip() {
        for k in [Kind::ErasureNotice, Kind::OpendsrCallback] {
            assert_eq!(Kind::parse(k.key()), Some(k));
        }
        assert_eq!(
            without_query("https://u:p@hooks.example.com:8443/cb?token=abc#x"),
            "https://hooks.example.com:8443/cb"
        );
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
