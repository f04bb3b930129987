//! `lethe admin token create|list|revoke`, `lethe admin webhook-secret --processor ID
//! [--rotate]`, and what the admin API shows of undeliverable messages:
//! `lethe admin outbox dead|requeue ID [--to ADDRESS]`, `lethe admin webhooks
//! failed|requeue ID`.

use std::process::ExitCode;

use clap::Subcommand;

use super::audit::TextOrJson;
use crate::audit::{Actor, AuditLog, NewEntry};
use crate::config::Config;
use crate::store::{Role, Store, TokenLifetime};

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Admin API tokens
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print the secret that signs the erasure-notice webhooks (X-Lethe-Signature) sent to
    /// one processor, for its receiver; each processor has its own
    WebhookSecret {
        /// The processor's id in the policy
        #[arg(long, value_name = "ID")]
        processor: String,
        /// Replace the secret with a new one and print that: webhooks are signed with the
        /// new secret from now on, and the old one no longer verifies
        #[arg(long)]
        rotate: bool,
    },
    /// Mail the transport refused for good (dead letters): list, put one back in the queue
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Webhooks given up as failed: list, put one back in the queue
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressionAction {
    /// Export the list: one row per person, the address and its SHA-256 (of the address
    /// in lower case, as mail systems match hashed lists), when and by which request
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: CsvOrJson,
        /// Write to FILE (created 0600) instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CsvOrJson {
    Csv,
    Json,
}

pub async fn suppression(action: SuppressionAction, config: &Config) -> anyhow::Result<ExitCode> {
    let SuppressionAction::Export { format, out } = action;
    let store = Store::open(&config.database).await?;
    let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
    let list = crate::requests::suppression_list(&store, &audit).await?;
    store.close().await;
    let text = match format {
        CsvOrJson::Json => serde_json::to_string_pretty(&list)? + "\n",
        CsvOrJson::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(["identity_kind", "value", "sha256", "added_at", "request_id"])?;
            for s in &list {
                w.write_record([
                    s.identity_kind.as_str(),
                    s.value.as_str(),
                    &hex::encode(crate::crypto::sha256(&[s
                        .value
                        .trim()
                        .to_lowercase()
                        .as_bytes()])),
                    s.added_at.as_str(),
                    s.request_id.as_str(),
                ])?;
            }
            String::from_utf8(w.into_inner()?)?
        }
    };
    match out {
        Some(path) => {
            crate::store::files::write_private(&path, text.as_bytes())?;
            eprintln!("{} entr(ies) written to {}", list.len(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List the dead letters, newest first: id, kind, recipient, attempts, when, last error.
    /// The recipient's address is shown, as the DPO needs it to fix the address; no
    /// subject line or body is shown
    Dead {
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Put dead letter ID back in the queue once the transport or the address is fixed;
    /// it is sent by the next delivery round of `lethe serve` (audited as mail.requeued)
    Requeue {
        id: String,
        /// Send it to this address instead (checked as the intake checks addresses)
        #[arg(long, value_name = "ADDRESS")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// List the failed webhooks, newest first: id, kind, request, target, URL (without its
    /// query), attempts, last status; never the body
    Failed {
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Put failed webhook ID back in the queue, due now, with a new time window; it is sent
    /// by the delivery task of `lethe serve` (audited as webhook.requeued)
    Requeue { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; it is printed once and stored only as a hash
    Create {
        #[arg(long, value_enum)]
        role: Role,
        /// A label to tell the token apart in `token list` (who or what uses it)
        #[arg(long)]
        label: Option<String>,
        /// How long the token is valid: 90d, 12h, ... up to 3650d, or never
        #[arg(long, default_value = "90d", value_parser = clap::value_parser!(TokenLifetime))]
        expires: TokenLifetime,
    },
    /// List the tokens: id, role, label, created, expires, last used, revoked (never the secret)
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Revoke a token by its id: it is refused (401) from the next request on
    Revoke { id: String },
}

pub async fn run(action: AdminAction, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.database).await?;
    let code = match action {
        AdminAction::Token { action } => token(&store, action).await?,
        AdminAction::WebhookSecret { processor, rotate } => {
            let policy = super::commands::load_valid(&config.policies)?;
            if !policy.processors.iter().any(|p| p.id.as_str() == processor) {
                let known: Vec<&str> = policy.processors.iter().map(|p| p.id.as_str()).collect();
                store.close().await;
                anyhow::bail!(
                    "no processor `{processor}` in the policy (known: {})",
                    known.join(", ")
                );
            }
            let audit = crate::audit::AuditLog::open(store.clone(), &config.key_source()).await?;
            let secret = if rotate {
                audit.rotate_webhook_secret(&processor).await?
            } else {
                audit.webhook_secret(&processor).await?
            };
            eprintln!(
                "secret v{} of processor {processor}; its receiver checks X-Lethe-Signature = sha256=HEX(HMAC-SHA-256(secret, X-Lethe-Timestamp + \".\" + body)):",
                secret.version
            );
            println!("{}", secret.to_hex());
            ExitCode::SUCCESS
        }
        AdminAction::Outbox { action } => outbox(&store, config, action).await?,
        AdminAction::Webhooks { action } => webhooks(&store, config, action).await?,
    };
    store.close().await;
    Ok(code)
}

async fn token(store: &Store, action: TokenAction) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match action {
        TokenAction::Create {
            role,
            label,
            expires,
        } => {
            let (id, token) = store
                .create_admin_token_with(role, label.as_deref(), expires, now)
                .await?;
            let until = match expires {
                TokenLifetime::Never => "never expires".to_owned(),
                TokenLifetime::For(d) => {
                    format!("expires {}", (now + d).format("%Y-%m-%d %H:%M UTC"))
                }
            };
            eprintln!(
                "created {} token {id} ({until}); it is shown once:",
                role.key()
            );
            println!("{token}");
        }
        TokenAction::List { format } => {
            let tokens = store.admin_tokens().await?;
            match format {
                TextOrJson::Json => {
                    println!("{}", serde_json::to_string_pretty(&tokens)?)
                }
                TextOrJson::Text => {
                    println!(
                        "{:<12}  {:<7}  {:<20}  {:<10}  {:<10}  {:<16}  state",
                        "id", "role", "label", "created", "expires", "last used"
                    );
                    let day = |t: &Option<String>, none: &str| {
                        t.as_deref()
                            .map_or(none.to_owned(), |t| t.get(..10).unwrap_or(t).to_owned())
                    };
                    let now_s = crate::store::timestamp(now);
                    for t in &tokens {
                        let state = if t.revoked_at.is_some() {
                            "revoked"
                        } else if t.expires_at.as_deref().is_some_and(|e| e <= now_s.as_str()) {
                            "expired"
                        } else {
                            "valid"
                        };
                        println!(
                            "{:<12}  {:<7}  {:<20}  {:<10}  {:<10}  {:<16}  {state}",
                            t.id,
                            t.role,
                            t.label.as_deref().unwrap_or("-"),
                            day(&Some(t.created_at.clone()), "-"),
                            day(&t.expires_at, "never"),
                            t.last_used_at.as_deref().map_or("never".to_owned(), |u| u
                                .get(..16)
                                .unwrap_or(u)
                                .replace('T', " ")),
                        );
                    }
                }
            }
        }
        TokenAction::Revoke { id } => {
            if !store.revoke_admin_token(&id, now).await? {
                eprintln!("error: no token {id} in force (unknown or already revoked)");
                return Ok(ExitCode::from(2));
            }
            eprintln!("revoked token {id}: it is refused from now on");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An id as the listings print it; anything else is no such id.
fn parse_id(id: &str, what: &str) -> Result<i64, ExitCode> {
    id.trim().parse().map_err(|_| {
        eprintln!("error: no {what} {id} (ids are numbers; see the list)");
        ExitCode::from(2)
    })
}

async fn outbox(store: &Store, config: &Config, action: OutboxAction) -> anyhow::Result<ExitCode> {
    let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
    // Only to open and seal queued messages: nothing is sent from here.
    let mailer = crate::notify::Mailer::from_config(config, None, "outbox".into())?
        .with_outbox_key(audit.outbox_key());
    match action {
        OutboxAction::Dead { format } => {
            let dead = crate::notify::dead_letters(store, &mailer).await?;
            match format {
                TextOrJson::Json => {
                    // What the DPO acts on; the subject line may name the request only,
                    // yet it is left out like the bodies.
                    let rows: Vec<serde_json::Value> = dead
                        .iter()
                        .map(|d| {
                            serde_json::json!({
                                "id": d.id, "kind": d.kind, "recipient": d.recipient,
                                "attempts": d.attempts, "created_at": d.created_at,
                                "dead_at": d.dead_at, "last_error": d.last_error,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                TextOrJson::Text => {
                    println!(
                        "{:<6}  {:<20}  {:<32}  {:<8}  {:<16}  last error",
                        "id", "kind", "recipient", "attempts", "dead since"
                    );
                    for d in &dead {
                        println!(
                            "{:<6}  {:<20}  {:<32}  {:<8}  {:<16}  {}",
                            d.id,
                            d.kind,
                            d.recipient,
                            d.attempts,
                            d.dead_at.get(..16).unwrap_or(&d.dead_at).replace('T', " "),
                            d.last_error.as_deref().unwrap_or("-")
                        );
                    }
                    eprintln!("{} dead letter(s)", dead.len());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OutboxAction::Requeue { id, to } => {
            let id = match parse_id(&id, "dead letter") {
                Ok(id) => id,
                Err(code) => return Ok(code),
            };
            let to = to.as_deref().map(str::trim);
            if to.is_some_and(|t| crate::notify::recipient(t).is_none()) {
                eprintln!(
                    "error: --to is not an address the mail transport can send to; nothing changed"
                );
                return Ok(ExitCode::from(2));
            }
            let mut tx = store.begin().await?;
            if !crate::notify::requeue_dead_in(&mut tx, &mailer, id, to).await? {
                eprintln!("error: no dead letter {id} (see `lethe admin outbox dead`)");
                return Ok(ExitCode::from(2));
            }
            audit
                .append_in(
                    &mut tx,
                    &[NewEntry::new(Actor::Cli, "mail.requeued").summary(
                        serde_json::json!({ "outbox_id": id, "new_recipient": to.is_some() }),
                    )],
                )
                .await?;
            tx.commit().await?;
            eprintln!(
                "dead letter {id} is queued again{}; `lethe serve` sends it in its next round",
                if to.is_some() {
                    " to the new address"
                } else {
                    ""
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn webhooks(
    store: &Store,
    config: &Config,
    action: WebhooksAction,
) -> anyhow::Result<ExitCode> {
    match action {
        WebhooksAction::Failed { format } => {
            let failed = crate::notify::webhook::failed(store).await?;
            match format {
                TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&failed)?),
                TextOrJson::Text => {
                    println!(
                        "{:<6}  {:<16}  {:<26}  {:<12}  {:<8}  {:<12}  url",
                        "id", "kind", "request", "target", "attempts", "last status"
                    );
                    for f in &failed {
                        println!(
                            "{:<6}  {:<16}  {:<26}  {:<12}  {:<8}  {:<12}  {}",
                            f.id,
                            f.kind,
                            f.request_id.as_deref().unwrap_or("-"),
                            f.target,
                            f.attempts,
                            f.last_status.as_deref().unwrap_or("-"),
                            f.url
                        );
                    }
                    eprintln!("{} failed webhook(s)", failed.len());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WebhooksAction::Requeue { id } => {
            let id = match parse_id(&id, "failed webhook") {
                Ok(id) => id,
                Err(code) => return Ok(code),
            };
            let audit = AuditLog::open(store.clone(), &config.key_source()).await?;
            let mut tx = store.begin().await?;
            if !crate::notify::webhook::requeue_in(&mut tx, id, chrono::Utc::now()).await? {
                eprintln!("error: no failed webhook {id} (see `lethe admin webhooks failed`)");
                return Ok(ExitCode::from(2));
            }
            audit
                .append_in(
                    &mut tx,
                    &[NewEntry::new(Actor::Cli, "webhook.requeued")
                        .summary(serde_json::json!({ "webhook_id": id }))],
                )
                .await?;
            tx.commit().await?;
            eprintln!(
                "webhook {id} is queued again, due now; `lethe serve` delivers it in its next round"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
