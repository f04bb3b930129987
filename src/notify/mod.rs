//! E-mail. Messages are first written to the store's outbox, in the same transaction as
//! the change they announce; [`deliver_pending`] then sends them over SMTP, or, with no
//! SMTP configured, writes each as `outbox/<id>.eml` (and the log says so). A message is
//! marked sent only after delivery, so a crash loses none; the Message-ID is derived from
//! the outbox id, so a resend after a crash is recognisable as the same message.
//!
//! A queued message rests sealed (recipient, subject and bodies, under the store's outbox
//! key): verification codes and addresses are never in clear in the store. Once sent, its
//! content is dropped; only its kind and times stay.

pub mod target;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::{AnyConnection, Row};

use crate::config::Config;
use crate::crypto::SealingKey;
use crate::redact::redact_url;
use crate::store::{Store, timestamp};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("LETHE_SMTP_URL {url}: {why}")]
    Config { url: String, why: String },
    #[error("mail store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the mailer has no outbox key: queued mail cannot be sealed or opened")]
    NoKey,
    #[error("a queued message cannot be opened: {0}")]
    Sealed(#[from] crate::crypto::CryptoError),
}

/// Why a message did not go out. Only the kind of failure is kept, never the content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Refused for good: the recipient cannot be parsed, the message cannot be built, the
    /// server answered 5xx.
    Refused(String),
    /// This message failed (a 4xx answer); others may go through.
    Deferred(String),
    /// The transport is unreachable: the next messages would fail alike.
    Unreachable(String),
}

impl Failure {
    fn why(&self) -> &str {
        match self {
            Self::Refused(w) | Self::Deferred(w) | Self::Unreachable(w) => w,
        }
    }
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        if e.is_permanent() {
            Self::Refused(e.to_string())
        } else if e.is_transient() {
            Self::Deferred(e.to_string())
        } else {
            Self::Unreachable(e.to_string())
        }
    }
}

/// The address as the mail transport reads a recipient, or None if it cannot send to
/// it. Intake checks addresses with this, so that whatever it accepts can be sent.
pub fn recipient(address: &str) -> Option<lettre::Address> {
    address.parse().ok()
}

/// A message to send.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Mail {
    /// What it is (`vendor_reviews`, `verification_code`, ...), for the record.
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(PathBuf),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// Seals queued messages in the store and opens them to send.
    key: Option<Arc<SealingKey>>,
}

impl Mailer {
    /// SMTP from `smtp_url` (`smtp://user@host:port?tls=starttls|tls|none`), else files in
    /// `outbox_dir`. The sender is `mail_from`, else `default_from` (the controller's contact).
    pub fn from_config(
        config: &Config,
        default_from: Option<&str>,
        outbox_dir: PathBuf,
    ) -> Result<Self, MailError> {
        let from_text = config
            .mail_from
            .clone()
            .or_else(|| default_from.map(str::to_owned))
            .unwrap_or_else(|| "lethe@localhost".to_owned());
        let from: Mailbox = from_text.parse().map_err(|_| MailError::Config {
            url: "LETHE_MAIL_FROM".into(),
            why: "not an e-mail address".into(),
        })?;
        let Some(url) = &config.smtp_url else {
            return Ok(Self {
                transport: Transport::Dir(outbox_dir),
                from,
                key: None,
            });
        };
        let raw = url.expose_secret();
        let shown = redact_url(raw);
        let err = |why: &str| MailError::Config {
            url: shown.clone(),
            why: why.to_owned(),
        };
        let u = url::Url::parse(raw).map_err(|_| err("not a URL"))?;
        if u.scheme() != "smtp" {
            return Err(err("the scheme must be smtp://"));
        }
        let host = u.host_str().ok_or_else(|| err("no host"))?.to_owned();
        let tls = u
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| "starttls".into());
        let builder = match tls.as_str() {
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| err(&e.to_string()))?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| err(&e.to_string()))?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str()),
            _ => return Err(err("tls must be starttls, tls or none")),
        };
        let mut builder = builder.port(u.port().unwrap_or(if tls == "tls" { 465 } else { 587 }));
        if !u.username().is_empty() {
            let password = config
                .smtp_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .or_else(|| u.password().map(str::to_owned))
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(u.username().to_owned(), password));
        }
        Ok(Self {
            transport: Transport::Smtp(builder.build()),
            from,
            key: None,
        })
    }

    /// Seals queued messages under `key` (the audit log's outbox key); without one,
    /// nothing can be queued or sent.
    pub fn with_outbox_key(mut self, key: Arc<SealingKey>) -> Self {
        self.key = Some(key);
        self
    }

    fn key(&self) -> Result<&SealingKey, MailError> {
        self.key.as_deref().ok_or(MailError::NoKey)
    }

    /// The message sealed for the outbox.
    fn seal(&self, mail: &Mail) -> Result<Vec<u8>, MailError> {
        let plain = serde_json::to_vec(mail).map_err(|_| MailError::NoKey)?;
        Ok(self.key()?.seal(&plain, OUTBOX_AAD)?)
    }

    /// A queued message opened.
    fn open(&self, sealed: &[u8]) -> Result<Mail, MailError> {
        let plain = self.key()?.open(sealed, OUTBOX_AAD)?;
        serde_json::from_slice(&plain)
            .map_err(|_| MailError::Sealed(crate::crypto::CryptoError::Open))
    }

    /// Where mail goes, for the log (never a password).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "SMTP".to_owned(),
            Transport::Dir(d) => format!("files in {}", d.display()),
        }
    }

    async fn send(&self, id: i64, mail: &Mail) -> Result<(), Failure> {
        let to = recipient(&mail.to)
            .map(|a| Mailbox::new(None, a))
            .ok_or_else(|| Failure::Refused("the recipient is not an e-mail address".into()))?;
        let domain = self.from.email.domain().to_owned();
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .message_id(Some(format!("<outbox-{id}@{domain}>")))
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| Failure::Refused(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(Failure::from),
            Transport::Dir(dir) => {
                let unreachable = |e: std::io::Error| Failure::Unreachable(e.to_string());
                std::fs::create_dir_all(dir).map_err(unreachable)?;
                // Named by the outbox id: writing it again after a crash replaces the same file.
                crate::store::files::write_private(
                    &dir.join(format!("{id:08}.eml")),
                    &message.formatted(),
                )
                .map_err(unreachable)
            }
        }
    }
}

/// Refusals after which a message is retired as a dead letter.
pub const MAX_REFUSALS: i64 = 3;

/// How long a message waits after its `attempts`-th failure: 1, 2, 4 ... minutes, at most
/// an hour, so a failing message never holds the ones behind it.
fn backoff(attempts: i64) -> chrono::Duration {
    chrono::Duration::minutes(1i64 << attempts.clamp(1, 7).saturating_sub(1))
        .min(chrono::Duration::hours(1))
}

/// How long a sender's claim on a message holds before another sender may take it.
const CLAIM_MINUTES: i64 = 5;
/// Messages one sender claims at a time.
const CLAIM_BATCH: u32 = 20;

/// Bound to every sealed message.
const OUTBOX_AAD: &[u8] = b"lethe outbox v1";

/// Queues a message inside the caller's transaction, sealed with `mailer`'s outbox key.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    mailer: &Mailer,
    mail: &Mail,
) -> Result<i64, MailError> {
    let sealed = mailer.seal(mail)?;
    let row = sqlx::query(
        "INSERT INTO mail_outbox (kind, recipient, subject, body_text, body_html, sealed, created_at) VALUES ($1, '', '', '', '', $2, $3) RETURNING id",
    )
    .bind(&mail.kind)
    .bind(sealed)
    .bind(timestamp(Utc::now()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// Queues a message inside the caller's transaction, already claimed by the caller, who
/// sends it right after the commit with [`deliver_claimed`] (one write fewer on the hot
/// path). Should the caller die first, the claim lapses and any sender takes it over.
pub async fn enqueue_claimed_in(
    conn: &mut AnyConnection,
    mailer: &Mailer,
    mail: &Mail,
) -> Result<i64, MailError> {
    let id = enqueue_in(conn, mailer, mail).await?;
    sqlx::query("UPDATE mail_outbox SET claimed_at = created_at, claimed_by = $2 WHERE id = $1")
        .bind(id)
        .bind(&crate::store::lease::this().id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// Sends message `id`, claimed by the caller (see [`enqueue_claimed_in`]); whether it
/// went out. A failure is recorded (without the content) and the claim released.
pub async fn deliver_claimed(
    store: &Store,
    mailer: &Mailer,
    id: i64,
    mail: &Mail,
) -> Result<bool, MailError> {
    deliver_one(store, mailer, id, mail, Utc::now())
        .await
        .map(|f| f.is_none())
}

/// Sends one claimed message; the failure, if any, is recorded on it: a message that
/// failed by itself waits [`backoff`] before the next try, and a refused one is retired
/// after [`MAX_REFUSALS`] tries.
async fn deliver_one(
    store: &Store,
    mailer: &Mailer,
    id: i64,
    mail: &Mail,
    now: chrono::DateTime<Utc>,
) -> Result<Option<Failure>, MailError> {
    crate::fault::point(&format!("mail:{}", mail.kind));
    match mailer.send(id, mail).await {
        Ok(()) => {
            // Sent: the content goes, the record of the sending stays.
            sqlx::query(
                "UPDATE mail_outbox SET sent_at = $1, attempts = attempts + 1, sealed = NULL, recipient = '', subject = '', body_text = '', body_html = '' WHERE id = $2 AND sent_at IS NULL",
            )
            .bind(timestamp(now))
            .bind(id)
            .execute(store.pool())
            .await?;
            tracing::info!(outbox_id = id, kind = %mail.kind, via = %mailer.describe(), "mail sent");
            Ok(None)
        }
        Err(failure) => {
            let row = sqlx::query(
                "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $1, claimed_at = NULL, claimed_by = NULL WHERE id = $2 RETURNING attempts",
            )
            .bind(scrub(failure.why(), &mail.to))
            .bind(id)
            .fetch_one(store.pool())
            .await?;
            let attempts: i64 = row.try_get(0)?;
            if matches!(failure, Failure::Unreachable(_)) {
                // Not this message's fault: it goes first when the transport is back.
                tracing::warn!(outbox_id = id, kind = %mail.kind, "mail transport unreachable; retried later");
            } else if matches!(failure, Failure::Refused(_)) && attempts >= MAX_REFUSALS {
                sqlx::query("UPDATE mail_outbox SET dead_at = $1 WHERE id = $2")
                    .bind(timestamp(now))
                    .bind(id)
                    .execute(store.pool())
                    .await?;
                tracing::error!(outbox_id = id, kind = %mail.kind, attempts, "mail refused for good; kept as a dead letter for the DPO");
            } else {
                sqlx::query("UPDATE mail_outbox SET retry_at = $1 WHERE id = $2")
                    .bind(timestamp(now + backoff(attempts)))
                    .bind(id)
                    .execute(store.pool())
                    .await?;
                tracing::warn!(outbox_id = id, kind = %mail.kind, attempts, "mail not sent yet; retried later");
            }
            Ok(Some(failure))
        }
    }
}

/// Sends every unsent message that is due, oldest first; returns how many went out.
/// Messages are claimed a batch at a time in one statement, so concurrent senders
/// (handlers, the worker, other instances) share the work and never send one twice. A
/// failed message is recorded (without its content) and waits while the later ones go
/// out; only an unreachable transport ends the call early.
pub async fn deliver_pending(store: &Store, mailer: &Mailer) -> Result<usize, MailError> {
    deliver_pending_at(store, mailer, Utc::now()).await
}

/// [`deliver_pending`] as of `now`.
pub async fn deliver_pending_at(
    store: &Store,
    mailer: &Mailer,
    now: chrono::DateTime<Utc>,
) -> Result<usize, MailError> {
    let mut sent = 0;
    loop {
        // A claim lapses with its sender's lease; one of a sender that is not an
        // instance, after five minutes.
        let free = format!(
            "sent_at IS NULL AND dead_at IS NULL AND (retry_at IS NULL OR retry_at <= $1) AND {}",
            crate::store::lease::lapsed("claimed_by", "claimed_at", 3, 2)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE mail_outbox SET claimed_at = $1, claimed_by = $4 WHERE id IN (SELECT id FROM mail_outbox WHERE {free} ORDER BY id LIMIT {CLAIM_BATCH}) AND {free} \
             RETURNING id, kind, recipient, subject, body_text, body_html, sealed"
        )))
        .bind(timestamp(now))
        .bind(timestamp(now - chrono::Duration::minutes(CLAIM_MINUTES)))
        .bind(crate::store::lease::lease_cutoff(now))
        .bind(&crate::store::lease::this().id)
        .fetch_all(store.pool())
        .await?;
        if rows.is_empty() {
            return Ok(sent);
        }
        let mut unreachable = false;
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let sealed: Option<Vec<u8>> = r.try_get(6)?;
            let mail = match sealed {
                Some(sealed) => mailer.open(&sealed)?,
                // Queued in clear before messages were sealed.
                None => Mail {
                    kind: r.try_get(1)?,
                    to: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    text: r.try_get(4)?,
                    html: r.try_get(5)?,
                },
            };
            match deliver_one(store, mailer, id, &mail, now).await? {
                None => sent += 1,
                Some(Failure::Unreachable(_)) => unreachable = true,
                Some(_) => {}
            }
        }
        // The server is unreachable: leave the rest for the next call.
        if unreachable {
            return Ok(sent);
        }
    }
}

/// A message retired after the transport refused it for good, as the DPO lists it.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub created_at: String,
    pub dead_at: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// The dead letters, newest first, opened with `mailer`'s outbox key.
pub async fn dead_letters(store: &Store, mailer: &Mailer) -> Result<Vec<DeadLetter>, MailError> {
    let rows = sqlx::query(
        "SELECT id, kind, recipient, subject, created_at, dead_at, attempts, last_error, sealed FROM mail_outbox WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC",
    )
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let sealed: Option<Vec<u8>> = r.try_get(8)?;
        let (recipient, subject) = match sealed {
            Some(s) => {
                let m = mailer.open(&s)?;
                (m.to, m.subject)
            }
            None => (r.try_get(2)?, r.try_get(3)?),
        };
        out.push(DeadLetter {
            id: r.try_get(0)?,
            kind: r.try_get(1)?,
            recipient,
            subject,
            created_at: r.try_get(4)?,
            dead_at: r.try_get(5)?,
            attempts: r.try_get(6)?,
            last_error: r.try_get(7)?,
        });
    }
    Ok(out)
}

/// A server's answer without the recipient's address in it (servers often quote it).
fn scrub(why: &str, recipient: &str) -> String {
    if recipient.is_empty() {
        return why.to_owned();
    }
    let mut out = why.replace(recipient, "<recipient>");
    let lower = recipient.to_lowercase();
    if lower != recipient {
        out = out.replace(&lower, "<recipient>");
    }
    out
}

/// Puts dead letter `id` back in the queue once the DPO has fixed what refused it (the
/// transport, or the address: `recipient`, checked like an intake address): it is tried as
/// a new message would be, with its refusals forgotten. In the caller's transaction;
/// false when `id` is not a dead letter.
pub async fn requeue_dead_in(
    conn: &mut AnyConnection,
    mailer: &Mailer,
    id: i64,
    recipient: Option<&str>,
) -> Result<bool, MailError> {
    // A new address goes into the sealed message (never into a clear column).
    let resealed = match recipient {
        None => None,
        Some(to) => {
            let sealed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
                "SELECT sealed FROM mail_outbox WHERE id = $1 AND dead_at IS NOT NULL AND sent_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            match sealed {
                None => return Ok(false),
                Some(Some(sealed)) => {
                    let mut mail = mailer.open(&sealed)?;
                    mail.to = to.to_owned();
                    Some(mailer.seal(&mail)?)
                }
                // Queued in clear before messages were sealed: sealed from now on.
                Some(None) => {
                    let r = sqlx::query(
                        "SELECT kind, subject, body_text, body_html FROM mail_outbox WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await?;
                    Some(mailer.seal(&Mail {
                        kind: r.try_get(0)?,
                        to: to.to_owned(),
                        subject: r.try_get(1)?,
                        text: r.try_get(2)?,
                        html: r.try_get(3)?,
                    })?)
                }
            }
        }
    };
    let changed = sqlx::query(
        "UPDATE mail_outbox SET dead_at = NULL, retry_at = NULL, claimed_at = NULL, claimed_by = NULL, attempts = 0, last_error = NULL, \
         sealed = COALESCE($1, sealed), \
         recipient = CASE WHEN $1 IS NULL THEN recipient ELSE '' END, \
         subject = CASE WHEN $1 IS NULL THEN subject ELSE '' END, \
         body_text = CASE WHEN $1 IS NULL THEN body_text ELSE '' END, \
         body_html = CASE WHEN $1 IS NULL THEN body_html ELSE '' END \
         WHERE id = $2 AND dead_at IS NOT NULL AND sent_at IS NULL",
    )
    .bind(resealed)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Escapes text for the HTML part.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
