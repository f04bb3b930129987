//! Helpers shared by the integration tests: fresh databases per test on SQLite, and on
//! PostgreSQL / MariaDB when their URL variables are set.
#![allow(dead_code)]

pub mod appdb;
pub mod testapp;

#[allow(unused_imports)]
pub use testapp::TestApp;

use std::sync::atomic::{AtomicU32, Ordering};

use std::path::Path;

use lethe::audit::{AuditLog, KeySource};
use lethe::notify::Mailer;
use lethe::store::Store;
use secrecy::SecretString;
use sqlx::{Connection, Executor};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos:x}", std::process::id())
}

/// A fresh SQLite store URL in its own temporary directory (kept alive by the guard).
pub fn sqlite_store() -> (SecretString, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lethe.db").display()
    );
    (SecretString::from(url), dir)
}

/// The store at `url`, migrated, and its audit log with generated keys kept in `dir`.
pub async fn store_and_audit(url: &SecretString, dir: &Path) -> (Store, AuditLog, KeySource) {
    let store = Store::open(url).await.unwrap();
    let keys = KeySource {
        master: None,
        signing: None,
        dir: dir.join(".lethe"),
    };
    let audit = AuditLog::open(store.clone(), &keys).await.unwrap();
    (store, audit, keys)
}

/// An audit log in `dir`: a SQLite store `lethe.db` and keys under `.lethe`.
pub async fn audit_log(dir: &Path) -> AuditLog {
    let url = SecretString::from(format!(
        "sqlite://{}?mode=rwc",
        dir.join("lethe.db").display()
    ));
    store_and_audit(&url, dir).await.1
}

/// A mailer writing each message as an `.eml` file into `outbox`.
pub fn file_mailer(outbox: &Path) -> Mailer {
    Mailer::from_config(
        &lethe::config::Config::default(),
        Some("privacy@example.com"),
        outbox.to_path_buf(),
    )
    .unwrap()
}

/// Says that a test was skipped. Written to stderr directly, past the test harness's
/// output capture, so the note shows even when the test passes.
pub fn skipped(test: &str, what: &str, var: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test} on {what}: {var} is not set"
    );
}

/// A fresh PostgreSQL database, or None (with a note) when `LETHE_TEST_POSTGRES_URL` is unset.
pub async fn postgres_store(test: &str) -> Option<SecretString> {
    let Ok(base) = std::env::var("LETHE_TEST_POSTGRES_URL") else {
        skipped(test, "PostgreSQL", "LETHE_TEST_POSTGRES_URL");
        return None;
    };
    let name = unique_name("lethe_test");
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to LETHE_TEST_POSTGRES_URL");
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name}"
    ))))
    .await
    .expect("create test database");
    conn.close().await.ok();
    let mut url = url::Url::parse(&base).expect("LETHE_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(SecretString::from(url.to_string()))
}

/// A fresh MariaDB/MySQL database URL, or None (with a note) when `LETHE_TEST_MYSQL_URL` is unset.
pub async fn mysql_database(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("LETHE_TEST_MYSQL_URL") else {
        skipped(test, "MariaDB", "LETHE_TEST_MYSQL_URL");
        return None;
    };
    let name = unique_name("lethe_test");
    let mut conn = sqlx::MySqlConnection::connect(&base)
        .await
        .expect("connect to LETHE_TEST_MYSQL_URL");
    conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name}"
    ))))
    .await
    .expect("create test database");
    conn.close().await.ok();
    let mut url = url::Url::parse(&base).expect("LETHE_TEST_MYSQL_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// A fresh PostgreSQL database URL for an application database.
pub async fn postgres_database(test: &str) -> Option<String> {
    use secrecy::ExposeSecret;
    postgres_store(test)
        .await
        .map(|s| s.expose_secret().to_owned())
}
