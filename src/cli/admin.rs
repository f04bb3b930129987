//! `lethe admin token create --role dpo|auditor`.

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
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
