//! The company's own databases. Only this module builds SQL over them.

pub mod demo;

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
