//! The company's own databases. Only this module builds SQL over them.

pub mod db;
pub mod demo;
pub mod matching;
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
    /// The database's error is shown without the values it quotes (and is not offered as
    /// this error's source, whose text would carry them).
    #[error("system `{system}`: {what}: {}", without_values(cause))]
    Query {
        system: String,
        what: String,
        cause: sqlx::Error,
    },
    #[error(
        "system `{system}`: table `{table}` has no primary key, so rows cannot be erased one by one; declare `primary_key: true` on its key field"
    )]
    NoPrimaryKey { system: String, table: String },
    #[error("invalid identifier: {0}")]
    Identifier(String),
}

impl SourceError {
    pub(crate) fn query(system: &System, what: &str, cause: sqlx::Error) -> Self {
        Self::Query {
            system: system.id.to_string(),
            what: what.to_owned(),
            cause,
        }
    }
}

/// A database error as it may be shown. Databases quote in their messages the values
/// they could not take (`invalid input syntax for type bigint: "..."`, `Duplicate entry
/// '...' for key ...`), and such a value may be a person's address: every quoted stretch
/// is left out. The statement's purpose, which the caller names, says what was read.
pub fn without_values(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| format!(" ({c})")).unwrap_or_default();
            format!(
                "error returned from database: {}{code}",
                unquoted(db.message())
            )
        }
        other => other.to_string(),
    }
}

/// `text` with the inside of every '...' and "..." replaced by an ellipsis; an unclosed
/// quote hides the rest.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push(q);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '\'' {
                    out.push('…');
                    open = Some(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unquoted;

    #[test]
    fn quoted_values_are_left_out() {
        assert_eq!(
            unquoted("Duplicate entry 'bob@example.org' for key 'email'"),
            "Duplicate entry '…' for key '…'"
        );
        assert_eq!(
            unquoted(r#"invalid input syntax for type bigint: "+43 660 1234""#),
            r#"invalid input syntax for type bigint: "…""#
        );
        assert_eq!(unquoted("it's open to the end"), "it'…");
        assert_eq!(unquoted("no quotes"), "no quotes");
    }
}
