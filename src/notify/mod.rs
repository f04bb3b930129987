//! E-mail. Messages are first written to the store's outbox, in the same transaction as
//! the change they announce; [`deliver_pending`] then sends them over SMTP, or, with no
//! SMTP configured, writes each as `outbox/<id>.eml` (and the log says so). A message is
//! marked sent only after delivery, so a crash loses none; the Message-ID is derived from
//! the outbox id, so a resend after a crash is recognisable as the same message.

pub mod webhook;

use std::path::PathBuf;

use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::{AnyConnection, Row};

use crate::config::{Config, redact_url};
use crate::store::{Store, timestamp};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("LETHE_SMTP_URL {url}: {why}")]
    Config { url: String, why: String },
    #[error("mail store: {0}")]
    Store(#[from] sqlx::Error),
}

/// A message to send.
#[derive(Debug, Clone)]
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
        })
    }

    /// Where mail goes, for the log (never a password).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "SMTP".to_owned(),
            Transport::Dir(d) => format!("files in {}", d.display()),
        }
    }

    async fn send(&self, id: i64, mail: &Mail) -> Result<(), String> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| "the recipient is not an e-mail address".to_owned())?;
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
            .map_err(|e| e.to_string())?;
        match &self.transport {
            Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                // Named by the outbox id: writing it again after a crash replaces the same file.
                std::fs::write(dir.join(format!("{id:08}.eml")), message.formatted())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// How long a sender's claim on a message holds before another sender may take it.
const CLAIM_MINUTES: i64 = 5;
/// Messages one sender claims at a time.
const CLAIM_BATCH: u32 = 20;

/// Queues a message inside the caller's transaction.
pub async fn enqueue_in(conn: &mut AnyConnection, mail: &Mail) -> Result<i64, MailError> {
    let row = sqlx::query(
        "INSERT INTO mail_outbox (kind, recipient, subject, body_text, body_html, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&mail.kind)
    .bind(&mail.to)
    .bind(&mail.subject)
    .bind(&mail.text)
    .bind(&mail.html)
    .bind(timestamp(Utc::now()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// Queues a message inside the caller's transaction, already claimed by the caller, who
/// sends it right after the commit with [`deliver_claimed`] (one write fewer on the hot
/// path). Should the caller die first, the claim lapses and any sender takes it over.
pub async fn enqueue_claimed_in(conn: &mut AnyConnection, mail: &Mail) -> Result<i64, MailError> {
    let id = enqueue_in(conn, mail).await?;
    sqlx::query("UPDATE mail_outbox SET claimed_at = created_at WHERE id = $1")
        .bind(id)
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
    match mailer.send(id, mail).await {
        Ok(()) => {
            sqlx::query(
                "UPDATE mail_outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2 AND sent_at IS NULL",
            )
            .bind(timestamp(Utc::now()))
            .bind(id)
            .execute(store.pool())
            .await?;
            tracing::info!(outbox_id = id, kind = %mail.kind, via = %mailer.describe(), "mail sent");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(outbox_id = id, kind = %mail.kind, "mail not sent yet; retried later");
            sqlx::query(
                "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $1, claimed_at = NULL WHERE id = $2",
            )
            .bind(e)
            .bind(id)
            .execute(store.pool())
            .await?;
            Ok(false)
        }
    }
}

/// Sends every unsent message, oldest first; returns how many went out. Messages are
/// claimed a batch at a time in one statement, so concurrent senders (handlers, the
/// worker, other instances) share the work and never send one twice. A failure is
/// recorded on the message (without its content) and retried on the next call.
pub async fn deliver_pending(store: &Store, mailer: &Mailer) -> Result<usize, MailError> {
    let mut sent = 0;
    loop {
        // A claim left by a crashed sender lapses after five minutes.
        let now = Utc::now();
        let free = "sent_at IS NULL AND (claimed_at IS NULL OR claimed_at < $2)";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE mail_outbox SET claimed_at = $1 WHERE id IN (SELECT id FROM mail_outbox WHERE {free} ORDER BY id LIMIT {CLAIM_BATCH}) AND {free} \
             RETURNING id, kind, recipient, subject, body_text, body_html"
        )))
        .bind(timestamp(now))
        .bind(timestamp(now - chrono::Duration::minutes(CLAIM_MINUTES)))
        .fetch_all(store.pool())
        .await?;
        if rows.is_empty() {
            return Ok(sent);
        }
        let mut failed = false;
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let mail = Mail {
                kind: r.try_get(1)?,
                to: r.try_get(2)?,
                subject: r.try_get(3)?,
                text: r.try_get(4)?,
                html: r.try_get(5)?,
            };
            if deliver_claimed(store, mailer, id, &mail).await? {
                sent += 1;
            } else {
                failed = true;
            }
        }
        // The server is unreachable: leave the rest for the next call.
        if failed {
            return Ok(sent);
        }
    }
}

/// Escapes text for the HTML part.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
