//! `lethe admin token create --role dpo|auditor`, `lethe admin webhook-secret --processor ID
//! [--rotate]`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::store::{Role, Store};

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
    },
}

pub async fn run(action: AdminAction, config: &Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.database).await?;
    match action {
        AdminAction::Token {
            action: TokenAction::Create { role },
        } => {
            let (id, token) = store.create_admin_token(role).await?;
            eprintln!("created {} token {id}; it is shown once:", role.key());
            println!("{token}");
        }
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
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
