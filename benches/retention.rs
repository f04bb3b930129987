//! Retention throughput: `lethe retention run` (the library call) against a hand-written
//! `DELETE ... WHERE viewed_at < cutoff` on an identical copy, in the same run: rows/s of
//! each, their ratio, and the longest single transaction.
//!
//! Page-view rows (default 1,000,000; `LETHE_BENCH_ROWS`), indexed on `viewed_at`; half of
//! them due, every other row, or with `LETHE_BENCH_DUE_PERCENT=N` the oldest N% (a nightly
//! run). SQLite always; PostgreSQL when LETHE_TEST_POSTGRES_URL is set.
//! `cargo bench --bench retention`

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use lethe::audit::{AuditLog, KeySource};
use lethe::policy::Policy;
use lethe::retention::{self, RunOptions};
use lethe::sources::db::Sources;
use lethe::store::Store;
use secrecy::SecretString;
use sqlx::{AnyConnection, Connection};

const POLICY: &str = r#"
controller: { name: Bench Ltd., address: Vienna, contact_email: privacy@bench.example }
purposes:
  - { id: analytics, name: Analytics, legal_basis: consent, subjects: [visitor], categories: [user.device.ip_address, user.behavior.browsing_history], retention: { keep_for: 90d, from: collected } }
systems:
  - id: app
    name: App
    connection: { url_env: LETHE_BENCH_NEVER_SET, default: "@URL@" }
    collections:
      - name: page_views
        purposes: [analytics]
        events: { collected: viewed_at }
        fields:
          - { name: id, primary_key: true }
          - { name: ip_address, categories: [user.device.ip_address], identity: ip }
          - { name: path, categories: [user.behavior.browsing_history] }
"#;

/// Which rows are due: every other one (None), or the first `percent` of them.
fn due_rows() -> Option<u64> {
    std::env::var("LETHE_BENCH_DUE_PERCENT")
        .ok()
        .and_then(|v| v.parse().ok())
}

async fn seed(url: &str, pg: bool, rows: u64) {
    let mut c = AnyConnection::connect(url).await.unwrap();
    let ts = if pg { "TIMESTAMPTZ" } else { "TEXT" };
    let ddl = format!(
        "CREATE TABLE page_views (id BIGINT PRIMARY KEY, ip_address VARCHAR(64), path VARCHAR(255) NOT NULL, viewed_at {ts} NOT NULL)"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut c)
        .await
        .unwrap();
    // Due rows are 200 days old, the others 10 days.
    let due = match due_rows() {
        None => "s.n % 2 = 1".to_owned(),
        Some(p) => format!("s.n <= {}", rows * p / 100),
    };
    let series = if pg {
        format!("generate_series(1, {rows}) AS s(n)")
    } else {
        format!(
            "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) SELECT n FROM s) AS s"
        )
    };
    let insert = format!(
        "INSERT INTO page_views SELECT s.n, '192.0.2.1', '/docs', CAST(CASE WHEN {due} THEN '2026-05-11 10:00:00' ELSE '2026-11-17 10:00:00' END AS {ts}) FROM {series}"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(insert))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE INDEX page_views_viewed_at ON page_views (viewed_at)")
        .execute(&mut c)
        .await
        .unwrap();
    if pg {
        // No background vacuum of one copy while the other is being measured.
        sqlx::raw_sql("ALTER TABLE page_views SET (autovacuum_enabled = false)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    sqlx::raw_sql("ANALYZE").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
}

async fn run(label: &str, lethe_url: String, raw_url: String, pg: bool, rows: u64) {
    let due = match due_rows() {
        None => "half due".to_owned(),
        Some(p) => format!("the oldest {p}% due"),
    };
    println!("== {label}: {rows} page views, {due} ==");
    let t = Instant::now();
    seed(&lethe_url, pg, rows).await;
    seed(&raw_url, pg, rows).await;
    println!("  seeded two copies in {:.1} s", t.elapsed().as_secs_f64());
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();

    // Hand-written: one DELETE in one transaction.
    let mut c = AnyConnection::connect(&raw_url).await.unwrap();
    let cutoff = (now - Duration::days(90))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let sql = if pg {
        "DELETE FROM page_views WHERE viewed_at < CAST($1 AS TIMESTAMPTZ)"
    } else {
        "DELETE FROM page_views WHERE viewed_at < ?1"
    };
    let t = Instant::now();
    let raw_rows = sqlx::query(sql)
        .bind(cutoff)
        .execute(&mut c)
        .await
        .unwrap()
        .rows_affected();
    let raw_s = t.elapsed().as_secs_f64();
    c.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        POLICY.replace("@URL@", &lethe_url),
    )
    .unwrap();
    let policy = Policy::load(dir.path()).unwrap().into_valid().unwrap();
    let store = SecretString::from(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("lethe.db").display()
    ));
    let keys = KeySource {
        master: None,
        signing: None,
        dir: dir.path().join(".lethe"),
    };
    let audit = AuditLog::open(Store::open(&store).await.unwrap(), &keys)
        .await
        .unwrap();
    let sources = Sources::default();
    let t = Instant::now();
    let batch: u32 = std::env::var("LETHE_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let report = retention::run(
        &policy,
        &sources,
        &audit,
        now,
        &RunOptions {
            batch_size: batch,
            max_duration: None,
            max_batches: None,
            progress: None,
            restricted: Default::default(),
        },
    )
    .await
    .unwrap();
    let our_s = t.elapsed().as_secs_f64();
    assert_eq!(report.rows_deleted, raw_rows);
    println!(
        "  lethe retention run: {:.0} rows/s ({} rows in {:.2} s, {} batches, longest transaction {} ms)",
        report.rows_deleted as f64 / our_s,
        report.rows_deleted,
        our_s,
        report.batches,
        report.longest_batch_ms
    );
    println!(
        "  hand-written DELETE: {:.0} rows/s ({raw_rows} rows in {raw_s:.2} s, one transaction of {:.0} ms)",
        raw_rows as f64 / raw_s,
        raw_s * 1e3
    );
    println!(
        "  ratio (lethe rows/s ÷ hand-written rows/s): {:.2}",
        (report.rows_deleted as f64 / our_s) / (raw_rows as f64 / raw_s)
    );
    sources.close().await;
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let rows: u64 = std::env::var("LETHE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("sqlite://{}?mode=rwc", dir.path().join(n).display());
    run("SQLite", url("a.db"), url("b.db"), false, rows).await;
    if let Ok(base) = std::env::var("LETHE_TEST_POSTGRES_URL") {
        let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
        let mut urls = Vec::new();
        for side in ["a", "b"] {
            let name = format!("lethe_bench_ret_{side}_{}", std::process::id());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            let mut u = url::Url::parse(&base).unwrap();
            u.set_path(&format!("/{name}"));
            urls.push((name, u.to_string()));
        }
        run(
            "PostgreSQL",
            urls[0].1.clone(),
            urls[1].1.clone(),
            true,
            rows,
        )
        .await;
        for (name, _) in urls {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await
            .ok();
        }
    } else {
        println!("(PostgreSQL skipped: set LETHE_TEST_POSTGRES_URL)");
    }
}
