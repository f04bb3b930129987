//! The engine's own store: requests, audit log, keys, job runs, tokens, outbox. SQLite by
//! default, PostgreSQL for several instances. One code path serves both through sqlx's
//! `Any` driver; only the migrations differ per backend (`migrations/sqlite`,
//! `migrations/postgres`). Queries use `$n` placeholders, which both backends accept.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::redact::redact_url;

pub mod lease;
mod tokens;
pub use tokens::{AdminToken, Role, SESSION_IDLE_MINUTES, Session, TokenLifetime};
pub mod files;
pub mod wake;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0}: use sqlite://... or postgres://...")]
    Unsupported(String),
    #[error("cannot connect to the store at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating the store failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("making the store's files private at {url}: {source}")]
    Files { url: String, source: std::io::Error },
}

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL: the URL, for the connection that listens for other instances' work.
    listen_url: Option<std::sync::Arc<SecretString>>,
}

/// One recorded policy load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyLoad {
    pub id: i64,
    pub policy_hash: String,
    pub file_count: i64,
    pub loaded_by: String,
    pub loaded_at: String,
}

/// Timestamps are stored as fixed-width RFC 3339 text in UTC, which sorts in time order
/// on both backends.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Store {
    /// Connects without migrating; see [`Store::migrate`].
    pub async fn connect(url: &SecretString) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let raw = url.expose_secret();
        let shown = redact_url(raw);
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else if raw.starts_with("postgres:") || raw.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Unsupported(shown));
        };
        if backend == Backend::Sqlite {
            // Created 0600 before SQLite creates it with the umask's mode.
            files::prepare_sqlite(raw).map_err(|source| StoreError::Files {
                url: shown.clone(),
                source,
            })?;
        }
        let options = AnyConnectOptions::from_str(raw).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
        // One direct attempt first: a wrong URL or a server that is down fails at once
        // instead of after the pool's acquire timeout.
        let probe = sqlx::AnyConnection::connect_with(&options)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        probe.close().await.ok();
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers work beside the one writer; wait instead of failing.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { url: shown, source })?;
        let listen_url = (backend == Backend::Postgres)
            .then(|| std::sync::Arc::new(SecretString::from(raw.to_owned())));
        Ok(Self {
            pool,
            backend,
            listen_url,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &SecretString) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a transaction that read first could otherwise fail when it comes to write after
    /// another writer committed, instead of waiting its turn.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records that a policy set was loaded; returns the record id.
    pub async fn record_policy_load(
        &self,
        hash: &str,
        file_count: usize,
        loaded_by: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::record_policy_load_in(&mut conn, hash, file_count, loaded_by, at).await
    }

    /// The same inside the caller's transaction.
    pub async fn record_policy_load_in(
        conn: &mut AnyConnection,
        hash: &str,
        file_count: usize,
        loaded_by: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO policy_loads (policy_hash, file_count, loaded_by, loaded_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(hash)
        .bind(i64::try_from(file_count).unwrap_or(i64::MAX))
        .bind(loaded_by)
        .bind(timestamp(at))
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// The most recent policy loads, newest first.
    pub async fn policy_loads(&self, limit: i64) -> Result<Vec<PolicyLoad>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, policy_hash, file_count, loaded_by, loaded_at FROM policy_loads \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyLoad {
                    id: r.try_get(0)?,
                    policy_hash: r.try_get(1)?,
                    file_count: r.try_get(2)?,
                    loaded_by: r.try_get(3)?,
                    loaded_at: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// One run of a job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub tick: Option<String>,
    pub holder: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub summary: serde_json::Value,
}

impl Store {
    /// Records the start of a run. For a scheduled run (`tick` given), returns None when
    /// another instance already took that tick: the run happens once.
    pub async fn start_run(
        &self,
        job: &str,
        kind: &str,
        tick: Option<&str>,
        holder: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO job_runs (job, kind, tick, holder, started_at, status) VALUES ($1, $2, $3, $4, $5, 'running') \
             ON CONFLICT (job, tick) DO NOTHING RETURNING id",
        )
        .bind(job)
        .bind(kind)
        .bind(tick)
        .bind(holder)
        .bind(timestamp(at))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn finish_run(
        &self,
        id: i64,
        status: &str,
        summary: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE job_runs SET status = $1, summary = $2, finished_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(summary.to_string())
        .bind(timestamp(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest runs, newest first.
    pub async fn job_runs(&self, limit: i64) -> Result<Vec<JobRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, job, kind, tick, holder, started_at, finished_at, status, summary FROM job_runs ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let summary: String = r.try_get(8)?;
                Ok(JobRun {
                    id: r.try_get(0)?,
                    job: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    tick: r.try_get(3)?,
                    holder: r.try_get(4)?,
                    started_at: r.try_get(5)?,
                    finished_at: r.try_get(6)?,
                    status: r.try_get(7)?,
                    summary: serde_json::from_str(&summary).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// A restriction of processing (Art. 18) in force.
#[derive(Debug, Clone)]
pub struct Restriction {
    pub request_id: String,
    pub identity: crate::identity::Identity,
}

impl Store {
    /// Every restriction in force, oldest first, with its identity as stored: sealed under
    /// the subject's key (`crate::dsr::restrictions` opens it), or in clear for
    /// restrictions placed before sealing.
    pub async fn restrictions_stored(&self) -> Result<Vec<StoredRestriction>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, identity_kind, identity_value, sealed, sealed_by FROM subject_restrictions WHERE lifted_at IS NULL ORDER BY placed_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRestriction {
                    request_id: r.try_get(0)?,
                    identity_kind: r.try_get(1)?,
                    identity_value: r.try_get(2)?,
                    sealed: r.try_get(3)?,
                    sealed_by: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

impl Store {
    /// Records rows an erasure left in place for an obligation (see `erased_rows`); a row
    /// recorded before stays recorded once.
    pub async fn record_erased_rows(
        &self,
        rows: &[(String, String, Vec<String>)],
        request_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::record_erased_rows_in(&mut tx, rows, request_id, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::record_erased_rows`] inside the caller's transaction.
    pub async fn record_erased_rows_in(
        conn: &mut AnyConnection,
        rows: &[(String, String, Vec<String>)],
        request_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for (system, collection, key) in rows {
            sqlx::query(
                "INSERT INTO erased_rows (system, collection, row_key, request_id, erased_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (system, collection, row_key) DO NOTHING",
            )
            .bind(system)
            .bind(collection)
            .bind(key_text(key))
            .bind(request_id.map(str::to_owned))
            .bind(timestamp(at))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Every row an erasure left in place for an obligation: `(system, collection, key)`.
    pub async fn erased_rows(&self) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT system, collection, row_key FROM erased_rows ORDER BY system, collection, row_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, c, k)| Some((s, c, serde_json::from_str(&k).ok()?)))
            .collect())
    }

    /// Forgets recorded rows that no longer exist (retention or an erasure removed them).
    pub async fn forget_erased_rows(
        &self,
        system: &str,
        collection: &str,
        keys: &[Vec<String>],
    ) -> Result<(), StoreError> {
        for key in keys.iter().map(|k| key_text(k)) {
            sqlx::query(
                "DELETE FROM erased_rows WHERE system = $1 AND collection = $2 AND row_key = $3",
            )
            .bind(system)
            .bind(collection)
            .bind(key)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// A row's key as `erased_rows` stores it: its columns' values as a JSON array.
fn key_text(key: &[String]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// A restriction in force as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredRestriction {
    pub request_id: String,
    pub identity_kind: String,
    pub identity_value: String,
    pub sealed: Option<Vec<u8>>,
    pub sealed_by: Option<String>,
}
