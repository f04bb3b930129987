//! The company's own databases. Only this module builds SQL over them.

pub mod db;
pub mod demo;
pub mod retention;
pub mod schema;
pub mod sql;

use crate::policy::System;

/// Where a system's database is: the URL from its `url_env`, else its `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUrl {
    pub url: String,
    /// True when the policy's `default` is used because the variable is unset.
    pub is_default: bool,
}

pub fn resolve_url(system: &System) -> Option<ResolvedUrl> {
    let conn = system.connection.as_ref()?;
    if let Some(var) = &conn.url_env
        && let Ok(url) = std::env::var(var)
        && !url.is_empty()
    {
        return Some(ResolvedUrl {
            url,
            is_default: false,
        });
    }
    conn.default.clone().map(|url| ResolvedUrl {
        url,
        is_default: true,
    })
}

/// Errors talking to a company database. Messages name systems, tables and columns,
/// never values.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("system `{0}` has no connection: set its `url_env` variable or a `default` URL")]
    NoConnection(String),
    #[error("system `{0}`: only sqlite:, postgres: and mysql: URLs are supported")]
    Unsupported(String),
    #[error("system `{system}`: cannot connect to {url}: {source}")]
    Connect {
        system: String,
        url: String,
        source: sqlx::Error,
    },
    #[error("system `{system}` does not match the policy; nothing was read or changed:\n  - {}", problems.join("\n  - "))]
    Schema {
        system: String,
        problems: Vec<String>,
    },
    #[error("system `{system}`: {what}: {source}")]
    Query {
        system: String,
        what: String,
        source: sqlx::Error,
    },
    #[error(
        "system `{system}`: table `{table}` has no primary key, so rows cannot be erased one by one; declare `primary_key: true` on its key field"
    )]
    NoPrimaryKey { system: String, table: String },
    #[error("invalid identifier: {0}")]
    Identifier(String),
}

impl SourceError {
    pub(crate) fn query(system: &System, what: &str, source: sqlx::Error) -> Self {
        Self::Query {
            system: system.id.to_string(),
            what: what.to_owned(),
            source,
        }
    }
}
