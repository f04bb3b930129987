//! `lethe admin token create|list|revoke`, `lethe admin webhook-secret --processor ID
//! [--rotate]`.

use std::process::ExitCode;

use clap::Subcommand;

use super::audit::TextOrJson;
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
