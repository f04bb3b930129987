//! `lethe admin token create --role dpo|auditor`, `lethe admin webhook-secret`.

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
    /// Print the secret that signs erasure-notice webhooks (X-Lethe-Signature), for the
    /// processors that receive them
    WebhookSecret,
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
        AdminAction::WebhookSecret => {
            let audit = crate::audit::AuditLog::open(store.clone(), &config.key_source()).await?;
            eprintln!(
                "receivers check X-Lethe-Signature = sha256=HEX(HMAC-SHA-256(secret, X-Lethe-Timestamp + \".\" + body)):"
            );
            println!("{}", hex::encode(audit.webhook_secret()));
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
