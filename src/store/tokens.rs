//! Admin API tokens: created with a role and a lifetime, stored as a hash, listed without
//! their secret, revoked by id. An expired or revoked token opens nothing.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, timestamp};

/// What an admin token may do: an auditor reads, a DPO also acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Auditor,
    Dpo,
}

impl Role {
    pub fn key(self) -> &'static str {
        match self {
            Self::Auditor => "auditor",
            Self::Dpo => "dpo",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Auditor, Self::Dpo]
            .into_iter()
            .find(|r| r.key() == s)
    }
}

/// How long a new token is valid: `90d`, `12h`, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLifetime {
    Never,
    For(chrono::Duration),
}

impl TokenLifetime {
    /// Tokens end after 90 days unless told otherwise.
    pub const DEFAULT: Self = Self::For(chrono::Duration::days(90));
    /// The longest lifetime short of `never`: ten years.
    const MAX_HOURS: i64 = 3650 * 24;
}

impl FromStr for TokenLifetime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "never" {
            return Ok(Self::Never);
        }
        let bad = || format!("`{s}` is not a lifetime: use e.g. 90d, 30d, 12h, or never");
        let (n, hours_each) = match (s.strip_suffix('d'), s.strip_suffix('h')) {
            (Some(n), _) => (n, 24),
            (_, Some(n)) => (n, 1),
            _ => return Err(bad()),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let hours = n.checked_mul(hours_each).ok_or_else(bad)?;
        if hours > Self::MAX_HOURS {
            return Err(format!("`{s}` is longer than 3650d; use never for no end"));
        }
        Ok(Self::For(chrono::Duration::hours(hours)))
    }
}

/// A token as it is listed: never its secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdminToken {
    pub id: String,
    pub role: String,
    pub label: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn token_hash(secret: &str) -> String {
    hex::encode(crate::crypto::sha256(&[
        b"lethe-admin-token:",
        secret.as_bytes(),
    ]))
}

fn random_hex(n: usize) -> Result<String, StoreError> {
    crate::crypto::random_hex(n)
        .map_err(|e| StoreError::Query(sqlx::Error::Protocol(e.to_string())))
}

/// How often the last use of a token is written, at most.
const LAST_USED_EVERY_SECONDS: i64 = 60;

impl Store {
    /// Creates an admin token valid for [`TokenLifetime::DEFAULT`]; returns `(id, token)`.
    pub async fn create_admin_token(&self, role: Role) -> Result<(String, String), StoreError> {
        self.create_admin_token_with(role, None, TokenLifetime::DEFAULT, Utc::now())
            .await
    }

    /// Creates an admin token made at `now`, valid for `lifetime`; returns `(id, token)`.
    /// The token is shown once: only its hash is kept.
    pub async fn create_admin_token_with(
        &self,
        role: Role,
        label: Option<&str>,
        lifetime: TokenLifetime,
        now: DateTime<Utc>,
    ) -> Result<(String, String), StoreError> {
        let id = random_hex(6)?;
        let token = format!("lt_{id}_{}", random_hex(24)?);
        let expires = match lifetime {
            TokenLifetime::Never => None,
            TokenLifetime::For(d) => Some(timestamp(now + d)),
        };
        sqlx::query(
            "INSERT INTO admin_tokens (id, role, token_hash, created_at, label, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(role.key())
        .bind(token_hash(&token))
        .bind(timestamp(now))
        .bind(label)
        .bind(expires)
        .execute(self.pool())
        .await?;
        Ok((id, token))
    }

    /// The token's id and role, if it is valid now: known, not revoked, not expired.
    /// Compared by hash in constant time; the use is recorded (at most once a minute).
    pub async fn admin_token(&self, token: &str) -> Result<Option<(String, Role)>, StoreError> {
        let Some(id) = token.strip_prefix("lt_").and_then(|t| t.split('_').next()) else {
            return Ok(None);
        };
        let now = Utc::now();
        let now_s = timestamp(now);
        let row = sqlx::query(
            "SELECT role, token_hash FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(&now_s)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (role, hash): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let given = token_hash(token);
        if !crate::crypto::constant_time_eq(hash.as_bytes(), given.as_bytes()) {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(&now_s)
        .bind(id)
        .bind(timestamp(now - chrono::Duration::seconds(LAST_USED_EVERY_SECONDS)))
        .execute(self.pool())
        .await?;
        Ok(Role::parse(&role).map(|r| (id.to_owned(), r)))
    }

    /// Every admin token, newest first, without secrets.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, label, created_at, expires_at, last_used_at, revoked_at FROM admin_tokens ORDER BY created_at DESC, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminToken {
                    id: r.try_get(0)?,
                    role: r.try_get(1)?,
                    label: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    last_used_at: r.try_get(5)?,
                    revoked_at: r.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Revokes token `id` at `now`; false when there is no such token still in force.
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(timestamp(now))
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(changed == 1)
    }
}

/// A session ends after this long without a page.
pub const SESSION_IDLE_MINUTES: i64 = 30;

/// A signed-in workspace session: who, with which role.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin token it was opened with: every action is audited under it.
    pub token_id: String,
    pub role: Role,
}

fn session_hash(secret: &str) -> String {
    hex::encode(crate::crypto::sha256(&[
        b"lethe-admin-session:",
        secret.as_bytes(),
    ]))
}

impl Store {
    /// Opens a workspace session with admin token `token`, if it is valid; the session's
    /// secret (for the cookie; only its hash is kept) and who it is.
    pub async fn open_session(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, Session)>, StoreError> {
        let Some((token_id, role)) = self.admin_token(token).await? else {
            return Ok(None);
        };
        let secret = crate::crypto::random_base64url(32)
            .map_err(|e| StoreError::Query(sqlx::Error::Protocol(e.to_string())))?;
        // Sessions that ended are removed as new ones open.
        sqlx::query("DELETE FROM admin_sessions WHERE last_seen_at < $1")
            .bind(timestamp(
                now - chrono::Duration::minutes(SESSION_IDLE_MINUTES),
            ))
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (secret_hash, token_id, created_at, last_seen_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(session_hash(&secret))
        .bind(&token_id)
        .bind(timestamp(now))
        .execute(self.pool())
        .await?;
        Ok(Some((secret, Session { token_id, role })))
    }

    /// The session whose secret is `secret`, if it is in force at `now`: used within
    /// [`SESSION_IDLE_MINUTES`], its token neither revoked nor expired. Its use is
    /// recorded (at most once a minute).
    pub async fn session(
        &self,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let hash = session_hash(secret);
        let now_s = timestamp(now);
        let row = sqlx::query(
            "SELECT s.token_id, t.role, s.last_seen_at FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id \
             WHERE s.secret_hash = $1 AND s.last_seen_at >= $2 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $3)",
        )
        .bind(&hash)
        .bind(timestamp(now - chrono::Duration::minutes(SESSION_IDLE_MINUTES)))
        .bind(&now_s)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (token_id, role, seen): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let Some(role) = Role::parse(&role) else {
            return Ok(None);
        };
        if seen < timestamp(now - chrono::Duration::seconds(LAST_USED_EVERY_SECONDS)) {
            sqlx::query("UPDATE admin_sessions SET last_seen_at = $1 WHERE secret_hash = $2")
                .bind(&now_s)
                .bind(&hash)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(Session { token_id, role }))
    }

    /// Ends the session whose secret is `secret` (sign-out); whether there was one.
    pub async fn close_session(&self, secret: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM admin_sessions WHERE secret_hash = $1")
            .bind(session_hash(secret))
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_days_hours_or_never() {
        let h = |n| TokenLifetime::For(chrono::Duration::hours(n));
        assert_eq!("30d".parse(), Ok(h(30 * 24)));
        assert_eq!("12h".parse(), Ok(h(12)));
        assert_eq!("3650d".parse(), Ok(h(3650 * 24)));
        assert_eq!("never".parse(), Ok(TokenLifetime::Never));
        assert_eq!(TokenLifetime::DEFAULT, h(90 * 24));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "+5d",
            "1.5d",
            "90",
            "90m",
            "3651d",
            "99999999999999999d",
            " 9d",
        ] {
            assert!(bad.parse::<TokenLifetime>().is_err(), "{bad}");
        }
    }
}
