//! A fresh application database per test, with the demo-like schema of
//! `tests/fixtures/dsr`, on SQLite, PostgreSQL or MariaDB.

use std::path::{Path, PathBuf};

use lethe::sources::sql::Dialect;
use sqlx::{AnyConnection, Connection, Row};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

pub struct AppDb {
    pub url: String,
    pub dialect: Dialect,
    pub dir: tempfile::TempDir,
}

pub async fn app_db(backend: Backend, test: &str) -> Option<AppDb> {
    let dir = tempfile::tempdir().unwrap();
    let (url, dialect) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display()),
            Dialect::Sqlite,
        ),
        Backend::Postgres => (super::postgres_database(test).await?, Dialect::Postgres),
        Backend::MySql => (super::mysql_database(test).await?, Dialect::MySql),
    };
    let db = AppDb { url, dialect, dir };
    db.create_schema().await;
    Some(db)
}

impl AppDb {
    pub async fn conn(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url).await.unwrap()
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }

    pub async fn create_schema(&self) {
        let ts = match self.dialect {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres => "TIMESTAMPTZ",
            Dialect::MySql => "DATETIME",
        };
        for sql in [
            format!(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL, full_name VARCHAR(255) NOT NULL, created_at {ts} NOT NULL, closed_at {ts} NULL)"
            ),
            format!(
                "CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, billing_name VARCHAR(255) NOT NULL, amount NUMERIC(10,2) NOT NULL, issued_at {ts} NOT NULL, FOREIGN KEY (user_id) REFERENCES users(id))"
            ),
            format!(
                "CREATE TABLE page_views (id INTEGER PRIMARY KEY, user_id INTEGER NULL, ip_address VARCHAR(64) NULL, path VARCHAR(255) NOT NULL, viewed_at {ts} NOT NULL, FOREIGN KEY (user_id) REFERENCES users(id))"
            ),
            format!(
                "CREATE TABLE comments (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, body TEXT NOT NULL, created_at {ts} NOT NULL, FOREIGN KEY (user_id) REFERENCES users(id))"
            ),
        ] {
            self.exec(&sql).await;
        }
    }

    /// Every column of the rows matching `cond`, as text, ordered by id.
    pub async fn rows(&self, table: &str, cols: &[&str], cond: &str) -> Vec<Vec<Option<String>>> {
        let list: Vec<String> = cols
            .iter()
            .map(|c| {
                self.dialect
                    .as_text(&lethe::policy::Identifier::parse(c).unwrap())
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} WHERE {cond} ORDER BY id",
            list.join(", ")
        );
        let mut c = self.conn().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        rows.iter()
            .map(|r| (0..cols.len()).map(|i| r.try_get(i).unwrap()).collect())
            .collect()
    }

    /// An audit log in this database's directory.
    pub async fn audit(&self) -> lethe::audit::AuditLog {
        super::audit_log(self.dir.path()).await
    }

    pub async fn count(&self, table: &str, cond: &str) -> usize {
        self.rows(table, &["id"], cond).await.len()
    }

    /// Everything, to show that a run changed nothing.
    pub async fn everything(&self) -> Vec<Vec<Vec<Option<String>>>> {
        vec![
            self.rows(
                "users",
                &["id", "email", "full_name", "created_at", "closed_at"],
                "1 = 1",
            )
            .await,
            self.rows(
                "invoices",
                &["id", "user_id", "billing_name", "amount", "issued_at"],
                "1 = 1",
            )
            .await,
            self.rows(
                "page_views",
                &["id", "user_id", "ip_address", "path", "viewed_at"],
                "1 = 1",
            )
            .await,
            self.rows(
                "comments",
                &["id", "user_id", "body", "created_at"],
                "1 = 1",
            )
            .await,
        ]
    }

    /// The fixture policy (native or Fides) pointing at this database, in a temp dir.
    pub fn policy_dir(&self, fixture: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let dst = self
            .dir
            .path()
            .join(format!("policies-{fixture}-{}", rand_suffix()));
        copy_dir(&src, &dst);
        let p = dst.join("policy.yaml");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("@URL@", &self.url);
        std::fs::write(&p, edit(text)).unwrap();
        dst
    }
}

pub fn rand_suffix() -> String {
    lethe::crypto::random_hex(4).unwrap()
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &dst.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
}
